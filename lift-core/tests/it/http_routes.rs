//! HTTP behaviour of an App, driven in-process with events in every source's shape.

use lift_core::http::StatusCode;
use lift_core::testing::{HttpResponse, TestApp, events};
use lift_core::{App, Context, Created, Error, Json, Response, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Deserialize, Serialize, garde::Validate)]
struct NewOrder {
    #[garde(length(min = 1, max = 8))]
    sku: String,
    #[garde(range(min = 1, max = 100))]
    qty: u32,
}

async fn get_order(ctx: Context) -> Result<Json<Value>> {
    Ok(Json(json!({
        "id": ctx.path_param("id")?,
        "route": ctx.route(),
        "verbose": ctx.query("verbose"),
        "correlation": ctx.correlation_id(),
    })))
}

async fn create_order(_ctx: Context, order: NewOrder) -> Result<Created<NewOrder>> {
    Ok(Created(order))
}

async fn explode(_ctx: Context) -> Result<()> {
    panic!("handler bug");
}

async fn secret_failure(_ctx: Context) -> Result<(), std::io::Error> {
    Err(std::io::Error::other("password=hunter2"))
}

async fn wrong_param(ctx: Context) -> Result<String> {
    Ok(ctx.path_param("nope")?.to_owned())
}

async fn binary(_ctx: Context) -> Result<Response> {
    let mut response = Response::new(lift_core::Body::Binary(vec![0, 159, 146, 150]));
    response.headers_mut().insert(
        "content-type",
        lift_core::http::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

async fn cookies(_ctx: Context) -> Result<Response> {
    let mut response = Response::new(lift_core::Body::Text("ok".to_owned()));
    let headers = response.headers_mut();
    headers.append("set-cookie", "a=1".parse().expect("header"));
    headers.append("set-cookie", "b=2".parse().expect("header"));
    headers.append("x-multi", "one".parse().expect("header"));
    headers.append("x-multi", "two".parse().expect("header"));
    Ok(response)
}

fn app() -> TestApp {
    TestApp::new(
        App::new()
            .get("/orders/{id}", get_order)
            .delete("/orders/{id}", get_order)
            .post("/orders", create_order)
            .get("/panic", explode)
            .get("/secret", secret_failure)
            .get("/wrong/{id}", wrong_param)
            .get("/binary", binary)
            .get("/cookies", cookies)
            .body_limit(1024),
    )
    .expect("valid app")
}

async fn send(app: &TestApp, event: Value) -> HttpResponse {
    app.http(event).await.expect("HTTP response")
}

#[tokio::test]
async fn routes_with_params_in_every_source() {
    let app = app();
    for event in [
        events::http("GET", "/orders/a%20b")
            .query("verbose", "yes")
            .v2(),
        events::http("GET", "/orders/a b")
            .query("verbose", "yes")
            .v1(),
        events::http("GET", "/orders/a%20b")
            .query("verbose", "yes")
            .alb(),
    ] {
        let response = send(&app, event).await;
        assert_eq!(response.status, 200, "{}", response.text());
        let body: Value = response.json().expect("json");
        assert_eq!(body["id"], "a b");
        assert_eq!(body["route"], "/orders/{id}");
        assert_eq!(body["verbose"], "yes");
        assert_eq!(body["correlation"], "test-request-id");
    }
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_is_405_with_allow() {
    let app = app();
    let missing = send(&app, events::http("GET", "/nope").v2()).await;
    assert_eq!(missing.status, 404);
    let body: Value = missing.json().expect("json");
    assert_eq!(body["error"]["code"], "route_not_found");
    assert_eq!(body["error"]["requestId"], "test-request-id");

    let wrong = send(&app, events::http("PUT", "/orders/1").v2()).await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("GET, DELETE, HEAD"));
    // A route without GET does not answer HEAD.
    let head_of_post = send(&app, events::http("HEAD", "/orders").v2()).await;
    assert_eq!(head_of_post.status, 405);
    assert_eq!(head_of_post.header("allow"), Some("POST"));
}

/// HEAD is answered by the GET route, with GET's status and headers and no body, in every
/// source's shape.
#[tokio::test]
async fn head_is_the_get_route_without_its_body() {
    let app = app();
    for event in [
        events::http("HEAD", "/orders/7").v2(),
        events::http("HEAD", "/orders/7").v1(),
        events::http("HEAD", "/orders/7").alb(),
    ] {
        let response = send(&app, event).await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.text(), "", "no body");
    }
    let missing = send(&app, events::http("HEAD", "/nope").v2()).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.text(), "");
}

