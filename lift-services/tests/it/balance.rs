//! Strategies and traffic policies, with fixed seeds: shares, spreading, load awareness,
//! region preference, canary splits, header and tenant routes, sticky keys.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use lift_services::balance::{
    LeastOutstanding, PowerOfTwoChoices, RegionLocal, Rng, RoundRobin, Strategy, WeightedRandom,
};
use lift_services::clock::TokioClock;
use lift_services::discovery::{Discovered, Discovery, DiscoveryConfig, Query};
use lift_services::policy::{CallInfo, Target, TrafficPolicy};
use lift_services::{Instance, MemoryRegistry, Registry};

use crate::support::{instance, lease};

const T0: u64 = 1_800_000_000_000;

async fn found(instances: Vec<Instance>, region: Option<&str>) -> Discovered {
    let registry = Arc::new(MemoryRegistry::new());
    for i in &instances {
        registry
            .register(i, &lease("env", T0, T0 + 3_600_000))
            .await
            .expect("register");
    }
    Discovery::with_config(
        registry,
        DiscoveryConfig::default(),
        Arc::new(TokioClock::starting_at(T0)),
    )
    .local_region(region.map(str::to_owned))
    .discover(&Query::new("payments"))
    .await
    .expect("found")
}

fn shares(
    found: &Discovered,
    picks: usize,
    mut pick: impl FnMut() -> usize,
) -> HashMap<String, f64> {
    let candidates = found.candidates();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..picks {
        *counts
            .entry(candidates.instance(pick()).id.to_string())
            .or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(id, n)| (id, n as f64 / picks as f64))
        .collect()
}

fn weighted(id: &str, weight: u32) -> Instance {
    let mut i = instance("payments", id);
    i.weight = weight;
    i
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let found = found(
        (0..4).map(|n| weighted(&format!("i{n}"), 100)).collect(),
        None,
    )
    .await;
    let rr = RoundRobin::new();
    let shares = shares(&found, 4000, || rr.pick(&found.candidates()).expect("pick"));
    assert_eq!(shares.len(), 4);
    assert!(
        shares.values().all(|s| (*s - 0.25).abs() < 1e-9),
        "{shares:?}"
    );
}

#[tokio::test]
async fn weighted_random_follows_weights() {
    let found = found(vec![weighted("light", 100), weighted("heavy", 300)], None).await;
    let strategy = WeightedRandom::with_seed(7);
    let shares = shares(&found, 10_000, || {
        strategy.pick(&found.candidates()).expect("pick")
    });
    assert!((shares["heavy"] - 0.75).abs() < 0.02, "{shares:?}");
}

/// With nothing in flight (an environment makes one call at a time), power of two choices
/// shares calls by weight, as the default balancer must for weights and `Degraded`'s half
/// weight to mean anything.
#[tokio::test]
async fn p2c_follows_weights_when_loads_are_equal() {
    let found = found(vec![weighted("light", 100), weighted("heavy", 300)], None).await;
    let strategy = PowerOfTwoChoices::with_seed(5);
    let shares = shares(&found, 10_000, || {
        strategy.pick(&found.candidates()).expect("pick")
    });
    assert!((shares["heavy"] - 0.75).abs() < 0.02, "{shares:?}");
}

#[tokio::test]
async fn least_outstanding_and_p2c_avoid_busy_instances() {
    let found = found(
        (0..3).map(|n| weighted(&format!("i{n}"), 100)).collect(),
        None,
    )
    .await;
    let candidates = found.candidates();
    let busy: Vec<_> = (0..candidates.len())
        .filter(|&i| candidates.instance(i).id.as_ref() != "i1")
        .flat_map(|i| (0..5).map(move |_| i))
        .map(|i| found.track(i).expect("tracked"))
        .collect();
    let least = LeastOutstanding::new();
    for _ in 0..50 {
        let i = least.pick(&candidates).expect("pick");
        assert_eq!(candidates.instance(i).id.as_ref(), "i1");
    }
    // p2c picks the idle one whenever it is one of the two drawn: about 2/3 of the time,
    // and never picks a busy one over it.
    let p2c = PowerOfTwoChoices::with_seed(11);
    let shares = shares(&found, 9000, || p2c.pick(&candidates).expect("pick"));
    assert!((shares["i1"] - 2.0 / 3.0).abs() < 0.02, "{shares:?}");
    drop(busy);
    assert!((0..candidates.len()).all(|i| candidates.outstanding(i) == 0));
}

