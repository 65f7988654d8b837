//! CORS and security headers, driven through a real `App` in-process.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderValue, Method, StatusCode, header};
use lift_core::testing::{HttpResponse, TestApp, events};
use lift_core::{App, Context, Error, Response, Result};
use lift_middleware::ConfigError;
use lift_middleware::http_security::{
    CorsConfig, CorsLayer, FrameOptions, ReferrerPolicy, SecurityHeadersLayer,
};
use serde_json::Value;
use tower::ServiceBuilder;

const APP_ORIGIN: &str = "https://app.example.com";

fn cors_config() -> CorsConfig {
    CorsConfig::builder()
        .allow_origins([APP_ORIGIN, "https://*.example.com", "http://localhost:3000"])
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers(["content-type", "authorization"])
        .expose_headers(["x-request-id", "etag"])
        .allow_credentials(true)
        .max_age(Duration::from_secs(3600))
        .build()
        .expect("valid CORS config")
}

/// An App whose handlers count their calls; `/orders` is GET and POST only.
fn app_with(layer: CorsLayer) -> (TestApp, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let orders = move |_ctx: Context| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Error>("[]")
        }
    };
    let app = App::new()
        .get("/orders", orders.clone())
        .post("/orders", orders)
        .get("/varying", varying)
        .get("/fails", fails)
        .layer(layer);
    (TestApp::new(app).expect("app"), calls)
}

async fn varying(_ctx: Context) -> Result<Response> {
    let mut response = Response::new(lift_core::Body::Text("gzip".to_owned()));
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    Ok(response)
}

async fn fails(_ctx: Context) -> Result<String> {
    Err(Error::conflict("already exists"))
}

fn preflight(origin: &str, method: &str) -> Value {
    events::http("OPTIONS", "/orders")
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
        .v2()
}

