//! Rate limiting with a fake clock: the quota, the refusal and its headers, refill, keys.

use crate::support;

use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;
use governor::clock::FakeRelativeClock;
use lift_core::{BoxError, Error};
use lift_middleware::rate_limit::RateLimitLayer;
use support::{
    Behaviour, Dependency, Response, TestRequest, call, expect_lift_err, status, tenant_of,
};
use tower::Layer;

fn per_second(n: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(n).expect("non-zero"))
}

/// The `retry_after` of a `RateLimited` refusal, after checking its other fields.
fn refused(result: &Result<Response, BoxError>, limit: u64) -> Duration {
    match expect_lift_err(result) {
        Error::RateLimited {
            limit: l,
            remaining,
            retry_after,
            ..
        } => {
            assert_eq!(*l, limit);
            assert_eq!(*remaining, 0);
            assert!(*retry_after > Duration::ZERO, "retry_after is zero");
            *retry_after
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test]
async fn n_calls_pass_then_the_next_is_refused_with_headers() {
    let clock = FakeRelativeClock::default();
    let dep = Dependency::new(Behaviour::Ok);
    let mut svc = RateLimitLayer::with_clock(per_second(3), clock.clone()).layer(dep.clone());
    for _ in 0..3 {
        assert_eq!(status(&call(&mut svc, TestRequest::new()).await), 200);
    }
    let result = call(&mut svc, TestRequest::new()).await;
    let retry_after = refused(&result, 3);
    assert!(
        retry_after <= Duration::from_millis(334),
        "one token comes back every 1/3 s, not {retry_after:?}"
    );
    assert_eq!(
        dep.calls(),
        3,
        "the refused call never reached the dependency"
    );

    let error = expect_lift_err(&result);
    assert_eq!(error.status().as_u16(), 429);
    assert_eq!(error.code(), "rate_limited");
    let headers = error.response_headers();
    assert_eq!(headers["retry-after"], "1", "rounded up to whole seconds");
    assert_eq!(headers["ratelimit-limit"], "3");
    assert_eq!(headers["ratelimit-remaining"], "0");
    assert_eq!(headers["ratelimit-reset"], "1");
}

#[tokio::test]
async fn calls_pass_again_once_the_clock_moves() {
    let clock = FakeRelativeClock::default();
    let dep = Dependency::new(Behaviour::Ok);
    let mut svc = RateLimitLayer::with_clock(per_second(3), clock.clone()).layer(dep.clone());
    for _ in 0..3 {
        assert_eq!(status(&call(&mut svc, TestRequest::new()).await), 200);
    }
    let retry_after = refused(&call(&mut svc, TestRequest::new()).await, 3);

    clock.advance(retry_after);
    assert_eq!(
        status(&call(&mut svc, TestRequest::new()).await),
        200,
        "retry_after was enough"
    );
    refused(&call(&mut svc, TestRequest::new()).await, 3);

    clock.advance(Duration::from_secs(1));
    for _ in 0..3 {
        assert_eq!(status(&call(&mut svc, TestRequest::new()).await), 200);
    }
    refused(&call(&mut svc, TestRequest::new()).await, 3);
    assert_eq!(dep.calls(), 7);
}

#[tokio::test]
async fn keyed_limits_isolate_keys() {
    let clock = FakeRelativeClock::default();
    let dep = Dependency::new(Behaviour::Ok);
    let layer = RateLimitLayer::with_clock(per_second(2), clock.clone()).keyed(
        tenant_of,
        100,
        Duration::from_secs(600),
    );
    let mut svc = layer.layer(dep.clone());
    let tenant = |t: &str| TestRequest::new().for_tenant(t);

    for _ in 0..2 {
        assert_eq!(status(&call(&mut svc, tenant("a")).await), 200);
    }
    for _ in 0..3 {
        refused(&call(&mut svc, tenant("a")).await, 2);
    }
    for _ in 0..2 {
        assert_eq!(status(&call(&mut svc, tenant("b")).await), 200);
    }
    refused(&call(&mut svc, tenant("b")).await, 2);
    // Requests without a key share the global bucket, untouched so far.
    for _ in 0..2 {
        assert_eq!(status(&call(&mut svc, TestRequest::new()).await), 200);
    }
    refused(&call(&mut svc, TestRequest::new()).await, 2);
    assert_eq!(dep.calls_for(Some("a")), 2);
    assert_eq!(dep.calls_for(Some("b")), 2);
    assert_eq!(dep.calls_for(None), 2);

    clock.advance(Duration::from_secs(1));
    assert_eq!(status(&call(&mut svc, tenant("a")).await), 200);
}

/// A drained key's bucket is not dropped before it has refilled, however short `idle` is:
/// otherwise the key would get a whole new burst (60 a minute, idle 10 ms: 60 calls every
/// 10 ms). The limiter's clock stands still; only the key cache's idle time passes.
#[tokio::test]
async fn a_short_idle_does_not_hand_a_drained_key_a_new_burst() {
    let clock = FakeRelativeClock::default();
    let dep = Dependency::new(Behaviour::Ok);
    let per_minute = Quota::per_minute(NonZeroU32::new(60).expect("non-zero"));
    let layer = RateLimitLayer::with_clock(per_minute, clock.clone()).keyed(
        tenant_of,
        100,
        Duration::from_millis(10),
    );
    let mut svc = layer.layer(dep.clone());
    let tenant = || TestRequest::new().for_tenant("a");
    for _ in 0..60 {
        assert_eq!(status(&call(&mut svc, tenant()).await), 200);
    }
    refused(&call(&mut svc, tenant()).await, 60);
    // Three times the configured idle time: the bucket would be gone.
    std::thread::sleep(Duration::from_millis(30));
    refused(&call(&mut svc, tenant()).await, 60);
    assert_eq!(dep.calls_for(Some("a")), 60);
}
