//! Load-balancing strategies: which of the discovered instances takes a call.
//!
//! A [`Strategy`] picks one of the [`Candidates`] a discovery returned, without allocating
//! and without locks: round-robin ([`RoundRobin`]), weighted random ([`WeightedRandom`]),
//! least outstanding requests ([`LeastOutstanding`]), power of two choices
//! ([`PowerOfTwoChoices`]) and region-local first ([`RegionLocal`], around any other).
//! Randomness comes from a seedable lock-free generator ([`Rng`]), so tests are
//! reproducible.
//!
//! # Why not `tower::balance`
//! `tower::balance::p2c::Balance` drives a `tower::discover::Discover` stream of
//! ready-polled services and picks by a load metric over `poll_ready`. A Lambda target has
//! no connection to poll and no readiness: the pick is made per call from a cached snapshot,
//! with weights, health, tenant scope and traffic policies that the tower balancer has no
//! notion of. Its p2c rule (the less loaded of two random picks, load = in-flight requests,
//! `tower::load::PendingRequests`) is the one [`PowerOfTwoChoices`] applies.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::discovery::{Entry, Snapshot};

/// The instances a call may go to, as a discovery returned them.
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    snapshot: &'a Snapshot,
    indices: &'a [u32],
    local_region: Option<&'a str>,
    /// Running totals of the weights (`cumulative[i]` = weights of candidates `0..=i`),
    /// computed once per discovered set (absent for subsets).
    cumulative: Option<&'a [u64]>,
}

impl<'a> Candidates<'a> {
    pub(crate) fn new(
        snapshot: &'a Snapshot,
        indices: &'a [u32],
        local_region: Option<&'a str>,
        cumulative: &'a [u64],
    ) -> Self {
        Candidates {
            snapshot,
            indices,
            local_region,
            cumulative: (cumulative.len() == indices.len()).then_some(cumulative),
        }
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    pub(crate) fn entry(&self, i: usize) -> &'a Entry {
        &self.snapshot.entries[self.indices[i] as usize]
    }

    /// The `i`-th candidate.
    pub fn instance(&self, i: usize) -> &'a crate::Instance {
        &self.entry(i).instance
    }

    /// The `i`-th candidate's weight for picking: its registered weight, halved while it is
    /// degraded.
    pub fn weight(&self, i: usize) -> u32 {
        self.snapshot.weights[self.indices[i] as usize]
    }

    /// The calls in flight to the `i`-th candidate from this process.
    pub fn outstanding(&self, i: usize) -> u32 {
        self.entry(i).stats.outstanding.load(Ordering::Relaxed)
    }

    /// Whether the `i`-th candidate runs in the caller's region.
    pub fn is_local(&self, i: usize) -> bool {
        self.local_region
            .is_some_and(|region| self.entry(i).instance.region == region)
    }

    /// The caller's region, when known.
    pub fn local_region(&self) -> Option<&'a str> {
        self.local_region
    }

    /// Candidates restricted to those at `positions` (positions in `self`), written into
    /// `buffer`; `None` when `buffer` is too small.
    pub(crate) fn subset<'b>(
        &self,
        buffer: &'b mut [u32],
        keep: impl Fn(usize) -> bool,
    ) -> Option<Candidates<'b>>
    where
        'a: 'b,
    {
        let mut n = 0;
        for i in 0..self.len() {
            if keep(i) {
                *buffer.get_mut(n)? = self.indices[i];
                n += 1;
            }
        }
        Some(Candidates {
            snapshot: self.snapshot,
            indices: &buffer[..n],
            local_region: self.local_region,
            cumulative: None,
        })
    }

    /// The position in the snapshot of the `i`-th candidate.
    pub(crate) fn snapshot_index(&self, i: usize) -> u32 {
        self.indices[i]
    }
}

/// Picks the instance that takes a call.
pub trait Strategy: Send + Sync + 'static {
    /// The position (in `candidates`) of the pick; `None` only when there are none.
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize>;
}

impl<S: Strategy + ?Sized> Strategy for std::sync::Arc<S> {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        (**self).pick(candidates)
    }
}

/// A lock-free, seedable pseudo-random generator (SplitMix64 over an atomic counter).
#[derive(Debug)]
pub struct Rng {
    state: AtomicU64,
}