#[tokio::test]
async fn malformed_json_names_line_and_column() {
    let app = app();
    let response = send(
        &app,
        events::http("POST", "/orders")
            .header("content-type", "application/json")
            .body("{\"sku\": \"a\",\n \"qty\": }")
            .v2(),
    )
    .await;
    assert_eq!(response.status, 400);
    let body: Value = response.json().expect("json");
    assert_eq!(body["error"]["code"], "malformed_json");
    assert_eq!(body["error"]["line"], 2);
    assert_eq!(body["error"]["column"], 9);
}

#[tokio::test]
async fn validation_lists_every_bad_field() {
    let app = app();
    let response = send(
        &app,
        events::http("POST", "/orders")
            .json(&json!({"sku": "", "qty": 500}))
            .v2(),
    )
    .await;
    assert_eq!(response.status, 422);
    let body: Value = response.json().expect("json");
    assert_eq!(body["error"]["code"], "validation_failed");
    let mut pointers: Vec<&str> = body["error"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["pointer"].as_str().expect("pointer"))
        .collect();
    pointers.sort_unstable();
    assert_eq!(pointers, ["/qty", "/sku"]);
}

#[tokio::test]
async fn missing_field_and_wrong_type_are_named() {
    let app = app();
    let response = send(
        &app,
        events::http("POST", "/orders")
            .json(&json!({"sku": "abc", "qty": "many"}))
            .v1(),
    )
    .await;
    assert_eq!(response.status, 422);
    let body: Value = response.json().expect("json");
    assert_eq!(body["error"]["fields"][0]["pointer"], "/qty");

    let missing = send(
        &app,
        events::http("POST", "/orders")
            .json(&json!({"sku": "abc"}))
            .v1(),
    )
    .await;
    let body: Value = missing.json().expect("json");
    assert!(
        body["error"]["fields"][0]["message"]
            .as_str()
            .expect("message")
            .contains("missing field `qty`"),
        "{body}"
    );
}

#[tokio::test]
async fn valid_input_is_created() {
    let app = app();
    let response = send(
        &app,
        events::http("POST", "/orders")
            .json(&json!({"sku": "abc", "qty": 2}))
            .alb(),
    )
    .await;
    assert_eq!(response.status, 201);
    assert_eq!(response.json::<Value>().expect("json")["qty"], 2);
}

#[tokio::test]
async fn wrong_media_type_is_415_and_empty_body_is_400() {
    let app = app();
    let response = send(
        &app,
        events::http("POST", "/orders")
            .header("content-type", "text/plain")
            .body("sku=a")
            .v2(),
    )
    .await;
    assert_eq!(response.status, 415);
    let empty = send(
        &app,
        events::http("POST", "/orders")
            .header("content-type", "application/json")
            .v2(),
    )
    .await;
    assert_eq!(empty.status, 400);
    assert_eq!(
        empty.json::<Value>().expect("json")["error"]["code"],
        "empty_body"
    );
    // A gzip body no layer decoded is an encoding this route does not take, not a JSON
    // syntax error at line 1.
    let gzipped = send(
        &app,
        events::http("POST", "/orders")
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .binary(&[0x1f, 0x8b, 0x08, 0x00])
            .v2(),
    )
    .await;
    assert_eq!(gzipped.status, 415, "{}", gzipped.text());
    assert_eq!(
        gzipped.json::<Value>().expect("json")["error"]["code"],
        "unsupported_content_encoding"
    );
}

