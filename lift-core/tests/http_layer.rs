//! tower-http's layers on Lift Apps through `HttpLayer`: CORS, compression (buffered and
//! streamed bodies), tracing, request ids, request decompression, a layer that reads the
//! response body, and records going around them.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use lift_core::http_layer::HttpLayer;
use lift_core::stream::StreamBody;
use lift_core::testing::{TestApp, events};
use lift_core::{App, Context, Json, Result, with_layer};
use serde_json::{Value, json};
use tower_http::compression::CompressionLayer;
use tower_http::cors::CorsLayer;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

/// A text long enough for the compression layer to bother.
fn long_text() -> String {
    "Lift serves HTTP and records from one App. ".repeat(64)
}

async fn text(_ctx: Context) -> Result<String> {
    Ok(long_text())
}

async fn echo(ctx: Context) -> Result<Json<Value>> {
    let body: Value = serde_json::from_slice(ctx.body()).map_err(lift_core::Error::internal)?;
    Ok(Json(json!({
        "body": body,
        "request_id": ctx.header("x-request-id"),
        "encoding": ctx.header("content-encoding"),
    })))
}

async fn taken(_ctx: Context) -> Result<(http::StatusCode, &'static str)> {
    Ok((http::StatusCode::CONFLICT, "taken"))
}

/// Five chunks of text.
async fn chunks(_ctx: Context) -> Result<StreamBody> {
    let parts =
        (0..5).map(|n| Ok::<_, Infallible>(Bytes::from(format!("chunk {n}: {}\n", long_text()))));
    Ok(StreamBody::new(stream::iter(parts)).with_header(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    ))
}

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut out)
        .expect("valid gzip");
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("write");
    encoder.finish().expect("finish")
}

#[tokio::test]
async fn cors_answers_preflights_and_marks_responses() {
    let cors = CorsLayer::new()
        .allow_origin(HeaderValue::from_static("https://shop.example"))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([http::header::CONTENT_TYPE]);
    let app = TestApp::new(
        App::new()
            .get("/text", text)
            .post("/echo", echo)
            .layer(HttpLayer::new(cors)),
    )
    .unwrap();

    let preflight = app
        .http(
            events::http("OPTIONS", "/echo")
                .header("origin", "https://shop.example")
                .header("access-control-request-method", "POST")
                .v2(),
        )
        .await
        .unwrap();
    assert_eq!(preflight.status, 200, "{preflight:?}");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    assert!(
        preflight
            .header("access-control-allow-methods")
            .is_some_and(|m| m.contains("POST")),
        "{preflight:?}"
    );
    assert!(preflight.body.is_empty());

    let simple = app
        .http(
            events::http("GET", "/text")
                .header("origin", "https://shop.example")
                .v2(),
        )
        .await
        .unwrap();
    assert_eq!(simple.status, 200);
    assert_eq!(
        simple.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    assert_eq!(simple.text(), long_text());
    assert!(!simple.base64, "a text body stays text");
}

#[tokio::test]
async fn compression_compresses_buffered_bodies() {
    let app = TestApp::new(
        App::new()
            .get("/text", text)
            .layer(HttpLayer::new(CompressionLayer::new())),
    )
    .unwrap();
    let compressed = app
        .http(
            events::http("GET", "/text")
                .header("accept-encoding", "gzip")
                .v2(),
        )
        .await
        .unwrap();
    assert_eq!(compressed.status, 200);
    assert_eq!(compressed.header("content-encoding"), Some("gzip"));
    assert!(compressed.base64, "compressed bytes travel as binary");
    assert!(compressed.body.len() < long_text().len() / 4);
    assert_eq!(gunzip(&compressed.body), long_text());

    let plain = app.http(events::http("GET", "/text").v2()).await.unwrap();
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.text(), long_text());
}

