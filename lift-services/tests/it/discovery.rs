//! Discovery: filters, distinct errors, the cache (zero registry reads when warm, refresh
//! in the background, serve-stale), expiry read in code, self-preservation, ejection,
//! tombstones and tenant scope. The registry-facing cases run on DynamoDB (the emulator)
//! and in memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lift_services::clock::TokioClock;
use lift_services::discovery::{Discovery, DiscoveryConfig, DiscoveryError, HealthFilter, Query};
use lift_services::{Health, Instance, MemoryRegistry, Registry, RegistryError};

use crate::support::{Counting, dynamo_registry, instance, lease};

const T0: u64 = 1_800_000_000_000;

fn discovery(registry: Arc<dyn Registry>) -> Discovery {
    Discovery::with_config(
        registry,
        DiscoveryConfig::default()
            .ttl(Duration::from_secs(30))
            .max_stale(Duration::from_secs(300))
            .eject_after(3),
        Arc::new(TokioClock::starting_at(T0)),
    )
}

fn ids<'a>(found: impl Iterator<Item = &'a Instance>) -> Vec<String> {
    let mut ids: Vec<String> = found.map(|i| i.id.to_string()).collect();
    ids.sort();
    ids
}

async fn put(registry: &dyn Registry, instance: Instance, expires: u64) {
    registry
        .register(&instance, &lease("env", T0 - 1000, expires))
        .await
        .expect("register");
}

/// A counting registry holding `payments`' instance `a` (its lease running for ten hours),
/// and a discovery over it.
async fn counted_payments() -> (Arc<Counting<MemoryRegistry>>, Discovery) {
    let registry = Arc::new(Counting::new(MemoryRegistry::new()));
    put(
        registry.as_ref(),
        instance("payments", "a"),
        T0 + 36_000_000,
    )
    .await;
    let discovery = discovery(registry.clone());
    (registry, discovery)
}

/// With nothing cached, a failing registry is asked once per service and TTL: callers
/// queued behind the refresh that failed, and those that come within the TTL, get the
/// failure without a query of their own (each used to query in turn, one after another).
#[tokio::test(start_paused = true)]
async fn a_failed_first_refresh_is_not_repeated_within_the_ttl() {
    let (registry, discovery) = counted_payments().await;
    registry.failing.store(true, Ordering::SeqCst);
    registry.slow.store(true, Ordering::SeqCst);
    let query = Query::new("payments");
    let calls = (0..8).map(|_| discovery.discover(&query));
    let results = futures_util::future::join_all(calls).await;
    let first_seen = results
        .iter()
        .filter(|r| matches!(r, Err(DiscoveryError::Registry { .. })))
        .count();
    let queued = results
        .iter()
        .filter(|r| matches!(r, Err(DiscoveryError::RegistryFailedRecently { .. })))
        .count();
    assert_eq!((first_seen, queued), (1, 7), "{results:?}");
    assert_eq!(registry.queries.load(Ordering::SeqCst), 1, "one query");

    tokio::time::advance(Duration::from_secs(29)).await;
    let within = discovery.discover(&query).await;
    assert!(
        matches!(within, Err(DiscoveryError::RegistryFailedRecently { .. })),
        "{within:?}"
    );
    assert_eq!(
        registry.queries.load(Ordering::SeqCst),
        1,
        "not asked again"
    );

    tokio::time::advance(Duration::from_secs(2)).await;
    registry.failing.store(false, Ordering::SeqCst);
    let found = discovery
        .discover(&query)
        .await
        .expect("asked again after the TTL");
    assert_eq!(ids(found.instances()), ["a"]);
    assert_eq!(registry.queries.load(Ordering::SeqCst), 2);
}

/// Callers queued behind an in-line refresh that failed take the stale snapshot, as the
/// warm path does: one query of a failing registry, not one per caller in turn.
#[tokio::test(start_paused = true)]
async fn callers_queued_behind_a_failed_refresh_take_the_stale_snapshot() {
    let (registry, discovery) = counted_payments().await;
    discovery
        .discover(&Query::new("payments"))
        .await
        .expect("first");
    assert_eq!(registry.queries.load(Ordering::SeqCst), 1);
    // Past the stale limit, with a registry that fails after a while.
    tokio::time::advance(Duration::from_secs(301)).await;
    registry.failing.store(true, Ordering::SeqCst);
    registry.slow.store(true, Ordering::SeqCst);
    let query = Query::new("payments");
    let calls = (0..8).map(|_| discovery.discover(&query));
    for result in futures_util::future::join_all(calls).await {
        let found = result.expect("the stale snapshot");
        assert_eq!(ids(found.instances()), ["a"]);
    }
    assert_eq!(registry.queries.load(Ordering::SeqCst), 2, "one more query");
}

