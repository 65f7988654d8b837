//! The baseline `scripts/coldstart.py` measures Lift's `hello` against: the same
//! `GET /hello/{name}` answer written on bare `lambda_http`, with no routing of its own.

use lambda_http::{Body, Error, Request, Response, service_fn};
use serde::Serialize;

#[derive(Serialize)]
struct Greeting {
    message: String,
}

async fn hello(request: Request) -> Result<Response<Body>, Error> {
    let name = request
        .uri()
        .path()
        .strip_prefix("/hello/")
        .unwrap_or("stranger")
        .to_owned();
    let body = serde_json::to_string(&Greeting {
        message: format!("Hello, {name}!"),
    })?;
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::Text(body))?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(hello)).await
}
