//! Rate limiting with a fake clock: the quota, the refusal and its headers, refill, keys.

use crate::support;

use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;
use governor::clock::FakeRelativeClock;
use lift_core::{BoxError, Error};
use lift_middleware::rate_limit::RateLimitLayer;
use support::{
    Behaviour, Buffer, Dependency, Response, TestRequest, call, expect_lift_err, status, tenant_of,
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
    let layer = RateLimitLayer::with_clock(per_second(2), clock.clone()).keyed(tenant_of, 100);
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

/// A drained key's bucket is not dropped to make room for another key before it has
/// refilled: the key would get a whole new burst. Room for one key, 60 a minute.
#[tokio::test]
async fn a_drained_bucket_is_not_dropped_to_make_room() {
    let clock = FakeRelativeClock::default();
    let dep = Dependency::new(Behaviour::Ok);
    let per_minute = Quota::per_minute(NonZeroU32::new(60).expect("non-zero"));
    let layer = RateLimitLayer::with_clock(per_minute, clock.clone()).keyed(tenant_of, 1);
    let mut svc = layer.layer(dep.clone());
    let tenant = |t: &str| TestRequest::new().for_tenant(t);
    for _ in 0..60 {
        assert_eq!(status(&call(&mut svc, tenant("a")).await), 200);
    }
    refused(&call(&mut svc, tenant("a")).await, 60);
    // Half a minute on, "b" needs room: "a" has not refilled, so "b" shares the overflow
    // bucket, and "a" still has its 30 calls, not 60.
    clock.advance(Duration::from_secs(30));
    assert_eq!(status(&call(&mut svc, tenant("b")).await), 200);
    for _ in 0..30 {
        assert_eq!(status(&call(&mut svc, tenant("a")).await), 200);
    }
    refused(&call(&mut svc, tenant("a")).await, 60);
    assert_eq!(dep.calls_for(Some("a")), 90);
}

/// Admitted calls of one key at fake-clock times `at` (ms) never exceed what the quota
/// allows in any window: `burst + window / interval` calls.
fn assert_within_quota(key: &str, at: &[u64], burst: u64, interval_ms: u64) {
    for (i, start) in at.iter().enumerate() {
        for (j, end) in at.iter().enumerate().skip(i) {
            let calls = (j - i + 1) as u64;
            let allowed = burst + (end - start) / interval_ms;
            assert!(
                calls <= allowed,
                "key {key}: {calls} calls admitted within {} ms, the quota allows {allowed}",
                end - start
            );
        }
    }
}

/// More keys active than `max_keys`: a bucket that still holds its key back is never
/// dropped to make room (that key would start again with a full burst), and keys that
/// find no room share one bucket. No key gets more than its quota.
#[tokio::test]
async fn no_key_gets_more_than_its_quota_when_more_keys_are_active_than_max_keys() {
    let clock = FakeRelativeClock::default();
    let dep = Dependency::new(Behaviour::Ok);
    let layer = RateLimitLayer::with_clock(per_second(2), clock.clone()).keyed(tenant_of, 3);
    let mut svc = layer.layer(dep.clone());
    let tenant = |t: usize| TestRequest::new().for_tenant(&format!("t{t}"));

    // Twenty tenants, five rounds each, the clock still: two calls a tenant at most.
    for _ in 0..5 {
        for t in 0..20 {
            let _ = call(&mut svc, tenant(t)).await;
        }
    }
    let calls = |t: usize| dep.calls_for(Some(&format!("t{t}")));
    for t in 0..20 {
        assert!(calls(t) <= 2, "tenant t{t} got {} calls", calls(t));
    }
    // The first three have buckets of their own; the other seventeen shared one.
    assert_eq!((0..3).map(calls).sum::<usize>(), 6);
    assert_eq!((3..20).map(calls).sum::<usize>(), 2);

    // Three seconds later every bucket has refilled and may go (one interval after it
    // refilled, and a second more): a new tenant gets a bucket of its own, and so do the
    // others.
    clock.advance(Duration::from_secs(3));
    for _ in 0..3 {
        let _ = call(&mut svc, tenant(20)).await;
    }
    assert_eq!(calls(20), 2);
    let before = calls(5) + calls(6);
    for t in [5, 6] {
        for _ in 0..3 {
            let _ = call(&mut svc, tenant(t)).await;
        }
    }
    assert_eq!(calls(5) + calls(6) - before, 4);
}

/// A key that drew on the overflow bucket does not get a full bucket of its own once there
/// is room: its own bucket starts where the overflow bucket stands. Room for one key, 2 a
/// second in bursts of 2 (one call every 500 ms once drained).
#[tokio::test]
async fn a_key_that_drew_on_the_overflow_bucket_gets_no_new_burst() {
    let clock = FakeRelativeClock::default();
    let dep = Dependency::new(Behaviour::Ok);
    let layer = RateLimitLayer::with_clock(per_second(2), clock.clone()).keyed(tenant_of, 1);
    let mut svc = layer.layer(dep.clone());
    assert_eq!(admitted(&mut svc, "a", 2).await, 2);
    assert_eq!(
        admitted(&mut svc, "b", 3).await,
        2,
        "b shares the overflow bucket"
    );
    // At 2.4 s "a"'s bucket still stays (it may go at 2.5 s); "b" drains the overflow
    // bucket again.
    clock.advance(Duration::from_millis(2_400));
    assert_eq!(admitted(&mut svc, "b", 3).await, 2);
    // At 2.5 s "a"'s bucket goes and "b" finds room; a fresh bucket would let it make two
    // more calls, 4 in 100 ms. Its bucket starts drained, as the overflow bucket is.
    clock.advance(Duration::from_millis(100));
    assert_eq!(admitted(&mut svc, "b", 3).await, 0);
    assert_eq!(
        admitted(&mut svc, "c", 1).await,
        0,
        "c too starts from the drained state"
    );
    // Half a second on, "b" has its own bucket, refilling at its own rate.
    clock.advance(Duration::from_millis(500));
    assert_eq!(admitted(&mut svc, "b", 3).await, 1);
    assert_eq!(dep.calls_for(Some("b")), 5);
}

/// Once the overflow bucket is busy, keys that find room still get buckets of their own:
/// a key calling within its quota is not held on the shared bucket by the others. Room for
/// two keys, 1 a second.
#[tokio::test]
async fn keys_leave_a_busy_overflow_bucket_once_there_is_room() {
    let clock = FakeRelativeClock::default();
    let dep = Dependency::new(Behaviour::Ok);
    let layer = RateLimitLayer::with_clock(per_second(1), clock.clone()).keyed(tenant_of, 2);
    let mut svc = layer.layer(dep.clone());
    for t in ["a", "b", "c"] {
        assert_eq!(admitted(&mut svc, t, 1).await, 1);
    }
    // "a" and "b" go quiet; "c" and "d" call once every 1.2 s each, below their quota,
    // 0.6 s apart: on one shared bucket about every other call would be refused. Once
    // "a" and "b"'s buckets have gone, each gets a bucket and every call through.
    let mut late = (0, 0);
    for round in 0..10 {
        clock.advance(Duration::from_millis(600));
        let c = admitted(&mut svc, "c", 1).await;
        clock.advance(Duration::from_millis(600));
        let d = admitted(&mut svc, "d", 1).await;
        if round >= 5 {
            late = (late.0 + c, late.1 + d);
        }
    }
    assert_eq!(late, (5, 5));
}

/// How many of `n` calls from `tenant` got through.
async fn admitted<S>(svc: &mut S, tenant: &str, n: usize) -> usize
where
    S: tower::Service<TestRequest, Response = Response, Error = BoxError>,
{
    let mut ok = 0;
    for _ in 0..n {
        ok += usize::from(
            call(svc, TestRequest::new().for_tenant(tenant))
                .await
                .is_ok(),
        );
    }
    ok
}

/// The overflow bucket's coming into use is logged at WARN, at most once a minute however
/// often buckets refill and the room fills again.
#[tokio::test]
async fn the_overflow_bucket_is_logged_at_most_once_a_minute() {
    use tracing_subscriber::layer::SubscriberExt;
    let buffer = Buffer::default();
    let subscriber =
        tracing_subscriber::registry().with(lift_core::logging::JsonLayer::new(buffer.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    let clock = FakeRelativeClock::default();
    let layer = RateLimitLayer::with_clock(per_second(2), clock.clone()).keyed(tenant_of, 1);
    let mut svc = layer.layer(Dependency::new(Behaviour::Ok));
    // Every 3 s every bucket may go: a new key takes the room, the next one uses the
    // overflow bucket again. 40 times over 120 s.
    for round in 0..40 {
        clock.advance(Duration::from_secs(3));
        assert_eq!(admitted(&mut svc, &format!("x{round}"), 1).await, 1);
        assert_eq!(admitted(&mut svc, &format!("y{round}"), 1).await, 1);
    }
    let warnings = buffer
        .lines()
        .into_iter()
        .filter(|l| l["level"] == "WARN" && l["target"] == "lift::rate_limit")
        .count();
    assert_eq!(warnings, 2, "at 3 s and at 63 s");
}

/// An overflow bucket in use for minutes is logged once a minute, and a limiter that has
/// no room by configuration (`max_keys` 0) not at all.
#[tokio::test]
async fn a_lasting_overflow_is_logged_once_a_minute_and_max_keys_zero_never() {
    use tracing_subscriber::layer::SubscriberExt;
    let buffer = Buffer::default();
    let subscriber =
        tracing_subscriber::registry().with(lift_core::logging::JsonLayer::new(buffer.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    let clock = FakeRelativeClock::default();
    let one = RateLimitLayer::with_clock(per_second(2), clock.clone()).keyed(tenant_of, 1);
    let none = RateLimitLayer::with_clock(per_second(2), clock.clone()).keyed(tenant_of, 0);
    let mut one = one.layer(Dependency::new(Behaviour::Ok));
    let mut none = none.layer(Dependency::new(Behaviour::Ok));
    // "a" keeps its bucket busy; "b" uses the overflow bucket all along, for 125 s.
    for _ in 0..250 {
        assert_eq!(admitted(&mut one, "a", 1).await, 1);
        assert_eq!(admitted(&mut one, "b", 1).await, 1);
        assert_eq!(admitted(&mut none, "c", 1).await, 1);
        clock.advance(Duration::from_millis(500));
    }
    let warnings = buffer
        .lines()
        .into_iter()
        .filter(|l| l["level"] == "WARN" && l["target"] == "lift::rate_limit")
        .count();
    assert_eq!(
        warnings, 3,
        "at 0 s, 60 s and 120 s, from the limiter with room for one"
    );
}

/// Many keys, few buckets, time moving on: every key's admitted calls stay within its
/// quota in every window, whatever the order of keys.
#[tokio::test]
async fn keyed_limits_hold_in_every_window_with_few_buckets_and_many_keys() {
    let clock = FakeRelativeClock::default();
    let dep = Dependency::new(Behaviour::Ok);
    // 4 a second in bursts of 4: one call every 250 ms once drained.
    let layer = RateLimitLayer::with_clock(per_second(4), clock.clone()).keyed(tenant_of, 5);
    let mut svc = layer.layer(dep.clone());
    let mut admitted: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut now_ms = 0;
    for _ in 0..4_000 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // Keys from a pool of 12, the first three more often; time moves 0-19 ms a call.
        let pick = (seed >> 33) % 16;
        let key = format!("k{}", if pick < 12 { pick } else { pick - 12 });
        let step = (seed >> 20) % 20;
        clock.advance(Duration::from_millis(step));
        now_ms += step;
        if call(&mut svc, TestRequest::new().for_tenant(&key))
            .await
            .is_ok()
        {
            admitted.entry(key).or_default().push(now_ms);
        }
    }
    assert!(
        admitted.len() >= 10,
        "most keys got calls through: {admitted:?}"
    );
    for (key, at) in &admitted {
        assert_within_quota(key, at, 4, 250);
    }
}
