//! Streamed HTTP responses (`lift_core::stream`): chunk order, backpressure, the NDJSON and
//! SSE wire formats, buffered collection and its limit, and errors mid-stream. Everything
//! runs in-process through `LiftService::respond`, the function `App::run` serves; the
//! Runtime API wire protocol is covered by `streaming_runtime.rs`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::stream;
use http::header::{CONTENT_TYPE, SET_COOKIE};
use http::{HeaderValue, StatusCode};
use lift_core::stream::{
    DEFAULT_COLLECT_LIMIT, Event, EventError, SendError, StreamBody, ndjson_line,
};
use lift_core::testing::{TestApp, events, lambda_context};
use lift_core::{App, Context, Error, Json, Response, Result};
use serde_json::{Value, json};

fn v2(path: &str) -> Value {
    events::http("GET", path).v2()
}

fn streaming(app: App) -> TestApp {
    TestApp::new(app.response_streaming()).expect("app")
}

fn buffered(app: App) -> TestApp {
    TestApp::new(app).expect("app")
}

/// Lets every other task run until all wait: with the clock paused, the runtime only
/// moves time forward once nothing else can make progress.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn three_chunks(_ctx: Context) -> Result<StreamBody> {
    let (tx, body) = StreamBody::channel(1);
    tokio::spawn(async move {
        for chunk in ["first", "second", "third"] {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut body = body
        .with_status(StatusCode::ACCEPTED)
        .with_header(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    body.headers_mut()
        .append(SET_COOKIE, HeaderValue::from_static("a=1; Secure"));
    body.headers_mut()
        .append(SET_COOKIE, HeaderValue::from_static("b=2"));
    Ok(body)
}

#[tokio::test]
async fn chunks_arrive_in_order_one_by_one_with_the_head_first() {
    let app = streaming(App::new().get("/chunks", three_chunks));
    let mut response = app.stream(v2("/chunks")).await.expect("streamed");
    assert_eq!(response.status, 202);
    assert_eq!(response.header("content-type"), Some("text/plain"));
    assert_eq!(response.header("set-cookie"), None);
    assert_eq!(response.cookies, ["a=1; Secure", "b=2"]);
    assert!(response.is_live());
    assert_eq!(response.next_chunk().await.as_deref(), Some(&b"first"[..]));
    assert_eq!(response.next_chunk().await.as_deref(), Some(&b"second"[..]));
    assert_eq!(response.next_chunk().await.as_deref(), Some(&b"third"[..]));
    assert_eq!(response.next_chunk().await, None);
    assert_eq!(response.next_chunk().await, None);
}

/// A producer that counts the chunks the channel accepted.
fn counting_producer(sent: Arc<AtomicUsize>, capacity: usize, total: usize) -> App {
    App::new().get("/numbers", move |_ctx: Context| {
        let sent = sent.clone();
        async move {
            let (tx, body) = StreamBody::channel(capacity);
            tokio::spawn(async move {
                for n in 0..total {
                    if tx.send(format!("{n}\n")).await.is_err() {
                        return;
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            });
            Ok::<_, Error>(body)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_reader_that_does_not_read_holds_the_producer_to_the_channel_capacity() {
    const CAPACITY: usize = 4;
    let sent = Arc::new(AtomicUsize::new(0));
    let app = streaming(counting_producer(sent.clone(), CAPACITY, 100));
    let mut response = app.stream(v2("/numbers")).await.expect("streamed");

    // Nobody reads: the producer fills the channel and waits. In-process nothing else is
    // in flight, so it is exactly CAPACITY chunks ahead (behind the real runtime add the
    // two chunks `lambda_runtime` holds and hyper's write buffer: see `lift_core::stream`).
    settle().await;
    assert_eq!(sent.load(Ordering::SeqCst), CAPACITY);
    settle().await;
    assert_eq!(sent.load(Ordering::SeqCst), CAPACITY, "it stays blocked");

    // Each chunk read lets exactly one more in.
    for read in 1..=3 {
        let chunk = response.next_chunk().await.expect("a chunk");
        assert_eq!(chunk, format!("{}\n", read - 1));
        settle().await;
        assert_eq!(sent.load(Ordering::SeqCst), CAPACITY + read);
    }

    // Reading everything lets it finish, in order.
    let mut expected = 3;
    while let Some(chunk) = response.next_chunk().await {
        assert_eq!(chunk, format!("{expected}\n"));
        expected += 1;
    }
    assert_eq!(expected, 100);
    assert_eq!(sent.load(Ordering::SeqCst), 100);
}

#[tokio::test(start_paused = true)]
async fn a_pulled_stream_produces_nothing_ahead_of_the_reader() {
    let produced = Arc::new(AtomicUsize::new(0));
    let counter = produced.clone();
    let app = streaming(App::new().get("/pulled", move |_ctx: Context| {
        let counter = counter.clone();
        async move {
            let items = stream::iter(0..10).map(move |n| {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Infallible>(format!("{n},"))
            });
            Ok::<_, Error>(StreamBody::new(items))
        }
    }));
    let mut response = app.stream(v2("/pulled")).await.expect("streamed");
    assert_eq!(
        response.header("content-type"),
        Some("application/octet-stream")
    );
    settle().await;
    assert_eq!(produced.load(Ordering::SeqCst), 0);
    assert_eq!(response.next_chunk().await.as_deref(), Some(&b"0,"[..]));
    assert_eq!(response.next_chunk().await.as_deref(), Some(&b"1,"[..]));
    settle().await;
    assert_eq!(produced.load(Ordering::SeqCst), 2);
}

use futures_util::StreamExt as _;

#[tokio::test]
async fn ndjson_is_one_compact_json_value_per_line() {
    let app = streaming(App::new().get("/rows", |_ctx: Context| async {
        let rows = stream::iter([
            Ok::<_, Infallible>(json!({"id": 1, "text": "two\nlines"})),
            Ok(json!({"id": 2, "text": "ünïcode \"quoted\""})),
            Ok(json!([1, null, true])),
        ]);
        Ok::<_, Error>(StreamBody::ndjson(rows))
    }));
    let mut response = app.stream(v2("/rows")).await.expect("streamed");
    assert_eq!(
        response.header("content-type"),
        Some("application/x-ndjson")
    );
    let mut chunks = Vec::new();
    while let Some(chunk) = response.next_chunk().await {
        chunks.push(String::from_utf8(chunk.to_vec()).expect("utf-8"));
    }
    assert_eq!(
        chunks,
        [
            "{\"id\":1,\"text\":\"two\\nlines\"}\n",
            "{\"id\":2,\"text\":\"ünïcode \\\"quoted\\\"\"}\n",
            "[1,null,true]\n",
        ]
    );
    assert_eq!(
        ndjson_line(&json!({"a": []})).expect("line"),
        "{\"a\":[]}\n"
    );
}

#[tokio::test]
async fn ndjson_channel_sends_lines() {
    let app = streaming(App::new().get("/rows", |_ctx: Context| async {
        let (tx, body) = StreamBody::ndjson_channel(2);
        tokio::spawn(async move {
            for id in 1..=2 {
                if tx.send_json(&json!({ "id": id })).await.is_err() {
                    return;
                }
            }
        });
        Ok::<_, Error>(body)
    }));
    let response = app.stream(v2("/rows")).await.expect("streamed");
    assert_eq!(
        response.header("content-type"),
        Some("application/x-ndjson")
    );
    assert_eq!(response.body().await, b"{\"id\":1}\n{\"id\":2}\n");
}

#[test]
fn sse_events_are_encoded_exactly() {
    let full = Event::new()
        .comment("hello\nworld")
        .event("update")
        .id("42")
        .retry(Duration::from_millis(2500))
        .data("line one\nline two\r\nline three\rline four");
    assert_eq!(
        full.encode().expect("encodes"),
        ": hello\n: world\nevent: update\nid: 42\nretry: 2500\n\
         data: line one\ndata: line two\ndata: line three\ndata: line four\n\n"
    );
    // A trailing line break survives as an empty last data line.
    assert_eq!(
        Event::new().data("ends\n").encode().expect("encodes"),
        "data: ends\ndata: \n\n"
    );
    assert_eq!(
        Event::new().data("").encode().expect("encodes"),
        "data: \n\n"
    );
    // A leading space is kept: the parser drops only the one after the colon.
    assert_eq!(
        Event::new().data(" indented").encode().expect("encodes"),
        "data:  indented\n\n"
    );
    assert_eq!(Event::new().comment("").encode().expect("encodes"), ":\n\n");
    assert_eq!(Event::new().id("").encode().expect("encodes"), "id: \n\n");
    assert_eq!(
        Event::new()
            .json_data(&json!({"text": "a\nb"}))
            .expect("json")
            .encode()
            .expect("encodes"),
        "data: {\"text\":\"a\\nb\"}\n\n"
    );
}

#[test]
fn sse_refuses_fields_that_would_break_the_framing() {
    assert!(matches!(
        Event::new().event("a\nb").encode(),
        Err(EventError::LineBreak { field: "event" })
    ));
    assert!(matches!(
        Event::new().id("1\r").encode(),
        Err(EventError::LineBreak { field: "id" })
    ));
    assert!(matches!(
        Event::new().id("a\0b").encode(),
        Err(EventError::NulInId)
    ));
}

#[tokio::test]
async fn sse_streams_events_with_their_headers() {
    let app = streaming(App::new().get("/events", |_ctx: Context| async {
        let events = stream::iter([
            Ok::<_, Infallible>(Event::new().event("open").id("1").data("a\nb")),
            Ok(Event::new().comment("note")),
            Ok(Event::new().id("2").data("c")),
        ]);
        Ok::<_, Error>(StreamBody::sse(events))
    }));
    let mut response = app.stream(v2("/events")).await.expect("streamed");
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert_eq!(response.header("cache-control"), Some("no-cache"));
    let mut chunks = Vec::new();
    while let Some(chunk) = response.next_chunk().await {
        chunks.push(String::from_utf8(chunk.to_vec()).expect("utf-8"));
    }
    assert_eq!(
        chunks,
        [
            "event: open\nid: 1\ndata: a\ndata: b\n\n",
            ": note\n\n",
            "id: 2\ndata: c\n\n"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn sse_keep_alive_fills_idle_time_only() {
    let app = streaming(App::new().get("/events", |_ctx: Context| async {
        let (tx, body) = StreamBody::sse_channel(4);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(12)).await;
            let _ = tx.send_event(&Event::new().data("late")).await;
        });
        Ok::<_, Error>(body.keep_alive(Duration::from_secs(5)))
    }));
    let start = tokio::time::Instant::now();
    let mut response = app.stream(v2("/events")).await.expect("streamed");
    assert_eq!(response.next_chunk().await.as_deref(), Some(&b":\n\n"[..]));
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(response.next_chunk().await.as_deref(), Some(&b":\n\n"[..]));
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(
        response.next_chunk().await.as_deref(),
        Some(&b"data: late\n\n"[..])
    );
    assert_eq!(start.elapsed(), Duration::from_secs(12));
    assert_eq!(response.next_chunk().await, None);
}

#[tokio::test]
async fn without_streaming_mode_the_body_is_collected() {
    let app = buffered(App::new().get("/chunks", three_chunks));
    let response = app.http(v2("/chunks")).await.expect("response");
    assert_eq!(response.status, 202);
    assert_eq!(response.header("content-type"), Some("text/plain"));
    assert_eq!(response.text(), "firstsecondthird");
    assert_eq!(
        response.headers.get("set-cookie").expect("cookies"),
        &["a=1; Secure", "b=2"]
    );
    // Payload 1.0 and ALB are collected too.
    let v1 = app
        .http(events::http("GET", "/chunks").v1())
        .await
        .expect("v1");
    assert_eq!(v1.text(), "firstsecondthird");
    let alb = app
        .http(events::http("GET", "/chunks").alb())
        .await
        .expect("alb");
    assert_eq!(alb.text(), "firstsecondthird");
    // There is no streamed reply to read.
    assert!(app.stream(v2("/chunks")).await.is_err());
}

#[tokio::test]
async fn a_collected_body_over_the_limit_is_a_clear_error_and_stops_the_producer() {
    let closed = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let (closed_flag, sent_count) = (closed.clone(), sent.clone());
    let app = App::new()
        .get("/big", move |_ctx: Context| {
            let (closed, sent) = (closed_flag.clone(), sent_count.clone());
            async move {
                let (tx, body) = StreamBody::channel(2);
                tokio::spawn(async move {
                    loop {
                        match tx.send("0123456789").await {
                            Ok(()) => sent.fetch_add(1, Ordering::SeqCst),
                            Err(SendError::Closed) => {
                                closed.store(true, Ordering::SeqCst);
                                return;
                            }
                            Err(other) => panic!("{other}"),
                        };
                    }
                });
                Ok::<_, Error>(body)
            }
        })
        .stream_collect_limit(25);
    let app = buffered(app);
    let response = app.http(v2("/big")).await.expect("response");
    assert_eq!(response.status, 500);
    let body: Value = response.json().expect("error body");
    assert_eq!(body["error"]["code"], "internal");
    assert_eq!(body["error"]["requestId"], "test-request-id");
    // The producer learns the reader is gone, having got at most the limit plus the
    // channel's capacity ahead: 2 chunks within the limit, the refused 3rd, 2 queued.
    for _ in 0..100 {
        if closed.load(Ordering::SeqCst) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        closed.load(Ordering::SeqCst),
        "the producer saw the channel close"
    );
    assert!(
        sent.load(Ordering::SeqCst) <= 5,
        "{}",
        sent.load(Ordering::SeqCst)
    );
    assert_eq!(DEFAULT_COLLECT_LIMIT, 6 * 1024 * 1024);
}

/// A binary body goes out in base64, a third larger: collected against a limit of 40
/// bytes, 32 bytes of text pass, while 32 bytes of `application/octet-stream` (44 in
/// base64) are refused.
#[tokio::test]
async fn a_binary_body_is_collected_against_the_limit_as_sent() {
    let chunks = |content_type: &'static str| {
        move |_ctx: Context| async move {
            let chunks = futures_util::stream::iter(
                [&b"0123456789abcdef"[..], &b"0123456789abcdef"[..]]
                    .map(|c| Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(c))),
            );
            Ok::<_, Error>(StreamBody::new(chunks).with_header(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            ))
        }
    };
    let app = buffered(
        App::new()
            .get("/text", chunks("text/plain"))
            .get("/binary", chunks("application/octet-stream"))
            .stream_collect_limit(40),
    );
    assert_eq!(app.http(v2("/text")).await.expect("text").status, 200);
    assert_eq!(app.http(v2("/binary")).await.expect("binary").status, 500);
}

#[tokio::test]
async fn an_error_mid_stream_ends_the_body_after_the_chunks_sent() {
    fn failing() -> App {
        App::new().get("/fails", |_ctx: Context| async {
            let (tx, body) = StreamBody::ndjson_channel(4);
            tokio::spawn(async move {
                let _ = tx.send_json(&json!({"n": 1})).await;
                tx.fail(std::io::Error::other("database went away")).await;
            });
            Ok::<_, Error>(body)
        })
    }
    let mut response = streaming(failing())
        .stream(v2("/fails"))
        .await
        .expect("streamed");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.next_chunk().await.as_deref(),
        Some(&b"{\"n\":1}\n"[..])
    );
    assert_eq!(response.next_chunk().await, None, "ends, no error text");

    // Buffered, nothing has gone out yet: a plain 500.
    let collected = buffered(failing())
        .http(v2("/fails"))
        .await
        .expect("response");
    assert_eq!(collected.status, 500);
    assert!(
        !collected.text().contains("database"),
        "{}",
        collected.text()
    );
}

#[tokio::test]
async fn a_panicking_producer_ends_the_body_and_never_reaches_the_runtime() {
    fn panicking() -> App {
        App::new().get("/panics", |_ctx: Context| async {
            let items = stream::iter(0..3).map(|n| {
                assert!(n < 2, "producer panicked at {n}");
                Ok::<_, Infallible>(format!("{n}"))
            });
            Ok::<_, Error>(StreamBody::new(items))
        })
    }
    let mut response = streaming(panicking())
        .stream(v2("/panics"))
        .await
        .expect("streamed");
    assert_eq!(response.next_chunk().await.as_deref(), Some(&b"0"[..]));
    assert_eq!(response.next_chunk().await.as_deref(), Some(&b"1"[..]));
    assert_eq!(response.next_chunk().await, None);

    let collected = buffered(panicking())
        .http(v2("/panics"))
        .await
        .expect("response");
    assert_eq!(collected.status, 500);
}

#[tokio::test]
async fn in_streaming_mode_other_bodies_go_out_as_one_chunk() {
    let app = streaming(App::new().get("/json", |_ctx: Context| async {
        Ok::<_, Error>(Json(json!({"ok": true})))
    }));
    let mut ok = app.stream(v2("/json")).await.expect("streamed");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("content-type"), Some("application/json"));
    assert!(!ok.is_live());
    assert_eq!(
        ok.next_chunk().await.as_deref(),
        Some(&b"{\"ok\":true}"[..])
    );
    assert_eq!(ok.next_chunk().await, None);

    // Errors too, with their status.
    let missing = app.stream(v2("/nowhere")).await.expect("streamed");
    assert_eq!(missing.status, 404);
    let body: Value = serde_json::from_slice(&missing.body().await).expect("json");
    assert_eq!(body["error"]["code"], "route_not_found");
}

#[tokio::test]
async fn in_streaming_mode_payload_1_events_and_records_stay_buffered() {
    let app = streaming(
        App::new()
            .get("/chunks", three_chunks)
            .sqs(|_ctx: Context| async { Ok::<_, Error>(()) }),
    );
    let v1 = app
        .http(events::http("GET", "/chunks").v1())
        .await
        .expect("v1");
    assert_eq!(v1.text(), "firstsecondthird");
    assert!(
        app.stream(events::http("GET", "/chunks").v1())
            .await
            .is_err()
    );
    let batch = app.invoke(&events::sqs(["{}"])).await.expect("batch");
    assert_eq!(batch["batchItemFailures"], json!([]));
}

#[tokio::test]
async fn middleware_sees_and_shapes_the_head_of_a_streamed_response() {
    let layer = tower::util::MapResponseLayer::new(|mut response: Response| {
        assert!(lift_core::stream::is_streaming(&response));
        response
            .headers_mut()
            .insert("x-layer", HeaderValue::from_static("seen"));
        response
    });
    let app = streaming(App::new().get("/chunks", three_chunks).layer(layer));
    let response = app.stream(v2("/chunks")).await.expect("streamed");
    assert_eq!(response.header("x-layer"), Some("seen"));
    assert_eq!(response.body().await, b"firstsecondthird");
}

#[tokio::test]
async fn respond_is_what_the_runtime_gets() {
    let service = App::new()
        .get("/chunks", three_chunks)
        .response_streaming()
        .into_service()
        .expect("service");
    let event = serde_json::value::to_raw_value(&v2("/chunks")).expect("raw");
    match service
        .respond(&event, lambda_context("r-1"))
        .await
        .expect("reply")
    {
        lift_core::lambda_runtime::FunctionResponse::StreamingResponse(response) => {
            assert_eq!(response.metadata_prelude.status_code, StatusCode::ACCEPTED);
            let chunks: Vec<_> = response.stream.map(|c| c.expect("chunk")).collect().await;
            assert_eq!(chunks, ["first", "second", "third"]);
        }
        lift_core::lambda_runtime::FunctionResponse::BufferedResponse(_) => panic!("buffered"),
    }
    // `invoke` always answers buffered.
    let buffered = service
        .invoke(&event, lambda_context("r-2"))
        .await
        .expect("buffered");
    let value: Value = serde_json::from_str(buffered.get()).expect("json");
    assert_eq!(value["body"], "firstsecondthird");
}

/// Still running when a producer's send fails.
const RUNNING: usize = usize::MAX;

/// `GET /ticks`: a producer that sends `tick N` every second and never finishes on its own.
/// `delivered` becomes the number of ticks the channel took once a send fails.
fn ticking(delivered: Arc<AtomicUsize>, on_deadline: Option<&'static str>) -> App {
    App::new().get("/ticks", move |_ctx: Context| {
        let delivered = delivered.clone();
        async move {
            let (tx, body) = StreamBody::ndjson_channel(1);
            tokio::spawn(async move {
                let mut sent = 0;
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if tx.send(format!("tick {}\n", sent + 1)).await.is_err() {
                        delivered.store(sent, Ordering::SeqCst);
                        return;
                    }
                    sent += 1;
                }
            });
            Ok::<_, Error>(match on_deadline {
                Some(last) => body.on_deadline(last),
                None => body,
            })
        }
    })
}

/// Reads the whole body, or fails the test if it is still going a minute (of paused time)
/// in, long after the 30 s invocation should have ended it.
async fn read_to_end(response: lift_core::testing::StreamedResponse) -> String {
    let body = tokio::time::timeout(Duration::from_secs(60), response.body())
        .await
        .expect("the deadline ended the body");
    String::from_utf8(body).expect("utf-8")
}

fn ticks(through: usize) -> String {
    (1..=through).map(|n| format!("tick {n}\n")).collect()
}

/// `lambda_context` gives the invocation 30 s; the default margin ends the body 500 ms
/// before that, after the 29th tick, with the closing line, and the producer learns it.
#[tokio::test(start_paused = true)]
async fn a_stream_still_running_at_the_deadline_ends_with_its_closing_chunk() {
    let delivered = Arc::new(AtomicUsize::new(RUNNING));
    let app = streaming(ticking(
        delivered.clone(),
        Some("{\"error\":\"deadline\"}\n"),
    ));
    let started = tokio::time::Instant::now();
    let response = app.stream(v2("/ticks")).await.expect("streamed");
    assert_eq!(response.status, 200);
    let body = read_to_end(response).await;
    assert_eq!(body, ticks(29) + "{\"error\":\"deadline\"}\n");
    let ended = started.elapsed();
    assert!(
        ended > Duration::from_secs(29) && ended <= Duration::from_millis(29_500),
        "{ended:?}"
    );
    settle().await;
    assert_eq!(
        delivered.load(Ordering::SeqCst),
        29,
        "the producer's channel is closed"
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_margin_is_a_setting_and_the_closing_chunk_optional() {
    let delivered = Arc::new(AtomicUsize::new(RUNNING));
    let app = streaming(
        ticking(delivered.clone(), None).stream_deadline_margin(Duration::from_millis(4_500)),
    );
    let response = app.stream(v2("/ticks")).await.expect("streamed");
    let body = read_to_end(response).await;
    assert_eq!(body, ticks(25));
    settle().await;
    assert_eq!(delivered.load(Ordering::SeqCst), 25);
}

#[tokio::test(start_paused = true)]
async fn a_collected_body_unfinished_at_the_deadline_is_a_504() {
    let delivered = Arc::new(AtomicUsize::new(RUNNING));
    let app = buffered(ticking(delivered.clone(), Some("never sent\n")));
    let response = tokio::time::timeout(Duration::from_secs(60), app.http(v2("/ticks")))
        .await
        .expect("the deadline ended the collection")
        .expect("answered");
    assert_eq!(response.status, 504);
    let body: Value = response.json().expect("json");
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    assert!(!response.text().contains("tick"), "{}", response.text());
    settle().await;
    assert_eq!(delivered.load(Ordering::SeqCst), 29);
}

/// Upper-cases every chunk and closes the body with `<end>`; counts its calls.
struct Shout;

impl lift_core::stream::ChunkEncoder for Shout {
    fn encode(&mut self, chunk: &[u8]) -> std::io::Result<bytes::Bytes> {
        Ok(chunk.to_ascii_uppercase().into())
    }
    fn finish(&mut self) -> std::io::Result<bytes::Bytes> {
        Ok(bytes::Bytes::from_static(b"<end>"))
    }
}

/// Middleware that puts `Shout` on every streamed body.
fn shouting(app: App) -> App {
    app.layer(tower::util::MapResponseLayer::new(|response: Response| {
        assert!(lift_core::stream::encode_stream(&response, Shout));
        response
    }))
}

async fn two_lines(_ctx: Context) -> Result<StreamBody> {
    let (tx, body) = StreamBody::channel(1);
    tokio::spawn(async move {
        for line in ["one\n", "two\n"] {
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    Ok(body)
}

#[tokio::test]
async fn an_encoder_rewrites_each_chunk_and_closes_the_body() {
    let app = streaming(shouting(App::new().get("/lines", two_lines)));
    let mut response = app.stream(v2("/lines")).await.expect("streamed");
    assert_eq!(response.next_chunk().await.as_deref(), Some(&b"ONE\n"[..]));
    assert_eq!(response.next_chunk().await.as_deref(), Some(&b"TWO\n"[..]));
    assert_eq!(response.next_chunk().await.as_deref(), Some(&b"<end>"[..]));
    assert_eq!(response.next_chunk().await, None);

    let collected = buffered(shouting(App::new().get("/lines", two_lines)));
    let response = collected.http(v2("/lines")).await.expect("answered");
    assert_eq!(response.text(), "ONE\nTWO\n<end>");
}

#[tokio::test(start_paused = true)]
async fn an_encoded_body_cut_at_the_deadline_encodes_its_closing_chunk_then_ends() {
    let delivered = Arc::new(AtomicUsize::new(RUNNING));
    let app = streaming(shouting(ticking(delivered.clone(), Some("cut\n"))));
    let response = app.stream(v2("/ticks")).await.expect("streamed");
    let body = read_to_end(response).await;
    assert_eq!(body, ticks(29).to_uppercase() + "CUT\n<end>");
}

#[tokio::test]
async fn a_failed_producer_leaves_the_encoding_unfinished() {
    let app = streaming(shouting(App::new().get("/fails", |_ctx: Context| async {
        let (tx, body) = StreamBody::channel(1);
        tokio::spawn(async move {
            let _ = tx.send("partial\n").await;
            tx.fail("the upstream broke").await;
        });
        Ok::<_, Error>(body)
    })));
    let response = app.stream(v2("/fails")).await.expect("streamed");
    assert_eq!(
        response.body().await,
        b"PARTIAL\n",
        "no <end>: the body is visibly cut"
    );
}

/// A streaming function's request with a header the types cannot hold is answered 400, as
/// a buffered one is, not an invocation error (a 502 from the Function URL).
#[tokio::test]
async fn a_header_the_types_cannot_hold_is_a_400_when_streaming() {
    let app = streaming(App::new().get("/chunks", three_chunks));
    let mut event = v2("/chunks");
    event["headers"]["x-bad"] = Value::from("a\u{1}b-s3cr3t");
    let response = app.stream(event).await.expect("an answer, not an error");
    assert_eq!(response.status, 400);
}
