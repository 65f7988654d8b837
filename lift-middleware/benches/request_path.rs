//! Request-path features, each measured alone on one request's [`Context`]:
//!
//! - `metrics_emf_flush`: 10 metrics and 3 dimensions into EMF documents;
//! - `idempotency_local_hit`: a repeated key answered from the local cache in front of
//!   DynamoDB (the warm-up call needs DynamoDB: start the emulator and export
//!   `AWS_ENDPOINT_URL`; without it the case is skipped with a note);
//! - `cache_memory_hit`: a response answered from the in-memory cache, as the whole
//!   invocation of an App (event JSON in, response JSON out) set against
//!   `app_without_cache`, the same App without the cache layer whose handler yields once
//!   as one awaiting anything does: the difference is the layer's overhead on a hit,
//!   comparable across machines;
//! - `validate_typed`: a JSON body decoded and validated into a `garde` type;
//! - `validate_json_schema`: the same body parsed and checked against a compiled JSON
//!   Schema with the same rules;
//! - `compress_gzip_8k`: an 8 KiB JSON response compressed with gzip at the default level;
//!   `compress_none_8k` is the same call for a client that accepts no coding (the handler
//!   building the response, and the layer's negotiation), to set it against.
//!
//! The other cases' futures complete without waiting and are polled once, so no runtime is
//! measured; the `Context` is cloned outside the timed part. Every case checks its outcome
//! before it is timed, so any filter runs any case alone.
//!
//! `cargo bench -p lift-middleware --bench request_path`

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use lift_core::metrics::{Metrics, MetricsConfig, MetricsSink, Unit};
use lift_core::testing::{TestApp, events};
use lift_core::{App, Body, BoxError, Context, Input, Response};
use lift_middleware::cache::{Cache, CacheLayer, HttpGetPolicy};
use lift_middleware::compression::CompressionLayer;
use lift_middleware::idempotency::{IdempotencyConfig, IdempotencyLayer};
use lift_middleware::validation::JsonSchema;
use serde_json::{Value, json};
use tower::{Layer, Service, ServiceExt};

struct Discard;

