//! Bearer JWT authentication.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime};

use futures_util::TryFutureExt;
use futures_util::future::{Either, ErrInto};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lambda_http::request::RequestContext;
#[cfg(feature = "source-websocket")]
use lift_core::websocket::EventType;
use lift_core::{BoxError, BoxFuture, Context, Error, Response};
use serde_json::{Map, Value};
use tower::{Layer, Service, ServiceExt};

use super::hmac;
use super::keys::{JwksCache, JwksSource, Key};
use super::verified::VerifiedTokens;
use super::{Principal, VerifiedBy};
use crate::error::{ConfigError, check};
use crate::refusal::RefusedOr;

/// The shortest HS256 secret taken: the size of SHA-256's output.
const MIN_HS256_SECRET: usize = 32;
/// The verified-token cache of a configuration that does not set one: its capacity and
/// longest keep (5 minutes: API Gateway's default TTL for a REST API authorizer's results).
const DEFAULT_VERIFIED_TOKENS: (usize, Duration) = (1024, Duration::from_secs(300));

/// How old a JWKS's keys get before they are fetched again, when not configured.
const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(600);

/// A validated JWT configuration; see [`JwtConfig::builder`].
#[derive(Clone)]
pub struct JwtConfig {
    keys: HashMap<Option<String>, Arc<Key>>,
    jwks: Option<Arc<dyn JwksSource>>,
    jwks_min_interval: Duration,
    jwks_max_age: Duration,
    algorithms: Vec<Algorithm>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: Duration,
    trust_api_gateway: bool,
    optional: bool,
    realm: String,
    connect_query_token: Option<String>,
    /// Capacity and longest keep of the verified-token cache, when on.
    verified_tokens: Option<(usize, Duration)>,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithms", &self.algorithms)
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

/// Builds a [`JwtConfig`].
pub struct JwtConfigBuilder {
    config: JwtConfig,
    /// The first key that cannot be used: its field and why.
    key_error: Option<(&'static str, &'static str)>,
}

impl JwtConfig {
    /// Starts a configuration.
    ///
    /// # Default
    /// No keys (add at least one, or a JWKS), no accepted algorithm (pin them), no issuer or
    /// audience check (set them), 60 s leeway on `exp` and `nbf`, a token required, realm
    /// `lift`, API Gateway's authorizer not trusted, a JWKS's keys fetched again once 10
    /// minutes old ([`JwtConfigBuilder::jwks_max_age`]), and up to 1,024 verified tokens
    /// kept for up to 5 minutes ([`JwtConfigBuilder::cache_verified_tokens`]).
    pub fn builder() -> JwtConfigBuilder {
        JwtConfigBuilder {
            config: JwtConfig {
                keys: HashMap::new(),
                jwks: None,
                jwks_min_interval: Duration::from_secs(60),
                jwks_max_age: DEFAULT_JWKS_MAX_AGE,
                algorithms: Vec::new(),
                issuers: Vec::new(),
                audiences: Vec::new(),
                leeway: Duration::from_secs(60),
                trust_api_gateway: false,
                optional: false,
                realm: "lift".to_owned(),
                connect_query_token: None,
                verified_tokens: Some(DEFAULT_VERIFIED_TOKENS),
            },
            key_error: None,
        }
    }
}

impl JwtConfigBuilder {
    fn key(
        mut self,
        kid: Option<&str>,
        key: Result<DecodingKey, jsonwebtoken::errors::Error>,
        algorithm: Algorithm,
        hmac: Option<aws_lc_rs::hmac::Key>,
        what: &'static str,
    ) -> Self {
        match key {
            Ok(key) => {
                let key = Key {
                    key,
                    algorithm,
                    hmac,
                };
                self.config
                    .keys
                    .insert(kid.map(str::to_owned), Arc::new(key));
            }
            Err(_) => {
                self.key_error
                    .get_or_insert((what, "the key does not parse"));
            }
        }
        self
    }

    /// An HS256 shared secret (`kid`: the key id tokens name, or `None` for tokens without)
    /// of at least 32 bytes, the hash's size (RFC 7518 3.2): a shorter one, or an empty one
    /// from an unset variable, is refused at [`build`](Self::build), since anyone could
    /// guess it and sign tokens.
    pub fn hs256_secret(mut self, kid: Option<&str>, secret: &[u8]) -> Self {
        if secret.len() < MIN_HS256_SECRET {
            self.key_error.get_or_insert((
                "hs256_secret",
                "at least 32 bytes: a shorter secret can be guessed, and tokens forged",
            ));
            return self;
        }
        self.key(
            kid,
            Ok(DecodingKey::from_secret(secret)),
            Algorithm::HS256,
            Some(aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA256,
                secret,
            )),
            "hs256_secret",
        )
    }

