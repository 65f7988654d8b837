//! Caching: answers and values kept in memory, in DynamoDB, or both, per tenant.
//!
//! - [`Cache`] is the shared handle. It holds a bounded in-memory store (TinyLFU eviction
//!   and a time to live per entry, from `moka`), a DynamoDB table, or both, the memory
//!   in front. Expiry is always checked in code against the cache's clock; DynamoDB's TTL
//!   only cleans up.
//! - [`CacheLayer`] caches whole responses. A [`CachePolicy`] decides per request what is
//!   cached, under which key and for how long; [`HttpGetPolicy`] is the HTTP one, which
//!   honours `Cache-Control` on both sides.
//! - [`Cache::get_or_compute`] caches any serializable value.
//! - Keys always include the tenant ([`Context::tenant`]), so one tenant never reads
//!   another's answers.
//! - Single flight: concurrent misses for one key in one process compute once; the
//!   others wait for that answer.
//! - Invalidation by key and by prefix, within a tenant. In DynamoDB an invalidation
//!   leaves a tombstone (a prefix invalidation also a marker for the keys the table does
//!   not hold yet), and every write is conditional on its time, so a computation that
//!   started before an invalidation cannot store a stale answer after it, in the table
//!   nor in its environment's memory. Other
//!   execution environments see it in the table at once and in their memory within
//!   [`CacheBuilder::memory_ttl`] (10 s by default).
//! - Counters ([`Cache::stats`]) and, when enabled, `CacheHit`/`CacheMiss` metrics on the
//!   request's EMF document. Responses carry `x-cache: hit|miss` and `Age`.
//! - A failing store never fails a request: a read error is a miss, a write error is
//!   logged; both are counted in [`CacheStats::errors`].
//!
//! ```
//! use std::time::Duration;
//! use lift_core::{App, Context, Result};
//! use lift_middleware::cache::{Cache, CacheLayer, HttpGetPolicy};
//!
//! async fn product(ctx: Context) -> Result<String> {
//!     Ok(format!("product {}", ctx.path_param("id")?))
//! }
//!
//! # fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::builder("catalog").memory(10_000).build()?;
//! let app = App::new()
//!     .get("/products/{id}", product)
//!     .layer(CacheLayer::new(cache.clone(), HttpGetPolicy::new(Duration::from_secs(60))));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! The DynamoDB table has a string partition key `pk` and a string sort key `sk`; turn on
//! TTL on its `expires_at` attribute. See the `dynamodb` module source for the item layout.

#[cfg(feature = "dynamodb")]
mod dynamodb;
#[cfg(not(feature = "dynamodb"))]
#[path = "without_dynamodb.rs"]
mod dynamodb;
mod entry;
mod flight;
mod memory;
mod policy;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, StatusCode};
use lift_core::{Body, BoxError, Context, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::{Layer, Service, ServiceExt};

pub use policy::{CacheControl, CachePolicy, CacheRule, HttpGetPolicy};

use crate::classify::{SystemClock, WallClock};
use crate::error::{ConfigError, check};
use dynamodb::{DynamoDbStore, RemoteConfig};
use entry::{Entry, Payload, millis};
use flight::{Flights, Join, Waited};
use memory::MemoryStore;

/// A cache store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// DynamoDB refused or could not be reached (within the cache's time limit).
    #[cfg(feature = "dynamodb")]
    #[error("cache store error")]
    Store(#[from] crate::dynamo::DynamoError),
    /// The memory store could not invalidate by prefix.
    #[error("cache memory error")]
    Memory(#[source] moka::PredicateError),
    /// A value could not be encoded or decoded as JSON.
    #[error("cache value codec error: {0}")]
    Codec(#[from] serde_json::Error),
}

/// How the cache has fared since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Answers served from a store.
    pub hits: u64,
    /// Lookups that found nothing usable (or were told to refresh).
    pub misses: u64,
    /// Answers shared by another caller's computation of the same key.
    pub coalesced: u64,
    /// Answers written to the stores.
    pub stores: u64,
    /// Store failures (each also logged at WARN).
    pub errors: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
    stores: AtomicU64,
    errors: AtomicU64,
}

struct Inner {
    namespace: String,
    memory: Option<MemoryStore>,
    remote: Option<DynamoDbStore>,
    flights: Arc<Flights>,
    clock: Arc<dyn WallClock>,
    counters: Counters,
    /// Bumped by every invalidation; a computation that saw another value when it
    /// started does not store its answer.
    epoch: AtomicU64,
    emit_metrics: bool,
}

/// A shared cache; cheap to clone. See the module docs.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.inner.namespace)
            .field("memory", &self.inner.memory.is_some())
            .field("dynamodb", &self.inner.remote.is_some())
            .finish()
    }
}

