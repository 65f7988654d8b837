//! Retry under injected failures: what is retried, how long it waits, and what stops it.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use lift_core::{BoxError, Error};
use lift_middleware::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use lift_middleware::retry::{
    Backoff, Jitter, RetryBudget, RetryConfig, RetryConfigBuilder, RetryLayer,
};
use support::{
    Behaviour, Dependency, PausedClock, Response, TestRequest, call, expect_lift_err, status,
};
use tokio::time::Instant;
use tower::Layer;

const STEP: Duration = Duration::from_millis(100);

/// 3 attempts, a fixed 100 ms between them, no jitter, no budget.
fn base() -> RetryConfigBuilder {
    RetryConfig::builder()
        .max_attempts(3)
        .backoff(Backoff::Fixed(STEP))
        .jitter(Jitter::None)
        .budget(None)
}

fn retry(config: RetryConfigBuilder) -> RetryLayer {
    RetryLayer::new(config.build().expect("valid config"))
}

fn req() -> TestRequest {
    TestRequest::new()
}

fn transport_message(result: &Result<Response, BoxError>) -> String {
    match result {
        Err(error) if error.downcast_ref::<Error>().is_none() => error.to_string(),
        other => panic!("expected a transport error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn retries_503s_until_a_success() {
    let dep = Dependency::new(Behaviour::Ok);
    dep.script([Behaviour::Status(503), Behaviour::Status(503)]);
    let mut svc = retry(base()).layer(dep.clone());
    let start = Instant::now();
    assert_eq!(status(&call(&mut svc, req()).await), 200);
    assert_eq!(dep.calls(), 3);
    assert_eq!(dep.gaps(), vec![STEP, STEP]);
    assert_eq!(start.elapsed(), STEP * 2);
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts_with_the_last_answer() {
    let dep = Dependency::new(Behaviour::Status(502));
    let mut svc = retry(base().max_attempts(4)).layer(dep.clone());
    assert_eq!(status(&call(&mut svc, req()).await), 502);
    assert_eq!(dep.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_not_retried() {
    let dep = Dependency::new(Behaviour::Status(400));
    let mut svc = retry(base()).layer(dep.clone());
    assert_eq!(status(&call(&mut svc, req()).await), 400);
    assert_eq!(dep.calls(), 1);

    dep.set(Behaviour::ClientError);
    let result = call(&mut svc, req()).await;
    assert_eq!(expect_lift_err(&result).status().as_u16(), 400);
    assert_eq!(dep.calls(), 2, "a 4xx Lift error is not retried either");
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_requests_are_not_retried_unless_allowed() {
    let dep = Dependency::new(Behaviour::Status(503));
    let mut svc = retry(base()).layer(dep.clone());
    assert_eq!(status(&call(&mut svc, req().post()).await), 503);
    assert_eq!(dep.calls(), 1);

    let dep = Dependency::new(Behaviour::Status(503));
    let mut svc = retry(base().retry_non_idempotent(true)).layer(dep.clone());
    assert_eq!(status(&call(&mut svc, req().post()).await), 503);
    assert_eq!(dep.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    for code in [503, 429] {
        let dep = Dependency::new(Behaviour::Ok);
        dep.script([Behaviour::RetryAfter(code, 2)]);
        let mut svc = retry(base()).layer(dep.clone());
        let start = Instant::now();
        assert_eq!(status(&call(&mut svc, req()).await), 200);
        assert_eq!(dep.calls(), 2);
        assert!(
            start.elapsed() >= Duration::from_secs(2),
            "{code}: waited {:?}",
            start.elapsed()
        );
        assert_eq!(dep.gaps(), vec![Duration::from_secs(2)]);
    }
}

#[tokio::test(start_paused = true)]
async fn transport_errors_are_retried() {
    let dep = Dependency::new(Behaviour::Ok);
    dep.script([Behaviour::Transport]);
    let mut svc = retry(base()).layer(dep.clone());
    assert_eq!(status(&call(&mut svc, req()).await), 200);
    assert_eq!(dep.calls(), 2);

    dep.set(Behaviour::Transport);
    let result = call(&mut svc, req()).await;
    assert_eq!(transport_message(&result), "connection reset by peer");
    assert_eq!(dep.calls(), 5, "three more attempts, then the last error");
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_is_not_retried() {
    let dep = Dependency::new(Behaviour::Status(503));
    let breaker = CircuitBreakerLayer::new(
        CircuitBreakerConfig::builder("dep")
            .consecutive_failures(1)
            .no_failure_rate()
            .build()
            .expect("valid config"),
    );
    let mut svc = retry(base().max_attempts(5)).layer(breaker.layer(dep.clone()));

    // The first attempt trips the breaker; the retry meets the open circuit and stops.
    let result = call(&mut svc, req()).await;
    assert!(matches!(
        expect_lift_err(&result),
        Error::CircuitOpen { .. }
    ));
    assert_eq!(dep.calls(), 1);
    let metrics = breaker.metrics(None).expect("unkeyed");
    assert_eq!(metrics.rejected, 1, "one refused attempt, not four");

    let result = call(&mut svc, req()).await;
    assert!(matches!(
        expect_lift_err(&result),
        Error::CircuitOpen { .. }
    ));
    assert_eq!(breaker.metrics(None).expect("unkeyed").rejected, 2);
    assert_eq!(dep.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_retry_that_cannot_finish_before_the_deadline() {
    let clock = PausedClock::new();
    let dep = Dependency::new(Behaviour::Transport);
    let layer = retry(
        base()
            .max_attempts(5)
            .backoff(Backoff::Fixed(Duration::from_secs(1))),
    )
    .with_clock(clock);
    let mut svc = layer.layer(dep.clone());
    let start = Instant::now();
    let result = call(
        &mut svc,
        req().with_deadline(clock.in_(Duration::from_millis(300))),
    )
    .await;
    assert_eq!(transport_message(&result), "connection reset by peer");
    assert_eq!(dep.calls(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO, "no sleep before giving up");

    // With time to spare, the same failure is retried.
    let result = call(
        &mut svc,
        req().with_deadline(clock.in_(Duration::from_secs(60))),
    )
    .await;
    assert!(result.is_err());
    assert_eq!(dep.calls(), 6);
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_stops_retries() {
    let budget = Arc::new(RetryBudget::new(5, 5, 10));
    let dep = Dependency::new(Behaviour::Status(503));
    let layer = retry(base().budget(Some(budget.clone())));
    let mut svc = layer.layer(dep.clone());

    assert_eq!(status(&call(&mut svc, req()).await), 503);
    assert_eq!(dep.calls(), 2, "one retry paid for, the second refused");
    assert_eq!(budget.available(), 0);

    // The budget is shared: another service of the same layer gets no retry either.
    let mut other = layer.layer(dep.clone());
    assert_eq!(status(&call(&mut other, req()).await), 503);
    assert_eq!(dep.calls(), 3);

    // A success pays one token back.
    dep.set(Behaviour::Ok);
    assert_eq!(status(&call(&mut svc, req()).await), 200);
    assert_eq!(budget.available(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_attempt_times_out_and_the_next_succeeds() {
    let dep = Dependency::new(Behaviour::Ok);
    dep.script([Behaviour::Hang]);
    let per_attempt = Duration::from_millis(500);
    let mut svc = retry(base().per_attempt_timeout(per_attempt)).layer(dep.clone());
    let start = Instant::now();
    assert_eq!(status(&call(&mut svc, req()).await), 200);
    assert_eq!(dep.calls(), 2);
    assert_eq!(dep.in_flight(), 0, "the hanging attempt was dropped");
    assert_eq!(start.elapsed(), per_attempt + STEP);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_dependency_hits_the_total_timeout() {
    let dep = Dependency::new(Behaviour::Hang);
    let total = Duration::from_secs(1);
    let config = base()
        .max_attempts(10)
        .backoff(Backoff::Fixed(Duration::from_millis(150)))
        .per_attempt_timeout(Duration::from_millis(400))
        .total_timeout(total);
    let mut svc = retry(config).layer(dep.clone());
    let start = Instant::now();
    let result = call(&mut svc, req()).await;
    match expect_lift_err(&result) {
        Error::Timeout { after } => assert_eq!(*after, total),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(start.elapsed(), total);
    // Attempts at 0 and 550 ms; the third would start at 1.1 s.
    assert_eq!(dep.calls(), 2);
    assert_eq!(dep.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_total_delay_limit_stops_early() {
    let dep = Dependency::new(Behaviour::Status(503));
    let config = base()
        .max_attempts(10)
        .backoff(Backoff::Fixed(Duration::from_secs(1)))
        .max_total_delay(Duration::from_millis(2500));
    let mut svc = retry(config).layer(dep.clone());
    let start = Instant::now();
    assert_eq!(status(&call(&mut svc, req()).await), 503);
    assert_eq!(dep.calls(), 3, "a third 1 s delay would pass 2.5 s");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

async fn delays_with_seed(seed: u64) -> Vec<Duration> {
    let dep = Dependency::new(Behaviour::Status(503));
    let config = base()
        .max_attempts(5)
        .backoff(Backoff::Exponential {
            initial: Duration::from_millis(100),
            factor: 2.0,
        })
        .jitter(Jitter::Full)
        .seed(seed);
    let mut svc = retry(config).layer(dep.clone());
    assert_eq!(status(&call(&mut svc, req()).await), 503);
    assert_eq!(dep.calls(), 5);
    dep.gaps()
}

#[tokio::test(start_paused = true)]
async fn seeded_jitter_is_reproducible() {
    let first = delays_with_seed(42).await;
    let again = delays_with_seed(42).await;
    assert_eq!(first, again);
    for (n, delay) in first.iter().enumerate() {
        let ceiling = Duration::from_millis(100) * 2u32.pow(n as u32);
        assert!(*delay <= ceiling, "retry {n}: {delay:?} > {ceiling:?}");
    }
    assert_ne!(
        first,
        delays_with_seed(7).await,
        "another seed, other delays"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_a_timeout_costs_more_budget() {
    let budget = Arc::new(RetryBudget::new(15, 5, 10));
    let dep = Dependency::new(Behaviour::Hang);
    let config = base()
        .max_attempts(5)
        .per_attempt_timeout(Duration::from_millis(200))
        .budget(Some(budget.clone()));
    let mut svc = retry(config).layer(dep.clone());
    let result = call(&mut svc, req()).await;
    assert!(matches!(expect_lift_err(&result), Error::Timeout { .. }));
    assert_eq!(
        dep.calls(),
        2,
        "10 tokens paid one retry; 5 cannot pay another"
    );
    assert_eq!(budget.available(), 5);
}

/// On an App, the retry layer retries what is sent again anyway or idempotent by method;
/// a WebSocket message, which nothing delivers again, runs once: a handler that broadcasts
/// and then fails must not broadcast three times. A GET is retried.
#[tokio::test(start_paused = true)]
async fn a_websocket_message_is_not_retried_but_a_get_is() {
    use lift_core::testing::{TestApp, events};
    use lift_core::{App, Context};
    use std::sync::atomic::{AtomicU32, Ordering};
    let runs = Arc::new(AtomicU32::new(0));
    // A handler that counts its runs and answers 503, which the layer retries.
    let busy = |runs: Arc<AtomicU32>| {
        move |_ctx: Context| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Error::new(
                    lift_core::http::StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "try later",
                ))
            }
        }
    };
    let app = TestApp::new(
        App::new()
            .websocket("say", busy(runs.clone()))
            .get("/quote", busy(runs.clone()))
            .layer(retry(base())),
    )
    .expect("app");
    let said = app
        .websocket(events::websocket("c").message("say", "{}"))
        .await
        .expect("response");
    assert_eq!(said.status, 503);
    assert_eq!(runs.swap(0, Ordering::SeqCst), 1, "a message runs once");
    let got = app
        .http(events::http("GET", "/quote").v2())
        .await
        .expect("response");
    assert_eq!(got.status, 503);
    assert_eq!(runs.load(Ordering::SeqCst), 3, "a GET is tried three times");
}
