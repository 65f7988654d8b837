//! The shared circuit breaker against DynamoDB on the local emulator: three breaker
//! instances stand for three Lambda environments, none of which sees enough calls to trip
//! on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lift_core::{BoxError, Error};
use lift_middleware::circuit_breaker::{
    CircuitBreakerConfig, SharedCircuitBreakerLayer, State, Window,
};
use lift_middleware::classify::WallClock;
use tower::{Layer, ServiceExt};

use crate::aws;
use aws::client;

/// A wall clock the test moves by hand.
#[derive(Clone)]
struct Manual(Arc<AtomicU64>);

impl Manual {
    fn new() -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("time");
        // The start of a 60 s window, so that the test stays in one.
        Manual(Arc::new(AtomicU64::new(now.as_secs() / 60 * 60 * 1000)))
    }
    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl WallClock for Manual {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// The dependency: fails while `failing` is set; counts its calls.
#[derive(Clone, Default)]
struct Dependency {
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
}

impl Dependency {
    fn service(
        &self,
    ) -> impl tower::Service<(), Response = http::Response<()>, Error = BoxError, Future: Send>
    + Clone
    + Send
    + 'static {
        let this = self.clone();
        tower::service_fn(move |()| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                if this.failing.load(Ordering::SeqCst) {
                    Err::<http::Response<()>, BoxError>("dependency down".into())
                } else {
                    Ok(http::Response::new(()))
                }
            }
        })
    }
}

/// A generous store time limit for the tests on the emulator, which a busy machine can keep
/// waiting: a call that failed open would not be counted.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder("payments")
        .failure_rate(0.5)
        .min_calls(6)
        .window(Window::Time {
            size: Duration::from_secs(60),
            buckets: std::num::NonZeroU32::new(1).expect("n"),
        })
        .open_for(Duration::from_secs(30))
        .open_backoff(2.0, Duration::from_secs(300))
        .half_open(1, 1)
        .build()
        .expect("config")
}

async fn call(layer: &SharedCircuitBreakerLayer, dependency: &Dependency) -> Result<(), BoxError> {
    layer
        .layer(dependency.service())
        .oneshot(())
        .await
        .map(|_| ())
}

fn is_open(result: &Result<(), BoxError>) -> bool {
    matches!(
        result
            .as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<Error>()),
        Some(Error::CircuitOpen { .. })
    )
}

#[tokio::test]
async fn environments_trip_and_recover_together() {
    let setup = client().await;
    let table = aws::table(&setup, "lift-breaker").await;
    let clock = Manual::new();
    let mut environments = Vec::new();
    for _ in 0..3 {
        environments.push(
            SharedCircuitBreakerLayer::new(client().await, &table, config())
                .cache_for(Duration::ZERO)
                .store_timeout(STORE_TIMEOUT)
                .with_clock(clock.clone()),
        );
    }
    let dependency = Dependency::default();
    dependency.failing.store(true, Ordering::SeqCst);

    // Two failures in each environment: 6 in all, none alone reaches min_calls.
    for environment in &environments {
        for _ in 0..2 {
            let result = call(environment, &dependency).await;
            assert!(result.is_err() && !is_open(&result), "{result:?}");
        }
    }
    assert_eq!(dependency.calls.load(Ordering::SeqCst), 6);
    for environment in &environments {
        assert_eq!(environment.state().await, Some(State::Open));
        let result = call(environment, &dependency).await;
        match result
            .as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<Error>())
        {
            Some(Error::CircuitOpen { retry_after, .. }) => {
                assert!(*retry_after <= Duration::from_secs(30) && *retry_after > Duration::ZERO)
            }
            other => panic!("expected CircuitOpen, got {other:?}"),
        }
    }
    assert_eq!(
        dependency.calls.load(Ordering::SeqCst),
        6,
        "open: not called"
    );

    // After open_for, one environment's successful probe closes it for all.
    clock.advance(Duration::from_secs(30));
    dependency.failing.store(false, Ordering::SeqCst);
    assert_eq!(environments[1].state().await, Some(State::HalfOpen));
    call(&environments[0], &dependency)
        .await
        .expect("probe passes");
    for environment in &environments {
        assert_eq!(environment.state().await, Some(State::Closed));
        call(environment, &dependency)
            .await
            .expect("closed again, and the old failures do not re-trip it");
    }

    // Trip again; a failed probe re-opens it for twice as long.
    dependency.failing.store(true, Ordering::SeqCst);
    for environment in environments.iter().cycle().take(6) {
        let _ = call(environment, &dependency).await;
    }
    assert_eq!(environments[2].state().await, Some(State::Open));
    clock.advance(Duration::from_secs(30));
    let probe = call(&environments[2], &dependency).await;
    assert!(probe.is_err() && !is_open(&probe));
    let result = call(&environments[0], &dependency).await;
    match result
        .as_ref()
        .err()
        .and_then(|e| e.downcast_ref::<Error>())
    {
        Some(Error::CircuitOpen { retry_after, .. }) => {
            assert!(
                *retry_after > Duration::from_secs(30),
                "{retry_after:?}: backoff doubled"
            )
        }
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
}

