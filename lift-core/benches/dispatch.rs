//! Framework overhead per invocation, from event JSON in to response JSON out (what the
//! runtime does around a handler, minus the network), every row doing the same work on
//! the same event in the same run:
//!
//! - `typed/*`: the true floor, a typed `lambda_runtime` handler
//!   (`LambdaEvent<ApiGatewayV2httpRequest>` → `ApiGatewayV2httpResponse`,
//!   `LambdaEvent<SqsEvent>` → `SqsBatchResponse`);
//! - `lambda_http/apigw_v2`: the same handler through `lambda_http`'s request conversion;
//! - `lift/*`: the handler in a Lift `App`, called through the entry production uses (the
//!   `tower::Service` the runtime calls, `LiftService::call`), with metrics configured and
//!   its EMF document built for every invocation (handed to a sink that discards it: the
//!   write to stdout is the environment's cost, the same for any framework).
//!
//! Every row runs under Lift's production JSON log subscriber at INFO (writing to a sink),
//! every handler yields once to the executor as a handler awaiting anything does, and the
//! Lift rows build a real `Context` for each request and record.
//!
//! All sides decode the event the way `lambda_runtime` 1.5 does before it calls any
//! handler (`serde_path_to_error::deserialize` over `serde_json::Deserializer::from_slice`,
//! in its `deserializer.rs`): the bare paths into their typed events, Lift into
//! `Box<RawValue>`.
//!
//! `cargo bench -p lift-core --bench dispatch` (any filter, e.g. `-- typed/`, runs alone)

use std::hint::black_box;
use std::path::PathBuf;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use criterion::{Criterion, criterion_group, criterion_main};

