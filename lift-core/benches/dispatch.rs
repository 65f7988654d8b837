//! Framework overhead per invocation: a bare `lambda_http` / `lambda_runtime` handler
//! against the same handler in a Lift `App`, on the same event, from event JSON in to
//! response JSON out (what the runtime does around a handler, minus the network).
//!
//! Both sides decode the event the way `lambda_runtime` 1.5 does before it calls any handler
//! (`serde_path_to_error::deserialize` over `serde_json::Deserializer::from_slice`, in its
//! `deserializer.rs`): the bare path into its typed event, Lift into `Box<RawValue>`.
//!
//! `cargo bench -p lift-core --bench dispatch`

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use lambda_http::{Adapter, Body, RequestExt, Service, request::LambdaRequest};
use lambda_runtime::{LambdaEvent, service_fn};
use lift_core::testing::{events, lambda_context};
use lift_core::{App, Context, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

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

/// Decodes an event payload exactly as the Lambda runtime does.
fn runtime_decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> T {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).expect("event")
}

fn v2_event() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/events/example-apigw-v2-request-no-authorizer.json");
    let text = std::fs::read_to_string(path).expect("fixture");
    let mut event: Value = serde_json::from_str(&text).expect("json");
    event["rawPath"] = Value::from("/hello/world");
    event["routeKey"] = Value::from("GET /hello/{name}");
    event["requestContext"]["http"]["path"] = Value::from("/hello/world");
    event["pathParameters"] = serde_json::json!({"name": "world"});
    serde_json::to_vec(&event).expect("bytes")
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
    Ok(Json(Greeting {
        message: format!("Hello, {}!", ctx.path_param("name")?),
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RawFailure {
    item_identifier: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RawBatchResponse {
    batch_item_failures: Vec<RawFailure>,
}

async fn raw_sqs(
    event: LambdaEvent<aws_lambda_events::sqs::SqsEvent>,
) -> Result<RawBatchResponse, lambda_runtime::Error> {
    use garde::Validate;
    let mut failures = Vec::new();
    for record in event.payload.records {
        let ok = serde_json::from_str::<Charge>(record.body.as_deref().unwrap_or_default())
            .ok()
            .is_some_and(|charge| charge.validate().is_ok() && !charge.account.is_empty());
        if !ok {
            failures.push(RawFailure {
                item_identifier: record.message_id.unwrap_or_default(),
            });
        }
    }
    Ok(RawBatchResponse {
        batch_item_failures: failures,
    })
}

async fn lift_sqs(_ctx: Context, charge: Charge) -> lift_core::Result<()> {
    black_box(&charge.account);
    Ok(())
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let lambda = lambda_context("bench-request-id");
    let v2 = v2_event();
    let sqs = sqs_event();

    let mut raw_http = Adapter::from(lambda_http::service_fn(raw_hello));
    let lift = App::new()
        .get("/hello/{name}", lift_hello)
        .into_service()
        .expect("app");
    let lift_layered = App::new()
        .get("/hello/{name}", lift_hello)
        .layer(tower::layer::util::Identity::new())
        .into_service()
        .expect("app");
    let mut raw_batch = service_fn(raw_sqs);
    let lift_batch = App::new().sqs(lift_sqs).into_service().expect("app");

    // Both paths must produce the same answer before they are timed.
    let raw_out = runtime.block_on(async {
        let request: LambdaRequest = serde_json::from_slice(&v2).expect("event");
        let response = raw_http
            .call(LambdaEvent::new(request, lambda.clone()))
            .await
            .expect("raw");
        serde_json::to_value(&response).expect("json")
    });
    let lift_out = runtime.block_on(async {
        let event: Box<RawValue> = serde_json::from_slice(&v2).expect("event");
        let response = lift.invoke(&event, lambda.clone()).await.expect("lift");
        serde_json::from_str::<Value>(response.get()).expect("json")
    });
    assert_eq!(raw_out["statusCode"], lift_out["statusCode"]);
    assert_eq!(raw_out["body"], lift_out["body"]);

    let mut group = c.benchmark_group("dispatch");
    group.bench_function("raw/apigw_v2", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let request: LambdaRequest = runtime_decode(black_box(&v2));
                let response = raw_http
                    .call(LambdaEvent::new(request, lambda.clone()))
                    .await
                    .expect("raw");
                black_box(serde_json::to_vec(&response).expect("json"))
            })
        })
    });
    group.bench_function("lift/apigw_v2", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let event: Box<RawValue> = runtime_decode(black_box(&v2));
                let response = lift.invoke(&event, lambda.clone()).await.expect("lift");
                black_box(serde_json::to_vec(&response).expect("json"))
            })
        })
    });
    group.bench_function("lift_layered/apigw_v2", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let event: Box<RawValue> = runtime_decode(black_box(&v2));
                let response = lift_layered
                    .invoke(&event, lambda.clone())
                    .await
                    .expect("lift");
                black_box(serde_json::to_vec(&response).expect("json"))
            })
        })
    });
    group.bench_function("raw/sqs_batch_10", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let event: aws_lambda_events::sqs::SqsEvent = runtime_decode(black_box(&sqs));
                let response = raw_batch
                    .call(LambdaEvent::new(event, lambda.clone()))
                    .await
                    .expect("raw");
                black_box(serde_json::to_vec(&response).expect("json"))
            })
        })
    });
    group.bench_function("lift/sqs_batch_10", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let event: Box<RawValue> = runtime_decode(black_box(&sqs));
                let response = lift_batch
                    .invoke(&event, lambda.clone())
                    .await
                    .expect("lift");
                black_box(serde_json::to_vec(&response).expect("json"))
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
