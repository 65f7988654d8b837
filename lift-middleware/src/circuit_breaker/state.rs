//! The breaker's state machine, lock-free on the call path: the state, the counters and the
//! sliding window are atomics; only the rare transitions race, and a compare-and-swap decides
//! which caller makes them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::*};
use std::time::Duration;

use tokio::time::Instant;

use super::config::{CircuitBreakerConfig, Window};

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls fail fast until the open time has passed.
    Open,
    /// A bounded number of probe calls decide whether to close or open again.
    HalfOpen,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

fn state_of(raw: u8) -> State {
    match raw {
        OPEN => State::Open,
        HALF_OPEN => State::HalfOpen,
        _ => State::Closed,
    }
}

/// A state change, as handed to the `on_state_change` callback.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateChange {
    /// The breaker's name (with its key, for keyed breakers).
    pub name: Arc<str>,
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// How long the breaker stays open, when it opens (`to` is [`State::Open`]): it lets
    /// a probe through after that, so a listener can tell it is no longer open without
    /// waiting for the next call.
    pub open_for: Option<Duration>,
}

impl StateChange {
    /// A change of breaker `name` from `from` to `to`, open for `open_for` when it opens:
    /// what a breaker hands its listeners, for testing a listener.
    pub fn new(name: &str, from: State, to: State, open_for: Option<Duration>) -> Self {
        StateChange {
            name: Arc::from(name),
            from,
            to,
            open_for,
        }
    }
}

/// The callback a breaker calls on each state change.
pub(crate) type OnChange = Arc<dyn Fn(&StateChange) + Send + Sync>;

/// Counters of one breaker since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Metrics {
    /// Calls let through.
    pub calls: u64,
    /// Calls classified as failures.
    pub failures: u64,
    /// Calls refused while open (or half-open and full).
    pub rejected: u64,
    /// Times the breaker opened.
    pub trips: u64,
}

/// Outcome bits of a window slot.
const RECORDED: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

struct Bucket {
    index: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

enum Slots {
    Count {
        slots: Box<[AtomicU8]>,
        next: AtomicU64,
        calls: AtomicU32,
        failures: AtomicU32,
        slow: AtomicU32,
    },
    Time {
        buckets: Box<[Bucket]>,
        width: Duration,
    },
}

/// Totals of the window.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    calls: u32,
    failures: u32,
    slow: u32,
}

impl Slots {
    fn new(window: Window) -> Self {
        match window {
            Window::Count { size } => Slots::Count {
                slots: (0..size.get()).map(|_| AtomicU8::new(0)).collect(),
                next: AtomicU64::new(0),
                calls: AtomicU32::new(0),
                failures: AtomicU32::new(0),
                slow: AtomicU32::new(0),
            },
            Window::Time { size, buckets } => Slots::Time {
                buckets: (0..buckets.get())
                    .map(|_| Bucket {
                        index: AtomicU64::new(u64::MAX),
                        calls: AtomicU32::new(0),
                        failures: AtomicU32::new(0),
                        slow: AtomicU32::new(0),
                    })
                    .collect(),
                width: size / buckets.get(),
            },
        }
    }