#[tokio::test(start_paused = true)]
async fn the_warm_path_reads_no_registry_and_refreshes_in_the_background() {
    let registry = Arc::new(Counting::new(MemoryRegistry::new()));
    put(registry.as_ref(), instance("payments", "a"), T0 + 3_600_000).await;
    let discovery = discovery(registry.clone());
    for _ in 0..1000 {
        discovery
            .discover(&Query::new("payments"))
            .await
            .expect("found");
    }
    assert_eq!(
        registry.queries.load(Ordering::SeqCst),
        1,
        "one query, then the cache"
    );

    // Past the TTL: the stale snapshot answers at once and one refresh runs behind it.
    put(registry.as_ref(), instance("payments", "b"), T0 + 3_600_000).await;
    tokio::time::advance(Duration::from_secs(31)).await;
    let stale = discovery
        .discover(&Query::new("payments"))
        .await
        .expect("found");
    assert_eq!(stale.len(), 1, "served stale while revalidating");
    for _ in 0..100 {
        if discovery
            .discover(&Query::new("payments"))
            .await
            .expect("found")
            .len()
            == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        discovery
            .discover(&Query::new("payments"))
            .await
            .expect("found")
            .len(),
        2
    );
    assert_eq!(
        registry.queries.load(Ordering::SeqCst),
        2,
        "one background refresh"
    );
}

#[tokio::test(start_paused = true)]
async fn a_registry_error_serves_the_stale_set_and_a_cold_one_is_an_error() {
    let registry = Arc::new(Counting::new(MemoryRegistry::new()));
    put(registry.as_ref(), instance("payments", "a"), T0 + 3_600_000).await;
    let discovery = discovery(registry.clone());
    discovery
        .discover(&Query::new("payments"))
        .await
        .expect("found");
    registry.failing.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(301)).await;
    let stale = discovery
        .discover(&Query::new("payments"))
        .await
        .expect("stale served");
    assert_eq!(ids(stale.instances()), ["a"]);
    assert_eq!(registry.queries.load(Ordering::SeqCst), 2);
    // The registry just failed: the next calls within a TTL are served stale without
    // asking it again (nor waiting for it), then one more try.
    for _ in 0..50 {
        discovery
            .discover(&Query::new("payments"))
            .await
            .expect("stale served");
    }
    assert_eq!(
        registry.queries.load(Ordering::SeqCst),
        2,
        "no query per call"
    );
    tokio::time::advance(Duration::from_secs(31)).await;
    discovery
        .discover(&Query::new("payments"))
        .await
        .expect("stale served");
    assert_eq!(
        registry.queries.load(Ordering::SeqCst),
        3,
        "tried again after a TTL"
    );
    let cold = discovery.discover(&Query::new("orders")).await;
    assert!(
        matches!(cold, Err(DiscoveryError::Registry { .. })),
        "{cold:?}"
    );
    registry.failing.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(31)).await;
    discovery
        .discover(&Query::new("payments"))
        .await
        .expect("fresh");
    assert_eq!(
        registry.queries.load(Ordering::SeqCst),
        5,
        "refreshed once recovered"
    );
}

#[tokio::test(start_paused = true)]
async fn warm_up_fills_the_cache_before_the_first_call() {
    let registry = Arc::new(Counting::new(MemoryRegistry::new()));
    put(registry.as_ref(), instance("payments", "a"), T0 + 3_600_000).await;
    put(registry.as_ref(), instance("orders", "o"), T0 + 3_600_000).await;
    let discovery = discovery(registry.clone());
    discovery.warm_up(&["payments", "orders"]).await;
    assert_eq!(registry.queries.load(Ordering::SeqCst), 2);
    discovery
        .discover(&Query::new("payments"))
        .await
        .expect("found");
    discovery
        .discover(&Query::new("orders"))
        .await
        .expect("found");
    assert_eq!(
        registry.queries.load(Ordering::SeqCst),
        2,
        "no read after warm-up"
    );
}

