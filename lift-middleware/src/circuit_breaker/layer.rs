//! [`CircuitBreakerLayer`] and the [`CircuitBreaker`] service.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use lift_core::{BoxError, Error};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::config::CircuitBreakerConfig;
use super::future::{Guard, ResponseFuture};
use super::keyed::Breakers;
use super::state::{Breaker, Metrics, OnChange, State, StateChange};
use crate::classify::{Classifier, DefaultClassifier, KeyOf, Unkeyed};
use crate::error::{ConfigError, check};

/// What to answer instead of failing fast while the breaker is open.
pub trait Fallback<Res>: Send + Sync + 'static {
    /// A response standing in for the refused call, or `None` to fail with the error.
    fn fallback(&self, error: &Error) -> Option<Res>;
}

/// No fallback: an open breaker fails fast with [`Error::CircuitOpen`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFallback;

impl<Res> Fallback<Res> for NoFallback {
    fn fallback(&self, _: &Error) -> Option<Res> {
        None
    }
}

impl<Res, F> Fallback<Res> for F
where
    F: Fn(&Error) -> Option<Res> + Send + Sync + 'static,
{
    fn fallback(&self, error: &Error) -> Option<Res> {
        self(error)
    }
}

pub(crate) struct Shared<C, K, F> {
    config: CircuitBreakerConfig,
    pub(crate) classifier: Arc<C>,
    key: K,
    fallback: F,
    single: Arc<Breaker>,
    keyed: Option<Breakers>,
}

impl<C, K, F> Shared<C, K, F> {
    fn breaker(&self, key: Option<String>, now: Instant) -> Arc<Breaker> {
        match (key, &self.keyed) {
            (Some(key), Some(breakers)) => breakers.get(key, now),
            _ => self.single.clone(),
        }
    }
}

/// Builds a [`CircuitBreakerLayer`].
pub struct CircuitBreakerBuilder<C = DefaultClassifier, K = Unkeyed, F = NoFallback> {
    config: CircuitBreakerConfig,
    classifier: C,
    key: K,
    fallback: F,
    max_keys: u64,
    idle: Duration,
    keyed: bool,
    on_change: Option<OnChange>,
}

impl<C, K, F> CircuitBreakerBuilder<C, K, F> {
    /// Decides what counts as a failure (default: [`DefaultClassifier`]).
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerBuilder<C2, K, F> {
        CircuitBreakerBuilder {
            config: self.config,
            classifier,
            key: self.key,
            fallback: self.fallback,
            max_keys: self.max_keys,
            idle: self.idle,
            keyed: self.keyed,
            on_change: self.on_change,
        }
    }

    /// One breaker per key (tenant, operation, ...), at most `max_keys` of them, so a flood
    /// of distinct keys cannot exhaust memory.
    ///
    /// A breaker goes only to make room for another key, and only with no call in flight
    /// and either at rest (closed, no failure or slow call in its window) or unused for
    /// `idle` (at most a year) and not open: an open breaker is never dropped while its open
    /// time runs. (One whose open time has passed and that then sees no call for `idle`
    /// may go, and its key starts again closed, without the backoff of its trips.) When no
    /// breaker may go, keys without one share one more breaker, named `NAME:*` (logged at
    /// WARN once a minute while it is used); while the room is full, they are refused for
    /// each other's failures. Once there is room, a key gets a closed breaker of its own
    /// (within a second), so one whose failures opened the shared breaker fails as many
    /// times again as a new key may before its own opens.
    pub fn keyed<K2>(
        self,
        key: K2,
        max_keys: u64,
        idle: Duration,
    ) -> CircuitBreakerBuilder<C, K2, F> {
        CircuitBreakerBuilder {
            config: self.config,
            classifier: self.classifier,
            key,
            fallback: self.fallback,
            max_keys,
            idle,
            keyed: true,
            on_change: self.on_change,
        }
    }

    /// Answers with `fallback` instead of failing fast while open.
    pub fn fallback<F2>(self, fallback: F2) -> CircuitBreakerBuilder<C, K, F2> {
        CircuitBreakerBuilder {
            config: self.config,
            classifier: self.classifier,
            key: self.key,
            fallback,
            max_keys: self.max_keys,
            idle: self.idle,
            keyed: self.keyed,
            on_change: self.on_change,
        }
    }

    /// Calls `callback` on every state change (also logged at WARN, target
    /// `lift::circuit_breaker`).
    pub fn on_state_change(
        mut self,
        callback: impl Fn(&StateChange) + Send + Sync + 'static,
    ) -> Self {
        self.on_change = Some(Arc::new(callback));
        self
    }

