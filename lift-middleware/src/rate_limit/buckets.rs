//! The buckets of a keyed limiter: one per key, at most `max_keys`, none dropped while it
//! still holds its key back.
//!
//! A bucket dropped early (evicted from a full cache, say) would hand its key a new full
//! burst when it came back; with more keys active than there is room for, every key would
//! then go unlimited. So a bucket goes only once it is indistinguishable from a fresh one
//! (its theoretical arrival time has passed: `governor`'s `retain_recent`), and keys that
//! find no room share one overflow bucket. A key gets a bucket of its own only while that
//! overflow bucket is fresh too: it may have drawn on the overflow bucket before, and a
//! new bucket of its own must not forget that.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::{NotUntil, Quota, RateLimiter};

/// How often a limiter short of room looks for buckets that may go, at most: a sweep reads
/// every bucket, and a flood of new keys must not make every call pay for one.
const SWEEP_EVERY_NANOS: u64 = 1_000_000;

/// How often the overflow bucket's coming into use is logged, at most.
const WARN_EVERY_NANOS: u64 = 60_000_000_000;

/// The keyed limiter: `governor`'s GCRA over [`Buckets`].
pub(super) struct PerKey<C: Clock> {
    limiter: RateLimiter<String, Buckets, C, NoOpMiddleware<C::Instant>>,
    buckets: Buckets,
    start: C::Instant,
    /// Nanoseconds after `start` before which no sweep runs again.
    next_sweep: AtomicU64,
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
            next_warning: AtomicU64::new(0),
        }
    }

    /// Takes one call from `key`'s bucket, or says when it may come again.
    pub(super) fn check(&self, key: &String, clock: &C) -> Result<(), NotUntil<C::Instant>> {
        if !self.buckets.crowded() || self.buckets.holds(key) {
            return self.limiter.check_key(key);
        }
        let now = clock.now().duration_since(self.start).as_u64();
        if once_per(&self.next_sweep, now, SWEEP_EVERY_NANOS) {
            self.limiter.retain_recent();
        }
        let checked = self.limiter.check_key(key);
        if self.buckets.overflow_began() && once_per(&self.next_warning, now, WARN_EVERY_NANOS) {
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
    /// A new key would not get a bucket of its own now: `max` buckets, or the overflow
    /// bucket in use.
    crowded: AtomicBool,
    /// The overflow bucket came into use since this was last read.
    overflow_began: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tats: HashMap<String, Nanos>,
    overflow: Option<Nanos>,
}

impl State {
    fn crowded(&self, max: usize) -> bool {
        self.overflow.is_some() || self.tats.len() >= max
    }
}

impl Buckets {
    fn new(max: usize) -> Self {
        Buckets {
            shared: Arc::new(Shared {
                max,
                crowded: AtomicBool::new(max == 0),
                overflow_began: AtomicBool::new(false),
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

    fn overflow_began(&self) -> bool {
        self.shared.overflow_began.swap(false, Ordering::Relaxed)
    }

    fn holds(&self, key: &str) -> bool {
        self.lock().tats.contains_key(key)
    }

    fn settle(&self, state: &State) {
        let crowded = state.crowded(self.shared.max);
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
        if !state.crowded(self.shared.max) {
            let (outcome, next) = f(None)?;
            state.tats.insert(key.clone(), next);
            self.settle(&state);
            return Ok(outcome);
        }
        let (outcome, next) = f(state.overflow)?;
        if state.overflow.is_none() {
            self.shared.overflow_began.store(true, Ordering::Relaxed);
        }
        state.overflow = Some(next);
        self.settle(&state);
        Ok(outcome)
    }
}

impl ShrinkableKeyedStateStore<String> for Buckets {
    fn retain_recent(&self, drop_below: Nanos) {
        let mut state = self.lock();
        state.tats.retain(|_, tat| *tat > drop_below);
        if state.overflow.is_some_and(|tat| tat <= drop_below) {
            state.overflow = None;
        }
        self.settle(&state);
    }

    fn len(&self) -> usize {
        self.lock().tats.len()
    }

    fn is_empty(&self) -> bool {
        self.lock().tats.is_empty()
    }
}
