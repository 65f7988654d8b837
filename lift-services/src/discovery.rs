//! Discovery: the live instances of a service, from a per-process cache.
//!
//! [`Discovery::discover`] answers from a cached snapshot of the service's instances: on the
//! warm path it makes no registry call at all. A snapshot is refreshed with one
//! [`Registry::instances`] call (one DynamoDB `Query`): in the background once it is older
//! than the TTL (the stale snapshot is served meanwhile), and in line only when there is
//! none or it is older than the stale limit. A refresh that fails keeps the previous
//! snapshot (serve-stale), logged at WARN, and the registry is not asked again for that
//! service before a TTL has passed; with no snapshot to serve, the calls meanwhile get
//! [`DiscoveryError::RegistryFailedRecently`].
//!
//! Filtering happens per call, in code: tombstones never enter a snapshot; an instance
//! whose leases all ended is left out at read time; then health, tenant, version, alias,
//! tags and region ([`Query`]). An instance that failed several calls in a row from this
//! process ([`Discovery::report`]) is ejected until the next refresh.
//!
//! Self-preservation: when most of a service's instances look expired at once (a registry
//! that stopped receiving renewals is likelier than a fleet that died at once), discovery
//! keeps serving them, logs it at WARN (target `lift::registry`) once per snapshot, and lets
//! ejection take out those that really fail. Only leases that ended recently count
//! ([`DiscoveryConfig::preserve_for`], an hour by default): instances retired days ago,
//! still in the table until their TTL, neither count nor come back. It needs at least two
//! matching instances: a lone instance whose lease ended cannot be told from a service idle
//! for longer than its lease (or whose environments all shut down), which leaves
//! discovery. A service with one alias per region is one instance there, so registry
//! writes that fail for a whole lease (throttled, or refused by IAM) take it out of
//! discovery until it is invoked or registered again: alarm on the `lift::registry`
//! WARNs of failed renewals, and give such services a longer lease.
//!
//! ```no_run
//! use std::sync::Arc;
//! use lift_services::discovery::{Discovery, Query};
//! use lift_services::DynamoRegistry;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
//! let discovery = Discovery::new(Arc::new(DynamoRegistry::new(client, "registry")));
//! let found = discovery.discover(&Query::new("payments").tenant("acme")).await?;
//! println!("{} instances", found.len());
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lift_middleware::retry::RetryBudget;

use crate::balance::Candidates;
use crate::clock::{Clock, SystemClock};
use crate::model::{Health, Instance};
use crate::registry::{Registry, RegistryError};

/// At most this many services are cached; past it the names that found no instance are
/// dropped from the cache.
const MAX_CACHED_SERVICES: usize = 1_000;

/// Why a discovery found nothing to call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The registry knows no instance of the service (never registered, or all
    /// deregistered).
    #[error("service `{service}` is unknown to the registry")]
    UnknownService {
        /// The service.
        service: String,
    },
    /// The service has instances, but none is live, healthy and matching the query.
    #[error(
        "service `{service}` has no healthy instance matching the query ({registered} registered)"
    )]
    NoHealthyInstance {
        /// The service.
        service: String,
        /// How many instances it has (tombstones left out).
        registered: usize,
    },
    /// The name cannot be a service's (see [`crate::validate_name`]): nothing was asked of
    /// the registry, nor kept.
    #[error("`{service}` is not a service name")]
    InvalidName {
        /// The name asked for.
        service: String,
        /// Why it cannot be one.
        #[source]
        source: crate::ConfigError,
    },
    /// The registry could not be read and nothing is cached.
    #[error("the registry could not be read for `{service}`")]
    Registry {
        /// The service.
        service: String,
        /// The cause.
        #[source]
        source: RegistryError,
    },
    /// Nothing is cached and the registry could not be read for the service within the
    /// last TTL (the failure was logged then, and answered as [`DiscoveryError::Registry`]
    /// to the caller that saw it): it is not asked again before the TTL is over, so a
    /// throttled or unreachable table gets one query per service and TTL, not one per call.
    #[error(
        "the registry could not be read for `{service}` within the last TTL; not asked again before it is over"
    )]
    RegistryFailedRecently {
        /// The service.
        service: String,
    },
}

/// Which health states a query accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HealthFilter {
    /// Healthy and degraded instances only.
    #[default]
    HealthyOnly,
    /// Healthy and degraded instances, or, when there is none, every live one.
    HealthyElseAll,
    /// Every live instance.
    Any,
}