#[tokio::test]
async fn oversized_body_is_413_before_parsing() {
    let app = app();
    let response = send(
        &app,
        events::http("POST", "/orders")
            .header("content-type", "application/json")
            .body(&"x".repeat(2000))
            .v2(),
    )
    .await;
    assert_eq!(response.status, 413);
    let body: Value = response.json().expect("json");
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn invalid_base64_body_is_400_not_a_crash() {
    let app = app();
    let mut event = events::http("POST", "/orders").json(&json!({})).v2();
    event["isBase64Encoded"] = json!(true);
    event["body"] = json!("***not base64***");
    let response = send(&app, event).await;
    assert_eq!(response.status, 400);
}

/// A request whose header the HTTP types cannot hold (a control character, which an ALB
/// passes on) is the client's: a 400 in the source's shape, not an invocation error (a 502
/// from API Gateway, an alarm on the function), and the value is not quoted back.
#[tokio::test]
async fn a_header_the_types_cannot_hold_is_a_400() {
    let app = app();
    let mut v1 = events::http("GET", "/orders/7").v1();
    v1["headers"]["x-bad"] = json!("a\u{1}b-s3cr3t");
    let mut v2 = events::http("GET", "/orders/7").v2();
    v2["headers"]["x-bad"] = json!("a\u{1}b-s3cr3t");
    for event in [v1, v2] {
        let response = send(&app, event).await;
        assert_eq!(response.status, 400, "{}", response.text());
        assert!(!response.text().contains("s3cr3t"), "{}", response.text());
    }
}

#[tokio::test]
async fn a_panic_is_a_500_and_the_app_keeps_serving() {
    let app = app();
    let response = send(&app, events::http("GET", "/panic").v2()).await;
    assert_eq!(response.status, 500);
    assert!(!response.text().contains("handler bug"));
    let next = send(&app, events::http("GET", "/orders/7").v2()).await;
    assert_eq!(next.status, 200);
}

#[tokio::test]
async fn internal_errors_do_not_leak() {
    let app = app();
    let response = send(&app, events::http("GET", "/secret").v2()).await;
    assert_eq!(response.status, 500);
    assert!(!response.text().contains("hunter2"), "{}", response.text());
    let wrong = send(&app, events::http("GET", "/wrong/1").v2()).await;
    assert_eq!(wrong.status, 500);
}

#[tokio::test]
async fn binary_bodies_travel_base64() {
    let app = app();
    let response = send(&app, events::http("GET", "/binary").v2()).await;
    assert!(response.base64);
    assert_eq!(response.body, vec![0, 159, 146, 150]);

    let upload = TestApp::new(App::new().post("/echo", |ctx: Context| async move {
        Ok::<_, Error>(format!("{:?}", ctx.body()))
    }))
    .expect("app");
    let response = send(
        &upload,
        events::http("POST", "/echo").binary(&[1, 2, 255]).v1(),
    )
    .await;
    assert_eq!(response.text(), "[1, 2, 255]");
}

#[tokio::test]
async fn response_headers_take_each_source_shape() {
    let app = app();
    let v2 = app
        .invoke(&events::http("GET", "/cookies").v2())
        .await
        .expect("v2");
    assert_eq!(v2["cookies"], json!(["a=1", "b=2"]));
    assert_eq!(v2["headers"]["x-multi"], "one, two");
    assert!(v2.get("multiValueHeaders").is_none());

    let v1 = app
        .invoke(&events::http("GET", "/cookies").v1())
        .await
        .expect("v1");
    assert_eq!(v1["multiValueHeaders"]["x-multi"], json!(["one", "two"]));
    assert_eq!(v1["multiValueHeaders"]["set-cookie"], json!(["a=1", "b=2"]));
    assert!(v1.get("headers").is_none());

    let alb = app
        .invoke(&events::http("GET", "/cookies").alb())
        .await
        .expect("alb");
    assert_eq!(alb["statusDescription"], "200 OK");
    assert_eq!(alb["multiValueHeaders"]["x-multi"], json!(["one", "two"]));

    let mut single = events::http("GET", "/cookies").alb();
    single
        .as_object_mut()
        .expect("object")
        .remove("multiValueHeaders");
    single["headers"] = json!({"host": "example.com"});
    let alb_single = app.invoke(&single).await.expect("alb single");
    assert!(alb_single.get("multiValueHeaders").is_none());
    assert_eq!(alb_single["headers"]["x-multi"], "one, two");
    // Cookies are never folded into one (the browser would read `a` as `1, b=2`).
    assert_eq!(alb_single["headers"]["set-cookie"], "a=1");
}

#[tokio::test]
async fn correlation_id_header_is_used() {
    let app = app();
    let response = send(
        &app,
        events::http("GET", "/orders/1")
            .header("x-correlation-id", "corr-42")
            .v2(),
    )
    .await;
    assert_eq!(
        response.json::<Value>().expect("json")["correlation"],
        "corr-42"
    );
}

#[tokio::test]
async fn v2_named_stage_is_stripped_from_the_path() {
    let app = app();
    let mut event = events::http("GET", "/prod/orders/9").v2();
    event["requestContext"]["stage"] = json!("prod");
    let response = send(&app, event).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json::<Value>().expect("json")["id"], "9");
}