#[tokio::test]
async fn client_errors_do_not_trip_it() {
    let client = client().await;
    let table = aws::table(&client, "lift-breaker").await;
    let layer = SharedCircuitBreakerLayer::new(client, &table, config())
        .cache_for(Duration::ZERO)
        .store_timeout(STORE_TIMEOUT)
        .with_clock(Manual::new());
    let refusing = tower::service_fn(|()| async {
        Err::<http::Response<()>, BoxError>(Box::new(Error::bad_request("no")))
    });
    for _ in 0..10 {
        let _ = layer.layer(refusing).oneshot(()).await;
    }
    assert_eq!(layer.state().await, Some(State::Closed));
}

#[tokio::test]
async fn a_missing_store_fails_open() {
    let client = client().await;
    let layer = SharedCircuitBreakerLayer::new(client, "lift-no-such-breaker-table", config())
        .cache_for(Duration::ZERO);
    let dependency = Dependency::default();
    call(&layer, &dependency).await.expect("passes through");
    assert_eq!(dependency.calls.load(Ordering::SeqCst), 1);
    assert!(layer.store_failures() >= 1);
    assert_eq!(layer.state().await, None);
}

/// A store that never answers costs a call the breaker's store time limit (the state read;
/// a call whose state is unknown is not counted), then the call goes through: fail open.
/// Paused time: the elapsed time is tokio's, exact.
#[tokio::test(start_paused = true)]
async fn a_store_that_does_not_answer_costs_only_the_store_timeout() {
    let (silent, _listener) = aws::silent_client().await;
    let layer = SharedCircuitBreakerLayer::new(silent, "lift-silent", config())
        .cache_for(Duration::ZERO)
        .store_timeout(Duration::from_millis(100));
    let dependency = Dependency::default();
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(30), call(&layer, &dependency))
        .await
        .expect("the call must not wait for the SDK's retries")
        .expect("passes through");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_millis(200),
        "waited {waited:?}"
    );
    assert_eq!(dependency.calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.store_failures(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_environments_trip_it_exactly_once() {
    let setup = client().await;
    let table = aws::table(&setup, "lift-breaker").await;
    let clock = Manual::new();
    let dependency = Dependency::default();
    dependency.failing.store(true, Ordering::SeqCst);
    let mut tasks = Vec::new();
    for _environment in 0..3 {
        let layer = SharedCircuitBreakerLayer::new(client().await, &table, config())
            .cache_for(Duration::ZERO)
            .store_timeout(STORE_TIMEOUT)
            .with_clock(clock.clone());
        for _ in 0..4 {
            let (layer, dependency) = (layer.clone(), dependency.clone());
            tasks.push(tokio::spawn(async move { call(&layer, &dependency).await }));
        }
    }
    for task in tasks {
        let _ = task.await.expect("task");
    }
    let item = setup
        .get_item()
        .table_name(&table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("cb#payments".to_owned()),
        )
        .consistent_read(true)
        .send()
        .await
        .expect("read state")
        .item()
        .cloned()
        .expect("state item");
    assert_eq!(item["state"].as_s().expect("state"), "open");
    assert_eq!(
        item["version"].as_n().expect("version"),
        "1",
        "one conditional write won; the others lost the race"
    );
    let called = dependency.calls.load(Ordering::SeqCst);
    assert!(
        (6..=12).contains(&called),
        "{called} calls reached the dependency"
    );
}

/// The shared breaker trips on a failure rate only: a configuration without one could
/// never open it, and `try_new` refuses it (no call is made).
#[test]
fn a_shared_breaker_without_a_failure_rate_is_refused() {
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .build(),
    );
    let consecutive_only = CircuitBreakerConfig::builder("payments")
        .consecutive_failures(5)
        .no_failure_rate()
        .build()
        .expect("a valid local configuration");
    assert!(matches!(
        SharedCircuitBreakerLayer::try_new(client.clone(), "t", consecutive_only),
        Err(lift_middleware::ConfigError::OutOfRange {
            field: "failure_rate",
            ..
        })
    ));
    assert!(SharedCircuitBreakerLayer::try_new(client, "t", config()).is_ok());
}
