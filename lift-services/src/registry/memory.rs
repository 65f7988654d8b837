//! An in-memory registry with the same contract as the DynamoDB one, for fast tests and
//! service-level test doubles.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use futures_util::future::BoxFuture;

use super::{EnvLease, Registry, RegistryError};
use crate::model::{Health, Instance};

#[derive(Debug, Clone)]
struct Stored {
    instance: Instance,
    deregistered_at_ms: u64,
}

/// A registry held in this process; see [`Registry`] for the contract it keeps.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    items: Mutex<BTreeMap<(String, String), Stored>>,
    queries: AtomicU64,
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        MemoryRegistry::default()
    }

    /// How many times [`Registry::instances`] was called (the "queries" made).
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    fn items(&self) -> MutexGuard<'_, BTreeMap<(String, String), Stored>> {
        match self.items.lock() {
            Ok(items) => items,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn with<T>(
        &self,
        service: &str,
        id: &str,
        f: impl FnOnce(&mut Stored) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut items = self.items();
        match items.get_mut(&(service.to_owned(), id.to_owned())) {
            Some(stored) => f(stored),
            None => Err(RegistryError::NotFound {
                service: service.to_owned(),
                id: id.to_owned(),
            }),
        }
    }
}

fn gone(instance: &Instance) -> RegistryError {
    RegistryError::Deregistered {
        service: instance.service.to_string(),
        id: instance.id.to_string(),
    }
}

impl Registry for MemoryRegistry {
    fn register<'a>(
        &'a self,
        instance: &'a Instance,
        lease: &'a EnvLease,
    ) -> BoxFuture<'a, Result<Instance, RegistryError>> {
        Box::pin(async move {
            let mut items = self.items();
            let key = (instance.service.to_string(), instance.id.to_string());
            let mut fresh = instance.clone();
            fresh.tags = crate::model::unique_tags(&instance.tags);
            fresh.deregistered = false;
            fresh.health_override = None;
            fresh.environments = BTreeMap::new();
            fresh.revision = 0;
            let stored = items.entry(key).or_insert_with(|| Stored {
                instance: fresh.clone(),
                deregistered_at_ms: 0,
            });
            if stored.instance.deregistered {
                let same_version = instance
                    .code_version()
                    .is_some_and(|v| stored.instance.version.as_deref() == Some(v));
                if stored.deregistered_at_ms >= lease.started_at_ms || same_version {
                    return Err(gone(instance));
                }
                stored.instance.environments.clear();
            }
            let environments = std::mem::take(&mut stored.instance.environments);
            let revision = stored.instance.revision;
            let health_override = stored.instance.health_override;
            stored.instance = fresh;
            stored.instance.environments = environments;
            stored.instance.health_override = health_override;
            stored.instance.revision = revision + 1;
            stored
                .instance
                .environments
                .insert(lease.env_id.clone(), lease.report.clone());
            Ok(stored.instance.clone())
        })
    }

    fn renew<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
        lease: &'a EnvLease,
        prune: &'a [String],
    ) -> BoxFuture<'a, Result<Instance, RegistryError>> {
        Box::pin(async move {
            self.with(service, id, |stored| {
                if stored.instance.deregistered {
                    return Err(gone(&stored.instance));
                }
                // Only a lease that has ended by this renewal's time: one renewed since the
                // renewer last looked stays.
                for env in prune {
                    if stored
                        .instance
                        .environments
                        .get(env)
                        .is_some_and(|e| e.expires_at_ms <= lease.report.reported_at_ms)
                    {
                        stored.instance.environments.remove(env);
                    }
                }
                stored
                    .instance
                    .environments
                    .insert(lease.env_id.clone(), lease.report.clone());
                stored.instance.revision += 1;
                Ok(stored.instance.clone())
            })
        })
    }

    fn release<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
        env_id: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            self.with(service, id, |stored| {
                stored.instance.environments.remove(env_id);
                stored.instance.revision += 1;
                Ok(())
            })
        })
    }

    fn deregister<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
        at_ms: u64,
        _ttl_s: u64,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            self.with(service, id, |stored| {
                stored.instance.deregistered = true;
                stored.instance.environments.clear();
                stored.deregistered_at_ms = at_ms;
                stored.instance.revision += 1;
                Ok(())
            })
        })
    }

    fn set_health<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
        health: Option<Health>,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            self.with(service, id, |stored| {
                if stored.instance.deregistered {
                    return Err(gone(&stored.instance));
                }
                stored.instance.health_override = health;
                stored.instance.revision += 1;
                Ok(())
            })
        })
    }

    fn scan(&self) -> BoxFuture<'_, Result<Vec<Instance>, RegistryError>> {
        Box::pin(async move {
            Ok(self
                .items()
                .values()
                .map(|stored| stored.instance.clone())
                .collect())
        })
    }

    fn instances<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Instance>, RegistryError>> {
        Box::pin(async move {
            self.queries.fetch_add(1, Ordering::Relaxed);
            Ok(self
                .items()
                .iter()
                .filter(|((s, _), _)| s == service)
                .map(|(_, stored)| stored.instance.clone())
                .collect())
        })
    }
}