    /// The layer.
    ///
    /// # Errors
    /// [`ConfigError`] for a keyed breaker with room for no key (`max_keys` 0, which
    /// would put every key behind one breaker) or an `idle` time of zero.
    pub fn build(self) -> Result<CircuitBreakerLayer<C, K, F>, ConfigError> {
        if self.keyed {
            check(self.max_keys >= 1, "max_keys", "must be at least 1")?;
            check(!self.idle.is_zero(), "idle", "must be longer than zero")?;
        }
        Ok(self.assemble())
    }

    /// The layer, from a configuration known to be valid.
    fn assemble(self) -> CircuitBreakerLayer<C, K, F> {
        let single = Arc::new(Breaker::new(
            self.config.clone(),
            self.config.name.clone(),
            self.on_change.clone(),
        ));
        let keyed = (self.max_keys > 0).then(|| {
            Breakers::new(
                self.config.clone(),
                self.on_change.clone(),
                self.max_keys,
                self.idle.min(crate::classify::MAX_IDLE),
            )
        });
        CircuitBreakerLayer {
            shared: Arc::new(Shared {
                config: self.config,
                classifier: Arc::new(self.classifier),
                key: self.key,
                fallback: self.fallback,
                single,
                keyed,
            }),
        }
    }
}

/// Applies a circuit breaker: closed → open → half-open → closed. While open, calls fail
/// fast with [`Error::CircuitOpen`] (503 with `Retry-After` for HTTP) or get the fallback.
pub struct CircuitBreakerLayer<C = DefaultClassifier, K = Unkeyed, F = NoFallback> {
    shared: Arc<Shared<C, K, F>>,
}

impl<C, K, F> Clone for CircuitBreakerLayer<C, K, F> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<C, K, F> std::fmt::Debug for CircuitBreakerLayer<C, K, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("name", &self.shared.config.name)
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerLayer {
    /// A breaker with `config`, the default classifier, unkeyed, no fallback.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        // Unkeyed: nothing for `build` to refuse.
        Self::builder(config).assemble()
    }

    /// Starts a breaker with `config`.
    pub fn builder(config: CircuitBreakerConfig) -> CircuitBreakerBuilder {
        CircuitBreakerBuilder {
            config,
            classifier: DefaultClassifier,
            key: Unkeyed,
            fallback: NoFallback,
            max_keys: 0,
            idle: Duration::from_secs(600),
            keyed: false,
            on_change: None,
        }
    }
}

impl<C, K, F> CircuitBreakerLayer<C, K, F> {
    /// The state of the unkeyed breaker, or of the breaker for `key`: `None` when `key` has
    /// no breaker of its own (never seen, dropped to make room, or on the shared one).
    pub fn state(&self, key: Option<&str>) -> Option<State> {
        self.breaker_ref(key).map(|b| b.state(Instant::now()))
    }

    /// The counters of the unkeyed breaker, or of the breaker for `key` (`None` as for
    /// [`Self::state`]).
    pub fn metrics(&self, key: Option<&str>) -> Option<Metrics> {
        self.breaker_ref(key).map(|b| b.metrics())
    }

    fn breaker_ref(&self, key: Option<&str>) -> Option<Arc<Breaker>> {
        match (key, &self.shared.keyed) {
            (Some(key), Some(breakers)) => breakers.find(key),
            (None, _) => Some(self.shared.single.clone()),
            (Some(_), None) => None,
        }
    }
}

impl<S, C, K, F> Layer<S> for CircuitBreakerLayer<C, K, F> {
    type Service = CircuitBreaker<S, C, K, F>;
    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The circuit breaker service.
pub struct CircuitBreaker<S, C = DefaultClassifier, K = Unkeyed, F = NoFallback> {
    inner: S,
    shared: Arc<Shared<C, K, F>>,
}

impl<S: Clone, C, K, F> Clone for CircuitBreaker<S, C, K, F> {
    fn clone(&self) -> Self {
        CircuitBreaker {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, C, K, F> std::fmt::Debug for CircuitBreaker<S, C, K, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.shared.config.name)
            .finish_non_exhaustive()
    }
}

crate::inner_accessors!(CircuitBreaker<S, C, K, F>);

impl<S, Req, C, K, F> Service<Req> for CircuitBreaker<S, C, K, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classifier<S::Response>,
    K: KeyOf<Req>,
    F: Fallback<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, S::Response>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let now = Instant::now();
        let breaker = self.shared.breaker(self.shared.key.key_of(&request), now);
        match breaker.acquire(now) {
            Ok(permit) => ResponseFuture::called(
                self.inner.call(request),
                Guard::new(breaker, self.shared.classifier.clone(), permit, now),
            ),
            Err(retry_after) => {
                let error = Error::CircuitOpen {
                    name: breaker.name.clone(),
                    retry_after,
                };
                tracing::debug!(target: "lift::circuit_breaker", breaker = %breaker.name, "call refused: open");
                match self.shared.fallback.fallback(&error) {
                    Some(response) => ResponseFuture::rejected(Ok(response)),
                    None => ResponseFuture::rejected(Err(Box::new(error))),
                }
            }
        }
    }
}