    /// An RS256 public key in PEM.
    pub fn rs256_pem(self, kid: Option<&str>, pem: &[u8]) -> Self {
        self.key(
            kid,
            DecodingKey::from_rsa_pem(pem),
            Algorithm::RS256,
            None,
            "rs256_pem",
        )
    }

    /// An ES256 public key in PEM.
    pub fn es256_pem(self, kid: Option<&str>, pem: &[u8]) -> Self {
        self.key(
            kid,
            DecodingKey::from_ec_pem(pem),
            Algorithm::ES256,
            None,
            "es256_pem",
        )
    }

    /// Keys from a JWKS (e.g. [`HttpJwks`](super::HttpJwks)), fetched on first use, cached,
    /// and fetched again when a token names an unknown key id (at most once per
    /// `min_interval`, or a second after a failed fetch) or once they are
    /// [`JwtConfigBuilder::jwks_max_age`] old (at most once per `min_interval`).
    pub fn jwks(mut self, source: impl JwksSource, min_interval: Duration) -> Self {
        self.config.jwks = Some(Arc::new(source));
        self.config.jwks_min_interval = min_interval;
        self
    }

    /// How old the JWKS's keys may get (above zero and at most a day; 10 minutes by
    /// default, and never less than the `min_interval` of [`JwtConfigBuilder::jwks`]): the
    /// first token then verified with a JWKS key waits for a fetch of the set (at most 3
    /// seconds), as does any token
    /// arriving while that fetch runs, and is verified with what it brings. A key the issuer
    /// withdraws without publishing a new one thus stops verifying tokens with the first
    /// fetch past this age, tokens the verified-token cache holds included (they are
    /// answered from it only until their keys reach this age). A failed fetch keeps the
    /// keys in use and is tried again after `min_interval`.
    pub fn jwks_max_age(mut self, max_age: Duration) -> Self {
        self.config.jwks_max_age = max_age;
        self
    }

    /// The only algorithms accepted. A token with any other `alg` (`none` included) is
    /// refused, and a key only ever verifies its own algorithm, so RS/HS confusion fails.
    pub fn algorithms(mut self, algorithms: &[Algorithm]) -> Self {
        self.config.algorithms = algorithms.to_vec();
        self
    }

