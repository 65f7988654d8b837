//! Service-to-service authorization: which calling services may call which routes.
//!
//! [`ServiceAuthLayer`] identifies the caller, then checks it against an allow-list per
//! route pattern ([`Context::route`](lift_core::Context::route), e.g.
//! `/internal/orders/{id}`), with a default list for unlisted routes (empty: deny).
//!
//! The caller's identity is either
//! - a **signed service token** in `x-lift-service-token`:
//!   `<service-name>.<unix-expiry>.<hex HMAC-SHA256 of "service-name.expiry">` with a
//!   shared secret, minted by [`ServiceTokenSigner`]. It is accepted only when the
//!   configuration has a secret, and is then checked first: a token that is
//!   malformed, tampered with, expired or valid too far ahead is refused, with no fallback.
//!   Whoever holds a secret given with `shared_secret` can sign for any service name; a
//!   secret given with `caller_secret(name, …)` signs for `name` alone, which is what lets
//!   the allow-lists keep callers apart. A token minted with
//!   [`ServiceTokenSigner::sign_for`] also names the service it is for
//!   (`<service-name>.<unix-expiry>.<audience>.<hex HMAC of "service-name.expiry.audience">`),
//!   and a function configured with its own name (`audience`) refuses a token for any other
//!   service, or for none; without `audience`, a token is good at every function that
//!   accepts its secret within its lifetime (at most `max_token_lifetime`);
//! - or the **IAM principal** API Gateway authenticated (SigV4 / `AWS_IAM` auth):
//!   REST API `requestContext.identity.userArn` (else `caller`), HTTP API and Function
//!   URL `requestContext.authorizer.iam.userArn` (see [`iam_principal`]).
//!
//! Outcomes:
//! - no identity, or a refused token: [`Error::Unauthorized`](lift_core::Error::Unauthorized)
//!   (`401`, `WWW-Authenticate: LiftService realm="lift"`, with `error="invalid_token"`
//!   for a refused token);
//! - an identity the route does not allow:
//!   [`Error::Forbidden`](lift_core::Error::Forbidden) (`403`, code `service_not_allowed`),
//!   logged at WARN (target `lift::service_auth`) with the `caller`, the `callee` (this
//!   function's name) and the `route`;
//! - an allowed caller: the request goes on with a [`ServiceCaller`] in the context's
//!   extensions.
//!
//! HTTP requests and WebSocket `$connect` events are checked (a `$connect` by its headers
//! and, for an `AWS_IAM` route, `requestContext.identity.userArn`; its route is the route
//! key, `$connect`); a connection's later messages and its `$disconnect` pass, since it
//! was admitted at `$connect` and they carry no credentials; batch records pass (their event
//! source's IAM policy decides who may send them). Checking `$connect` needs the
//! `source-websocket` feature (on by default), as WebSocket events do.
//!
//! ```
//! use lift_core::testing::{TestApp, events};
//! use lift_core::{App, Context, Error, Result};
//! use lift_middleware::service_auth::{
//!     ServiceAuthConfig, ServiceAuthLayer, ServiceCaller, ServiceTokenSigner,
//! };
//! use std::time::{Duration, SystemTime};
//!
//! async fn order(ctx: Context) -> Result<String> {
//!     let caller = ctx.extensions().get::<ServiceCaller>().ok_or(Error::internal("no caller"))?;
//!     Ok(format!("order {} for {caller}", ctx.path_param("id")?))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! let secret = b"a-shared-secret-of-32-bytes-min!";
//! let config = ServiceAuthConfig::builder()
//!     .shared_secret(secret)
//!     .audience("orders")
//!     .allow("/internal/orders/{id}", [
//!         "billing",
//!         "arn:aws:sts::123456789012:assumed-role/shipping-role/*",
//!     ])
//!     .build()?;
//! let app = TestApp::new(
//!     App::new()
//!         .get("/internal/orders/{id}", order)
//!         .layer(ServiceAuthLayer::new(config)),
//! )?;
//!
//! // The calling side mints a short-lived token for this service.
//! let signer = ServiceTokenSigner::new(secret)?;
//! let token = signer.sign_for("billing", "orders", SystemTime::now() + Duration::from_secs(60))?;
//! let request = events::http("GET", "/internal/orders/7").header("x-lift-service-token", &token);
//! let response = app.http(request.v2()).await?;
//! assert_eq!(response.status, 200);
//! assert_eq!(response.text(), "order 7 for billing");
//!
//! let anonymous = app.http(events::http("GET", "/internal/orders/7").v2()).await?;
//! assert_eq!(anonymous.status, 401);
//!
//! // A token billing minted for another service is no good here.
//! let elsewhere = signer.sign_for("billing", "payments", SystemTime::now() + Duration::from_secs(60))?;
//! let replayed = events::http("GET", "/internal/orders/7").header("x-lift-service-token", &elsewhere);
//! assert_eq!(app.http(replayed.v2()).await?.status, 401);
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//! [`ServiceAuthConfigBuilder::build`] returns a [`ConfigError`](crate::ConfigError) naming
//! the field; [`ServiceTokenSigner::sign`] a [`ServiceTokenError`].
//!
//! # Default
//! IAM principals accepted; no shared secret (service tokens ignored); nobody allowed on
//! unlisted routes; tokens may expire at most 15 minutes ahead; no audience checked.

mod config;
mod layer;
mod token;

pub use config::{ServiceAuthConfig, ServiceAuthConfigBuilder};
pub use layer::{ResponseFuture, ServiceAuth, ServiceAuthLayer, ServiceCaller, iam_principal};
pub use token::{SERVICE_TOKEN_HEADER, ServiceTokenError, ServiceTokenSigner};