impl MetricsSink for Discard {
    fn write(&self, document: &str) {
        black_box(document);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The `Context` Lift builds for `event`, taken from a handler.
fn context_of(event: &Value) -> Context {
    let slot: Arc<Mutex<Option<Context>>> = Arc::default();
    let keep = slot.clone();
    let handler = move |ctx: Context| {
        let keep = keep.clone();
        async move {
            *keep.lock().expect("slot") = Some(ctx);
            Ok::<_, BoxError>(())
        }
    };
    let app = App::new()
        .get("/orders/{id}", handler.clone())
        .post("/orders/{id}", handler);
    let app = TestApp::new(app).expect("app");
    runtime().block_on(app.invoke(event)).expect("invoke");
    let ctx = slot.lock().expect("slot").take();
    ctx.expect("the handler ran")
}

fn order() -> Value {
    json!({
        "orderId": "o-1234",
        "customer": {"id": "c-42", "email": "ada@example.com"},
        "items": [
            {"sku": "SKU-1", "qty": 2, "price": 9.5},
            {"sku": "SKU-2", "qty": 1, "price": 120.0}
        ],
        "currency": "EUR"
    })
}

/// Calls `service` once and polls its future to completion; it must not wait.
fn once<S>(service: &mut S, ctx: Context) -> Response
where
    S: Service<Context, Response = Response, Error = BoxError>,
{
    let ready = std::future::poll_fn(|cx| service.poll_ready(cx))
        .now_or_never()
        .expect("ready at once");
    ready.expect("ready");
    service
        .call(ctx)
        .now_or_never()
        .expect("done at once")
        .expect("success")
}

fn answer()
-> impl Service<Context, Response = Response, Error = BoxError, Future: Send> + Clone + Send + 'static
{
    tower::service_fn(|_ctx: Context| async {
        let mut response = Response::new(Body::Text(r#"{"status":"shipped"}"#.to_owned()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok::<_, BoxError>(response)
    })
}

fn metrics(c: &mut Criterion) {
    let config = MetricsConfig::new("Bench")
        .service("orders")
        .default_dimension("stage", "prod")
        .sink(Discard);
    let names: Vec<String> = (0..10).map(|i| format!("Metric{i}")).collect();
    c.bench_function("request_path/metrics_emf_flush", |b| {
        b.iter(|| {
            let metrics = Metrics::default();
            metrics.dimension("tenant", "acme").expect("dimension");
            for (i, name) in names.iter().enumerate() {
                metrics
                    .value(name, i as f64, Unit::Milliseconds)
                    .expect("value");
            }
            for document in metrics.take_documents(&config, UNIX_EPOCH + Duration::from_secs(1)) {
                black_box(document);
            }
        })
    });
}

fn cache(c: &mut Criterion) {
    let rt = runtime();
    let handler = |_ctx: Context| async {
        tokio::task::yield_now().await;
        Ok::<_, BoxError>(lift_core::Json(json!({"status": "shipped"})))
    };
    let bare = App::new()
        .get("/orders/{id}", handler)
        .into_service()
        .expect("app");
    let cache = Cache::builder("bench")
        .memory(10_000)
        .build()
        .expect("cache");
    let cached = App::new()
        .get("/orders/{id}", handler)
        .layer(CacheLayer::new(
            cache.clone(),
            HttpGetPolicy::new(Duration::from_secs(300)),
        ))
        .into_service()
        .expect("app");
    let event = events::http("GET", "/orders/o-1234").v2();
    let raw = serde_json::value::to_raw_value(&event).expect("raw");
    // A deadline a day away, so the last sample sees the time left the first one did.
    let mut lambda = lift_core::testing::lambda_context("bench");
    lambda.deadline = (std::time::SystemTime::now() + Duration::from_secs(24 * 3600))
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    // The first call fills the cache, the second is a hit: checked before timing.
    rt.block_on(cached.invoke(&raw, lambda.clone()))
        .expect("warm");
    let hit: Value = serde_json::from_str(
        rt.block_on(cached.invoke(&raw, lambda.clone()))
            .expect("hit")
            .get(),
    )
    .expect("json");
    assert_eq!(hit["headers"]["x-cache"], "hit", "{hit}");
    assert_eq!(cache.stats().hits, 1);
    c.bench_function("request_path/app_without_cache", |b| {
        b.iter(|| black_box(rt.block_on(bare.invoke(black_box(&raw), lambda.clone()))))
    });
    c.bench_function("request_path/cache_memory_hit", |b| {
        b.iter(|| black_box(rt.block_on(cached.invoke(black_box(&raw), lambda.clone()))))
    });
}

fn idempotency(c: &mut Criterion) {
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        eprintln!(
            "request_path/idempotency_local_hit skipped: its warm-up call needs DynamoDB \
             (bash scripts/emulator.sh start; export AWS_ENDPOINT_URL=http://127.0.0.1:4566 \
             AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1)"
        );
        return;
    }
    let rt = runtime();
    let table = format!("lift-bench-idempotency-{}", std::process::id());
    let client = rt.block_on(async {
        let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        client
            .create_table()
            .table_name(&table)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("id")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .expect("attribute"),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("id")
                    .key_type(KeyType::Hash)
                    .build()
                    .expect("key"),
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .expect("create table");
        client
    });
    let config = IdempotencyConfig::builder(&table)
        .key_fields(&["/orderId"])
        .validate_payload(true)
        .local_cache(10_000)
        .build()
        .expect("config");
    let ctx = context_of(&events::http("POST", "/orders/o-1234").json(&order()).v2());
    let mut service = IdempotencyLayer::new(client.clone(), config).layer(answer());
    rt.block_on(service.clone().oneshot(ctx.clone()))
        .expect("warm");
    c.bench_function("request_path/idempotency_local_hit", |b| {
        b.iter_batched(
            || ctx.clone(),
            |ctx| black_box(once(&mut service, ctx)),
            BatchSize::SmallInput,
        )
    });
    rt.block_on(client.delete_table().table_name(&table).send())
        .expect("delete table");
}

#[derive(serde::Deserialize, garde::Validate)]
#[allow(dead_code)]
struct Order {
    #[garde(length(min = 1, max = 64))]
    #[serde(rename = "orderId")]
    order_id: String,
    #[garde(dive)]
    customer: Customer,
    #[garde(length(min = 1, max = 100), dive)]
    items: Vec<Item>,
    #[garde(length(equal = 3))]
    currency: String,
}

#[derive(serde::Deserialize, garde::Validate)]
#[allow(dead_code)]
struct Customer {
    #[garde(length(min = 1))]
    id: String,
    #[garde(contains("@"))]
    email: String,
}

#[derive(serde::Deserialize, garde::Validate)]
#[allow(dead_code)]
struct Item {
    #[garde(length(min = 1))]
    sku: String,
    #[garde(range(min = 1, max = 1000))]
    qty: u32,
    #[garde(range(min = 0.0))]
    price: f64,
}

fn validation(c: &mut Criterion) {
    let ctx = context_of(&events::http("POST", "/orders/o-1234").json(&order()).v2());
    c.bench_function("request_path/validate_typed", |b| {
        b.iter(|| black_box(Order::from_context(black_box(&ctx)).expect("valid")))
    });
    // The same rules as the `Order` type, as a schema.
    let schema = JsonSchema::new(&json!({
        "type": "object",
        "required": ["orderId", "customer", "items", "currency"],
        "properties": {
            "orderId": {"type": "string", "minLength": 1, "maxLength": 64},
            "customer": {
                "type": "object",
                "required": ["id", "email"],
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "email": {"type": "string", "pattern": "@"}
                }
            },
            "items": {
                "type": "array", "minItems": 1, "maxItems": 100,
                "items": {"$ref": "#/$defs/item"}
            },
            "currency": {"type": "string", "minLength": 3, "maxLength": 3}
        },
        "$defs": {
            "item": {
                "type": "object",
                "required": ["sku", "qty", "price"],
                "properties": {
                    "sku": {"type": "string", "minLength": 1},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 1000},
                    "price": {"type": "number", "minimum": 0}
                }
            }
        }
    }))
    .expect("schema");
    c.bench_function("request_path/validate_json_schema", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(black_box(&ctx).body()).expect("json");
            schema.validate(&value).expect("valid");
            black_box(value)
        })
    });
}

fn compression(c: &mut Criterion) {
    let rows: Vec<Value> = (0..120)
        .map(|n| json!({"row": n, "region": "eu-west-1", "status": "settled", "amount": n * 7}))
        .collect();
    let body = json!({ "rows": rows }).to_string();
    let report = tower::service_fn(move |_ctx: Context| {
        let body = body.clone();
        async move {
            let mut response = Response::new(Body::Text(body));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok::<_, BoxError>(response)
        }
    });
    let mut service = CompressionLayer::new().layer(report);
    for (name, accept) in [
        ("compress_gzip_8k", "gzip, deflate, br"),
        ("compress_none_8k", "br"),
    ] {
        let ctx = context_of(
            &events::http("GET", "/orders/o-1234")
                .header("accept-encoding", accept)
                .v2(),
        );
        c.bench_function(&format!("request_path/{name}"), |b| {
            b.iter_batched(
                || ctx.clone(),
                |ctx| black_box(once(&mut service, ctx)),
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(
    benches,
    metrics,
    cache,
    idempotency,
    validation,
    compression
);
criterion_main!(benches);