    /// Accepted issuers (`iss`); when set, a token without `iss` is refused.
    pub fn issuers(mut self, issuers: &[&str]) -> Self {
        self.config.issuers = issuers.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Accepted audiences (`aud`, a string or a list naming at least one of them); when
    /// set, a token without `aud` is refused.
    pub fn audiences(mut self, audiences: &[&str]) -> Self {
        self.config.audiences = audiences.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Clock skew allowed on `exp` and `nbf`.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.config.leeway = leeway;
        self
    }

    /// Trusts the claims of API Gateway's JWT authorizer instead of verifying the token
    /// again (only when the authorizer ran; otherwise the token is verified).
    pub fn trust_api_gateway_authorizer(mut self, trust: bool) -> Self {
        self.config.trust_api_gateway = trust;
        self
    }

    /// Lets requests without a token through (without a principal); a token that is sent
    /// must still be valid.
    pub fn optional(mut self, optional: bool) -> Self {
        self.config.optional = optional;
        self
    }

    /// Also takes the token from the query parameter `name` of a WebSocket `$connect`
    /// handshake that carries no `Authorization` header, since a browser's `WebSocket`
    /// cannot set headers (`wss://…/live?access_token=…`).
    ///
    /// Only `$connect` reads it: HTTP requests never do (a token in a URL ends up in access
    /// logs), and later WebSocket messages carry no token at all, so put the layer on the
    /// `$connect` route alone (`with_layer`) and keep what it learned with the connection.
    pub fn websocket_query_token(mut self, name: &str) -> Self {
        self.config.connect_query_token = Some(name.to_owned());
        self
    }

    /// Keeps up to `capacity` verified tokens for up to `max_age` (at most an hour), so a
    /// warm function answers a token it already verified without checking its signature
    /// and claims again. On by default, with 1,024 tokens for 5 minutes; turn it off with
    /// [`JwtConfigBuilder::verify_every_token`].
    ///
    /// The cache answers what verifying again would answer: only the same token, byte for
    /// byte; never past its own `exp` plus the leeway; never once a JWKS refresh has
    /// removed or changed a key, whichever key verified it (a refresh that only adds keys
    /// keeps the cache); and, for a JWKS key, never once the keys reach their
    /// [`JwtConfigBuilder::jwks_max_age`], when verifying would wait for a fetch. A token that fails is never kept. The configured keys, issuers and
    /// audiences are fixed for the verifier's life. What it costs is memory: the tokens and
    /// their claims, at most `capacity` tokens and 1 MiB of their text (a token over
    /// 256 KiB is verified every time). The gain is largest with RS256 and ES256, whose
    /// verification costs tens of microseconds.
    pub fn cache_verified_tokens(mut self, capacity: usize, max_age: Duration) -> Self {
        self.config.verified_tokens = Some((capacity, max_age));
        self
    }

    /// Verifies every token's signature and claims, even one verified a moment ago: no
    /// verified-token cache ([`JwtConfigBuilder::cache_verified_tokens`]).
    pub fn verify_every_token(mut self) -> Self {
        self.config.verified_tokens = None;
        self
    }

    /// The realm named in `WWW-Authenticate`.
    pub fn realm(mut self, realm: &str) -> Self {
        self.config.realm = realm.to_owned();
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// [`ConfigError`]: a key that does not parse, an HS256 secret under 32 bytes, no key
    /// source, no pinned algorithm, or a key whose algorithm is not pinned.
    pub fn build(self) -> Result<JwtConfig, ConfigError> {
        if let Some((field, reason)) = self.key_error {
            return Err(ConfigError::OutOfRange { field, reason });
        }
        let c = &self.config;
        check(
            !c.keys.is_empty() || c.jwks.is_some(),
            "keys",
            "add a key or a JWKS",
        )?;
        check(
            !c.algorithms.is_empty(),
            "algorithms",
            "pin the accepted algorithms",
        )?;
        check(
            c.keys.values().all(|k| c.algorithms.contains(&k.algorithm)),
            "algorithms",
            "every key's algorithm must be pinned",
        )?;
        check(!c.realm.contains('"'), "realm", "must not contain quotes")?;
        check(
            !c.jwks_max_age.is_zero() && c.jwks_max_age <= Duration::from_secs(86_400),
            "jwks_max_age",
            "must be above zero and at most a day",
        )?;
        if let Some((capacity, max_age)) = c.verified_tokens {
            check(
                capacity > 0,
                "cache_verified_tokens",
                "the capacity must be at least 1",
            )?;
            check(
                !max_age.is_zero() && max_age <= Duration::from_secs(3600),
                "cache_verified_tokens",
                "the longest keep must be above zero and at most an hour",
            )?;
        }
        Ok(self.config)
    }
}

/// Verifies bearer tokens against a [`JwtConfig`]; the engine of [`JwtAuthLayer`], usable
/// on its own.
#[derive(Clone)]
pub struct JwtVerifier {
    config: Arc<JwtConfig>,
    jwks: Option<Arc<JwksCache>>,
    /// The validation rules for each accepted algorithm, made once (the prepared HMAC
    /// path checks claims against the same ones).
    validations: Arc<[(Algorithm, Validation)]>,
    verified: Option<Arc<VerifiedTokens>>,
    /// The last header read: tokens of one issuer share it byte for byte, and reading it
    /// is a good part of a token's check.
    last_header: Arc<Mutex<Option<ReadHeader>>>,
}

/// A token header as read by `jsonwebtoken::decode_header`: its encoded text, and what Lift
/// takes from it.
struct ReadHeader {
    encoded: Box<str>,
    algorithm: Algorithm,
    kid: Option<String>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
        ErrorKind::InvalidAudience => "the token's audience is not accepted",
        ErrorKind::InvalidSignature => "the token's signature does not verify",
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => "the token's algorithm is not accepted",
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
        _ => "the token is malformed",
    }
}

/// `jsonwebtoken`'s rules for tokens of `algorithm` under `config`.
fn validation(config: &JwtConfig, algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = config.leeway.as_secs();
    validation.validate_nbf = true;
    // jsonwebtoken checks `iss` and `aud` only when the token has them: a configured
    // issuer or audience must also be a required claim.
    let mut required = vec!["exp"];
    if config.issuers.is_empty() {
        validation.iss = None;
    } else {
        validation.set_issuer(&config.issuers);
        required.push("iss");
    }
    if config.audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&config.audiences);
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    validation
}

