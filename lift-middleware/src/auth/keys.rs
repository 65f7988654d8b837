//! Verification keys: static keys, and JWKS fetched from a URL, cached, refreshed when a
//! token names an unknown key id or the keys are past their age (at most once per
//! interval, one fetch at a time).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use lift_core::{BoxError, BoxFuture};
use tokio::time::Instant;

/// A key and the one algorithm it verifies.
pub(crate) struct Key {
    pub(crate) key: DecodingKey,
    pub(crate) algorithm: Algorithm,
    /// A shared secret's HMAC key, prepared once ([`super::hmac`]).
    pub(crate) hmac: Option<aws_lc_rs::hmac::Key>,
}

/// Where a JWKS comes from.
pub trait JwksSource: Send + Sync + 'static {
    /// Fetches the current key set.
    fn fetch(&self) -> BoxFuture<Result<JwkSet, BoxError>>;
}

/// A JWKS served over HTTPS (or plain HTTP, for local tests).
#[derive(Clone)]
pub struct HttpJwks {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Empty<Bytes>,
    >,
    url: http::Uri,
}

impl std::fmt::Debug for HttpJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpJwks").field("url", &self.url).finish()
    }
}

impl HttpJwks {
    /// A JWKS at `url`; the client trusts the system's root certificates.
    ///
    /// # Errors
    /// When `url` is not a URL or the system's roots cannot be loaded.
    pub fn new(url: &str) -> Result<Self, BoxError> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        Ok(HttpJwks {
            client,
            url: url.parse()?,
        })
    }
}

impl JwksSource for HttpJwks {
    fn fetch(&self) -> BoxFuture<Result<JwkSet, BoxError>> {
        let (client, url) = (self.client.clone(), self.url.clone());
        Box::pin(async move {
            let response = client.get(url).await?;
            if !response.status().is_success() {
                return Err(format!("the JWKS endpoint answered {}", response.status()).into());
            }
            // A key set is a few KiB: a body past a MiB is not one.
            let body = http_body_util::Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await?
                .to_bytes();
            Ok(serde_json::from_slice(&body)?)
        })
    }
}

/// The algorithm a JWK verifies: its `alg`, else what its key type implies.
fn algorithm_of(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    if let Some(alg) = jwk.common.key_algorithm {
        return match alg {
            KeyAlgorithm::RS256 => Some(Algorithm::RS256),
            KeyAlgorithm::RS384 => Some(Algorithm::RS384),
            KeyAlgorithm::RS512 => Some(Algorithm::RS512),
            KeyAlgorithm::PS256 => Some(Algorithm::PS256),
            KeyAlgorithm::ES256 => Some(Algorithm::ES256),
            KeyAlgorithm::ES384 => Some(Algorithm::ES384),
            KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
            _ => None,
        };
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        _ => None,
    }
}

/// The usable keys of `set` by id, each with the JWK it came from.
fn index(set: &JwkSet) -> HashMap<String, (Jwk, Arc<Key>)> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let algorithm = algorithm_of(jwk)?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            let key = Key {
                key,
                algorithm,
                hmac: None,
            };
            Some((kid, (jwk.clone(), Arc::new(key))))
        })
        .collect()
}

/// How long a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// After a failed fetch, how soon another may be tried (when `min_interval` is longer).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The largest key set body read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// A JWKS cache: keys by id, fetched again when a token names an unknown id (at most once
/// per `min_interval`, or a second after a failed fetch) or once the keys are `max_age` old
/// (at most once per `min_interval`).
///
/// Its generation moves on each time a refresh removes a key or changes one: whatever was
/// verified under an earlier generation may have been verified with a key that is gone.
/// A refresh that only adds keys (a rotation starting) leaves it where it was.
pub(crate) struct JwksCache {
    source: Arc<dyn JwksSource>,
    keys: RwLock<Arc<HashMap<String, Arc<Key>>>>,
    generation: AtomicU64,
    min_interval: Duration,
    max_age: Duration,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last fetch attempt, plus one (0: never).
    last_fetch: AtomicU64,
    /// Milliseconds since `epoch` of the last fetch that succeeded, plus one (0: never).
    fetched_at: AtomicU64,
    /// Whether the last fetch failed: the next may come sooner.
    last_failed: AtomicBool,
    /// Held by the one fetch at a time, with the JWKs the keys in use came from.
    fetching: tokio::sync::Mutex<HashMap<String, Jwk>>,
    fetches: AtomicU64,
}

/// What [`JwksCache::fetch`] did.
enum Fetched {
    /// The set was fetched and is in use.
    Fresh,
    /// The set was not fetched: the last attempt is too recent.
    RateLimited,
    /// The fetch failed; the keys in use stay.
    Failed,
}

impl JwksCache {
    pub(crate) fn new(
        source: Arc<dyn JwksSource>,
        min_interval: Duration,
        max_age: Duration,
    ) -> Self {
        JwksCache {
            source,
            keys: RwLock::new(Arc::new(HashMap::new())),
            generation: AtomicU64::new(0),
            min_interval,
            max_age,
            epoch: Instant::now(),
            last_fetch: AtomicU64::new(0),
            fetched_at: AtomicU64::new(0),
            last_failed: AtomicBool::new(false),
            fetching: tokio::sync::Mutex::new(HashMap::new()),
            fetches: AtomicU64::new(0),
        }
    }

