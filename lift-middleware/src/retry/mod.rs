//! Retry: tries a call again when the failure is worth it, with backoff and jitter, within
//! the attempt, delay, budget and deadline limits.
//!
//! - Backoff: fixed, linear, exponential or custom ([`Backoff`]); jitter: none, full, equal
//!   or decorrelated ([`Jitter`]); at most `max_attempts` attempts and `max_total_delay` of
//!   sleeping.
//! - What is retried: a [`RetryPolicy`]; the default retries 429, 500, 502, 503 and 504,
//!   timeouts and transport errors, honours `Retry-After`, and never retries a
//!   non-idempotent request (POST, PATCH) unless told to. Statuses listed as non-retryable
//!   override the retryable ones.
//! - Deadline-aware: an attempt that cannot finish before the request's deadline (minus a
//!   margin) is not started; the last error is returned instead.
//! - A retry budget (a token bucket shared by every call through the layer, as the AWS SDKs
//!   have) stops a failing dependency from being hit with multiplied traffic.
//! - Per-attempt and total timeouts ([`lift_core::Error::Timeout`]).
//!
//! ```
//! use std::time::Duration;
//! use lift_middleware::retry::{Backoff, Jitter, RetryConfig, RetryLayer};
//!
//! let config = RetryConfig::builder()
//!     .max_attempts(4)
//!     .backoff(Backoff::Exponential { initial: Duration::from_millis(50), factor: 2.0 })
//!     .jitter(Jitter::Full)
//!     .per_attempt_timeout(Duration::from_millis(800))
//!     .build()?;
//! let layer = RetryLayer::new(config);
//! # Ok::<(), lift_middleware::ConfigError>(())
//! ```
//!
//! # Default
//! 3 attempts, exponential backoff from 100 ms ×2 with full jitter, at most 5 s per delay
//! and 10 s of delays in all, a 50 ms deadline margin, and a budget of 500 tokens (5 per
//! retry, 10 per retry after a timeout, 1 back per success).

mod backoff;
mod budget;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use lift_core::{BoxError, Error};
use tower::{Layer, Service, ServiceExt};

pub use backoff::{Backoff, Jitter};
pub use budget::RetryBudget;

use crate::classify::{RequestInfo, ResponseStatus, SystemClock, WallClock};
use crate::error::{ConfigError, check};

/// Whether (and when) to try again after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Done: return this result.
    Stop,
    /// Try again, no sooner than the given delay when the answer asked for one.
    Retry {
        /// The server's `Retry-After`, if it gave one.
        after: Option<Duration>,
    },
}

/// Decides whether an attempt's result is worth another attempt.
pub trait RetryPolicy<Res>: Send + Sync + 'static {
    /// The decision for `result`.
    fn decide(&self, result: &Result<Res, BoxError>) -> Decision;
}

impl<Res, F> RetryPolicy<Res> for F
where
    F: Fn(&Result<Res, BoxError>) -> Decision + Send + Sync + 'static,
{
    fn decide(&self, result: &Result<Res, BoxError>) -> Decision {
        self(result)
    }
}

/// The default policy: retryable statuses (from the config), timeouts and transport errors.
#[derive(Debug, Clone)]
pub struct StatusPolicy {
    retryable: Arc<[u16]>,
    never: Arc<[u16]>,
}

impl<Res: ResponseStatus> RetryPolicy<Res> for StatusPolicy {
    fn decide(&self, result: &Result<Res, BoxError>) -> Decision {
        let by_status = |status: u16, after: Option<Duration>| {
            if !self.never.contains(&status) && self.retryable.contains(&status) {
                Decision::Retry { after }
            } else {
                Decision::Stop
            }
        };
        match result {
            Ok(response) => match response.status_code() {
                Some(status) => by_status(status, response.retry_after()),
                None => Decision::Stop,
            },
            Err(error) => match error.downcast_ref::<Error>() {
                // An open breaker answers the same until it half-opens: do not hammer it.
                Some(Error::CircuitOpen { .. }) => Decision::Stop,
                Some(lift) => by_status(lift.status().as_u16(), lift.retry_after()),
                // Not a Lift error: a transport or SDK failure.
                None => Decision::Retry { after: None },
            },
        }
    }
}

