//! API Gateway WebSocket events through an App, in-process: routing by route key, the
//! `$default` fallback, the connection in the Context, typed input, refusing a connection,
//! middleware, and the WebSocket proxy response shape.

use std::sync::{Arc, Mutex};

use lift_core::aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lift_core::http::StatusCode;
use lift_core::testing::{HttpResponse, TestApp, events};
use lift_core::websocket::{EventType, WebSocketApi};
use lift_core::{App, Context, Error, Json, Response, Result, Source};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize, garde::Validate)]
struct Say {
    #[garde(skip)]
    #[allow(dead_code)]
    action: String,
    #[garde(length(min = 1, max = 16))]
    text: String,
}

/// Everything a handler can learn about its WebSocket event.
fn describe(ctx: &Context) -> Result<Value> {
    let ws = ctx
        .websocket()
        .ok_or_else(|| Error::internal("not a WebSocket event"))?;
    Ok(json!({
        "source": ctx.source().as_str(),
        "route": ctx.route(),
        "routeKey": ws.route_key(),
        "eventType": ws.event_type().as_str(),
        "connectionId": ctx.connection_id(),
        "apiId": ws.api_id(),
        "stage": ws.stage(),
        "domainName": ws.domain_name(),
        "messageId": ws.message_id(),
        "body": String::from_utf8_lossy(ctx.body()),
        "token": ctx.query("token"),
        "origin": ctx.header("origin"),
    }))
}

async fn connect(ctx: Context) -> Result<Json<Value>> {
    if ctx.query("token") != Some("let-me-in") {
        return Err(Error::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `token` query parameter is required",
        ));
    }
    Ok(Json(describe(&ctx)?))
}

async fn disconnect(ctx: Context) -> Result<Json<Value>> {
    Ok(Json(describe(&ctx)?))
}

async fn fallback(ctx: Context) -> Result<Json<Value>> {
    Ok(Json(describe(&ctx)?))
}

async fn say(ctx: Context, input: Say) -> Result<Json<Value>> {
    let mut described = describe(&ctx)?;
    described["text"] = Value::from(input.text);
    Ok(Json(described))
}

async fn http_hello(_ctx: Context) -> Result<String> {
    Ok("hello over HTTP".to_owned())
}

async fn sqs_record(_ctx: Context) -> Result<()> {
    Ok(())
}

fn chat() -> App {
    App::new()
        .get("/hello", http_hello)
        .sqs(sqs_record)
        .websocket("$connect", connect)
        .websocket("$disconnect", disconnect)
        .websocket("$default", fallback)
        .websocket("say", say)
}

fn app() -> TestApp {
    TestApp::new(chat()).expect("app")
}

async fn send(app: &TestApp, event: Value) -> HttpResponse {
    app.websocket(event).await.expect("invocation succeeds")
}