#[tokio::test]
async fn conflicting_routes_are_a_configuration_error() {
    let app = App::new()
        .get("/a/{id}", get_order)
        .get("/a/{name}", get_order);
    assert!(matches!(app.into_service(), Err(Error::Config(_))));
}

#[tokio::test]
async fn middleware_sees_the_route_and_can_refuse() {
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorder = seen.clone();
    let layer = tower::layer::layer_fn(move |inner: lift_core::BoxService| {
        let recorder = recorder.clone();
        tower::service_fn(move |ctx: Context| {
            let recorder = recorder.clone();
            let inner = inner.clone();
            async move {
                recorder
                    .lock()
                    .expect("lock")
                    .push(ctx.route().unwrap_or("-").to_owned());
                if ctx.header("x-deny").is_some() {
                    return Err::<Response, lift_core::BoxError>(Box::new(Error::new(
                        StatusCode::FORBIDDEN,
                        "denied",
                        "denied by policy",
                    )));
                }
                inner.oneshot(ctx).await
            }
        })
    });
    let app = TestApp::new(App::new().get("/orders/{id}", get_order).layer(layer)).expect("app");
    assert_eq!(
        send(&app, events::http("GET", "/orders/1").v2())
            .await
            .status,
        200
    );
    let denied = send(
        &app,
        events::http("GET", "/orders/1").header("x-deny", "1").v2(),
    )
    .await;
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.json::<Value>().expect("json")["error"]["code"],
        "denied"
    );
    assert_eq!(
        send(&app, events::http("GET", "/missing").v2())
            .await
            .status,
        404
    );
    assert_eq!(
        *seen.lock().expect("lock"),
        ["/orders/{id}", "/orders/{id}", "-"]
    );
}

#[tokio::test]
async fn one_route_can_have_its_own_layer() {
    use tower::ServiceExt;

    let deny_all = tower::layer::layer_fn(|inner: lift_core::BoxService| {
        tower::service_fn(move |ctx: Context| {
            let inner = inner.clone();
            async move {
                if ctx.header("x-pass").is_none() {
                    return Err::<Response, lift_core::BoxError>(Box::new(Error::new(
                        StatusCode::FORBIDDEN,
                        "route_guard",
                        "this route needs x-pass",
                    )));
                }
                inner.oneshot(ctx).await
            }
        })
    });
    let app = TestApp::new(
        App::new()
            .get("/guarded/{id}", lift_core::with_layer(get_order, deny_all))
            .get("/open/{id}", get_order),
    )
    .expect("app");
    let refused = send(&app, events::http("GET", "/guarded/1").v2()).await;
    assert_eq!(refused.status, 403);
    let passed = send(
        &app,
        events::http("GET", "/guarded/1").header("x-pass", "1").v2(),
    )
    .await;
    assert_eq!(passed.status, 200);
    assert_eq!(
        passed.json::<Value>().expect("json")["route"],
        "/guarded/{id}"
    );
    assert_eq!(
        send(&app, events::http("GET", "/open/1").v2()).await.status,
        200
    );
}