/// A validated retry configuration.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    max_attempts: u32,
    backoff: Backoff,
    jitter: Jitter,
    max_delay: Duration,
    max_total_delay: Duration,
    policy: StatusPolicy,
    retry_non_idempotent: bool,
    per_attempt_timeout: Option<Duration>,
    total_timeout: Option<Duration>,
    deadline_margin: Duration,
    budget: Option<Arc<RetryBudget>>,
    seed: Option<u64>,
}

/// Builds a [`RetryConfig`]; see the module docs for defaults.
#[derive(Debug, Clone)]
pub struct RetryConfigBuilder {
    config: RetryConfig,
    retryable: Vec<u16>,
    never: Vec<u16>,
}

impl RetryConfig {
    /// Starts a configuration.
    pub fn builder() -> RetryConfigBuilder {
        RetryConfigBuilder {
            config: RetryConfig {
                max_attempts: 3,
                backoff: Backoff::Exponential {
                    initial: Duration::from_millis(100),
                    factor: 2.0,
                },
                jitter: Jitter::Full,
                max_delay: Duration::from_secs(5),
                max_total_delay: Duration::from_secs(10),
                policy: StatusPolicy {
                    retryable: Arc::from([429u16, 500, 502, 503, 504]),
                    never: Arc::from([]),
                },
                retry_non_idempotent: false,
                per_attempt_timeout: None,
                total_timeout: None,
                deadline_margin: Duration::from_millis(50),
                budget: Some(Arc::new(RetryBudget::standard())),
                seed: None,
            },
            retryable: vec![429, 500, 502, 503, 504],
            never: Vec::new(),
        }
    }

    /// Preset for outbound HTTP calls: the defaults, 3 attempts, 2 s per attempt.
    pub fn http() -> Self {
        RetryConfig {
            per_attempt_timeout: Some(Duration::from_secs(2)),
            ..Self::builder().config
        }
    }

    /// Preset for database calls made idempotent by conditions: 5 attempts from 25 ms,
    /// decorrelated jitter, 1 s per attempt, non-idempotent requests included (a conditional
    /// write that failed its condition is a 4xx-class error and is never retried).
    pub fn database() -> Self {
        RetryConfig {
            max_attempts: 5,
            backoff: Backoff::Exponential {
                initial: Duration::from_millis(25),
                factor: 2.0,
            },
            jitter: Jitter::Decorrelated,
            max_delay: Duration::from_secs(1),
            retry_non_idempotent: true,
            per_attempt_timeout: Some(Duration::from_secs(1)),
            ..Self::builder().config
        }
    }
}

