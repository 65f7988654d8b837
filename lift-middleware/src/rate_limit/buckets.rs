//! The buckets of a keyed limiter: one per key, at most `max_keys`, none dropped while it
//! still holds its key back.
//!
//! A bucket dropped early (evicted from a full cache, say) would hand its key a new full
//! burst when it came back; with more keys active than there is room for, every key would
//! then go unlimited. So a bucket goes only once it has been indistinguishable from a fresh
//! one (its theoretical arrival time passed: `governor`'s `retain_recent`) for a second
//! more, and keys that find no room share one overflow bucket. A key that finds room
//! starts its own bucket where the overflow bucket stands, never fuller: it may have drawn
//! on the overflow bucket, and its own must not forget that.
//!
//! The second's margin covers a call that read the clock before a sweep and takes the lock
//! after it: only a call held up longer than a second and a burst's refill could find its
//! key's bucket gone and get one call more.
//!
//! A sweep reads every bucket. It runs only when a key without a bucket finds the map full,
//! at most once a millisecond, and while sweeps free nothing the wait doubles up to a
//! second: a map full of buckets that may not go costs a scan at most once a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::{NotUntil, Quota, RateLimiter};

use crate::classify::{OVERFLOW_WARN_EVERY, next_sweep_wait};

/// A duration in the nanoseconds the atomics below keep.
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// How long a bucket stays after it could go (see the module's docs).
const MARGIN: Nanos = Nanos::new(1_000_000_000);

/// The keyed limiter: `governor`'s GCRA over [`Buckets`].
pub(super) struct PerKey<C: Clock> {
    limiter: RateLimiter<String, Buckets, C, NoOpMiddleware<C::Instant>>,
    buckets: Buckets,
    start: C::Instant,
    /// Nanoseconds after `start` before which no sweep runs again (`u64::MAX` while one
    /// runs).
    next_sweep: AtomicU64,
    /// The wait after the last sweep, in nanoseconds: longer while sweeps free nothing.
    sweep_wait: AtomicU64,
    /// Nanoseconds after `start` before which the overflow bucket is not logged again.
    next_warning: AtomicU64,
}

impl<C: Clock> PerKey<C> {
    /// At most `max_keys` buckets for `quota`; 0 puts every key in the overflow bucket.
    pub(super) fn new(quota: Quota, clock: C, max_keys: u64) -> Self {
        let buckets = Buckets::new(usize::try_from(max_keys).unwrap_or(usize::MAX));
        let start = clock.now();
        PerKey {
            limiter: RateLimiter::new(quota, buckets.clone(), clock),
            buckets,
            start,
            next_sweep: AtomicU64::new(0),
            sweep_wait: AtomicU64::new(nanos(next_sweep_wait(Duration::ZERO, true))),
            next_warning: AtomicU64::new(0),
        }
    }

    /// Takes one call from `key`'s bucket, or says when it may come again.
    pub(super) fn check(&self, key: &String, clock: &C) -> Result<(), NotUntil<C::Instant>> {
        if !self.buckets.crowded() || self.buckets.holds(key) {
            return self.limiter.check_key(key);
        }
        let now = clock.now().duration_since(self.start).as_u64();
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now >= due
            && self
                .next_sweep
                .compare_exchange(due, u64::MAX, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.limiter.retain_recent();
            let last = Duration::from_nanos(self.sweep_wait.load(Ordering::Relaxed));
            let wait = nanos(next_sweep_wait(last, !self.buckets.crowded()));
            self.sweep_wait.store(wait, Ordering::Relaxed);
            self.next_sweep
                .store(now.saturating_add(wait), Ordering::Relaxed);
        }
        let checked = self.limiter.check_key(key);
        // A use of the overflow bucket is kept until it can be logged: one within a quiet
        // minute is logged by the first call after that minute that finds the map full.
        if self.buckets.shared.max > 0
            && now >= self.next_warning.load(Ordering::Relaxed)
            && self.buckets.overflow_used()
            && once_per(&self.next_warning, now, nanos(OVERFLOW_WARN_EVERY))
        {
            tracing::warn!(
                target: "lift::rate_limit",
                max_keys = self.buckets.shared.max,
                "every key's bucket holds its key back: keys without one share a bucket"
            );
        }
        checked
    }
}

