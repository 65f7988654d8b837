//! Where instances are recorded: the [`Registry`] contract, its DynamoDB implementation
//! ([`DynamoRegistry`]) and an in-memory one ([`MemoryRegistry`]) that passes the same
//! contract tests.
//!
//! # The contract
//! - [`Registry::register`] upserts an instance and puts the calling environment's lease in
//!   it. It never resurrects a deregistered instance: an environment that started before the
//!   deregistration is refused with [`RegistryError::Deregistered`], and so is one of the
//!   version the tombstone was written for, whenever it started (Lambda starts new
//!   environments of a deployed version to scale out and to replace old ones). An
//!   environment started after the deregistration that runs another version (a new
//!   deployment) registers the instance again. An instance that names no version, or
//!   `$LATEST` (every deployment of an unpublished function), cannot be told apart from the
//!   deregistered code: a later environment registers it again. A version label that does
//!   not change between deployments (`ServiceConfig::version`) keeps the next deployment out
//!   too, until the tombstone's TTL or `lift register`.
//!   The tombstone names the version that registered last: while two versions run behind
//!   one alias (a gradual rollout), the other one comes back; deregistered before any
//!   environment of a new deployment registered, the new one does.
//! - [`Registry::renew`] refreshes one environment's lease and health report, and only that:
//!   it fails with [`RegistryError::Deregistered`] on a tombstone and
//!   [`RegistryError::NotFound`] when the instance is gone, and never creates one.
//! - [`Registry::release`] drops one environment's lease (graceful shutdown);
//!   [`Registry::deregister`] leaves a tombstone.
//! - Every write increments the instance's revision.
//! - [`Registry::instances`] reads a service's instances, tombstones included: liveness and
//!   health are decided by the reader ([`Instance::is_live`], [`Instance::health`]).

mod dynamo;
mod error;
mod memory;

use futures_util::future::BoxFuture;

pub use dynamo::DynamoRegistry;
pub use error::RegistryError;
pub use memory::MemoryRegistry;

use crate::model::{EnvReport, Health, Instance};

/// One execution environment's lease on an instance.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EnvLease {
    /// The environment's id (random, chosen at its start).
    pub env_id: String,
    /// When the environment started (Unix milliseconds): an environment older than a
    /// deregistration cannot register the instance again.
    pub started_at_ms: u64,
    /// Its lease and report.
    pub report: EnvReport,
    /// Garbage collection only: when DynamoDB may delete the item (Unix seconds).
    pub ttl_s: u64,
}

impl EnvLease {
    /// A lease.
    pub fn new(
        env_id: impl Into<String>,
        started_at_ms: u64,
        report: EnvReport,
        ttl_s: u64,
    ) -> Self {
        EnvLease {
            env_id: env_id.into(),
            started_at_ms,
            report,
            ttl_s,
        }
    }
}

/// A store of service instances; see the module docs for the contract every implementation
/// keeps.
pub trait Registry: Send + Sync + 'static {
    /// Upserts `instance` (its `environments` are ignored) with `lease` in it; returns the
    /// instance as stored.
    fn register<'a>(
        &'a self,
        instance: &'a Instance,
        lease: &'a EnvLease,
    ) -> BoxFuture<'a, Result<Instance, RegistryError>>;

    /// Renews one environment's lease and report, and drops the leases of the environments
    /// in `prune` (seen expired) that have ended by the report's time, not one renewed
    /// since; returns the instance as stored.
    fn renew<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
        lease: &'a EnvLease,
        prune: &'a [String],
    ) -> BoxFuture<'a, Result<Instance, RegistryError>>;

    /// Drops one environment's lease.
    fn release<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
        env_id: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>>;

    /// Leaves a tombstone: the instance leaves discovery, and no environment started before
    /// `at_ms`, nor any of the version that registered last, can bring it back (see the
    /// module's contract). `ttl_s` is when the tombstone may be garbage-collected.
    fn deregister<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
        at_ms: u64,
        ttl_s: u64,
    ) -> BoxFuture<'a, Result<(), RegistryError>>;

    /// Sets or clears an operator's health verdict.
    fn set_health<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
        health: Option<Health>,
    ) -> BoxFuture<'a, Result<(), RegistryError>>;

    /// The service's instances, tombstones and expired ones included.
    fn instances<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Instance>, RegistryError>>;

    /// Every instance of every service: for tools (the `lift` command), never on a call
    /// path (on DynamoDB, a `Scan`).
    fn scan(&self) -> BoxFuture<'_, Result<Vec<Instance>, RegistryError>>;
}
