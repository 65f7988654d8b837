//! Service-to-service authorization, driven through a real `App` in-process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lift_core::testing::{HttpResponse, TestApp, batch_failures, events};
use lift_core::{App, Context, Error, Result};
use lift_middleware::ConfigError;
use lift_middleware::classify::WallClock;
use lift_middleware::service_auth::{
    ServiceAuthConfig, ServiceAuthConfigBuilder, ServiceAuthLayer, ServiceCaller,
    ServiceTokenError, ServiceTokenSigner,
};
use serde_json::{Value, json};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const OLD_SECRET: &[u8] = b"an-older-secret-still-accepted!!";
const SHIPPING_ROLE: &str = "arn:aws:sts::123456789012:assumed-role/shipping-role/shipping-fn";
const ADMIN_USER: &str = "arn:aws:iam::123456789012:user/admin";

/// A fixed wall clock: `NOW` seconds after the epoch.
#[derive(Debug, Clone, Copy)]
struct Fixed;
const NOW: u64 = 1_800_000_000;

impl WallClock for Fixed {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }
}

fn at(offset: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW.saturating_add_signed(offset))
}

fn token(service: &str, expires_in: i64) -> String {
    ServiceTokenSigner::new(SECRET)
        .expect("signer")
        .sign(service, at(expires_in))
        .expect("token")
}

async fn whoami(ctx: Context) -> Result<String> {
    let caller = ctx
        .extensions()
        .get::<ServiceCaller>()
        .ok_or(Error::internal("no ServiceCaller"))?;
    Ok(format!("{} called by {caller}", ctx.route().unwrap_or("-")))
}

fn policy() -> ServiceAuthConfigBuilder {
    ServiceAuthConfig::builder()
        .shared_secret(SECRET)
        .allow(
            "/internal/orders/{id}",
            [
                "billing",
                "arn:aws:sts::123456789012:assumed-role/shipping-role/*",
            ],
        )
        .allow("/internal/reports", ["reporting", ADMIN_USER])
        .allow_by_default(["ops"])
}

fn app(config: ServiceAuthConfig) -> TestApp {
    TestApp::new(
        App::new()
            .get("/internal/orders/{id}", whoami)
            .get("/internal/reports", whoami)
            .get("/internal/health", whoami)
            .sqs(|_ctx: Context| async { Ok::<_, Error>(()) })
            .layer(ServiceAuthLayer::new(config).with_clock(Fixed)),
    )
    .expect("app")
}

fn with_token(path: &str, token: &str) -> Value {
    events::http("GET", path)
        .header("x-lift-service-token", token)
        .v2()
}

fn error_code(response: &HttpResponse) -> String {
    let body: Value = response.json().expect("JSON error body");
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn an_allowed_service_token_reaches_the_handler_with_its_caller() {
    let app = app(policy().build().expect("config"));
    let response = app
        .http(with_token("/internal/orders/7", &token("billing", 60)))
        .await
        .expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), "/internal/orders/{id} called by billing");
}

#[tokio::test]
async fn a_caller_not_on_the_list_is_403_and_logged_at_warn() {
    let app = app(policy().build().expect("config"));
    let logs = Capture::default();
    let guard = tracing::subscriber::set_default(logs.clone());
    let response = app
        .http(with_token("/internal/orders/7", &token("reporting", 60)))
        .await
        .expect("response");
    drop(guard);
    assert_eq!(response.status, 403);
    assert_eq!(error_code(&response), "service_not_allowed");
    assert_eq!(response.header("www-authenticate"), None);

    let warnings = logs.events(Level::WARN, "lift::service_auth");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["caller"], "reporting");
    assert_eq!(warnings[0]["callee"], "lift-test");
    assert_eq!(warnings[0]["route"], "/internal/orders/{id}");
}

