//! Load shedding: refuses work the function cannot do well, lowest priority first, with
//! [`lift_core::Error::Overloaded`] (503, `Retry-After`).
//!
//! A call is shed when:
//! - the requests in flight reach the limit (low priority at three quarters of it);
//! - the observed latency (an exponentially weighted average, halving for every second
//!   without an observation so that shedding ends once the load is gone) is over the
//!   target: low priority at once, normal priority past twice the target; high priority
//!   never for latency;
//! - the request's remaining time (the Lambda deadline) is shorter than the useful minimum.
//!
//! ```
//! use std::time::Duration;
//! use lift_middleware::load_shed::{LoadShedConfig, LoadShedLayer};
//!
//! let config = LoadShedConfig::builder()
//!     .max_in_flight(64)
//!     .latency_target(Duration::from_millis(250))
//!     .min_remaining(Duration::from_millis(100))
//!     .build()?;
//! let layer = LoadShedLayer::new(config);
//! # Ok::<(), lift_middleware::ConfigError>(())
//! ```
//!
//! # Default
//! 100 in flight, no latency target, 50 ms minimum remaining time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use lift_core::{BoxError, Error};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::classify::{Priority, RequestInfo, SystemClock, WallClock};
use crate::error::{ConfigError, check};

/// A validated load-shedding configuration.
#[derive(Debug, Clone)]
pub struct LoadShedConfig {
    max_in_flight: usize,
    latency_target: Option<Duration>,
    min_remaining: Duration,
}

/// Builds a [`LoadShedConfig`].
#[derive(Debug, Clone)]
pub struct LoadShedConfigBuilder {
    config: LoadShedConfig,
}

impl LoadShedConfig {
    /// Starts a configuration (see the module docs for defaults).
    pub fn builder() -> LoadShedConfigBuilder {
        LoadShedConfigBuilder {
            config: LoadShedConfig {
                max_in_flight: 100,
                latency_target: None,
                min_remaining: Duration::from_millis(50),
            },
        }
    }
}

impl LoadShedConfigBuilder {
    /// At most `n` requests in flight.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config.max_in_flight = n;
        self
    }
    /// Sheds while the average latency is over `target`.
    pub fn latency_target(mut self, target: Duration) -> Self {
        self.config.latency_target = Some(target);
        self
    }
    /// Sheds requests with less than `min` left before their deadline.
    pub fn min_remaining(mut self, min: Duration) -> Self {
        self.config.min_remaining = min;
        self
    }
    /// Validates the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field.
    pub fn build(self) -> Result<LoadShedConfig, ConfigError> {
        check(
            self.config.max_in_flight >= 1,
            "max_in_flight",
            "must be at least 1",
        )?;
        check(
            self.config.latency_target.is_none_or(|t| !t.is_zero()),
            "latency_target",
            "must be longer than zero",
        )?;
        Ok(self.config)
    }
}

struct Shared {
    config: LoadShedConfig,
    in_flight: AtomicUsize,
    /// Average latency in nanoseconds (0: nothing observed yet).
    latency: AtomicU64,
    /// When the average last moved, in nanoseconds since `epoch`.
    observed_at: AtomicU64,
    epoch: Instant,
    shed: AtomicU64,
    clock: Arc<dyn WallClock>,
}

impl Shared {
    fn nanos_since_epoch(&self) -> u64 {
        self.nanos_at(Instant::now())
    }