#[path = "support/floor.rs"]
mod floor;
use floor::{bench_context, lift_call, runtime_decode, typed_hello};
use lambda_http::{Adapter, Body, RequestExt, Service, request::LambdaRequest};
use lambda_runtime::{LambdaEvent, service_fn};
use lift_core::metrics::{MetricsConfig, MetricsSink};
use lift_core::testing::events;
use lift_core::{App, Context, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Takes each EMF document and drops it.
struct Discard;

impl MetricsSink for Discard {
    fn write(&self, document: &str) {
        black_box(document);
    }
}

/// Lift's production JSON log subscriber at INFO, writing to a sink, for every row.
fn install_logs() {
    tracing_subscriber::registry()
        .with(LevelFilter::INFO)
        .with(lift_core::logging::JsonLayer::new(std::io::sink))
        .init();
}

#[derive(Serialize)]
struct Greeting {
    message: String,
}

#[derive(Deserialize, garde::Validate)]
struct Charge {
    #[garde(length(min = 1))]
    account: String,
    #[garde(range(min = 1))]
    cents: u64,
}

/// The fixture with `GET /hello/world` as its route, edited as text so its keys stay in
/// the order Lambda sends them (`version` and `routeKey` first; a `serde_json::Value`
/// would sort them), then compacted.
fn v2_event() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/events/example-apigw-v2-request-no-authorizer.json");
    let text = std::fs::read_to_string(path)
        .expect("fixture")
        .replace(
            r#""routeKey": "$default""#,
            r#""routeKey": "GET /hello/{name}""#,
        )
        .replace(r#""rawPath": "/""#, r#""rawPath": "/hello/world""#)
        .replace(r#""path": "/""#, r#""path": "/hello/world""#)
        .replace(
            r#""rawQueryString": "","#,
            r#""rawQueryString": "", "pathParameters": {"name": "world"},"#,
        );
    // Whitespace outside strings dropped, as Lambda sends it.
    let (mut compact, mut in_string, mut escaped) = (String::new(), false, false);
    for c in text.chars() {
        if in_string {
            compact.push(c);
            (in_string, escaped) = (escaped || c != '"', !escaped && c == '\\');
        } else if !c.is_whitespace() {
            compact.push(c);
            in_string = c == '"';
        }
    }
    let event: Value = serde_json::from_str(&compact).expect("json");
    assert_eq!(event["pathParameters"]["name"], "world");
    assert_eq!(event["requestContext"]["http"]["path"], "/hello/world");
    assert!(compact.starts_with(r#"{"version":"2.0","routeKey":"GET /hello/{name}""#));
    compact.into_bytes()
}

fn sqs_event() -> Vec<u8> {
    let bodies: Vec<String> = (0..10)
        .map(|i| {
            format!(
                r#"{{"account": "acct-{i}", "cents": {}}}"#,
                if i == 7 { 0 } else { 100 + i }
            )
        })
        .collect();
    serde_json::to_vec(&events::sqs(bodies.iter().map(String::as_str))).expect("bytes")
}

async fn raw_hello(
    request: lambda_http::Request,
) -> Result<lambda_http::Response<Body>, lambda_http::Error> {
    tokio::task::yield_now().await;
    let name = request
        .path_parameters_ref()
        .and_then(|params| params.first("name"))
        .unwrap_or("stranger")
        .to_owned();
    let body = serde_json::to_string(&Greeting {
        message: format!("Hello, {name}!"),
    })?;
    Ok(lambda_http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::Text(body))?)
}

async fn lift_hello(ctx: Context) -> lift_core::Result<Json<Greeting>> {
    tokio::task::yield_now().await;
    Ok(Json(Greeting {
        message: format!("Hello, {}!", ctx.path_param("name")?),
    }))
}

/// The floor for a batch: a typed `lambda_runtime` handler parsing and validating each
/// record, reporting the failed ones.
async fn typed_sqs(
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    use garde::Validate;
    let mut response = SqsBatchResponse::default();
    for record in event.payload.records {
        tokio::task::yield_now().await;
        let ok = serde_json::from_str::<Charge>(record.body.as_deref().unwrap_or_default())
            .ok()
            .is_some_and(|charge| {
                charge.validate().is_ok() && !black_box(&charge.account).is_empty()
            });
        if !ok {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = record.message_id.unwrap_or_default();
            response.batch_item_failures.push(failure);
        }
    }
    Ok(response)
}

async fn lift_sqs(_ctx: Context, charge: Charge) -> lift_core::Result<()> {
    tokio::task::yield_now().await;
    black_box(&charge.account);
    Ok(())
}

fn metrics() -> MetricsConfig {
    MetricsConfig::new("LiftBench")
        .service("dispatch")
        .sink(Discard)
}

fn bench(c: &mut Criterion) {
    install_logs();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let lambda = bench_context();
    let v2 = v2_event();
    let sqs = sqs_event();

    let mut typed_http = service_fn(typed_hello);
    let mut lambda_http = Adapter::from(lambda_http::service_fn(raw_hello));
    let lift = App::new()
        .get("/hello/{name}", lift_hello)
        .metrics(metrics())
        .into_service()
        .expect("app");
    let lift_layered = App::new()
        .get("/hello/{name}", lift_hello)
        .layer(tower::layer::util::Identity::new())
        .metrics(metrics())
        .into_service()
        .expect("app");
    let mut typed_batch = service_fn(typed_sqs);
    let lift_batch = App::new()
        .sqs(lift_sqs)
        .metrics(metrics())
        .into_service()
        .expect("app");

    // Every path must produce the same answer before it is timed.
    let typed_out = runtime.block_on(async {
        let request: ApiGatewayV2httpRequest = runtime_decode(&v2);
        let response = typed_http
            .call(LambdaEvent::new(request, lambda.clone()))
            .await
            .expect("typed");
        serde_json::to_value(&response).expect("json")
    });
    let lambda_http_out = runtime.block_on(async {
        let request: LambdaRequest = runtime_decode(&v2);
        let response = lambda_http
            .call(LambdaEvent::new(request, lambda.clone()))
            .await
            .expect("lambda_http");
        serde_json::to_value(&response).expect("json")
    });
    let lift_out: Value =
        serde_json::from_slice(&runtime.block_on(lift_call(&lift, &v2, &lambda))).expect("json");
    for out in [&typed_out, &lambda_http_out] {
        assert_eq!(out["statusCode"], lift_out["statusCode"]);
        assert_eq!(out["body"], lift_out["body"]);
    }
    let typed_batch_out = runtime.block_on(async {
        let event: SqsEvent = runtime_decode(&sqs);
        let response = typed_batch
            .call(LambdaEvent::new(event, lambda.clone()))
            .await
            .expect("typed");
        serde_json::to_value(&response).expect("json")
    });
    let lift_batch_out: Value =
        serde_json::from_slice(&runtime.block_on(lift_call(&lift_batch, &sqs, &lambda)))
            .expect("json");
    assert_eq!(
        typed_batch_out["batchItemFailures"],
        lift_batch_out["batchItemFailures"]
    );
    assert_eq!(
        lift_batch_out["batchItemFailures"].as_array().map(Vec::len),
        Some(1)
    );

    let mut group = c.benchmark_group("dispatch");
    group.bench_function("typed/apigw_v2", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let request: ApiGatewayV2httpRequest = runtime_decode(black_box(&v2));
                let response = typed_http
                    .call(LambdaEvent::new(request, lambda.clone()))
                    .await
                    .expect("typed");
                black_box(serde_json::to_vec(&response).expect("json"))
            })
        })
    });
    group.bench_function("lambda_http/apigw_v2", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let request: LambdaRequest = runtime_decode(black_box(&v2));
                let response = lambda_http
                    .call(LambdaEvent::new(request, lambda.clone()))
                    .await
                    .expect("lambda_http");
                black_box(serde_json::to_vec(&response).expect("json"))
            })
        })
    });
    group.bench_function("lift/apigw_v2", |b| {
        b.iter(|| black_box(runtime.block_on(lift_call(&lift, black_box(&v2), &lambda))))
    });
    group.bench_function("lift_layered/apigw_v2", |b| {
        b.iter(|| black_box(runtime.block_on(lift_call(&lift_layered, black_box(&v2), &lambda))))
    });
    group.bench_function("typed/sqs_batch_10", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let event: SqsEvent = runtime_decode(black_box(&sqs));
                let response = typed_batch
                    .call(LambdaEvent::new(event, lambda.clone()))
                    .await
                    .expect("typed");
                black_box(serde_json::to_vec(&response).expect("json"))
            })
        })
    });
    group.bench_function("lift/sqs_batch_10", |b| {
        b.iter(|| black_box(runtime.block_on(lift_call(&lift_batch, black_box(&sqs), &lambda))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