#[tokio::test]
async fn no_identity_is_401_with_a_challenge() {
    let app = app(policy().build().expect("config"));
    for event in [
        events::http("GET", "/internal/orders/7").v2(),
        events::http("GET", "/internal/orders/7").v1(),
        events::http("GET", "/internal/orders/7").alb(),
    ] {
        let response = app.http(event).await.expect("response");
        assert_eq!(response.status, 401);
        assert_eq!(error_code(&response), "unauthorized");
        assert_eq!(
            response.header("www-authenticate"),
            Some(r#"LiftService realm="lift""#)
        );
    }
}

#[tokio::test]
async fn expired_tampered_and_long_lived_tokens_are_401() {
    let app = app(policy().build().expect("config"));
    let good = token("billing", 60);
    let (message, signature) = good.rsplit_once('.').expect("token");
    let flipped = format!(
        "{message}.{}{}",
        if signature.starts_with('0') { "1" } else { "0" },
        &signature[1..]
    );
    let cases = [
        token("billing", 0),
        token("billing", -3600),
        good.replacen("billing", "billinh", 1),
        format!("billing.{}.{signature}", NOW + 120),
        flipped,
        token("billing", 16 * 60),
        ServiceTokenSigner::new(b"not-the-shared-secret-at-all-!!!")
            .expect("signer")
            .sign("billing", at(60))
            .expect("token"),
        "billing".to_owned(),
        format!("{good}.extra"),
    ];
    for bad in cases {
        let response = app
            .http(with_token("/internal/orders/7", &bad))
            .await
            .expect("response");
        assert_eq!(response.status, 401, "{bad}");
        assert_eq!(
            response.header("www-authenticate"),
            Some(r#"LiftService realm="lift", error="invalid_token""#),
            "{bad}"
        );
        assert!(!response.text().contains(&bad), "the token is never echoed");
    }
}

#[tokio::test]
async fn a_refused_token_is_not_rescued_by_an_iam_principal() {
    let app = app(policy().build().expect("config"));
    let mut event = with_token("/internal/orders/7", &token("billing", -1));
    event["requestContext"]["authorizer"] = json!({ "iam": { "userArn": SHIPPING_ROLE } });
    let response = app.http(event).await.expect("response");
    assert_eq!(response.status, 401);
}

/// A token names the service it is for; a function configured with its own name takes
/// only tokens for it, so one seen by another service cannot be replayed here.
#[tokio::test]
async fn a_function_with_an_audience_takes_only_tokens_for_it() {
    let signer = ServiceTokenSigner::new(SECRET).expect("signer");
    let for_service = |audience: &str| signer.sign_for("billing", audience, at(60)).expect("token");
    let orders = app(policy().audience("orders").build().expect("config"));
    let open = app(policy().build().expect("config"));
    let ours = for_service("orders");
    let elsewhere = for_service("payments");
    // The audience swapped in a token minted for another service: the HMAC covers it.
    let swapped = elsewhere.replacen(".payments.", ".orders.", 1);
    assert_ne!(swapped, elsewhere);
    for (app, token, status) in [
        (&orders, ours.as_str(), 200),
        (&orders, elsewhere.as_str(), 401),
        (&orders, swapped.as_str(), 401),
        // A token for no service is refused where the audience is checked...
        (&orders, token("billing", 60).as_str(), 401),
        // ...and without an audience any token of the secret is taken, as before.
        (&open, elsewhere.as_str(), 200),
        (&open, token("billing", 60).as_str(), 200),
    ] {
        let response = app
            .http(with_token("/internal/orders/7", token))
            .await
            .expect("response");
        assert_eq!(response.status, status, "{token}: {}", response.text());
        if status == 401 {
            assert_eq!(
                response.header("www-authenticate"),
                Some(r#"LiftService realm="lift", error="invalid_token""#)
            );
        }
    }
    assert_eq!(
        signer.sign_for("billing", "not.a.name", at(60)),
        Err(ServiceTokenError::InvalidServiceName)
    );
    assert!(matches!(
        ServiceAuthConfig::builder()
            .shared_secret(SECRET)
            .audience("orders.v2")
            .build(),
        Err(ConfigError::OutOfRange {
            field: "audience",
            ..
        })
    ));
}

/// On a WebSocket API, `$connect` is checked like an HTTP request (its handshake headers,
/// its IAM principal, the allow-list of its route key); the connection's messages and its
/// `$disconnect`, which carry no credentials, pass.
#[tokio::test]
async fn a_websocket_connect_is_checked_and_its_messages_pass() {
    let connected = Arc::new(Mutex::new(Vec::new()));
    let seen = connected.clone();
    let app = TestApp::new(
        App::new()
            .websocket("$connect", move |ctx: Context| {
                let seen = seen.clone();
                async move {
                    let caller = ctx.extensions().get::<ServiceCaller>().cloned();
                    seen.lock().expect("seen").push(caller.map(|c| c.0));
                    Ok::<_, Error>(())
                }
            })
            .websocket("say", |_ctx: Context| async { Ok::<_, Error>(()) })
            .websocket("$disconnect", |_ctx: Context| async { Ok::<_, Error>(()) })
            .layer(
                ServiceAuthLayer::new(
                    ServiceAuthConfig::builder()
                        .shared_secret(SECRET)
                        .allow("$connect", ["billing", SHIPPING_ROLE])
                        .build()
                        .expect("config"),
                )
                .with_clock(Fixed),
            ),
    )
    .expect("app");
    let anonymous = events::websocket("conn-1");
    let refused = app.websocket(anonymous.connect()).await.expect("response");
    assert_eq!(refused.status, 401, "{}", refused.text());
    let expired = events::websocket("conn-2").header("x-lift-service-token", &token("billing", -1));
    assert_eq!(
        app.websocket(expired.connect())
            .await
            .expect("response")
            .status,
        401
    );
    let stranger =
        events::websocket("conn-3").header("x-lift-service-token", &token("reporting", 60));
    let response = app.websocket(stranger.connect()).await.expect("response");
    assert_eq!(response.status, 403);
    assert_eq!(error_code(&response), "service_not_allowed");
    let billing = events::websocket("conn-4").header("x-lift-service-token", &token("billing", 60));
    let response = app.websocket(billing.connect()).await.expect("response");
    assert_eq!(response.status, 204, "{}", response.text());
    // The IAM principal of a `$connect` route with AWS_IAM authorization.
    let mut by_role = events::websocket("conn-5").connect();
    by_role["requestContext"]["identity"]["userArn"] = json!(SHIPPING_ROLE);
    assert_eq!(app.websocket(by_role).await.expect("response").status, 204);
    assert_eq!(
        *connected.lock().expect("seen"),
        [Some("billing".to_owned()), Some(SHIPPING_ROLE.to_owned())]
    );
    for event in [billing.message("say", "{}"), billing.disconnect()] {
        let response = app.websocket(event).await.expect("response");
        assert_eq!(response.status, 204, "{}", response.text());
    }
}

#[tokio::test]
async fn rotated_secrets_are_all_accepted() {
    let app = app(policy().shared_secret(OLD_SECRET).build().expect("config"));
    let old = ServiceTokenSigner::new(OLD_SECRET)
        .expect("signer")
        .sign("billing", at(60))
        .expect("token");
    for token in [old, token("billing", 60)] {
        let response = app
            .http(with_token("/internal/orders/1", &token))
            .await
            .expect("response");
        assert_eq!(response.status, 200);
    }
}

#[tokio::test]
async fn each_route_uses_its_own_list_and_unlisted_routes_the_default() {
    let app = app(policy().build().expect("config"));
    let cases = [
        ("/internal/orders/7", "billing", 200),
        ("/internal/orders/7", "ops", 403),
        ("/internal/reports", "reporting", 200),
        ("/internal/reports", "billing", 403),
        ("/internal/health", "ops", 200),
        ("/internal/health", "billing", 403),
        // No route matched: the default list applies, then the router answers.
        ("/internal/unknown", "ops", 404),
        ("/internal/unknown", "billing", 403),
    ];
    for (path, service, status) in cases {
        let response = app
            .http(with_token(path, &token(service, 60)))
            .await
            .expect("response");
        assert_eq!(response.status, status, "{service} on {path}");
    }

    // Deny by default: no default list, an unlisted route refuses everyone.
    let strict = app_strict();
    let response = strict
        .http(with_token("/internal/health", &token("billing", 60)))
        .await
        .expect("response");
    assert_eq!(response.status, 403);
}

fn app_strict() -> TestApp {
    app(ServiceAuthConfig::builder()
        .shared_secret(SECRET)
        .allow("/internal/orders/{id}", ["billing"])
        .build()
        .expect("config"))
}

#[tokio::test]
async fn iam_principals_from_rest_api_events() {
    let app = app(policy().build().expect("config"));
    let mut event = events::http("GET", "/internal/reports").v1();
    event["requestContext"]["identity"]["userArn"] = json!(ADMIN_USER);
    event["requestContext"]["identity"]["caller"] = json!("AIDAEXAMPLE");
    let response = app.http(event).await.expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.text(),
        format!("/internal/reports called by {ADMIN_USER}")
    );

    // Without `userArn`, `caller` is the identity.
    let mut event = events::http("GET", "/internal/health").v1();
    event["requestContext"]["identity"]["caller"] = json!("ops");
    let response = app.http(event).await.expect("response");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "/internal/health called by ops");

    let mut event = events::http("GET", "/internal/orders/9").v1();
    event["requestContext"]["identity"]["userArn"] = json!(ADMIN_USER);
    let response = app.http(event).await.expect("response");
    assert_eq!(response.status, 403);
    assert_eq!(error_code(&response), "service_not_allowed");
}

#[tokio::test]
async fn iam_principals_from_http_api_events() {
    let app = app(policy().build().expect("config"));
    let mut event = events::http("GET", "/internal/orders/9").v2();
    event["requestContext"]["authorizer"] = json!({
        "iam": {
            "accessKey": "ASIAEXAMPLE",
            "accountId": "123456789012",
            "callerId": "AROAEXAMPLE:shipping-fn",
            "userArn": SHIPPING_ROLE,
            "userId": "AROAEXAMPLE:shipping-fn"
        }
    });
    let response = app.http(event).await.expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.text(),
        format!("/internal/orders/{{id}} called by {SHIPPING_ROLE}")
    );

    // Another role under the same account is not on the list.
    let mut event = events::http("GET", "/internal/orders/9").v2();
    event["requestContext"]["authorizer"] = json!({
        "iam": { "userArn": "arn:aws:sts::123456789012:assumed-role/shipping-role-admin/x" }
    });
    let response = app.http(event).await.expect("response");
    assert_eq!(response.status, 403);
}

