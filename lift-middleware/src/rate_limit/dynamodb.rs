//! Distributed rate limiting in DynamoDB: one limit shared by every execution environment
//! of every function that uses the same table.
//!
//! Windows aligned on the wall clock (so all environments agree on them) and **one
//! conditional `UpdateItem` per request** on the warm path. DynamoDB applies the condition
//! atomically, so the promise holds under any concurrency, across environments:
//!
//! - [`Algorithm::FixedWindow`]: one item per key and window, `ADD count 1` if the count is
//!   still under the limit. At most `limit` calls are admitted per window.
//! - [`Algorithm::SlidingWindow`]: one item per key holding the current window's index, its
//!   count and the previous window's final count. A call at `f` (0..1) of the way through
//!   window `w` is admitted only if `count(w) + ceil(count(w-1) × (1 - f)) < limit` held
//!   for it in DynamoDB: every increment is conditional on the item still being in window
//!   `w`, and the first call of a new window moves the item on in one conditional write
//!   that copies the count it saw (and fails if the count moved since). So a call that was
//!   counted for the previous window but lands after the move is re-evaluated in the new
//!   window instead of adding to a count another environment already carried over: the
//!   previous window's count is final when it is carried, never a stale read. Any window's
//!   length then admits at most `limit` calls, to the precision of this estimate (which
//!   assumes the previous window's calls were spread evenly). An environment learns the
//!   item's state from each answer (and from the stored item when a condition fails), so
//!   the first call of a window, and a call that finds the item moved on, take a second
//!   write; an environment's first call of a key reads the item once.
//!
//! The `expires_at` attribute (enable TTL on it) only collects old items; the code never
//! relies on it.
//!
//! The table needs a string partition key named `pk`.
//!
//! When DynamoDB fails or throttles, [`FailureMode`] decides: admit (fail open) or refuse
//! with [`Error::Overloaded`] (fail closed). Either way the failure is logged (WARN, target
//! `lift::rate_limit`) and counted ([`DistributedRateLimitLayer::store_failures`]).
//! Each DynamoDB call has a time limit of its own
//! ([`DistributedRateLimitConfigBuilder::store_timeout`], 500 ms by default) on top of the
//! SDK's retries, so a store that does not answer costs a call at most that long before the
//! failure mode decides: fail open really lets the call go on.
//!
//! Cost: one write request unit per admitted or refused call (the refused update fails its
//! condition, which DynamoDB still bills as a write).
//!
//! ```no_run
//! use std::time::Duration;
//! use lift_middleware::rate_limit::dynamodb::{DistributedRateLimitConfig, DistributedRateLimitLayer, FailureMode};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
//! let config = DistributedRateLimitConfig::builder("rate-limits", 100, Duration::from_secs(60))
//!     .failure_mode(FailureMode::Open)
//!     .build()?;
//! let layer = DistributedRateLimitLayer::builder(client, config)
//!     .keyed(|ctx: &lift_core::Context| ctx.header("x-api-key").map(str::to_owned))
//!     .build();
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use lift_core::{BoxError, Error};
use tower::{Layer, Service, ServiceExt};

use crate::classify::{KeyOf, SystemClock, Unkeyed, WallClock};
use crate::dynamo::{self, DynamoError, Item};
use crate::error::{ConfigError, check};

/// How calls are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// Windows aligned on the wall clock; a window's count starts from zero. Simple, but a
    /// burst at the end of one window and the start of the next can reach twice the limit
    /// within one window's length.
    #[default]
    FixedWindow,
    /// The current window's count plus the previous window's, weighted by how much of it
    /// the sliding window still covers: no double burst at the boundary. One item per key;
    /// see the module docs for the exact promise and its cost.
    SlidingWindow,
}

/// What to do when DynamoDB cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureMode {
    /// Admit the request (availability first).
    Open,
    /// Refuse it with [`Error::Overloaded`] (protection first).
    Closed,
}

