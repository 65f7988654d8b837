//! The breakers of a keyed layer: one per key, at most `max_keys`, none dropped while its
//! open time runs.
//!
//! A breaker dropped early (evicted from a full cache, say) would hand its key a closed
//! breaker while the dependency was still failing: with more keys active than there is
//! room for, an open breaker would stop protecting anything. So a breaker goes only to
//! make room, and only with no call in flight and either at rest (closed, which also ends
//! the backoff of its trips; no failures in a row; no failure or slow call in its window)
//! or unused for the layer's idle time and not open. Keys that find no room share one more
//! breaker, the overflow breaker: while the room is full, they are refused for each other's
//! failures.
//! Once there is room, a key gets a closed breaker of its own (found by the next sweep,
//! within a second), so a key whose failures opened the shared breaker fails as many times
//! again as a new key may before its own opens.
//!
//! A sweep reads every breaker: it runs at most once a millisecond, and while sweeps free
//! nothing the wait doubles up to a second, so a room full of breakers that may not go
//! costs a new key a scan at most once a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::config::CircuitBreakerConfig;
use super::state::{Breaker, OnChange, State};
use crate::classify::{OVERFLOW_WARN_EVERY, next_sweep_wait};

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
    /// The wait after the last sweep: longer while sweeps free nothing.
    sweep_wait: Duration,
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
            let entry = Entry {
                breaker: breaker.clone(),
                used: now,
            };
            room.breakers.insert(key, entry);
            return breaker;
        }
        if room.next_warning.is_none_or(|at| now >= at) {
            room.next_warning = Some(now + OVERFLOW_WARN_EVERY);
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

    /// When the room is full and a sweep is due, drops every breaker that may go.
    fn make_room(&self, room: &mut Room, now: Instant) {
        if room.breakers.len() < self.max || room.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        room.breakers.retain(|_, entry| !self.may_go(entry, now));
        room.sweep_wait = next_sweep_wait(room.sweep_wait, room.breakers.len() < self.max);
        room.next_sweep = Some(now + room.sweep_wait);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_once(breaker: &Breaker, now: Instant) {
        let permit = breaker.acquire(now).expect("closed");
        breaker.record(&permit, true, Duration::from_millis(1), now);
    }

    /// Sweeps that free nothing come less often, a second apart at most; one that frees
    /// room brings the wait back to a millisecond.
    #[tokio::test(start_paused = true)]
    async fn sweeps_that_free_nothing_back_off_to_a_second() {
        let config = CircuitBreakerConfig::builder("t")
            .consecutive_failures(1)
            .no_failure_rate()
            .open_for(Duration::from_secs(30))
            .half_open(1, 1)
            .build()
            .expect("config");
        let breakers = Breakers::new(config, None, 1, Duration::from_secs(600));
        let start = Instant::now();
        failed_once(&breakers.get("down".to_owned(), start), start);
        let mut sweeps = Vec::new();
        let mut last = None;
        for i in 1..=10_000 {
            let now = start + Duration::from_millis(i);
            drop(breakers.get(format!("k{i}"), now));
            let next = breakers.lock().next_sweep;
            if next != last {
                sweeps.push(i);
                last = next;
            }
        }
        assert_eq!(breakers.lock().sweep_wait, Duration::from_secs(1));
        let late = sweeps.iter().filter(|&&at| at > 2_000).count();
        assert!(late <= 9, "{late} sweeps in the last 8 s: {sweeps:?}");
        assert!(sweeps.len() <= 20, "{sweeps:?}");

        // "down" closes after its open time; the next sweep frees its room.
        let now = start + Duration::from_secs(31);
        let down = breakers.get("down".to_owned(), now);
        let probe = down.acquire(now).expect("a probe");
        down.record(&probe, false, Duration::from_millis(1), now);
        drop(down);
        let later = now + Duration::from_secs(2);
        drop(breakers.get("new".to_owned(), later));
        assert!(breakers.find("new").is_some());
        assert_eq!(breakers.lock().sweep_wait, Duration::from_millis(1));
    }
}
