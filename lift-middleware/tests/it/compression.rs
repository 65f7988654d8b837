//! Response compression on a real App: the coding the client asked for, the bodies worth
//! compressing, and the headers a cache or browser relies on. Every compressed body is
//! decompressed again and compared with what the handler sent.

use std::io::{Read, Write};

use flate2::read::{GzDecoder, ZlibDecoder};
use http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use lift_core::stream::StreamBody;
use lift_core::testing::{HttpResponse, TestApp, events};
use lift_core::{App, Context, Error, IntoResponse, Json, Response};
use lift_middleware::compression::CompressionLayer;
use serde_json::{Value, json};

/// A JSON document of about 8 KiB.
fn report() -> Value {
    let rows: Vec<Value> = (0..120)
        .map(|n| json!({"row": n, "region": "eu-west-1", "status": "settled", "amount": n * 7}))
        .collect();
    json!({"rows": rows})
}

fn with_headers(
    body: &'static str,
    content_type: &'static str,
    extra: Option<(&'static str, &'static str)>,
) -> Response {
    let mut response = body.repeat(128).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some((name, value)) = extra {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

fn app(layer: CompressionLayer) -> TestApp {
    TestApp::new(
        App::new()
            .get("/report", |_ctx: Context| async {
                Ok::<_, Error>(Json(report()))
            })
            .get("/small", |_ctx: Context| async {
                Ok::<_, Error>(Json(json!({"ok": true})))
            })
            .get("/png", |_ctx: Context| async {
                Ok::<_, Error>(with_headers("\u{1}PNG-ish bytes ", "image/png", None))
            })
            .get("/encoded", |_ctx: Context| async {
                Ok::<_, Error>(with_headers(
                    "already br ",
                    "text/plain",
                    Some(("content-encoding", "br")),
                ))
            })
            .get("/no-transform", |_ctx: Context| async {
                Ok::<_, Error>(with_headers(
                    "leave me be ",
                    "text/plain",
                    Some(("cache-control", "public, no-transform")),
                ))
            })
            .get("/empty", |_ctx: Context| async {
                Ok::<_, Error>(StatusCode::NO_CONTENT)
            })
            .layer(layer),
    )
    .expect("app")
}

async fn get(app: &TestApp, path: &str, accept: Option<&str>) -> HttpResponse {
    let mut event = events::http("GET", path);
    if let Some(accept) = accept {
        event = event.header("accept-encoding", accept);
    }
    app.http(event.v2()).await.expect("response")
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(bytes).read_to_end(&mut out).expect("gzip");
    out
}

fn inflate(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ZlibDecoder::new(bytes).read_to_end(&mut out).expect("zlib");
    out
}

#[tokio::test]
async fn the_coding_the_client_prefers_is_applied_and_decodes_to_the_body() {
    let app = app(CompressionLayer::new());
    let plain = get(&app, "/report", None).await;
    assert_eq!(plain.header("content-encoding"), None);
    assert!(plain.body.len() > 4096, "{}", plain.body.len());

    let gzip = get(&app, "/report", Some("gzip, deflate, br")).await;
    assert_eq!(gzip.status, 200);
    assert_eq!(gzip.header("content-encoding"), Some("gzip"));
    assert_eq!(gzip.header("vary"), Some("accept-encoding"));
    assert_eq!(gzip.header("content-type"), Some("application/json"));
    assert!(gzip.base64, "a compressed body travels base64-encoded");
    assert!(
        gzip.body.len() * 4 < plain.body.len(),
        "{} vs {}",
        gzip.body.len(),
        plain.body.len()
    );
    assert_eq!(gunzip(&gzip.body), plain.body);

    let deflate = get(&app, "/report", Some("gzip;q=0.2, deflate")).await;
    assert_eq!(deflate.header("content-encoding"), Some("deflate"));
    assert_eq!(inflate(&deflate.body), plain.body);

    for refused in ["br", "identity", "gzip;q=0, deflate;q=0", "*;q=0"] {
        let response = get(&app, "/report", Some(refused)).await;
        assert_eq!(response.header("content-encoding"), None, "{refused}");
        assert_eq!(response.body, plain.body, "{refused}");
    }
}

#[tokio::test]
async fn bodies_not_worth_compressing_go_out_as_they_are() {
    let app = app(CompressionLayer::new());
    for path in ["/small", "/png", "/encoded", "/no-transform"] {
        let plain = get(&app, path, None).await;
        let asked = get(&app, path, Some("gzip")).await;
        assert_eq!(asked.body, plain.body, "{path}");
        assert_eq!(asked.header("vary"), None, "{path}");
        assert_eq!(
            asked.header("content-encoding"),
            plain.header("content-encoding"),
            "{path}"
        );
    }
    let empty = get(&app, "/empty", Some("gzip")).await;
    assert_eq!(
        (empty.status, empty.header("content-encoding")),
        (204, None)
    );

    let head = app
        .http(
            events::http("HEAD", "/report")
                .header("accept-encoding", "gzip")
                .v2(),
        )
        .await
        .expect("response");
    assert_eq!(head.status, 200, "the GET route answers HEAD");
    assert_eq!(head.header("content-encoding"), None);
    assert_eq!(head.text(), "");
}

#[tokio::test]
async fn size_level_and_type_rule_are_settings() {
    let eager = app(CompressionLayer::new().min_size(1).level(9));
    let small = get(&eager, "/small", Some("gzip")).await;
    assert_eq!(small.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&small.body), br#"{"ok":true}"#);

    let images_too = app(CompressionLayer::new().content_types(|_| true));
    let png = get(&images_too, "/png", Some("gzip")).await;
    assert_eq!(png.header("content-encoding"), Some("gzip"));
    assert_eq!(
        gunzip(&png.body),
        "\u{1}PNG-ish bytes ".repeat(128).as_bytes()
    );

    // `no-transform` and an existing coding hold whatever the type rule says.
    for path in ["/no-transform", "/encoded"] {
        let response = get(&images_too, path, Some("gzip")).await;
        assert_ne!(response.header("content-encoding"), Some("gzip"), "{path}");
    }
}

#[tokio::test]
async fn a_vary_the_handler_set_is_kept() {
    let app = TestApp::new(
        App::new()
            .get("/report", |_ctx: Context| async {
                let mut response = Json(report()).into_response();
                response
                    .headers_mut()
                    .insert("vary", HeaderValue::from_static("origin"));
                response
                    .headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
                Ok::<_, Error>(response)
            })
            .layer(CompressionLayer::new()),
    )
    .expect("app");
    let response = get(&app, "/report", Some("gzip")).await;
    assert_eq!(response.header(CONTENT_ENCODING.as_str()), Some("gzip"));
    assert_eq!(
        response.headers["vary"].join(", "),
        "origin, accept-encoding"
    );
}

/// `GET /events`: three NDJSON lines from a channel, one at a time.
fn streamed_app(streaming: bool) -> TestApp {
    let app = App::new()
        .get("/events", |_ctx: Context| async {
            let (tx, body) = StreamBody::ndjson_channel(1);
            tokio::spawn(async move {
                for n in 1..=3 {
                    if tx
                        .send_json(&json!({"event": n, "pad": "x".repeat(40)}))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            Ok::<_, Error>(body)
        })
        .layer(CompressionLayer::new());
    TestApp::new(if streaming {
        app.response_streaming()
    } else {
        app
    })
    .expect("app")
}

fn line(n: u32) -> String {
    format!("{}\n", json!({"event": n, "pad": "x".repeat(40)}))
}

#[tokio::test]
async fn a_streamed_body_is_compressed_chunk_by_chunk_and_each_chunk_decodes_at_once() {
    let app = streamed_app(true);
    let mut response = app
        .stream(
            events::http("GET", "/events")
                .header("accept-encoding", "gzip")
                .v2(),
        )
        .await
        .expect("streamed");
    assert_eq!(response.header("content-encoding"), Some("gzip"));
    assert_eq!(response.header("vary"), Some("accept-encoding"));

    // A client decoding as bytes arrive sees each line with its own chunk.
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    for n in 1..=3 {
        let chunk = response.next_chunk().await.expect("a chunk");
        decoder.write_all(&chunk).expect("decode");
        decoder.flush().expect("flush");
        let decoded = String::from_utf8(decoder.get_ref().clone()).expect("utf-8");
        let expected: String = (1..=n).map(line).collect();
        assert_eq!(decoded, expected, "after chunk {n}");
    }
    // The last chunk is gzip's trailer: the stream checks out whole.
    let trailer = response.next_chunk().await.expect("the trailer");
    decoder.write_all(&trailer).expect("decode");
    let whole = decoder.finish().expect("a complete gzip stream");
    assert_eq!(
        String::from_utf8(whole).expect("utf-8"),
        (1..=3).map(line).collect::<String>()
    );
    assert_eq!(response.next_chunk().await, None);
}

#[tokio::test]
async fn a_streamed_body_collected_for_a_buffered_reply_is_compressed_whole() {
    let app = streamed_app(false);
    let compressed = get(&app, "/events", Some("deflate")).await;
    assert_eq!(compressed.header("content-encoding"), Some("deflate"));
    assert_eq!(
        String::from_utf8(inflate(&compressed.body)).expect("utf-8"),
        (1..=3).map(line).collect::<String>()
    );
    let plain = get(&app, "/events", None).await;
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.text(), (1..=3).map(line).collect::<String>());
}

mod properties {
    //! Whatever body a handler sends and whatever `Accept-Encoding` a client asks with,
    //! the client decodes exactly the body, and the headers say what was done.

    use lift_core::testing::{TestApp, events};
    use lift_core::{App, Body, Context, Error, Response};
    use lift_middleware::compression::{Coding, CompressionLayer, negotiate};
    use proptest::prelude::*;

    use super::{gunzip, inflate};

    fn echo_app() -> TestApp {
        TestApp::new(
            App::new()
                .post("/echo", |ctx: Context| async move {
                    let mut response = Response::new(Body::Binary(ctx.body().to_vec()));
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain"),
                    );
                    Ok::<_, Error>(response)
                })
                .layer(CompressionLayer::new().min_size(16)),
        )
        .expect("app")
    }

    fn accept_encoding() -> impl Strategy<Value = String> {
        let item = (
            "(gzip|deflate|br|identity|\\*|x-gzip|GZIP|zstd)",
            proptest::option::of("(0|0\\.[0-9]{1,3}|1|1\\.0|oops)"),
        )
            .prop_map(|(token, q)| match q {
                Some(q) => format!("{token};q={q}"),
                None => token,
            });
        proptest::collection::vec(item, 0..4).prop_map(|items| items.join(", "))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn the_client_always_decodes_the_body_it_was_sent(
            body in proptest::collection::vec(any::<u8>(), 0..4096),
            accept in accept_encoding(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let app = echo_app();
            let event = events::http("POST", "/echo")
                .header("accept-encoding", &accept)
                .binary(&body)
                .v2();
            let response = runtime.block_on(app.http(event)).expect("response");
            prop_assert_eq!(response.status, 200);
            let decoded = match response.header("content-encoding") {
                Some("gzip") => {
                    prop_assert_eq!(negotiate(&accept), Some(Coding::Gzip));
                    gunzip(&response.body)
                }
                Some("deflate") => {
                    prop_assert_eq!(negotiate(&accept), Some(Coding::Deflate));
                    inflate(&response.body)
                }
                None => {
                    prop_assert!(negotiate(&accept).is_none() || body.len() < 16);
                    response.body.clone()
                }
                Some(other) => return Err(TestCaseError::fail(format!("coding {other}"))),
            };
            prop_assert_eq!(decoded, body);
        }
    }
}

/// A REST API passes a base64 body on as text unless its binaryMediaTypes cover the
/// request's Accept: its answers stay uncompressed unless the layer is told they do. HTTP
/// APIs, Function URLs and ALBs decode base64 bodies and get compressed answers.
#[tokio::test]
async fn rest_api_answers_stay_uncompressed_unless_binary_media_types_are_set() {
    async fn rest(app: &TestApp) -> HttpResponse {
        let event = events::http("GET", "/report")
            .header("accept-encoding", "gzip")
            .header("accept", "application/json")
            .v1();
        app.http(event).await.expect("response")
    }
    let plain = rest(&app(CompressionLayer::new())).await;
    assert_eq!(plain.header("content-encoding"), None);
    assert!(!plain.base64);
    assert_eq!(plain.json::<Value>().expect("json"), report());
    let configured = rest(&app(
        CompressionLayer::new().rest_api_binary_media_types(true)
    ))
    .await;
    assert_eq!(configured.header("content-encoding"), Some("gzip"));
    for event in [
        events::http("GET", "/report")
            .header("accept-encoding", "gzip")
            .v2(),
        events::http("GET", "/report")
            .header("accept-encoding", "gzip")
            .alb(),
    ] {
        let response = app(CompressionLayer::new())
            .http(event)
            .await
            .expect("response");
        assert_eq!(response.header("content-encoding"), Some("gzip"));
    }
}