/// A validated distributed rate limit.
#[derive(Debug, Clone)]
pub struct DistributedRateLimitConfig {
    table: String,
    limit: u64,
    window: Duration,
    prefix: String,
    failure_mode: FailureMode,
    algorithm: Algorithm,
    store_timeout: Duration,
}

/// The default time limit of each store call.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(500);

/// Builds a [`DistributedRateLimitConfig`].
#[derive(Debug, Clone)]
pub struct DistributedRateLimitConfigBuilder {
    config: DistributedRateLimitConfig,
}

impl DistributedRateLimitConfig {
    /// `limit` calls per `window` (whole seconds) and key, counted in `table`.
    ///
    /// # Default
    /// Item prefix `rl`, fixed windows, fail open, 500 ms per store call.
    pub fn builder(table: &str, limit: u64, window: Duration) -> DistributedRateLimitConfigBuilder {
        DistributedRateLimitConfigBuilder {
            config: DistributedRateLimitConfig {
                table: table.to_owned(),
                limit,
                window,
                prefix: "rl".to_owned(),
                failure_mode: FailureMode::Open,
                algorithm: Algorithm::FixedWindow,
                store_timeout: DEFAULT_STORE_TIMEOUT,
            },
        }
    }
}

impl DistributedRateLimitConfigBuilder {
    /// Prefixes item keys (several limits can share a table).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.config.prefix = prefix.to_owned();
        self
    }
    /// Fixed or sliding windows (default fixed).
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.config.algorithm = algorithm;
        self
    }
    /// What to do when DynamoDB fails or throttles.
    pub fn failure_mode(mut self, mode: FailureMode) -> Self {
        self.config.failure_mode = mode;
        self
    }
    /// The time limit of each DynamoDB call, after which the failure mode decides.
    pub fn store_timeout(mut self, limit: Duration) -> Self {
        self.config.store_timeout = limit;
        self
    }
    /// Validates the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field.
    pub fn build(self) -> Result<DistributedRateLimitConfig, ConfigError> {
        let c = &self.config;
        check(!c.table.is_empty(), "table", "must name a table")?;
        check(c.limit >= 1, "limit", "must be at least 1")?;
        // Windows are counted in whole seconds of the wall clock: 1.5 s would count per
        // second, admitting more than `limit` per window.
        check(
            c.window >= Duration::from_secs(1) && c.window.subsec_nanos() == 0,
            "window",
            "must be a whole number of seconds, at least one",
        )?;
        check(
            !c.store_timeout.is_zero(),
            "store_timeout",
            "must be longer than zero",
        )?;
        Ok(self.config)
    }
}

/// The answer of the shared counter for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Admitted; `remaining` calls are left in the window.
    Admitted {
        /// Calls left in the window.
        remaining: u64,
    },
    /// Refused: the window is full.
    Refused,
    /// DynamoDB did not answer; the failure mode decided.
    StoreFailed,
}

struct Shared<K> {
    client: Client,
    config: DistributedRateLimitConfig,
    key: K,
    clock: Arc<dyn WallClock>,
    store_failures: AtomicU64,
    /// The last state of each sliding-window item this environment saw, by item key.
    sliding: moka::sync::Cache<String, Sliding>,
}

/// A sliding-window item: the window it counts, its count, and the previous window's
/// final count. An absent item is window 0 with nothing counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Sliding {
    window: u64,
    count: u64,
    previous: u64,
    exists: bool,
}

impl Sliding {
    fn from_item(item: Option<&Item>) -> Sliding {
        match item {
            None => Sliding::default(),
            Some(item) => Sliding {
                window: dynamo::get_u64(item, "w").unwrap_or(0),
                count: dynamo::get_u64(item, "count").unwrap_or(0),
                previous: dynamo::get_u64(item, "prev").unwrap_or(0),
                exists: true,
            },
        }
    }
}

