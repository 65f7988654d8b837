//! Bulkhead under injected slowness: slots, queue, max wait, priorities, compartments.

use crate::support;

use std::time::Duration;

use lift_core::{BoxError, Error};
use lift_middleware::bulkhead::{BulkheadConfig, BulkheadLayer};
use lift_middleware::classify::Priority;
use support::{
    Behaviour, Dependency, Response, TestRequest, call, expect_lift_err, settle, status, tenant_of,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

fn layer(max: u32, reserve: u32, queue: Option<(u32, Duration)>) -> BulkheadLayer {
    let mut builder = BulkheadConfig::builder("inv")
        .max_concurrent(max)
        .reserve_for_high(reserve);
    if let Some((waiting, wait)) = queue {
        builder = builder.queue(waiting, wait);
    }
    BulkheadLayer::new(builder.build().expect("valid config"))
}

/// Starts a call in its own task.
fn spawn<S>(svc: &S, request: TestRequest) -> JoinHandle<Result<Response, BoxError>>
where
    S: Service<TestRequest, Response = Response, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    tokio::spawn(svc.clone().oneshot(request))
}

fn assert_full(result: &Result<Response, BoxError>, expected_name: &str) {
    match expect_lift_err(result) {
        Error::BulkheadFull { name } => assert_eq!(&**name, expected_name),
        other => panic!("expected BulkheadFull, got {other:?}"),
    }
}

fn normal() -> TestRequest {
    TestRequest::new()
}

