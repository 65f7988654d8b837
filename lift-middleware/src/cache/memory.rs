//! The in-memory store: a bounded LRU-like map (moka's TinyLFU) whose entries each carry
//! their own time to live.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;

use super::CacheError;
use super::entry::Entry;

/// Lets moka drop each entry once its own time to live has passed. Freshness is still
/// checked in code against the cache's wall clock, which tests can control.
struct PerEntryTtl;

impl Expiry<String, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        entry: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_millis(
            entry.expires_at.saturating_sub(entry.stored_at),
        ))
    }
}

pub(crate) struct MemoryStore {
    entries: moka::sync::Cache<String, Arc<Entry>>,
}

impl MemoryStore {
    pub(crate) fn new(capacity: u64) -> MemoryStore {
        MemoryStore {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(PerEntryTtl)
                .support_invalidation_closures()
                .build(),
        }
    }

    pub(crate) fn get(&self, key: &str, now: u64, max_age: Option<Duration>) -> Option<Arc<Entry>> {
        let entry = self.entries.get(key)?;
        if entry.usable(now, max_age) {
            Some(entry)
        } else {
            if now >= entry.expires_at {
                self.entries.invalidate(key);
            }
            None
        }
    }

    /// Keeps `entry` unless an entry stored later is already there.
    pub(crate) fn put(&self, key: &str, entry: Arc<Entry>) {
        let newer = self
            .entries
            .get(key)
            .is_some_and(|old| old.stored_at > entry.stored_at);
        if !newer {
            self.entries.insert(key.to_owned(), entry);
        }
    }

    pub(crate) fn remove(&self, key: &str) {
        self.entries.invalidate(key);
    }

    pub(crate) fn remove_prefix(&self, prefix: &str) -> Result<(), CacheError> {
        let prefix = prefix.to_owned();
        self.entries
            .invalidate_entries_if(move |key, _| key.starts_with(&prefix))
            .map(|_| ())
            .map_err(|e| CacheError::Store(e.to_string()))
    }

    /// How many entries are held (moka's estimate).
    pub(crate) fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}
