//! Discovery and balancing costs over 100 instances.
//!
//! - `discover_cached`: a discovery answered from a warm cache, with tenant, version and
//!   tag filters and healthy-only (no registry read).
//! - `pick/{round_robin,weighted,p2c,least_outstanding}`: one pick among 100 candidates.
//!   Each pick's heap allocations are counted with a counting global allocator and printed
//!   (and must be zero).
//! - `client_overhead/{direct,client}`: a call to an in-process target that answers at
//!   once, straight through the transport and through the service client (discovery, pick,
//!   circuit breaker, timeout, failover bookkeeping); both build the same request.
//!
//! `cargo bench -p lift-services --bench discovery [-- <filter>]`

use std::alloc::System;
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::HeaderMap;
use lift_core::BoxError;
use lift_services::balance::{
    LeastOutstanding, PowerOfTwoChoices, RoundRobin, Strategy, WeightedRandom,
};
use lift_services::client::ServiceClient;
use lift_services::discovery::{Discovered, Discovery, Query};
use lift_services::transport::{Outbound, ServiceRequest, ServiceResponse, Transport};
use lift_services::{Endpoints, EnvLease, EnvReport, Instance, MemoryRegistry, Registry};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const TAGS: &[&str] = &["pci"];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// 100 instances: versions 1 and 2, half tagged `pci`, and (with `tenants`) a fifth
/// scoped to tenants.
async fn registry(tenants: bool) -> Arc<MemoryRegistry> {
    let registry = Arc::new(MemoryRegistry::new());
    for n in 0..100 {
        let mut instance = Instance::new(
            "payments",
            format!("payments-{n}"),
            if n % 3 == 0 { "us-east-1" } else { "eu-west-1" },
            Endpoints::lambda(format!(
                "arn:aws:lambda:eu-west-1:123456789012:function:payments-{n}:live"
            )),
        );
        instance.version = Some(if n % 10 == 0 { "2" } else { "1" }.to_owned());
        instance.weight = 50 + (n % 4) * 50;
        if tenants && n % 5 == 0 {
            instance.tenant = Some(format!("t{}", n % 3));
        }
        if n % 2 == 0 {
            instance.tags = vec!["pci".to_owned()];
        }
        let lease = EnvLease::new("env", 0, EnvReport::new(u64::MAX / 2, 0, 0.0, 0), 0);
        registry
            .register(&instance, &lease)
            .await
            .expect("register");
    }
    registry
}

fn discover_cached(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let discovery = Discovery::new(rt.block_on(registry(true)));
    let query = Query::new("payments").tenant("t1").version("1").tags(TAGS);
    let found = rt.block_on(discovery.discover(&query)).expect("found");
    assert!(found.len() > 10);
    c.bench_function("discover_cached", |b| {
        b.iter(|| {
            let found = discovery
                .discover(black_box(&query))
                .now_or_never()
                .expect("answered from the cache")
                .expect("found");
            black_box(found.len())
        })
    });
}

fn all(rt: &tokio::runtime::Runtime) -> Discovered {
    let discovery = Discovery::new(rt.block_on(registry(false)));
    rt.block_on(discovery.discover(&Query::new("payments")))
        .expect("found")
}

fn pick(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let found = all(&rt);
    assert_eq!(found.len(), 100);
    let strategies: [(&str, Box<dyn Strategy>); 4] = [
        ("round_robin", Box::new(RoundRobin::new())),
        ("weighted", Box::new(WeightedRandom::with_seed(1))),
        ("p2c", Box::new(PowerOfTwoChoices::with_seed(1))),
        ("least_outstanding", Box::new(LeastOutstanding::new())),
    ];
    // Some calls in flight, so the load-aware strategies have something to compare.
    let _in_flight: Vec<_> = (0..found.len())
        .step_by(3)
        .filter_map(|i| found.track(i))
        .collect();
    let mut group = c.benchmark_group("pick");
    for (name, strategy) in &strategies {
        let candidates = found.candidates();
        let region = Region::new(GLOBAL);
        for _ in 0..10_000 {
            black_box(strategy.pick(black_box(&candidates)));
        }
        let change = region.change();
        eprintln!(
            "pick/{name}: {} allocations in 10000 picks",
            change.allocations + change.reallocations
        );
        assert_eq!(
            change.allocations + change.reallocations,
            0,
            "pick/{name} allocates"
        );
        group.bench_function(*name, |b| {
            b.iter(|| black_box(strategy.pick(black_box(&candidates))))
        });
    }
    group.finish();
}

/// A target that answers at once.
struct Immediate;

impl Transport for Immediate {
    fn send(&self, _call: Outbound) -> BoxFuture<'static, Result<ServiceResponse, BoxError>> {
        Box::pin(async {
            Ok(ServiceResponse {
                status: 200,
                headers: HeaderMap::new(),
                body: Bytes::from_static(b"{}"),
            })
        })
    }
}

fn client_overhead(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let discovery = Discovery::new(rt.block_on(registry(true)));
    let client = ServiceClient::builder(discovery, Arc::new(Immediate))
        .caller("orders")
        .build()
        .expect("client");
    rt.block_on(client.call("payments", ServiceRequest::get("/charges")))
        .expect("warm");
    let found = all(&rt);
    let instance = Arc::new(found.candidates().instance(0).clone());
    let mut group = c.benchmark_group("client_overhead");
    // Both sides build the same request each time; the client adds discovery, the pick,
    // the breaker, the timeout and the bookkeeping.
    group.bench_function("direct", |b| {
        b.iter(|| {
            let call = Outbound {
                instance: instance.clone(),
                request: Arc::new(ServiceRequest::get("/charges")),
                caller: None,
            };
            black_box(rt.block_on(Immediate.send(call)).expect("answer").status)
        })
    });
    group.bench_function("client", |b| {
        b.iter(|| {
            let reply = rt
                .block_on(client.call("payments", ServiceRequest::get("/charges")))
                .expect("answer");
            black_box(reply.response.status)
        })
    });
    // As a handler's call is made: with the invocation's deadline, which bounds the call.
    group.bench_function("client_with_deadline", |b| {
        b.iter(|| {
            let request = ServiceRequest::get("/charges")
                .deadline(std::time::SystemTime::now() + std::time::Duration::from_secs(60));
            let reply = rt
                .block_on(client.call("payments", request))
                .expect("answer");
            black_box(reply.response.status)
        })
    });
    group.finish();
}

criterion_group!(benches, discover_cached, pick, client_overhead);
criterion_main!(benches);