impl RetryConfigBuilder {
    /// At most `n` attempts in all (the first one included).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config.max_attempts = n;
        self
    }
    /// The backoff curve.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }
    /// The jitter.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.config.jitter = jitter;
        self
    }
    /// No single delay longer than `max`.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.config.max_delay = max;
        self
    }
    /// No more than `max` of delays in all.
    pub fn max_total_delay(mut self, max: Duration) -> Self {
        self.config.max_total_delay = max;
        self
    }
    /// The statuses worth a retry (default 429, 500, 502, 503, 504).
    pub fn retryable_statuses(mut self, statuses: &[u16]) -> Self {
        self.retryable = statuses.to_vec();
        self
    }
    /// Statuses never retried, whatever the retryable list says.
    pub fn non_retryable_statuses(mut self, statuses: &[u16]) -> Self {
        self.never = statuses.to_vec();
        self
    }
    /// Retries non-idempotent requests (POST, PATCH) too.
    pub fn retry_non_idempotent(mut self, yes: bool) -> Self {
        self.config.retry_non_idempotent = yes;
        self
    }
    /// Cancels an attempt that runs longer than `timeout` (and may retry it).
    pub fn per_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.config.per_attempt_timeout = Some(timeout);
        self
    }
    /// Cancels the whole call, retries included, after `timeout`.
    pub fn total_timeout(mut self, timeout: Duration) -> Self {
        self.config.total_timeout = Some(timeout);
        self
    }
    /// Keeps `margin` free before the request's deadline.
    pub fn deadline_margin(mut self, margin: Duration) -> Self {
        self.config.deadline_margin = margin;
        self
    }
    /// Uses `budget` (share one between layers to share the allowance), or none.
    pub fn budget(mut self, budget: Option<Arc<RetryBudget>>) -> Self {
        self.config.budget = budget;
        self
    }
    /// Seeds the jitter, for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }
    /// Validates the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field.
    pub fn build(mut self) -> Result<RetryConfig, ConfigError> {
        let c = &self.config;
        check(c.max_attempts >= 1, "max_attempts", "must be at least 1")?;
        check(
            !c.max_delay.is_zero(),
            "max_delay",
            "must be longer than zero",
        )?;
        if let Backoff::Exponential { factor, .. } = c.backoff {
            check(
                factor.is_finite() && factor >= 1.0,
                "backoff.factor",
                "must be a finite number of at least 1",
            )?;
        }
        check(
            c.per_attempt_timeout.is_none_or(|t| !t.is_zero()),
            "per_attempt_timeout",
            "must be longer than zero",
        )?;
        check(
            c.total_timeout.is_none_or(|t| !t.is_zero()),
            "total_timeout",
            "must be longer than zero",
        )?;
        check(
            self.retryable
                .iter()
                .chain(&self.never)
                .all(|s| (100..600).contains(s)),
            "retryable_statuses",
            "must be HTTP statuses (100-599)",
        )?;
        self.config.policy = StatusPolicy {
            retryable: Arc::from(self.retryable),
            never: Arc::from(self.never),
        };
        Ok(self.config)
    }
}

/// Applies [`Retry`] with a policy.
#[derive(Clone)]
pub struct RetryLayer<P = StatusPolicy> {
    config: Arc<RetryConfig>,
    policy: Arc<P>,
    clock: Arc<dyn WallClock>,
    rng: Arc<Mutex<fastrand::Rng>>,
}

impl<P> std::fmt::Debug for RetryLayer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RetryLayer {
    /// Retries with `config` and its status policy.
    pub fn new(config: RetryConfig) -> Self {
        let rng = config
            .seed
            .map(fastrand::Rng::with_seed)
            .unwrap_or_default();
        RetryLayer {
            policy: Arc::new(config.policy.clone()),
            config: Arc::new(config),
            clock: Arc::new(SystemClock),
            rng: Arc::new(Mutex::new(rng)),
        }
    }
}

impl<P> RetryLayer<P> {
    /// Decides retries with `policy` instead.
    pub fn policy<P2>(self, policy: P2) -> RetryLayer<P2> {
        RetryLayer {
            config: self.config,
            policy: Arc::new(policy),
            clock: self.clock,
            rng: self.rng,
        }
    }

    /// Reads the wall time (against request deadlines) from `clock`.
    pub fn with_clock(mut self, clock: impl WallClock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

impl<S, P> Layer<S> for RetryLayer<P> {
    type Service = Retry<S, P>;
    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            layer: Arc::new(RetryLayer {
                config: self.config.clone(),
                policy: self.policy.clone(),
                clock: self.clock.clone(),
                rng: self.rng.clone(),
            }),
        }
    }
}

/// The retry service. Requests must be `Clone`: each attempt sends a copy.
pub struct Retry<S, P = StatusPolicy> {
    inner: S,
    /// Shared by the service's clones (one per request).
    layer: Arc<RetryLayer<P>>,
}

impl<S: Clone, P> Clone for Retry<S, P> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            layer: Arc::clone(&self.layer),
        }
    }
}

impl<S, P> std::fmt::Debug for Retry<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry").finish_non_exhaustive()
    }
}

crate::inner_accessors!(Retry<S, P>);