/// The default bound on an answer's time in memory when DynamoDB is behind it
/// ([`CacheBuilder::memory_ttl`]).
pub const DEFAULT_MEMORY_TTL: Duration = Duration::from_secs(10);

/// Builds a [`Cache`].
pub struct CacheBuilder {
    namespace: String,
    memory: u64,
    memory_ttl: Duration,
    remote: Option<RemoteConfig>,
    clock: Arc<dyn WallClock>,
    emit_metrics: bool,
}

impl std::fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("namespace", &self.namespace)
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

impl CacheBuilder {
    /// Keeps up to `entries` answers in this process's memory.
    pub fn memory(mut self, entries: u64) -> Self {
        self.memory = entries;
        self
    }
    /// With DynamoDB behind the memory, the longest an answer stays in this process's
    /// memory before it is read from the table again (default [`DEFAULT_MEMORY_TTL`],
    /// 10 s; never longer than the answer's own TTL). An invalidation made in another
    /// execution environment reaches the table at once and this process's memory within
    /// this bound. Without DynamoDB it does not apply: invalidations are all local.
    pub fn memory_ttl(mut self, ttl: Duration) -> Self {
        self.memory_ttl = ttl;
        self
    }
    /// Keeps answers in the DynamoDB `table` (partition key `pk`, sort key `sk`, both
    /// strings), shared by every execution environment; `client` is built once at init.
    #[cfg(feature = "dynamodb")]
    pub fn dynamodb(mut self, client: aws_sdk_dynamodb::Client, table: &str) -> Self {
        self.remote = Some(RemoteConfig {
            client,
            table: table.to_owned(),
        });
        self
    }
    /// Reads the time from `clock` (tests inject one).
    pub fn clock(mut self, clock: impl WallClock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
    /// Records `CacheHit` and `CacheMiss` counts in each request's metrics.
    pub fn emit_metrics(mut self, on: bool) -> Self {
        self.emit_metrics = on;
        self
    }
    /// Validates the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] when no store is configured, the namespace is empty or contains
    /// `#`, or the table name is empty.
    pub fn build(self) -> Result<Cache, ConfigError> {
        check(
            !self.namespace.is_empty() && !self.namespace.contains('#'),
            "namespace",
            "must be non-empty and without '#'",
        )?;
        check(
            self.memory > 0 || self.remote.is_some(),
            "stores",
            "configure memory, dynamodb or both",
        )?;
        if let Some(remote) = &self.remote {
            check(
                !remote.table().is_empty(),
                "dynamodb.table",
                "must name a table",
            )?;
        }
        Ok(Cache {
            inner: Arc::new(Inner {
                namespace: self.namespace,
                memory: (self.memory > 0).then(|| {
                    let bound = self.remote.is_some().then_some(self.memory_ttl);
                    MemoryStore::new(self.memory, bound)
                }),
                remote: self.remote.map(DynamoDbStore::new),
                flights: Arc::new(Flights::default()),
                clock: self.clock,
                counters: Counters::default(),
                epoch: AtomicU64::new(0),
                emit_metrics: self.emit_metrics,
            }),
        })
    }
}

/// Where a key lives: the tenant's scope and the key within it, joined by a separator
/// (one string: the in-memory and single-flight key).
struct Slot {
    joined: String,
    split: usize,
}

impl Slot {
    fn scope(&self) -> &str {
        &self.joined[..self.split]
    }
    fn key(&self) -> &str {
        &self.joined[self.split + SEPARATOR.len_utf8()..]
    }
}

const SEPARATOR: char = '\u{1f}';

impl Cache {
    /// A cache for `namespace` (a name shared by the functions that share answers, such
    /// as the service name). By default it has no store; add [`CacheBuilder::memory`],
    /// [`CacheBuilder::dynamodb`] or both.
    pub fn builder(namespace: &str) -> CacheBuilder {
        CacheBuilder {
            namespace: namespace.to_owned(),
            memory: 0,
            memory_ttl: DEFAULT_MEMORY_TTL,
            remote: None,
            clock: Arc::new(SystemClock),
            emit_metrics: false,
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            stores: c.stores.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }

    /// How many entries this process holds in memory (an estimate; 0 without memory).
    pub fn memory_entries(&self) -> u64 {
        self.inner.memory.as_ref().map_or(0, MemoryStore::len)
    }

    fn now(&self) -> u64 {
        self.inner
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, millis)
    }