#[tokio::test(start_paused = true)]
async fn full_bulkhead_refuses_the_next_call() {
    let dep = Dependency::new(Behaviour::Hang);
    let layer = layer(2, 0, None);
    let svc = layer.layer(dep.clone());
    let running = [spawn(&svc, normal()), spawn(&svc, normal())];
    settle().await;
    assert_eq!(dep.in_flight(), 2);
    assert_eq!(layer.available(), 0);

    let refused = call(&mut svc.clone(), normal()).await;
    assert_full(&refused, "inv");
    assert_eq!(expect_lift_err(&refused).status().as_u16(), 503);
    assert_eq!(
        expect_lift_err(&refused).response_headers()["retry-after"],
        "1"
    );
    assert_eq!(
        dep.calls(),
        2,
        "the refused call never reached the dependency"
    );
    assert_eq!(layer.rejected(), 1);

    dep.release(Behaviour::Ok);
    for task in running {
        assert_eq!(status(&task.await.expect("task")), 200);
    }
    assert_eq!(layer.available(), 2, "slots come back");
    dep.set(Behaviour::Ok);
    assert_eq!(status(&call(&mut svc.clone(), normal()).await), 200);
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_gets_the_slot_when_one_finishes() {
    let dep = Dependency::new(Behaviour::Hang);
    let layer = layer(1, 0, Some((1, Duration::from_secs(1))));
    let svc = layer.layer(dep.clone());
    let start = Instant::now();
    let first = spawn(&svc, normal());
    settle().await;
    dep.set(Behaviour::Ok);
    let waiter = spawn(&svc, normal());
    settle().await;
    assert!(!waiter.is_finished(), "the second call waits");
    assert_eq!(dep.calls(), 1);

    dep.release(Behaviour::Ok);
    assert_eq!(status(&first.await.expect("task")), 200);
    assert_eq!(status(&waiter.await.expect("task")), 200);
    assert_eq!(dep.calls(), 2);
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no time passed: no timeout"
    );
    assert_eq!(layer.rejected(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gives_up_after_max_wait_and_the_queue_is_bounded() {
    let dep = Dependency::new(Behaviour::Hang);
    let max_wait = Duration::from_millis(250);
    let layer = layer(1, 0, Some((1, max_wait)));
    let svc = layer.layer(dep.clone());
    let _hanging = spawn(&svc, normal());
    settle().await;
    let start = Instant::now();
    let waiter = spawn(&svc, normal());
    settle().await;

    let queue_full = call(&mut svc.clone(), normal()).await;
    assert_full(&queue_full, "inv");
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "refused at once: queue full"
    );

    let timed_out = waiter.await.expect("task");
    assert_full(&timed_out, "inv");
    assert_eq!(start.elapsed(), max_wait);
    assert_eq!(dep.calls(), 1);
    assert_eq!(layer.rejected(), 2);
}

#[tokio::test(start_paused = true)]
async fn low_priority_is_refused_at_once_even_with_a_queue() {
    let dep = Dependency::new(Behaviour::Hang);
    let layer = layer(1, 0, Some((5, Duration::from_secs(1))));
    let svc = layer.layer(dep.clone());
    let _hanging = spawn(&svc, normal());
    settle().await;

    let start = Instant::now();
    let low = call(
        &mut svc.clone(),
        TestRequest::new().with_priority(Priority::Low),
    )
    .await;
    assert_full(&low, "inv");
    assert_eq!(start.elapsed(), Duration::ZERO);

    let waiting = spawn(&svc, normal());
    settle().await;
    assert!(!waiting.is_finished(), "normal priority waits in the queue");
    assert_eq!(dep.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn high_priority_uses_the_reserve_normal_cannot() {
    let dep = Dependency::new(Behaviour::Hang);
    let layer = layer(3, 1, None);
    let svc = layer.layer(dep.clone());
    let high = || TestRequest::new().with_priority(Priority::High);
    let _a = spawn(&svc, normal());
    let _b = spawn(&svc, normal());
    settle().await;
    assert_eq!(layer.available(), 0, "the shared slots are taken");

    assert_full(&call(&mut svc.clone(), normal()).await, "inv");
    let _c = spawn(&svc, high());
    settle().await;
    assert_eq!(dep.in_flight(), 3, "high got the reserved slot");
    assert_full(&call(&mut svc.clone(), high()).await, "inv");
    assert_eq!(dep.calls(), 3);
    assert_eq!(layer.rejected(), 2);
}

#[tokio::test(start_paused = true)]
async fn per_key_compartments_isolate_a_tenants_flood() {
    let dep = Dependency::new(Behaviour::Hang);
    let per_key = BulkheadConfig::builder("per-tenant")
        .max_concurrent(2)
        .build()
        .expect("valid config");
    let layer = layer(10, 0, None).keyed(tenant_of, per_key, 100, Duration::from_secs(600));
    let svc = layer.layer(dep.clone());
    let flood = || TestRequest::new().for_tenant("flood");
    let calm = || TestRequest::new().for_tenant("calm");

    let _flooding = [spawn(&svc, flood()), spawn(&svc, flood())];
    settle().await;
    for _ in 0..5 {
        assert_full(&call(&mut svc.clone(), flood()).await, "inv:flood");
    }
    assert_eq!(dep.calls_for(Some("flood")), 2);

    let calm_calls = [spawn(&svc, calm()), spawn(&svc, calm())];
    settle().await;
    assert_eq!(
        dep.calls_for(Some("calm")),
        2,
        "the other tenant still gets in"
    );
    assert_eq!(layer.available(), 6, "4 of the 10 global slots are used");
    assert_eq!(layer.rejected(), 0, "refusals were per tenant, not global");

    dep.release(Behaviour::Ok);
    for task in calm_calls {
        assert_eq!(status(&task.await.expect("task")), 200);
    }
}

/// A key's compartment queues as its own config says: the global config's wait (none by
/// default) does not cut a key's `queue(.., 500 ms)` to nothing.
#[tokio::test(start_paused = true)]
async fn a_keys_queue_waits_as_long_as_its_own_config_says() {
    let dep = Dependency::new(Behaviour::Hang);
    let per_key = BulkheadConfig::builder("per-tenant")
        .max_concurrent(2)
        .queue(10, Duration::from_millis(500))
        .build()
        .expect("valid config");
    let layer = layer(100, 0, None).keyed(tenant_of, per_key, 100, Duration::from_secs(600));
    let svc = layer.layer(dep.clone());
    let tenant = || TestRequest::new().for_tenant("t");
    let _running = [spawn(&svc, tenant()), spawn(&svc, tenant())];
    settle().await;
    let waiter = spawn(&svc, tenant());
    settle().await;
    tokio::time::advance(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "queued, not refused at once");
    dep.set(Behaviour::Ok);
    dep.release(Behaviour::Ok);
    assert_eq!(status(&waiter.await.expect("task")), 200);
    assert_eq!(dep.calls_for(Some("t")), 3);
}

/// A waiter cancelled while queued (its caller timed out or went away) must leave the
/// queue; otherwise the queue fills with ghosts and every later call is refused at once.
#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_leaves_the_queue() {
    let dep = Dependency::new(Behaviour::Hang);
    let layer = layer(1, 0, Some((1, Duration::from_secs(10))));
    let svc = layer.layer(dep.clone());
    let first = spawn(&svc, normal());
    settle().await;

    let ghost = spawn(&svc, normal());
    settle().await;
    ghost.abort();
    assert!(ghost.await.expect_err("aborted").is_cancelled());

    dep.set(Behaviour::Ok);
    let waiter = spawn(&svc, normal());
    settle().await;
    assert!(
        !waiter.is_finished(),
        "the queue has room again: the call waits, it is not refused"
    );
    dep.release(Behaviour::Ok);
    assert_eq!(status(&first.await.expect("task")), 200);
    assert_eq!(status(&waiter.await.expect("task")), 200);
}

/// With every compartment place taken by busy tenants, a new tenant still gets a
/// compartment of its own, kept between its calls: its limit holds. (A cache that refused
/// the newcomer a place gave it a fresh compartment on every call, so it had none.)
#[tokio::test(start_paused = true)]
async fn a_new_key_gets_a_compartment_when_the_places_are_taken() {
    let dep = Dependency::new(Behaviour::Hang);
    let per_key = BulkheadConfig::builder("per-tenant")
        .max_concurrent(1)
        .build()
        .expect("valid config");
    let layer = layer(100, 0, None).keyed(tenant_of, per_key, 4, Duration::from_secs(600));
    let svc = layer.layer(dep.clone());
    let busy = ["a", "b", "c", "d"];
    for tenant in busy {
        dep.set_for(tenant, Behaviour::Ok);
    }
    let rounds = |n: usize| {
        let svc = svc.clone();
        async move {
            for _ in 0..n {
                for tenant in busy {
                    let result =
                        call(&mut svc.clone(), TestRequest::new().for_tenant(tenant)).await;
                    assert_eq!(status(&result), 200, "{tenant}");
                }
            }
        }
    };
    rounds(50).await;
    let newcomer = || TestRequest::new().for_tenant("newcomer");
    let _holding = spawn(&svc, newcomer());
    settle().await;
    for _ in 0..3 {
        // The busy tenants keep the cache working (and deciding) between the newcomer's calls.
        rounds(50).await;
        // Admitted, the call would hang on the dependency: a refusal comes at once.
        let second =
            tokio::time::timeout(Duration::from_secs(5), call(&mut svc.clone(), newcomer()))
                .await
                .expect("refused at once, not admitted past the newcomer's limit of one");
        assert_full(&second, "inv:newcomer");
    }
    assert_eq!(dep.calls_for(Some("newcomer")), 1);
    dep.release(Behaviour::Ok);
}

/// "Forever" (`Duration::MAX`) is refused or bounded when the layer is built, never a panic
/// at the first call: a queue wait, an idempotency expiry and wait, a keyed idle time.
#[tokio::test(start_paused = true)]
async fn forever_is_refused_or_bounded_at_build() {
    use lift_middleware::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
    use lift_middleware::idempotency::IdempotencyConfig;
    let forever = Duration::MAX;
    assert!(
        BulkheadConfig::builder("b")
            .queue(1, forever)
            .build()
            .is_err()
    );
    assert!(
        IdempotencyConfig::builder("t")
            .expires_after(forever)
            .build()
            .is_err()
    );
    assert!(
        IdempotencyConfig::builder("t")
            .wait_for_in_progress(forever)
            .build()
            .is_err()
    );
    // Keyed layers keep an idle key at most a year; each serves a call.
    let dep = Dependency::new(Behaviour::Ok);
    let per_key = BulkheadConfig::builder("k").build().expect("config");
    let bulkhead = layer(10, 0, None).keyed(tenant_of, per_key, 10, forever);
    let mut svc = bulkhead.layer(dep.clone());
    assert_eq!(
        status(&call(&mut svc, TestRequest::new().for_tenant("a")).await),
        200
    );
    let breaker =
        CircuitBreakerLayer::builder(CircuitBreakerConfig::builder("c").build().expect("config"))
            .keyed(tenant_of, 10, forever)
            .build()
            .expect("a keyed breaker");
    let mut svc = breaker.layer(dep.clone());
    assert_eq!(
        status(&call(&mut svc, TestRequest::new().for_tenant("a")).await),
        200
    );
}