    /// Records one outcome at `elapsed` since the breaker's epoch; returns the totals.
    fn record(&self, failed: bool, slow: bool, elapsed: Duration) -> Totals {
        match self {
            Slots::Count {
                slots,
                next,
                calls,
                failures,
                slow: slow_count,
            } => {
                let bits = RECORDED | if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
                let at = (next.fetch_add(1, Relaxed) % slots.len() as u64) as usize;
                let old = slots[at].swap(bits, AcqRel);
                if old & RECORDED == 0 {
                    calls.fetch_add(1, AcqRel);
                }
                let adjust = |counter: &AtomicU32, was: bool, is: bool| match (was, is) {
                    (false, true) => {
                        counter.fetch_add(1, AcqRel);
                    }
                    (true, false) => {
                        counter.fetch_sub(1, AcqRel);
                    }
                    _ => {}
                };
                adjust(failures, old & FAILED != 0, failed);
                adjust(slow_count, old & SLOW != 0, slow);
                Totals {
                    calls: calls.load(Acquire),
                    failures: failures.load(Acquire),
                    slow: slow_count.load(Acquire),
                }
            }
            Slots::Time { buckets, width } => {
                let index = (elapsed.as_nanos() / width.as_nanos().max(1)) as u64;
                let bucket = &buckets[(index % buckets.len() as u64) as usize];
                let seen = bucket.index.load(Acquire);
                if seen != index
                    && bucket
                        .index
                        .compare_exchange(seen, index, AcqRel, Acquire)
                        .is_ok()
                {
                    bucket.calls.store(0, Release);
                    bucket.failures.store(0, Release);
                    bucket.slow.store(0, Release);
                }
                bucket.calls.fetch_add(1, AcqRel);
                if failed {
                    bucket.failures.fetch_add(1, AcqRel);
                }
                if slow {
                    bucket.slow.fetch_add(1, AcqRel);
                }
                let oldest = index.saturating_sub(buckets.len() as u64 - 1);
                let mut totals = Totals::default();
                for b in buckets.iter() {
                    let i = b.index.load(Acquire);
                    if i != u64::MAX && i >= oldest && i <= index {
                        totals.calls += b.calls.load(Acquire);
                        totals.failures += b.failures.load(Acquire);
                        totals.slow += b.slow.load(Acquire);
                    }
                }
                totals
            }
        }
    }

    /// No failure and no slow call in the window as of `elapsed` since the breaker's epoch.
    fn clean(&self, elapsed: Duration) -> bool {
        match self {
            Slots::Count { failures, slow, .. } => {
                failures.load(Acquire) == 0 && slow.load(Acquire) == 0
            }
            Slots::Time { buckets, width } => {
                let index = (elapsed.as_nanos() / width.as_nanos().max(1)) as u64;
                let oldest = index.saturating_sub(buckets.len() as u64 - 1);
                buckets.iter().all(|b| {
                    let i = b.index.load(Acquire);
                    i == u64::MAX
                        || i < oldest
                        || (b.failures.load(Acquire) == 0 && b.slow.load(Acquire) == 0)
                })
            }
        }
    }

    fn reset(&self) {
        match self {
            Slots::Count {
                slots,
                calls,
                failures,
                slow,
                ..
            } => {
                for slot in slots.iter() {
                    slot.store(0, Release);
                }
                calls.store(0, Release);
                failures.store(0, Release);
                slow.store(0, Release);
            }
            Slots::Time { buckets, .. } => {
                for b in buckets.iter() {
                    b.index.store(u64::MAX, Release);
                }
            }
        }
    }
}

/// Leave to make one call, taken before the call and settled with its outcome.
#[derive(Debug)]
pub(crate) struct Permit {
    pub(crate) probe: bool,
    /// Which half-open period a probe belongs to; a probe that outlives its period settles
    /// nothing.
    generation: u32,
}

/// One circuit breaker.
pub(crate) struct Breaker {
    pub(crate) config: CircuitBreakerConfig,
    pub(crate) name: Arc<str>,
    epoch: Instant,
    state: AtomicU8,
    open_until: AtomicU64,
    trips_in_a_row: AtomicU32,
    consecutive: AtomicU32,
    probes_in_flight: AtomicU32,
    probe_successes: AtomicU32,
    generation: AtomicU32,
    transitions: std::sync::Mutex<()>,
    window: Slots,
    calls: AtomicU64,
    failures: AtomicU64,
    rejected: AtomicU64,
    trips: AtomicU64,
    on_change: Option<OnChange>,
}

