//! # lift-middleware
//!
//! Tower layers for Lift Apps: resilience (circuit breaker, bulkhead, retry, timeout, rate
//! limiting, load shedding), tenancy and security, observability, idempotency and caching.
//!
//! Not built yet: this crate is an empty shell so the workspace has its final shape. Any
//! `tower::Layer` already composes with a Lift App through [`lift_core::App::layer`].
