//! The quotes function against a real HTTP price service on loopback that can fail and
//! recover: what the client of `GET /quotes/{symbol}` sees, and how often the price service
//! is called.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use lift_core::testing::{HttpResponse, TestApp, events};
use quotes::{PriceClient, Protection, Quote};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const UP: u8 = 0;
const DOWN: u8 = 1;
/// Fails the next request, then is up again.
const BLIP: u8 = 2;

/// A price service on 127.0.0.1: `GET /prices/ACME` → `{"price": 12.5}`, 404 for other
/// symbols, 503 while down.
struct Upstream {
    url: String,
    mode: Arc<AtomicU8>,
    requests: Arc<AtomicU32>,
    /// The head of the last request received.
    last_head: Arc<std::sync::Mutex<String>>,
}

async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let mode = Arc::new(AtomicU8::new(UP));
    let requests = Arc::new(AtomicU32::new(0));
    let last_head = Arc::new(std::sync::Mutex::new(String::new()));
    let (m, r, h) = (mode.clone(), requests.clone(), last_head.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (mode, requests, last) = (m.clone(), r.clone(), h.clone());
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 4096];
                let mut read = 0;
                while !buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                requests.fetch_add(1, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&buffer[..read]).into_owned();
                *last.lock().expect("lock") = head.clone();
                let current = mode.load(Ordering::SeqCst);
                if current == BLIP {
                    mode.store(UP, Ordering::SeqCst);
                }
                let (status, body) = if current != UP {
                    ("503 Service Unavailable", r#"{"error":"down"}"#)
                } else if head.starts_with("GET /prices/ACME ") {
                    ("200 OK", r#"{"price": 12.5}"#)
                } else {
                    ("404 Not Found", r#"{"error":"unknown symbol"}"#)
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    Upstream {
        url,
        mode,
        requests,
        last_head,
    }
}

fn app(upstream: &Upstream) -> TestApp {
    let protection = Protection {
        backoff: Duration::from_millis(1),
        ..Protection::default()
    };
    let prices = quotes::protect(PriceClient::new(&upstream.url), &protection).expect("stack");
    TestApp::new(quotes::app(prices)).expect("app")
}

async fn get(app: &TestApp, path: &str) -> HttpResponse {
    app.http(events::http("GET", path).v2())
        .await
        .expect("response")
}

#[tokio::test]
async fn answers_with_the_upstream_price() {
    let upstream = upstream().await;
    let app = app(&upstream);
    let response = get(&app, "/quotes/acme").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json::<Quote>().expect("quote"),
        Quote {
            symbol: "ACME".to_owned(),
            price: 12.5
        }
    );
    let missing = get(&app, "/quotes/nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        upstream.requests.load(Ordering::SeqCst),
        2,
        "a 404 is not retried"
    );
}

/// A symbol with other characters is refused, not rewritten into another instrument's
/// (`a.c.m.e` is not `ACME`), and nothing is asked upstream.
#[tokio::test]
async fn a_symbol_with_other_characters_is_refused_not_rewritten() {
    let upstream = upstream().await;
    let app = app(&upstream);
    for path in ["/quotes/a.c.m.e", "/quotes/BRK.B", "/quotes/ABCDEFGHIJKLM"] {
        let response = get(&app, path).await;
        assert_eq!(response.status, 422, "{path}: {}", response.text());
    }
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_blip_is_hidden_by_a_retry() {
    let upstream = upstream().await;
    let app = app(&upstream);
    upstream.mode.store(BLIP, Ordering::SeqCst);
    let response = get(&app, "/quotes/acme").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_outage_opens_the_breaker_and_stops_calling_upstream() {
    let upstream = upstream().await;
    let app = app(&upstream);
    upstream.mode.store(DOWN, Ordering::SeqCst);
    // Each call makes 3 attempts (all 503) and counts as one failure in the breaker,
    // which wraps the retries; 3 failures open it.
    for _ in 0..3 {
        let response = get(&app, "/quotes/acme").await;
        assert_eq!(response.status, 502, "{}", response.text());
        let body: Value = response.json().expect("json");
        assert_eq!(body["error"]["code"], "upstream_failed");
    }
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 9);

    let refused = get(&app, "/quotes/acme").await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("30"));
    let body: Value = refused.json().expect("json");
    assert_eq!(body["error"]["code"], "circuit_open");
    assert_eq!(
        upstream.requests.load(Ordering::SeqCst),
        9,
        "the open breaker did not call upstream"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_clean_error() {
    // Nothing listens on this port (bound, then dropped).
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let prices = quotes::protect(
        PriceClient::new(&url),
        &Protection {
            backoff: Duration::from_millis(1),
            ..Protection::default()
        },
    )
    .expect("stack");
    let app = TestApp::new(quotes::app(prices)).expect("app");
    let response = get(&app, "/quotes/acme").await;
    assert_eq!(response.status, 502, "{}", response.text());
    let body: Value = response.json().expect("json");
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    assert!(
        !response.text().contains("127.0.0.1"),
        "{}",
        response.text()
    );
}

#[tokio::test]
async fn the_trace_and_correlation_travel_to_the_upstream() {
    let upstream = upstream().await;
    let app = app(&upstream);
    let response = app
        .http(
            events::http("GET", "/quotes/acme")
                .header("x-correlation-id", "corr-7")
                .v2(),
        )
        .await
        .expect("response");
    assert_eq!(response.status, 200);
    let head = upstream
        .last_head
        .lock()
        .expect("lock")
        .to_ascii_lowercase();
    assert!(
        head.contains("x-amzn-trace-id: root=1-5759e988-bd862e3fe1be46a994272793;sampled=1"),
        "{head}"
    );
    assert!(head.contains("x-correlation-id: corr-7"), "{head}");
}