/// What a caller looks for.
///
/// Tenancy: an instance scoped to a tenant is returned only to a query for that tenant; a
/// query without a tenant gets only shared (unscoped) instances.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    service: &'a str,
    health: HealthFilter,
    tenant: Option<&'a str>,
    version: Option<&'a str>,
    alias: Option<&'a str>,
    tags: &'a [&'a str],
    region: Option<&'a str>,
}

impl<'a> Query<'a> {
    /// Healthy instances of `service`, shared ones only.
    pub fn new(service: &'a str) -> Self {
        Query {
            service,
            ..Query::default()
        }
    }

    /// The service.
    pub fn service(&self) -> &'a str {
        self.service
    }

    /// Which health states are accepted.
    pub fn health(mut self, health: HealthFilter) -> Self {
        self.health = health;
        self
    }

    /// For `tenant`: its own instances and shared ones.
    pub fn tenant(mut self, tenant: &'a str) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// For `tenant`, when there is one.
    pub fn tenant_opt(mut self, tenant: Option<&'a str>) -> Self {
        self.tenant = tenant;
        self
    }

    /// Only this version.
    pub fn version(mut self, version: &'a str) -> Self {
        self.version = Some(version);
        self
    }

    /// Only this alias.
    pub fn alias(mut self, alias: &'a str) -> Self {
        self.alias = Some(alias);
        self
    }

    /// Only instances with all of these tags.
    pub fn tags(mut self, tags: &'a [&'a str]) -> Self {
        self.tags = tags;
        self
    }

    /// Only this region.
    pub fn region(mut self, region: &'a str) -> Self {
        self.region = Some(region);
        self
    }
}

/// Per-process counters of one instance, kept across refreshes.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) outstanding: AtomicU32,
    pub(crate) failures: AtomicU32,
    pub(crate) ejected: AtomicBool,
}

/// One instance in a snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) instance: Arc<Instance>,
    /// Health as of the refresh.
    pub(crate) health: Health,
    /// End of the latest lease (Unix ms), checked at read time.
    pub(crate) expires_at_ms: u64,
    pub(crate) stats: Arc<Stats>,
}

/// The filterable attributes of one entry, interned: a query compares integers.
#[derive(Debug, Clone, Copy)]
struct Key {
    /// 0 for a shared instance, else the tenant's id.
    tenant: u32,
    version: u32,
    alias: u32,
    region: u32,
    /// One bit per tag of the snapshot's tag dictionary.
    tags: u64,
    expires_at_ms: u64,
    unhealthy: bool,
}

/// Distinct values of one attribute; an id is a position plus one (0: absent).
#[derive(Debug, Default)]
struct Dict(Vec<Box<str>>);

impl Dict {
    fn intern(&mut self, value: Option<&str>) -> u32 {
        let Some(value) = value else { return 0 };
        match self.0.iter().position(|v| &**v == value) {
            Some(i) => i as u32 + 1,
            None => {
                self.0.push(value.into());
                self.0.len() as u32
            }
        }
    }

    /// The id of `value`: `None` when no entry has it.
    fn find(&self, value: &str) -> Option<u32> {
        self.0
            .iter()
            .position(|v| &**v == value)
            .map(|i| i as u32 + 1)
    }
}

/// A service's instances as of one refresh.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) entries: Vec<Entry>,
    /// Effective weights (halved while degraded), parallel to `entries`.
    pub(crate) weights: Vec<u32>,
    keys: Vec<Key>,
    tenants: Dict,
    versions: Dict,
    aliases: Dict,
    regions: Dict,
    tags: Dict,
    /// More than 64 distinct tags: tag filters compare strings.
    tags_overflow: bool,
    fetched_at_ms: u64,
    preservation_logged: AtomicBool,
    /// Ejections since the last refresh (shared by the service's snapshots): while zero,
    /// discovery skips the per-instance check.
    pub(crate) ejections: Arc<AtomicU32>,
    /// The service's failover budget (shared by its snapshots: refreshes keep it).
    budget: Arc<RetryBudget>,
    /// Answers to recent queries over this snapshot ([`Memo`]).
    memo: RwLock<Vec<(MemoKey, Memo)>>,
}

/// At most this many distinct queries are remembered per snapshot (a process asks few).
const MEMO_LIMIT: usize = 32;

/// A query as a snapshot sees it: what its answer depends on besides time and ejections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MemoKey {
    tenant: Option<u32>,
    version: Option<u32>,
    alias: Option<u32>,
    region: Option<u32>,
    tags: u64,
    health: HealthFilter,
}