#[tokio::test]
async fn compression_compresses_a_streamed_body() {
    let app = TestApp::new(
        App::new()
            .get("/chunks", chunks)
            .layer(HttpLayer::new(CompressionLayer::new()))
            .response_streaming(),
    )
    .unwrap();
    let expected: String = (0..5)
        .map(|n| format!("chunk {n}: {}\n", long_text()))
        .collect();
    let streamed = app
        .stream(
            events::http("GET", "/chunks")
                .header("accept-encoding", "gzip")
                .v2(),
        )
        .await
        .unwrap();
    assert_eq!(streamed.header("content-encoding"), Some("gzip"));
    assert!(streamed.is_live(), "the body is still a stream");
    // tower-http's encoder emits bytes when its buffer fills, not per chunk (lift-middleware's
    // CompressionLayer flushes each chunk): the whole body decodes once it has arrived.
    let body = streamed.body().await;
    assert!(body.len() < expected.len() / 4);
    assert_eq!(gunzip(&body), expected);

    // The same App behind a buffered source collects the compressed stream.
    let buffered = TestApp::new(
        App::new()
            .get("/chunks", chunks)
            .layer(HttpLayer::new(CompressionLayer::new())),
    )
    .unwrap()
    .http(
        events::http("GET", "/chunks")
            .header("accept-encoding", "gzip")
            .v2(),
    )
    .await
    .unwrap();
    assert_eq!(buffered.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&buffered.body), expected);
}

#[derive(Clone, Default)]
struct Counter(Arc<Mutex<u64>>);

impl MakeRequestId for Counter {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let mut next = self.0.lock().unwrap();
        *next += 1;
        HeaderValue::from_str(&format!("req-{}", *next))
            .ok()
            .map(RequestId::new)
    }
}

#[tokio::test]
async fn request_ids_reach_the_handler_and_the_response() {
    let header = HeaderName::from_static("x-request-id");
    let app = TestApp::new(
        App::new()
            .post("/echo", echo)
            .layer(HttpLayer::new(PropagateRequestIdLayer::new(header.clone())))
            .layer(HttpLayer::new(SetRequestIdLayer::new(
                header,
                Counter::default(),
            ))),
    )
    .unwrap();
    let first = app
        .http(events::http("POST", "/echo").json(&json!({"n": 1})).v2())
        .await
        .unwrap();
    assert_eq!(first.json::<Value>().unwrap()["request_id"], "req-1");
    assert_eq!(first.header("x-request-id"), Some("req-1"));
    // A client's own id is kept.
    let theirs = app
        .http(
            events::http("POST", "/echo")
                .header("x-request-id", "client-7")
                .json(&json!({"n": 2}))
                .v2(),
        )
        .await
        .unwrap();
    assert_eq!(theirs.json::<Value>().unwrap()["request_id"], "client-7");
    assert_eq!(theirs.header("x-request-id"), Some("client-7"));
}

#[tokio::test]
async fn trace_sees_each_request_and_its_status() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let trace = TraceLayer::new_for_http().on_response({
        let seen = seen.clone();
        move |response: &http::Response<_>, _latency: Duration, _span: &tracing::Span| {
            seen.lock().unwrap().push(response.status().as_u16());
        }
    });
    let app = TestApp::new(
        App::new()
            .get("/text", text)
            .get("/taken", taken)
            .layer(HttpLayer::new(trace)),
    )
    .unwrap();
    app.http(events::http("GET", "/text").v2()).await.unwrap();
    app.http(events::http("GET", "/taken").v2()).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [200, 409]);
}

