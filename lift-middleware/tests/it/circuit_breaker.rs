//! Circuit breaker under injected failures: trip, fail fast, half-open, recover.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lift_core::Error;
use lift_middleware::circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerLayer, State, StateChange,
};
use support::{Behaviour, Dependency, Response, TestRequest, call, expect_lift_err, status};
use tower::{Layer, Service, ServiceExt};

const OPEN_FOR: Duration = Duration::from_secs(30);

/// Trips after `failures` in a row, stays open 30 s, admits `probes` probes and closes
/// after `successes`.
fn config(failures: u32, probes: u32, successes: u32) -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder("dep")
        .consecutive_failures(failures)
        .no_failure_rate()
        .open_for(OPEN_FOR)
        .half_open(probes, successes)
        .build()
        .expect("valid config")
}

fn req() -> TestRequest {
    TestRequest::new()
}

fn retry_after_of(error: &Error) -> Duration {
    match error {
        Error::CircuitOpen { retry_after, .. } => *retry_after,
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures_then_fails_fast_without_calling() {
    let dep = Dependency::new(Behaviour::Status(503));
    dep.script([Behaviour::Status(503), Behaviour::Transport]);
    let layer = CircuitBreakerLayer::new(config(3, 1, 1));
    let mut svc = layer.layer(dep.clone());

    assert_eq!(status(&call(&mut svc, req()).await), 503);
    assert!(call(&mut svc, req()).await.is_err(), "transport error");
    assert_eq!(
        layer.state(None),
        Some(State::Closed),
        "two failures < three"
    );
    assert_eq!(status(&call(&mut svc, req()).await), 503);
    assert_eq!(layer.state(None), Some(State::Open));
    assert_eq!(dep.calls(), 3);

    let refused = call(&mut svc, req()).await;
    let error = expect_lift_err(&refused);
    match error {
        Error::CircuitOpen { name, retry_after } => {
            assert_eq!(&**name, "dep");
            assert_eq!(*retry_after, OPEN_FOR);
        }
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
    assert_eq!(error.status().as_u16(), 503);
    assert_eq!(error.response_headers()["retry-after"], "30");
    assert_eq!(dep.calls(), 3, "the dependency is not called while open");

    tokio::time::advance(Duration::from_secs(10)).await;
    let refused = call(&mut svc, req()).await;
    assert_eq!(
        retry_after_of(expect_lift_err(&refused)),
        Duration::from_secs(20),
        "retry_after counts down"
    );
    assert_eq!(dep.calls(), 3);
    let metrics = layer.metrics(None).expect("unkeyed");
    assert_eq!(
        (
            metrics.calls,
            metrics.failures,
            metrics.rejected,
            metrics.trips
        ),
        (3, 3, 2, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn client_errors_do_not_count_as_failures() {
    let dep = Dependency::new(Behaviour::ClientError);
    let layer = CircuitBreakerLayer::new(config(3, 1, 1));
    let mut svc = layer.layer(dep.clone());

    for _ in 0..10 {
        let result = call(&mut svc, req()).await;
        assert_eq!(expect_lift_err(&result).status().as_u16(), 400);
    }
    // 4xx responses are not failures either.
    dep.set(Behaviour::Status(404));
    for _ in 0..5 {
        assert_eq!(status(&call(&mut svc, req()).await), 404);
    }
    assert_eq!(layer.state(None), Some(State::Closed));
    assert_eq!(dep.calls(), 15);
    assert_eq!(layer.metrics(None).map(|m| m.failures), Some(0));

    // A client error breaks a run of failures, as a success does.
    dep.script([
        Behaviour::Status(503),
        Behaviour::Status(503),
        Behaviour::ClientError,
        Behaviour::Status(503),
        Behaviour::Status(503),
    ]);
    for _ in 0..5 {
        let _ = call(&mut svc, req()).await;
    }
    assert_eq!(layer.state(None), Some(State::Closed));
    assert_eq!(layer.metrics(None).map(|m| m.failures), Some(4));
}

/// Without backoff, a breaker stays open as long as `open_for` says, 10 minutes included
/// (the 5-minute cap is backoff's; the config was refused, naming `open_backoff.max`).
#[tokio::test(start_paused = true)]
async fn without_backoff_a_long_open_for_is_kept_whole() {
    let ten_minutes = Duration::from_secs(600);
    let config = CircuitBreakerConfig::builder("dep")
        .consecutive_failures(1)
        .no_failure_rate()
        .open_for(ten_minutes)
        .build()
        .expect("a long open time without backoff");
    let dep = Dependency::new(Behaviour::Status(503));
    let layer = CircuitBreakerLayer::new(config);
    let mut svc = layer.layer(dep.clone());
    let _ = call(&mut svc, req()).await;
    tokio::time::advance(ten_minutes - Duration::from_millis(1)).await;
    assert_eq!(layer.state(None), Some(State::Open));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(layer.state(None), Some(State::HalfOpen));
}

#[tokio::test(start_paused = true)]
async fn half_opens_after_open_for_and_closes_after_enough_successes() {
    let dep = Dependency::new(Behaviour::Status(503));
    let layer = CircuitBreakerLayer::new(config(3, 2, 2));
    let mut svc = layer.layer(dep.clone());
    for _ in 0..3 {
        let _ = call(&mut svc, req()).await;
    }
    assert_eq!(layer.state(None), Some(State::Open));

    tokio::time::advance(OPEN_FOR - Duration::from_millis(1)).await;
    assert_eq!(layer.state(None), Some(State::Open));
    assert!(call(&mut svc, req()).await.is_err());
    assert_eq!(dep.calls(), 3);

    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(layer.state(None), Some(State::HalfOpen));
    dep.set(Behaviour::Ok);
    assert_eq!(status(&call(&mut svc, req()).await), 200);
    assert_eq!(
        layer.state(None),
        Some(State::HalfOpen),
        "one success of two"
    );
    assert_eq!(status(&call(&mut svc, req()).await), 200);
    assert_eq!(layer.state(None), Some(State::Closed));
    assert_eq!(dep.calls(), 5);

    // Closed again: it takes a full run of failures to trip.
    dep.set(Behaviour::Status(503));
    for _ in 0..2 {
        let _ = call(&mut svc, req()).await;
    }
    assert_eq!(layer.state(None), Some(State::Closed));
}

#[tokio::test(start_paused = true)]
async fn a_failing_probe_reopens() {
    let dep = Dependency::new(Behaviour::Status(503));
    let layer = CircuitBreakerLayer::new(config(3, 1, 1));
    let mut svc = layer.layer(dep.clone());
    for _ in 0..3 {
        let _ = call(&mut svc, req()).await;
    }
    tokio::time::advance(OPEN_FOR).await;
    assert_eq!(layer.state(None), Some(State::HalfOpen));

    assert_eq!(
        status(&call(&mut svc, req()).await),
        503,
        "the probe reaches the dependency"
    );
    assert_eq!(dep.calls(), 4);
    assert_eq!(layer.state(None), Some(State::Open));
    let refused = call(&mut svc, req()).await;
    assert_eq!(retry_after_of(expect_lift_err(&refused)), OPEN_FOR);
    assert_eq!(dep.calls(), 4);
    assert_eq!(layer.metrics(None).map(|m| m.trips), Some(2));
}

#[tokio::test(start_paused = true)]
async fn the_fallback_answers_while_open() {
    let dep = Dependency::new(Behaviour::Transport);
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen_in = seen.clone();
    let layer = CircuitBreakerLayer::builder(config(2, 1, 1))
        .fallback(move |error: &Error| -> Option<Response> {
            seen_in.lock().expect("lock").push(error.code().to_owned());
            http::Response::builder()
                .status(200)
                .header("x-fallback", "cache")
                .body("stale".to_owned())
                .ok()
        })
        .build()
        .expect("breaker");
    let mut svc = layer.layer(dep.clone());
    for _ in 0..2 {
        assert!(call(&mut svc, req()).await.is_err());
    }
    assert_eq!(layer.state(None), Some(State::Open));

    let response = call(&mut svc, req()).await.expect("the fallback answers");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-fallback"], "cache");
    assert_eq!(response.body(), "stale");
    assert_eq!(dep.calls(), 2, "the dependency is not called");
    assert_eq!(*seen.lock().expect("lock"), vec!["circuit_open".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_isolate_tenants() {
    let dep = Dependency::new(Behaviour::Ok);
    dep.set_for("noisy", Behaviour::Status(503));
    let layer = keyed(config(3, 1, 1), 100, Duration::from_secs(600));
    let mut svc = layer.layer(dep.clone());
    let noisy = || TestRequest::new().for_tenant("noisy");
    let quiet = || TestRequest::new().for_tenant("quiet");

    for _ in 0..3 {
        assert_eq!(status(&call(&mut svc, noisy()).await), 503);
    }
    assert_eq!(layer.state(Some("noisy")), Some(State::Open));
    let refused = call(&mut svc, noisy()).await;
    match expect_lift_err(&refused) {
        Error::CircuitOpen { name, .. } => assert_eq!(&**name, "dep:noisy"),
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
    assert_eq!(dep.calls_for(Some("noisy")), 3);

    for _ in 0..5 {
        assert_eq!(status(&call(&mut svc, quiet()).await), 200);
    }
    assert_eq!(layer.state(Some("quiet")), Some(State::Closed));
    assert_eq!(dep.calls_for(Some("quiet")), 5);
    // Unkeyed requests share the unkeyed breaker, untouched by the noisy tenant.
    assert_eq!(status(&call(&mut svc, req()).await), 200);
    assert_eq!(layer.state(None), Some(State::Closed));
    assert_eq!(layer.state(Some("never-seen")), None);
}

/// A layer of `config` keyed by tenant, with room for `max_keys` breakers, dropping one
/// unused for `idle` when room is needed.
fn keyed(
    config: CircuitBreakerConfig,
    max_keys: u64,
    idle: Duration,
) -> CircuitBreakerLayer<
    lift_middleware::classify::DefaultClassifier,
    fn(&TestRequest) -> Option<String>,
> {
    CircuitBreakerLayer::builder(config)
        .keyed(
            (|r: &TestRequest| r.tenant.clone()) as fn(&TestRequest) -> Option<String>,
            max_keys,
            idle,
        )
        .build()
        .expect("breaker")
}

/// A keyed layer with room for `max_keys` breakers that trip on one failure.
fn keyed_by_tenant(
    max_keys: u64,
) -> CircuitBreakerLayer<
    lift_middleware::classify::DefaultClassifier,
    fn(&TestRequest) -> Option<String>,
> {
    keyed(config(1, 1, 1), max_keys, Duration::from_secs(600))
}

/// More keys than `max_keys`: an open breaker is never dropped to make room (its key's
/// calls would reach the failing dependency again); keys that find no room share one
/// breaker, and are refused while it is open.
#[tokio::test(start_paused = true)]
async fn an_open_breaker_stays_open_however_many_keys_come() {
    let dep = Dependency::new(Behaviour::Ok);
    dep.set_for("down", Behaviour::Status(503));
    dep.set_for("down-too", Behaviour::Status(503));
    let layer = keyed_by_tenant(2);
    let mut svc = layer.layer(dep.clone());
    let tenant = |t: &str| TestRequest::new().for_tenant(t);

    assert_eq!(status(&call(&mut svc, tenant("down")).await), 503);
    assert_eq!(layer.state(Some("down")), Some(State::Open));
    for i in 0..200 {
        assert_eq!(status(&call(&mut svc, tenant(&format!("t{i}"))).await), 200);
    }
    assert!(call(&mut svc, tenant("down")).await.is_err(), "still open");
    assert_eq!(dep.calls_for(Some("down")), 1);
    assert_eq!(layer.state(Some("down")), Some(State::Open));

    // A key without a breaker of its own that fails opens the shared one: the other keys
    // without one are refused with it, and "down" still with its own.
    assert_eq!(status(&call(&mut svc, tenant("down-too")).await), 503);
    let refused = call(&mut svc, tenant("t150")).await;
    match expect_lift_err(&refused) {
        Error::CircuitOpen { name, .. } => assert_eq!(&**name, "dep:*"),
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
    let refused = call(&mut svc, tenant("down")).await;
    match expect_lift_err(&refused) {
        Error::CircuitOpen { name, .. } => assert_eq!(&**name, "dep:down"),
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
    assert!(call(&mut svc, tenant("down-too")).await.is_err());
    assert_eq!(dep.calls_for(Some("down-too")), 1);
}

/// A key on the shared breaker gets a closed breaker of its own as soon as there is room:
/// it is not refused for another key's failures, and neither is a key never seen before.
/// Room for one key.
#[tokio::test(start_paused = true)]
async fn a_key_that_finds_room_leaves_the_shared_breaker() {
    let changes = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = changes.clone();
    let dep = Dependency::new(Behaviour::Ok);
    dep.set_for("down", Behaviour::Status(503));
    dep.set_for("failing", Behaviour::Status(503));
    let layer = CircuitBreakerLayer::builder(config(1, 1, 1))
        .keyed(
            |r: &TestRequest| r.tenant.clone(),
            1,
            Duration::from_secs(600),
        )
        .on_state_change(move |c| sink.lock().expect("lock").push(c.name.to_string()))
        .build()
        .expect("breaker");
    let mut svc = layer.layer(dep.clone());
    let tenant = |t: &str| TestRequest::new().for_tenant(t);

    assert_eq!(status(&call(&mut svc, tenant("down")).await), 503);
    // At 10 s the failing key opens the shared breaker, until 40 s.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(status(&call(&mut svc, tenant("failing")).await), 503);
    assert!(
        call(&mut svc, tenant("healthy")).await.is_err(),
        "the shared breaker is open"
    );
    // "down" recovers and closes at 30 s; at 31 s "healthy" finds room.
    dep.set_for("down", Behaviour::Ok);
    tokio::time::advance(Duration::from_secs(20)).await;
    assert_eq!(status(&call(&mut svc, tenant("down")).await), 200);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(status(&call(&mut svc, tenant("healthy")).await), 200);
    assert_eq!(layer.state(Some("healthy")), Some(State::Closed));
    assert!(
        call(&mut svc, tenant("failing")).await.is_err(),
        "no room: the shared breaker, open"
    );
    // A second on, a key never seen takes the room ("healthy"'s breaker is at rest).
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(status(&call(&mut svc, tenant("new")).await), 200);
    assert_eq!(layer.state(Some("new")), Some(State::Closed));
    assert_eq!(dep.calls_for(Some("failing")), 1);
    let changed = changes.lock().expect("lock").clone();
    assert!(
        changed
            .iter()
            .all(|name| name == "dep:down" || name == "dep:*"),
        "{changed:?}"
    );
}

/// A breaker that has seen a failure goes to make room only once unused for `idle`, and an
/// open one not even then. Room for one key, idle 10 s, open for 30 s.
#[tokio::test(start_paused = true)]
async fn only_a_breaker_idle_and_not_open_may_go_with_failures_on_record() {
    let dep = Dependency::new(Behaviour::Ok);
    dep.set_for("flaky", Behaviour::Status(503));
    let layer = keyed(config(2, 1, 1), 1, Duration::from_secs(10));
    let mut svc = layer.layer(dep.clone());
    let tenant = |t: &str| TestRequest::new().for_tenant(t);

    // One failure of two: closed, but not at rest.
    assert_eq!(status(&call(&mut svc, tenant("flaky")).await), 503);
    assert_eq!(status(&call(&mut svc, tenant("x")).await), 200);
    assert_eq!(layer.state(Some("flaky")), Some(State::Closed), "kept");
    assert_eq!(
        layer.state(Some("x")),
        None,
        "x shared the overflow breaker"
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(status(&call(&mut svc, tenant("y")).await), 200);
    assert_eq!(layer.state(Some("flaky")), None, "idle: gone");
    assert_eq!(layer.state(Some("y")), Some(State::Closed));

    // "y" trips (two failures) and stays open 30 s: idle or not, it stays.
    dep.set_for("y", Behaviour::Status(503));
    assert_eq!(status(&call(&mut svc, tenant("y")).await), 503);
    assert_eq!(status(&call(&mut svc, tenant("y")).await), 503);
    assert_eq!(layer.state(Some("y")), Some(State::Open));
    tokio::time::advance(Duration::from_secs(20)).await;
    assert_eq!(status(&call(&mut svc, tenant("z")).await), 200);
    assert_eq!(layer.state(Some("y")), Some(State::Open), "open: kept");
    assert!(call(&mut svc, tenant("y")).await.is_err());
}

/// The overflow breaker's use is logged at WARN, at most once a minute.
#[tokio::test(start_paused = true)]
async fn the_overflow_breaker_is_logged_at_most_once_a_minute() {
    use tracing_subscriber::layer::SubscriberExt;
    let buffer = support::Buffer::default();
    let subscriber =
        tracing_subscriber::registry().with(lift_core::logging::JsonLayer::new(buffer.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    let dep = Dependency::new(Behaviour::Ok);
    dep.set_for("down", Behaviour::Status(503));
    let layer = keyed_by_tenant(1);
    let mut svc = layer.layer(dep.clone());
    let tenant = |t: &str| TestRequest::new().for_tenant(t);
    // "down" holds the room (open); every other key shares the overflow breaker.
    assert_eq!(status(&call(&mut svc, tenant("down")).await), 503);
    for i in 0..70 {
        assert_eq!(status(&call(&mut svc, tenant(&format!("k{i}"))).await), 200);
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let warnings = buffer
        .lines()
        .into_iter()
        .filter(|l| {
            l["level"] == "WARN"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("share a breaker"))
        })
        .count();
    assert_eq!(warnings, 2, "at 0 s and at 60 s");
}

/// While sweeps free nothing they run less often, a second apart at most: a key finds room
/// within about a second of a breaker that may go, however long the room was full. Room
/// for one key, held open for 30 s.
#[tokio::test(start_paused = true)]
async fn a_long_full_room_is_swept_at_least_once_a_second() {
    let dep = Dependency::new(Behaviour::Ok);
    dep.set_for("down", Behaviour::Status(503));
    let layer = keyed_by_tenant(1);
    let mut svc = layer.layer(dep.clone());
    let tenant = |t: &str| TestRequest::new().for_tenant(t);
    assert_eq!(status(&call(&mut svc, tenant("down")).await), 503);
    let step = Duration::from_millis(100);
    let mut at = Duration::ZERO;
    // New keys every 100 ms; once "down" closes at 30 s, its breaker may go.
    dep.set_for("down", Behaviour::Ok);
    let found_room = loop {
        tokio::time::advance(step).await;
        at += step;
        if at == OPEN_FOR {
            assert_eq!(status(&call(&mut svc, tenant("down")).await), 200);
        }
        let key = format!("k{}", at.as_millis());
        let _ = call(&mut svc, tenant(&key)).await;
        if layer.state(Some(&key)).is_some() {
            break at;
        }
        assert!(at < OPEN_FOR * 2, "no key found room");
    };
    assert!(
        found_room >= OPEN_FOR && found_room <= OPEN_FOR + Duration::from_millis(1_100),
        "a key found room at {found_room:?}"
    );
}

/// A breaker with a call in flight is not dropped: the call's outcome counts.
#[tokio::test(start_paused = true)]
async fn a_breaker_with_a_call_in_flight_keeps_its_outcome() {
    let dep = Dependency::new(Behaviour::Ok);
    dep.set_for("slow", Behaviour::Hang);
    let layer = keyed_by_tenant(1);
    let svc = layer.layer(dep.clone());
    let tenant = |t: &str| TestRequest::new().for_tenant(t);

    let mut in_flight = svc.clone();
    let slow = tokio::spawn(async move {
        call(&mut in_flight, tenant("slow"))
            .await
            .map(|r| r.status())
    });
    support::settle().await;
    // Room is needed while "slow" waits on its call: its breaker is closed and clean, but
    // in use.
    let mut other = svc.clone();
    assert_eq!(status(&call(&mut other, tenant("x")).await), 200);
    dep.release(Behaviour::Status(503));
    assert_eq!(slow.await.expect("task").expect("response"), 503);
    assert_eq!(
        layer.state(Some("slow")),
        Some(State::Open),
        "the failure counted"
    );
}

#[tokio::test(start_paused = true)]
async fn on_state_change_sees_every_transition() {
    let changes = Arc::new(Mutex::new(Vec::<StateChange>::new()));
    let sink = changes.clone();
    let dep = Dependency::new(Behaviour::Status(500));
    let layer = CircuitBreakerLayer::builder(config(2, 1, 1))
        .on_state_change(move |change| sink.lock().expect("lock").push(change.clone()))
        .build()
        .expect("breaker");
    let mut svc = layer.layer(dep.clone());
    let transitions = || {
        changes
            .lock()
            .expect("lock")
            .iter()
            .map(|c| {
                assert_eq!(&*c.name, "dep");
                (c.from, c.to)
            })
            .collect::<Vec<_>>()
    };

    for _ in 0..2 {
        let _ = call(&mut svc, req()).await;
    }
    assert_eq!(transitions(), vec![(State::Closed, State::Open)]);

    tokio::time::advance(OPEN_FOR).await;
    dep.set(Behaviour::Ok);
    assert_eq!(status(&call(&mut svc, req()).await), 200);
    assert_eq!(
        transitions(),
        vec![
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_dropped_before_completion_frees_its_place() {
    let dep = Dependency::new(Behaviour::Status(503));
    let layer = CircuitBreakerLayer::new(config(1, 1, 1));
    let svc = layer.layer(dep.clone());
    let _ = call(&mut svc.clone(), req()).await;
    tokio::time::advance(OPEN_FOR).await;

    dep.set(Behaviour::Hang);
    let probe = tokio::spawn(svc.clone().oneshot(req()));
    support::settle().await;
    assert_eq!(dep.calls(), 2, "the probe reached the dependency");
    assert_eq!(dep.in_flight(), 1);

    let refused = call(&mut svc.clone(), req()).await;
    assert!(
        matches!(expect_lift_err(&refused), Error::CircuitOpen { .. }),
        "the only probe place is taken"
    );
    assert_eq!(dep.calls(), 2);

    probe.abort();
    assert!(probe.await.expect_err("aborted").is_cancelled());
    assert_eq!(dep.in_flight(), 0);
    assert_eq!(layer.state(None), Some(State::HalfOpen));

    dep.set(Behaviour::Ok);
    assert_eq!(
        status(&call(&mut svc.clone(), req()).await),
        200,
        "the dropped probe gave its place back"
    );
    assert_eq!(dep.calls(), 3);
    assert_eq!(layer.state(None), Some(State::Closed));
}

/// Two probes of one half-open period both fail: the breaker opens once (the second trip)
/// and should stay open for the second trip's backoff (2 × 10 s), not for a third trip's.
#[tokio::test(start_paused = true)]
async fn concurrent_failing_probes_back_off_once() {
    let dep = Dependency::new(Behaviour::Status(503));
    let config = CircuitBreakerConfig::builder("dep")
        .consecutive_failures(1)
        .no_failure_rate()
        .open_for(Duration::from_secs(10))
        .open_backoff(2.0, Duration::from_secs(600))
        .half_open(2, 2)
        .build()
        .expect("valid config");
    let layer = CircuitBreakerLayer::new(config);
    let mut svc = layer.layer(dep.clone());
    let _ = call(&mut svc, req()).await;
    tokio::time::advance(Duration::from_secs(10)).await;

    // Both probes are admitted before either finishes.
    let first = svc.call(req());
    let second = svc.call(req());
    assert_eq!(dep.calls(), 3);
    assert_eq!(status(&first.await), 503);
    assert_eq!(status(&second.await), 503);
    assert_eq!(layer.metrics(None).map(|m| m.trips), Some(2));

    let refused = call(&mut svc, req()).await;
    assert_eq!(
        retry_after_of(expect_lift_err(&refused)),
        Duration::from_secs(20),
        "the second trip opens for open_for × 2"
    );
}

#[test]
fn misconfigured_breakers_and_timeouts_are_refused_when_built() {
    use lift_middleware::timeout::TimeoutLayer;
    let keyed_without_room = CircuitBreakerLayer::builder(config(2, 1, 1))
        .keyed(|_: &TestRequest| None::<String>, 0, Duration::from_secs(60))
        .build();
    assert_eq!(
        keyed_without_room.err().map(|e| e.field()),
        Some("max_keys")
    );
    let never_idle = CircuitBreakerLayer::builder(config(2, 1, 1))
        .keyed(|_: &TestRequest| None::<String>, 10, Duration::ZERO)
        .build();
    assert_eq!(never_idle.err().map(|e| e.field()), Some("idle"));
    assert_eq!(
        TimeoutLayer::new(Duration::ZERO).err().map(|e| e.field()),
        Some("timeout")
    );
    assert!(TimeoutLayer::deadline_aware(Duration::ZERO, Duration::from_millis(100)).is_err());
    assert!(TimeoutLayer::new(Duration::from_millis(1)).is_ok());
}