#[tokio::test(start_paused = true)]
async fn filters_select_by_version_alias_tags_and_region() {
    let registry = Arc::new(MemoryRegistry::new());
    let mut a = instance("payments", "a");
    a.version = Some("1".into());
    a.tags = vec!["pci".into(), "gpu".into()];
    let mut b = instance("payments", "b");
    b.version = Some("2".into());
    b.alias = Some("canary".into());
    b.region = "us-east-1".into();
    for i in [a, b] {
        put(registry.as_ref(), i, T0 + 3_600_000).await;
    }
    let discovery = discovery(registry);
    let found = |q: Query<'static>| {
        let discovery = discovery.clone();
        async move { ids(discovery.discover(&q).await.expect("found").instances()) }
    };
    assert_eq!(found(Query::new("payments")).await, ["a", "b"]);
    assert_eq!(found(Query::new("payments").version("2")).await, ["b"]);
    assert_eq!(found(Query::new("payments").alias("canary")).await, ["b"]);
    assert_eq!(
        found(Query::new("payments").tags(&["pci", "gpu"])).await,
        ["a"]
    );
    assert_eq!(
        found(Query::new("payments").region("us-east-1")).await,
        ["b"]
    );
    let none = discovery
        .discover(&Query::new("payments").version("9"))
        .await;
    assert!(
        matches!(
            none,
            Err(DiscoveryError::NoHealthyInstance { registered: 2, .. })
        ),
        "{none:?}"
    );
}

/// Concurrent first calls on a cold cache make one registry query between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_discoveries_share_one_refresh() {
    let registry = Arc::new(Counting::new(MemoryRegistry::new()));
    put(registry.as_ref(), instance("payments", "a"), u64::MAX / 2).await;
    registry.slow.store(true, Ordering::SeqCst);
    let discovery = discovery(registry.clone());
    let calls = (0..64).map(|_| {
        let discovery = discovery.clone();
        tokio::spawn(async move {
            discovery
                .discover(&Query::new("payments"))
                .await
                .map(|found| found.len())
        })
    });
    for call in futures_util::future::join_all(calls).await {
        assert_eq!(call.expect("joined").expect("found"), 1);
    }
    assert_eq!(registry.queries.load(Ordering::SeqCst), 1);
}

