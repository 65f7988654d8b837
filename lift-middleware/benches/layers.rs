//! Per-request overhead of each layer as production pays it: the same App with and without
//! the layer, invoked through the entry the Lambda runtime calls (`LiftService::call`) on an
//! API Gateway v2 event, with a real `Context`, Lift's JSON log subscriber at INFO and a
//! handler that yields once to the executor (as a handler awaiting anything does), so
//! timers, clones and keyed lookups cost what they cost. A layer's overhead is its row
//! minus `app/bare`; keyed presets are set against the row that resolves the tenant
//! (`app/tenancy`). `app/metrics` is the same App with EMF metrics configured (per-route
//! `Requests`, `Errors`, `Latency`, one document per invocation).
//!
//! `lift_stack/apigw_v2` is what a production function runs: JWT verification (HS256), the
//! tenant from a claim, the documented resilience stack (load shed → rate limit → bulkhead
//! → circuit breaker → timeout → retry) and EMF metrics, all through `App::layer`; it is
//! set against `typed/apigw_v2`, a typed `lambda_runtime` handler answering the same request
//! (the floor), and against `typed_jwt/apigw_v2`, the same handler verifying the same token
//! with the same crate (`jsonwebtoken`, HS256, issuer and expiry checked) and reading the
//! tenant claim: what a hand-written function pays for its authentication, so the difference
//! is what Lift adds. `lift_stack/apigw_v2` verifies every token
//! (`JwtConfigBuilder::verify_every_token`); `lift_stack_token_cache/apigw_v2` is the same
//! stack as configured by default, with the verified-token cache answering the one token it
//! verified in the warm-up: a warm function serving one caller's session.
//! `lift_stack_one_layer/apigw_v2` is the uncached stack added as one `App::layer` call (a
//! `ServiceBuilder` of the same layers), which saves the two `App::layer` levels' boxing at
//! the price of one middleware span for all. The `*_contended` rows call one breaker from 8
//! threads, around a bare service.
//!
//! `cargo bench -p lift-middleware --bench layers` (any filter runs its rows alone)

use std::convert::Infallible;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use criterion::{Criterion, criterion_group, criterion_main};

#[path = "../../lift-core/benches/support/floor.rs"]
mod floor;
use floor::{bench_context, lift_call as call, runtime_decode, typed_hello};
use futures_util::FutureExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lambda_runtime::{LambdaEvent, service_fn};
use lift_core::metrics::{MetricsConfig, MetricsSink};
use lift_core::testing::events;
use lift_core::{App, Context, Json, LiftService};
use lift_middleware::auth::{JwtAuthLayer, JwtConfig};
use lift_middleware::bulkhead::{BulkheadConfig, BulkheadLayer};
use lift_middleware::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use lift_middleware::classify::RequestInfo;
use lift_middleware::load_shed::{LoadShedConfig, LoadShedLayer};
use lift_middleware::presets;
use lift_middleware::presets::ContextKey;
use lift_middleware::rate_limit::RateLimitLayer;
use lift_middleware::retry::{RetryConfig, RetryLayer};
use lift_middleware::tenancy::{TenantConfig, TenantLayer, TenantSource};
use lift_middleware::timeout::TimeoutLayer;
use serde_json::{Value, json};
use tower::{Layer, Service, ServiceBuilder};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const SECRET: &[u8] = b"lift-bench-secret-of-32-bytes-or-more";

/// Takes each EMF document and drops it.
struct Discard;

impl MetricsSink for Discard {
    fn write(&self, document: &str) {
        black_box(document);
    }
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

fn tenancy() -> TenantLayer {
    TenantLayer::new(
        TenantConfig::builder()
            .source(TenantSource::Header("x-tenant-id".to_owned()))
            .trust_headers(true)
            .build()
            .expect("config"),
    )
}

fn token() -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs()
        + 24 * 3600;
    let claims =
        json!({"sub": "user-1", "iss": "https://id.example.com", "exp": exp, "tenant_id": "acme"});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("sign")
}

/// The claims a hand-written function reads.
#[derive(serde::Deserialize)]
struct Claims {
    tenant_id: String,
}