impl Breaker {
    pub(crate) fn new(
        config: CircuitBreakerConfig,
        name: Arc<str>,
        on_change: Option<OnChange>,
    ) -> Self {
        Breaker {
            window: Slots::new(config.window),
            config,
            name,
            epoch: Instant::now(),
            state: AtomicU8::new(CLOSED),
            open_until: AtomicU64::new(0),
            trips_in_a_row: AtomicU32::new(0),
            consecutive: AtomicU32::new(0),
            probes_in_flight: AtomicU32::new(0),
            probe_successes: AtomicU32::new(0),
            generation: AtomicU32::new(0),
            transitions: std::sync::Mutex::new(()),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            trips: AtomicU64::new(0),
            on_change,
        }
    }

    fn since_epoch(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch)
    }

    /// The state as of `now` (an open breaker whose time is up reads as half-open).
    pub(crate) fn state(&self, now: Instant) -> State {
        match self.state.load(Acquire) {
            OPEN if self.since_epoch(now).as_nanos() as u64 >= self.open_until.load(Acquire) => {
                State::HalfOpen
            }
            raw => state_of(raw),
        }
    }

    /// Nothing it holds could refuse a call: closed (closing also ends the backoff of
    /// repeated trips), no failures in a row, no failure or slow call in its window.
    /// Dropping such a breaker and starting a new one for its key forgets only successes,
    /// so the new one opens no later.
    pub(crate) fn at_rest(&self, now: Instant) -> bool {
        self.state.load(Acquire) == CLOSED
            && self.consecutive.load(Acquire) == 0
            && self.window.clean(self.since_epoch(now))
    }

    pub(crate) fn metrics(&self) -> Metrics {
        Metrics {
            calls: self.calls.load(Relaxed),
            failures: self.failures.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            trips: self.trips.load(Relaxed),
        }
    }

    /// Asks to make a call at `now`; `Err` holds how long until a probe may pass.
    pub(crate) fn acquire(&self, now: Instant) -> Result<Permit, Duration> {
        loop {
            match self.state.load(Acquire) {
                CLOSED => {
                    self.calls.fetch_add(1, Relaxed);
                    return Ok(Permit {
                        probe: false,
                        generation: 0,
                    });
                }
                OPEN => {
                    let elapsed = self.since_epoch(now).as_nanos() as u64;
                    let until = self.open_until.load(Acquire);
                    if elapsed < until {
                        self.rejected.fetch_add(1, Relaxed);
                        return Err(Duration::from_nanos(until - elapsed));
                    }
                    self.transition(OPEN, HALF_OPEN);
                }
                _ => {
                    let generation = self.generation.load(Acquire);
                    let in_flight = self.probes_in_flight.fetch_add(1, AcqRel);
                    if in_flight < self.config.half_open_max_calls {
                        self.calls.fetch_add(1, Relaxed);
                        return Ok(Permit {
                            probe: true,
                            generation,
                        });
                    }
                    self.leave_probe(generation);
                    self.rejected.fetch_add(1, Relaxed);
                    // Probes are under way; their outcome is a call's length away.
                    return Err(Duration::from_secs(1));
                }
            }
        }
    }

    /// Frees a probe's place, if its half-open period is still the current one.
    fn leave_probe(&self, generation: u32) -> bool {
        if self.generation.load(Acquire) != generation {
            return false;
        }
        // Never below zero, even if a reset raced with this probe.
        let _ = self
            .probes_in_flight
            .fetch_update(AcqRel, Acquire, |n| n.checked_sub(1));
        true
    }

    /// Gives a probe's place back without an outcome (the call was cancelled).
    pub(crate) fn release(&self, permit: &Permit) {
        if permit.probe {
            self.leave_probe(permit.generation);
        }
    }

    /// Settles a call's outcome.
    pub(crate) fn record(&self, permit: &Permit, failed: bool, duration: Duration, now: Instant) {
        if failed {
            self.failures.fetch_add(1, Relaxed);
        }
        if permit.probe {
            if !self.leave_probe(permit.generation) {
                return;
            }
            if failed {
                self.trip(HALF_OPEN, now);
            } else if self.probe_successes.fetch_add(1, AcqRel) + 1
                >= self.config.half_open_successes
                && self.transition(HALF_OPEN, CLOSED)
            {
                self.window.reset();
                self.consecutive.store(0, Release);
                self.trips_in_a_row.store(0, Release);
            }
            return;
        }
        if self.state.load(Acquire) != CLOSED {
            return;
        }
        let slow = duration >= self.config.slow_call_duration;
        if failed {
            let in_a_row = self.consecutive.fetch_add(1, AcqRel) + 1;
            if self
                .config
                .consecutive_failures
                .is_some_and(|n| in_a_row >= n)
            {
                self.trip(CLOSED, now);
                return;
            }
        } else {
            self.consecutive.store(0, Release);
        }
        let totals = self.window.record(failed, slow, self.since_epoch(now));
        if totals.calls < self.config.min_calls {
            return;
        }
        let rate = |n: u32| f64::from(n) / f64::from(totals.calls);
        let too_many_failures = self
            .config
            .failure_rate
            .is_some_and(|r| rate(totals.failures) >= r);
        let too_slow = self
            .config
            .slow_call_rate
            .is_some_and(|r| rate(totals.slow) >= r);
        if too_many_failures || too_slow {
            self.trip(CLOSED, now);
        }
    }

    fn trip(&self, from: u8, now: Instant) {
        let tripped = self.transition_with(from, OPEN, || {
            // Decided under the transition lock, so only the caller that trips sets it.
            let in_a_row = self.trips_in_a_row.fetch_add(1, AcqRel);
            let factor = self.config.backoff_multiplier.powi(in_a_row.min(64) as i32);
            let open_for = self
                .config
                .open_for
                .mul_f64(factor.min(1e6))
                .min(self.config.max_open_for);
            let until = self.since_epoch(now) + open_for;
            self.open_until.store(until.as_nanos() as u64, Release);
            Some(open_for)
        });
        if tripped {
            self.trips.fetch_add(1, Relaxed);
            self.window.reset();
            self.consecutive.store(0, Release);
        }
    }

    /// Moves `from` → `to` if no other caller did first; logs and reports the change.
    fn transition(&self, from: u8, to: u8) -> bool {
        self.transition_with(from, to, || None)
    }

    /// As [`Self::transition`], running `prepare` under the lock before the new state shows;
    /// `prepare` answers how long an opening breaker stays open.
    fn transition_with(
        &self,
        from: u8,
        to: u8,
        prepare: impl FnOnce() -> Option<Duration>,
    ) -> bool {
        let open_for;
        {
            // Transitions are rare: they take this lock, the call path never does.
            let _guard = self
                .transitions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if self.state.load(Acquire) != from {
                return false;
            }
            if to == HALF_OPEN {
                // The new period's counters are reset before any probe can see the state.
                self.generation.fetch_add(1, AcqRel);
                self.probes_in_flight.store(0, Release);
                self.probe_successes.store(0, Release);
            }
            open_for = prepare();
            self.state.store(to, Release);
        }
        let change = StateChange {
            name: self.name.clone(),
            from: state_of(from),
            to: state_of(to),
            open_for,
        };
        tracing::warn!(target: "lift::circuit_breaker", breaker = %change.name, from = ?change.from, to = ?change.to, "state changed");
        if let Some(callback) = &self.on_change {
            callback(&change);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn breaker(config: CircuitBreakerConfig) -> Breaker {
        Breaker::new(config, Arc::from("test"), None)
    }

    /// Opens on one failure, for a second; one probe closes it.
    fn trips_at_once_for_a_second() -> Breaker {
        breaker(
            CircuitBreakerConfig::builder("t")
                .consecutive_failures(1)
                .no_failure_rate()
                .open_for(Duration::from_secs(1))
                .half_open(1, 1)
                .build()
                .expect("config"),
        )
    }

    fn call(b: &Breaker, failed: bool) -> bool {
        match b.acquire(Instant::now()) {
            Ok(permit) => {
                b.record(&permit, failed, Duration::from_millis(1), Instant::now());
                true
            }
            Err(_) => false,
        }
    }

    /// At rest: nothing that could refuse a call. Failures in a row, a failure or slow call
    /// still in the window (count or time), or a state other than closed, each keep a
    /// breaker from it.
    #[tokio::test(start_paused = true)]
    async fn at_rest_only_with_nothing_that_could_refuse_a_call() {
        let by_count = breaker(
            CircuitBreakerConfig::builder("t")
                .consecutive_failures(5)
                .window(Window::Count {
                    size: NonZeroU32::new(3).expect("non-zero"),
                })
                .failure_rate(0.9)
                .min_calls(3)
                .build()
                .expect("config"),
        );
        assert!(by_count.at_rest(Instant::now()), "new");
        call(&by_count, true);
        assert!(!by_count.at_rest(Instant::now()), "a failure in a row");
        call(&by_count, false);
        assert!(!by_count.at_rest(Instant::now()), "a failure in the window");
        call(&by_count, false);
        call(&by_count, false);
        assert!(
            by_count.at_rest(Instant::now()),
            "the failure left the window"
        );

        let by_time = breaker(
            CircuitBreakerConfig::builder("t")
                .consecutive_failures(5)
                .window(Window::Time {
                    size: Duration::from_secs(10),
                    buckets: NonZeroU32::new(5).expect("non-zero"),
                })
                .failure_rate(0.9)
                .min_calls(100)
                .slow_call_rate(0.9, Duration::from_secs(1))
                .build()
                .expect("config"),
        );
        let permit = by_time.acquire(Instant::now()).expect("closed");
        by_time.record(&permit, false, Duration::from_secs(2), Instant::now());
        assert!(
            !by_time.at_rest(Instant::now()),
            "a slow call in the window"
        );
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!by_time.at_rest(Instant::now()), "still in the window");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(by_time.at_rest(Instant::now()), "the window moved past it");
        call(&by_time, true);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(
            !by_time.at_rest(Instant::now()),
            "out of the window, still a failure in a row"
        );
        call(&by_time, false);
        assert!(by_time.at_rest(Instant::now()), "the run ended");

        let tripped = trips_at_once_for_a_second();
        call(&tripped, true);
        assert!(!tripped.at_rest(Instant::now()), "open");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(call(&tripped, false), "the probe");
        assert_eq!(tripped.state(Instant::now()), State::Closed);
        assert!(tripped.at_rest(Instant::now()), "closed again");
    }

    #[tokio::test(start_paused = true)]
    async fn trips_on_consecutive_failures_and_recovers_through_half_open() {
        let b = breaker(
            CircuitBreakerConfig::builder("t")
                .consecutive_failures(3)
                .no_failure_rate()
                .open_for(Duration::from_secs(30))
                .half_open(1, 2)
                .build()
                .expect("config"),
        );
        assert!(call(&b, true) && call(&b, true) && call(&b, false));
        assert_eq!(
            b.state(Instant::now()),
            State::Closed,
            "a success resets the run"
        );
        for _ in 0..3 {
            call(&b, true);
        }
        assert_eq!(b.state(Instant::now()), State::Open);
        assert!(!call(&b, false), "open fails fast");

        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.state(Instant::now()), State::HalfOpen);
        let probe = b.acquire(Instant::now()).expect("one probe");
        assert!(
            b.acquire(Instant::now()).is_err(),
            "only one probe at a time"
        );
        b.record(&probe, false, Duration::from_millis(1), Instant::now());
        assert_eq!(
            b.state(Instant::now()),
            State::HalfOpen,
            "needs two successes"
        );
        assert!(call(&b, false));
        assert_eq!(b.state(Instant::now()), State::Closed);
        assert_eq!(b.metrics().trips, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_counts_only_after_min_calls() {
        let b = breaker(
            CircuitBreakerConfig::builder("t")
                .failure_rate(0.5)
                .min_calls(10)
                .window(Window::Count {
                    size: NonZeroU32::new(10).expect("n"),
                })
                .build()
                .expect("config"),
        );
        for _ in 0..9 {
            call(&b, true);
        }
        assert_eq!(
            b.state(Instant::now()),
            State::Closed,
            "9 calls < min_calls"
        );
        call(&b, false);
        assert_eq!(b.state(Instant::now()), State::Open, "9/10 failed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_count_window_forgets_old_calls() {
        let b = breaker(
            CircuitBreakerConfig::builder("t")
                .failure_rate(0.5)
                .min_calls(4)
                .window(Window::Count {
                    size: NonZeroU32::new(4).expect("n"),
                })
                .build()
                .expect("config"),
        );
        call(&b, true);
        for _ in 0..3 {
            call(&b, false);
        }
        for _ in 0..4 {
            call(&b, false);
        }
        call(&b, true);
        assert_eq!(
            b.state(Instant::now()),
            State::Closed,
            "1 failure of the last 4"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_time_window_slides() {
        let b = breaker(
            CircuitBreakerConfig::builder("t")
                .failure_rate(0.5)
                .min_calls(4)
                .window(Window::Time {
                    size: Duration::from_secs(10),
                    buckets: NonZeroU32::new(10).expect("n"),
                })
                .build()
                .expect("config"),
        );
        call(&b, true);
        call(&b, true);
        call(&b, true);
        tokio::time::advance(Duration::from_secs(11)).await;
        call(&b, true);
        call(&b, false);
        call(&b, false);
        call(&b, false);
        assert_eq!(
            b.state(Instant::now()),
            State::Closed,
            "old failures slid out"
        );
        call(&b, true);
        call(&b, true);
        assert_eq!(
            b.state(Instant::now()),
            State::Open,
            "3 of 6 recent calls failed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_trip() {
        let b = breaker(
            CircuitBreakerConfig::builder("t")
                .no_failure_rate()
                .slow_call_rate(0.5, Duration::from_millis(100))
                .min_calls(2)
                .build()
                .expect("config"),
        );
        let permit = b.acquire(Instant::now()).expect("closed");
        b.record(&permit, false, Duration::from_millis(150), Instant::now());
        let permit = b.acquire(Instant::now()).expect("closed");
        b.record(&permit, false, Duration::from_millis(10), Instant::now());
        assert_eq!(b.state(Instant::now()), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_trips_back_off() {
        let b = breaker(
            CircuitBreakerConfig::builder("t")
                .consecutive_failures(1)
                .no_failure_rate()
                .open_for(Duration::from_secs(10))
                .open_backoff(2.0, Duration::from_secs(25))
                .half_open(1, 1)
                .build()
                .expect("config"),
        );
        call(&b, true);
        let wait = |b: &Breaker| b.acquire(Instant::now()).expect_err("open");
        assert_eq!(wait(&b), Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(10)).await;
        call(&b, true);
        assert_eq!(wait(&b), Duration::from_secs(20), "second trip: doubled");
        tokio::time::advance(Duration::from_secs(20)).await;
        call(&b, true);
        assert_eq!(wait(&b), Duration::from_secs(25), "capped");
        tokio::time::advance(Duration::from_secs(25)).await;
        call(&b, false);
        assert_eq!(b.state(Instant::now()), State::Closed);
        call(&b, true);
        assert_eq!(
            wait(&b),
            Duration::from_secs(10),
            "a recovery resets the backoff"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_gives_its_place_back() {
        let b = trips_at_once_for_a_second();
        call(&b, true);
        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = b.acquire(Instant::now()).expect("probe");
        b.release(&probe);
        assert!(b.acquire(Instant::now()).is_ok(), "the place was freed");
    }
}