/// The same query asked again over one snapshot is answered from memory; the answer
/// still changes the moment a lease ends, with no refresh in between.
#[tokio::test(start_paused = true)]
async fn a_lease_that_ends_between_refreshes_leaves_the_next_answer() {
    let registry = Arc::new(Counting::new(MemoryRegistry::new()));
    put(registry.as_ref(), instance("payments", "a"), T0 + 10_000).await;
    put(registry.as_ref(), instance("payments", "b"), T0 + 3_600_000).await;
    put(registry.as_ref(), instance("payments", "c"), T0 + 3_600_000).await;
    let discovery = discovery(registry.clone());
    let query = Query::new("payments");
    for _ in 0..3 {
        let found = discovery.discover(&query).await.expect("found");
        assert_eq!(ids(found.instances()), ["a", "b", "c"]);
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    let found = discovery.discover(&query).await.expect("found");
    assert_eq!(ids(found.instances()), ["b", "c"], "a's lease ended");
    assert_eq!(
        registry.queries.load(Ordering::SeqCst),
        1,
        "within the TTL: no refresh"
    );
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_until_the_next_refresh() {
    let registry = Arc::new(MemoryRegistry::new());
    for id in ["a", "b"] {
        put(registry.as_ref(), instance("payments", id), T0 + 3_600_000).await;
    }
    let discovery = discovery(registry);
    let found = discovery
        .discover(&Query::new("payments"))
        .await
        .expect("found");
    discovery.report(&found, "a", false);
    discovery.report(&found, "a", false);
    discovery.report(&found, "a", true);
    discovery.report(&found, "a", false);
    discovery.report(&found, "a", false);
    assert_eq!(
        ids(discovery
            .discover(&Query::new("payments"))
            .await
            .expect("found")
            .instances()),
        ["a", "b"],
        "a success resets the count"
    );
    discovery.report(&found, "a", false);
    assert_eq!(
        ids(discovery
            .discover(&Query::new("payments"))
            .await
            .expect("found")
            .instances()),
        ["b"]
    );
    discovery.refresh("payments").await.expect("refresh");
    assert_eq!(
        ids(discovery
            .discover(&Query::new("payments"))
            .await
            .expect("found")
            .instances()),
        ["a", "b"],
        "back after the refresh"
    );
}

async fn unknown_and_unhealthy_are_distinct_errors(registry: Arc<dyn Registry>) {
    let discovery = discovery(registry.clone());
    let unknown = discovery.discover(&Query::new("nobody")).await;
    assert!(
        matches!(unknown, Err(DiscoveryError::UnknownService { .. })),
        "{unknown:?}"
    );

    let a = instance("payments", "a");
    put(registry.as_ref(), a.clone(), T0 + 3_600_000).await;
    registry
        .set_health("payments", &a.id, Some(Health::Unhealthy))
        .await
        .expect("set");
    let sick = discovery.discover(&Query::new("payments")).await;
    assert!(
        matches!(sick, Err(DiscoveryError::NoHealthyInstance { .. })),
        "{sick:?}"
    );
    let any = discovery
        .discover(&Query::new("payments").health(HealthFilter::HealthyElseAll))
        .await
        .expect("healthy else all");
    assert_eq!(ids(any.instances()), ["a"]);
}

async fn expired_and_unhealthy_instances_leave_discovery(registry: Arc<dyn Registry>) {
    // a: live; b: its lease ended; c: live but failing; d: live.
    put(registry.as_ref(), instance("payments", "a"), T0 + 3_600_000).await;
    put(registry.as_ref(), instance("payments", "b"), T0 - 1).await;
    let c = instance("payments", "c");
    let mut failing = lease("env", T0 - 1000, T0 + 3_600_000);
    failing.report.error_rate = 0.8;
    registry.register(&c, &failing).await.expect("register");
    put(registry.as_ref(), instance("payments", "d"), T0 + 3_600_000).await;
    let discovery = discovery(registry.clone());
    let found = discovery
        .discover(&Query::new("payments"))
        .await
        .expect("found");
    assert_eq!(ids(found.instances()), ["a", "d"]);

    // Expiry is read at call time: once a's and d's leases end too, most look expired at
    // once, and self-preservation keeps the last known set — but not b, whose lease ended
    // an hour before theirs: it was gone before they lapsed.
    tokio::time::advance(Duration::from_millis(3_600_000)).await;
    let preserved = discovery
        .discover(&Query::new("payments"))
        .await
        .expect("kept");
    assert_eq!(ids(preserved.instances()), ["a", "d"]);
}

/// Instances retired days ago (still in the table until their TTL) do not make a live
/// fleet look mostly expired: self-preservation stays off and they are not served.
async fn long_retired_instances_do_not_trigger_self_preservation(registry: Arc<dyn Registry>) {
    put(registry.as_ref(), instance("payments", "a"), T0 + 3_600_000).await;
    let two_days = 2 * 24 * 3_600_000;
    put(registry.as_ref(), instance("payments", "b"), T0 - two_days).await;
    put(registry.as_ref(), instance("payments", "c"), T0 - two_days).await;
    let found = discovery(registry)
        .discover(&Query::new("payments"))
        .await
        .expect("found");
    assert_eq!(ids(found.instances()), ["a"]);
}

async fn a_deregistered_instance_leaves_and_stays_gone(registry: Arc<dyn Registry>) {
    for id in ["a", "b"] {
        put(registry.as_ref(), instance("payments", id), T0 + 3_600_000).await;
    }
    registry
        .deregister("payments", "a", T0, T0 / 1000)
        .await
        .expect("deregister");
    // The environment of `a` started before the deregistration and keeps renewing.
    let renewal = registry
        .renew(
            "payments",
            "a",
            &lease("env", T0 - 1000, T0 + 7_200_000),
            &[],
        )
        .await;
    assert!(matches!(renewal, Err(RegistryError::Deregistered { .. })));
    let discovery = discovery(registry.clone());
    for _ in 0..3 {
        let found = discovery
            .discover(&Query::new("payments"))
            .await
            .expect("found");
        assert_eq!(ids(found.instances()), ["b"]);
        discovery.refresh("payments").await.expect("refresh");
    }
    registry
        .deregister("payments", "b", T0, T0 / 1000)
        .await
        .expect("deregister");
    discovery.refresh("payments").await.expect("refresh");
    let gone = discovery.discover(&Query::new("payments")).await;
    assert!(
        matches!(gone, Err(DiscoveryError::UnknownService { .. })),
        "{gone:?}"
    );
}

async fn tenant_scoped_discovery_never_crosses_tenants(registry: Arc<dyn Registry>) {
    let tenants = ["t0", "t1", "t2", "t3"];
    for (n, tenant) in tenants.iter().enumerate() {
        let mut scoped = instance("payments", &format!("scoped-{n}"));
        scoped.tenant = Some((*tenant).to_owned());
        put(registry.as_ref(), scoped, T0 + 3_600_000).await;
    }
    put(
        registry.as_ref(),
        instance("payments", "shared"),
        T0 + 3_600_000,
    )
    .await;
    let discovery = discovery(registry);
    let mut rng = fastrand::Rng::with_seed(42);
    for _ in 0..1000 {
        let tenant = tenants[rng.usize(..tenants.len())];
        let found = discovery
            .discover(&Query::new("payments").tenant(tenant))
            .await
            .expect("found");
        assert_eq!(found.len(), 2);
        for instance in found.instances() {
            assert!(
                instance.tenant.is_none() || instance.tenant.as_deref() == Some(tenant),
                "{tenant} got {instance:?}"
            );
        }
    }
    let untenanted = discovery
        .discover(&Query::new("payments"))
        .await
        .expect("found");
    assert_eq!(ids(untenanted.instances()), ["shared"]);
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    super::$name(std::sync::Arc::new(super::MemoryRegistry::new())).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(std::sync::Arc::new(crate::support::dynamo_registry().await)).await;
                }
            )*
        }
    };
}

