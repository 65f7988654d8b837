//! Tokens whose signature and claims were verified, kept for a while so that a warm
//! function does not verify the same token again on every request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::time::Instant;

use super::Principal;

/// The clock entries are dated by; the wall clock, as `exp` is.
pub(crate) type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Verified tokens, keyed by the whole token: only a token byte for byte equal to one that
/// passed every check is answered from here, and only until the earlier of `max_age` after
/// its verification and its own `exp` plus the leeway, the moment a full verification would
/// start refusing it, and only while the JWKS generation it was verified under is the
/// current one (a refresh that removed or changed a key moves it on), so that a key gone
/// from the JWKS admits nothing from here either, and, for a JWKS key, only until the keys
/// reach their `jwks_max_age` (a fresh verification would then wait for a fetch). Static
/// keys never change: their generation stays 0. A token that fails is never kept.
///
/// It holds at most `capacity` tokens and [`TOKEN_BYTES`] of their text (the claims parsed
/// from a token take a small multiple of its size); a token longer than a quarter of that
/// is not kept. When either bound would be passed, the entries that can no longer be
/// answered go, and if that frees less than a quarter of the room, all do, so that a
/// cache full of live tokens is not scanned again on every miss.
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

/// The most token text kept: 1 MiB.
pub(crate) const TOKEN_BYTES: usize = 1 << 20;

#[derive(Default)]
struct Entries {
    map: HashMap<Box<str>, Verified, foldhash::fast::RandomState>,
    /// The length of the tokens in `map`, summed.
    bytes: usize,
}

struct Verified {
    principal: Arc<Principal>,
    until: SystemTime,
    /// The JWKS generation read before its key was looked up.
    generation: u64,
    /// When the JWKS keys that verified it reach their max age; `None` for a static key.
    keys_until: Option<Instant>,
}

impl VerifiedTokens {
    pub(crate) fn new(capacity: usize, max_age: Duration, leeway: Duration, clock: Clock) -> Self {
        VerifiedTokens {
            // Grown as tokens come: a function that never sees one allocates nothing.
            entries: Mutex::new(Entries::default()),
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
        let verified = entries.map.get(token).filter(|v| {
            now < v.until
                && v.generation == generation
                && v.keys_until.is_none_or(|until| Instant::now() < until)
        })?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(verified.principal.clone())
    }

    /// Keeps `token`, just verified as `principal` with a key looked up after reading JWKS
    /// `generation`, when `current` is the generation now; a JWKS key's keys age at
    /// `keys_until`. A token without a numeric `exp` is not kept (nothing would end its
    /// time here), nor one verified under an earlier generation or with keys already aged
    /// (it could never be answered), nor one too long (see the type's docs).
    pub(crate) fn put(
        &self,
        token: &str,
        principal: &Arc<Principal>,
        generation: u64,
        current: u64,
        keys_until: Option<Instant>,
    ) {
        let now_instant = Instant::now();
        if generation < current
            || token.len() > TOKEN_BYTES / 4
            || keys_until.is_some_and(|until| until <= now_instant)
        {
            return;
        }
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
        let Entries { map, bytes } = &mut *entries;
        if let Some(kept) = map.get_mut(token) {
            kept.principal = principal.clone();
            kept.until = until;
            kept.generation = generation;
            kept.keys_until = keys_until;
            return;
        }
        if map.len() >= self.capacity || *bytes + token.len() > TOKEN_BYTES {
            map.retain(|kept, v| {
                let keep = now < v.until
                    && v.generation >= generation
                    && v.keys_until.is_none_or(|until| now_instant < until);
                if !keep {
                    *bytes -= kept.len();
                }
                keep
            });
            // Less than a quarter of the room freed (rounded up): all go.
            if self.capacity - map.len() < self.capacity.div_ceil(4)
                || TOKEN_BYTES - *bytes < TOKEN_BYTES / 4
            {
                map.clear();
                *bytes = 0;
            }
        }
        *bytes += token.len();
        map.insert(
            token.into(),
            Verified {
                principal: principal.clone(),
                until,
                generation,
                keys_until,
            },
        );
    }

    /// How many requests were answered from here.
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries().map.len()
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.entries().bytes
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
        cache.put("a", &principal(Some(T0 + 3600)), 0, 0, None);
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
        cache.put("a", &principal(Some(T0 + 10)), 0, 0, None);
        clock.store(14, Ordering::Relaxed);
        assert!(cache.get("a", 0).is_some(), "within exp + leeway");
        clock.store(15, Ordering::Relaxed);
        assert!(cache.get("a", 0).is_none(), "exp + leeway reached");
    }

