//! Per-call overhead of each layer on the success path, around a trivial service, against
//! the bare service in the same run; and one breaker shared by 8 threads.
//!
//! `cargo bench -p lift-middleware --bench layers`

use std::convert::Infallible;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use lift_middleware::bulkhead::{BulkheadConfig, BulkheadLayer};
use lift_middleware::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use lift_middleware::classify::RequestInfo;
use lift_middleware::load_shed::{LoadShedConfig, LoadShedLayer};
use lift_middleware::rate_limit::RateLimitLayer;
use lift_middleware::retry::{RetryConfig, RetryLayer};
use lift_middleware::timeout::TimeoutLayer;
use tower::{Layer, Service, ServiceBuilder};

#[derive(Clone, Copy)]
struct Req(u64);

impl RequestInfo for Req {}

type Res = http::Response<u64>;

fn trivial()
-> impl Service<Req, Response = Res, Error = Infallible, Future: Send> + Clone + Send + 'static {
    tower::service_fn(|req: Req| async move { Ok::<_, Infallible>(http::Response::new(req.0)) })
}

/// One call: ready, call, and poll the future to completion (it never waits).
fn once<S>(service: &mut S, n: u64) -> Res
where
    S: Service<Req, Response = Res>,
    S::Error: std::fmt::Debug,
{
    let ready = std::future::poll_fn(|cx| service.poll_ready(cx))
        .now_or_never()
        .expect("ready at once");
    ready.expect("ready");
    service
        .call(Req(n))
        .now_or_never()
        .expect("done at once")
        .expect("success")
}

fn breaker() -> CircuitBreakerLayer {
    CircuitBreakerLayer::new(
        CircuitBreakerConfig::builder("bench")
            .build()
            .expect("config"),
    )
}

fn bulkhead() -> BulkheadLayer {
    BulkheadLayer::new(
        BulkheadConfig::builder("bench")
            .max_concurrent(64)
            .build()
            .expect("config"),
    )
}

fn limiter() -> RateLimitLayer {
    RateLimitLayer::per_second(NonZeroU32::new(u32::MAX).expect("non-zero"))
}

fn shedder() -> LoadShedLayer {
    LoadShedLayer::new(LoadShedConfig::builder().build().expect("config"))
}

fn retry() -> RetryLayer {
    RetryLayer::new(RetryConfig::builder().build().expect("config"))
}

fn bench_one<S>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut service: S,
) where
    S: Service<Req, Response = Res>,
    S::Error: std::fmt::Debug,
{
    let mut n = 0;
    c.bench_function(name, |b| {
        b.iter(|| {
            n += 1;
            black_box(once(&mut service, black_box(n)))
        })
    });
}

fn layers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("layers");
    bench_one(&mut group, "bare", trivial());
    bench_one(&mut group, "circuit_breaker", breaker().layer(trivial()));
    bench_one(&mut group, "bulkhead", bulkhead().layer(trivial()));
    bench_one(&mut group, "retry", retry().layer(trivial()));
    bench_one(
        &mut group,
        "timeout",
        TimeoutLayer::new(Duration::from_secs(3))
            .expect("timeout")
            .layer(trivial()),
    );
    bench_one(&mut group, "rate_limit_local", limiter().layer(trivial()));
    bench_one(&mut group, "load_shed", shedder().layer(trivial()));
    let stack = ServiceBuilder::new()
        .layer(shedder())
        .layer(limiter())
        .layer(bulkhead())
        .layer(breaker())
        .layer(TimeoutLayer::new(Duration::from_secs(3)).expect("timeout"))
        .layer(retry())
        .service(trivial());
    bench_one(&mut group, "full_stack", stack);
    group.finish();
}

/// 8 threads calling through clones of one service; the time per call.
fn contended<S>(service: S, iters: u64) -> Duration
where
    S: Service<Req, Response = Res> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    const THREADS: u64 = 8;
    let per_thread = iters.div_ceil(THREADS);
    let start = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let mut service = service.clone();
            std::thread::spawn(move || {
                for n in 0..per_thread {
                    black_box(once(&mut service, n));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread");
    }
    start.elapsed()
}

fn contention(c: &mut Criterion) {
    let mut group = c.benchmark_group("layers");
    group.bench_function("bare_contended", |b| {
        b.iter_custom(|iters| contended(trivial(), iters))
    });
    let shared = breaker();
    group.bench_function("circuit_breaker_contended", |b| {
        b.iter_custom(|iters| contended(shared.layer(trivial()), iters))
    });
    group.finish();
}

criterion_group!(benches, layers, contention);
criterion_main!(benches);