#[tokio::test]
async fn identity_sources_can_be_switched_off() {
    // IAM off: the principal is ignored.
    let app_no_iam = app(policy().iam(false).build().expect("config"));
    let mut event = events::http("GET", "/internal/orders/9").v2();
    event["requestContext"]["authorizer"] = json!({ "iam": { "userArn": SHIPPING_ROLE } });
    let response = app_no_iam.http(event).await.expect("response");
    assert_eq!(response.status, 401);

    // No shared secret: tokens are ignored.
    let iam_only = app(ServiceAuthConfig::builder()
        .allow("/internal/orders/{id}", ["billing"])
        .build()
        .expect("config"));
    let response = iam_only
        .http(with_token("/internal/orders/9", &token("billing", 60)))
        .await
        .expect("response");
    assert_eq!(response.status, 401);
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"LiftService realm="lift""#)
    );
}

#[tokio::test]
async fn batch_records_pass_without_an_identity() {
    let app = app_strict();
    let response = app
        .invoke(&events::sqs(["a", "b"]))
        .await
        .expect("response");
    assert!(batch_failures(&response).is_empty(), "{response}");
}

/// One captured event: level, target and fields.
type Logged = (Level, String, BTreeMap<String, String>);

/// Records every event's level, target and fields.
#[derive(Clone, Default)]
struct Capture {
    events: Arc<Mutex<Vec<Logged>>>,
}

