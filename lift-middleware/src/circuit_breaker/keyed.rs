//! The breakers of a keyed layer: one per key, at most `max_keys`, none dropped while it
//! still holds something its key's calls depend on.
//!
//! A breaker dropped early (evicted from a full cache, say) would hand its key a closed
//! breaker while the dependency was still failing: with more keys active than there is
//! room for, an open breaker would stop protecting anything. So a breaker goes only to
//! make room, and only with no call in flight and either at rest (closed, no failure or
//! slow call in its window, no failures in a row, no trips to back off from) or unused for
//! the layer's idle time and not open. Keys that find no room share one more breaker, the
//! overflow breaker. A key that finds room gets a breaker of its own at once, open for as
//! long as the overflow breaker is, so no key leaves an open shared breaker for a closed
//! one. (One that leaves a closed overflow breaker with failures on record starts with
//! none: like any new key, it may fail as many times as the breaker allows before it
//! opens.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::config::CircuitBreakerConfig;
use super::state::{Breaker, OnChange, State};

/// How often a layer short of room looks for breakers that may go, at most: a sweep reads
/// every breaker, and a flood of new keys must not make every call pay for one.
const SWEEP_EVERY: Duration = Duration::from_millis(1);

/// How often the overflow breaker's use is logged, at most.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The breakers of a keyed layer.
pub(crate) struct Breakers {
    config: CircuitBreakerConfig,
    on_change: Option<OnChange>,
    max: usize,
    idle: Duration,
    room: Mutex<Room>,
}

struct Entry {
    breaker: Arc<Breaker>,
    used: Instant,
}

#[derive(Default)]
struct Room {
    breakers: HashMap<String, Entry>,
    overflow: Option<Arc<Breaker>>,
    /// No sweep before this.
    next_sweep: Option<Instant>,
    /// No WARN about the overflow breaker in use before this.
    next_warning: Option<Instant>,
}

impl Breakers {
    /// Room for `max_keys` breakers; one unused for `idle` may go even if it has seen
    /// failures, unless it is open.
    pub(crate) fn new(
        config: CircuitBreakerConfig,
        on_change: Option<OnChange>,
        max_keys: u64,
        idle: Duration,
    ) -> Self {
        Breakers {
            config,
            on_change,
            max: usize::try_from(max_keys).unwrap_or(usize::MAX),
            idle,
            room: Mutex::new(Room::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Room> {
        self.room.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn breaker(&self, suffix: &str) -> Arc<Breaker> {
        Arc::new(Breaker::new(
            self.config.clone(),
            Arc::from(format!("{}:{suffix}", self.config.name)),
            self.on_change.clone(),
        ))
    }

    /// `key`'s breaker, or the overflow breaker when `key` has none and finds no room.
    pub(crate) fn get(&self, key: String, now: Instant) -> Arc<Breaker> {
        let mut room = self.lock();
        if let Some(entry) = room.breakers.get_mut(&key) {
            entry.used = now;
            return entry.breaker.clone();
        }
        self.make_room(&mut room, now);
        if room.breakers.len() < self.max {
            let breaker = self.breaker(&key);
            if let Some(overflow) = &room.overflow {
                breaker.open_as(overflow);
            }
            let entry = Entry {
                breaker: breaker.clone(),
                used: now,
            };
            room.breakers.insert(key, entry);
            return breaker;
        }
        if room.next_warning.is_none_or(|at| now >= at) {
            room.next_warning = Some(now + WARN_EVERY);
            tracing::warn!(
                target: "lift::circuit_breaker",
                breaker = %self.config.name,
                max_keys = self.max,
                "no room for another key's breaker: keys without one share a breaker"
            );
        }
        room.overflow
            .get_or_insert_with(|| self.breaker("*"))
            .clone()
    }

    /// `key`'s own breaker, if it has one.
    pub(crate) fn find(&self, key: &str) -> Option<Arc<Breaker>> {
        self.lock().breakers.get(key).map(|e| e.breaker.clone())
    }

    /// When the room is full and no sweep ran in the last millisecond, drops every breaker
    /// that may go.
    fn make_room(&self, room: &mut Room, now: Instant) {
        if room.breakers.len() < self.max || room.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        room.next_sweep = Some(now + SWEEP_EVERY);
        room.breakers.retain(|_, entry| !self.may_go(entry, now));
    }

    fn may_go(&self, entry: &Entry, now: Instant) -> bool {
        let breaker = &entry.breaker;
        // The map's own reference is the only one: no call holds it.
        Arc::strong_count(breaker) == 1
            && (breaker.at_rest(now)
                || (now.saturating_duration_since(entry.used) >= self.idle
                    && breaker.state(now) != State::Open))
    }
}
