//! Timeout under an injected slow or hanging dependency, with and without deadlines.

use crate::support;

use std::time::Duration;

use lift_core::Error;
use lift_middleware::timeout::TimeoutLayer;
use support::{Behaviour, Dependency, PausedClock, TestRequest, call, expect_lift_err, status};
use tokio::time::Instant;
use tower::Layer;

fn timed_out_after(result: &Result<support::Response, lift_core::BoxError>) -> Duration {
    match expect_lift_err(result) {
        Error::Timeout { after } => *after,
        other => panic!("expected Timeout, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_hanging_call_times_out() {
    let dep = Dependency::new(Behaviour::Hang);
    let mut svc = TimeoutLayer::new(Duration::from_secs(2))
        .expect("timeout")
        .layer(dep.clone());
    let start = Instant::now();
    let result = call(&mut svc, TestRequest::new()).await;
    assert_eq!(timed_out_after(&result), Duration::from_secs(2));
    assert_eq!(expect_lift_err(&result).status().as_u16(), 504);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(dep.calls(), 1);
    assert_eq!(dep.in_flight(), 0, "the timed-out call was dropped");
}

#[tokio::test(start_paused = true)]
async fn a_call_within_the_timeout_passes() {
    let dep = Dependency::new(Behaviour::Ok);
    let mut svc = TimeoutLayer::new(Duration::from_secs(2))
        .expect("timeout")
        .layer(dep.clone());
    assert_eq!(status(&call(&mut svc, TestRequest::new()).await), 200);

    dep.set(Behaviour::Delay(Duration::from_millis(1999)));
    let start = Instant::now();
    assert_eq!(status(&call(&mut svc, TestRequest::new()).await), 200);
    assert_eq!(start.elapsed(), Duration::from_millis(1999));

    // Errors pass through unchanged.
    dep.set(Behaviour::ClientError);
    let result = call(&mut svc, TestRequest::new()).await;
    assert_eq!(expect_lift_err(&result).status().as_u16(), 400);
}

#[tokio::test(start_paused = true)]
async fn deadline_aware_uses_the_smaller_of_timeout_and_deadline_minus_margin() {
    let clock = PausedClock::new();
    let dep = Dependency::new(Behaviour::Hang);
    let layer = TimeoutLayer::deadline_aware(Duration::from_secs(5), Duration::from_millis(200))
        .expect("timeout")
        .with_clock(clock);
    let mut svc = layer.layer(dep.clone());

    // The deadline comes first: 1 s - 200 ms.
    let start = Instant::now();
    let near = TestRequest::new().with_deadline(clock.in_(Duration::from_secs(1)));
    let result = call(&mut svc, near).await;
    assert_eq!(timed_out_after(&result), Duration::from_millis(800));
    assert_eq!(start.elapsed(), Duration::from_millis(800));

    // The timeout comes first.
    let start = Instant::now();
    let far = TestRequest::new().with_deadline(clock.in_(Duration::from_secs(60)));
    let result = call(&mut svc, far).await;
    assert_eq!(timed_out_after(&result), Duration::from_secs(5));
    assert_eq!(start.elapsed(), Duration::from_secs(5));

    // No deadline: the timeout alone.
    let result = call(&mut svc, TestRequest::new()).await;
    assert_eq!(timed_out_after(&result), Duration::from_secs(5));

    // A deadline already inside the margin leaves no time at all.
    let start = Instant::now();
    let late = TestRequest::new().with_deadline(clock.in_(Duration::from_millis(100)));
    let result = call(&mut svc, late).await;
    assert_eq!(timed_out_after(&result), Duration::ZERO);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(dep.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_read_when_the_call_starts() {
    let clock = PausedClock::new();
    let dep = Dependency::new(Behaviour::Hang);
    let layer = TimeoutLayer::deadline_aware(Duration::from_secs(5), Duration::from_millis(200))
        .expect("timeout")
        .with_clock(clock);
    let mut svc = layer.layer(dep.clone());
    let deadline = clock.in_(Duration::from_secs(3));
    tokio::time::advance(Duration::from_secs(2)).await;
    let result = call(&mut svc, TestRequest::new().with_deadline(deadline)).await;
    assert_eq!(
        timed_out_after(&result),
        Duration::from_millis(800),
        "3 s deadline, 2 s already gone, 200 ms margin"
    );
}
