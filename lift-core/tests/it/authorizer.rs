//! API Gateway Lambda authorizers served by an App: the request as the handler sees it, and
//! the exact response API Gateway gets for each decision, event shape and error.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lift_core::authorizer::{Authorization, AuthorizerKind};
use lift_core::http::StatusCode;
use lift_core::testing::{TestApp, events};
use lift_core::{App, Context, Error, Result};
use serde_json::{Value, json};

const ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/GET/orders";
const STAGE: &str = "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/*";

fn policy(principal: &str, effect: &str, resource: &str) -> Value {
    json!({
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{
                "Action": "execute-api:Invoke",
                "Effect": effect,
                "Resource": [resource]
            }]
        }
    })
}

/// Allows `Bearer good`, and `?key=good` for a WebSocket `$connect`; denies `Bearer bad`;
/// a missing token is a 401, `Bearer boom` a failure.
async fn decide(ctx: Context) -> Result<Authorization> {
    let request = ctx.authorizer().expect("an authorizer request");
    let token = match request.kind() {
        AuthorizerKind::Token => request.token().map(str::to_owned),
        _ => ctx
            .header("authorization")
            .map(str::to_owned)
            .or_else(|| ctx.query("key").map(|key| format!("Bearer {key}"))),
    };
    match token.as_deref() {
        Some("Bearer good") => {
            let mut decision = Authorization::allow("user-1").context("tenant", "acme");
            if let Some(connection) = request.connection_id() {
                decision = decision.context("connection", connection).for_all_routes();
            }
            Ok(decision)
        }
        Some("Bearer bad") => Ok(Authorization::deny("user-2")),
        Some("Bearer boom") => Err(Error::internal("the user store is down")),
        Some(_) => Err(Error::forbidden("unknown_token", "that token is not known")),
        None => Err(Error::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a bearer token is required",
        )),
    }
}

fn app(configure: impl FnOnce(App) -> App) -> TestApp {
    TestApp::new(configure(
        App::new()
            .authorizer(decide)
            .get("/orders", |_ctx: Context| async {
                Ok::<_, Error>("orders")
            }),
    ))
    .expect("app")
}

fn orders() -> events::AuthorizerEvent {
    events::authorizer("GET", "/orders")
}

#[tokio::test]
async fn a_token_authorizer_answers_with_an_iam_policy_for_the_method() {
    let app = app(|app| app);
    let allowed = app
        .invoke(&orders().token("Bearer good"))
        .await
        .expect("answer");
    let mut expected = policy("user-1", "Allow", ARN);
    expected["context"] = json!({"tenant": "acme"});
    assert_eq!(allowed, expected);

    let denied = app
        .invoke(&orders().token("Bearer bad"))
        .await
        .expect("answer");
    assert_eq!(denied, policy("user-2", "Deny", ARN));
}

#[tokio::test]
async fn a_request_authorizer_reads_headers_and_query() {
    let app = app(|app| app);
    let v1 = orders().header("Authorization", "Bearer good").request_v1();
    let answer = app.invoke(&v1).await.expect("answer");
    assert_eq!(answer["policyDocument"]["Statement"][0]["Effect"], "Allow");
    assert_eq!(answer["policyDocument"]["Statement"][0]["Resource"][0], ARN);

    // Payload 2.0 carries requestContext.http before routeArn: still an authorizer request.
    let v2 = orders().header("authorization", "Bearer bad").request_v2();
    let answer = app.invoke(&v2).await.expect("answer");
    assert_eq!(answer, policy("user-2", "Deny", ARN));
}

#[tokio::test]
async fn payload_2_answers_in_the_simple_format_when_asked() {
    let app = app(App::authorizer_simple_responses);
    let allowed = app
        .invoke(&orders().header("authorization", "Bearer good").request_v2())
        .await
        .expect("answer");
    assert_eq!(
        allowed,
        json!({"isAuthorized": true, "context": {"tenant": "acme"}})
    );
    let denied = app
        .invoke(&orders().header("authorization", "Bearer bad").request_v2())
        .await
        .expect("answer");
    assert_eq!(denied, json!({"isAuthorized": false}));
    // REST and TOKEN requests still need a policy.
    let token = app
        .invoke(&orders().token("Bearer bad"))
        .await
        .expect("answer");
    assert_eq!(token, policy("user-2", "Deny", ARN));
}

#[tokio::test]
async fn a_websocket_connect_is_authorized_for_the_whole_stage() {
    let app = app(|app| app);
    let answer = app
        .invoke(&orders().query("key", "good").websocket_connect("conn-7"))
        .await
        .expect("answer");
    let mut expected = policy("user-1", "Allow", STAGE);
    expected["context"] = json!({"tenant": "acme", "connection": "conn-7"});
    assert_eq!(answer, expected);
}

