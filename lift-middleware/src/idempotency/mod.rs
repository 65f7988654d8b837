//! Idempotency: a handler runs at most once per idempotency key; repeats get the first
//! answer.
//!
//! Records live in DynamoDB in the item layout of Powertools for AWS Lambda (partition key
//! `id`; `status` `INPROGRESS`/`COMPLETED`; `expiration` in epoch seconds;
//! `in_progress_expiration` in epoch milliseconds; `data`; `validation`), so Python,
//! TypeScript and Rust functions can share a table.
//!
//! - The key is a SHA-256 of the whole payload (the HTTP body, the SQS message body, the
//!   EventBridge `detail`, ...) or of the fields named by JSON pointers, or any string a
//!   closure returns; it is prefixed with the function name and the route.
//! - Optionally a second hash of the payload ([`IdempotencyConfigBuilder::validate_payload`]):
//!   the same key with a different payload is refused (422 `idempotency_key_reused`).
//! - The claim is one conditional `PutItem`: it wins if no record exists, or the record's
//!   expiry passed, or an in-progress record's lock expired (a crashed invocation does not
//!   block forever: the lock lasts the invocation's remaining time). Expiry is always
//!   checked in code, since DynamoDB's TTL deletes late.
//! - A completed key answers with the stored response without running the handler. A key
//!   in progress answers 409 `idempotency_in_progress`, or, when
//!   [`IdempotencyConfigBuilder::wait_for_in_progress`] allows, waits for the first call's answer.
//! - A failed handler (an error or a 5xx) deletes its record, so a retry can run. So does
//!   a streamed response ([`lift_core::stream`]), whose body cannot be stored and replayed.
//! - Completing and releasing are conditional on the claim still being this call's (a
//!   random token in the attribute `lift_claim`, which Powertools ignores): a call that
//!   outlived its lock and lost the key to another call leaves that call's record alone.
//! - Works per request and per batch record (each record its own key, with partial batch
//!   failures as usual), and can keep completed answers in a bounded local cache in front
//!   of DynamoDB.
//! - [`Idempotent`] does the same for any computation inside a handler (Powertools'
//!   `idempotent_function`): the key comes from a value the caller passes, and the record
//!   holds the computation's value as JSON.
//!
//! ```no_run
//! use std::time::Duration;
//! use lift_core::App;
//! use lift_middleware::idempotency::{IdempotencyConfig, IdempotencyLayer};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
//! let config = IdempotencyConfig::builder("idempotency")
//!     .key_fields(&["/orderId", "/customer/id"])
//!     .validate_payload(true)
//!     .expires_after(Duration::from_secs(3600))
//!     .build()?;
//! let app = App::new().layer(IdempotencyLayer::new(client, config));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

mod function;
mod store;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use lift_core::{Body, BoxError, Context, Error, Response};
use sha2::{Digest, Sha256};
use tower::{Layer, Service, ServiceExt};

use crate::error::{ConfigError, check};
pub use function::{Idempotent, IdempotentError};
pub use store::Record;
use store::{Claim, ClaimToken, Store};

type KeyFn = Arc<dyn Fn(&Context) -> Option<String> + Send + Sync>;

/// What the idempotency key is made of.
#[derive(Clone)]
enum KeySource {
    Payload,
    Fields(Vec<String>),
    Custom(KeyFn),
}

/// A validated idempotency configuration.
#[derive(Clone)]
pub struct IdempotencyConfig {
    table: String,
    key: KeySource,
    validate_payload: bool,
    expires_after: Duration,
    wait_for_in_progress: Duration,
    local_cache: u64,
}

impl std::fmt::Debug for IdempotencyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyConfig")
            .field("table", &self.table)
            .field("expires_after", &self.expires_after)
            .finish_non_exhaustive()
    }
}

/// Builds an [`IdempotencyConfig`].
pub struct IdempotencyConfigBuilder {
    config: IdempotencyConfig,
}

impl IdempotencyConfig {
    /// Records in `table` (partition key `id`, a string).
    ///
    /// # Default
    /// The key hashes the whole payload; no payload validation; records expire after an
    /// hour; a key in progress answers 409 at once; no local cache.
    pub fn builder(table: &str) -> IdempotencyConfigBuilder {
        IdempotencyConfigBuilder {
            config: IdempotencyConfig {
                table: table.to_owned(),
                key: KeySource::Payload,
                validate_payload: false,
                expires_after: Duration::from_secs(3600),
                wait_for_in_progress: Duration::ZERO,
                local_cache: 0,
            },
        }
    }
}

