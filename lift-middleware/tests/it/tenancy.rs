//! Tenant resolution on a real App: from a verified claim, API Gateway's authorizer, a
//! trusted header, a path parameter or the subdomain; refusals for a missing, malformed or
//! mismatched tenant; the tenant on log lines and on outbound calls.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::Buffer;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lift_core::testing::{HttpResponse, TestApp, events};
use lift_core::{App, Context, Json};
use lift_middleware::auth::{JwtAuthLayer, JwtConfig};
use lift_middleware::tenancy::{self, TenantConfig, TenantLayer, TenantSource};
use serde_json::{Value, json};
use tower::ServiceBuilder;

const SECRET: &[u8] = b"lift-test-secret-of-32-bytes-or-more!";

fn token(tenant: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "u1", "exp": exp, "tenant_id": tenant}),
        &EncodingKey::from_secret(SECRET),
    )
    .expect("sign")
}

async fn show(ctx: Context) -> lift_core::Result<Json<Value>> {
    let mut outbound = http::HeaderMap::new();
    tenancy::propagate(&ctx, &mut outbound);
    tracing::info!("handled");
    Ok(Json(json!({
        "tenant": ctx.tenant(),
        "outbound": outbound.get(tenancy::TENANT_HEADER).and_then(|v| v.to_str().ok()),
    })))
}

fn app(config: TenantConfig) -> TestApp {
    let jwt = JwtConfig::builder()
        .hs256_secret(None, SECRET)
        .algorithms(&[Algorithm::HS256])
        .optional(true)
        .build()
        .expect("jwt");
    TestApp::new(
        App::new()
            .get("/t/{tenant}/orders", show)
            .get("/orders", show)
            .layer(
                ServiceBuilder::new()
                    .layer(JwtAuthLayer::new(jwt))
                    .layer(TenantLayer::new(config)),
            ),
    )
    .expect("app")
}

fn claim_then_path() -> TenantConfig {
    TenantConfig::builder()
        .source(TenantSource::Claim("tenant_id".to_owned()))
        .source(TenantSource::PathParam("tenant".to_owned()))
        .build()
        .expect("config")
}

async fn send(app: &TestApp, event: Value) -> HttpResponse {
    app.http(event).await.expect("response")
}