/// The matching instances (positions in the snapshot) and the running totals of their
/// weights, shared by every [`Discovered`] that gives this answer.
#[derive(Debug)]
struct Answer {
    indices: Box<[u32]>,
    cumulative: Box<[u64]>,
}

/// A remembered answer. Within one snapshot, the answer to a query changes only when an
/// instance's lease ends or an instance is ejected: it stays valid while the clock is
/// before `valid_until_ms` (the next lease end among the instances the query matched) and
/// no ejection happened since (`ejections`).
#[derive(Debug, Clone)]
struct Memo {
    answer: Arc<Answer>,
    valid_until_ms: u64,
    ejections: u32,
}

impl Snapshot {
    /// The remembered answer to `key`, when it still holds at `now`.
    fn remembered(&self, key: &MemoKey, now: u64, ejections: u32) -> Option<Memo> {
        let memo = match self.memo.read() {
            Ok(memo) => memo,
            Err(poisoned) => poisoned.into_inner(),
        };
        memo.iter()
            .find(|(k, m)| k == key && now < m.valid_until_ms && m.ejections == ejections)
            .map(|(_, m)| m.clone())
    }

    fn remember(&self, key: MemoKey, answer: Memo) {
        let mut memo = match self.memo.write() {
            Ok(memo) => memo,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(slot) = memo.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = answer;
        } else if memo.len() < MEMO_LIMIT {
            memo.push((key, answer));
        }
    }

    fn new(
        entries: Vec<Entry>,
        fetched_at_ms: u64,
        ejections: Arc<AtomicU32>,
        budget: Arc<RetryBudget>,
    ) -> Snapshot {
        let mut snapshot = Snapshot {
            weights: Vec::with_capacity(entries.len()),
            keys: Vec::with_capacity(entries.len()),
            tenants: Dict::default(),
            versions: Dict::default(),
            aliases: Dict::default(),
            regions: Dict::default(),
            tags: Dict::default(),
            tags_overflow: false,
            fetched_at_ms,
            preservation_logged: AtomicBool::new(false),
            ejections,
            budget,
            entries: Vec::new(),
            memo: RwLock::new(Vec::new()),
        };
        for entry in &entries {
            let instance = &entry.instance;
            let mut tags = 0u64;
            for tag in &instance.tags {
                let id = snapshot.tags.intern(Some(tag));
                if id > 64 {
                    snapshot.tags_overflow = true;
                } else {
                    tags |= 1 << (id - 1);
                }
            }
            snapshot.keys.push(Key {
                tenant: snapshot.tenants.intern(instance.tenant.as_deref()),
                version: snapshot.versions.intern(instance.version.as_deref()),
                alias: snapshot.aliases.intern(instance.alias.as_deref()),
                region: snapshot.regions.intern(Some(&instance.region)),
                tags,
                expires_at_ms: entry.expires_at_ms,
                unhealthy: entry.health == Health::Unhealthy,
            });
            let weight = instance.weight.max(1);
            snapshot.weights.push(if entry.health == Health::Degraded {
                weight.div_ceil(2)
            } else {
                weight
            });
        }
        snapshot.entries = entries;
        snapshot
    }
}

/// A query resolved against one snapshot's dictionaries.
struct Resolved {
    tenant: Option<u32>,
    version: Option<u32>,
    alias: Option<u32>,
    region: Option<u32>,
    tags: u64,
}

impl Resolved {
    /// `None` when the query asks for a value no entry has.
    fn new(snapshot: &Snapshot, query: &Query<'_>) -> Option<Resolved> {
        let find = |dict: &Dict, value: Option<&str>| match value {
            None => Some(None),
            Some(value) => dict.find(value).map(Some),
        };
        let mut tags = 0u64;
        if !snapshot.tags_overflow {
            for tag in query.tags {
                tags |= 1 << (snapshot.tags.find(tag)? - 1);
            }
        }
        Some(Resolved {
            // An unknown tenant still sees the shared instances.
            tenant: query
                .tenant
                .map(|t| snapshot.tenants.find(t).unwrap_or(u32::MAX)),
            version: find(&snapshot.versions, query.version)?,
            alias: find(&snapshot.aliases, query.alias)?,
            region: find(&snapshot.regions, query.region)?,
            tags,
        })
    }

