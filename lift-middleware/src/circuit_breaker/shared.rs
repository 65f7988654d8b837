//! A circuit breaker whose state lives in DynamoDB, so that many execution environments trip
//! and recover together.
//!
//! One Lambda environment sees few calls: a local breaker may never collect enough to
//! trip. This breaker counts every environment's calls in per-window items (atomic `ADD`),
//! and stores the open/closed decision in one state item changed only by conditional writes
//! on its `version` (two environments deciding at once cannot both win). Environments read
//! the state through a short local cache.
//!
//! The table needs a string partition key named `pk`. Items: `{prefix}#{name}` (state,
//! `open_until` in epoch milliseconds, `version`) and `{prefix}#{name}#{window}` (`calls`,
//! `failures`, `expires_at` for TTL collection only), where `{window}` is the state version
//! and the window's number.
//!
//! # Cost
//! Per call: one `UpdateItem` (the window counters). Per environment and cache period
//! (default 1 s): at most one strongly consistent `GetItem`. Per state change: one
//! conditional `UpdateItem`. A probe's outcome in half-open state is one conditional write.
//!
//! # Semantics
//! Trips on the failure rate of the current fixed window (its length is the configured
//! time window's size, or 60 s for a count window) once `min_calls` were seen across all
//! environments; consecutive-failure and slow-call triggers are local-only and not used
//! here. Half-open admits `half_open.max_calls` probes per environment; one successful probe
//! closes the breaker for everyone, a failed one re-opens it (with the configured backoff).
//! When DynamoDB fails, the breaker fails open (calls go through), logs at WARN and counts
//! ([`SharedCircuitBreakerLayer::store_failures`]).
//!
//! # Store time limit
//! Each DynamoDB call of the breaker has a time limit of its own
//! ([`SharedCircuitBreakerLayer::store_timeout`], 500 ms by default), on top of the SDK's
//! retries: a store that does not answer costs a call at most that long before the breaker
//! fails open, instead of the seconds the SDK would spend retrying.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use lift_core::{BoxError, Error};
use tower::{Layer, Service, ServiceExt};

use super::config::{CircuitBreakerConfig, Window};
use super::state::State;
use crate::classify::{Classifier, DefaultClassifier, SystemClock, WallClock};
use crate::dynamo::{self, DynamoError};

/// The default time limit of each store call.
pub const SHARED_STORE_TIMEOUT: Duration = Duration::from_millis(500);

/// The shared state as last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    open_until_ms: u64,
    open: bool,
    version: u64,
    trips_in_a_row: u32,
}

struct Cached {
    snapshot: Snapshot,
    read_at: SystemTime,
}

struct Shared<C> {
    client: Client,
    table: String,
    prefix: String,
    config: CircuitBreakerConfig,
    classifier: C,
    clock: Arc<dyn WallClock>,
    cache_for: Duration,
    store_timeout: Duration,
    cache: Mutex<Option<Cached>>,
    probes: AtomicU32,
    store_failures: AtomicU64,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn number(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl<C> Shared<C> {
    fn state_key(&self) -> AttributeValue {
        AttributeValue::S(format!("{}#{}", self.prefix, self.config.name))
    }

    fn window_length(&self) -> Duration {
        match self.config.window {
            Window::Time { size, .. } => size.max(Duration::from_secs(1)),
            Window::Count { .. } => Duration::from_secs(60),
        }
    }

    fn store_failed(&self, what: &'static str, error: impl Into<BoxError>) {
        self.store_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            target: "lift::circuit_breaker",
            breaker = %self.config.name,
            error = %Error::internal(error),
            "shared breaker store failed ({what}); failing open"
        );
    }

    /// The state, from the cache while it is fresh, else from DynamoDB.
    async fn snapshot(&self, now: SystemTime) -> Option<Snapshot> {
        if let Some(cached) = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .filter(|c| now.duration_since(c.read_at).unwrap_or(Duration::ZERO) < self.cache_for)
        {
            return Some(cached.snapshot);
        }
        let read = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", self.state_key())
            .consistent_read(true)
            .send();
        let read = dynamo::within("GetItem", self.store_timeout, read).await;
        let snapshot = match read {
            Ok(output) => match output.item() {
                Some(item) => Snapshot {
                    open: item
                        .get("state")
                        .and_then(|s| s.as_s().ok())
                        .map(String::as_str)
                        == Some("open"),
                    open_until_ms: number(item, "open_until"),
                    version: number(item, "version"),
                    trips_in_a_row: number(item, "trips_in_a_row") as u32,
                },
                None => Snapshot {
                    open: false,
                    open_until_ms: 0,
                    version: 0,
                    trips_in_a_row: 0,
                },
            },
            Err(error) => {
                self.store_failed("read state", error);
                return None;
            }
        };
        self.remember(snapshot, now);
        Some(snapshot)
    }

    fn remember(&self, snapshot: Snapshot, now: SystemTime) {
        *self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Cached {
            snapshot,
            read_at: now,
        });
    }