impl Capture {
    fn events(&self, level: Level, target: &str) -> Vec<BTreeMap<String, String>> {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter(|(l, t, _)| *l == level && t == target)
            .map(|(_, _, fields)| fields.clone())
            .collect()
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.events.lock().expect("lock").push((
            *event.metadata().level(),
            event.metadata().target().to_owned(),
            fields,
        ));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn tokens_are_the_hex_hmac_sha256_of_name_dot_expiry() {
    // Computed independently: HMAC-SHA256(SECRET, "billing.1800000060"), hex.
    assert_eq!(
        token("billing", 60),
        "billing.1800000060.22563ee7d9712de03f7fbdefbd9bbfadc2635b48fa024e7525c3dbff3d75d3d7"
    );
}

#[tokio::test]
async fn upper_case_hex_signatures_verify() {
    let app = app(policy().build().expect("config"));
    let good = token("billing", 60);
    let (message, signature) = good.rsplit_once('.').expect("token");
    let upper = format!("{message}.{}", signature.to_ascii_uppercase());
    let response = app
        .http(with_token("/internal/orders/7", &upper))
        .await
        .expect("response");
    assert_eq!(response.status, 200);
}

#[test]
fn signers_refuse_short_secrets_and_bad_names() {
    assert!(matches!(
        ServiceTokenSigner::new(b"short"),
        Err(ConfigError::OutOfRange {
            field: "shared_secret",
            ..
        })
    ));
    let signer = ServiceTokenSigner::new(SECRET).expect("signer");
    let long = "x".repeat(129);
    for bad in ["", "a.b", "arn:aws:iam::1:role/x", "a b", long.as_str()] {
        assert_eq!(
            signer.sign(bad, at(10)),
            Err(ServiceTokenError::InvalidServiceName),
            "{bad}"
        );
    }
    assert_eq!(
        signer.sign("billing", UNIX_EPOCH - Duration::from_secs(1)),
        Err(ServiceTokenError::ExpiryBeforeEpoch)
    );
}

#[test]
fn invalid_configurations_name_the_field() {
    let field = |result: std::result::Result<ServiceAuthConfig, ConfigError>| match result {
        Err(ConfigError::OutOfRange { field, .. } | ConfigError::Conflict { field, .. }) => field,
        Err(other) => panic!("unexpected {other:?}"),
        Ok(_) => panic!("accepted"),
    };
    let builder = ServiceAuthConfig::builder;
    assert_eq!(
        field(builder().shared_secret("short").build()),
        "shared_secret"
    );
    assert_eq!(field(builder().iam(false).build()), "iam");
    assert_eq!(
        field(builder().allow("orders", ["billing"]).build()),
        "allow"
    );
    for bad in [
        "",
        "*",
        "/*",
        "billing/*",
        "arn:*/x",
        "bill ing",
        "a.b",
        "arn:aws:iam::1:role/*x",
    ] {
        assert_eq!(
            field(builder().allow("/orders", [bad]).build()),
            "allow",
            "{bad:?}"
        );
        assert_eq!(field(builder().allow_by_default([bad]).build()), "allow");
    }
    assert_eq!(
        field(builder().max_token_lifetime(Duration::ZERO).build()),
        "max_token_lifetime"
    );
    assert_eq!(
        field(
            builder()
                .max_token_lifetime(Duration::from_secs(86_401))
                .build()
        ),
        "max_token_lifetime"
    );
}

#[tokio::test]
async fn role_patterns_match_one_session_segment() {
    let app = app(policy().build().expect("config"));
    for (arn, status) in [
        (SHIPPING_ROLE, 200),
        ("arn:aws:sts::123456789012:assumed-role/shipping-role/", 403),
        (
            "arn:aws:sts::123456789012:assumed-role/shipping-role/a/b",
            403,
        ),
        (
            "arn:aws:sts::999999999999:assumed-role/shipping-role/shipping-fn",
            403,
        ),
    ] {
        let mut event = events::http("GET", "/internal/orders/9").v2();
        event["requestContext"]["authorizer"] = json!({ "iam": { "userArn": arn } });
        let response = app.http(event).await.expect("response");
        assert_eq!(response.status, status, "{arn}");
    }
}

/// A verified service's `x-priority` is taken as given (a client's can only lower it).
#[tokio::test]
async fn a_verified_service_sets_its_requests_priority() {
    use lift_middleware::classify::{Priority, RequestInfo};
    let app = TestApp::new(
        App::new()
            .get("/internal/health", |ctx: Context| async move {
                Ok::<_, Error>(format!("{:?}", ctx.priority()))
            })
            .layer(ServiceAuthLayer::new(policy().build().expect("config")).with_clock(Fixed)),
    )
    .expect("app");
    let mut event = with_token("/internal/health", &token("ops", 60));
    event["headers"]["x-priority"] = json!("high");
    let response = app.http(event).await.expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), format!("{:?}", Priority::High));
}