    fn matches(&self, key: &Key) -> bool {
        (key.tenant == 0 || Some(key.tenant) == self.tenant)
            && self.version.is_none_or(|v| key.version == v)
            && self.alias.is_none_or(|a| key.alias == a)
            && self.region.is_none_or(|r| key.region == r)
            && key.tags & self.tags == self.tags
    }
}

struct ServiceCache {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    /// Held by the caller refreshing in line (no snapshot, or one past the stale limit).
    inline: Arc<tokio::sync::Mutex<()>>,
    refreshing: AtomicBool,
    /// When the last refresh failed (clock milliseconds), 0 after one succeeds: for a TTL
    /// after a failure the stale snapshot is served without asking the registry again.
    failed_at_ms: AtomicU64,
    ejections: Arc<AtomicU32>,
    /// The service's failover budget, for [`crate::client`]: the AWS SDKs' standard
    /// figures, one per service (a new one when the cache drops the service to bound
    /// itself).
    budget: Arc<RetryBudget>,
}

impl ServiceCache {
    fn failed_recently(&self, now: u64, ttl: Duration) -> bool {
        let failed_at = self.failed_at_ms.load(Ordering::Acquire);
        failed_at != 0 && now.saturating_sub(failed_at) < millis(ttl)
    }
}

/// How discovery caches.
///
/// # Default
/// Refresh in the background after 30 s; refresh in line after 5 minutes; eject after 3
/// consecutive failures; self-preservation when more than half of the instances whose
/// leases ran within the last hour look expired.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    ttl: Duration,
    max_stale: Duration,
    eject_after: u32,
    preserve_for: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            ttl: Duration::from_secs(30),
            max_stale: Duration::from_secs(300),
            eject_after: 3,
            preserve_for: Duration::from_secs(3600),
        }
    }
}

impl DiscoveryConfig {
    /// The age after which a snapshot is refreshed in the background.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The age after which a snapshot is refreshed before answering (it is still served if
    /// that refresh fails).
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.max_stale = max_stale;
        self
    }

    /// Consecutive failures after which an instance is ejected until the next refresh
    /// (at least 1).
    pub fn eject_after(mut self, failures: u32) -> Self {
        self.eject_after = failures.max(1);
        self
    }

    /// How long after its lease ended an instance still counts for self-preservation (and
    /// may be served by it); one whose lease ended earlier is gone for good, and neither
    /// counts nor is served, however many of its kind the table still holds.
    pub fn preserve_for(mut self, window: Duration) -> Self {
        self.preserve_for = window;
        self
    }
}

struct Shared {
    registry: Arc<dyn Registry>,
    clock: Arc<dyn Clock>,
    config: DiscoveryConfig,
    services: RwLock<HashMap<String, Arc<ServiceCache>, foldhash::fast::RandomState>>,
}

/// Discovers instances through a per-process cache; cheap to clone. See the module docs.
#[derive(Clone)]
pub struct Discovery {
    shared: Arc<Shared>,
    local_region: Option<Arc<str>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// What a discovery found: the matching instances of one snapshot.
#[derive(Debug, Clone)]
pub struct Discovered {
    snapshot: Arc<Snapshot>,
    answer: Arc<Answer>,
    local_region: Option<Arc<str>>,
}

impl Discovered {
    /// How many instances matched.
    pub fn len(&self) -> usize {
        self.answer.indices.len()
    }

    /// Whether none matched (never, for a successful discovery).
    pub fn is_empty(&self) -> bool {
        self.answer.indices.is_empty()
    }

    /// The matching instances.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.answer
            .indices
            .iter()
            .map(|&i| self.snapshot.entries[i as usize].instance.as_ref())
    }

    /// The candidates a [`crate::balance::Strategy`] picks from.
    pub fn candidates(&self) -> Candidates<'_> {
        Candidates::new(
            &self.snapshot,
            &self.answer.indices,
            self.local_region.as_deref(),
            &self.answer.cumulative,
        )
    }

    /// Counts a call in flight to the instance at `position` (in [`Discovered::candidates`])
    /// until the returned guard drops: what [`crate::balance::LeastOutstanding`] and
    /// [`crate::balance::PowerOfTwoChoices`] read. The service client does this itself.
    pub fn track(&self, position: usize) -> Option<InFlight> {
        let index = *self.answer.indices.get(position)?;
        Some(InFlight::count(&self.snapshot.entries[index as usize]))
    }

    pub(crate) fn ejections(&self) -> &AtomicU32 {
        &self.snapshot.ejections
    }

    /// The service's failover budget.
    pub(crate) fn budget(&self) -> &RetryBudget {
        &self.snapshot.budget
    }

    pub(crate) fn entry_at(&self, snapshot_index: u32) -> &Entry {
        &self.snapshot.entries[snapshot_index as usize]
    }
}

