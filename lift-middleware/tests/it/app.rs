//! The layers on a real Lift `App`, driven in-process with `lift_core::testing`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::Quota;
use governor::clock::FakeRelativeClock;
use http::StatusCode;
use lift_core::testing::{HttpResponse, TestApp, events};
use lift_core::{App, Context, Error, Json};
use lift_middleware::bulkhead::{BulkheadConfig, BulkheadLayer};
use lift_middleware::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, State};
use lift_middleware::load_shed::{LoadShedConfig, LoadShedLayer};
use lift_middleware::rate_limit::RateLimitLayer;
use lift_middleware::retry::{Backoff, RetryConfig, RetryLayer};
use lift_middleware::timeout::TimeoutLayer;
use serde_json::{Value, json};
use tokio::time::Instant;
use tower::ServiceBuilder;

fn code(response: &HttpResponse) -> String {
    let body: Value = response.json().expect("a JSON error body");
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
        .to_owned()
}

async fn get(app: &TestApp, path: &str) -> HttpResponse {
    app.http(events::http("GET", path).v2())
        .await
        .expect("an HTTP response")
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_answers_503_with_retry_after() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let failing = move |_ctx: Context| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err::<Json<Value>, _>(Error::internal("database connection refused")) }
    };
    let breaker = CircuitBreakerLayer::new(
        CircuitBreakerConfig::builder("orders")
            .consecutive_failures(3)
            .no_failure_rate()
            .open_for(Duration::from_secs(30))
            .build()
            .expect("valid config"),
    );
    let app =
        TestApp::new(App::new().get("/orders", failing).layer(breaker.clone())).expect("valid app");

    // Unknown routes are client errors: they pass through without counting.
    for _ in 0..5 {
        assert_eq!(get(&app, "/nowhere").await.status, 404);
    }
    assert_eq!(breaker.state(None), Some(State::Closed));

    for _ in 0..3 {
        let response = get(&app, "/orders").await;
        assert_eq!(response.status, 500);
        assert_eq!(code(&response), "internal");
    }
    assert_eq!(breaker.state(None), Some(State::Open));

    let response = get(&app, "/orders").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE.as_u16());
    assert_eq!(response.header("retry-after"), Some("30"));
    assert_eq!(code(&response), "circuit_open");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "the handler is not called");
}

async fn slow(_ctx: Context) -> lift_core::Result<Json<Value>> {
    tokio::time::sleep(Duration::from_secs(10)).await;
    Ok(Json(json!({ "done": true })))
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_behind_a_timeout_answers_504() {
    let app = TestApp::new(
        App::new()
            .get("/slow", slow)
            .layer(TimeoutLayer::new(Duration::from_secs(1)).expect("timeout")),
    )
    .expect("valid app");
    let start = Instant::now();
    let response = get(&app, "/slow").await;
    assert_eq!(response.status, 504);
    assert_eq!(code(&response), "timeout");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

async fn ok(_ctx: Context) -> lift_core::Result<Json<Value>> {
    Ok(Json(json!({ "ok": true })))
}

#[tokio::test]
async fn a_rate_limit_answers_429_with_ratelimit_headers() {
    let clock = FakeRelativeClock::default();
    let quota = Quota::per_second(NonZeroU32::new(2).expect("non-zero"));
    let app = TestApp::new(
        App::new()
            .get("/items", ok)
            .layer(RateLimitLayer::with_clock(quota, clock.clone())),
    )
    .expect("valid app");
    for _ in 0..2 {
        assert_eq!(get(&app, "/items").await.status, 200);
    }
    let response = get(&app, "/items").await;
    assert_eq!(response.status, 429);
    assert_eq!(code(&response), "rate_limited");
    assert_eq!(response.header("ratelimit-limit"), Some("2"));
    assert_eq!(response.header("ratelimit-remaining"), Some("0"));
    assert_eq!(response.header("retry-after"), Some("1"));

    clock.advance(Duration::from_secs(1));
    assert_eq!(get(&app, "/items").await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn the_documented_stack_serves_an_app() {
    // Fails twice with a 503, then answers: the retry at the bottom of the stack hides it.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let flaky = move |_ctx: Context| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 2 {
                Err(Error::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "try again",
                ))
            } else {
                Ok(Json(json!({ "attempt": n + 1 })))
            }
        }
    };
    let breaker = CircuitBreakerLayer::new(
        CircuitBreakerConfig::builder("app")
            .consecutive_failures(5)
            .no_failure_rate()
            .build()
            .expect("valid config"),
    );
    let stack = ServiceBuilder::new()
        .layer(LoadShedLayer::new(
            LoadShedConfig::builder()
                .max_in_flight(64)
                .build()
                .expect("valid config"),
        ))
        .layer(RateLimitLayer::per_second(
            NonZeroU32::new(100).expect("non-zero"),
        ))
        .layer(BulkheadLayer::new(
            BulkheadConfig::builder("app")
                .max_concurrent(8)
                .build()
                .expect("valid config"),
        ))
        .layer(breaker.clone())
        .layer(TimeoutLayer::new(Duration::from_secs(5)).expect("timeout"))
        .layer(RetryLayer::new(
            RetryConfig::builder()
                .backoff(Backoff::Fixed(Duration::from_millis(50)))
                .build()
                .expect("valid config"),
        ));
    let app = TestApp::new(App::new().get("/ok", ok).get("/flaky", flaky).layer(stack))
        .expect("valid app");

    let response = get(&app, "/ok").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json::<Value>().expect("json"),
        json!({ "ok": true })
    );

    let response = get(&app, "/flaky").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json::<Value>().expect("json"),
        json!({ "attempt": 3 })
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let metrics = breaker.metrics(None).expect("unkeyed");
    assert_eq!(
        metrics.calls, 2,
        "the breaker saw two calls, both successes"
    );
    assert_eq!(metrics.failures, 0);
}

/// A runtime that sends no deadline (0) is "no deadline", not one long passed: the
/// deadline-aware layers let the call through, and with a real deadline they still act.
#[tokio::test]
async fn a_deadline_of_zero_means_no_deadline() {
    let app = TestApp::new(
        App::new().get("/ok", ok).layer(
            ServiceBuilder::new()
                .layer(LoadShedLayer::new(
                    LoadShedConfig::builder()
                        .min_remaining(Duration::from_millis(100))
                        .build()
                        .expect("load shed"),
                ))
                .layer(
                    TimeoutLayer::deadline_aware(
                        Duration::from_secs(5),
                        Duration::from_millis(200),
                    )
                    .expect("timeout"),
                ),
        ),
    )
    .expect("app");
    let event = events::http("GET", "/ok").v2();
    let mut none = lift_core::testing::lambda_context("no-deadline");
    none.deadline = 0;
    let answer = HttpResponse::from_value(&app.invoke_with(&event, none).await.expect("invoke"))
        .expect("http");
    assert_eq!(answer.status, 200, "{}", answer.text());

    // A deadline that has passed is still refused.
    let mut passed = lift_core::testing::lambda_context("passed");
    passed.deadline = 1_000;
    let answer = HttpResponse::from_value(&app.invoke_with(&event, passed).await.expect("invoke"))
        .expect("http");
    assert_eq!(answer.status, 503, "{}", answer.text());
}
