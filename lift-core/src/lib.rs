//! # lift-core
//!
//! The foundation of Lift, a framework for AWS Lambda functions in Rust: one [`App`] that
//! serves HTTP (API Gateway REST and HTTP APIs, Function URLs, ALB), API Gateway WebSocket
//! APIs ([`websocket`]), SQS, DynamoDB Streams, SNS, EventBridge and scheduled events; plain
//! async handlers over a per-invocation [`Context`] with typed, validated [`Input`] and
//! typed output, HTTP bodies streamed to Function URLs included ([`stream`]); one error model
//! ([`Error`]); Lambda-shaped JSON logs ([`logging`]); and a [`testing`] kit.
//!
//! HTTP is always built in; each other event source is a cargo feature, all on by default:
//! `sqs`, `sns`, `dynamodb`, `eventbridge` (with schedules), `websocket` and `authorizer`
//! (API Gateway Lambda authorizers, [`authorizer`]). Leaving out the
//! ones a function does not serve makes its binary smaller; an event from a source left out
//! is answered with [`Error::NoHandler`] naming the feature. The `aws` feature adds the
//! shared AWS SDK configuration (`lift_core::aws`) and, with `websocket`, the connections
//! client.
//!
//! ```no_run
//! use lift_core::{App, Context, Created, Json, Result};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize, garde::Validate)]
//! struct NewGreeting {
//!     #[garde(length(min = 1, max = 64))]
//!     name: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Greeting {
//!     message: String,
//! }
//!
//! async fn hello(ctx: Context) -> Result<Json<Greeting>> {
//!     let name = ctx.path_param("name")?;
//!     Ok(Json(Greeting { message: format!("Hello, {name}!") }))
//! }
//!
//! async fn create(_ctx: Context, input: NewGreeting) -> Result<Created<Greeting>> {
//!     Ok(Created(Greeting { message: format!("Hello, {}!", input.name) }))
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<()> {
//!     App::new()
//!         .get("/hello/{name}", hello)
//!         .post("/greetings", create)
//!         .run()
//!         .await
//! }
//! ```
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)
)]

mod app;
mod boxed;
mod context;
mod error;
mod handler;
mod http_event;
mod input;
mod json_text;
mod probe;
mod response;
mod router;
pub mod shutdown;
mod trace;

#[cfg(feature = "authorizer")]
pub mod authorizer;
#[cfg(feature = "aws")]
pub mod aws;
pub mod http_layer;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod principal;
pub mod stream;
pub mod testing;
#[cfg(feature = "websocket")]
pub mod websocket;

#[cfg(any(feature = "sqs", feature = "dynamodb"))]
pub use app::DEFAULT_BATCH_DEADLINE_MARGIN;
pub use app::{App, BoxService, DEFAULT_BODY_LIMIT, LiftService, REFUSED_HEADER};
pub use context::{Context, HttpRequest, Source, TenantId, invocation_deadline};
pub use error::{BoxError, Error, ErrorBody, ErrorDetail, FieldError, Result};
pub use handler::{BoxFuture, Dispatch, Handler, Layered, LayeredArgs, with_layer};
pub use input::Input;
pub use response::{Body, Created, IntoResponse, Json, NoContent, Response};

pub use aws_lambda_events;
pub use http;
pub use lambda_runtime;
