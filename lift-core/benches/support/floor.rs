//! What the benchmarks of lift-core and lift-middleware share: the true floor (a typed
//! `lambda_runtime` handler answering `GET /hello/{name}`), the event decoding the runtime
//! does before it calls any handler, and one Lift invocation through the entry the runtime
//! calls. Included by each bench with `#[path]`.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body as EventBody;
use lambda_runtime::{FunctionResponse, LambdaEvent};
use lift_core::LiftService;
use serde_json::value::RawValue;
use tower::Service;

/// Decodes an event payload exactly as the Lambda runtime does (`lambda_runtime` 1.5's
/// `deserializer.rs`: `serde_path_to_error` over `serde_json::Deserializer::from_slice`).
pub(crate) fn runtime_decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> T {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).expect("event")
}

/// The floor: a typed `lambda_runtime` handler doing the work every row does (read the path
/// parameter, yield once as a handler awaiting anything does, answer JSON).
pub(crate) async fn typed_hello(
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, lambda_runtime::Error> {
    tokio::task::yield_now().await;
    let name = event
        .payload
        .path_parameters
        .get("name")
        .map_or("stranger", String::as_str);
    let body = serde_json::to_string(&serde_json::json!({"message": format!("Hello, {name}!")}))?;
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = 200;
    response.body = Some(EventBody::Text(body));
    response.headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// One invocation of a Lift App through the `tower::Service` the runtime calls, from event
/// bytes to the response bytes the runtime sends back.
pub(crate) async fn lift_call(
    service: &LiftService,
    event: &[u8],
    lambda: &lambda_runtime::Context,
) -> Vec<u8> {
    let payload: Box<RawValue> = runtime_decode(event);
    let mut service = service.clone();
    match service
        .call(LambdaEvent::new(payload, lambda.clone()))
        .await
        .expect("invocation")
    {
        FunctionResponse::BufferedResponse(response) => response.get().as_bytes().to_vec(),
        FunctionResponse::StreamingResponse(_) => panic!("a buffered response"),
    }
}

/// The Lambda context every invocation of a bench gets: the testing kit's, with a deadline
/// a day away, so that deadline-aware layers see the same time left in the last sample
/// as in the first.
pub(crate) fn bench_context() -> lambda_runtime::Context {
    let mut context = lift_core::testing::lambda_context("bench");
    let day_away = std::time::SystemTime::now() + std::time::Duration::from_secs(24 * 3600);
    context.deadline = day_away
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    context
}

/// A payload 2.0 event's bytes in the order Lambda sends them, `version` and `routeKey`
/// first (a `serde_json::Value` keeps its keys sorted, which puts `version` last).
#[allow(dead_code)] // Not every bench that includes this file builds its events from values.
pub(crate) fn lambda_order(event: &serde_json::Value) -> Vec<u8> {
    let map = event.as_object().expect("an event object");
    let first = ["version", "routeKey"];
    let fields = first
        .iter()
        .filter_map(|key| map.get_key_value(*key))
        .chain(map.iter().filter(|(key, _)| !first.contains(&key.as_str())))
        .map(|(key, value)| {
            format!(
                "{}:{}",
                serde_json::to_string(key).expect("key"),
                serde_json::to_string(value).expect("value")
            )
        })
        .collect::<Vec<_>>();
    let bytes = format!("{{{}}}", fields.join(",")).into_bytes();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&bytes).expect("json"),
        *event
    );
    bytes
}