#[tokio::test]
async fn each_route_key_reaches_its_handler_with_the_connection_in_the_context() {
    let app = app();
    let client = events::websocket("conn-1").api("abc123", "live");

    let connected = send(
        &app,
        client
            .clone()
            .query("token", "let-me-in")
            .header("Origin", "https://chat.example")
            .connect(),
    )
    .await;
    assert_eq!(connected.status, 200, "{}", connected.text());
    let body: Value = connected.json().expect("json");
    assert_eq!(body["source"], "websocket");
    assert_eq!(body["route"], "$connect");
    assert_eq!(body["routeKey"], "$connect");
    assert_eq!(body["eventType"], "CONNECT");
    assert_eq!(body["connectionId"], "conn-1");
    assert_eq!(body["apiId"], "abc123");
    assert_eq!(body["stage"], "live");
    assert_eq!(
        body["domainName"],
        "abc123.execute-api.us-east-1.amazonaws.com"
    );
    assert_eq!(body["token"], "let-me-in");
    assert_eq!(body["origin"], "https://chat.example");

    let said = send(
        &app,
        client.message("say", r#"{"action":"say","text":"hi"}"#),
    )
    .await;
    assert_eq!(said.status, 200, "{}", said.text());
    let body: Value = said.json().expect("json");
    assert_eq!(body["route"], "say");
    assert_eq!(body["routeKey"], "say");
    assert_eq!(body["eventType"], "MESSAGE");
    assert_eq!(body["messageId"], "message-id");
    assert_eq!(body["text"], "hi");
    assert_eq!(body["connectionId"], "conn-1");
    // Messages carry no handshake: query and headers are the $connect's only.
    assert_eq!(body["token"], Value::Null);

    let gone = send(&app, client.disconnect()).await;
    assert_eq!(gone.status, 200);
    let body: Value = gone.json().expect("json");
    assert_eq!(body["route"], "$disconnect");
    assert_eq!(body["eventType"], "DISCONNECT");
}

#[tokio::test]
async fn http_and_batches_still_work_in_the_same_app() {
    let app = app();
    let http = app
        .http(events::http("GET", "/hello").v2())
        .await
        .expect("http");
    assert_eq!(http.status, 200);
    assert_eq!(http.text(), "hello over HTTP");
    let batch = app.invoke(&events::sqs(["a"])).await.expect("sqs");
    assert!(lift_core::testing::batch_failures(&batch).is_empty());
}

#[tokio::test]
async fn an_unregistered_message_key_falls_back_to_default() {
    let app = app();
    let response = send(
        &app,
        events::websocket("conn-2").message("shout", r#"{"action":"shout"}"#),
    )
    .await;
    assert_eq!(response.status, 200);
    let body: Value = response.json().expect("json");
    assert_eq!(body["route"], "$default");
    assert_eq!(body["routeKey"], "shout");
    assert_eq!(body["body"], r#"{"action":"shout"}"#);
}

#[tokio::test]
async fn without_a_default_an_unregistered_key_is_a_clear_error() {
    let app = TestApp::new(App::new().websocket("say", say)).expect("app");
    let response = send(&app, events::websocket("c").message("shout", "{}")).await;
    assert_eq!(response.status, 500);
    let body: Value = response.json().expect("json");
    assert_eq!(body["error"]["code"], "no_handler");
    assert_eq!(body["error"]["message"], "internal error");

    // $connect never falls back to the message handler `$default`.
    let app = TestApp::new(App::new().websocket("$default", fallback)).expect("app");
    let response = send(&app, events::websocket("c").connect()).await;
    assert_eq!(response.status, 500);
    assert_eq!(
        response.json::<Value>().expect("json")["error"]["code"],
        "no_handler"
    );
}

#[tokio::test]
async fn typed_input_is_parsed_and_validated_like_an_http_body() {
    let app = app();
    let client = events::websocket("conn-3");

    let invalid = send(&app, client.message("say", r#"{"action":"say","text":""}"#)).await;
    assert_eq!(invalid.status, 422, "{}", invalid.text());
    let body: Value = invalid.json().expect("json");
    assert_eq!(body["error"]["code"], "validation_failed");
    assert_eq!(body["error"]["fields"][0]["pointer"], "/text");
    assert_eq!(body["error"]["requestId"], "test-request-id");

    let missing = send(&app, client.message("say", r#"{"action":"say"}"#)).await;
    assert_eq!(missing.status, 422);
    assert!(
        missing.json::<Value>().expect("json")["error"]["fields"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("text")),
        "{}",
        missing.text()
    );

    let malformed = send(&app, client.message("say", "{\"action\": ")).await;
    assert_eq!(malformed.status, 400);
    assert_eq!(
        malformed.json::<Value>().expect("json")["error"]["code"],
        "malformed_json"
    );

    let empty = send(&app, client.message("say", "")).await;
    assert_eq!(empty.status, 400);
    assert_eq!(
        empty.json::<Value>().expect("json")["error"]["code"],
        "empty_body"
    );
}

#[tokio::test]
async fn a_refused_connect_answers_in_websocket_proxy_shape() {
    let app = app();
    let raw = app
        .invoke(&events::websocket("conn-4").connect())
        .await
        .expect("invocation succeeds");
    let keys: Vec<&str> = raw
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "{raw}");
    for key in ["statusCode", "headers", "body", "isBase64Encoded"] {
        assert!(keys.contains(&key), "{key} missing from {raw}");
    }
    assert_eq!(raw["statusCode"], 401);
    assert_eq!(raw["isBase64Encoded"], false);
    assert_eq!(raw["headers"]["content-type"], "application/json");
    let body: Value = serde_json::from_str(raw["body"].as_str().expect("text body")).expect("json");
    assert_eq!(body["error"]["code"], "unauthorized");

    let wrong = send(
        &app,
        events::websocket("conn-4")
            .query("token", "guess")
            .connect(),
    )
    .await;
    assert_eq!(wrong.status, 401);
}

#[tokio::test]
async fn a_unit_answer_is_an_empty_success() {
    async fn quiet(_ctx: Context) -> Result<()> {
        Ok(())
    }
    let app = TestApp::new(App::new().websocket("$default", quiet)).expect("app");
    let raw = app
        .invoke(&events::websocket("c").message("$default", "ping"))
        .await
        .expect("invocation");
    assert_eq!(raw["statusCode"], 204);
    assert_eq!(raw["body"], "");
}

#[tokio::test]
async fn binary_messages_arrive_decoded() {
    let app = app();
    let mut event = events::websocket("c").message("$default", "aGk=");
    event["isBase64Encoded"] = Value::from(true);
    let body: Value = send(&app, event).await.json().expect("json");
    assert_eq!(body["body"], "hi");

    let mut broken = events::websocket("c").message("$default", "%%%");
    broken["isBase64Encoded"] = Value::from(true);
    assert_eq!(send(&app, broken).await.status, 400);
}

#[tokio::test]
async fn middleware_applies_to_websocket_routes() {
    use tower::ServiceExt;

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorder = seen.clone();
    let layer = tower::layer::layer_fn(move |inner: lift_core::BoxService| {
        let recorder = recorder.clone();
        tower::service_fn(move |ctx: Context| {
            let recorder = recorder.clone();
            let inner = inner.clone();
            async move {
                recorder.lock().expect("lock").push(format!(
                    "{} {}",
                    ctx.source().as_str(),
                    ctx.route().unwrap_or("-")
                ));
                if ctx.source() == Source::WebSocket && ctx.header("x-deny").is_some() {
                    return Err::<Response, lift_core::BoxError>(Box::new(Error::forbidden(
                        "denied",
                        "denied by policy",
                    )));
                }
                inner.oneshot(ctx).await
            }
        })
    });
    let app = TestApp::new(chat().layer(layer)).expect("app");
    let client = events::websocket("conn-5").query("token", "let-me-in");
    assert_eq!(send(&app, client.connect()).await.status, 200);
    let denied = send(&app, client.clone().header("x-deny", "1").connect()).await;
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.json::<Value>().expect("json")["error"]["code"],
        "denied"
    );
    assert_eq!(
        send(&app, client.message("anything", "{}")).await.status,
        200
    );
    assert_eq!(
        *seen.lock().expect("lock"),
        [
            "websocket $connect",
            "websocket $connect",
            "websocket $default"
        ]
    );
}

#[tokio::test]
async fn a_handler_panic_is_a_500_answer() {
    async fn explode(_ctx: Context) -> Result<()> {
        panic!("handler bug");
    }
    let app = TestApp::new(App::new().websocket("$default", explode)).expect("app");
    let response = send(&app, events::websocket("c").message("$default", "{}")).await;
    assert_eq!(response.status, 500);
    assert_eq!(
        response.json::<Value>().expect("json")["error"]["message"],
        "internal error"
    );
}

/// A `$connect` whose header the types cannot hold (a control character) is refused with
/// a 400, not a failed invocation whose error quotes the value.
#[tokio::test]
async fn a_header_the_types_cannot_hold_refuses_the_connection() {
    let app = app();
    let mut event = events::websocket("c").connect();
    event["headers"]["cookie"] = Value::from("sid=s3cr3t\u{1}");
    let answer = app.invoke(&event).await.expect("an answer, not an error");
    assert_eq!(answer["statusCode"], 400, "{answer}");
    assert!(!answer.to_string().contains("s3cr3t"), "{answer}");
}

#[tokio::test]
async fn an_event_without_a_route_key_is_an_invalid_event() {
    let app = app();
    let mut event = events::websocket("c").message("say", "{}");
    event["requestContext"]
        .as_object_mut()
        .expect("context")
        .remove("routeKey");
    let error = app.invoke(&event).await.expect_err("invalid event");
    assert_eq!(error.code(), "invalid_event");
    assert!(format!("{error:?}").contains("routeKey"), "{error:?}");
}

#[test]
fn duplicate_and_empty_route_keys_are_configuration_errors() {
    let twice = App::new().websocket("say", say).websocket("say", say);
    assert!(matches!(twice.into_service(), Err(Error::Config(m)) if m.contains("say")));
    let empty = App::new().websocket("", say);
    assert!(matches!(empty.into_service(), Err(Error::Config(_))));
}

#[test]
fn the_event_builders_parse_as_the_lambda_websocket_type() {
    let client = events::websocket("conn-6")
        .query("token", "t")
        .header("Origin", "o");
    for event in [
        client.connect(),
        client.message("say", "{}"),
        client.disconnect(),
    ] {
        let parsed: ApiGatewayWebsocketProxyRequest =
            serde_json::from_value(event.clone()).expect("parses");
        let again: ApiGatewayWebsocketProxyRequest =
            serde_json::from_str(&serde_json::to_string(&parsed).expect("serializes"))
                .expect("reparses");
        assert_eq!(parsed, again);
        assert_eq!(
            parsed.request_context.connection_id.as_deref(),
            Some("conn-6")
        );
    }
}

#[tokio::test]
async fn the_api_of_a_connection_is_storable() {
    async fn api(ctx: Context) -> Result<Json<WebSocketApi>> {
        let ws = ctx
            .websocket()
            .ok_or_else(|| Error::internal("not WebSocket"))?;
        assert_eq!(ws.event_type(), EventType::Message);
        Ok(Json(ws.api().clone()))
    }
    let app = TestApp::new(App::new().websocket("api", api)).expect("app");
    let stored: WebSocketApi = send(
        &app,
        events::websocket("c")
            .api("xyz789", "prod")
            .message("api", "{}"),
    )
    .await
    .json()
    .expect("json");
    assert_eq!(
        stored,
        WebSocketApi::new(
            "xyz789",
            "prod",
            "xyz789.execute-api.us-east-1.amazonaws.com"
        )
    );
}