impl JwtVerifier {
    /// A verifier for `config`.
    pub fn new(config: JwtConfig) -> Self {
        let jwks = config.jwks.clone().map(|source| {
            Arc::new(JwksCache::new(
                source,
                config.jwks_min_interval,
                config.jwks_max_age,
            ))
        });
        let validations = config
            .algorithms
            .iter()
            .map(|&algorithm| (algorithm, validation(&config, algorithm)))
            .collect();
        let verified = config.verified_tokens.map(|(capacity, max_age)| {
            Arc::new(VerifiedTokens::new(
                capacity,
                max_age,
                config.leeway,
                Arc::new(SystemTime::now),
            ))
        });
        JwtVerifier {
            config: Arc::new(config),
            jwks,
            validations,
            verified,
            last_header: Arc::default(),
        }
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> u64 {
        self.jwks.as_ref().map_or(0, |c| c.fetches())
    }

    /// How many tokens were answered from the verified-token cache
    /// ([`JwtConfigBuilder::cache_verified_tokens`]); 0 when it is off
    /// ([`JwtConfigBuilder::verify_every_token`]).
    pub fn cache_hits(&self) -> u64 {
        self.verified.as_ref().map_or(0, |v| v.hits())
    }

    fn unauthorized(&self, error: Option<&'static str>, reason: &'static str) -> Error {
        let challenge = match error {
            Some(code) => format!(
                "Bearer realm=\"{}\", error=\"{code}\", error_description=\"{reason}\"",
                self.config.realm
            ),
            None => format!("Bearer realm=\"{}\"", self.config.realm),
        };
        Error::Unauthorized {
            challenge: Cow::Owned(challenge),
            reason: Cow::Borrowed(reason),
        }
    }

    fn invalid(&self, reason: &'static str) -> Error {
        self.unauthorized(Some("invalid_token"), reason)
    }

    /// Verifies a compact JWT and returns its principal.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] with an `invalid_token` challenge naming why (never the token).
    pub async fn verify_token(&self, token: &str) -> Result<Principal, Error> {
        let principal = match self.check_now(token) {
            Check::Done(result) => result,
            Check::Fetch(pending) => self.verify_fetched(&pending).await,
        };
        principal.map(Arc::unwrap_or_clone)
    }

    /// The JWKS generation now (0 without a JWKS: static keys never change).
    fn generation(&self) -> u64 {
        self.jwks.as_ref().map_or(0, |jwks| jwks.generation())
    }

    /// Checks `token` with what is at hand: the verified-token cache, the configured keys
    /// and the JWKS keys already fetched. [`Check::Fetch`] when the token names a key id
    /// the JWKS may have gained.
    fn check_now(&self, token: &str) -> Check<Arc<Principal>> {
        // Read before any key is looked up (see `JwksCache::generation`).
        let generation = self.generation();
        if let Some(principal) = self
            .verified
            .as_ref()
            .and_then(|v| v.get(token, generation))
        {
            return Check::Done(Ok(principal));
        }
        let (algorithm, kid) = match self.header(token) {
            Ok(header) => header,
            Err(e) => return Check::Done(Err(self.invalid(reason(e.kind())))),
        };
        if !self.config.algorithms.contains(&algorithm) {
            return Check::Done(Err(self.invalid("the token's algorithm is not accepted")));
        }
        if let Some(key) = self.config.keys.get(&kid) {
            return Check::Done(self.verify_with(token, algorithm, key, generation, None));
        }
        match (&self.jwks, kid) {
            (Some(jwks), Some(kid)) => match jwks.cached(&kid) {
                // Keys due for a fetch are fetched first (`verify_fetched`).
                Some(key) if !jwks.due() => {
                    let aged_at = Some(jwks.aged_at());
                    Check::Done(self.verify_with(token, algorithm, &key, generation, aged_at))
                }
                Some(_) | None => Check::Fetch(Pending {
                    token: token.to_owned(),
                    algorithm,
                    kid,
                    generation,
                }),
            },
            _ => Check::Done(Err(self.invalid("the token's key id is unknown"))),
        }
    }

    /// The token's `alg` and `kid`, as `jsonwebtoken::decode_header` reads them; the same
    /// encoded header as the last token's is not read again.
    fn header(
        &self,
        token: &str,
    ) -> Result<(Algorithm, Option<String>), jsonwebtoken::errors::Error> {
        // The header part as decode_header finds it: before the last two dots.
        let encoded = token
            .rsplit_once('.')
            .and_then(|(message, _)| message.rsplit_once('.'))
            .map(|(header, _)| header);
        let last = || {
            self.last_header
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(encoded) = encoded
            && let Some(read) = last().as_ref().filter(|read| *read.encoded == *encoded)
        {
            return Ok((read.algorithm, read.kid.clone()));
        }
        let header = jsonwebtoken::decode_header(token)?;
        if let Some(encoded) = encoded {
            *last() = Some(ReadHeader {
                encoded: encoded.into(),
                algorithm: header.alg,
                kid: header.kid.clone(),
            });
        }
        Ok((header.alg, header.kid))
    }

    /// Verifies a token once the JWKS has been fetched for its key id.
    async fn verify_fetched(&self, pending: &Pending) -> Result<Arc<Principal>, Error> {
        let key = match &self.jwks {
            Some(jwks) => jwks.key(&pending.kid).await,
            None => None,
        };
        let key = key.ok_or_else(|| self.invalid("the token's key id is unknown"))?;
        let aged_at = self.jwks.as_ref().map(|jwks| jwks.aged_at());
        self.verify_with(
            &pending.token,
            pending.algorithm,
            &key,
            pending.generation,
            aged_at,
        )
    }

    /// Verifies `token`, whose header names `algorithm`, with `key` (looked up after
    /// reading JWKS `generation`; a JWKS key ages at `aged_at`); keeps the principal in the
    /// verified-token cache when it is on.
    fn verify_with(
        &self,
        token: &str,
        algorithm: Algorithm,
        key: &Key,
        generation: u64,
        aged_at: Option<tokio::time::Instant>,
    ) -> Result<Arc<Principal>, Error> {
        let validation = self
            .validations
            .iter()
            .find(|(accepted, _)| *accepted == key.algorithm)
            .map(|(_, validation)| validation);
        let Some(validation) = validation.filter(|_| key.algorithm == algorithm) else {
            return Err(self.invalid("the token's algorithm is not accepted"));
        };
        let claims = match &key.hmac {
            Some(hmac) => {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                hmac::verify(token, hmac, validation, now)
                    .map_err(|kind| self.invalid(reason(&kind)))?
            }
            None => {
                jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation)
                    .map_err(|e| self.invalid(reason(e.kind())))?
                    .claims
            }
        };
        let principal = Arc::new(Principal::from_claims(claims, VerifiedBy::Lift));
        if let Some(verified) = &self.verified {
            let current = self.generation();
            verified.put(token, &principal, generation, current, aged_at);
        }
        Ok(principal)
    }

    /// Authenticates a request: API Gateway's verified claims when trusted, else the bearer
    /// token of the `Authorization` header (or, for a `TOKEN` Lambda authorizer request,
    /// its `authorizationToken`), else (for a WebSocket `$connect`, when
    /// configured with [`JwtConfigBuilder::websocket_query_token`]) the token in the query.
    /// `Ok(None)`: no token, and none required.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for a missing (when required), malformed or invalid token.
    pub async fn authenticate(&self, ctx: &Context) -> Result<Option<Principal>, Error> {
        let principal = match self.authenticate_now(ctx) {
            Check::Done(result) => result,
            Check::Fetch(pending) => self.verify_fetched(&pending).await.map(Some),
        };
        principal.map(|p| p.map(Arc::unwrap_or_clone))
    }

    /// [`JwtVerifier::authenticate`] as far as it goes without waiting.
    fn authenticate_now(&self, ctx: &Context) -> Check<Option<Arc<Principal>>> {
        let checked = |token: &str| match self.check_now(token) {
            Check::Done(result) => Check::Done(result.map(Some)),
            Check::Fetch(pending) => Check::Fetch(pending),
        };
        if self.config.trust_api_gateway
            && let Some(claims) = api_gateway_claims(ctx)
        {
            // API Gateway verified the signature, for its own issuer and audiences: this
            // function's are checked here, as they would be for a token it verified.
            if let Err(reason) = self.gateway_claims_fit(&claims) {
                return Check::Done(Err(self.unauthorized(Some("invalid_token"), reason)));
            }
            return Check::Done(Ok(Some(Arc::new(Principal::from_claims(
                claims,
                VerifiedBy::ApiGateway,
            )))));
        }
        let Some(authorization) = ctx
            .header(http::header::AUTHORIZATION)
            .or_else(|| authorizer_token(ctx))
        else {
            if let Some(token) = self.connect_query_token(ctx) {
                if token.trim().is_empty() {
                    return Check::Done(Err(self.unauthorized(
                        Some("invalid_request"),
                        "the token query parameter is empty",
                    )));
                }
                return checked(token.trim());
            }
            return Check::Done(if self.config.optional {
                Ok(None)
            } else {
                Err(self.unauthorized(None, "a bearer token is required"))
            });
        };
        let token = match authorization.split_once(' ') {
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
            {
                token.trim()
            }
            _ => {
                return Check::Done(Err(self.unauthorized(
                    Some("invalid_request"),
                    "the Authorization header is not a bearer token",
                )));
            }
        };
        checked(token)
    }
}

/// A token (or a request's) checked as far as it goes without waiting.
enum Check<T> {
    /// The answer.
    Done(Result<T, Error>),
    /// The token names a key not yet fetched from the JWKS.
    Fetch(Pending),
}

/// A token waiting for the JWKS to be fetched for its key id.
struct Pending {
    token: String,
    algorithm: Algorithm,
    kid: String,
    /// The JWKS generation read before the key was looked up.
    generation: u64,
}

impl JwtVerifier {
    /// The token in the query of a WebSocket `$connect`, when the configuration reads one.
    fn connect_query_token<'a>(&self, ctx: &'a Context) -> Option<&'a str> {
        let name = self.config.connect_query_token.as_deref()?;
        #[cfg(feature = "source-websocket")]
        let connect = ctx
            .websocket()
            .is_some_and(|ws| ws.event_type() == EventType::Connect);
        // Without WebSocket events no request is a `$connect`.
        #[cfg(not(feature = "source-websocket"))]
        let connect = false;
        if connect { ctx.query(name) } else { None }
    }
}