    fn slot(&self, tenant: Option<&str>, key: &str) -> Slot {
        self.slot_from(tenant, key.to_owned())
    }

    /// The slot of `key`, built in `key`'s own buffer (the hit path allocates once).
    fn slot_from(&self, tenant: Option<&str>, mut key: String) -> Slot {
        let namespace = &self.inner.namespace;
        key.insert(0, SEPARATOR);
        match tenant {
            Some(tenant) => {
                key.insert_str(0, tenant);
                key.insert_str(0, "#t#");
            }
            None => key.insert_str(0, "#-"),
        }
        key.insert_str(0, namespace);
        let split = namespace.len() + tenant.map_or(2, |t| t.len() + 3);
        Slot { joined: key, split }
    }

    fn failed(&self, what: &str, error: &CacheError) {
        self.inner.counters.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(target: "lift::cache", namespace = %self.inner.namespace, %error, "cache {what} failed");
    }

    async fn lookup(&self, slot: &Slot, now: u64, max_age: Option<Duration>) -> Option<Arc<Entry>> {
        if let Some(memory) = &self.inner.memory
            && let Some(entry) = memory.get(&slot.joined, now, max_age)
        {
            return Some(entry);
        }
        let remote = self.inner.remote.as_ref()?;
        // An invalidation here while the table is read may come after the read: what the
        // read found then goes to this caller only, never into memory for the next.
        let epoch = self.inner.epoch.load(Ordering::Acquire);
        match remote.get(slot.scope(), slot.key()).await {
            Ok(Some(entry)) if entry.usable(now, max_age) => {
                let entry = Arc::new(entry);
                if let Some(memory) = &self.inner.memory
                    && self.inner.epoch.load(Ordering::Acquire) == epoch
                {
                    memory.put(&slot.joined, entry.clone(), now);
                }
                Some(entry)
            }
            Ok(_) => None,
            Err(error) => {
                self.failed("read", &error);
                None
            }
        }
    }