#[tokio::test]
async fn errors_become_what_api_gateway_understands() {
    let app = app(|app| app);
    // 401: the invocation error API Gateway turns into `401 Unauthorized`.
    let missing = app.invoke(&orders().request_v1()).await.expect_err("401");
    let diagnostic = lambda_runtime::Diagnostic::from(missing);
    assert_eq!(diagnostic.error_message, "Unauthorized");

    // 403: a deny.
    let forbidden = app
        .invoke(&orders().token("Bearer who"))
        .await
        .expect("a policy");
    assert_eq!(forbidden, policy("unknown", "Deny", ARN));

    // An HTTP API has no `Unauthorized` convention: there a 401 is a deny.
    let http_api = app.invoke(&orders().request_v2()).await.expect("a policy");
    assert_eq!(http_api, policy("unknown", "Deny", ARN));

    // Anything else fails the invocation (API Gateway answers 500); nothing is allowed.
    let failed = app
        .invoke(&orders().token("Bearer boom"))
        .await
        .expect_err("failure");
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn a_handler_that_answers_anything_else_fails_closed() {
    let app =
        TestApp::new(App::new().authorizer(|_ctx: Context| async { Ok::<_, Error>("allow") }))
            .expect("app");
    let error = app.invoke(&orders().token("x")).await.expect_err("refused");
    assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn http_requests_still_reach_their_routes() {
    let app = app(|app| app);
    let response = app
        .http(events::http("GET", "/orders").v2())
        .await
        .expect("response");
    assert_eq!((response.status, response.text().as_str()), (200, "orders"));
}

/// What the authorizer in front of an HTTP request passed on reaches the handler through
/// `Context::authorizer_value`, for each shape API Gateway delivers it in.
#[tokio::test]
async fn an_upstream_authorizers_values_reach_the_handler() {
    let app = TestApp::new(App::new().any("/{*path}", |ctx: Context| async move {
        let value = |name: &str| ctx.authorizer_value(name);
        Ok::<_, Error>(lift_core::Json(json!({
            "customer": value("customer"),
            "plan": value("plan"),
            "admin": value("admin"),
            "claim1": value("claim1"),
            "missing": value("missing"),
        })))
    }))
    .expect("app");
    let read = |event: Value| {
        let app = &app;
        async move {
            let response = app.http(event).await.expect("response");
            response.json::<Value>().expect("json")
        }
    };

    // Payload 2.0: a Lambda authorizer's context sits under `lambda`.
    let mut v2 = events::http("GET", "/orders").v2();
    v2["requestContext"]["authorizer"] =
        json!({"lambda": {"customer": "c-1", "plan": 3, "admin": false}});
    assert_eq!(
        read(v2).await,
        json!({"customer": "c-1", "plan": "3", "admin": "false", "claim1": null, "missing": null})
    );

    // REST (payload 1.0): the fields sit in `authorizer` itself.
    let mut v1 = events::http("GET", "/orders").v1();
    v1["requestContext"]["authorizer"] = json!({"customer": "c-2", "principalId": "c-2"});
    assert_eq!(read(v1).await["customer"], "c-2");

    // A JWT authorizer's verified claims, from a real HTTP API payload.
    let jwt = lift_core::testing::fixture(format!(
        "{}/../../shared/fixtures/events/example-apigw-v2-request-jwt-authorizer.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    let values = read(jwt).await;
    assert_eq!(values["claim1"], "value1");
    assert_eq!(values["customer"], Value::Null);

    // No authorizer ran.
    assert_eq!(
        read(events::http("GET", "/orders").v2()).await["customer"],
        Value::Null
    );
}

/// With response streaming on, an HTTP API authorizer's payload 2.0 event (which reads as
/// an HTTP request) still goes to the authorizer, through the entry the runtime calls,
/// and never runs a route.
#[tokio::test]
async fn with_streaming_on_an_authorizer_event_goes_to_the_authorizer() {
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    let app = TestApp::new(
        App::new()
            .authorizer(decide)
            .get("/orders", move |_ctx: Context| {
                let flag = flag.clone();
                async move {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok::<_, Error>("orders")
                }
            })
            .response_streaming(),
    )
    .expect("app");
    let event = orders().header("authorization", "Bearer good").request_v2();
    let raw = serde_json::value::to_raw_value(&event).expect("raw");
    let reply = app
        .service()
        .respond(&raw, lift_core::testing::lambda_context("r"))
        .await
        .expect("answer");
    let lambda_runtime::FunctionResponse::BufferedResponse(answer) = reply else {
        panic!("an authorizer's answer is not streamed");
    };
    let answer: Value = serde_json::from_str(answer.get()).expect("json");
    assert_eq!(answer["policyDocument"]["Statement"][0]["Effect"], "Allow");
    assert!(
        !ran.load(std::sync::atomic::Ordering::SeqCst),
        "no route ran"
    );
}

/// A payload 2.0 authorizer request's cookies (not in its `headers`) and repeated query
/// parameters (joined with `,` in `queryStringParameters`) reach the handler as an HTTP
/// route would see them, values in the order sent (so the authorizer checks the first
/// value the route will read); so do a REST request's multi-value headers and parameters.
#[tokio::test]
async fn an_authorizer_sees_cookies_and_every_value() {
    async fn echo(ctx: Context) -> Result<Authorization> {
        let values: Vec<&str> = ctx.query_all("p").collect();
        let cookie = ctx.header("cookie").unwrap_or_default();
        let multi = ctx.header("x-multi").unwrap_or_default();
        Ok(Authorization::allow("u")
            .context("cookie", cookie)
            .context("p", values.join("|"))
            .context("multi", multi))
    }
    let app = TestApp::new(App::new().authorizer(echo)).expect("app");
    let mut v2 = orders().query("p", "b").query("p", "a").request_v2();
    v2["cookies"] = json!(["sid=1", "theme=dark"]);
    let answer = app.invoke(&v2).await.expect("answer");
    assert_eq!(answer["context"]["cookie"], "sid=1; theme=dark");
    assert_eq!(answer["context"]["p"], "b|a");

    let mut v1 = orders().request_v1();
    v1["multiValueHeaders"] = json!({"x-multi": ["one", "two"]});
    v1["multiValueQueryStringParameters"] = json!({"p": ["b", "a"]});
    let answer = app.invoke(&v1).await.expect("answer");
    assert_eq!(answer["context"]["multi"], "one");
    assert_eq!(answer["context"]["p"], "b|a");
}

/// REST and WebSocket APIs take authorizer context values that are strings, numbers or
/// booleans, and fail the call otherwise: a list goes as its JSON text, a null not at all.
/// An HTTP API's payload 2.0 takes any JSON, as given.
#[tokio::test]
async fn context_values_are_what_each_api_takes() {
    let app = TestApp::new(App::new().authorizer(|_ctx: Context| async {
        Ok::<_, Error>(
            Authorization::allow("user-1")
                .context("groups", json!(["a", "b"]))
                .context("tenant", Option::<String>::None)
                .context("limit", 7)
                .context("vip", true),
        )
    }))
    .expect("app");
    let rest = app
        .invoke(&orders().token("Bearer any"))
        .await
        .expect("answer");
    assert_eq!(
        rest["context"],
        json!({"groups": "[\"a\",\"b\"]", "limit": 7, "vip": true})
    );
    let http_api = app
        .invoke(&orders().header("authorization", "Bearer any").request_v2())
        .await
        .expect("answer");
    assert_eq!(http_api["context"]["groups"], json!(["a", "b"]));
}

/// An authorizer request reaching an App with routes but no authorizer is an invocation
/// error that says so; before, a REQUEST authorizer event was routed as the HTTP request
/// it describes and ran the route's handler.
#[tokio::test]
async fn an_authorizer_request_without_an_authorizer_runs_no_route() {
    let ran = Arc::new(AtomicUsize::new(0));
    let counted = ran.clone();
    let service = App::new()
        .get("/orders", move |_ctx: Context| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Error>("orders") }
        })
        .into_service()
        .expect("app");
    // In the order Lambda sends them (a `Value` would sort the keys).
    let rest = r#"{"type":"REQUEST","methodArn":"arn:aws:execute-api:us-east-1:123456789012:api/prod/GET/orders","resource":"/orders","path":"/orders","httpMethod":"GET","headers":{"Authorization":"Bearer t"},"queryStringParameters":null,"pathParameters":null,"stageVariables":null,"requestContext":{"resourcePath":"/orders","httpMethod":"GET","stage":"prod","requestId":"r"}}"#;
    let v2 = r#"{"version":"2.0","type":"REQUEST","routeArn":"arn:aws:execute-api:us-east-1:123456789012:api/prod/GET/orders","identitySource":["Bearer t"],"routeKey":"GET /orders","rawPath":"/orders","rawQueryString":"","headers":{"authorization":"Bearer t"},"requestContext":{"http":{"method":"GET","path":"/orders","protocol":"HTTP/1.1","sourceIp":"1.2.3.4","userAgent":"t"},"requestId":"r","routeKey":"GET /orders","stage":"prod"}}"#;
    for event in [rest, v2] {
        let raw = serde_json::value::RawValue::from_string(event.to_owned()).expect("json");
        let error = service
            .invoke(&raw, lift_core::testing::lambda_context("r"))
            .await
            .expect_err("no authorizer");
        assert!(
            matches!(&error, Error::NoHandler(what) if what.contains("App::authorizer")),
            "{error:?}"
        );
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

/// The same through the testing kit, whose events are `serde_json::Value`s with their keys
/// sorted, so that a payload 2.0 authorizer request's `routeArn` comes after its request
/// context.
#[tokio::test]
async fn a_sorted_payload_2_authorizer_request_without_an_authorizer_runs_no_route() {
    let app = TestApp::new(App::new().get("/orders", |_ctx: Context| async {
        Ok::<_, Error>("orders")
    }))
    .expect("app");
    let error = app
        .invoke(&orders().header("authorization", "Bearer t").request_v2())
        .await
        .expect_err("no authorizer");
    assert!(
        matches!(&error, Error::NoHandler(what) if what.contains("App::authorizer")),
        "{error:?}"
    );
}
