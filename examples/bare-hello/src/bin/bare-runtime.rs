//! The second baseline for `scripts/coldstart.py`: the same `GET /hello/{name}` answer as a
//! typed `lambda_runtime` handler (`LambdaEvent<ApiGatewayV2httpRequest>` →
//! `ApiGatewayV2httpResponse`), with neither `lambda_http` nor Lift.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::HeaderMap;
use aws_lambda_events::http::header::{CONTENT_TYPE, HeaderValue};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::Serialize;

#[derive(Serialize)]
struct Greeting {
    message: String,
}

async fn hello(
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, Error> {
    let name = event
        .payload
        .raw_path
        .as_deref()
        .and_then(|path| path.strip_prefix("/hello/"))
        .unwrap_or("stranger")
        .to_owned();
    let body = serde_json::to_string(&Greeting {
        message: format!("Hello, {name}!"),
    })?;
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = 200;
    response.headers = headers;
    response.body = Some(Body::Text(body));
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(hello)).await
}