    /// The key `kid` if the last fetch had it.
    pub(crate) fn cached(&self, kid: &str) -> Option<Arc<Key>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(kid)
            .cloned()
    }

    /// The current generation (see the type's docs). Read it before looking a key up: the
    /// key found then belongs to this generation or a later one.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Milliseconds since `epoch`, plus one.
    fn now(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
            + 1
    }

    /// Whether the keys in use are `max_age` old (see [`aged_at`](Self::aged_at)).
    fn aged(&self) -> bool {
        Instant::now() >= self.aged_at()
    }

    /// When the keys in use become `max_age` old: a token verified with one of them is
    /// answered from the verified-token cache only until then, since a fresh verification
    /// would then wait for a fetch that may withdraw the key. Before the first fetch has
    /// finished storing its time, now: nothing verified then is kept.
    pub(crate) fn aged_at(&self) -> Instant {
        match self.fetched_at.load(Ordering::Acquire).checked_sub(1) {
            // `max_age` is at most a day (checked when the configuration is built).
            Some(since_epoch) => self.epoch + Duration::from_millis(since_epoch) + self.max_age,
            None => Instant::now(),
        }
    }

    /// Whether a token verified with the keys in use should wait for a fetch of the set:
    /// they are `max_age` old, and either the rate limit lets them be fetched again now or
    /// a fetch is under way (whose outcome the token then waits for).
    pub(crate) fn due(&self) -> bool {
        self.aged() && (self.may_refresh(self.now()) || self.fetching.try_lock().is_err())
    }

    /// Whether the rate limit lets aged keys be fetched again at `now`.
    fn may_refresh(&self, now: u64) -> bool {
        let last = self.last_fetch.load(Ordering::Acquire);
        now.saturating_sub(last) >= self.min_interval.as_millis() as u64
    }

    /// The key `kid`, fetching the set first when `kid` is unknown or the keys are
    /// [`due`](Self::due), and the last fetch is old enough. When a fetch fails the keys in
    /// use stay, so a key they have is still found.
    pub(crate) async fn key(&self, kid: &str) -> Option<Arc<Key>> {
        let mut in_use = self.fetching.lock().await;
        // Another caller may have fetched while this one waited.
        let cached = self.cached(kid);
        if cached.is_some() && !(self.aged() && self.may_refresh(self.now())) {
            return cached;
        }
        // An unknown key id (a rotation) is asked for again a second after a failed fetch;
        // aged keys, which are still at hand, once an interval.
        match self.fetch(&mut in_use, cached.is_none()).await {
            Fetched::Fresh => self.cached(kid),
            Fetched::RateLimited if cached.is_none() => {
                tracing::debug!(target: "lift::auth", kid, "unknown key id; JWKS refresh rate-limited");
                None
            }
            Fetched::RateLimited | Fetched::Failed => cached,
        }
    }

    /// Fetches the set unless the last attempt is too recent (after a failed one, a second
    /// is enough when `retry_soon`), and puts it in use. The caller holds `fetching`, whose
    /// JWKs `in_use` are.
    async fn fetch(&self, in_use: &mut HashMap<String, Jwk>, retry_soon: bool) -> Fetched {
        let now = self.now();
        let last = self.last_fetch.load(Ordering::Acquire);
        let interval = if self.last_failed.load(Ordering::Acquire) && retry_soon {
            self.min_interval.min(RETRY_AFTER_FAILURE)
        } else {
            self.min_interval
        };
        if last != 0 && now.saturating_sub(last) < interval.as_millis() as u64 {
            return Fetched::RateLimited;
        }
        self.last_fetch.store(now, Ordering::Release);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        // Bounded, so that an endpoint that hangs does not hold every request needing a key
        // (they wait on `fetching`) until the invocation's deadline.
        let fetched = match tokio::time::timeout(FETCH_TIMEOUT, self.source.fetch()).await {
            Ok(fetched) => fetched,
            Err(_) => {
                Err(format!("the JWKS endpoint did not answer within {FETCH_TIMEOUT:?}").into())
            }
        };
        match fetched {
            Ok(set) => {
                self.last_failed.store(false, Ordering::Release);
                let indexed = index(&set);
                let dropped = in_use
                    .iter()
                    .any(|(kid, jwk)| indexed.get(kid).is_none_or(|(new, _)| new != jwk));
                let keys: HashMap<_, _> = indexed
                    .iter()
                    .map(|(kid, (_, key))| (kid.clone(), key.clone()))
                    .collect();
                tracing::info!(target: "lift::auth", keys = keys.len(), dropped, "JWKS refreshed");
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
                // After the keys: a reader that sees the new generation finds the new keys.
                if dropped {
                    self.generation.fetch_add(1, Ordering::AcqRel);
                }
                *in_use = indexed
                    .into_iter()
                    .map(|(kid, (jwk, _))| (kid, jwk))
                    .collect();
                self.fetched_at.store(now, Ordering::Release);
                Fetched::Fresh
            }
            Err(error) => {
                // The old keys stay in use: a rotation-safe cache never drops keys on a failure.
                // A key id not at hand may be asked for again after `RETRY_AFTER_FAILURE`: a
                // blip on a cold start or during a rotation must not refuse its tokens for a
                // minute.
                self.last_failed.store(true, Ordering::Release);
                tracing::warn!(target: "lift::auth", error = %lift_core::Error::internal(error), "JWKS fetch failed");
                Fetched::Failed
            }
        }
    }
}
