//! Traffic policies per service: weighted split by version (canaries), routing by header or
//! tenant, and an optional sticky key.
//!
//! Applied before the load-balancing strategy, in this order: the first matching route
//! narrows the candidates to its target (when the target has instances); otherwise the
//! split picks a version by weight among the versions that have instances; then a sticky
//! key, when the request carries one, picks deterministically (the same key lands on the
//! same instance while the set does not change); otherwise the strategy picks.
//!
//! ```
//! use lift_services::policy::{Target, TrafficPolicy};
//!
//! // 10% of calls to version 2, the rest to version 1; the beta tester's calls to 2.
//! let policy = TrafficPolicy::new()
//!     .split("1", 90)
//!     .split("2", 10)
//!     .route_header("x-beta", "yes", Target::Version("2".into()))
//!     .sticky_header("x-session-id");
//! # let _ = policy;
//! ```

use http::HeaderMap;

use crate::balance::{Candidates, Rng, Strategy, total_weight, weighted_position};

/// Where a route sends calls.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// Instances of this version.
    Version(String),
    /// Instances with this alias.
    Alias(String),
    /// Instances with this tag.
    Tag(String),
}

impl Target {
    fn holds(&self, instance: &crate::Instance) -> bool {
        match self {
            Target::Version(v) => instance.version.as_deref() == Some(v),
            Target::Alias(a) => instance.alias.as_deref() == Some(a),
            Target::Tag(t) => instance.has_tag(t),
        }
    }
}

#[derive(Debug, Clone)]
enum Match {
    Header { name: String, value: String },
    Tenant(String),
}

/// What the policy reads of a call.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallInfo<'a> {
    /// The call's headers.
    pub headers: Option<&'a HeaderMap>,
    /// The call's tenant.
    pub tenant: Option<&'a str>,
}

/// A service's traffic policy; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct TrafficPolicy {
    splits: Vec<(String, u32)>,
    routes: Vec<(Match, Target)>,
    sticky: Option<String>,
}

/// The most candidates a policy narrows without allocating; beyond it, policies other than
/// the sticky key are skipped.
const BUFFER: usize = 256;

impl TrafficPolicy {
    /// No split, no route, no sticky key: the strategy alone picks.
    pub fn new() -> Self {
        TrafficPolicy::default()
    }

    /// Sends `weight` parts of the traffic to `version` (weights are relative).
    pub fn split(mut self, version: impl Into<String>, weight: u32) -> Self {
        self.splits.push((version.into(), weight));
        self
    }

    /// Sends calls whose header `name` equals `value` to `target`.
    pub fn route_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
        target: Target,
    ) -> Self {
        self.routes.push((
            Match::Header {
                name: name.into().to_ascii_lowercase(),
                value: value.into(),
            },
            target,
        ));
        self
    }

    /// Sends `tenant`'s calls to `target`.
    pub fn route_tenant(mut self, tenant: impl Into<String>, target: Target) -> Self {
        self.routes.push((Match::Tenant(tenant.into()), target));
        self
    }

    /// Makes calls carrying the header `name` sticky to one instance per value.
    pub fn sticky_header(mut self, name: impl Into<String>) -> Self {
        self.sticky = Some(name.into().to_ascii_lowercase());
        self
    }

    /// Picks the position (in `candidates`) of the instance that takes the call.
    pub fn pick(
        &self,
        candidates: &Candidates<'_>,
        call: CallInfo<'_>,
        strategy: &dyn Strategy,
        rng: &Rng,
    ) -> Option<usize> {
        let mut buffer = [0u32; BUFFER];
        let narrowed = self.narrow(candidates, call, rng, &mut buffer);
        let view = narrowed.as_ref().unwrap_or(candidates);
        let chosen = match self.sticky_key(call) {
            Some(key) if !view.is_empty() => {
                let total = total_weight(view);
                Some(weighted_position(view, hash(key) % total))
            }
            _ => strategy.pick(view),
        }?;
        match &narrowed {
            None => Some(chosen),
            Some(view) => {
                let index = view.snapshot_index(chosen);
                (0..candidates.len()).find(|&i| candidates.snapshot_index(i) == index)
            }
        }
    }

    fn sticky_key<'a>(&self, call: CallInfo<'a>) -> Option<&'a [u8]> {
        let name = self.sticky.as_deref()?;
        call.headers?.get(name).map(|v| v.as_bytes())
    }

    fn narrow<'b>(
        &self,
        candidates: &Candidates<'b>,
        call: CallInfo<'_>,
        rng: &Rng,
        buffer: &'b mut [u32; BUFFER],
    ) -> Option<Candidates<'b>> {
        for (matcher, target) in &self.routes {
            let hit = match matcher {
                Match::Header { name, value } => call
                    .headers
                    .and_then(|h| h.get(name.as_str()))
                    .is_some_and(|v| v.as_bytes() == value.as_bytes()),
                Match::Tenant(tenant) => call.tenant == Some(tenant.as_str()),
            };
            if hit && (0..candidates.len()).any(|i| target.holds(candidates.instance(i))) {
                return candidates.subset(buffer, |i| target.holds(candidates.instance(i)));
            }
        }
        if self.splits.is_empty() {
            return None;
        }
        let present = |version: &str| {
            (0..candidates.len())
                .any(|i| candidates.instance(i).version.as_deref() == Some(version))
        };
        let total: u64 = self
            .splits
            .iter()
            .filter(|(v, _)| present(v))
            .map(|(_, w)| u64::from(*w))
            .sum();
        if total == 0 {
            return None;
        }
        let mut point = match self.sticky_key(call) {
            Some(key) => hash(key) % total,
            None => rng.below(total),
        };
        let version = self
            .splits
            .iter()
            .filter(|(v, _)| present(v))
            .find(|(_, w)| {
                let w = u64::from(*w);
                if point < w {
                    true
                } else {
                    point -= w;
                    false
                }
            })
            .map(|(v, _)| v.as_str())?;
        candidates.subset(buffer, |i| {
            candidates.instance(i).version.as_deref() == Some(version)
        })
    }
}

/// FNV-1a, then mixed: a stable hash of a sticky key.
fn hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}