/// Whether `now` is past `next`, which then moves `every` on (one caller wins a race).
fn once_per(next: &AtomicU64, now: u64, every: u64) -> bool {
    let due = next.load(Ordering::Relaxed);
    now >= due
        && next
            .compare_exchange(
                due,
                now.saturating_add(every),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
}

/// The state store: a theoretical arrival time per key, and the overflow bucket's.
#[derive(Clone)]
pub(super) struct Buckets {
    shared: Arc<Shared>,
}

struct Shared {
    max: usize,
    /// `max` buckets: a key without one would not find room.
    crowded: AtomicBool,
    /// The overflow bucket was used since this was last read.
    overflow_used: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tats: HashMap<String, Nanos>,
    overflow: Option<Nanos>,
}

impl Buckets {
    fn new(max: usize) -> Self {
        Buckets {
            shared: Arc::new(Shared {
                max,
                crowded: AtomicBool::new(max == 0),
                overflow_used: AtomicBool::new(false),
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn crowded(&self) -> bool {
        self.shared.crowded.load(Ordering::Relaxed)
    }

    fn overflow_used(&self) -> bool {
        self.shared.overflow_used.swap(false, Ordering::Relaxed)
    }

    fn holds(&self, key: &str) -> bool {
        self.lock().tats.contains_key(key)
    }

    fn settle(&self, state: &State) {
        let crowded = state.tats.len() >= self.shared.max;
        self.shared.crowded.store(crowded, Ordering::Relaxed);
    }
}

impl StateStore for Buckets {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut state = self.lock();
        if let Some(tat) = state.tats.get_mut(key) {
            let (outcome, next) = f(Some(*tat))?;
            *tat = next;
            return Ok(outcome);
        }
        // A key without a bucket is measured against the overflow bucket: its own bucket, if
        // it finds room, starts no fuller than the one it may have drawn on.
        let (outcome, next) = f(state.overflow)?;
        if state.tats.len() < self.shared.max {
            state.tats.insert(key.clone(), next);
        } else {
            self.shared.overflow_used.store(true, Ordering::Relaxed);
            state.overflow = Some(next);
        }
        self.settle(&state);
        Ok(outcome)
    }
}

impl ShrinkableKeyedStateStore<String> for Buckets {
    fn retain_recent(&self, drop_below: Nanos) {
        let drop_below = drop_below.saturating_sub(MARGIN);
        let mut state = self.lock();
        state.tats.retain(|_, tat| *tat > drop_below);
        self.settle(&state);
    }

    fn len(&self) -> usize {
        self.lock().tats.len()
    }

    fn is_empty(&self) -> bool {
        self.lock().tats.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::num::NonZeroU32;

    /// Sweeps that free nothing come less often, a second apart at most; one that frees
    /// room brings the wait back to a millisecond.
    #[test]
    fn sweeps_that_free_nothing_back_off_to_a_second() {
        let clock = FakeRelativeClock::default();
        let quota = Quota::per_minute(NonZeroU32::new(60).expect("non-zero"));
        let per_key = PerKey::new(quota, clock.clone(), 1);
        for _ in 0..60 {
            assert!(per_key.check(&"a".to_owned(), &clock).is_ok());
        }
        let mut sweeps = Vec::new();
        let mut last = 0;
        for i in 1..=10_000 {
            clock.advance(Duration::from_millis(1));
            let _ = per_key.check(&format!("k{i}"), &clock);
            let next = per_key.next_sweep.load(Ordering::Relaxed);
            if next != last {
                sweeps.push(i);
                last = next;
            }
        }
        let wait = per_key.sweep_wait.load(Ordering::Relaxed);
        assert_eq!(wait, 1_000_000_000);
        let late = sweeps.iter().filter(|&&at| at > 2_000).count();
        assert!(late <= 9, "{late} sweeps in the last 8 s: {sweeps:?}");
        assert!(sweeps.len() <= 20, "{sweeps:?}");

        // "a"'s bucket refills by 60 s and may go a second later: the next sweep frees it.
        clock.advance(Duration::from_secs(55));
        let _ = per_key.check(&"new".to_owned(), &clock);
        assert!(per_key.buckets.holds("new"));
        assert_eq!(per_key.sweep_wait.load(Ordering::Relaxed), 1_000_000);
    }
}