#[tokio::test]
async fn a_gzipped_request_body_reaches_the_handler_decompressed() {
    let app = TestApp::new(
        App::new()
            .post("/echo", echo)
            .layer(HttpLayer::new(RequestDecompressionLayer::new())),
    )
    .unwrap();
    let answer = app
        .http(
            events::http("POST", "/echo")
                .header("content-encoding", "gzip")
                .header("content-type", "application/json")
                .binary(&gzip(br#"{"order": 42}"#))
                .v2(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer: Value = answer.json().unwrap();
    assert_eq!(answer["body"], json!({"order": 42}));
    assert_eq!(
        answer["encoding"],
        Value::Null,
        "the layer removed the header"
    );
}

/// The App's body limit holds for the body a decompression layer hands on, not only for
/// the compressed bytes that arrived (a small gzip of zeros expands without end); a body
/// that does not decompress is the client's error.
#[tokio::test]
async fn a_decompressed_body_is_held_to_the_body_limit() {
    let app = TestApp::new(
        App::new()
            .post("/echo", echo)
            .body_limit(1024)
            .layer(HttpLayer::new(RequestDecompressionLayer::new())),
    )
    .unwrap();
    let bomb = gzip(&vec![b' '; 512 * 1024]);
    assert!(bomb.len() < 1024, "{} compressed bytes", bomb.len());
    let post = |body: &[u8]| {
        events::http("POST", "/echo")
            .header("content-encoding", "gzip")
            .header("content-type", "application/json")
            .binary(body)
            .v2()
    };
    let answer = app.http(post(&bomb)).await.unwrap();
    assert_eq!(answer.status, 413, "{}", answer.text());
    let answer = app.http(post(b"not gzip at all")).await.unwrap();
    assert_eq!(answer.status, 400, "{}", answer.text());
    let small = app.http(post(&gzip(br#"{"order": 42}"#))).await.unwrap();
    assert_eq!(small.status, 200, "{}", small.text());
}

/// Records the bytes of every response body that passes, then hands them on.
#[derive(Clone)]
struct Peek<S> {
    inner: S,
    seen: Arc<Mutex<Vec<String>>>,
}

impl<S, B> tower::Service<Request<B>> for Peek<S>
where
    S: tower::Service<Request<B>, Response = http::Response<lift_core::http_layer::Body>>,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<http_body_util::Full<Bytes>>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = std::result::Result<Self::Response, S::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let future = self.inner.call(request);
        let seen = self.seen.clone();
        Box::pin(async move {
            let (parts, body) = future.await?.into_parts();
            let bytes = body.collect().await.expect("a body").to_bytes();
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&bytes).into_owned());
            Ok(http::Response::from_parts(
                parts,
                http_body_util::Full::new(bytes),
            ))
        })
    }
}

/// Makes [`Peek`]s that record into one list.
#[derive(Clone, Default)]
struct PeekLayer(Arc<Mutex<Vec<String>>>);

impl<S> tower::Layer<S> for PeekLayer {
    type Service = Peek<S>;

    fn layer(&self, inner: S) -> Peek<S> {
        Peek {
            inner,
            seen: self.0.clone(),
        }
    }
}

#[tokio::test]
async fn a_body_reading_layer_reads_the_real_body_streamed_or_not() {
    let peek = PeekLayer::default();
    let seen = peek.0.clone();
    let app = TestApp::new(
        App::new()
            .get("/text", text)
            .get("/chunks", chunks)
            .layer(HttpLayer::new(peek)),
    )
    .unwrap();
    let plain = app.http(events::http("GET", "/text").v2()).await.unwrap();
    assert_eq!(plain.text(), long_text());
    let streamed = app.http(events::http("GET", "/chunks").v2()).await.unwrap();
    let expected: String = (0..5)
        .map(|n| format!("chunk {n}: {}\n", long_text()))
        .collect();
    assert_eq!(streamed.text(), expected);
    assert_eq!(*seen.lock().unwrap(), [long_text(), expected]);
}

#[tokio::test]
async fn one_route_gets_a_layer_of_its_own() {
    let app = TestApp::new(App::new().get("/text", text).get(
        "/compressed",
        with_layer(text, HttpLayer::new(CompressionLayer::new())),
    ))
    .unwrap();
    let request = |path: &str| {
        events::http("GET", path)
            .header("accept-encoding", "gzip")
            .v2()
    };
    let compressed = app.http(request("/compressed")).await.unwrap();
    assert_eq!(compressed.header("content-encoding"), Some("gzip"));
    let plain = app.http(request("/text")).await.unwrap();
    assert_eq!(plain.header("content-encoding"), None);
}

/// Needs an event source besides HTTP.
#[cfg(feature = "sqs")]
#[tokio::test]
async fn records_go_around_the_layer() {
    use lift_core::testing::batch_failures;

    let peek = PeekLayer::default();
    let seen = peek.0.clone();
    let app = TestApp::new(
        App::new()
            .sqs(|ctx: Context| async move {
                if ctx.body() == b"fail" {
                    return Err(lift_core::Error::internal("refused"));
                }
                Ok(())
            })
            .layer(HttpLayer::new(peek)),
    )
    .unwrap();
    let response = app.invoke(&events::sqs(["ok", "fail"])).await.unwrap();
    assert_eq!(batch_failures(&response).len(), 1);
    assert!(
        seen.lock().unwrap().is_empty(),
        "no record went through the layer"
    );
}
