//! Bulkhead: bounds how many calls run at once, so one slow dependency or one noisy tenant
//! cannot take every slot.
//!
//! A global limit, and optionally one per key (tenant, operation) in a bounded map. A call
//! that finds no free slot waits in a bounded queue for at most `max_wait`; past that, or
//! with the queue full, it is refused with [`lift_core::Error::BulkheadFull`] (503,
//! `Retry-After`). Priorities: a share of the slots can be reserved for
//! [`Priority::High`](crate::classify::Priority); [`Priority::Low`](crate::classify::Priority)
//! never waits, so it is shed first. Useful for fan-out inside one invocation and for
//! concurrent invocations in one process.
//!
//! ```
//! use std::time::Duration;
//! use lift_middleware::bulkhead::{BulkheadConfig, BulkheadLayer};
//!
//! let config = BulkheadConfig::builder("inventory")
//!     .max_concurrent(16)
//!     .reserve_for_high(4)
//!     .queue(32, Duration::from_millis(250))
//!     .build()?;
//! let layer = BulkheadLayer::new(config);
//! # Ok::<(), lift_middleware::ConfigError>(())
//! ```
//!
//! # Default
//! 10 slots, none reserved, no queue (a call with no free slot is refused at once).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use lift_core::{BoxError, Error};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service, ServiceExt};

use crate::classify::{KeyOf, Priority, RequestInfo, Unkeyed};
use crate::error::{ConfigError, check};

/// A validated bulkhead configuration.
#[derive(Debug, Clone)]
pub struct BulkheadConfig {
    name: Arc<str>,
    max_concurrent: u32,
    reserved_for_high: u32,
    max_waiting: u32,
    max_wait: Duration,
}

/// Builds a [`BulkheadConfig`].
#[derive(Debug, Clone)]
pub struct BulkheadConfigBuilder {
    config: BulkheadConfig,
}

impl BulkheadConfig {
    /// Starts the configuration of bulkhead `name` (see the module docs for defaults).
    pub fn builder(name: &str) -> BulkheadConfigBuilder {
        BulkheadConfigBuilder {
            config: BulkheadConfig {
                name: Arc::from(name),
                max_concurrent: 10,
                reserved_for_high: 0,
                max_waiting: 0,
                max_wait: Duration::ZERO,
            },
        }
    }
}

impl BulkheadConfigBuilder {
    /// At most `n` calls at once.
    pub fn max_concurrent(mut self, n: u32) -> Self {
        self.config.max_concurrent = n;
        self
    }
    /// Of those, `n` only high-priority calls may use.
    pub fn reserve_for_high(mut self, n: u32) -> Self {
        self.config.reserved_for_high = n;
        self
    }
    /// Up to `max_waiting` calls wait for a slot, each for at most `max_wait` (up to 15
    /// minutes).
    pub fn queue(mut self, max_waiting: u32, max_wait: Duration) -> Self {
        self.config.max_waiting = max_waiting;
        self.config.max_wait = max_wait;
        self
    }
    /// Validates the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field.
    pub fn build(self) -> Result<BulkheadConfig, ConfigError> {
        let c = &self.config;
        check(
            c.max_concurrent >= 1,
            "max_concurrent",
            "must be at least 1",
        )?;
        check(
            c.reserved_for_high < c.max_concurrent,
            "reserve_for_high",
            "must leave at least one slot for other calls",
        )?;
        check(
            c.max_waiting == 0 || !c.max_wait.is_zero(),
            "queue.max_wait",
            "must be longer than zero when calls may wait",
        )?;
        // No invocation lasts longer; a longer one (`Duration::MAX`) overflowed the deadline.
        check(
            c.max_wait <= Duration::from_secs(15 * 60),
            "queue.max_wait",
            "must be at most 15 minutes, Lambda's longest invocation",
        )?;
        Ok(self.config)
    }
}

/// The slots of one compartment.
struct Compartment {
    name: Arc<str>,
    shared: Arc<Semaphore>,
    reserved: Arc<Semaphore>,
    waiting: AtomicU32,
    rejected: AtomicU64,
}