/// How many calls a sliding window still allows this far into it, given the count it
/// carries over from the previous window.
fn sliding_allowance(limit: u64, carried_from: u64, into_window: f64) -> u64 {
    let still_covered = (1.0 - into_window).clamp(0.0, 1.0);
    let carried = (carried_from as f64 * still_covered).ceil() as u64;
    limit.saturating_sub(carried)
}

/// The sliding-window write a call makes, decided from the item's last known state.
#[derive(Clone, Copy)]
enum SlidingPlan {
    /// The item is in this window (or ahead): count the call if under `allowed`.
    Count { window: u64, allowed: u64 },
    /// The item is in the previous window with `count`: move it on, carrying the count.
    Roll { from: Sliding, allowed: u64 },
    /// The item is older (or absent): start this window afresh.
    Restart { from: Sliding },
}

impl<K> Shared<K> {
    fn store_failed(&self, error: impl Into<BoxError>) {
        self.store_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            target: "lift::rate_limit",
            table = %self.config.table,
            mode = ?self.config.failure_mode,
            error = %Error::internal(error),
            "the rate-limit store failed"
        );
    }

    /// This environment's last view of a sliding-window item, else the item as stored.
    async fn sliding_state(&self, pk: &str) -> Result<Sliding, DynamoError> {
        if let Some(state) = self.sliding.get(pk) {
            return Ok(state);
        }
        let read = self
            .client
            .get_item()
            .table_name(&self.config.table)
            .key("pk", AttributeValue::S(pk.to_owned()))
            .consistent_read(true)
            .send();
        let output = dynamo::within("GetItem", self.config.store_timeout, read).await?;
        Ok(Sliding::from_item(output.item()))
    }

    /// One sliding-window call: see the module docs.
    async fn admit_sliding(&self, key: &str) -> Admission {
        let config = &self.config;
        let pk = format!("{}#{key}#sliding", config.prefix);
        let window = config.window.as_secs().max(1);
        let mut state = match self.sliding_state(&pk).await {
            Ok(state) => state,
            Err(error) => {
                self.store_failed(error);
                return Admission::StoreFailed;
            }
        };
        // Each attempt learns the stored state; a few are enough unless the item moves on
        // under heavy contention at every attempt, which is refused rather than admitted.
        for _ in 0..4 {
            let now = self
                .clock
                .now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO);
            let index = now.as_secs() / window;
            let into = (now.as_secs_f64() - (index * window) as f64) / window as f64;
            let plan = if state.exists && state.window >= index {
                // An item ahead of this clock is at the start of its window for us.
                let into = if state.window == index { into } else { 0.0 };
                SlidingPlan::Count {
                    window: state.window,
                    allowed: sliding_allowance(config.limit, state.previous, into),
                }
            } else if state.exists && state.window + 1 == index {
                SlidingPlan::Roll {
                    from: state,
                    allowed: sliding_allowance(config.limit, state.count, into),
                }
            } else {
                SlidingPlan::Restart { from: state }
            };
            let update = self
                .client
                .update_item()
                .table_name(&config.table)
                .key("pk", AttributeValue::S(pk.clone()))
                .expression_attribute_names("#w", "w")
                .expression_attribute_names("#count", "count")
                .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            let number = |n: u64| AttributeValue::N(n.to_string());
            let (update, allowed) = match plan {
                SlidingPlan::Count { window, allowed } => {
                    if allowed == 0 {
                        return Admission::Refused;
                    }
                    let update = update
                        .update_expression("ADD #count :one")
                        .condition_expression("#w = :w AND #count < :allowed")
                        .expression_attribute_values(":w", number(window))
                        .expression_attribute_values(":allowed", number(allowed));
                    (update, allowed)
                }
                SlidingPlan::Roll { from, allowed } => {
                    if allowed == 0 {
                        // The carried count alone fills the window; a count that moved on
                        // since it was seen only carries more.
                        return Admission::Refused;
                    }
                    let update = update
                        .update_expression(
                            "SET #w = :w, #prev = :prev, #count = :one, #expires = :expires",
                        )
                        .expression_attribute_names("#prev", "prev")
                        .expression_attribute_names("#expires", "expires_at")
                        .condition_expression("#w = :from AND #count = :seen")
                        .expression_attribute_values(":w", number(index))
                        .expression_attribute_values(":prev", number(from.count))
                        .expression_attribute_values(":from", number(from.window))
                        .expression_attribute_values(":seen", number(from.count))
                        .expression_attribute_values(":expires", number((index + 2) * window));
                    (update, allowed)
                }
                SlidingPlan::Restart { from } => {
                    let update = update
                        .update_expression(
                            "SET #w = :w, #prev = :zero, #count = :one, #expires = :expires",
                        )
                        .expression_attribute_names("#prev", "prev")
                        .expression_attribute_names("#expires", "expires_at")
                        .expression_attribute_values(":w", number(index))
                        .expression_attribute_values(":zero", number(0))
                        .expression_attribute_values(":expires", number((index + 2) * window));
                    let update = if from.exists {
                        update
                            .condition_expression("#w = :from")
                            .expression_attribute_values(":from", number(from.window))
                    } else {
                        update.condition_expression("attribute_not_exists(pk)")
                    };
                    (update, config.limit)
                }
            };
            match dynamo::within("UpdateItem", config.store_timeout, update.send()).await {
                Ok(output) => {
                    let stored = Sliding::from_item(output.attributes());
                    self.sliding.insert(pk, stored);
                    return Admission::Admitted {
                        remaining: allowed.saturating_sub(stored.count),
                    };
                }
                Err(DynamoError::ConditionFailed { item, .. }) => {
                    let stored = Sliding::from_item(item.as_deref());
                    self.sliding.insert(pk.clone(), stored);
                    if let SlidingPlan::Count { window, allowed } = plan
                        && stored.exists
                        && stored.window == window
                        && stored.count >= allowed
                    {
                        return Admission::Refused;
                    }
                    state = stored;
                }
                Err(error) => {
                    self.store_failed(error);
                    return Admission::StoreFailed;
                }
            }
        }
        tracing::warn!(target: "lift::rate_limit", key, "the sliding-window item kept moving on; the call is refused");
        Admission::Refused
    }

    async fn admit(&self, key: &str) -> Admission {
        let config = &self.config;
        let now = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        if config.algorithm == Algorithm::SlidingWindow {
            return self.admit_sliding(key).await;
        }
        let window = config.window.as_secs().max(1);
        let index = now.as_secs() / window;
        let expires_at = (index + 2) * window;
        let allowed = config.limit;
        let result = self
            .client
            .update_item()
            .table_name(&config.table)
            .key(
                "pk",
                AttributeValue::S(format!("{}#{key}#{index}", config.prefix)),
            )
            .update_expression("ADD #count :one SET #expires = if_not_exists(#expires, :expires)")
            .condition_expression("attribute_not_exists(#count) OR #count < :limit")
            .expression_attribute_names("#count", "count")
            .expression_attribute_names("#expires", "expires_at")
            .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
            .expression_attribute_values(":limit", AttributeValue::N(allowed.to_string()))
            .expression_attribute_values(":expires", AttributeValue::N(expires_at.to_string()))
            .return_values(ReturnValue::UpdatedNew)
            .send();
        match dynamo::within("UpdateItem", config.store_timeout, result).await {
            Ok(output) => {
                let count = output
                    .attributes()
                    .and_then(|a| a.get("count"))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(allowed);
                Admission::Admitted {
                    remaining: allowed.saturating_sub(count),
                }
            }
            Err(DynamoError::ConditionFailed { .. }) => Admission::Refused,
            Err(error) => {
                self.store_failed(error);
                Admission::StoreFailed
            }
        }
    }

    /// Time until the current window ends.
    fn reset(&self) -> Duration {
        let now = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let window = self.config.window.as_secs().max(1);
        let end = Duration::from_secs((now.as_secs() / window + 1) * window);
        end.saturating_sub(now)
    }
}