    #[test]
    fn tokens_without_a_numeric_expiry_or_already_expired_are_not_kept() {
        let (cache, _) = cache(8, 600, 0);
        cache.put("none", &principal(None), 0, 0, None);
        cache.put("past", &principal(Some(T0 - 1)), 0, 0, None);
        let mut text = Arc::unwrap_or_clone(principal(None));
        text.claims.insert("exp".to_owned(), json!("tomorrow"));
        cache.put("text", &Arc::new(text), 0, 0, None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let (cache, clock) = cache(2, 60, 0);
        cache.put("a", &principal(Some(T0 + 3600)), 0, 0, None);
        cache.put("b", &principal(Some(T0 + 3600)), 0, 0, None);
        cache.put("b", &principal(Some(T0 + 3600)), 0, 0, None);
        assert_eq!(cache.len(), 2, "a token put again takes no more room");
        cache.put("c", &principal(Some(T0 + 3600)), 0, 0, None);
        assert!(cache.len() <= 2);
        assert!(cache.get("c", 0).is_some(), "the newest is kept");
        clock.store(30, Ordering::Relaxed);
        cache.put("d", &principal(Some(T0 + 3600)), 0, 0, None);
        clock.store(61, Ordering::Relaxed);
        cache.put("e", &principal(Some(T0 + 3600)), 0, 0, None);
        assert!(cache.len() <= 2);
        assert!(cache.get("e", 0).is_some());
        assert!(cache.get("c", 0).is_none(), "expired entries go first");
        assert!(
            cache.get("d", 0).is_some(),
            "a live one stays when half is freed"
        );
    }

    #[test]
    fn a_token_verified_under_an_earlier_jwks_generation_is_verified_again() {
        let (cache, _) = cache(8, 600, 0);
        cache.put("a", &principal(Some(T0 + 3600)), 0, 0, None);
        assert!(cache.get("a", 0).is_some());
        assert!(cache.get("a", 1).is_none(), "a key was dropped since");
        // Verified again under the new generation, it is answered again.
        cache.put("a", &principal(Some(T0 + 3600)), 1, 1, None);
        assert!(cache.get("a", 1).is_some());
        assert!(cache.get("a", 0).is_none());
        assert_eq!(cache.len(), 1);
        // A verification the generation moved past while it ran is not kept.
        cache.put("b", &principal(Some(T0 + 3600)), 0, 1, None);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn when_full_what_cannot_be_answered_goes_first_and_live_tokens_only_in_bulk() {
        let (cache, clock) = cache(8, 600, 0);
        let put = |token: &str, exp: u64, generation: u64| {
            cache.put(
                token,
                &principal(Some(T0 + exp)),
                generation,
                generation,
                None,
            );
        };
        put("old-generation", 3600, 0);
        put("expiring", 10, 1);
        for live in ["a", "b", "c", "d", "e"] {
            put(live, 3600, 1);
        }
        put("late", 20, 1);
        assert_eq!(cache.len(), 8);
        clock.store(11, Ordering::Relaxed);
        // Two dead entries make room for a quarter: the live ones stay.
        put("f", 3600, 1);
        assert_eq!(cache.len(), 7);
        for live in ["a", "b", "c", "d", "e", "late", "f"] {
            assert!(cache.get(live, 1).is_some(), "{live} kept");
        }
        put("g", 3600, 1);
        assert_eq!(cache.len(), 8);
        // One dead entry would free less than a quarter: all go at once, rather than a
        // scan of a full cache on every miss.
        clock.store(21, Ordering::Relaxed);
        put("h", 3600, 1);
        assert_eq!(cache.len(), 1);
        assert!(cache.get("h", 1).is_some());
    }

    #[test]
    fn the_token_text_kept_is_bounded() {
        let (cache, _) = cache(usize::MAX, 600, 0);
        let quarter = TOKEN_BYTES / 4;
        cache.put(
            &"x".repeat(quarter + 1),
            &principal(Some(T0 + 3600)),
            0,
            0,
            None,
        );
        assert_eq!(
            cache.len(),
            0,
            "a token over a quarter of the budget is not kept"
        );
        for (i, fill) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            let token = fill.repeat(quarter);
            cache.put(&token, &principal(Some(T0 + 3600)), 0, 0, None);
            assert!(cache.bytes() <= TOKEN_BYTES, "after {i}: {}", cache.bytes());
            assert!(cache.get(&token, 0).is_some(), "the newest is kept");
        }
        assert_eq!(cache.bytes(), quarter, "the fifth emptied a full cache");
        // The same token again takes no more room.
        cache.put(
            &"e".repeat(quarter),
            &principal(Some(T0 + 3600)),
            0,
            0,
            None,
        );
        assert_eq!(cache.bytes(), quarter);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_a_jwks_key_verified_is_answered_until_the_keys_age() {
        let (cache, _) = cache(8, 600, 0);
        let aged = Instant::now() + Duration::from_secs(10);
        cache.put("jwks", &principal(Some(T0 + 3600)), 0, 0, Some(aged));
        cache.put("static", &principal(Some(T0 + 3600)), 0, 0, None);
        assert!(cache.get("jwks", 0).is_some());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(
            cache.get("jwks", 0).is_none(),
            "the keys that verified it aged"
        );
        assert!(cache.get("static", 0).is_some());
        cache.put("late", &principal(Some(T0 + 3600)), 0, 0, Some(aged));
        assert_eq!(cache.len(), 2, "verified with keys already aged: not kept");
    }

    #[tokio::test(start_paused = true)]
    async fn when_full_tokens_whose_keys_aged_go_first() {
        let (cache, _) = cache(4, 600, 0);
        let soon = Instant::now() + Duration::from_secs(10);
        cache.put("a", &principal(Some(T0 + 3600)), 0, 0, Some(soon));
        cache.put("b", &principal(Some(T0 + 3600)), 0, 0, Some(soon));
        cache.put("c", &principal(Some(T0 + 3600)), 0, 0, None);
        cache.put("d", &principal(Some(T0 + 3600)), 0, 0, None);
        tokio::time::advance(Duration::from_secs(10)).await;
        cache.put("e", &principal(Some(T0 + 3600)), 0, 0, None);
        assert_eq!(cache.len(), 3, "the two aged ones made room");
        for live in ["c", "d", "e"] {
            assert!(cache.get(live, 0).is_some(), "{live} kept");
        }
    }
}