/// The token of a `TOKEN` Lambda authorizer request ([`lift_core::authorizer`]), which
/// API Gateway takes from the configured header, `Bearer` prefix included.
#[cfg(feature = "source-authorizer")]
fn authorizer_token(ctx: &Context) -> Option<&str> {
    ctx.authorizer()?.token()
}

/// Without authorizer requests there is no `TOKEN` request.
#[cfg(not(feature = "source-authorizer"))]
fn authorizer_token(_: &Context) -> Option<&str> {
    None
}

/// The claims API Gateway's JWT authorizer verified, if it ran.
impl JwtVerifier {
    /// Whether claims API Gateway verified name an issuer and an audience this
    /// configuration accepts (when it names any).
    fn gateway_claims_fit(&self, claims: &Map<String, Value>) -> Result<(), &'static str> {
        let config = &self.config;
        let texts = |name: &str| -> Vec<&str> {
            match claims.get(name) {
                Some(Value::String(one)) => vec![one.as_str()],
                Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            }
        };
        if !config.issuers.is_empty()
            && !texts("iss")
                .iter()
                .any(|iss| config.issuers.iter().any(|i| i == iss))
        {
            return Err("the authorizer's token is from another issuer");
        }
        if !config.audiences.is_empty()
            && !texts("aud")
                .iter()
                .any(|aud| config.audiences.iter().any(|a| a == aud))
        {
            return Err("the authorizer's token is for another audience");
        }
        Ok(())
    }
}