/// The future of [`Retry`].
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<S, P, Req> Service<Req> for Retry<S, P>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    P: RetryPolicy<S::Response>,
    Req: RequestInfo + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let service = crate::take_ready(&mut self.inner);
        let layer = Arc::clone(&self.layer);
        // One box, holding the total timeout's timer only when one is configured; the
        // other timers are boxed where they start, so that the state every call carries
        // stays small.
        match layer.config.total_timeout {
            None => Box::pin(run(service, layer, request)),
            Some(limit) => Box::pin(async move {
                match tokio::time::timeout(limit, run(service, layer, request)).await {
                    Ok(result) => result,
                    Err(_) => Err(Box::new(Error::Timeout { after: limit }) as BoxError),
                }
            }),
        }
    }
}

async fn attempt<S, Req>(
    service: &mut S,
    request: Req,
    timeout: Option<Duration>,
) -> Result<S::Response, BoxError>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    let call = async {
        service
            .ready()
            .await
            .map_err(Into::into)?
            .call(request)
            .await
            .map_err(Into::into)
    };
    match timeout {
        Some(limit) => match Box::pin(tokio::time::timeout(limit, call)).await {
            Ok(result) => result,
            Err(_) => Err(Box::new(Error::Timeout { after: limit })),
        },
        None => call.await,
    }
}

async fn run<S, P, Req>(
    mut service: S,
    layer: Arc<RetryLayer<P>>,
    request: Req,
) -> Result<S::Response, BoxError>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: RetryPolicy<S::Response>,
    Req: RequestInfo + Clone,
{
    let config = &layer.config;
    let replayable = config.retry_non_idempotent || request.is_idempotent();
    if !replayable || config.max_attempts <= 1 {
        // One attempt whatever it answers: the request itself, no copy kept.
        let result = attempt(&mut service, request, config.per_attempt_timeout).await;
        if let Some(budget) = &config.budget
            && !matches!(layer.policy.decide(&result), Decision::Retry { .. })
        {
            budget.deposit();
        }
        return result;
    }
    let deadline = request.deadline();
    let base = config.backoff.delay(1, config.max_delay);
    let mut slept = Duration::ZERO;
    let mut previous = base;
    let mut number = 1;
    loop {
        let started = tokio::time::Instant::now();
        let result = attempt(&mut service, request.clone(), config.per_attempt_timeout).await;
        let decision = layer.policy.decide(&result);
        let Decision::Retry { after } = decision else {
            if let Some(budget) = &config.budget {
                budget.deposit();
            }
            return result;
        };
        if number >= config.max_attempts {
            return result;
        }
        let took = started.elapsed();
        let timed_out = matches!(&result, Err(e) if matches!(e.downcast_ref::<Error>(), Some(Error::Timeout { .. })));
        let jittered = {
            let mut rng = layer
                .rng
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            config.jitter.apply(
                config.backoff.delay(number, config.max_delay),
                previous,
                base,
                config.max_delay,
                &mut rng,
            )
        };
        let delay = after.map_or(jittered, |after| jittered.max(after));
        if slept + delay > config.max_total_delay {
            tracing::debug!(target: "lift::retry", attempt = number, "no retry: total delay limit");
            return result;
        }
        if let Some(deadline) = deadline {
            let left = deadline
                .duration_since(layer.clock.now())
                .unwrap_or(Duration::ZERO);
            // The next attempt needs the delay, about as long as this one took, and the margin.
            if delay + took + config.deadline_margin >= left {
                tracing::debug!(target: "lift::retry", attempt = number, ?left, "no retry: the deadline is too close");
                return result;
            }
        }
        if let Some(budget) = &config.budget
            && !budget.withdraw(timed_out)
        {
            tracing::debug!(target: "lift::retry", attempt = number, "no retry: budget exhausted");
            return result;
        }
        tracing::debug!(target: "lift::retry", attempt = number, ?delay, "retrying");
        Box::pin(tokio::time::sleep(delay)).await;
        slept += delay;
        previous = delay;
        number += 1;
    }
}