#[tokio::test]
async fn region_local_prefers_the_callers_region() {
    let mut far = weighted("far", 100);
    far.region = "us-east-1".into();
    let near = weighted("near", 100); // eu-west-1
    let found_eu = found(vec![far.clone(), near], Some("eu-west-1")).await;
    let strategy = RegionLocal::new(RoundRobin::new());
    for _ in 0..20 {
        let i = strategy.pick(&found_eu.candidates()).expect("pick");
        assert_eq!(found_eu.candidates().instance(i).id.as_ref(), "near");
    }
    let found_ap = found(vec![far], Some("ap-south-1")).await;
    let i = strategy.pick(&found_ap.candidates()).expect("pick");
    assert_eq!(
        found_ap.candidates().instance(i).id.as_ref(),
        "far",
        "remote when no local one"
    );
}

fn versioned(id: &str, version: &str) -> Instance {
    let mut i = weighted(id, 100);
    i.version = Some(version.into());
    i
}

#[tokio::test]
async fn a_canary_gets_its_share_within_two_points() {
    let found = found(
        vec![
            versioned("v1-a", "1"),
            versioned("v1-b", "1"),
            versioned("v1-c", "1"),
            versioned("v2-a", "2"),
        ],
        None,
    )
    .await;
    let policy = TrafficPolicy::new().split("1", 90).split("2", 10);
    let rng = Rng::with_seed(2024);
    let strategy = RoundRobin::new();
    let candidates = found.candidates();
    let mut to_v2 = 0;
    for _ in 0..10_000 {
        let i = policy
            .pick(&candidates, CallInfo::default(), &strategy, &rng)
            .expect("pick");
        if candidates.instance(i).version.as_deref() == Some("2") {
            to_v2 += 1;
        }
    }
    let share = f64::from(to_v2) / 10_000.0;
    assert!((share - 0.10).abs() <= 0.02, "canary share {share}");
}

#[tokio::test]
async fn header_and_tenant_routes_and_sticky_keys() {
    let mut beta = versioned("v2-a", "2");
    beta.tags = vec!["beta".into()];
    let found = found(
        vec![versioned("v1-a", "1"), versioned("v1-b", "1"), beta],
        None,
    )
    .await;
    let policy = TrafficPolicy::new()
        .split("1", 100)
        .route_header("X-Beta", "yes", Target::Version("2".into()))
        .route_tenant("acme", Target::Tag("beta".into()))
        .sticky_header("x-session");
    let rng = Rng::with_seed(1);
    let strategy = RoundRobin::new();
    let candidates = found.candidates();
    let id = |call: CallInfo<'_>| {
        let i = policy
            .pick(&candidates, call, &strategy, &rng)
            .expect("pick");
        candidates.instance(i).id.to_string()
    };

    let mut beta_headers = HeaderMap::new();
    beta_headers.insert("x-beta", HeaderValue::from_static("yes"));
    let no_headers = HeaderMap::new();
    for _ in 0..20 {
        assert_eq!(
            id(CallInfo {
                headers: Some(&beta_headers),
                tenant: None
            }),
            "v2-a"
        );
        assert_eq!(
            id(CallInfo {
                headers: Some(&no_headers),
                tenant: Some("acme")
            }),
            "v2-a"
        );
        assert_ne!(
            id(CallInfo {
                headers: Some(&no_headers),
                tenant: Some("other")
            }),
            "v2-a"
        );
    }

    // The same sticky key lands on the same instance; different keys spread.
    let mut seen = std::collections::HashSet::new();
    for key in 0..50 {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-session",
            HeaderValue::from_str(&format!("s-{key}")).expect("value"),
        );
        let first = id(CallInfo {
            headers: Some(&headers),
            tenant: None,
        });
        for _ in 0..5 {
            assert_eq!(
                id(CallInfo {
                    headers: Some(&headers),
                    tenant: None
                }),
                first
            );
        }
        seen.insert(first);
    }
    assert_eq!(
        seen.len(),
        2,
        "both v1 instances take sticky keys: {seen:?}"
    );
}
