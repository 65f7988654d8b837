//! What an environment observes about itself, reported with each lease renewal: its error
//! rate and its open circuit breakers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use lift_core::{BoxError, Context, Response};
use lift_middleware::circuit_breaker::{State, StateChange};
use tokio::time::Instant;
use tower::{Layer, Service};

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    failures: AtomicU64,
    /// Each open breaker, by name, with when it lets a probe through: it is open until
    /// then (or until it reports leaving), whether or not anything calls it again.
    open_breakers: Mutex<HashMap<Arc<str>, Instant>>,
    registrations: AtomicU64,
    edges: Mutex<BTreeMap<String, u64>>,
}

/// Counters an environment's invocations feed and its registration reads: cheap to clone,
/// atomics only.
///
/// [`HealthLayer`] counts calls and failures (errors and 5xx); [`HealthSignals::breaker_listener`]
/// follows circuit breakers from lift-middleware.
#[derive(Debug, Clone, Default)]
pub struct HealthSignals {
    counters: Arc<Counters>,
}

/// What [`HealthSignals::take`] read.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Observed {
    /// Calls since the previous read.
    pub calls: u64,
    /// Failed calls since the previous read.
    pub failures: u64,
    /// Breakers open now: opened and neither left open nor past their open time (a
    /// breaker nothing calls again is no longer counted once a probe could pass).
    pub open_breakers: u32,
}

impl Observed {
    /// The share of failed calls, 0.0 without calls.
    pub fn error_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.failures.min(self.calls) as f64 / self.calls as f64
        }
    }
}

impl HealthSignals {
    /// Fresh counters.
    pub fn new() -> Self {
        HealthSignals::default()
    }

    /// Records one call's outcome.
    pub fn record(&self, failed: bool) {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads and resets the call counters.
    pub fn take(&self) -> Observed {
        Observed {
            calls: self.counters.calls.swap(0, Ordering::Relaxed),
            failures: self.counters.failures.swap(0, Ordering::Relaxed),
            open_breakers: self.open_breakers(),
        }
    }

    fn open_breakers(&self) -> u32 {
        let mut open = match self.counters.open_breakers.lock() {
            Ok(open) => open,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        open.retain(|_, until| *until > now);
        u32::try_from(open.len()).unwrap_or(u32::MAX)
    }

    /// Follows breaker state changes: pass it to lift-middleware's
    /// `CircuitBreakerBuilder::on_state_change`.
    pub fn breaker_listener(&self) -> impl Fn(&StateChange) + Send + Sync + 'static {
        let counters = self.counters.clone();
        move |change: &StateChange| {
            let mut open = match counters.open_breakers.lock() {
                Ok(open) => open,
                Err(poisoned) => poisoned.into_inner(),
            };
            if change.to == State::Open {
                // A breaker says how long it stays open; one that does not is counted for
                // a day at most, unless it reports leaving.
                let open_for = change.open_for.unwrap_or(Duration::from_secs(24 * 3600));
                open.insert(change.name.clone(), Instant::now() + open_for);
            } else if change.from == State::Open {
                open.remove(&change.name);
            }
        }
    }

    /// Counts a call to `callee` (the service client does, when built with these signals):
    /// reported with the lease renewals as the environment's edges of the dependency map.
    pub fn record_call(&self, callee: &str) {
        let mut calls = match self.counters.edges.lock() {
            Ok(calls) => calls,
            Err(poisoned) => poisoned.into_inner(),
        };
        match calls.get_mut(callee) {
            Some(n) => *n += 1,
            None => {
                calls.insert(callee.to_owned(), 1);
            }
        }
    }

    /// The calls counted so far, by callee.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        match self.counters.edges.lock() {
            Ok(calls) => calls.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Counts a registry write, to be flushed into the next invocation's EMF metrics.
    pub(crate) fn registered(&self) {
        self.counters.registrations.fetch_add(1, Ordering::Relaxed);
    }

    fn take_registrations(&self) -> u64 {
        if self.counters.registrations.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.counters.registrations.swap(0, Ordering::Relaxed)
    }
}

/// Counts every call's outcome into [`HealthSignals`], and puts the registry writes made
/// since the previous invocation in the invocation's metrics (`RegistryWrites`).
/// [`crate::RegisterExt::register`] adds it.
#[derive(Debug, Clone)]
pub struct HealthLayer {
    signals: HealthSignals,
}

impl HealthLayer {
    /// A layer feeding `signals`.
    pub fn new(signals: HealthSignals) -> Self {
        HealthLayer { signals }
    }
}

impl<S> Layer<S> for HealthLayer {
    type Service = HealthService<S>;
    fn layer(&self, inner: S) -> HealthService<S> {
        HealthService {
            inner,
            signals: self.signals.clone(),
        }
    }
}

/// The service [`HealthLayer`] makes.
#[derive(Debug, Clone)]
pub struct HealthService<S> {
    inner: S,
    signals: HealthSignals,
}

impl<S> Service<Context> for HealthService<S>
where
    S: Service<Context, Response = Response, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ctx: Context) -> Self::Future {
        let writes = self.signals.take_registrations();
        if writes > 0 {
            let _ = ctx.metrics().count("RegistryWrites", writes as f64);
        }
        let signals = self.signals.clone();
        let future = self.inner.call(ctx);
        Box::pin(async move {
            let result = future.await;
            let failed = match &result {
                Ok(response) => response.status().is_server_error(),
                Err(error) => !lift_middleware::classify::is_client_error(error),
            };
            signals.record(failed);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rate_and_breakers_are_read_and_reset() {
        let signals = HealthSignals::new();
        for failed in [true, false, false, true] {
            signals.record(failed);
        }
        let listen = signals.breaker_listener();
        let change = |name: &str, from, to| {
            StateChange::new(
                name,
                from,
                to,
                (to == State::Open).then_some(Duration::from_secs(30)),
            )
        };
        listen(&change("a", State::Closed, State::Open));
        listen(&change("b", State::Closed, State::Open));
        listen(&change("b", State::Open, State::HalfOpen));
        let seen = signals.take();
        assert_eq!(seen.error_rate(), 0.5);
        assert_eq!(seen.open_breakers, 1);
        assert_eq!(signals.take().calls, 0, "reset");
        assert_eq!(signals.take().error_rate(), 0.0);
    }

    /// A breaker that opened and that nothing called again (its instance left, say) is no
    /// longer reported open once its open time is over: it would let a probe through.
    #[tokio::test(start_paused = true)]
    async fn a_breaker_nothing_calls_again_stops_counting_when_its_open_time_ends() {
        let signals = HealthSignals::new();
        let listen = signals.breaker_listener();
        listen(&StateChange::new(
            "payments:a",
            State::Closed,
            State::Open,
            Some(Duration::from_secs(30)),
        ));
        assert_eq!(signals.take().open_breakers, 1);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(signals.take().open_breakers, 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(signals.take().open_breakers, 0);
    }
}