/// A secret given for one calling service signs for that service only: `reporting`, which
/// holds its own secret, cannot pass for `billing` on a route that allows `billing` alone.
#[tokio::test]
async fn a_callers_secret_signs_for_that_caller_only() {
    const BILLING: &[u8] = b"billing-secret-of-32-bytes-or-more!!";
    const REPORTING: &[u8] = b"reporting-secret-of-32-bytes-or-more";
    let config = ServiceAuthConfig::builder()
        .caller_secret("billing", BILLING)
        .caller_secret("reporting", REPORTING)
        .allow("/internal/orders/{id}", ["billing"])
        .build()
        .expect("config");
    let app = app(config);
    let signed = |secret: &[u8], service: &str| {
        ServiceTokenSigner::new(secret)
            .expect("signer")
            .sign(service, at(60))
            .expect("token")
    };
    let forged = app
        .http(with_token(
            "/internal/orders/7",
            &signed(REPORTING, "billing"),
        ))
        .await
        .expect("response");
    assert_eq!(forged.status, 401, "{}", forged.text());
    let genuine = app
        .http(with_token(
            "/internal/orders/7",
            &signed(BILLING, "billing"),
        ))
        .await
        .expect("response");
    assert_eq!(genuine.status, 200, "{}", genuine.text());
    let reporting = app
        .http(with_token(
            "/internal/orders/7",
            &signed(REPORTING, "reporting"),
        ))
        .await
        .expect("response");
    assert_eq!(
        reporting.status, 403,
        "authenticated, not allowed on this route"
    );
    assert!(
        ServiceAuthConfig::builder()
            .caller_secret("not a name", BILLING)
            .build()
            .is_err()
    );
}