/// A call in flight, counted until dropped ([`Discovered::track`]).
#[derive(Debug)]
pub struct InFlight {
    stats: Arc<Stats>,
}

impl InFlight {
    pub(crate) fn count(entry: &Entry) -> InFlight {
        entry.stats.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight {
            stats: entry.stats.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    match lock.read() {
        Ok(value) => value.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

impl Discovery {
    /// Discovery over `registry`, with the default configuration and the system clock.
    pub fn new(registry: Arc<dyn Registry>) -> Self {
        Discovery::with_config(registry, DiscoveryConfig::default(), Arc::new(SystemClock))
    }

    /// Discovery over `registry`, configured, reading lease expiry from `clock`.
    pub fn with_config(
        registry: Arc<dyn Registry>,
        config: DiscoveryConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Discovery {
            shared: Arc::new(Shared {
                registry,
                clock,
                config,
                services: RwLock::new(HashMap::default()),
            }),
            local_region: std::env::var("AWS_REGION").ok().map(Arc::from),
        }
    }

    /// The caller's region, for [`crate::balance::RegionLocal`] (default: `AWS_REGION`,
    /// read once when the discovery is made). Clones made before keep theirs.
    pub fn local_region(mut self, region: Option<String>) -> Self {
        self.local_region = region.map(Arc::from);
        self
    }

    fn cache(&self, service: &str) -> Arc<ServiceCache> {
        if let Ok(services) = self.shared.services.read()
            && let Some(cache) = services.get(service)
        {
            return cache.clone();
        }
        let mut services = match self.shared.services.write() {
            Ok(services) => services,
            Err(poisoned) => poisoned.into_inner(),
        };
        if services.len() >= MAX_CACHED_SERVICES && !services.contains_key(service) {
            // Names asked for that have no instance (unknown services) make way; the
            // services that have some stay.
            services
                .retain(|_, cache| read(&cache.snapshot).is_some_and(|s| !s.entries.is_empty()));
        }
        services
            .entry(service.to_owned())
            .or_insert_with(|| {
                Arc::new(ServiceCache {
                    snapshot: RwLock::new(None),
                    inline: Arc::new(tokio::sync::Mutex::new(())),
                    refreshing: AtomicBool::new(false),
                    failed_at_ms: AtomicU64::new(0),
                    ejections: Arc::new(AtomicU32::new(0)),
                    budget: Arc::new(RetryBudget::standard()),
                })
            })
            .clone()
    }

    /// Refreshes `services` now, concurrently: call it from a background task at start
    /// ([`lift_core::App::background`]) so the first calls find a warm cache.
    pub async fn warm_up(&self, services: &[&str]) {
        let refreshes = services.iter().map(|service| self.refresh(service));
        for result in futures_util::future::join_all(refreshes).await {
            if let Err(error) = result {
                tracing::warn!(target: "lift::registry", error = %error, "warm-up failed");
            }
        }
    }

    /// Reads the service from the registry (one query) and replaces its snapshot; on failure
    /// the previous snapshot stays.
    ///
    /// # Errors
    /// The registry's error.
    pub async fn refresh(&self, service: &str) -> Result<(), RegistryError> {
        let cache = self.cache(service);
        self.refresh_cache(service, &cache).await
    }

    /// [`Discovery::refresh`] into `cache`, the service's entry as the caller holds it
    /// (the map may have dropped it meanwhile, to bound itself).
    async fn refresh_cache(
        &self,
        service: &str,
        cache: &ServiceCache,
    ) -> Result<(), RegistryError> {
        let result = self.shared.registry.instances(service).await;
        let now = self.shared.clock.now_ms();
        cache.refreshing.store(false, Ordering::Release);
        let instances = match result {
            Ok(instances) => instances,
            Err(error) => {
                cache.failed_at_ms.store(now.max(1), Ordering::Release);
                tracing::warn!(target: "lift::registry", service, error = %error, "refresh failed; serving the cached instances");
                return Err(error);
            }
        };
        cache.failed_at_ms.store(0, Ordering::Release);
        let previous = read(&cache.snapshot);
        let entries = instances
            .into_iter()
            .filter(|i| !i.deregistered)
            .map(|instance| {
                let stats = previous
                    .as_ref()
                    .and_then(|p| p.entries.iter().find(|e| e.instance.id == instance.id))
                    .map(|e| {
                        // Ejection lasts until the next refresh; in-flight counts carry on.
                        e.stats.failures.store(0, Ordering::Relaxed);
                        e.stats.ejected.store(false, Ordering::Relaxed);
                        e.stats.clone()
                    })
                    .unwrap_or_default();
                Entry {
                    health: instance.health(now),
                    expires_at_ms: instance.expires_at_ms(),
                    instance: Arc::new(instance),
                    stats,
                }
            })
            .collect();
        cache.ejections.store(0, Ordering::Relaxed);
        let snapshot = Arc::new(Snapshot::new(
            entries,
            now,
            cache.ejections.clone(),
            cache.budget.clone(),
        ));
        match cache.snapshot.write() {
            Ok(mut slot) => *slot = Some(snapshot),
            Err(poisoned) => *poisoned.into_inner() = Some(snapshot),
        }
        Ok(())
    }

    /// The instances of the query's service that are live, healthy (per the query) and
    /// match it; ejected ones left out.
    ///
    /// # Errors
    /// [`DiscoveryError::UnknownService`], [`DiscoveryError::NoHealthyInstance`], or
    /// [`DiscoveryError::Registry`] when the registry cannot be read and nothing is cached,
    /// [`DiscoveryError::RegistryFailedRecently`] when it could not be within the last TTL.
    pub async fn discover(&self, query: &Query<'_>) -> Result<Discovered, DiscoveryError> {
        // A name no service can have is refused before it queries the registry or takes a
        // place in the cache: callers may pass names their own callers chose.
        crate::validate_name(query.service).map_err(|source| DiscoveryError::InvalidName {
            service: query.service.to_owned(),
            source,
        })?;
        let now = self.shared.clock.now_ms();
        let config = &self.shared.config;
        if let Some(snapshot) = self.cached(query.service) {
            let age = now.saturating_sub(snapshot.fetched_at_ms);
            if age >= millis(config.ttl) {
                // Past the TTL; but a registry that failed within the last TTL is not asked
                // again before it is over: a throttled or unreachable table would otherwise
                // get a query (and every caller a wait) per call.
                let cache = self.cache(query.service);
                if cache.failed_recently(now, config.ttl) {
                    return self.select(snapshot, query, now);
                }
                if age < millis(config.max_stale) {
                    self.refresh_in_background(query.service);
                }
            }
            if age < millis(config.max_stale) {
                return self.select(snapshot, query, now);
            }
        }
        // Boxed, so that the warm path's future stays small.
        Box::pin(self.discover_cold(query)).await
    }

    /// [`Discovery::discover`] without a fresh snapshot: refresh in line.
    async fn discover_cold(&self, query: &Query<'_>) -> Result<Discovered, DiscoveryError> {
        let service = query.service;
        let config = &self.shared.config;
        let stale = self.cached(service);
        let snapshot = {
            // One refresh at a time per service: callers that arrive meanwhile wait
            // for it and take its snapshot instead of querying the registry too.
            let cache = self.cache(service);
            let turn = cache.inline.clone().lock_owned().await;
            let fresh = read(&cache.snapshot).filter(|snapshot| {
                self.shared
                    .clock
                    .now_ms()
                    .saturating_sub(snapshot.fetched_at_ms)
                    < millis(config.max_stale)
            });
            let now = self.shared.clock.now_ms();
            match (fresh, stale) {
                (Some(snapshot), _) => snapshot,
                // The refresh this caller waited for (or one within the TTL) failed: the
                // stale snapshot serves, as on the warm path, rather than another query of a
                // failing registry; without one, the failure is the answer.
                (None, Some(stale)) if cache.failed_recently(now, config.ttl) => stale,
                (None, None) if cache.failed_recently(now, config.ttl) => {
                    return Err(DiscoveryError::RegistryFailedRecently {
                        service: service.to_owned(),
                    });
                }
                (None, stale) => match self.refresh_holding(turn, service, &cache).await {
                    Ok(()) => {
                        read(&cache.snapshot).ok_or_else(|| DiscoveryError::UnknownService {
                            service: service.to_owned(),
                        })?
                    }
                    Err(error) => match stale {
                        Some(stale) => stale,
                        None => {
                            return Err(DiscoveryError::Registry {
                                service: service.to_owned(),
                                source: error,
                            });
                        }
                    },
                },
            }
        };
        self.select(snapshot, query, self.shared.clock.now_ms())
    }

    /// [`refresh_cache`](Self::refresh_cache) in a task of its own, which holds the
    /// service's `turn`: a caller that stops waiting (its deadline came) leaves the refresh
    /// to finish, so that its snapshot, or its failure (remembered for the TTL), serves
    /// the callers after it rather than each starting a query of its own.
    async fn refresh_holding(
        &self,
        turn: tokio::sync::OwnedMutexGuard<()>,
        service: &str,
        cache: &Arc<ServiceCache>,
    ) -> Result<(), RegistryError> {
        let this = self.clone();
        let (name, cache) = (service.to_owned(), cache.clone());
        let refresh = tokio::spawn(async move {
            let _turn = turn;
            this.refresh_cache(&name, &cache).await
        });
        match refresh.await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // The runtime is shutting down: nothing was learnt.
            Err(_) => Err(RegistryError::Codec {
                what: "the refresh was cancelled: the runtime is shutting down".to_owned(),
            }),
        }
    }

    /// The cached snapshot, read under the locks without touching the registry.
    fn cached(&self, service: &str) -> Option<Arc<Snapshot>> {
        let services = match self.shared.services.read() {
            Ok(services) => services,
            Err(poisoned) => poisoned.into_inner(),
        };
        let cache = services.get(service)?;
        read(&cache.snapshot)
    }

    fn refresh_in_background(&self, service: &str) {
        let cache = self.cache(service);
        if cache.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        let name = service.to_owned();
        tokio::spawn(async move {
            let _ = this.refresh(&name).await;
        });
    }

    /// The query over a snapshot: no I/O.
    fn select(
        &self,
        snapshot: Arc<Snapshot>,
        query: &Query<'_>,
        now: u64,
    ) -> Result<Discovered, DiscoveryError> {
        if snapshot.entries.is_empty() {
            return Err(DiscoveryError::UnknownService {
                service: query.service.to_owned(),
            });
        }
        let none = || DiscoveryError::NoHealthyInstance {
            service: query.service.to_owned(),
            registered: snapshot.entries.len(),
        };
        let resolved = Resolved::new(&snapshot, query).ok_or_else(none)?;
        let slow_tags = snapshot.tags_overflow && !query.tags.is_empty();
        let memo_key = MemoKey {
            tenant: resolved.tenant,
            version: resolved.version,
            alias: resolved.alias,
            region: resolved.region,
            tags: resolved.tags,
            health: query.health,
        };
        let ejections = snapshot.ejections.load(Ordering::Acquire);
        if !slow_tags && let Some(memo) = snapshot.remembered(&memo_key, now, ejections) {
            return Ok(Discovered {
                snapshot,
                answer: memo.answer,
                local_region: self.local_region.clone(),
            });
        }
        let mut indices = Vec::with_capacity(snapshot.entries.len());
        let (mut expired, mut healthy) = (0usize, 0usize);
        let preserve_for = millis(self.shared.config.preserve_for);
        // The next lease end among the matching instances: the answer holds until then.
        let mut valid_until_ms = u64::MAX;
        for (i, key) in snapshot.keys.iter().enumerate() {
            if !resolved.matches(key)
                || (slow_tags
                    && !query
                        .tags
                        .iter()
                        .all(|t| snapshot.entries[i].instance.has_tag(t)))
            {
                continue;
            }
            if key.expires_at_ms <= now {
                // Retired long ago (a replaced function, an old alias): not part of a fleet
                // whose leases lapsed together.
                let gone_at = key.expires_at_ms.saturating_add(preserve_for);
                if gone_at <= now {
                    continue;
                }
                expired += 1;
                valid_until_ms = valid_until_ms.min(gone_at);
            } else {
                valid_until_ms = valid_until_ms.min(key.expires_at_ms);
            }
            indices.push(i as u32);
        }
        let matching = indices.len();
        // Self-preservation: most matching instances expired at once (recently) → keep
        // them all.
        let preserve = matching >= 2 && expired * 2 > matching;
        if preserve && !snapshot.preservation_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(target: "lift::registry", service = query.service, matching, expired, "self-preservation: most instances look expired at once; serving the last known set");
        }
        let check_ejected = ejections > 0;
        let live = |i: u32| preserve || snapshot.keys[i as usize].expires_at_ms > now;
        let ejected = |i: u32| {
            check_ejected
                && snapshot.entries[i as usize]
                    .stats
                    .ejected
                    .load(Ordering::Relaxed)
        };
        // Ejection steers calls away from failing instances while others are left; when
        // it would leave none, every live one is served (a lone instance's failures may be
        // its callers' own: short deadlines, requests it refuses), rather than failing
        // every call until the next refresh.
        let ignore_ejection = check_ejected && !indices.iter().any(|&i| live(i) && !ejected(i));
        indices.retain(|&i| {
            let keep = live(i) && (ignore_ejection || !ejected(i));
            healthy += usize::from(keep && !snapshot.keys[i as usize].unhealthy);
            keep
        });
        let health_filter = match query.health {
            HealthFilter::Any => false,
            HealthFilter::HealthyOnly => true,
            HealthFilter::HealthyElseAll => healthy > 0,
        };
        if health_filter && healthy < indices.len() {
            indices.retain(|&i| !snapshot.keys[i as usize].unhealthy);
        }
        if indices.is_empty() {
            return Err(none());
        }
        let answer = Arc::new(Answer {
            cumulative: crate::balance::running_totals(&snapshot, &indices),
            indices: indices.into_boxed_slice(),
        });
        if !slow_tags {
            snapshot.remember(
                memo_key,
                Memo {
                    answer: answer.clone(),
                    valid_until_ms,
                    ejections,
                },
            );
        }
        Ok(Discovered {
            snapshot,
            answer,
            local_region: self.local_region.clone(),
        })
    }

    /// Records the outcome of a call to the instance `id` (as found by a discovery):
    /// consecutive failures eject it until the next refresh.
    pub fn report(&self, found: &Discovered, id: &str, ok: bool) {
        if let Some(entry) = found
            .snapshot
            .entries
            .iter()
            .find(|e| &*e.instance.id == id)
        {
            report_entry(
                &found.snapshot.ejections,
                entry,
                ok,
                self.shared.config.eject_after,
            );
        }
    }

    pub(crate) fn eject_after(&self) -> u32 {
        self.shared.config.eject_after
    }
}

pub(crate) fn report_entry(ejections: &AtomicU32, entry: &Entry, ok: bool, eject_after: u32) {
    if ok {
        entry.stats.failures.store(0, Ordering::Relaxed);
        return;
    }
    let failures = entry.stats.failures.fetch_add(1, Ordering::Relaxed) + 1;
    if failures >= eject_after && !entry.stats.ejected.swap(true, Ordering::Relaxed) {
        ejections.fetch_add(1, Ordering::Release);
        tracing::warn!(target: "lift::registry", service = %entry.instance.service, instance = %entry.instance.id, failures, "instance ejected until the next refresh");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{EnvLease, MemoryRegistry};
    use crate::{Endpoints, EnvReport, Instance};

    /// Names that find no instance take the cache's places up to its bound, no further; a
    /// service that has instances keeps its place.
    #[tokio::test]
    async fn unknown_names_do_not_grow_the_cache_past_its_bound() {
        let registry = Arc::new(MemoryRegistry::new());
        let payments = Instance::new("payments", "a", "eu-west-1", Endpoints::lambda("arn:a"));
        registry
            .register(
                &payments,
                &EnvLease::new("env", 0, EnvReport::new(u64::MAX / 2, 0, 0.0, 0), 86_400),
            )
            .await
            .expect("register");
        let discovery = Discovery::new(registry);
        discovery
            .discover(&Query::new("payments"))
            .await
            .expect("payments");
        for n in 0..MAX_CACHED_SERVICES + 500 {
            let error = discovery
                .discover(&Query::new(&format!("ghost-{n}")))
                .await
                .expect_err("unknown");
            assert!(
                matches!(error, DiscoveryError::UnknownService { .. }),
                "{error:?}"
            );
        }
        let cached = |name: &str| {
            let services = discovery.shared.services.read().expect("lock");
            (services.len(), services.contains_key(name))
        };
        let (len, payments_kept) = cached("payments");
        assert!(len <= MAX_CACHED_SERVICES, "{len} cached");
        assert!(payments_kept);
    }

    /// A name no service can have is refused, and takes no place in the cache.
    #[tokio::test]
    async fn an_invalid_name_is_refused_before_the_registry() {
        let discovery = Discovery::new(Arc::new(MemoryRegistry::new()));
        for name in ["", "Payments", "a/../b", &"x".repeat(65)] {
            let error = discovery
                .discover(&Query::new(name))
                .await
                .expect_err("invalid");
            assert!(
                matches!(error, DiscoveryError::InvalidName { .. }),
                "{name}: {error:?}"
            );
        }
        assert!(discovery.shared.services.read().expect("lock").is_empty());
    }
}
