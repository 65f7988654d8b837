//! # lift-middleware
//!
//! Tower layers that protect a Lift function and what it calls: [`load_shed`],
//! [`rate_limit`], [`bulkhead`], [`circuit_breaker`], [`timeout`] and [`retry`], with
//! named [`presets`]. Each is a `tower::Layer`, so it wraps a whole [`lift_core::App`]
//! (through `App::layer`, per request and per batch record), or any tower service such as
//! an outbound client. Configurations are validated when built ([`ConfigError`]); a refusal
//! is a typed [`lift_core::Error`] (`CircuitOpen`, `BulkheadFull`, `Timeout`,
//! `RateLimited`, `Overloaded`) that Lift answers with its status and headers (503 and
//! `Retry-After`, 504, 429 and `RateLimit-*`).
//!
//! The unkeyed load shed, rate limit, bulkhead, circuit breaker and timeout layers
//! allocate nothing and take no lock for a call they let through at once (a refusal, a
//! bulkhead's queue and a breaker's change of state do); keyed ones build their key
//! (a `String`) per call and look it up in a map, and retry boxes its future. See
//! `benches/layers.rs` for what each costs.
//!
//! # Order
//! Outermost first: load shed → rate limit → bulkhead → circuit breaker → timeout → retry.
//! `ServiceBuilder` lists layers outermost first:
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use lift_core::{App, Context, Result};
//! use lift_middleware::{presets, load_shed, rate_limit::RateLimitLayer, timeout::TimeoutLayer};
//! use tower::ServiceBuilder;
//!
//! async fn quote(_ctx: Context) -> Result<String> {
//!     Ok("42".to_owned())
//! }
//!
//! # fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! let stack = ServiceBuilder::new()
//!     .layer(load_shed::LoadShedLayer::new(load_shed::LoadShedConfig::builder().build()?))
//!     .layer(RateLimitLayer::per_second(NonZeroU32::new(50).ok_or("zero")?))
//!     .layer(presets::priority_bulkhead("quotes", 32, 8)?)
//!     .layer(presets::per_operation_breaker("quotes")?)
//!     .layer(TimeoutLayer::deadline_aware(Duration::from_secs(3), Duration::from_millis(100))?)
//!     .layer(presets::http_retry());
//! let service = App::new().get("/quote", quote).layer(stack).into_service()?;
//! # let _ = service;
//! # Ok(())
//! # }
//! ```
//!
//! Shared state across execution environments lives in DynamoDB:
//! [`circuit_breaker::SharedCircuitBreakerLayer`] and [`rate_limit::dynamodb`].
//!
//! Who may call: [`auth`] (bearer JWTs, scope and role requirements), [`tenancy`] (tenant
//! resolution and tenant-scoped DynamoDB access), [`service_auth`] (service-to-service
//! authorization) and [`http_security`] (CORS, security headers).
//!
//! Exactly-once effects: [`idempotency`], in Powertools for AWS Lambda's DynamoDB layout.
//!
//! Traces, correlation ids and tenants carried onto published SQS messages and
//! EventBridge events: [`propagate`].
//!
//! Answers kept for reuse: [`cache`], in memory, in DynamoDB or both.
//!
//! Payloads checked against JSON Schemas (draft 2020-12) and custom rules, and responses
//! against theirs: [`validation`].
//!
//! Responses compressed with `gzip` or `deflate` for clients that accept it:
//! [`compression`].
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)
)]

/// Implements `get_ref`, `get_mut` and `into_inner` for a service that wraps `inner: S`.
macro_rules! inner_accessors {
    ($service:ident < S $(, $param:ident $(: $bound:path)?)* >) => {
        impl<S $(, $param $(: $bound)?)*> $service<S $(, $param)*> {
            /// The wrapped service.
            pub fn get_ref(&self) -> &S {
                &self.inner
            }
            /// The wrapped service, mutably.
            pub fn get_mut(&mut self) -> &mut S {
                &mut self.inner
            }
            /// Unwraps the service.
            pub fn into_inner(self) -> S {
                self.inner
            }
        }
    };
}
pub(crate) use inner_accessors;

/// Takes the service that `poll_ready` readied out of `slot` for a call that outlives
/// `&mut self` (a boxed future), leaving a clone in its place, as tower's docs advise.
pub(crate) fn take_ready<S: Clone>(slot: &mut S) -> S {
    let fresh = slot.clone();
    std::mem::replace(slot, fresh)
}

/// Boxes a service's error, as a named function pointer for `TryFutureExt::map_err`.
pub(crate) type IntoBox<E> = fn(E) -> lift_core::BoxError;

pub mod auth;
pub mod bulkhead;
pub mod cache;
pub mod circuit_breaker;
pub mod classify;
#[cfg(feature = "compression")]
pub mod compression;
#[cfg(feature = "dynamodb")]
pub mod dynamo;
mod error;
pub mod http_security;
#[cfg(feature = "idempotency")]
pub mod idempotency;
pub mod load_shed;
#[cfg(feature = "cloudwatch")]
pub mod metrics_sink;
pub mod presets;
#[cfg(feature = "propagate")]
pub mod propagate;
pub mod rate_limit;
#[cfg(feature = "jwt")]
pub mod refusal;
pub mod retry;
#[cfg(feature = "jwt")]
pub mod service_auth;
pub mod tenancy;
pub mod timeout;
#[cfg(feature = "validation")]
pub mod validation;

pub use error::ConfigError;