    fn forget(&self) {
        *self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Writes a new state if nobody changed it since `seen`; `true` when this write won.
    async fn change(
        &self,
        seen: Snapshot,
        open: bool,
        open_until_ms: u64,
        trips_in_a_row: u32,
    ) -> bool {
        let condition = if seen.version == 0 {
            "attribute_not_exists(version) OR version = :seen"
        } else {
            "version = :seen"
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", self.state_key())
            .update_expression("SET #state = :state, open_until = :until, trips_in_a_row = :trips, version = :next")
            .condition_expression(condition)
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(
                ":state",
                AttributeValue::S(if open { "open" } else { "closed" }.to_owned()),
            )
            .expression_attribute_values(":until", AttributeValue::N(open_until_ms.to_string()))
            .expression_attribute_values(":trips", AttributeValue::N(trips_in_a_row.to_string()))
            .expression_attribute_values(":seen", AttributeValue::N(seen.version.to_string()))
            .expression_attribute_values(":next", AttributeValue::N((seen.version + 1).to_string()))
            .send();
        let result = dynamo::within("UpdateItem", self.store_timeout, result).await;
        self.forget();
        match result {
            Ok(_) => {
                let (from, to) = match (seen.open, open) {
                    (false, true) => (State::Closed, State::Open),
                    (true, true) => (State::HalfOpen, State::Open),
                    _ => (State::HalfOpen, State::Closed),
                };
                tracing::warn!(target: "lift::circuit_breaker", breaker = %self.config.name, ?from, ?to, shared = true, "state changed");
                true
            }
            Err(DynamoError::ConditionFailed { .. }) => false,
            Err(error) => {
                self.store_failed("change state", error);
                false
            }
        }
    }

    fn open_for(&self, trips_in_a_row: u32) -> Duration {
        let factor = self
            .config
            .backoff_multiplier
            .powi(trips_in_a_row.min(64) as i32)
            .min(1e6);
        self.config
            .open_for
            .mul_f64(factor)
            .min(self.config.max_open_for)
    }

    /// Counts one outcome in the current window; returns (calls, failures) of the window.
    /// Each state version counts in items of its own, so a breaker that just closed does
    /// not trip again on the failures that opened it.
    async fn count(&self, failed: bool, version: u64, now: SystemTime) -> Option<(u64, u64)> {
        let window = self.window_length().as_millis().max(1) as u64;
        let index = millis(now) / window;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(
                "pk",
                AttributeValue::S(format!(
                    "{}#{}#v{version}#{index}",
                    self.prefix, self.config.name
                )),
            )
            .update_expression("ADD calls :one, failures :failed SET expires_at = if_not_exists(expires_at, :expires)")
            .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
            .expression_attribute_values(
                ":failed",
                AttributeValue::N(if failed { "1" } else { "0" }.to_owned()),
            )
            .expression_attribute_values(
                ":expires",
                AttributeValue::N(((index + 2) * window / 1000).to_string()),
            )
            .return_values(ReturnValue::UpdatedNew)
            .send();
        match dynamo::within("UpdateItem", self.store_timeout, result).await {
            Ok(output) => output
                .attributes()
                .map(|a| (number(a, "calls"), number(a, "failures"))),
            Err(error) => {
                self.store_failed("count", error);
                None
            }
        }
    }
}

/// Whether a call may go, and as what.
enum Pass {
    Closed(Snapshot),
    Probe(Snapshot),
    Unknown,
}

/// Applies a [`SharedCircuitBreaker`].
pub struct SharedCircuitBreakerLayer<C = DefaultClassifier> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for SharedCircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        SharedCircuitBreakerLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<C> std::fmt::Debug for SharedCircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCircuitBreakerLayer")
            .field("name", &self.shared.config.name)
            .field("table", &self.shared.table)
            .finish_non_exhaustive()
    }
}

