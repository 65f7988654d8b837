//! Circuit breaker: stops calling a dependency that keeps failing, and probes it again
//! after a while.
//!
//! States closed → open → half-open → closed. The breaker opens on `n` failures in a row,
//! on a failure rate or a slow-call rate over a sliding window (the last `n` calls, or the
//! last `d` in buckets) once a minimum number of calls was seen. It stays open for a while,
//! growing with backoff on repeated trips, then admits a bounded number of probes and closes
//! after enough of them succeed. A [`Classifier`](crate::classify::Classifier) decides what
//! a failure is (default: errors, timeouts and 5xx, not 4xx).
//!
//! One breaker, or one per key (tenant, operation) in a bounded map that never drops an
//! open breaker ([`CircuitBreakerBuilder::keyed`]). An unkeyed breaker's call path takes
//! no lock: state, counters and the window are atomics; a keyed one looks its key up
//! under a lock.
//!
//! ```
//! use std::time::Duration;
//! use lift_middleware::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
//!
//! let config = CircuitBreakerConfig::builder("payments")
//!     .failure_rate(0.5)
//!     .min_calls(20)
//!     .open_for(Duration::from_secs(30))
//!     .build()?;
//! let layer = CircuitBreakerLayer::new(config);
//! # Ok::<(), lift_middleware::ConfigError>(())
//! ```
//!
//! # Errors
//! A refused call fails with [`lift_core::Error::CircuitOpen`] (503, `Retry-After`).
//!
//! # Lambda
//! One execution environment sees few calls, so a local breaker with a high `min_calls` may
//! never trip: prefer consecutive failures or a small window there, or share the state of
//! all environments in DynamoDB with [`SharedCircuitBreakerLayer`] (its cost in DynamoDB
//! calls is documented there).

mod config;
mod future;
mod keyed;
mod layer;
#[cfg(feature = "dynamodb")]
mod shared;
mod state;

pub use config::{CircuitBreakerConfig, CircuitBreakerConfigBuilder, Window};
pub use future::ResponseFuture;
pub use layer::{CircuitBreaker, CircuitBreakerBuilder, CircuitBreakerLayer, Fallback, NoFallback};
#[cfg(feature = "dynamodb")]
pub use shared::{
    SHARED_STORE_TIMEOUT, SharedCircuitBreaker, SharedCircuitBreakerLayer, SharedResponseFuture,
};
pub use state::{Metrics, State, StateChange};