/// The claims of API Gateway's JWT authorizer, which hands them over as strings: a list
/// claim (`aud`, `scope`, `cognito:groups`) arrives as `"[a b]"` and is read back as a list;
/// the scopes API Gateway checked fill `scope` when the claims have none.
fn api_gateway_claims(ctx: &Context) -> Option<Map<String, Value>> {
    let request = ctx.http()?;
    let authorizer = match request.request_context() {
        RequestContext::ApiGatewayV2(c) => c.authorizer.as_ref()?,
        RequestContext::ApiGatewayV1(c) => &c.authorizer,
        _ => return None,
    };
    let jwt = authorizer.jwt.as_ref()?;
    if jwt.claims.is_empty() {
        return None;
    }
    let mut claims: Map<String, Value> = jwt
        .claims
        .iter()
        .map(|(k, v)| {
            let value = match v.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                Some(list) => Value::Array(
                    list.split_whitespace()
                        .map(|item| Value::String(item.to_owned()))
                        .collect(),
                ),
                None => Value::String(v.clone()),
            };
            (k.clone(), value)
        })
        .collect();
    if let Some(scopes) = jwt.scopes.as_ref().filter(|s| !s.is_empty())
        && !claims.contains_key("scope")
        && !claims.contains_key("scp")
    {
        claims.insert("scope".to_owned(), Value::String(scopes.join(" ")));
    }
    Some(claims)
}