impl SharedCircuitBreakerLayer {
    /// A breaker named by `config`, its state in `table`, through `client` (built once at
    /// init and shared); default classifier, a 1 s state cache, item prefix `cb`. It trips
    /// on the failure rate only (see the module docs): a configuration without one never
    /// opens it, which is logged at WARN here and refused by
    /// [`SharedCircuitBreakerLayer::try_new`].
    pub fn new(client: Client, table: &str, config: CircuitBreakerConfig) -> Self {
        if config.failure_rate.is_none() {
            tracing::warn!(target: "lift::circuit_breaker", breaker = %config.name, "a shared breaker trips on its failure rate only, and this configuration has none: it never opens");
        }
        Self::build(client, table, config)
    }

    /// [`SharedCircuitBreakerLayer::new`], refusing a configuration that could never open
    /// the breaker.
    ///
    /// # Errors
    /// [`ConfigError`](crate::ConfigError) naming `failure_rate` when the configuration
    /// has none (a consecutive-failure or slow-call trigger alone is local-only).
    pub fn try_new(
        client: Client,
        table: &str,
        config: CircuitBreakerConfig,
    ) -> Result<Self, crate::ConfigError> {
        if config.failure_rate.is_none() {
            return Err(crate::ConfigError::OutOfRange {
                field: "failure_rate",
                reason: "a shared breaker trips on its failure rate only: set one",
            });
        }
        Ok(Self::build(client, table, config))
    }

    fn build(client: Client, table: &str, config: CircuitBreakerConfig) -> Self {
        SharedCircuitBreakerLayer {
            shared: Arc::new(Shared {
                client,
                table: table.to_owned(),
                prefix: "cb".to_owned(),
                config,
                classifier: DefaultClassifier,
                clock: Arc::new(SystemClock),
                cache_for: Duration::from_secs(1),
                store_timeout: SHARED_STORE_TIMEOUT,
                cache: Mutex::new(None),
                probes: AtomicU32::new(0),
                store_failures: AtomicU64::new(0),
            }),
        }
    }
}

impl<C> SharedCircuitBreakerLayer<C> {
    fn rebuild<C2>(
        self,
        classifier: C2,
        clock: Arc<dyn WallClock>,
        cache_for: Duration,
        store_timeout: Duration,
    ) -> SharedCircuitBreakerLayer<C2> {
        let s = &self.shared;
        SharedCircuitBreakerLayer {
            shared: Arc::new(Shared {
                client: s.client.clone(),
                table: s.table.clone(),
                prefix: s.prefix.clone(),
                config: s.config.clone(),
                classifier,
                clock,
                cache_for,
                store_timeout,
                cache: Mutex::new(None),
                probes: AtomicU32::new(0),
                store_failures: AtomicU64::new(0),
            }),
        }
    }

    /// Decides what counts as a failure.
    pub fn classifier<C2>(self, classifier: C2) -> SharedCircuitBreakerLayer<C2> {
        let (clock, cache_for) = (self.shared.clock.clone(), self.shared.cache_for);
        let store_timeout = self.shared.store_timeout;
        self.rebuild(classifier, clock, cache_for, store_timeout)
    }

    /// How long an environment trusts the state it read (shorter: faster agreement, more
    /// reads).
    pub fn cache_for(self, duration: Duration) -> Self
    where
        C: Clone,
    {
        let (classifier, clock) = (self.shared.classifier.clone(), self.shared.clock.clone());
        let store_timeout = self.shared.store_timeout;
        self.rebuild(classifier, clock, duration, store_timeout)
    }

    /// The time limit of each DynamoDB call of the breaker, after which it fails open
    /// (see the module docs). Zero is taken as 1 ms.
    ///
    /// # Default
    /// [`SHARED_STORE_TIMEOUT`], 500 ms.
    pub fn store_timeout(self, limit: Duration) -> Self
    where
        C: Clone,
    {
        let (classifier, clock) = (self.shared.classifier.clone(), self.shared.clock.clone());
        let cache_for = self.shared.cache_for;
        self.rebuild(
            classifier,
            clock,
            cache_for,
            limit.max(Duration::from_millis(1)),
        )
    }