impl Rng {
    /// A generator starting from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Rng {
            state: AtomicU64::new(seed),
        }
    }

    /// A generator seeded at random.
    pub fn new() -> Self {
        Rng::with_seed(fastrand::u64(..))
    }

    /// The next number. The state advances with a plain load and store, not an atomic
    /// add: two threads drawing at the same instant may now and then get the same number,
    /// which costs a balancer nothing, and each draw saves a locked instruction. One
    /// thread's draws follow the seed exactly.
    pub fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .load(Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.state.store(z, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n > 0`).
    pub fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new()
    }
}

/// Each candidate in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// Starting at the first candidate.
    pub fn new() -> Self {
        RoundRobin::default()
    }
}

impl Strategy for RoundRobin {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        Some(self.next.fetch_add(1, Ordering::Relaxed) % candidates.len())
    }
}

/// At random, in proportion to weight.
#[derive(Debug, Default)]
pub struct WeightedRandom {
    rng: Rng,
}

impl WeightedRandom {
    /// Seeded at random.
    pub fn new() -> Self {
        WeightedRandom::default()
    }

    /// Seeded with `seed`.
    pub fn with_seed(seed: u64) -> Self {
        WeightedRandom {
            rng: Rng::with_seed(seed),
        }
    }
}

/// The position whose weight band holds `point` (`point` below the total weight).
pub(crate) fn weighted_position(candidates: &Candidates<'_>, mut point: u64) -> usize {
    if let Some(cumulative) = candidates.cumulative {
        // The first candidate whose running total passes the point (a binary search).
        return cumulative
            .partition_point(|&total| total <= point)
            .min(candidates.len().saturating_sub(1));
    }
    let weights = &candidates.snapshot.weights;
    for (i, &index) in candidates.indices.iter().enumerate() {
        let weight = u64::from(weights[index as usize]);
        if point < weight {
            return i;
        }
        point -= weight;
    }
    candidates.len() - 1
}

/// The weight of the candidates before the `i`-th, in the order draws walk them.
fn weight_before(candidates: &Candidates<'_>, i: usize) -> u64 {
    match candidates.cumulative {
        Some(cumulative) => i.checked_sub(1).map_or(0, |j| cumulative[j]),
        None => candidates.indices[..i]
            .iter()
            .map(|&index| u64::from(candidates.snapshot.weights[index as usize]))
            .sum(),
    }
}

pub(crate) fn total_weight(candidates: &Candidates<'_>) -> u64 {
    match candidates.cumulative {
        Some(cumulative) => cumulative.last().copied().unwrap_or(0),
        None => candidates
            .indices
            .iter()
            .map(|&i| u64::from(candidates.snapshot.weights[i as usize]))
            .sum(),
    }
}

/// Running totals of the weights of the snapshot's entries at `indices`.
pub(crate) fn running_totals(snapshot: &Snapshot, indices: &[u32]) -> Box<[u64]> {
    let mut total = 0u64;
    indices
        .iter()
        .map(|&i| {
            total += u64::from(snapshot.weights[i as usize]);
            total
        })
        .collect()
}

impl Strategy for WeightedRandom {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        let total = total_weight(candidates);
        Some(weighted_position(candidates, self.rng.below(total)))
    }
}

/// The candidate with the fewest calls in flight from this process; ties go round-robin.
#[derive(Debug, Default)]
pub struct LeastOutstanding {
    start: AtomicUsize,
}

impl LeastOutstanding {
    /// A fresh strategy.
    pub fn new() -> Self {
        LeastOutstanding::default()
    }
}

impl Strategy for LeastOutstanding {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let len = candidates.len();
        if len == 0 {
            return None;
        }
        let start = self.start.fetch_add(1, Ordering::Relaxed) % len;
        let mut best = start;
        let mut least = u32::MAX;
        for k in 0..len {
            let i = if start + k >= len {
                start + k - len
            } else {
                start + k
            };
            let outstanding = candidates.outstanding(i);
            if outstanding < least {
                least = outstanding;
                best = i;
                if outstanding == 0 {
                    break;
                }
            }
        }
        Some(best)
    }
}

/// Two candidates drawn at random by weight; the one with fewer calls in flight per unit of
/// weight takes the call, the first drawn on a tie. An execution environment makes one
/// call at a time, so loads are mostly equal and the share of each instance follows its
/// weight (a `Degraded` one's halved); under load, the less loaded of the two wins.
#[derive(Debug, Default)]
pub struct PowerOfTwoChoices {
    rng: Rng,
}

impl PowerOfTwoChoices {
    /// Seeded at random.
    pub fn new() -> Self {
        PowerOfTwoChoices::default()
    }

    /// Seeded with `seed`.
    pub fn with_seed(seed: u64) -> Self {
        PowerOfTwoChoices {
            rng: Rng::with_seed(seed),
        }
    }
}

impl Strategy for PowerOfTwoChoices {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let len = candidates.len();
        if len < 2 {
            return (len == 1).then_some(0);
        }
        let total = total_weight(candidates);
        let a = weighted_position(candidates, self.rng.below(total));
        // The second among the others, by weight: a point in the total without `a`'s
        // range, moved past that range.
        let own = u64::from(candidates.weight(a));
        let mut point = self.rng.below(total - own);
        let before = weight_before(candidates, a);
        if point >= before {
            point += own;
        }
        let b = weighted_position(candidates, point);
        // Compare outstanding / weight without division.
        let load = |i: usize| {
            u64::from(candidates.outstanding(i)) * 1000 / u64::from(candidates.weight(i))
        };
        Some(if load(b) < load(a) { b } else { a })
    }
}

/// Instances in the caller's region first, picked by `inner`; the others only when there
/// is no local one.
#[derive(Debug, Default)]
pub struct RegionLocal<S> {
    inner: S,
}

impl<S> RegionLocal<S> {
    /// Local first, then `inner`'s pick.
    pub fn new(inner: S) -> Self {
        RegionLocal { inner }
    }
}

/// The most candidates [`RegionLocal`] narrows without allocating; beyond it, it picks
/// among all.
const LOCAL_BUFFER: usize = 256;

impl<S: Strategy> Strategy for RegionLocal<S> {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        if candidates.local_region().is_none() {
            return self.inner.pick(candidates);
        }
        let mut buffer = [0u32; LOCAL_BUFFER];
        let local = candidates.subset(&mut buffer, |i| candidates.is_local(i));
        match local {
            Some(local) if !local.is_empty() => {
                let chosen = self.inner.pick(&local)?;
                let snapshot_index = local.snapshot_index(chosen);
                (0..candidates.len()).find(|&i| candidates.snapshot_index(i) == snapshot_index)
            }
            _ => self.inner.pick(candidates),
        }
    }
}