fn cors_headers(response: &HttpResponse) -> Vec<&String> {
    response
        .headers
        .keys()
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

fn error_code(response: &HttpResponse) -> String {
    let body: Value = response.json().expect("JSON error body");
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_before_the_router() {
    let (app, calls) = app_with(CorsLayer::new(cors_config()));
    let response = app
        .http(preflight(APP_ORIGIN, "DELETE"))
        .await
        .expect("response");
    assert_eq!(response.status, 204, "{}", response.text());
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    assert_eq!(
        response.header("access-control-allow-methods"),
        Some("GET, POST, DELETE")
    );
    assert_eq!(
        response.header("access-control-allow-headers"),
        Some("content-type, authorization")
    );
    assert_eq!(response.header("access-control-max-age"), Some("3600"));
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        response.header("vary"),
        Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
    );
    assert!(response.body.is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler never ran");

    // Without the layer, the router answers the same request 405.
    let bare = TestApp::new(App::new().get("/orders", varying)).expect("app");
    let refused = bare
        .http(preflight(APP_ORIGIN, "DELETE"))
        .await
        .expect("response");
    assert_eq!(refused.status, 405);
}

#[tokio::test]
async fn a_preflight_from_a_disallowed_origin_or_for_a_disallowed_method_is_403() {
    let (app, _) = app_with(CorsLayer::new(cors_config()));
    for (origin, method) in [
        ("https://evil.com", "GET"),
        ("null", "GET"),
        (APP_ORIGIN, "PUT"),
        (APP_ORIGIN, "delete"),
    ] {
        let response = app.http(preflight(origin, method)).await.expect("response");
        assert_eq!(response.status, 403, "{origin} {method}");
        assert_eq!(error_code(&response), "cors_forbidden");
        assert!(
            cors_headers(&response).is_empty(),
            "no CORS headers on a refusal: {:?}",
            response.headers
        );
    }
}

#[tokio::test]
async fn origin_patterns_match_subdomains_only_with_the_same_scheme_and_port() {
    let (app, _) = app_with(CorsLayer::new(cors_config()));
    let cases = [
        ("https://app.example.com", true),
        ("https://pr-12.example.com", true),
        ("https://a.b.example.com", true),
        ("https://app.example.com:443", true),
        ("https://example.com", false),
        ("https://evil-example.com", false),
        ("https://example.com.evil.com", false),
        ("https://app.example.com.evil.com", false),
        ("https://evil.com/.example.com", false),
        ("https://evil.com?.example.com", false),
        ("http://app.example.com", false),
        ("https://app.example.com:8443", false),
        ("http://localhost:3000", true),
        ("http://localhost:3001", false),
        ("http://localhost", false),
        ("https://localhost:3000", false),
        ("https://APP.Example.COM", true),
        ("https://a..example.com", false),
        ("https://.example.com", false),
        ("https://user@app.example.com", false),
        ("https://app.example.com:", false),
        ("https://app.example.com:+443", false),
        ("https://app.example.com:99999", false),
        ("https://app.example.com/", false),
        ("https://*.example.com", false),
    ];
    for (origin, allowed) in cases {
        let response = app.http(preflight(origin, "GET")).await.expect("response");
        if allowed {
            assert_eq!(response.status, 204, "{origin}");
            // The request's origin is echoed as sent.
            assert_eq!(response.header("access-control-allow-origin"), Some(origin));
        } else {
            assert_eq!(response.status, 403, "{origin}");
        }
    }
}

#[tokio::test]
async fn credentials_are_never_allowed_with_a_wildcard_origin() {
    let refused = CorsConfig::builder()
        .allow_any_origin()
        .allow_credentials(true)
        .build();
    assert!(matches!(
        refused,
        Err(ConfigError::Conflict {
            field: "allow_credentials",
            ..
        })
    ));

    // Any origin without credentials: `*` and no credentials header.
    let any = CorsConfig::builder()
        .allow_any_origin()
        .build()
        .expect("valid");
    let (app, _) = app_with(CorsLayer::new(any));
    let response = app
        .http(preflight("https://anyone.org", "GET"))
        .await
        .expect("response");
    assert_eq!(response.status, 204);
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    assert_eq!(response.header("access-control-allow-credentials"), None);

    // Listed origins with credentials: the request's origin is echoed, never `*`.
    let (app, _) = app_with(CorsLayer::new(cors_config()));
    let get = events::http("GET", "/orders")
        .header("origin", APP_ORIGIN)
        .v2();
    let response = app.http(get).await.expect("response");
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );
}

#[tokio::test]
async fn actual_requests_from_allowed_origins_get_cors_headers_and_vary() {
    let (app, calls) = app_with(CorsLayer::new(cors_config()));
    let get = events::http("GET", "/orders")
        .header("origin", "https://pr-3.example.com")
        .v1();
    let response = app.http(get).await.expect("response");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "[]");
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("https://pr-3.example.com")
    );
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        response.header("access-control-expose-headers"),
        Some("x-request-id, etag")
    );
    assert_eq!(response.header("vary"), Some("Origin"));
    assert_eq!(response.header("access-control-allow-methods"), None);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A handler's own `Vary` is kept, with `Origin` added.
    let varying = events::http("GET", "/varying")
        .header("origin", APP_ORIGIN)
        .v2();
    let response = app.http(varying).await.expect("response");
    assert_eq!(response.headers["vary"], vec!["Accept-Encoding, Origin"]);

    // An OPTIONS request that is not a preflight reaches the router.
    let options = events::http("OPTIONS", "/orders")
        .header("origin", APP_ORIGIN)
        .v2();
    let response = app.http(options).await.expect("response");
    assert_eq!(response.status, 405);
}