impl Compartment {
    fn new(config: &BulkheadConfig, name: Arc<str>) -> Self {
        Compartment {
            name,
            shared: Arc::new(Semaphore::new(
                (config.max_concurrent - config.reserved_for_high) as usize,
            )),
            reserved: Arc::new(Semaphore::new(config.reserved_for_high as usize)),
            waiting: AtomicU32::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// Whether a call holds one of its slots or waits for one.
    fn in_use(&self) -> bool {
        Arc::strong_count(&self.shared) > 1
            || Arc::strong_count(&self.reserved) > 1
            || self.waiting.load(Ordering::Acquire) > 0
    }

    fn try_acquire(&self, priority: Priority) -> Option<OwnedSemaphorePermit> {
        self.shared.clone().try_acquire_owned().ok().or_else(|| {
            (priority == Priority::High)
                .then(|| self.reserved.clone().try_acquire_owned().ok())
                .flatten()
        })
    }

    /// Waits for a slot until `until` at the latest (one deadline for every compartment a
    /// call goes through).
    async fn acquire(
        &self,
        priority: Priority,
        config: &BulkheadConfig,
        until: tokio::time::Instant,
    ) -> Result<OwnedSemaphorePermit, Error> {
        if let Some(permit) = self.try_acquire(priority) {
            return Ok(permit);
        }
        let full = || {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "lift::bulkhead", bulkhead = %self.name, ?priority, "call refused: full");
            Error::BulkheadFull {
                name: self.name.clone(),
            }
        };
        if priority == Priority::Low || config.max_waiting == 0 {
            return Err(full());
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= config.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(full());
        }
        // Leaves the queue however the wait ends, cancellation included.
        let _queued = Queued(&self.waiting);
        let wait = async {
            if priority == Priority::High {
                tokio::select! {
                    permit = self.shared.clone().acquire_owned() => permit,
                    permit = self.reserved.clone().acquire_owned() => permit,
                }
            } else {
                self.shared.clone().acquire_owned().await
            }
        };
        match tokio::time::timeout_at(until, wait).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(full()),
        }
    }
}

/// A place in a compartment's wait queue, given back when dropped.
struct Queued<'a>(&'a AtomicU32);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Shared<K> {
    config: BulkheadConfig,
    global: Compartment,
    key: K,
    per_key: Option<PerKey>,
}

/// The compartments of a keyed bulkhead.
struct PerKey {
    config: BulkheadConfig,
    /// At most `max_keys`, idle ones dropped.
    cache: moka::sync::Cache<String, Arc<Compartment>>,
    /// Every compartment handed out, so that one the cache dropped while calls still
    /// hold its slots is found again: a fresh one would let a key's calls past its limit.
    /// Pruned of the unused ones once it holds twice `max_keys`.
    handed_out: std::sync::Mutex<HashMap<String, Arc<Compartment>>>,
    max_keys: u64,
}

impl PerKey {
    fn compartment(&self, key: &str, name: &str) -> Arc<Compartment> {
        if let Some(found) = self.cache.get(key) {
            return found;
        }
        let mut handed_out = self
            .handed_out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = handed_out.get(key).filter(|c| c.in_use()) {
            self.cache.insert(key.to_owned(), held.clone());
            return held.clone();
        }
        let fresh = self.cache.get_with_by_ref(key, || {
            Arc::new(Compartment::new(
                &self.config,
                Arc::from(format!("{name}:{key}")),
            ))
        });
        handed_out.insert(key.to_owned(), fresh.clone());
        if handed_out.len() as u64 > self.max_keys.saturating_mul(2) {
            handed_out.retain(|_, c| c.in_use());
        }
        fresh
    }
}

