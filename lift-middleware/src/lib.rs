//! # lift-middleware
//!
//! Tower layers that protect a Lift function and what it calls: [`load_shed`],
//! [`rate_limit`], [`bulkhead`], [`circuit_breaker`], [`timeout`] and [`retry`]. Each is a `tower::Layer`, so it wraps a whole [`lift_core::App`] (through
//! `App::layer`), or any tower service such as an outbound client. Configurations are
//! validated when built ([`ConfigError`]); refusals are typed [`lift_core::Error`]s with
//! their HTTP status and headers.
//!
//! Not built yet: tenancy, security, observability, idempotency and caching layers.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)
)]

pub mod bulkhead;
pub mod circuit_breaker;
pub mod classify;
mod error;
pub mod load_shed;
pub mod rate_limit;
pub mod retry;
pub mod timeout;

pub use error::ConfigError;