#[tokio::test]
async fn other_origins_and_requests_without_origin_pass_without_cors_headers() {
    let (app, calls) = app_with(CorsLayer::new(cors_config()));
    let evil = events::http("POST", "/orders")
        .header("origin", "https://evil-example.com")
        .v2();
    let response = app.http(evil).await.expect("response");
    assert_eq!(
        response.status, 200,
        "the browser, not the function, blocks it"
    );
    assert!(cors_headers(&response).is_empty(), "{:?}", response.headers);
    assert_eq!(response.header("vary"), Some("Origin"));

    let plain = events::http("GET", "/orders").v2();
    let response = app.http(plain).await.expect("response");
    assert_eq!(response.status, 200);
    assert!(cors_headers(&response).is_empty());
    assert_eq!(
        response.header("vary"),
        Some("Origin"),
        "a cache must not give this answer to a cross-origin request"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn errors_from_below_the_layer_carry_no_cors_headers() {
    let (app, _) = app_with(CorsLayer::new(cors_config()));
    let request = events::http("GET", "/fails")
        .header("origin", APP_ORIGIN)
        .v2();
    let response = app.http(request).await.expect("response");
    assert_eq!(response.status, 409);
    assert_eq!(error_code(&response), "conflict");
    assert_eq!(response.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn mirrored_request_headers_are_echoed() {
    let config = CorsConfig::builder()
        .allow_origin(APP_ORIGIN)
        .mirror_request_headers()
        .build()
        .expect("valid");
    let (app, _) = app_with(CorsLayer::new(config));
    let request = events::http("OPTIONS", "/orders")
        .header("origin", APP_ORIGIN)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-custom, x-trace")
        .v2();
    let response = app.http(request).await.expect("response");
    assert_eq!(response.status, 204);
    assert_eq!(
        response.header("access-control-allow-headers"),
        Some("x-custom, x-trace")
    );
    assert_eq!(
        response.header("access-control-allow-methods"),
        Some("GET, HEAD, POST")
    );
    assert_eq!(response.header("access-control-max-age"), Some("600"));
    assert_eq!(response.header("access-control-allow-credentials"), None);
}

#[test]
fn invalid_cors_configurations_name_the_field() {
    let field = |result: std::result::Result<CorsConfig, ConfigError>| match result {
        Err(ConfigError::OutOfRange { field, .. } | ConfigError::Conflict { field, .. }) => field,
        Err(other) => panic!("unexpected {other:?}"),
        Ok(_) => panic!("accepted"),
    };
    assert_eq!(field(CorsConfig::builder().build()), "allowed_origins");
    for bad in [
        "app.example.com",
        "https://app.example.com/",
        "https://*.com",
        "https://a.*.example.com",
        "https://*example.com",
        "https://*.*.example.com",
        "*.example.com",
        "https://*",
        "null",
    ] {
        assert_eq!(
            field(CorsConfig::builder().allow_origin(bad).build()),
            "allowed_origins",
            "{bad}"
        );
    }
    assert_eq!(
        field(
            CorsConfig::builder()
                .allow_origins(["*", APP_ORIGIN])
                .build()
        ),
        "allowed_origins"
    );
    let origin = || CorsConfig::builder().allow_origin(APP_ORIGIN);
    assert_eq!(field(origin().allow_methods([]).build()), "allowed_methods");
    assert_eq!(
        field(origin().allow_headers(["bad header"]).build()),
        "allowed_headers"
    );
    assert_eq!(
        field(origin().allow_headers(["*"]).build()),
        "allowed_headers"
    );
    assert_eq!(
        field(origin().expose_headers(["*"]).build()),
        "exposed_headers"
    );
    assert_eq!(
        field(origin().max_age(Duration::from_secs(86_401)).build()),
        "max_age"
    );
}

async fn framed(_ctx: Context) -> Result<Response> {
    let mut response = Response::new(lift_core::Body::Text("embeddable".to_owned()));
    response.headers_mut().insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    Ok(response)
}

fn secured(layer: SecurityHeadersLayer) -> TestApp {
    TestApp::new(
        App::new()
            .get("/page", |_ctx: Context| async { Ok::<_, Error>("page") })
            .get("/framed", framed)
            .get("/fails", fails)
            .layer(layer),
    )
    .expect("app")
}

#[tokio::test]
async fn security_headers_default_on_every_http_source() {
    let app = secured(SecurityHeadersLayer::new());
    let request = events::http("GET", "/page");
    for event in [request.v1(), request.v2(), request.alb()] {
        let response = app.http(event).await.expect("response");
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("strict-transport-security"),
            Some("max-age=31536000; includeSubDomains")
        );
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(response.header("x-frame-options"), Some("DENY"));
        assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
    }
}

#[tokio::test]
async fn security_headers_never_override_the_handler() {
    let app = secured(SecurityHeadersLayer::new());
    let response = app
        .http(events::http("GET", "/framed").v2())
        .await
        .expect("response");
    assert_eq!(response.headers["x-frame-options"], vec!["SAMEORIGIN"]);
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));

    // Error responses are built outside the layer: no headers there.
    let response = app
        .http(events::http("GET", "/fails").v2())
        .await
        .expect("response");
    assert_eq!(response.status, 409);
    assert_eq!(response.header("x-frame-options"), None);
}

#[tokio::test]
async fn security_headers_are_configurable_and_removable() {
    let layer = SecurityHeadersLayer::new()
        .without(header::STRICT_TRANSPORT_SECURITY)
        .with_frame_options(FrameOptions::SameOrigin)
        .with_referrer_policy(ReferrerPolicy::StrictOriginWhenCrossOrigin)
        .with_header(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'"),
        );
    let app = secured(layer);
    let response = app
        .http(events::http("GET", "/page").v2())
        .await
        .expect("response");
    assert_eq!(response.header("strict-transport-security"), None);
    assert_eq!(response.header("x-frame-options"), Some("SAMEORIGIN"));
    assert_eq!(
        response.header("referrer-policy"),
        Some("strict-origin-when-cross-origin")
    );
    assert_eq!(
        response.header("content-security-policy"),
        Some("default-src 'none'")
    );
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));

    let hsts = secured(SecurityHeadersLayer::empty().with_hsts(Duration::from_secs(600), false));
    let response = hsts
        .http(events::http("GET", "/page").v2())
        .await
        .expect("response");
    assert_eq!(
        response.header("strict-transport-security"),
        Some("max-age=600")
    );
    assert_eq!(response.header("x-frame-options"), None);
}