    fn nanos_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch)
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64
    }

    /// The average latency at `now`: it halves for every second without an observation, so
    /// that shedding which admits nothing still ends once the load is gone.
    fn current(&self, now: u64) -> u64 {
        let latency = self.latency.load(Ordering::Acquire);
        let idle = now.saturating_sub(self.observed_at.load(Ordering::Acquire));
        let halvings = idle / 1_000_000_000;
        if halvings >= 64 {
            0
        } else {
            latency >> halvings
        }
    }

    /// Observes the latency of a call that started at `started` and ends now.
    fn observe(&self, started: Instant) {
        let end = Instant::now();
        let took = end.saturating_duration_since(started);
        let sample = took.as_nanos().min(u128::from(u64::MAX)) as u64;
        let now = self.nanos_at(end);
        let decayed = self.current(now);
        let _ = self
            .latency
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |_| {
                Some(if decayed == 0 {
                    sample
                } else {
                    decayed - decayed / 5 + sample / 5
                })
            });
        self.observed_at.store(now, Ordering::Release);
    }

    /// Takes a place in flight, or says why not (keeping no place then).
    fn admit(&self, request: &impl RequestInfo, now: Instant) -> Result<(), &'static str> {
        let priority = request.priority();
        let max = self.config.max_in_flight;
        let limit = if priority == Priority::Low {
            max * 3 / 4
        } else {
            max
        };
        // Count first, then check: two calls at once cannot both take the last place.
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= limit.max(1) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err("too many requests in flight");
        }
        match self.refuse(request, priority, now) {
            Some(reason) => {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                Err(reason)
            }
            None => Ok(()),
        }
    }

    fn refuse(
        &self,
        request: &impl RequestInfo,
        priority: Priority,
        now: Instant,
    ) -> Option<&'static str> {
        if let Some(target) = self.config.latency_target {
            let latency = Duration::from_nanos(self.current(self.nanos_at(now)));
            let shed = match priority {
                Priority::Low => latency > target,
                Priority::Normal => latency > target * 2,
                Priority::High => false,
            };
            if shed {
                return Some("latency is over its target");
            }
        }
        if let Some(deadline) = request.deadline() {
            let left = deadline
                .duration_since(self.clock.now())
                .unwrap_or(Duration::ZERO);
            if left < self.config.min_remaining {
                return Some("too little time left before the deadline");
            }
        }
        None
    }
}

/// Applies [`LoadShed`].
#[derive(Clone)]
pub struct LoadShedLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LoadShedLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadShedLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl LoadShedLayer {
    /// Sheds load as `config` says.
    pub fn new(config: LoadShedConfig) -> Self {
        Self::with_clock(config, SystemClock)
    }

    /// Reads the wall time (against deadlines) from `clock`.
    pub fn with_clock(config: LoadShedConfig, clock: impl WallClock) -> Self {
        LoadShedLayer {
            shared: Arc::new(Shared {
                config,
                in_flight: AtomicUsize::new(0),
                latency: AtomicU64::new(0),
                observed_at: AtomicU64::new(0),
                epoch: Instant::now(),
                shed: AtomicU64::new(0),
                clock: Arc::new(clock),
            }),
        }
    }

    /// Requests shed so far.
    pub fn shed(&self) -> u64 {
        self.shared.shed.load(Ordering::Relaxed)
    }

    /// The current average latency (decayed while nothing was observed).
    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.shared.current(self.shared.nanos_since_epoch()))
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The load-shedding service.
#[derive(Clone)]
pub struct LoadShed<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for LoadShed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadShed").finish_non_exhaustive()
    }
}

crate::inner_accessors!(LoadShed<S>);

/// Counts a request in flight until it finishes or is dropped.
struct InFlight {
    shared: Arc<Shared>,
    started: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, Req> Service<Req> for LoadShed<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: RequestInfo,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // One reading of the clock for the latency check and the call's start.
        let now = Instant::now();
        if let Err(reason) = self.shared.admit(&request, now) {
            self.shared.shed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "lift::load_shed", reason, "request shed");
            return ResponseFuture {
                inner: None,
                guard: None,
                refused: Some(reason),
            };
        }
        let guard = InFlight {
            shared: self.shared.clone(),
            started: now,
        };
        ResponseFuture {
            inner: Some(self.inner.call(request)),
            guard: Some(guard),
            refused: None,
        }
    }
}

pin_project! {
    /// Resolves to the inner result (its latency observed), or at once to
    /// [`Error::Overloaded`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        guard: Option<InFlight>,
        refused: Option<&'static str>,
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
            Some(inner) => match inner.poll(cx) {
                Poll::Ready(result) => {
                    if let Some(guard) = this.guard.take() {
                        guard.shared.observe(guard.started);
                    }
                    Poll::Ready(result.map_err(Into::into))
                }
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Ready(Err(Box::new(Error::Overloaded {
                reason: this.refused.take().unwrap_or("shed"),
            }))),
        }
    }
}
