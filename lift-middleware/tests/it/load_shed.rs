//! Load shedding under injected load: in-flight limit, deadlines, latency.

use crate::support;

use std::time::Duration;

use lift_core::{BoxError, Error};
use lift_middleware::classify::Priority;
use lift_middleware::load_shed::{LoadShed, LoadShedConfig, LoadShedLayer};
use support::{
    Behaviour, Dependency, PausedClock, Response, TestRequest, call, expect_lift_err, settle,
    status,
};
use tokio::task::JoinHandle;
use tower::{Layer, ServiceExt};

fn shed_reason(result: &Result<Response, BoxError>) -> &'static str {
    match expect_lift_err(result) {
        Error::Overloaded { reason } => reason,
        other => panic!("expected Overloaded, got {other:?}"),
    }
}

fn spawn(
    svc: &LoadShed<Dependency>,
    request: TestRequest,
) -> JoinHandle<Result<Response, BoxError>> {
    tokio::spawn(svc.clone().oneshot(request))
}

fn with(priority: Priority) -> TestRequest {
    TestRequest::new().with_priority(priority)
}

const IN_FLIGHT: &str = "too many requests in flight";
const LATENCY: &str = "latency is over its target";
const DEADLINE: &str = "too little time left before the deadline";

#[tokio::test(start_paused = true)]
async fn in_flight_limit_sheds_low_priority_first() {
    let dep = Dependency::new(Behaviour::Hang);
    let layer = LoadShedLayer::new(
        LoadShedConfig::builder()
            .max_in_flight(4)
            .build()
            .expect("valid config"),
    );
    let svc = layer.layer(dep.clone());
    let mut running = vec![
        spawn(&svc, with(Priority::Normal)),
        spawn(&svc, with(Priority::Low)),
        spawn(&svc, with(Priority::Normal)),
    ];
    settle().await;
    assert_eq!(dep.in_flight(), 3);

    // 3 of 4 in flight: low priority is shed at three quarters, normal still gets in.
    let low = call(&mut svc.clone(), with(Priority::Low)).await;
    assert_eq!(shed_reason(&low), IN_FLIGHT);
    let error = expect_lift_err(&low);
    assert_eq!(error.status().as_u16(), 503);
    assert_eq!(error.response_headers()["retry-after"], "1");
    running.push(spawn(&svc, with(Priority::Normal)));
    settle().await;
    assert_eq!(dep.in_flight(), 4);

    // Full: everyone is shed.
    for priority in [Priority::Normal, Priority::High] {
        let result = call(&mut svc.clone(), with(priority)).await;
        assert_eq!(shed_reason(&result), IN_FLIGHT, "{priority:?}");
    }
    assert_eq!(dep.calls(), 4);
    assert_eq!(layer.shed(), 3);

    dep.release(Behaviour::Ok);
    for task in running {
        assert_eq!(status(&task.await.expect("task")), 200);
    }
    dep.set(Behaviour::Ok);
    assert_eq!(
        status(&call(&mut svc.clone(), with(Priority::Low)).await),
        200
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_too_close_to_its_deadline_is_shed() {
    let clock = PausedClock::new();
    let dep = Dependency::new(Behaviour::Ok);
    let config = LoadShedConfig::builder()
        .min_remaining(Duration::from_millis(100))
        .build()
        .expect("valid config");
    let layer = LoadShedLayer::with_clock(config, clock);
    let mut svc = layer.layer(dep.clone());

    let close = TestRequest::new().with_deadline(clock.in_(Duration::from_millis(50)));
    assert_eq!(shed_reason(&call(&mut svc, close).await), DEADLINE);
    let past = TestRequest::new().with_deadline(clock.in_(Duration::ZERO));
    assert_eq!(shed_reason(&call(&mut svc, past).await), DEADLINE);
    let high = with(Priority::High).with_deadline(clock.in_(Duration::from_millis(50)));
    assert_eq!(
        shed_reason(&call(&mut svc, high).await),
        DEADLINE,
        "priority does not buy time"
    );
    assert_eq!(dep.calls(), 0);

    let roomy = TestRequest::new().with_deadline(clock.in_(Duration::from_millis(500)));
    assert_eq!(status(&call(&mut svc, roomy.clone()).await), 200);
    // The same request later, with 50 ms left.
    tokio::time::advance(Duration::from_millis(450)).await;
    assert_eq!(shed_reason(&call(&mut svc, roomy).await), DEADLINE);
    assert_eq!(dep.calls(), 1);
    assert_eq!(layer.shed(), 4);
}

fn latency_layer(target: Duration) -> LoadShedLayer {
    LoadShedLayer::new(
        LoadShedConfig::builder()
            .latency_target(target)
            .build()
            .expect("valid config"),
    )
}

#[tokio::test(start_paused = true)]
async fn latency_over_target_sheds_low_priority_but_not_high() {
    let target = Duration::from_millis(100);
    let dep = Dependency::new(Behaviour::Delay(Duration::from_millis(150)));
    let layer = latency_layer(target);
    let mut svc = layer.layer(dep.clone());
    assert_eq!(status(&call(&mut svc, TestRequest::new()).await), 200);
    assert_eq!(layer.latency(), Duration::from_millis(150));

    dep.set(Behaviour::Ok);
    assert_eq!(
        shed_reason(&call(&mut svc, with(Priority::Low)).await),
        LATENCY
    );
    assert_eq!(
        status(&call(&mut svc, with(Priority::Normal)).await),
        200,
        "normal priority is shed only past twice the target"
    );
    assert_eq!(status(&call(&mut svc, with(Priority::High)).await), 200);
    assert_eq!(layer.shed(), 1);
}

#[tokio::test(start_paused = true)]
async fn latency_past_twice_the_target_sheds_normal_too_but_never_high() {
    let target = Duration::from_millis(100);
    let dep = Dependency::new(Behaviour::Delay(Duration::from_millis(300)));
    let layer = latency_layer(target);
    let mut svc = layer.layer(dep.clone());
    assert_eq!(status(&call(&mut svc, TestRequest::new()).await), 200);
    assert_eq!(layer.latency(), Duration::from_millis(300));

    assert_eq!(
        shed_reason(&call(&mut svc, with(Priority::Low)).await),
        LATENCY
    );
    assert_eq!(
        shed_reason(&call(&mut svc, with(Priority::Normal)).await),
        LATENCY
    );
    assert_eq!(status(&call(&mut svc, with(Priority::High)).await), 200);
    assert_eq!(dep.calls(), 2);

    // Fast high-priority calls pull the average back down, and normal traffic returns.
    dep.set(Behaviour::Ok);
    for _ in 0..10 {
        assert_eq!(status(&call(&mut svc, with(Priority::High)).await), 200);
    }
    assert!(
        layer.latency() < target * 2,
        "average {:?}",
        layer.latency()
    );
    assert_eq!(status(&call(&mut svc, with(Priority::Normal)).await), 200);
}

/// Once the average is over twice the target, only admitted calls can lower it; with no
/// high-priority traffic nothing is admitted, so the function sheds normal traffic forever,
/// however long it has been idle and however healthy the dependency is again.
#[tokio::test(start_paused = true)]
async fn latency_shedding_recovers_without_high_priority_traffic() {
    let target = Duration::from_millis(100);
    let dep = Dependency::new(Behaviour::Delay(Duration::from_millis(300)));
    let layer = latency_layer(target);
    let mut svc = layer.layer(dep.clone());
    assert_eq!(status(&call(&mut svc, TestRequest::new()).await), 200);
    dep.set(Behaviour::Ok);

    tokio::time::advance(Duration::from_secs(3600)).await;
    let mut admitted = 0;
    for _ in 0..100 {
        if call(&mut svc, TestRequest::new()).await.is_ok() {
            admitted += 1;
        }
    }
    assert!(
        admitted > 0,
        "an hour later, 100 normal requests to a healthy dependency were all shed"
    );
}