#[tokio::test]
async fn both_layers_stack_with_cors_preflights_secured() {
    let stack = ServiceBuilder::new()
        .layer(SecurityHeadersLayer::new())
        .layer(CorsLayer::new(cors_config()));
    let app = TestApp::new(App::new().get("/orders", varying).layer(stack)).expect("app");
    let response = app
        .http(preflight(APP_ORIGIN, "POST"))
        .await
        .expect("response");
    assert_eq!(response.status, StatusCode::NO_CONTENT.as_u16());
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn ports_and_ipv6_origins_are_compared_exactly() {
    let config = CorsConfig::builder()
        .allow_origins(["https://*.example.com:8443", "http://[::1]:3000"])
        .build()
        .expect("valid");
    let (app, _) = app_with(CorsLayer::new(config));
    for (origin, allowed) in [
        ("https://app.example.com:8443", true),
        ("https://app.example.com", false),
        ("https://app.example.com:443", false),
        ("https://example.com:8443", false),
        ("http://[::1]:3000", true),
        ("http://[::1]:3001", false),
        ("http://[::1]", false),
    ] {
        let response = app.http(preflight(origin, "GET")).await.expect("response");
        assert_eq!(response.status, if allowed { 204 } else { 403 }, "{origin}");
    }

    // A handler's `Vary: *` is left alone.
    let star = TestApp::new(
        App::new()
            .get("/star", |_ctx: Context| async {
                let mut response = Response::new(lift_core::Body::Empty);
                response
                    .headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("*"));
                Ok::<_, Error>(response)
            })
            .layer(CorsLayer::new(cors_config())),
    )
    .expect("app");
    let request = events::http("GET", "/star")
        .header("origin", APP_ORIGIN)
        .v2();
    let response = star.http(request).await.expect("response");
    assert_eq!(response.headers["vary"], vec!["*"]);
}