on_both!(
    unknown_and_unhealthy_are_distinct_errors,
    a_deregistered_instance_leaves_and_stays_gone,
    tenant_scoped_discovery_never_crosses_tenants,
    long_retired_instances_do_not_trigger_self_preservation,
);

#[tokio::test(start_paused = true)]
async fn memory_expired_and_unhealthy_instances_leave_discovery() {
    expired_and_unhealthy_instances_leave_discovery(Arc::new(MemoryRegistry::new())).await;
}

#[tokio::test]
async fn dynamodb_expired_and_unhealthy_instances_leave_discovery() {
    let registry: Arc<dyn Registry> = Arc::new(dynamo_registry().await);
    put(registry.as_ref(), instance("payments", "a"), T0 + 3_600_000).await;
    put(registry.as_ref(), instance("payments", "b"), T0 - 1).await;
    let c = instance("payments", "c");
    let mut failing = lease("env", T0 - 1000, T0 + 3_600_000);
    failing.report.error_rate = 0.8;
    registry.register(&c, &failing).await.expect("register");
    put(registry.as_ref(), instance("payments", "d"), T0 + 3_600_000).await;
    let found = discovery(registry)
        .discover(&Query::new("payments"))
        .await
        .expect("found");
    assert_eq!(ids(found.instances()), ["a", "d"]);
}

#[tokio::test(start_paused = true)]
async fn tag_filters_hold_past_64_distinct_tags() {
    let registry = Arc::new(MemoryRegistry::new());
    for n in 0..70 {
        let mut i = instance("payments", &format!("i{n:02}"));
        i.tags = vec![format!("tag-{n}"), "common".to_owned()];
        put(registry.as_ref(), i, T0 + 3_600_000).await;
    }
    let discovery = discovery(registry);
    let found = |tags: &'static [&'static str]| {
        let discovery = discovery.clone();
        async move {
            discovery
                .discover(&Query::new("payments").tags(tags))
                .await
                .map(|f| ids(f.instances()))
        }
    };
    assert_eq!(found(&["tag-69"]).await.expect("found"), ["i69"]);
    assert_eq!(found(&["tag-3", "common"]).await.expect("found"), ["i03"]);
    assert_eq!(found(&["common"]).await.expect("found").len(), 70);
    assert!(found(&["tag-3", "tag-4"]).await.is_err());
    assert!(found(&["nope"]).await.is_err());
}