    /// Keeps `entry`, computed while the local invalidation count was `epoch`: in the
    /// table first, then in memory only if the table kept it (an invalidation in another
    /// environment refuses it there) and no local invalidation came meanwhile.
    async fn store(&self, slot: &Slot, entry: Arc<Entry>, epoch: u64) {
        if let Some(remote) = &self.inner.remote {
            match remote.put(slot.scope(), slot.key(), &entry).await {
                Ok(true) => {}
                Ok(false) => {
                    self.inner.counters.stores.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(error) => {
                    self.failed("write", &error);
                    return;
                }
            }
        }
        if let Some(memory) = &self.inner.memory
            && self.inner.epoch.load(Ordering::Acquire) == epoch
        {
            memory.put(&slot.joined, entry, self.now());
        }
        self.inner.counters.stores.fetch_add(1, Ordering::Relaxed);
    }

    /// Looks `slot` up, or computes it once for every concurrent caller in this process.
    /// `accept` turns a stored entry, read at the given time, into the caller's output
    /// (`None`: unusable, compute instead); `compute` returns the caller's output and what
    /// to keep of it. The flag says whether the output came from the cache.
    async fn fetch<T, E, A, F, Fut>(
        &self,
        slot: &Slot,
        rule: &CacheRule,
        accept: A,
        compute: F,
    ) -> Result<(T, bool), E>
    where
        A: Fn(&Entry, u64) -> Option<T>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, Option<Payload>), E>>,
    {
        let counters = &self.inner.counters;
        let now = self.now();
        if !rule.refresh
            && let Some(entry) = self.lookup(slot, now, rule.max_age).await
            && let Some(output) = accept(&entry, now)
        {
            counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((output, true));
        }
        counters.misses.fetch_add(1, Ordering::Relaxed);
        let leader = loop {
            match self.inner.flights.join(&slot.joined) {
                Join::Leader(leader) => break Some(leader),
                Join::Follower(receiver) => match flight::wait(receiver).await {
                    Waited::Shared(entry) => {
                        if let Some(output) = accept(&entry, self.now()) {
                            counters.coalesced.fetch_add(1, Ordering::Relaxed);
                            return Ok((output, true));
                        }
                        break None;
                    }
                    Waited::NotShared => break None,
                    Waited::Abandoned => {}
                },
            }
        };
        let started = self.now();
        let epoch = self.inner.epoch.load(Ordering::Acquire);
        let (output, payload) = compute().await?;
        let entry = match payload {
            Some(payload) if self.inner.epoch.load(Ordering::Acquire) == epoch => {
                let entry = Arc::new(payload.stamp(started));
                self.store(slot, entry.clone(), epoch).await;
                Some(entry)
            }
            _ => None,
        };
        if let Some(leader) = leader {
            leader.finish(entry);
        }
        Ok((output, false))
    }

    fn record(&self, metrics: &lift_core::metrics::Metrics, hit: bool) {
        if self.inner.emit_metrics {
            let name = if hit { "CacheHit" } else { "CacheMiss" };
            if let Err(error) = metrics.count(name, 1.0) {
                tracing::warn!(target: "lift::cache", %error, "could not record a cache metric");
            }
        }
    }

    /// The value cached under `key` for the request's tenant, or `compute`'s, which is
    /// then kept for `ttl`. Concurrent misses for one key compute once. An error from
    /// `compute` is returned and nothing is kept.
    ///
    /// # Errors
    /// `compute`'s error. A store failure is not an error (it is a miss, logged).
    pub async fn get_or_compute<V, E, F, Fut>(
        &self,
        ctx: &Context,
        key: &str,
        ttl: Duration,
        compute: F,
    ) -> Result<V, E>
    where
        V: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let slot = self.slot(ctx.tenant(), key);
        let rule = CacheRule::new(key, ttl);
        let decode = |entry: &Entry, _now: u64| {
            let decoded = match &entry.body {
                Body::Text(json) => serde_json::from_str(json),
                Body::Binary(bytes) => serde_json::from_slice(bytes),
                _ => serde_json::from_str("null"),
            };
            // An entry of another shape (the type changed) is a miss.
            decoded
                .map_err(|error| self.failed("decode", &CacheError::Codec(error)))
                .ok()
        };
        let (value, hit) = self
            .fetch(&slot, &rule, decode, || async {
                let value = compute().await?;
                let payload = match serde_json::to_string(&value) {
                    Ok(json) => Some(Payload {
                        status: StatusCode::OK,
                        headers: HeaderMap::new(),
                        body: Body::Text(json),
                        ttl,
                    }),
                    Err(error) => {
                        self.failed("encode", &CacheError::Codec(error));
                        None
                    }
                };
                Ok((value, payload))
            })
            .await?;
        self.record(ctx.metrics(), hit);
        Ok(value)
    }

