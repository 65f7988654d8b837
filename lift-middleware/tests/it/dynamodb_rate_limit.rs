//! The distributed rate limit against DynamoDB on the local emulator (real SDK client, real
//! wire protocol): several limiter instances, as separate Lambda environments would be,
//! share one table under concurrency.
//!
//! `scripts/test.sh` starts the emulator and exports `AWS_ENDPOINT_URL`; without it these
//! tests fail loudly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lift_core::{BoxError, Error};
use lift_middleware::classify::WallClock;
use lift_middleware::rate_limit::dynamodb::{
    Admission, Algorithm, DistributedRateLimitConfig, DistributedRateLimitLayer, FailureMode,
};
use tower::{Layer, ServiceExt};

use crate::aws;
use aws::{client, table};

async fn served(_: String) -> Result<(), BoxError> {
    Ok(())
}

/// A wall clock stopped at one instant, so a test never straddles two windows.
#[derive(Clone, Copy)]
struct Frozen(SystemTime);

impl WallClock for Frozen {
    fn now(&self) -> SystemTime {
        self.0
    }
}

fn frozen() -> Frozen {
    // The middle of a 60 s window.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("time");
    Frozen(UNIX_EPOCH + Duration::from_secs(now.as_secs() / 60 * 60 + 30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_limiters_never_admit_more_than_the_limit() {
    let setup = client().await;
    let table = table(&setup, "lift-rate-limit").await;
    // A generous store time limit: 75 concurrent calls can keep a busy emulator waiting,
    // and a call that fails open would be admitted over the limit.
    let config = DistributedRateLimitConfig::builder(&table, 20, Duration::from_secs(60))
        .store_timeout(Duration::from_secs(10))
        .build()
        .expect("config");
    let clock = frozen();
    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _environment in 0..3 {
        let layer = DistributedRateLimitLayer::builder(client().await, config.clone())
            .keyed(|key: &String| Some(key.clone()))
            .clock(clock)
            .build();
        for _ in 0..25 {
            let service = layer.layer(tower::service_fn(served));
            let (admitted, refused) = (admitted.clone(), refused.clone());
            tasks.push(tokio::spawn(async move {
                match service.oneshot("tenant-a".to_owned()).await {
                    Ok(()) => admitted.fetch_add(1, Ordering::SeqCst),
                    Err(error) => {
                        match error.downcast_ref::<Error>() {
                            Some(Error::RateLimited {
                                limit: 20,
                                remaining: 0,
                                retry_after,
                                ..
                            }) => assert!(*retry_after <= Duration::from_secs(30)),
                            other => panic!("unexpected error {other:?}"),
                        }
                        refused.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }));
        }
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(
        admitted.load(Ordering::SeqCst),
        20,
        "exactly the limit admitted"
    );
    assert_eq!(refused.load(Ordering::SeqCst), 55);
}

#[tokio::test]
async fn keys_and_windows_are_counted_apart() {
    let client = client().await;
    let table = table(&client, "lift-rate-keys").await;
    let config = DistributedRateLimitConfig::builder(&table, 2, Duration::from_secs(60))
        .build()
        .expect("config");
    let clock = frozen();
    let layer = DistributedRateLimitLayer::builder(client.clone(), config.clone())
        .clock(clock)
        .build();
    assert_eq!(layer.admit("a").await, Admission::Admitted { remaining: 1 });
    assert_eq!(layer.admit("a").await, Admission::Admitted { remaining: 0 });
    assert_eq!(layer.admit("a").await, Admission::Refused);
    assert_eq!(layer.admit("b").await, Admission::Admitted { remaining: 1 });

    let next_window = DistributedRateLimitLayer::builder(client, config)
        .clock(Frozen(clock.0 + Duration::from_secs(60)))
        .build();
    assert_eq!(
        next_window.admit("a").await,
        Admission::Admitted { remaining: 1 },
        "a new window starts from zero"
    );
}

#[tokio::test]
async fn a_failing_store_fails_open_or_closed_as_configured() {
    let client = client().await;
    let missing = "lift-no-such-table";
    let service = || tower::service_fn(|_: ()| async { Ok::<_, BoxError>("served") });

    let open = DistributedRateLimitLayer::builder(
        client.clone(),
        DistributedRateLimitConfig::builder(missing, 5, Duration::from_secs(60))
            .failure_mode(FailureMode::Open)
            .build()
            .expect("config"),
    )
    .build();
    assert_eq!(
        open.layer(service()).oneshot(()).await.expect("admitted"),
        "served"
    );
    assert_eq!(open.store_failures(), 1);

    let closed = DistributedRateLimitLayer::builder(
        client,
        DistributedRateLimitConfig::builder(missing, 5, Duration::from_secs(60))
            .failure_mode(FailureMode::Closed)
            .build()
            .expect("config"),
    )
    .build();
    let error = closed
        .layer(service())
        .oneshot(())
        .await
        .expect_err("refused");
    assert!(matches!(
        error.downcast_ref::<Error>(),
        Some(Error::Overloaded { .. })
    ));
    assert_eq!(closed.store_failures(), 1);
}

#[test]
fn invalid_limits_are_refused_at_build() {
    assert!(
        DistributedRateLimitConfig::builder("t", 0, Duration::from_secs(60))
            .build()
            .is_err()
    );
    assert!(
        DistributedRateLimitConfig::builder("t", 5, Duration::from_millis(10))
            .build()
            .is_err()
    );
    assert!(
        DistributedRateLimitConfig::builder("", 5, Duration::from_secs(1))
            .build()
            .is_err()
    );
    // Windows are whole seconds: 1.5 s would be counted per second.
    assert!(
        DistributedRateLimitConfig::builder("t", 5, Duration::from_millis(1500))
            .build()
            .is_err()
    );
    DistributedRateLimitConfig::builder("t", 5, Duration::from_secs(2))
        .build()
        .expect("whole seconds");
}

#[tokio::test]
async fn the_sliding_window_carries_the_previous_window_over() {
    let client = client().await;
    let table = table(&client, "lift-rate-sliding").await;
    let config = DistributedRateLimitConfig::builder(&table, 10, Duration::from_secs(60))
        .algorithm(Algorithm::SlidingWindow)
        .build()
        .expect("config");
    let start = {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("time");
        UNIX_EPOCH + Duration::from_secs(now.as_secs() / 60 * 60)
    };
    let at = |offset: u64| {
        DistributedRateLimitLayer::builder(client.clone(), config.clone())
            .clock(Frozen(start + Duration::from_secs(offset)))
            .build()
    };
    // The first window fills up.
    let first = at(50);
    for _ in 0..10 {
        assert!(matches!(first.admit("k").await, Admission::Admitted { .. }));
    }
    assert_eq!(first.admit("k").await, Admission::Refused);

    // 15 s into the next window, 75% of the previous one still counts: 10 - ceil(7.5) = 2.
    let early = at(75);
    assert_eq!(early.admit("k").await, Admission::Admitted { remaining: 1 });
    assert_eq!(early.admit("k").await, Admission::Admitted { remaining: 0 });
    assert_eq!(early.admit("k").await, Admission::Refused);

    // 45 s in, 25% counts: 10 - ceil(2.5) = 7 in all, 2 of them already taken.
    let late = at(105);
    for left in (0..5).rev() {
        assert_eq!(
            late.admit("k").await,
            Admission::Admitted { remaining: left }
        );
    }
    assert_eq!(late.admit("k").await, Admission::Refused);
}

/// Environments whose clocks straddle a window boundary, as Lambda environments started at
/// different times do: the first one's burst lands just before the boundary and the
/// others' first calls just after, while the first one's increments are still in flight.
/// Within any window's length the sliding estimate (this window's count plus the covered
/// share of the previous one's) admits at most the limit, so all of them together admit
/// at most 20.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sliding_window_holds_when_environments_race_the_boundary() {
    let setup = client().await;
    let table = table(&setup, "lift-rate-race").await;
    // A generous store time limit: 80 concurrent calls can keep a busy emulator waiting.
    let config = DistributedRateLimitConfig::builder(&table, 20, Duration::from_secs(10))
        .algorithm(Algorithm::SlidingWindow)
        .store_timeout(Duration::from_secs(10))
        .build()
        .expect("config");
    let boundary = {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("time");
        UNIX_EPOCH + Duration::from_secs(now.as_secs() / 10 * 10 + 10)
    };
    for environments in 2..=4 {
        for trial in 0..3 {
            let key = format!("k-{environments}-{trial}");
            let mut tasks = Vec::new();
            for environment in 0..environments {
                // The first environment 10 ms before the boundary, the others 10 ms after.
                let clock = if environment == 0 {
                    Frozen(boundary - Duration::from_millis(10))
                } else {
                    Frozen(boundary + Duration::from_millis(10))
                };
                let layer = DistributedRateLimitLayer::builder(client().await, config.clone())
                    .clock(clock)
                    .build();
                for _ in 0..20 {
                    let (layer, key) = (layer.clone(), key.clone());
                    tasks.push(tokio::spawn(async move { layer.admit(&key).await }));
                }
            }
            let mut admitted = 0;
            for task in tasks {
                match task.await.expect("task") {
                    Admission::Admitted { .. } => admitted += 1,
                    Admission::Refused => {}
                    other => panic!("the store failed: {other:?}"),
                }
            }
            assert!(
                admitted <= 20,
                "{environments} environments, trial {trial}: {admitted} admitted against a limit of 20"
            );
            assert!(admitted >= 1, "nothing admitted at all");
        }
    }
}

/// A store that accepts the connection and never answers costs a call the store's time
/// limit, not the SDK's retries: fail open lets the call go on, fail closed refuses it.
/// Paused time: the elapsed time is tokio's, exact.
#[tokio::test(start_paused = true)]
async fn a_store_that_does_not_answer_costs_only_the_store_timeout() {
    let (silent, _listener) = aws::silent_client().await;
    let service = || tower::service_fn(|_: ()| async { Ok::<_, BoxError>("served") });
    for (mode, algorithm) in [
        (FailureMode::Open, Algorithm::FixedWindow),
        (FailureMode::Open, Algorithm::SlidingWindow),
        (FailureMode::Closed, Algorithm::FixedWindow),
    ] {
        let layer = DistributedRateLimitLayer::builder(
            silent.clone(),
            DistributedRateLimitConfig::builder("lift-silent", 5, Duration::from_secs(60))
                .failure_mode(mode)
                .algorithm(algorithm)
                .store_timeout(Duration::from_millis(200))
                .build()
                .expect("config"),
        )
        .build();
        let started = tokio::time::Instant::now();
        let outcome =
            tokio::time::timeout(Duration::from_secs(30), layer.layer(service()).oneshot(()))
                .await
                .expect("the call must not wait for the SDK's retries");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_millis(300),
            "{mode:?}: waited {waited:?}"
        );
        match mode {
            FailureMode::Open => assert_eq!(outcome.expect("admitted"), "served"),
            FailureMode::Closed => assert!(matches!(
                outcome.expect_err("refused").downcast_ref::<Error>(),
                Some(Error::Overloaded { .. })
            )),
            other => panic!("{other:?}"),
        }
        assert_eq!(layer.store_failures(), 1);
    }
}