#[derive(Clone, Debug, PartialEq)]
struct Mark(&'static str);

async fn marks(ctx: Context) -> Result<Json<Value>> {
    Ok(Json(json!({
        "mark": ctx.extensions().get::<Mark>().map(|m| m.0),
        "tenant": ctx.tenant(),
        "correlation": ctx.correlation_id(),
    })))
}

#[tokio::test]
async fn a_cloned_context_shares_extensions_until_one_side_changes_them() {
    use tower::ServiceExt;

    let layer = tower::layer::layer_fn(|inner: lift_core::BoxService| {
        tower::service_fn(move |mut ctx: Context| {
            let inner = inner.clone();
            async move {
                assert!(ctx.extensions().get::<Mark>().is_none(), "none yet");
                ctx.set_tenant(lift_core::TenantId("acme".into()));
                ctx.extensions_mut().insert(Mark("original"));
                // What a retry does: keep a clone for the next attempt.
                let mut kept = ctx.clone();
                assert_eq!(kept.extensions().get::<Mark>(), Some(&Mark("original")));
                kept.extensions_mut().insert(Mark("changed in the clone"));
                assert_eq!(kept.tenant(), Some("acme"));
                assert_eq!(kept.correlation_id(), ctx.correlation_id());
                inner.oneshot(ctx).await
            }
        })
    });
    let app = TestApp::new(App::new().get("/marks", marks).layer(layer)).expect("app");
    let answer = send(&app, events::http("GET", "/marks").v2()).await;
    assert_eq!(answer.status, 200);
    let body = answer.json::<Value>().expect("json");
    assert_eq!(body["mark"], "original");
    assert_eq!(body["tenant"], "acme");
    let correlated = send(
        &app,
        events::http("GET", "/marks")
            .header("x-correlation-id", "c-42")
            .v2(),
    )
    .await;
    assert_eq!(
        correlated.json::<Value>().expect("json")["correlation"],
        "c-42"
    );
}

/// A REST API behind a custom domain with a base path mapping (`/v1`) sends the base in
/// the path; with `base_path` the routes match with and without it, whole segments only.
#[tokio::test]
async fn a_base_path_is_routed_as_if_it_were_not_there() {
    let app = TestApp::new(
        App::new()
            .get("/orders/{id}", get_order)
            .get("/", |_ctx: Context| async { Ok::<_, Error>("root") })
            .base_path("/v1/")
            .base_path("/shop"),
    )
    .expect("app");
    for (path, status) in [
        ("/v1/orders/7", 200),
        ("/orders/7", 200),
        ("/shop/orders/7", 200),
        ("/v1", 200),
        ("/v10/orders/7", 404),
    ] {
        for event in [
            events::http("GET", path).v1(),
            events::http("GET", path).v2(),
        ] {
            let response = send(&app, event).await;
            assert_eq!(response.status, status, "{path}: {}", response.text());
        }
    }
    let response = send(&app, events::http("GET", "/v1/orders/7").v1()).await;
    let body: Value = response.json().expect("json");
    assert_eq!(body["route"], "/orders/{id}");
    assert!(TestApp::new(App::new().base_path("v1")).is_err());
}

/// A caller's correlation id is taken when it is 1 to 128 visible characters; an empty,
/// huge or spaced one is ignored for the request id (it goes into every log line and onto
/// every message sent on, where SQS refuses an empty attribute).
#[tokio::test]
async fn an_unusable_correlation_id_is_replaced_by_the_request_id() {
    let app = app();
    let long = "x".repeat(200);
    for (sent, kept) in [
        ("corr-7", "corr-7"),
        ("", "test-request-id"),
        (long.as_str(), "test-request-id"),
        ("two words", "test-request-id"),
    ] {
        let event = events::http("GET", "/orders/1")
            .header("x-correlation-id", sent)
            .v2();
        let body: Value = send(&app, event).await.json().expect("json");
        assert_eq!(body["correlation"], kept, "{sent:?}");
    }
}