    /// Removes `key` of `tenant` from every store.
    ///
    /// # Errors
    /// [`CacheError::Store`] when DynamoDB fails (memory is cleared anyway).
    pub async fn invalidate(&self, tenant: Option<&str>, key: &str) -> Result<(), CacheError> {
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        let slot = self.slot(tenant, key);
        if let Some(memory) = &self.inner.memory {
            memory.remove(&slot.joined);
        }
        match &self.inner.remote {
            Some(remote) => {
                remote
                    .invalidate(slot.scope(), slot.key(), self.now())
                    .await
            }
            None => Ok(()),
        }
    }

    /// Removes every key of `tenant` that starts with `prefix` from every store (an empty
    /// prefix: all of the tenant's keys). Returns how many keys DynamoDB held (0 without
    /// DynamoDB).
    ///
    /// # Errors
    /// [`CacheError::Store`] when a store fails.
    pub async fn invalidate_prefix(
        &self,
        tenant: Option<&str>,
        prefix: &str,
    ) -> Result<usize, CacheError> {
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        let slot = self.slot(tenant, prefix);
        if let Some(memory) = &self.inner.memory {
            memory.remove_prefix(&slot.joined)?;
        }
        match &self.inner.remote {
            Some(remote) => {
                remote
                    .invalidate_prefix(slot.scope(), slot.key(), self.now())
                    .await
            }
            None => Ok(0),
        }
    }
}

/// Caches whole responses as its [`CachePolicy`] says; see the module docs.
#[derive(Clone)]
pub struct CacheLayer {
    cache: Cache,
    policy: Arc<dyn CachePolicy>,
}

impl std::fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayer")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl CacheLayer {
    /// Caches responses in `cache` under `policy`.
    pub fn new(cache: Cache, policy: impl CachePolicy) -> CacheLayer {
        CacheLayer {
            cache,
            policy: Arc::new(policy),
        }
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CacheService {
            inner,
            cache: self.cache.clone(),
            policy: self.policy.clone(),
        }
    }
}

/// The response-caching service.
pub struct CacheService<S> {
    inner: S,
    cache: Cache,
    policy: Arc<dyn CachePolicy>,
}

impl<S: Clone> Clone for CacheService<S> {
    fn clone(&self) -> Self {
        CacheService {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<S> std::fmt::Debug for CacheService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheService")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

crate::inner_accessors!(CacheService<S>);

/// The future of [`CacheService`] (it may await DynamoDB, so it is boxed).
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

impl<S> Service<Context> for CacheService<S>
where
    S: Service<Context, Response = Response> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, ctx: Context) -> Self::Future {
        let service = crate::take_ready(&mut self.inner);
        let Some(rule) = self.policy.rule(&ctx) else {
            return Box::pin(async move { service.oneshot(ctx).await.map_err(Into::into) });
        };
        let cache = self.cache.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let mut rule = rule;
            let slot = cache.slot_from(ctx.tenant(), std::mem::take(&mut rule.key));
            let metrics = ctx.metrics().clone();
            let (mut response, hit) = cache
                .fetch(
                    &slot,
                    &rule,
                    |entry, now| Some(entry.to_response(now, "hit")),
                    || async {
                        let response = service.oneshot(ctx).await.map_err(Into::into)?;
                        // The policy sees the rule as it made it, key included.
                        let mut kept = rule.clone();
                        kept.key = slot.key().to_owned();
                        // A streamed body is not in the response yet: nothing to keep.
                        let payload = (!lift_core::stream::is_streaming(&response))
                            .then(|| policy.keep(&kept, &response))
                            .flatten()
                            .map(|ttl| Payload::of_response(&response, ttl));
                        Ok::<_, BoxError>((response, payload))
                    },
                )
                .await?;
            if !hit {
                response
                    .headers_mut()
                    .insert("x-cache", http::HeaderValue::from_static("miss"));
            }
            cache.record(&metrics, hit);
            Ok(response)
        })
    }
}