/// The floor with authentication: verify the bearer token, read the tenant claim, then
/// answer as [`typed_hello`] does.
async fn typed_jwt(
    event: LambdaEvent<ApiGatewayV2httpRequest>,
    key: &jsonwebtoken::DecodingKey,
    validation: &jsonwebtoken::Validation,
) -> Result<aws_lambda_events::apigw::ApiGatewayV2httpResponse, lambda_runtime::Error> {
    let token = event
        .payload
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or("no bearer token")?;
    let claims = jsonwebtoken::decode::<Claims>(token, key, validation)?.claims;
    black_box(&claims.tenant_id);
    typed_hello(event).await
}

async fn hello(ctx: Context) -> lift_core::Result<Json<Value>> {
    tokio::task::yield_now().await;
    Ok(Json(
        json!({"message": format!("Hello, {}!", ctx.path_param("name")?)}),
    ))
}

fn app(layer: impl FnOnce(App) -> App) -> LiftService {
    layer(App::new().get("/hello/{name}", hello))
        .into_service()
        .expect("app")
}

fn layers(c: &mut Criterion) {
    tracing_subscriber::registry()
        .with(LevelFilter::INFO)
        .with(lift_core::logging::JsonLayer::new(std::io::sink))
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let lambda = bench_context();
    let bearer = format!("Bearer {}", token());
    // API Gateway fills in the path parameters the typed floor reads; Lift routes itself.
    let mut event = events::http("GET", "/hello/world")
        .header("x-tenant-id", "acme")
        .header("authorization", &bearer)
        .v2();
    event["routeKey"] = json!("GET /hello/{name}");
    event["pathParameters"] = json!({"name": "world"});
    let event = floor::lambda_order(&event);

    let stack = || {
        ServiceBuilder::new()
            .layer(shedder())
            .layer(limiter())
            .layer(bulkhead())
            .layer(breaker())
            .layer(TimeoutLayer::new(Duration::from_secs(3)).expect("timeout"))
            .layer(retry())
    };
    let rows: Vec<(&str, LiftService)> = vec![
        ("app/bare", app(|a| a)),
        ("app/circuit_breaker", app(|a| a.layer(breaker()))),
        ("app/bulkhead", app(|a| a.layer(bulkhead()))),
        ("app/retry", app(|a| a.layer(retry()))),
        (
            "app/timeout",
            app(|a| a.layer(TimeoutLayer::new(Duration::from_secs(3)).expect("timeout"))),
        ),
        (
            "app/timeout_deadline_aware",
            app(|a| {
                a.layer(
                    TimeoutLayer::deadline_aware(
                        Duration::from_secs(3),
                        Duration::from_millis(100),
                    )
                    .expect("timeout"),
                )
            }),
        ),
        ("app/rate_limit_local", app(|a| a.layer(limiter()))),
        (
            "app/per_tenant_rate_limit",
            app(|a| {
                a.layer(limiter().keyed(presets::tenant as ContextKey, 10_000))
                    .layer(tenancy())
            }),
        ),
        ("app/load_shed", app(|a| a.layer(shedder()))),
        (
            "app/per_operation_breaker",
            app(|a| a.layer(presets::per_operation_breaker("bench").expect("preset"))),
        ),
        (
            "app/operation_isolated_bulkhead",
            app(|a| {
                a.layer(presets::operation_isolated_bulkhead("bench", 64, 16).expect("preset"))
            }),
        ),
        ("app/tenancy", app(|a| a.layer(tenancy()))),
        (
            "app/per_tenant_breaker",
            app(|a| {
                a.layer(presets::per_tenant_breaker("bench").expect("preset"))
                    .layer(tenancy())
            }),
        ),
        (
            "app/tenant_isolated_bulkhead",
            app(|a| {
                a.layer(presets::tenant_isolated_bulkhead("bench", 64, 16).expect("preset"))
                    .layer(tenancy())
            }),
        ),
        ("app/full_stack", app(|a| a.layer(stack()))),
        (
            "app/metrics",
            app(|a| {
                a.metrics(
                    MetricsConfig::new("LiftBench")
                        .service("layers")
                        .sink(Discard),
                )
            }),
        ),
    ];
    let mut group = c.benchmark_group("layers");
    for (name, service) in &rows {
        // Each row answers 200 before it is timed.
        let out: Value = serde_json::from_slice(&runtime.block_on(call(service, &event, &lambda)))
            .expect("json");
        assert_eq!(out["statusCode"], 200, "{name}: {out}");
        group.bench_function(*name, |b| {
            b.iter(|| black_box(runtime.block_on(call(service, black_box(&event), &lambda))))
        });
    }
    group.finish();

    // What production runs, verifying every token, against the floor; then the same as
    // configured by default, the verified-token cache answering the token it verified in
    // the warm-up (one caller's session), and the same layers as one `App::layer` call.
    let jwt = |cache: bool| {
        let jwt = JwtConfig::builder()
            .hs256_secret(None, SECRET)
            .algorithms(&[Algorithm::HS256])
            .issuers(&["https://id.example.com"]);
        // The cache's defaults are the configuration's own.
        let jwt = if cache { jwt } else { jwt.verify_every_token() };
        JwtAuthLayer::new(jwt.build().expect("config"))
    };
    let tenant = || {
        TenantLayer::new(
            TenantConfig::builder()
                .source(TenantSource::Claim("tenant_id".to_owned()))
                .build()
                .expect("config"),
        )
    };
    let finish = |app: App| {
        app.metrics(
            MetricsConfig::new("LiftBench")
                .service("layers")
                .sink(Discard),
        )
        .into_service()
        .expect("app")
    };
    let production = |cache: bool| {
        finish(
            App::new()
                .get("/hello/{name}", hello)
                .layer(stack())
                .layer(tenant())
                .layer(jwt(cache)),
        )
    };
    let one_layer = finish(
        App::new().get("/hello/{name}", hello).layer(
            ServiceBuilder::new()
                .layer(jwt(false))
                .layer(tenant())
                .layer(stack()),
        ),
    );
    let lift_stack = production(false);
    let lift_stack_cached = production(true);
    let mut typed = service_fn(typed_hello);
    let lift_out: Value =
        serde_json::from_slice(&runtime.block_on(call(&lift_stack, &event, &lambda)))
            .expect("json");
    let typed_out = runtime.block_on(async {
        let request: ApiGatewayV2httpRequest = runtime_decode(&event);
        let response = typed
            .call(LambdaEvent::new(request, lambda.clone()))
            .await
            .expect("typed");
        serde_json::to_value(&response).expect("json")
    });
    assert_eq!(lift_out["statusCode"], 200, "{lift_out}");
    assert_eq!(lift_out["body"], typed_out["body"]);
    let mut group = c.benchmark_group("layers");
    group.bench_function("typed/apigw_v2", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let request: ApiGatewayV2httpRequest = runtime_decode(black_box(&event));
                let response = typed
                    .call(LambdaEvent::new(request, lambda.clone()))
                    .await
                    .expect("typed");
                black_box(serde_json::to_vec(&response).expect("json"))
            })
        })
    });
    let key = jsonwebtoken::DecodingKey::from_secret(SECRET);
    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.set_issuer(&["https://id.example.com"]);
    let typed_jwt_out = runtime.block_on(async {
        let request: ApiGatewayV2httpRequest = runtime_decode(&event);
        let response = typed_jwt(LambdaEvent::new(request, lambda.clone()), &key, &validation)
            .await
            .expect("typed_jwt");
        serde_json::to_value(&response).expect("json")
    });
    assert_eq!(lift_out["body"], typed_jwt_out["body"]);
    group.bench_function("typed_jwt/apigw_v2", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let request: ApiGatewayV2httpRequest = runtime_decode(black_box(&event));
                let response =
                    typed_jwt(LambdaEvent::new(request, lambda.clone()), &key, &validation)
                        .await
                        .expect("typed_jwt");
                black_box(serde_json::to_vec(&response).expect("json"))
            })
        })
    });
    group.bench_function("lift_stack/apigw_v2", |b| {
        b.iter(|| black_box(runtime.block_on(call(&lift_stack, black_box(&event), &lambda))))
    });
    assert_eq!(
        runtime.block_on(call(&one_layer, &event, &lambda)),
        runtime.block_on(call(&lift_stack, &event, &lambda))
    );
    group.bench_function("lift_stack_one_layer/apigw_v2", |b| {
        b.iter(|| black_box(runtime.block_on(call(&one_layer, black_box(&event), &lambda))))
    });
    let cached_out = runtime.block_on(call(&lift_stack_cached, &event, &lambda));
    assert_eq!(
        cached_out,
        runtime.block_on(call(&lift_stack, &event, &lambda))
    );
    group.bench_function("lift_stack_token_cache/apigw_v2", |b| {
        b.iter(|| black_box(runtime.block_on(call(&lift_stack_cached, black_box(&event), &lambda))))
    });
    group.finish();
}

/// A request for the contended rows: a breaker around a bare service, no App.
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
