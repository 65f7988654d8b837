//! `GET /stream`: NDJSON greetings, streamed behind a RESPONSE_STREAM Function URL and
//! collected into one body elsewhere.

use hello::Greeting;
use lift_core::testing::{TestApp, events};
use serde_json::Value;

fn greeting(line: &[u8]) -> Greeting {
    serde_json::from_slice(line).expect("one JSON greeting per line")
}

#[tokio::test]
async fn streams_one_greeting_per_chunk() {
    let app = TestApp::new(hello::app().response_streaming()).expect("hello app");
    let mut response = app
        .stream(events::http("GET", "/stream").query("count", "3").v2())
        .await
        .expect("streamed");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/x-ndjson")
    );
    for n in 1..=3 {
        let chunk = response.next_chunk().await.expect("a line");
        assert_eq!(chunk.last(), Some(&b'\n'));
        assert_eq!(greeting(&chunk).message, format!("Hello #{n}!"));
    }
    assert_eq!(response.next_chunk().await, None);
}

#[tokio::test]
async fn buffered_deployments_get_the_lines_in_one_body() {
    let app = TestApp::new(hello::app()).expect("hello app");
    let response = app
        .http(events::http("GET", "/stream").v2())
        .await
        .expect("response");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/x-ndjson")
    );
    let text = response.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(greeting(lines[2].as_bytes()).message, "Hello #3!");
}

#[tokio::test]
async fn refuses_a_bad_count() {
    let app = TestApp::new(hello::app().response_streaming()).expect("hello app");
    let response = app
        .stream(events::http("GET", "/stream").query("count", "0").v2())
        .await
        .expect("streamed");
    assert_eq!(response.status, 400);
    let body: Value = serde_json::from_slice(&response.body().await).expect("json");
    assert_eq!(body["error"]["code"], "bad_request");
}