/// Builds a [`DistributedRateLimitLayer`].
pub struct DistributedRateLimitBuilder<K = Unkeyed> {
    client: Client,
    config: DistributedRateLimitConfig,
    key: K,
    clock: Arc<dyn WallClock>,
}

impl<K> DistributedRateLimitBuilder<K> {
    /// Counts per key (tenant, user, API key, IP, ...); requests without a key share `*`.
    pub fn keyed<K2>(self, key: K2) -> DistributedRateLimitBuilder<K2> {
        DistributedRateLimitBuilder {
            client: self.client,
            config: self.config,
            key,
            clock: self.clock,
        }
    }

    /// Reads the wall time (which decides the window) from `clock`.
    pub fn clock(mut self, clock: impl WallClock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The layer.
    pub fn build(self) -> DistributedRateLimitLayer<K> {
        let window = self.config.window;
        DistributedRateLimitLayer {
            shared: Arc::new(Shared {
                client: self.client,
                config: self.config,
                key: self.key,
                sliding: moka::sync::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_idle(window * 2)
                    .build(),
                clock: self.clock,
                store_failures: AtomicU64::new(0),
            }),
        }
    }
}

/// Applies a [`DistributedRateLimit`].
pub struct DistributedRateLimitLayer<K = Unkeyed> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for DistributedRateLimitLayer<K> {
    fn clone(&self) -> Self {
        DistributedRateLimitLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<K> std::fmt::Debug for DistributedRateLimitLayer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedRateLimitLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl DistributedRateLimitLayer {
    /// Starts a limit counted through `client` (built once at init and shared).
    pub fn builder(
        client: Client,
        config: DistributedRateLimitConfig,
    ) -> DistributedRateLimitBuilder {
        DistributedRateLimitBuilder {
            client,
            config,
            key: Unkeyed,
            clock: Arc::new(SystemClock),
        }
    }
}

impl<K> DistributedRateLimitLayer<K> {
    /// Calls whose count DynamoDB could not update.
    pub fn store_failures(&self) -> u64 {
        self.shared.store_failures.load(Ordering::Relaxed)
    }

    /// Counts one call for `key` in the current window (for use outside a service stack).
    pub async fn admit(&self, key: &str) -> Admission {
        self.shared.admit(key).await
    }
}

impl<S, K> Layer<S> for DistributedRateLimitLayer<K> {
    type Service = DistributedRateLimit<S, K>;
    fn layer(&self, inner: S) -> Self::Service {
        DistributedRateLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The distributed rate-limit service.
pub struct DistributedRateLimit<S, K = Unkeyed> {
    inner: S,
    shared: Arc<Shared<K>>,
}

impl<S: Clone, K> Clone for DistributedRateLimit<S, K> {
    fn clone(&self) -> Self {
        DistributedRateLimit {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, K> std::fmt::Debug for DistributedRateLimit<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedRateLimit")
            .finish_non_exhaustive()
    }
}

/// The future of [`DistributedRateLimit`] (it awaits DynamoDB, so it is boxed).
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<S, K, Req> Service<Req> for DistributedRateLimit<S, K>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    K: KeyOf<Req>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let key = self
            .shared
            .key
            .key_of(&request)
            .unwrap_or_else(|| "*".to_owned());
        let shared = self.shared.clone();
        let service = crate::take_ready(&mut self.inner);
        Box::pin(async move {
            match shared.admit(&key).await {
                Admission::Admitted { .. } => {}
                Admission::Refused => {
                    let reset = shared.reset();
                    return Err(Box::new(Error::RateLimited {
                        limit: shared.config.limit,
                        remaining: 0,
                        reset,
                        retry_after: reset,
                    }) as BoxError);
                }
                Admission::StoreFailed => {
                    if shared.config.failure_mode == FailureMode::Closed {
                        return Err(Box::new(Error::Overloaded {
                            reason: "the rate-limit store is unavailable",
                        }) as BoxError);
                    }
                }
            }
            service.oneshot(request).await.map_err(Into::into)
        })
    }
}