/// Applies a [`Bulkhead`].
pub struct BulkheadLayer<K = Unkeyed> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for BulkheadLayer<K> {
    fn clone(&self) -> Self {
        BulkheadLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<K> std::fmt::Debug for BulkheadLayer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl BulkheadLayer {
    /// A global bulkhead.
    pub fn new(config: BulkheadConfig) -> Self {
        BulkheadLayer {
            shared: Arc::new(Shared {
                global: Compartment::new(&config, config.name.clone()),
                config,
                key: Unkeyed,
                per_key: None,
            }),
        }
    }
}

impl<K> BulkheadLayer<K> {
    /// Adds a compartment per key (tenant, operation) with `per_key` slots each, on top of
    /// the global limit; at most `max_keys` compartments, idle ones dropped after `idle` (at
    /// most a year).
    pub fn keyed<K2>(
        self,
        key: K2,
        per_key: BulkheadConfig,
        max_keys: u64,
        idle: Duration,
    ) -> BulkheadLayer<K2> {
        let config = self.shared.config.clone();
        // Least recently used out, every new key in: the default policy may refuse a new,
        // rarely seen key a place, and a key without one got a fresh compartment on every
        // call, its limit never reached.
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_keys)
            .time_to_idle(idle.min(crate::classify::MAX_IDLE))
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        BulkheadLayer {
            shared: Arc::new(Shared {
                global: Compartment::new(&config, config.name.clone()),
                config,
                key,
                per_key: Some(PerKey {
                    config: per_key,
                    cache,
                    handed_out: std::sync::Mutex::new(HashMap::new()),
                    max_keys,
                }),
            }),
        }
    }

    /// Calls refused so far by the global compartment.
    pub fn rejected(&self) -> u64 {
        self.shared.global.rejected.load(Ordering::Relaxed)
    }

    /// Free slots in the global compartment (high-priority reserve excluded).
    pub fn available(&self) -> usize {
        self.shared.global.shared.available_permits()
    }
}

impl<S, K> Layer<S> for BulkheadLayer<K> {
    type Service = Bulkhead<S, K>;
    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The bulkhead service.
pub struct Bulkhead<S, K = Unkeyed> {
    inner: S,
    shared: Arc<Shared<K>>,
}

impl<S: Clone, K> Clone for Bulkhead<S, K> {
    fn clone(&self) -> Self {
        Bulkhead {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, K> std::fmt::Debug for Bulkhead<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulkhead").finish_non_exhaustive()
    }
}

crate::inner_accessors!(Bulkhead<S, K>);

/// Permits held for the duration of a call.
struct Permits {
    _key: Option<OwnedSemaphorePermit>,
    _global: OwnedSemaphorePermit,
}

impl<S, K, Req> Service<Req> for Bulkhead<S, K>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    Req: RequestInfo + Send + 'static,
    K: KeyOf<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let priority = request.priority();
        let compartment = match (&self.shared.per_key, self.shared.key.key_of(&request)) {
            (Some(per_key), Some(key)) => Some(per_key.compartment(&key, &self.shared.config.name)),
            _ => None,
        };
        // Fast path: free slots now, no allocation.
        let key_permit = match &compartment {
            Some(c) => c.try_acquire(priority).map(Some),
            None => Some(None),
        };
        if let Some(key_permit) = key_permit
            && let Some(global) = self.shared.global.try_acquire(priority)
        {
            return ResponseFuture::admitted(
                self.inner.call(request),
                Permits {
                    _key: key_permit,
                    _global: global,
                },
            );
        }
        // Slow path: wait in the queue, then call.
        let shared = self.shared.clone();
        let service = crate::take_ready(&mut self.inner);
        ResponseFuture::waiting(Box::pin(async move {
            // Each compartment waits as long as its own config says, from the call's start.
            let started = tokio::time::Instant::now();
            let key_permit = match (&compartment, &shared.per_key) {
                (Some(c), Some(per_key)) => Some(
                    c.acquire(priority, &per_key.config, started + per_key.config.max_wait)
                        .await?,
                ),
                _ => None,
            };
            let global = shared
                .global
                .acquire(priority, &shared.config, started + shared.config.max_wait)
                .await?;
            let _permits = Permits {
                _key: key_permit,
                _global: global,
            };
            service.oneshot(request).await.map_err(Into::into)
        }))
    }
}

type Waiting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

pin_project! {
    /// Resolves to the inner result; holds the call's slots until then.
    pub struct ResponseFuture<F, T> {
        #[pin]
        state: Stage<F, T>,
    }
}

pin_project! {
    #[project = StageProj]
    enum Stage<F, T> {
        Admitted {
            #[pin]
            inner: F,
            permits: Permits,
        },
        Waiting {
            future: Waiting<T>,
        },
    }
}

impl<F, T> ResponseFuture<F, T> {
    fn admitted(inner: F, permits: Permits) -> Self {
        ResponseFuture {
            state: Stage::Admitted { inner, permits },
        }
    }
    fn waiting(future: Waiting<T>) -> Self {
        ResponseFuture {
            state: Stage::Waiting { future },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StageProj::Admitted { inner, .. } => inner.poll(cx).map_err(Into::into),
            StageProj::Waiting { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, T> std::fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bulkhead::ResponseFuture")
    }
}