impl IdempotencyConfigBuilder {
    /// Makes the key from these fields of the JSON payload (JSON pointers, `/a/b`).
    pub fn key_fields(mut self, pointers: &[&str]) -> Self {
        self.config.key = KeySource::Fields(pointers.iter().map(|p| (*p).to_owned()).collect());
        self
    }
    /// Makes the key with a function of the request (`None`: not idempotent, just run).
    pub fn key_fn(
        mut self,
        key: impl Fn(&Context) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.config.key = KeySource::Custom(Arc::new(key));
        self
    }
    /// Refuses a repeat of a key whose payload differs from the first one's.
    pub fn validate_payload(mut self, on: bool) -> Self {
        self.config.validate_payload = on;
        self
    }
    /// How long a completed answer is kept and served.
    pub fn expires_after(mut self, duration: Duration) -> Self {
        self.config.expires_after = duration;
        self
    }
    /// Lets a repeat wait up to `duration` for a call in progress to finish, then answer
    /// as it did (409 if it has not finished by then).
    pub fn wait_for_in_progress(mut self, duration: Duration) -> Self {
        self.config.wait_for_in_progress = duration;
        self
    }
    /// Keeps up to `entries` completed answers in memory in front of DynamoDB.
    pub fn local_cache(mut self, entries: u64) -> Self {
        self.config.local_cache = entries;
        self
    }
    /// Validates the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field.
    pub fn build(self) -> Result<IdempotencyConfig, ConfigError> {
        let c = &self.config;
        check(!c.table.is_empty(), "table", "must name a table")?;
        check(
            c.expires_after >= Duration::from_secs(1),
            "expires_after",
            "must be at least one second",
        )?;
        if let KeySource::Fields(fields) = &c.key {
            check(
                !fields.is_empty() && fields.iter().all(|f| f.starts_with('/')),
                "key_fields",
                "must be JSON pointers (\"/field\")",
            )?;
        }
        Ok(self.config)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key material of the fields `pointers` name in `value`; `None` when none of them is
/// there (or all are null): the payload has no key.
fn fields_material(
    value: &serde_json::Value,
    pointers: &[String],
) -> Result<Option<Vec<u8>>, serde_json::Error> {
    let parts: Vec<&serde_json::Value> = pointers.iter().filter_map(|p| value.pointer(p)).collect();
    if parts.is_empty() || parts.iter().all(|v| v.is_null()) {
        return Ok(None);
    }
    serde_json::to_vec(&parts).map(Some)
}

/// The record key and the payload hash of a request, or `None` when it has no key.
fn key_of(config: &IdempotencyConfig, ctx: &Context) -> Result<Option<(String, String)>, Error> {
    let payload = ctx.body();
    let material = match &config.key {
        KeySource::Payload => {
            if payload.is_empty() {
                return Ok(None);
            }
            payload.to_vec()
        }
        KeySource::Fields(pointers) => {
            let value: serde_json::Value = serde_json::from_slice(payload).map_err(|_| {
                Error::bad_request("the payload must be JSON to derive its idempotency key")
            })?;
            match fields_material(&value, pointers).map_err(Error::internal)? {
                Some(material) => material,
                None => return Ok(None),
            }
        }
        KeySource::Custom(key) => match key(ctx) {
            Some(key) => key.into_bytes(),
            None => return Ok(None),
        },
    };
    let scope = format!(
        "{}.{}",
        ctx.function_name(),
        ctx.route().unwrap_or(ctx.source().as_str())
    );
    Ok(Some((
        format!("{scope}#{}", sha256_hex(&material)),
        sha256_hex(payload),
    )))
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

struct Shared {
    store: Store,
    config: IdempotencyConfig,
    cache: Option<moka::sync::Cache<String, Arc<Remembered>>>,
}

/// What a call with a key is to do.
enum Turn {
    /// It holds the key: run, then complete or release with the token.
    Run(ClaimToken),
    /// Another call finished with this key: answer as it did.
    Answer(Record),
    /// Another call holds the key and did not finish in the time allowed to wait.
    Busy,
}

impl Shared {
    /// Claims `key`, or finds the record of the call that holds it, waiting for one in
    /// progress as long as the configuration allows.
    async fn turn(&self, key: &str, validation: &str, lock_for: Duration) -> Result<Turn, Error> {
        let claim = self
            .store
            .claim(key, validation, now(), self.config.expires_after, lock_for)
            .await?;
        Ok(match claim {
            Claim::Won(token) => Turn::Run(token),
            Claim::Completed(record) => Turn::Answer(record),
            Claim::InProgress => match self
                .store
                .wait_for(key, self.config.wait_for_in_progress)
                .await?
            {
                Some(record) => Turn::Answer(record),
                None => Turn::Busy,
            },
        })
    }

    /// Stores the completed record in place of the claim; `false` (and a warning) when the
    /// call outlived its lock and another call holds the key by now.
    async fn finish(&self, record: &Record, token: &ClaimToken) -> Result<bool, Error> {
        let stored = self.store.complete(record, token).await?;
        if !stored {
            tracing::warn!(target: "lift::idempotency", code = "idempotency_lock_lapsed", key = %record.id, "the call outlived its lock and another call claimed the key; that call's answer is the one kept");
        }
        Ok(stored)
    }

    /// Releases a failed call's key, so that a retry runs; a failure to do so is logged.
    async fn release(&self, key: &str, token: &ClaimToken) {
        if let Err(error) = self.store.release(key, token).await {
            tracing::warn!(target: "lift::idempotency", %error, "could not release a failed key");
        }
    }

    fn new(client: aws_sdk_dynamodb::Client, config: IdempotencyConfig) -> Self {
        let cache = (config.local_cache > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(config.local_cache)
                .time_to_live(config.expires_after)
                .build()
        });
        Shared {
            store: Store::new(client, &config.table),
            config,
            cache,
        }
    }
}

/// Makes handlers idempotent; see the module docs.
#[derive(Clone)]
pub struct IdempotencyLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl IdempotencyLayer {
    /// Idempotency through `client` (built once at init and shared).
    pub fn new(client: aws_sdk_dynamodb::Client, config: IdempotencyConfig) -> Self {
        IdempotencyLayer {
            shared: Arc::new(Shared::new(client, config)),
        }
    }

    /// Idempotent computations ([`Idempotent`]) on this layer's table and settings.
    pub fn function(&self) -> Idempotent {
        Idempotent::from_shared(self.shared.clone())
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Idempotency {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The idempotency service.
pub struct Idempotency<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for Idempotency<S> {
    fn clone(&self) -> Self {
        Idempotency {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Idempotency<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency").finish_non_exhaustive()
    }
}

crate::inner_accessors!(Idempotency<S>);

/// The future of [`Idempotency`] (it awaits DynamoDB, so it is boxed).
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

fn in_progress_error() -> Error {
    Error::new(
        StatusCode::CONFLICT,
        "idempotency_in_progress",
        "the same request is already being processed; retry later",
    )
}

fn key_reused_error() -> Error {
    Error::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "this idempotency key was used with a different payload",
    )
}

fn in_progress() -> BoxError {
    Box::new(in_progress_error())
}

/// Whether a record's payload hash differs from this call's, when that is checked.
fn payload_differs(shared: &Shared, record: &Record, validation: &str) -> bool {
    shared.config.validate_payload
        && record
            .validation
            .as_deref()
            .is_some_and(|v| v != validation)
}

/// A completed record in the local cache, with its response decoded once.
struct Remembered {
    record: Record,
    status: StatusCode,
    headers: http::HeaderMap,
    body: Body,
}

impl Remembered {
    fn new(record: Record) -> Result<Remembered, String> {
        let response = record.response()?;
        let (parts, body) = response.into_parts();
        Ok(Remembered {
            record,
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// The remembered answer, checked as [`answer`] checks a stored one.
    fn answer(&self, shared: &Shared, validation: &str) -> Result<Response, BoxError> {
        check_payload(shared, &self.record, validation)?;
        let mut response = Response::new(self.body.clone());
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        Ok(response)
    }
}

/// Refuses a record whose payload hash differs from this request's, when configured.
fn check_payload(shared: &Shared, record: &Record, validation: &str) -> Result<(), BoxError> {
    if payload_differs(shared, record, validation) {
        return Err(Box::new(key_reused_error()));
    }
    Ok(())
}

/// The stored answer, checked against this request's payload when configured.
fn answer(shared: &Shared, record: &Record, validation: &str) -> Result<Response, BoxError> {
    check_payload(shared, record, validation)?;
    record
        .response()
        .map_err(|e| Box::new(Error::internal(e)) as BoxError)
}

impl<S> Service<Context> for Idempotency<S>
where
    S: Service<Context, Response = Response> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, ctx: Context) -> Self::Future {
        let shared = self.shared.clone();
        let service = crate::take_ready(&mut self.inner);
        Box::pin(async move {
            let Some((key, validation)) = key_of(&shared.config, &ctx)? else {
                return service.oneshot(ctx).await.map_err(Into::into);
            };
            if let Some(remembered) = shared.cache.as_ref().and_then(|c| c.get(&key))
                && !remembered.record.expired(now())
            {
                return remembered.answer(&shared, &validation);
            }
            let lock_for = ctx.remaining().max(Duration::from_secs(1));
            let token = match shared.turn(&key, &validation, lock_for).await? {
                Turn::Run(token) => token,
                Turn::Answer(record) => return answer(&shared, &record, &validation),
                Turn::Busy => return Err(in_progress()),
            };
            let result = service.oneshot(ctx).await.map_err(Into::into);
            match &result {
                Ok(response)
                    if !response.status().is_server_error()
                        && !lift_core::stream::is_streaming(response) =>
                {
                    let record = Record::completed(
                        &key,
                        response,
                        &validation,
                        now(),
                        shared.config.expires_after,
                    )
                    .map_err(|e| Box::new(Error::internal(e)) as BoxError)?;
                    if shared.finish(&record, &token).await?
                        && let Some(cache) = &shared.cache
                        && let Ok(remembered) = Remembered::new(record)
                    {
                        cache.insert(key, Arc::new(remembered));
                    }
                }
                _ => {
                    // A failure must not be remembered, and a streamed body cannot be
                    // replayed: release the key.
                    shared.release(&key, &token).await;
                }
            }
            result
        })
    }
}

/// A response body as stored.
pub(crate) fn body_text(body: &Body) -> (String, bool) {
    use base64::Engine;
    match body {
        Body::Text(text) => (text.clone(), false),
        Body::Binary(bytes) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            true,
        ),
        _ => (String::new(), false),
    }
}