/// Authenticates every request with a bearer JWT and puts the [`Principal`] in the
/// context; a missing or invalid token is a 401 with a `WWW-Authenticate` challenge.
#[derive(Clone, Debug)]
pub struct JwtAuthLayer {
    verifier: JwtVerifier,
}

impl JwtAuthLayer {
    /// Authenticates with `config`.
    pub fn new(config: JwtConfig) -> Self {
        JwtAuthLayer {
            verifier: JwtVerifier::new(config),
        }
    }

    /// The verifier (shared with the services this layer makes).
    pub fn verifier(&self) -> &JwtVerifier {
        &self.verifier
    }
}

impl<S> Layer<S> for JwtAuthLayer {
    type Service = JwtAuth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        JwtAuth {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// The JWT authentication service.
#[derive(Clone, Debug)]
pub struct JwtAuth<S> {
    inner: S,
    verifier: JwtVerifier,
}

crate::inner_accessors!(JwtAuth<S>);

impl<S> Service<Context> for JwtAuth<S>
where
    S: Service<Context, Response = Response> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut ctx: Context) -> Self::Future {
        let principal = match self.verifier.authenticate_now(&ctx) {
            Check::Done(Ok(principal)) => principal,
            Check::Done(Err(error)) => return ResponseFuture::refused(refused(error)),
            Check::Fetch(pending) => {
                // The key must be fetched first: the inner service waits in the future.
                let verifier = self.verifier.clone();
                let service = crate::take_ready(&mut self.inner);
                return ResponseFuture::inner(Either::Right(Box::pin(async move {
                    let principal = verifier.verify_fetched(&pending).await.map_err(refused)?;
                    ctx.set_principal(principal);
                    service.oneshot(ctx).await.map_err(Into::into)
                })));
            }
        };
        if let Some(principal) = principal {
            ctx.set_principal(principal);
        }
        ResponseFuture::inner(Either::Left(self.inner.call(ctx).err_into()))
    }
}

/// Logs a refused authentication and boxes its error.
fn refused(error: Error) -> BoxError {
    tracing::info!(target: "lift::auth", code = error.code(), error = %error, "authentication refused");
    Box::new(error)
}

