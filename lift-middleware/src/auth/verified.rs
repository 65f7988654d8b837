//! Tokens whose signature and claims were verified, kept for a while so that a warm
//! function does not verify the same token again on every request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::Principal;

/// The clock entries are dated by; the wall clock, as `exp` is.
pub(crate) type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Verified tokens, keyed by the whole token: only a token byte for byte equal to one that
/// passed every check is answered from here, and only until the earlier of `max_age` after
/// its verification and its own `exp` plus the leeway, the moment a full verification would
/// start refusing it, and only while the JWKS generation it was verified under is the
/// current one (a refresh that removed or changed a key moves it on), so that a key gone
/// from the JWKS admits nothing from here either. Static keys never change: their
/// generation stays 0. A token that fails is never kept. When `capacity` tokens are kept,
/// the expired ones go; if none has, all do.
///
/// Tokens are hashed with foldhash (seeded per process) rather than SipHash: a lookup
/// hashes the whole token on every request, and only tokens that passed verification are
/// ever inserted, so a caller cannot choose keys to crowd a bucket.
pub(crate) struct VerifiedTokens {
    entries: Mutex<Entries>,
    capacity: usize,
    max_age: Duration,
    leeway: Duration,
    clock: Clock,
    hits: AtomicU64,
}

type Entries = HashMap<Box<str>, Verified, foldhash::fast::RandomState>;

struct Verified {
    principal: Arc<Principal>,
    until: SystemTime,
    /// The JWKS generation read before its key was looked up.
    generation: u64,
}