    /// Reads the wall time from `clock`.
    pub fn with_clock(self, clock: impl WallClock) -> Self
    where
        C: Clone,
    {
        let (classifier, cache_for) = (self.shared.classifier.clone(), self.shared.cache_for);
        let store_timeout = self.shared.store_timeout;
        self.rebuild(classifier, Arc::new(clock), cache_for, store_timeout)
    }

    /// Times DynamoDB failed to answer (the breaker then let calls through).
    pub fn store_failures(&self) -> u64 {
        self.shared.store_failures.load(Ordering::Relaxed)
    }

    /// The shared state as this environment sees it now (reads DynamoDB if the cache is
    /// stale); `None` when DynamoDB cannot be read.
    pub async fn state(&self) -> Option<State> {
        let now = self.shared.clock.now();
        let snapshot = self.shared.snapshot(now).await?;
        Some(if !snapshot.open {
            State::Closed
        } else if millis(now) < snapshot.open_until_ms {
            State::Open
        } else {
            State::HalfOpen
        })
    }
}

impl<S, C> Layer<S> for SharedCircuitBreakerLayer<C> {
    type Service = SharedCircuitBreaker<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        SharedCircuitBreaker {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The shared circuit breaker service.
pub struct SharedCircuitBreaker<S, C = DefaultClassifier> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S: Clone, C> Clone for SharedCircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        SharedCircuitBreaker {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, C> std::fmt::Debug for SharedCircuitBreaker<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCircuitBreaker")
            .finish_non_exhaustive()
    }
}

/// The future of [`SharedCircuitBreaker`] (it awaits DynamoDB, so it is boxed).
pub type SharedResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// Gives a probe's place back when its call ends, however it ends.
struct ProbeSlot<C>(Arc<Shared<C>>);

impl<C> Drop for ProbeSlot<C> {
    fn drop(&mut self) {
        let _ = self
            .0
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

impl<S, C, Req> Service<Req> for SharedCircuitBreaker<S, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    C: Classifier<S::Response>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = SharedResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let shared = self.shared.clone();
        let service = crate::take_ready(&mut self.inner);
        Box::pin(async move {
            let now = shared.clock.now();
            let pass = match shared.snapshot(now).await {
                None => Pass::Unknown,
                Some(s) if !s.open => Pass::Closed(s),
                Some(s) if millis(now) < s.open_until_ms => {
                    return Err(Box::new(Error::CircuitOpen {
                        name: shared.config.name.clone(),
                        retry_after: Duration::from_millis(s.open_until_ms - millis(now)),
                    }) as BoxError);
                }
                Some(s) => {
                    if shared.probes.fetch_add(1, Ordering::AcqRel)
                        >= shared.config.half_open_max_calls
                    {
                        shared.probes.fetch_sub(1, Ordering::AcqRel);
                        return Err(Box::new(Error::CircuitOpen {
                            name: shared.config.name.clone(),
                            retry_after: Duration::ZERO,
                        }) as BoxError);
                    }
                    Pass::Probe(s)
                }
            };
            let _slot = matches!(pass, Pass::Probe(_)).then(|| ProbeSlot(shared.clone()));
            let result = service.oneshot(request).await.map_err(Into::into);
            let failed = shared.classifier.is_failure(&result);
            let now = shared.clock.now();
            match pass {
                Pass::Unknown => {}
                Pass::Probe(seen) => {
                    if failed {
                        let trips = seen.trips_in_a_row + 1;
                        let until = millis(now) + shared.open_for(trips).as_millis() as u64;
                        shared.change(seen, true, until, trips).await;
                    } else {
                        shared.change(seen, false, 0, 0).await;
                    }
                }
                Pass::Closed(seen) => {
                    if let Some((calls, failures)) = shared.count(failed, seen.version, now).await
                        && calls >= u64::from(shared.config.min_calls)
                        && shared
                            .config
                            .failure_rate
                            .is_some_and(|rate| failures as f64 / calls as f64 >= rate)
                    {
                        let until =
                            millis(now) + shared.open_for(seen.trips_in_a_row).as_millis() as u64;
                        shared.change(seen, true, until, seen.trips_in_a_row).await;
                    }
                }
            }
            result
        })
    }
}