#[tokio::test]
async fn the_verified_claim_names_the_tenant_and_travels_on() {
    let app = app(claim_then_path());
    let response = send(
        &app,
        events::http("GET", "/orders")
            .header("authorization", &format!("Bearer {}", token("acme")))
            .v2(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let body: Value = response.json().expect("json");
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["outbound"], "acme");
}

#[tokio::test]
async fn a_path_that_names_another_tenant_than_the_token_is_forbidden() {
    let app = app(claim_then_path());
    let same = send(
        &app,
        events::http("GET", "/t/acme/orders")
            .header("authorization", &format!("Bearer {}", token("acme")))
            .v2(),
    )
    .await;
    assert_eq!(same.status, 200);
    let other = send(
        &app,
        events::http("GET", "/t/globex/orders")
            .header("authorization", &format!("Bearer {}", token("acme")))
            .v2(),
    )
    .await;
    assert_eq!(other.status, 403);
    assert_eq!(
        other.json::<Value>().expect("json")["error"]["code"],
        "tenant_mismatch"
    );
}

/// A verified caller whose token has no tenant claim (a client-credentials token) cannot
/// act for a tenant of its choosing through the path; an anonymous request still can.
#[tokio::test]
async fn a_token_without_the_tenant_claim_cannot_pick_a_tenant_by_path() {
    let app = app(claim_then_path());
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs()
        + 600;
    for claims in [
        json!({"sub": "client-1", "exp": exp}),
        json!({"sub": "client-1", "exp": exp, "tenant_id": 42}),
    ] {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("sign");
        let response = send(
            &app,
            events::http("GET", "/t/globex/orders")
                .header("authorization", &format!("Bearer {token}"))
                .v2(),
        )
        .await;
        assert_eq!(response.status, 403, "{claims}: {}", response.text());
        assert_eq!(
            response.json::<Value>().expect("json")["error"]["code"],
            "tenant_claim_missing"
        );
    }
    let anonymous = send(&app, events::http("GET", "/t/globex/orders").v2()).await;
    assert_eq!(anonymous.status, 200);
    assert_eq!(anonymous.json::<Value>().expect("json")["tenant"], "globex");
}

#[tokio::test]
async fn missing_and_malformed_tenants_are_refused() {
    let app = app(claim_then_path());
    let missing = send(&app, events::http("GET", "/orders").v2()).await;
    assert_eq!(missing.status, 400);
    assert_eq!(
        missing.json::<Value>().expect("json")["error"]["code"],
        "tenant_required"
    );
    let malformed = send(&app, events::http("GET", "/t/acme%23admin/orders").v2()).await;
    assert_eq!(malformed.status, 400);
    assert_eq!(
        malformed.json::<Value>().expect("json")["error"]["code"],
        "invalid_tenant"
    );
}

#[tokio::test]
async fn headers_count_only_when_trusted_and_other_sources_work() {
    assert!(
        TenantConfig::builder()
            .source(TenantSource::Header(tenancy::TENANT_HEADER.to_owned()))
            .build()
            .is_err(),
        "an untrusted header source does not build"
    );
    let trusted = app(TenantConfig::builder()
        .source(TenantSource::Header(tenancy::TENANT_HEADER.to_owned()))
        .trust_headers(true)
        .build()
        .expect("config"));
    let by_header = send(
        &trusted,
        events::http("GET", "/orders")
            .header("x-tenant-id", "initech")
            .v1(),
    )
    .await;
    assert_eq!(
        by_header.json::<Value>().expect("json")["tenant"],
        "initech"
    );

    let by_host = app(TenantConfig::builder()
        .source(TenantSource::Subdomain)
        .build()
        .expect("config"));
    let response = send(
        &by_host,
        events::http("GET", "/orders")
            .header("host", "umbrella.api.example.com")
            .alb(),
    )
    .await;
    assert_eq!(
        response.json::<Value>().expect("json")["tenant"],
        "umbrella"
    );

    // Under one domain: the label before it, lower-cased; the API's own host, a deeper
    // name or another domain names no tenant (400 when one is required).
    let under = app(TenantConfig::builder()
        .source(TenantSource::SubdomainOf("api.example.com".to_owned()))
        .required(true)
        .build()
        .expect("config"));
    for (host, tenant) in [
        ("Umbrella.api.example.com", Some("umbrella")),
        ("umbrella.API.example.com:443", Some("umbrella")),
        ("api.example.com", None),
        ("a.b.api.example.com", None),
        ("a1b2c3.execute-api.us-east-1.amazonaws.com", None),
        ("xapi.example.com", None),
    ] {
        let response = send(
            &under,
            events::http("GET", "/orders").header("host", host).alb(),
        )
        .await;
        match tenant {
            Some(tenant) => assert_eq!(
                response.json::<Value>().expect("json")["tenant"],
                tenant,
                "{host}"
            ),
            None => assert_eq!(response.status, 400, "{host}: {}", response.text()),
        }
    }

    let by_authorizer = app(TenantConfig::builder()
        .source(TenantSource::Authorizer("tenant".to_owned()))
        .build()
        .expect("config"));
    let mut event = events::http("GET", "/orders").v2();
    event["requestContext"]["authorizer"] =
        json!({"jwt": {"claims": {"tenant": "hooli"}, "scopes": []}});
    let response = send(&by_authorizer, event).await;
    assert_eq!(response.json::<Value>().expect("json")["tenant"], "hooli");
}

#[tokio::test]
async fn the_tenant_is_on_every_later_log_line() {
    use tracing_subscriber::layer::SubscriberExt;

    let buffer = Buffer::default();
    let subscriber =
        tracing_subscriber::registry().with(lift_core::logging::JsonLayer::new(buffer.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = app(claim_then_path());
    let response = send(&app, events::http("GET", "/t/acme/orders").v2()).await;
    assert_eq!(response.status, 200);
    let line: Value = buffer
        .lines()
        .into_iter()
        .find(|l| l["message"] == "handled")
        .expect("the handler's line");
    assert_eq!(line["tenant"], "acme");
    assert_eq!(line["requestId"], "test-request-id");
}

#[tokio::test]
async fn the_tenant_can_be_a_metrics_dimension() {
    use lift_core::metrics::{MetricsConfig, MetricsSink};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<String>>>);
    impl MetricsSink for Captured {
        fn write(&self, document: &str) {
            self.0.lock().expect("lock").push(document.to_owned());
        }
    }
    let sink = Captured::default();
    let app = TestApp::new(
        App::new()
            .get("/t/{tenant}/orders", show)
            .layer(TenantLayer::new(
                TenantConfig::builder()
                    .source(TenantSource::PathParam("tenant".to_owned()))
                    .metrics_dimension(true)
                    .build()
                    .expect("config"),
            ))
            .metrics(MetricsConfig::new("Shop").sink(sink.clone())),
    )
    .expect("app");
    send(&app, events::http("GET", "/t/acme/orders").v2()).await;
    let documents = sink.0.lock().expect("lock").clone();
    let document: Value = serde_json::from_str(&documents[0]).expect("EMF");
    assert_eq!(document["tenant"], "acme");
    assert!(
        document["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
            .as_array()
            .is_some_and(|d| d.contains(&json!("tenant")))
    );
}

/// An EventBridge event's envelope names its tenant at the top of the `detail`; the
/// message-attribute source reads it there, as it reads an SQS message attribute.
#[tokio::test]
async fn an_eventbridge_envelope_names_the_tenant() {
    let config = TenantConfig::builder()
        .source(TenantSource::MessageAttribute("tenant".to_owned()))
        .build()
        .expect("config");
    let app = TestApp::new(
        App::new()
            .event_fallback(|ctx: Context| async move {
                Ok::<_, lift_core::Error>(Json(json!({ "tenant": ctx.tenant() })))
            })
            .layer(TenantLayer::new(config)),
    )
    .expect("app");
    let event = events::eventbridge(
        "shop.orders",
        "OrderPlaced",
        json!({"tenant": "acme", "payload": {}}),
    );
    let answer = app.invoke(&event).await.expect("handled");
    assert_eq!(answer["tenant"], "acme");
    // A malformed tenant in the envelope is refused like any other.
    let event = events::eventbridge("shop.orders", "OrderPlaced", json!({"tenant": "a#b"}));
    assert!(app.invoke(&event).await.is_err());
}
