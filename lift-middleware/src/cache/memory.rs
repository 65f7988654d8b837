//! The in-memory store: a bounded LRU-like map (moka's TinyLFU) whose entries each carry
//! their own time to live.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;

use super::CacheError;
use super::entry::Entry;

/// An entry in memory, and until when (epoch milliseconds) this process may serve it
/// without asking the table again: its expiry, or sooner with a memory bound.
#[derive(Clone)]
struct Held {
    entry: Arc<Entry>,
    until: u64,
    put_at: u64,
}

/// Lets moka drop each entry once this process's time for it has passed. Freshness is
/// still checked in code against the cache's wall clock, which tests can control.
struct UntilExpiry;

impl Expiry<String, Held> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        held: &Held,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_millis(
            held.until.saturating_sub(held.put_at),
        ))
    }
}

pub(crate) struct MemoryStore {
    entries: moka::sync::Cache<String, Held>,
    /// The longest an entry is held, in milliseconds (with a table behind the memory).
    bound: Option<u64>,
}

impl MemoryStore {
    pub(crate) fn new(capacity: u64, bound: Option<Duration>) -> MemoryStore {
        MemoryStore {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExpiry)
                .support_invalidation_closures()
                .build(),
            bound: bound.map(|b| u64::try_from(b.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    pub(crate) fn get(&self, key: &str, now: u64, max_age: Option<Duration>) -> Option<Arc<Entry>> {
        let held = self.entries.get(key)?;
        if now < held.until && held.entry.usable(now, max_age) {
            Some(held.entry)
        } else {
            if now >= held.until {
                self.entries.invalidate(key);
            }
            None
        }
    }

    /// Keeps `entry`, put at `now`, unless an entry stored later is already there.
    pub(crate) fn put(&self, key: &str, entry: Arc<Entry>, now: u64) {
        let newer = self
            .entries
            .get(key)
            .is_some_and(|old| old.entry.stored_at > entry.stored_at);
        if !newer {
            let until = match self.bound {
                Some(bound) => entry.expires_at.min(now.saturating_add(bound)),
                None => entry.expires_at,
            };
            self.entries.insert(
                key.to_owned(),
                Held {
                    entry,
                    until,
                    put_at: now,
                },
            );
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
            .map_err(CacheError::Memory)
    }

    /// How many entries are held (moka's estimate).
    pub(crate) fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}