/// The future of [`JwtAuth`]: the inner service's once the token is verified (at once when
/// its key is at hand, after the JWKS fetch otherwise), or the refusal.
pub type ResponseFuture<F> =
    RefusedOr<Either<ErrInto<F, BoxError>, BoxFuture<Result<Response, BoxError>>>>;

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"lift-differential-secret-32-bytes!!";
    const ISS: &str = "https://id.example.com";
    const AUD: &str = "orders";

    /// The last header read is kept by its encoded text: tokens with other headers, the
    /// same header with another signature, and headers that do not parse are each answered
    /// as if read afresh, in any order.
    #[tokio::test]
    async fn headers_read_before_do_not_change_any_answer() {
        let verifier = JwtVerifier::new(
            JwtConfig::builder()
                .hs256_secret(Some("a"), b"secret-a-of-32-bytes-or-more-here")
                .hs256_secret(Some("b"), b"secret-b-of-32-bytes-or-more-here")
                .algorithms(&[Algorithm::HS256])
                // Every case reads its header: none is answered from the token cache.
                .verify_every_token()
                .build()
                .expect("config"),
        );
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("time")
            .as_secs();
        let claims = json!({"sub": "u", "exp": now + 600});
        let sign = |kid: &str, secret: &[u8]| {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(kid.to_owned());
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).expect("sign")
        };
        let a = sign("a", b"secret-a-of-32-bytes-or-more-here");
        let b = sign("b", b"secret-b-of-32-bytes-or-more-here");
        let a_signed_by_b = sign("a", b"secret-b-of-32-bytes-or-more-here");
        let unknown = sign("c", b"secret-b-of-32-bytes-or-more-here");
        let (_, rest) = a.split_once('.').expect("three parts");
        let garbled = format!("e30.{rest}");
        let cases = [
            (&a, true),
            (&a, true),
            (&b, true),
            (&a_signed_by_b, false),
            (&a, true),
            (&unknown, false),
            (&garbled, false),
            (&b, true),
            (&garbled, false),
        ];
        for (i, (token, accepted)) in cases.iter().enumerate() {
            let result = verifier.verify_token(token).await;
            assert_eq!(result.is_ok(), *accepted, "case {i}: {result:?}");
        }
    }

    /// Every combination of well-formed, malformed, absent, early and late registered
    /// claims gets the same answer from the prepared-key path as from
    /// `jsonwebtoken::decode` with the same configuration: the same claims, or a refusal
    /// for the same reason.
    #[test]
    fn the_prepared_hmac_path_agrees_with_jsonwebtoken() {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("time")
            .as_secs() as i64;
        let exps = [
            None,
            Some(json!(now + 600)),
            Some(json!(now - 30)),
            Some(json!(now - 600)),
            Some(json!((now + 600) as f64 + 0.4)),
            Some(json!("later")),
            Some(Value::Null),
            Some(json!(-5)),
            Some(json!(1e300)),
        ];
        let nbfs = [
            None,
            Some(json!(now + 30)),
            Some(json!(now + 600)),
            Some(json!("soon")),
            Some(Value::Null),
        ];
        let names = |accepted: &str| {
            [
                None,
                Some(json!(accepted)),
                Some(json!("someone-else")),
                Some(json!([accepted, "someone-else"])),
                Some(json!(["someone-else"])),
                Some(json!([])),
                Some(json!(5)),
                Some(Value::Null),
                Some(json!([accepted, 5])),
            ]
        };
        let configs = [
            JwtConfig::builder()
                .hs256_secret(None, SECRET)
                .algorithms(&[Algorithm::HS256])
                .issuers(&[ISS])
                .audiences(&[AUD, "payments"])
                .build()
                .expect("config"),
            JwtConfig::builder()
                .hs256_secret(None, SECRET)
                .algorithms(&[Algorithm::HS256])
                .leeway(Duration::ZERO)
                .build()
                .expect("config"),
        ];
        let signing = EncodingKey::from_secret(SECRET);
        let mut compared = 0;
        let mut refused = 0;
        for config in &configs {
            let key = &config.keys[&None];
            let prepared = key.hmac.as_ref().expect("an HMAC key");
            let validation = validation(config, Algorithm::HS256);
            for exp in &exps {
                for nbf in &nbfs {
                    for iss in names(ISS) {
                        for aud in names(AUD) {
                            let mut claims = Map::new();
                            claims.insert("sub".to_owned(), json!("user-1"));
                            for (name, value) in
                                [("exp", exp), ("nbf", nbf), ("iss", &iss), ("aud", &aud)]
                            {
                                if let Some(value) = value {
                                    claims.insert(name.to_owned(), value.clone());
                                }
                            }
                            let token = jsonwebtoken::encode(
                                &Header::new(Algorithm::HS256),
                                &claims,
                                &signing,
                            )
                            .expect("sign");
                            let ours = hmac::verify(&token, prepared, &validation, now as u64)
                                .map_err(|kind| reason(&kind));
                            let theirs = jsonwebtoken::decode::<Map<String, Value>>(
                                &token,
                                &key.key,
                                &validation,
                            )
                            .map(|data| data.claims)
                            .map_err(|e| reason(e.kind()));
                            assert_eq!(ours, theirs, "{claims:?}");
                            compared += 1;
                            refused += usize::from(ours.is_err());
                        }
                    }
                }
            }
        }
        assert_eq!(compared, 2 * 9 * 5 * 9 * 9);
        assert!(refused > 0 && refused < compared, "{refused} of {compared}");
        // Tampered tokens: the signature over other bytes, or not base64, or cut short.
        let config = &configs[0];
        let key = &config.keys[&None];
        let claims = json!({"sub": "u", "iss": ISS, "aud": AUD, "exp": now + 600});
        let good =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &signing).expect("sign");
        let (message, signature) = good.rsplit_once('.').expect("three parts");
        let other = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"another-secret-of-32-bytes-or-more"),
        )
        .expect("sign");
        let (_, other_signature) = other.rsplit_once('.').expect("three parts");
        for token in [
            good.clone(),
            format!("{message}.{other_signature}"),
            format!("{message}.{}", &signature[..20]),
            format!("{message}.{signature}{signature}"),
            format!("{message}.*{}", &signature[1..]),
            format!("{message}."),
        ] {
            let ours = hmac::verify(
                &token,
                key.hmac.as_ref().expect("hmac"),
                &validation(config, Algorithm::HS256),
                now as u64,
            )
            .map_err(|kind| reason(&kind));
            let theirs = jsonwebtoken::decode::<Map<String, Value>>(
                &token,
                &key.key,
                &validation(config, Algorithm::HS256),
            )
            .map(|data| data.claims)
            .map_err(|e| reason(e.kind()));
            assert_eq!(ours, theirs, "{token}");
        }
    }
}
