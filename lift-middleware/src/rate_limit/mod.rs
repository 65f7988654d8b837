//! Local rate limiting: a GCRA token bucket per execution environment (the `governor`
//! crate), globally (lock-free, one atomic compare-and-swap per call) or per key (tenant,
//! user, API key, IP) in a bounded map behind a lock ([`RateLimitLayer::keyed`]). A refused
//! call fails with
//! [`lift_core::Error::RateLimited`]: 429 with `Retry-After` and the `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset` headers.
//!
//! Lambda runs many environments at once: a local limit is per environment, not per
//! function. For one limit across environments, use [`dynamodb`].
//!
//! ```
//! use std::num::NonZeroU32;
//! use lift_middleware::rate_limit::RateLimitLayer;
//!
//! let per_second = NonZeroU32::new(100).expect("non-zero");
//! let layer = RateLimitLayer::per_second(per_second);
//! # let _ = layer;
//! ```

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use lift_core::{BoxError, Error};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::classify::{KeyOf, Unkeyed};

mod buckets;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;

use buckets::PerKey;

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

struct Shared<C: Clock, K> {
    quota: Quota,
    clock: C,
    global: Limiter<C>,
    key: K,
    per_key: Option<PerKey<C>>,
}

/// Applies a [`RateLimit`].
pub struct RateLimitLayer<K = Unkeyed, C: Clock = DefaultClock> {
    shared: Arc<Shared<C, K>>,
}

impl<K, C: Clock> Clone for RateLimitLayer<K, C> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<K, C: Clock> std::fmt::Debug for RateLimitLayer<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("quota", &self.shared.quota)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// `n` calls per second, in bursts of up to `n`.
    pub fn per_second(n: NonZeroU32) -> Self {
        Self::new(Quota::per_second(n))
    }

    /// Any `governor` quota (per second, minute or hour, with a burst size).
    pub fn new(quota: Quota) -> Self {
        Self::with_clock(quota, DefaultClock::default())
    }
}

impl<C: Clock + Clone + Send + Sync + 'static> RateLimitLayer<Unkeyed, C> {
    /// A limiter reading time from `clock` (a `governor::clock::FakeRelativeClock` in tests).
    pub fn with_clock(quota: Quota, clock: C) -> Self {
        RateLimitLayer {
            shared: Arc::new(Shared {
                global: RateLimiter::direct_with_clock(quota, clock.clone()),
                quota,
                clock,
                key: Unkeyed,
                per_key: None,
            }),
        }
    }

    /// One bucket per key instead of one for all, at most `max_keys` buckets; requests
    /// without a key share the global bucket.
    ///
    /// No key gets more than the quota, however many keys are active. A bucket is dropped
    /// only once it has refilled, and a second more (dropped sooner, its key would start
    /// again with a full burst). When all `max_keys` buckets still hold their keys back,
    /// keys without a bucket share one more, the overflow bucket: during a flood of new
    /// keys, keys that already have a bucket keep their own quota and new ones share one
    /// (logged at WARN at most once a minute while it is used). A key that finds room again
    /// starts its bucket where the overflow bucket stands, so what it drew from that one
    /// still counts. With `max_keys` 0, every key shares the overflow bucket.
    ///
    /// Under contention, a call whose thread stalls for over a second plus a burst's
    /// refill between reading the clock and taking the map's lock may find its key's
    /// bucket dropped by a sweep meanwhile and get one call more.
    pub fn keyed<K>(self, key: K, max_keys: u64) -> RateLimitLayer<K, C> {
        let shared = &self.shared;
        RateLimitLayer {
            shared: Arc::new(Shared {
                global: RateLimiter::direct_with_clock(shared.quota, shared.clock.clone()),
                quota: shared.quota,
                clock: shared.clock.clone(),
                key,
                per_key: Some(PerKey::new(shared.quota, shared.clock.clone(), max_keys)),
            }),
        }
    }
}

impl<S, K, C: Clock> Layer<S> for RateLimitLayer<K, C> {
    type Service = RateLimit<S, K, C>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The rate-limit service.
pub struct RateLimit<S, K = Unkeyed, C: Clock = DefaultClock> {
    inner: S,
    shared: Arc<Shared<C, K>>,
}

impl<S: Clone, K, C: Clock> Clone for RateLimit<S, K, C> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, K, C: Clock> std::fmt::Debug for RateLimit<S, K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").finish_non_exhaustive()
    }
}

crate::inner_accessors!(RateLimit<S, K, C: Clock>);

impl<S, K, C, Req> Service<Req> for RateLimit<S, K, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: KeyOf<Req>,
    C: Clock + Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let shared = &self.shared;
        let checked = match (&shared.per_key, shared.key.key_of(&request)) {
            (Some(per_key), Some(key)) => per_key.check(&key, &shared.clock),
            _ => shared.global.check(),
        };
        match checked {
            Ok(()) => ResponseFuture {
                inner: Some(self.inner.call(request)),
                refused: None,
            },
            Err(not_until) => {
                let wait = not_until.wait_time_from(shared.clock.now());
                tracing::debug!(target: "lift::rate_limit", ?wait, "call refused: rate limited");
                ResponseFuture {
                    inner: None,
                    refused: Some(Error::RateLimited {
                        limit: u64::from(shared.quota.burst_size().get()),
                        remaining: 0,
                        reset: shared.quota.burst_size_replenished_in(),
                        retry_after: wait,
                    }),
                }
            }
        }
    }
}

pin_project! {
    /// Resolves to the inner result, or at once to [`Error::RateLimited`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        refused: Option<Error>,
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            Some(inner) => inner.poll(cx).map_err(Into::into),
            None => Poll::Ready(Err(Box::new(this.refused.take().unwrap_or(
                Error::Overloaded {
                    reason: "rate limit future polled after completion",
                },
            )))),
        }
    }
}