impl VerifiedTokens {
    pub(crate) fn new(capacity: usize, max_age: Duration, leeway: Duration, clock: Clock) -> Self {
        VerifiedTokens {
            // Grown as tokens come: a function that never sees one allocates nothing.
            entries: Mutex::new(HashMap::with_hasher(foldhash::fast::RandomState::default())),
            capacity,
            max_age,
            leeway,
            clock,
            hits: AtomicU64::new(0),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The principal of `token` if it was verified under JWKS `generation` (the current
    /// one) and is still within its time.
    pub(crate) fn get(&self, token: &str, generation: u64) -> Option<Arc<Principal>> {
        let now = (self.clock)();
        let entries = self.entries();
        let verified = entries
            .get(token)
            .filter(|v| now < v.until && v.generation == generation)?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(verified.principal.clone())
    }

    /// Keeps `token`, just verified as `principal` with a key looked up after reading JWKS
    /// `generation`. A token without a numeric `exp` is not kept: nothing would end its
    /// time here.
    pub(crate) fn put(&self, token: &str, principal: &Arc<Principal>, generation: u64) {
        let Some(exp) = principal.claims.get("exp").and_then(Value::as_f64) else {
            return;
        };
        let Some(expires) = UNIX_EPOCH
            .checked_add(Duration::try_from_secs_f64(exp.max(0.0)).unwrap_or(Duration::ZERO))
            .and_then(|exp| exp.checked_add(self.leeway))
        else {
            return;
        };
        let now = (self.clock)();
        let until = now
            .checked_add(self.max_age)
            .map_or(expires, |by_age| by_age.min(expires));
        if until <= now {
            return;
        }
        let mut entries = self.entries();
        if entries.len() >= self.capacity && !entries.contains_key(token) {
            entries.retain(|_, v| now < v.until && v.generation >= generation);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            token.into(),
            Verified {
                principal: principal.clone(),
                until,
                generation,
            },
        );
    }

    /// How many requests were answered from here.
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use serde_json::json;

    use super::*;
    use crate::auth::VerifiedBy;

    const T0: u64 = 1_800_000_000;

    fn principal(exp: Option<u64>) -> Arc<Principal> {
        let mut claims = json!({"sub": "user-1"});
        if let Some(exp) = exp {
            claims["exp"] = json!(exp);
        }
        let serde_json::Value::Object(claims) = claims else {
            unreachable!("an object")
        };
        Arc::new(Principal::from_claims(claims, VerifiedBy::Lift))
    }

    /// A cache on a clock the test moves, in seconds after `T0`.
    fn cache(capacity: usize, max_age: u64, leeway: u64) -> (VerifiedTokens, Arc<AtomicU64>) {
        let offset = Arc::new(AtomicU64::new(0));
        let clock = offset.clone();
        let cache = VerifiedTokens::new(
            capacity,
            Duration::from_secs(max_age),
            Duration::from_secs(leeway),
            Arc::new(move || UNIX_EPOCH + Duration::from_secs(T0 + clock.load(Ordering::Relaxed))),
        );
        (cache, offset)
    }

    #[test]
    fn a_token_is_answered_until_max_age_then_verified_again() {
        let (cache, clock) = cache(8, 60, 0);
        assert!(cache.get("a", 0).is_none());
        cache.put("a", &principal(Some(T0 + 3600)), 0);
        assert_eq!(cache.get("a", 0), Some(principal(Some(T0 + 3600))));
        assert!(cache.get("b", 0).is_none(), "only the same token");
        assert!(cache.get("a ", 0).is_none(), "byte for byte");
        clock.store(59, Ordering::Relaxed);
        assert!(cache.get("a", 0).is_some());
        clock.store(60, Ordering::Relaxed);
        assert!(cache.get("a", 0).is_none(), "max age reached");
        assert_eq!(cache.hits(), 2);
    }

    #[test]
    fn a_token_is_not_answered_past_its_expiry_and_leeway() {
        let (cache, clock) = cache(8, 600, 5);
        cache.put("a", &principal(Some(T0 + 10)), 0);
        clock.store(14, Ordering::Relaxed);
        assert!(cache.get("a", 0).is_some(), "within exp + leeway");
        clock.store(15, Ordering::Relaxed);
        assert!(cache.get("a", 0).is_none(), "exp + leeway reached");
    }

    #[test]
    fn tokens_without_a_numeric_expiry_or_already_expired_are_not_kept() {
        let (cache, _) = cache(8, 600, 0);
        cache.put("none", &principal(None), 0);
        cache.put("past", &principal(Some(T0 - 1)), 0);
        let mut text = Arc::unwrap_or_clone(principal(None));
        text.claims.insert("exp".to_owned(), json!("tomorrow"));
        cache.put("text", &Arc::new(text), 0);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let (cache, clock) = cache(2, 60, 0);
        cache.put("a", &principal(Some(T0 + 3600)), 0);
        cache.put("b", &principal(Some(T0 + 3600)), 0);
        cache.put("b", &principal(Some(T0 + 3600)), 0);
        assert_eq!(cache.len(), 2, "a token put again takes no more room");
        cache.put("c", &principal(Some(T0 + 3600)), 0);
        assert!(cache.len() <= 2);
        assert!(cache.get("c", 0).is_some(), "the newest is kept");
        clock.store(30, Ordering::Relaxed);
        cache.put("d", &principal(Some(T0 + 3600)), 0);
        clock.store(61, Ordering::Relaxed);
        cache.put("e", &principal(Some(T0 + 3600)), 0);
        assert!(cache.len() <= 2);
        assert!(cache.get("e", 0).is_some());
        assert!(cache.get("c", 0).is_none(), "expired entries go first");
    }

    #[test]
    fn a_token_verified_under_an_earlier_jwks_generation_is_verified_again() {
        let (cache, _) = cache(2, 600, 0);
        cache.put("a", &principal(Some(T0 + 3600)), 0);
        assert!(cache.get("a", 0).is_some());
        assert!(cache.get("a", 1).is_none(), "a key was dropped since");
        // Verified again under the new generation, it is answered again.
        cache.put("a", &principal(Some(T0 + 3600)), 1);
        assert!(cache.get("a", 1).is_some());
        assert!(cache.get("a", 0).is_none());
        // At capacity, entries of an earlier generation go before the newest is kept.
        cache.put("b", &principal(Some(T0 + 3600)), 0);
        cache.put("c", &principal(Some(T0 + 3600)), 1);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("a", 1).is_some(), "still current, still kept");
        assert!(cache.get("c", 1).is_some());
    }
}
