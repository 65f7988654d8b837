//! Idempotency: a handler runs at most once per idempotency key; repeats get the first
//! answer.
//!
//! Records live in DynamoDB in the item layout of Powertools for AWS Lambda (partition key
//! `id`; `status` `INPROGRESS`/`COMPLETED`; `expiration` in epoch seconds;
//! `in_progress_expiration` in epoch milliseconds; `data`; `validation`), so one table and
//! its TTL serve Lift and Powertools functions alike. Each keeps its own records: the
//! hashes differ (Powertools hashes the JSON-serialised data, with MD5 by default), so one
//! request is never deduplicated between a Lift and a Powertools function.
//!
//! - The key is a SHA-256 of the whole payload (the HTTP body, the SQS message body, the
//!   EventBridge `detail`, ...) or of the fields named by JSON pointers, a request header
//!   ([`IdempotencyConfigBuilder::key_header`]), or any string a closure returns; it is
//!   prefixed with the function name and the route.
//! - A key belongs to whoever sent it: the hash also covers the request's tenant (when one
//!   was resolved), the caller (a verified JWT's issuer and subject, whether Lift, an HTTP
//!   API's JWT authorizer or a REST API's Cognito authorizer verified it, else a Lambda
//!   authorizer's `principalId`, else the IAM identity that signed it; on by default for a key taken from a client-chosen header,
//!   [`IdempotencyConfigBuilder::scope_by_principal`] for the rest), what
//!   [`IdempotencyConfigBuilder::scope_fn`] returns, and for records the event's identity
//!   (the SQS queue, the SNS topic, the DynamoDB stream, the EventBridge `source` and
//!   `detail-type`, and a scheduled event's id, since every run of a schedule has the same
//!   empty `detail`), for HTTP requests the path parameters of a route that has any (the
//!   same body sent to `/accounts/A/deposit` and `/accounts/B/deposit` is two keys) and the
//!   query, if any (`?to=alice` and `?to=bob`: two keys; under a key from a header, which
//!   names its request itself, the query goes into the payload hash instead, so the same
//!   key with another query is refused under payload validation). Two
//!   tenants that send the same key and body get two executions, and neither sees the
//!   other's answer.
//! - The record id keeps Powertools' shape, `{function}.{operation}#{sha256 hex}`, the
//!   operation being an HTTP request's method and route (`POST /orders`) or the record's
//!   source. The hash is the SHA-256 of the scope's parts (tenant, caller, path parameters,
//!   query: those there are), each tagged and length-prefixed, then `|` and the key
//!   material, so the records keep one shape, tenant and caller ids never appear in clear
//!   in the table, and no material sent without a scope can be made to hash like a scoped
//!   key.
//! - Optionally a second hash of the payload ([`IdempotencyConfigBuilder::validate_payload`]):
//!   the same key with a different payload is refused (422 `idempotency_key_reused`).
//! - The claim is one conditional `PutItem`: it wins if no record exists, or the record's
//!   expiry passed, or an in-progress record's lock expired (a crashed invocation does not
//!   block forever: the lock lasts the invocation's remaining time). A claim's expiry is
//!   never before its lock ends, however short [`IdempotencyConfigBuilder::expires_after`]
//!   is, so a key in progress is not taken over. Expiry is always checked in code, since
//!   DynamoDB's TTL deletes late.
//! - A completed key answers with the stored response without running the handler. A key
//!   in progress answers 409 `idempotency_in_progress`, or, when
//!   [`IdempotencyConfigBuilder::wait_for_in_progress`] allows, waits for the first call's answer.
//! - A failed handler (an error or a 5xx) deletes its record, so a retry can run. So does
//!   a streamed response ([`lift_core::stream`]), whose body cannot be stored and replayed,
//!   and so does a call cut short: its future dropped by a timeout around the layer, or a
//!   panic unwinding through it (logged at ERROR with the key, released in a task of its
//!   own, which Lambda may freeze with the environment and finish at its next invocation).
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

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use lift_core::{Body, BoxError, Context, Error, Response};
use sha2::{Digest, Sha256};
use tower::{Layer, Service, ServiceExt};

use crate::classify::{SystemClock, WallClock};
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
    Header(http::HeaderName),
    Custom(KeyFn),
}

impl KeySource {
    /// Whether the client chooses the key itself (so it must be scoped by caller).
    fn client_chosen(&self) -> bool {
        matches!(self, KeySource::Header(_))
    }
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
    by_principal: Option<bool>,
    scope: Option<KeyFn>,
    clock: Arc<dyn WallClock>,
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
                by_principal: None,
                scope: None,
                clock: Arc::new(SystemClock),
            },
        }
    }

    /// The time as the records count it, since the epoch.
    fn now(&self) -> Duration {
        self.clock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }
}

impl IdempotencyConfigBuilder {
    /// Makes the key from these fields of the JSON payload (JSON pointers, `/a/b`).
    pub fn key_fields(mut self, pointers: &[&str]) -> Self {
        self.config.key = KeySource::Fields(pointers.iter().map(|p| (*p).to_owned()).collect());
        self
    }
    /// Takes the key from a request header the client sets (e.g. `Idempotency-Key`); a
    /// request without it is not idempotent, it just runs. The key is scoped by caller
    /// unless [`IdempotencyConfigBuilder::scope_by_principal`] turns that off.
    pub fn key_header(mut self, name: &str) -> Self {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) => self.config.key = KeySource::Header(header),
            // Refused by `build`: an empty key source cannot be a header.
            Err(_) => self.config.key = KeySource::Fields(Vec::new()),
        }
        self
    }
    /// Scopes keys by the authenticated caller (a verified JWT's issuer and subject, else
    /// a Lambda authorizer's `principalId`), so that two callers' equal keys are two keys.
    ///
    /// # Default
    /// On for [`IdempotencyConfigBuilder::key_header`], off otherwise.
    pub fn scope_by_principal(mut self, on: bool) -> Self {
        self.config.by_principal = Some(on);
        self
    }
    /// Scopes keys by one more value of the request, e.g. the customer an authorizer
    /// verified (`None`: no extra scope for this request).
    pub fn scope_fn(
        mut self,
        scope: impl Fn(&Context) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.config.scope = Some(Arc::new(scope));
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
    /// How long a completed answer is kept and served (one second to 365 days).
    pub fn expires_after(mut self, duration: Duration) -> Self {
        self.config.expires_after = duration;
        self
    }
    /// Lets a repeat wait up to `duration` (at most 15 minutes) for a call in progress to
    /// finish, then answer as it did (409 if it has not finished by then).
    pub fn wait_for_in_progress(mut self, duration: Duration) -> Self {
        self.config.wait_for_in_progress = duration;
        self
    }
    /// Keeps up to `entries` completed answers in memory in front of DynamoDB.
    pub fn local_cache(mut self, entries: u64) -> Self {
        self.config.local_cache = entries;
        self
    }
    /// Reads the time records expire and locks lapse by from `clock` (tests inject one).
    /// The invocation's deadline is still read against the system's clock.
    pub fn clock(mut self, clock: impl WallClock) -> Self {
        self.config.clock = Arc::new(clock);
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
            c.expires_after >= Duration::from_secs(1)
                && c.expires_after <= Duration::from_secs(365 * 24 * 3600),
            "expires_after",
            "must be between one second and 365 days",
        )?;
        check(
            c.wait_for_in_progress <= Duration::from_secs(15 * 60),
            "wait_for_in_progress",
            "must be at most 15 minutes, Lambda's longest invocation",
        )?;
        if let KeySource::Fields(fields) = &c.key {
            check(
                !fields.is_empty() && fields.iter().all(|f| f.starts_with('/')),
                "key_fields",
                "must be JSON pointers (\"/field\") or a valid header name",
            )?;
        }
        Ok(self.config)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The caller a key belongs to, whoever verified it: a JWT's issuer and subject (verified by
/// Lift's [`crate::auth`] layer, by an HTTP API's JWT authorizer, or by a REST API's Cognito
/// authorizer: one user is one caller whichever verified the token), else a Lambda
/// authorizer's `principalId`, else the IAM identity that signed the request (an
/// `AWS_IAM` route or Function URL). A Lambda authorizer's own context fields are not
/// claims: a field it names `sub` is not taken for a subject, and an HTTP API Lambda
/// authorizer with simple responses, which returns no `principalId`, names no caller here
/// (its users name theirs with [`IdempotencyConfigBuilder::scope_fn`]).
fn principal_of(ctx: &Context) -> Option<String> {
    use lambda_http::request::RequestContext;
    if let Some(principal) = ctx.principal()
        && let Some(subject) = &principal.subject
    {
        return Some(format!(
            "{}|{subject}",
            principal.issuer.as_deref().unwrap_or_default()
        ));
    }
    let request = ctx.http();
    let authorizer = request.and_then(|http| http.request_context().authorizer());
    let claim = |name: &str| {
        let authorizer = authorizer?;
        // An HTTP API's JWT authorizer, or a REST API's Cognito authorizer (`claims`).
        match authorizer.jwt.as_ref() {
            Some(jwt) => jwt.claims.get(name).cloned(),
            None => authorizer
                .fields
                .get("claims")?
                .get(name)?
                .as_str()
                .map(str::to_owned),
        }
    };
    if let Some(subject) = claim("sub") {
        return Some(format!("{}|{subject}", claim("iss").unwrap_or_default()));
    }
    if let Some(principal) = ctx.authorizer_value("principalId") {
        return Some(principal);
    }
    // IAM: an HTTP API or Function URL names the signer in the authorizer, a REST API in
    // the request's identity.
    let signer = match request.map(|http| http.request_context()) {
        Some(RequestContext::ApiGatewayV1(c)) => c.identity.user_arn.clone(),
        _ => authorizer
            .and_then(|a| a.iam.as_ref())
            .and_then(|iam| iam.user_arn.clone().or_else(|| iam.caller_id.clone())),
    };
    signer.map(|signer| format!("iam|{signer}"))
}

/// The identity of the event a record came in: the queue, topic, stream or EventBridge
/// source and detail-type (length-prefixed: a `|` in either cannot make two pairs one), and
/// for a scheduled event also its id. `None` for HTTP requests, whose route is in the key's
/// prefix.
///
/// Every run of every schedule has the same source, detail-type and empty `detail`: keyed
/// on those alone, each run within the expiry would be answered from the first run's
/// record and never handled. A run delivered again (EventBridge delivers at least once;
/// Lambda retries a failed asynchronous invocation) keeps its id.
fn event_identity(ctx: &Context) -> Option<String> {
    #[cfg(feature = "source-sqs")]
    if let Some(message) = ctx.sqs_message() {
        return message.event_source_arn.clone();
    }
    #[cfg(feature = "source-eventbridge")]
    if let Some(event) = ctx.eventbridge_event() {
        let mut parts = vec![
            ("source", event.source.as_str()),
            ("detail-type", event.detail_type.as_str()),
        ];
        if ctx.source() == lift_core::Source::Schedule {
            parts.push(("id", event.id.as_deref().unwrap_or_default()));
        }
        return length_prefixed(parts.into_iter());
    }
    #[cfg(feature = "source-sns")]
    if let Some(record) = ctx.sns_record() {
        return Some(record.sns.topic_arn.clone());
    }
    #[cfg(feature = "source-dynamodb")]
    if let Some(record) = ctx.dynamodb_record() {
        return record.event_source_arn.clone();
    }
    let _ = ctx;
    None
}

/// The parts of a key's scope, each tagged: the tenant, the caller, the configured scope
/// and the event's identity, those that apply.
fn scope_parts(config: &IdempotencyConfig, ctx: &Context) -> Vec<(u8, String)> {
    let mut parts = Vec::new();
    if let Some(tenant) = ctx.tenant() {
        parts.push((b't', tenant.to_owned()));
    }
    let by_principal = config
        .by_principal
        .unwrap_or_else(|| config.key.client_chosen());
    if by_principal && let Some(principal) = principal_of(ctx) {
        parts.push((b'p', principal));
    }
    if let Some(scope) = config.scope.as_ref().and_then(|scope| scope(ctx)) {
        parts.push((b's', scope));
    }
    if let Some(identity) = event_identity(ctx) {
        parts.push((b'e', identity));
    }
    if let Some(resource) = path_params(ctx) {
        parts.push((b'r', resource));
    }
    // A key the client chose names its request itself: the same key with another query
    // is that request changed (refused under payload validation), not another request.
    if !config.key.client_chosen()
        && let Some(query) = query_params(ctx)
    {
        parts.push((b'q', query));
    }
    parts
}

/// An HTTP request's query (`to=alice`, length-prefixed), by name and in the order given
/// within a name; `None` without one: `POST /transfers?to=alice` and `?to=bob` with one
/// body are two operations.
fn query_params(ctx: &Context) -> Option<String> {
    let pairs = ctx.http()?.query_pairs();
    if pairs.is_empty() {
        return None;
    }
    let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    length_prefixed(
        sorted
            .into_iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    )
}

/// The path parameters the request's route matched (`id=A`, length-prefixed), `None` for a
/// route without any: `/accounts/{id}/deposit` is one route for every account, and the
/// same body sent for two accounts is two operations.
fn path_params(ctx: &Context) -> Option<String> {
    length_prefixed(ctx.path_params())
}

/// `name=value` pairs as one scope part, each name and value prefixed with its length (so
/// `("ab", "c")` and `("a", "bc")` differ); `None` for no pairs.
fn length_prefixed<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Option<String> {
    let mut pairs = pairs.peekable();
    pairs.peek()?;
    let mut out = String::new();
    for (name, value) in pairs {
        for part in [name, value] {
            let _ = write!(out, "{}:{part}", part.len());
        }
    }
    Some(out)
}

/// The hash of a key: SHA-256 of the tagged, length-prefixed scope parts, then `|`, then
/// the material. Without any scope part the input is `|` and the material: its first byte is
/// never a part's tag, so no material sent without a scope (an anonymous caller's body) can
/// hash to a scoped key (a tenant's).
fn scoped_hash(parts: &[(u8, String)], material: &[u8]) -> String {
    let mut hasher = Sha256::new();
    for (tag, value) in parts {
        hasher.update([*tag]);
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value.as_bytes());
    }
    hasher.update(b"|");
    hasher.update(material);
    hex(&hasher.finalize())
}

/// The key material of the fields `pointers` name in `value`, a missing one as null (so
/// that `{"orderId":"7"}` and `{"cartId":"7"}` differ); `None` when none of them is there
/// (or all are null): the payload has no key.
fn fields_material(
    value: &serde_json::Value,
    pointers: &[String],
) -> Result<Option<Vec<u8>>, serde_json::Error> {
    let parts: Vec<&serde_json::Value> = pointers
        .iter()
        .map(|p| value.pointer(p).unwrap_or(&serde_json::Value::Null))
        .collect();
    if parts.iter().all(|v| v.is_null()) {
        return Ok(None);
    }
    serde_json::to_vec(&parts).map(Some)
}

/// The bytes a payload key is derived from: the body, or for a DynamoDB stream record
/// (which has none) its change as JSON: keys, images and sequence number, the same on every
/// delivery of the record and another for any other record.
fn payload_of(ctx: &Context) -> Result<std::borrow::Cow<'_, [u8]>, Error> {
    #[cfg(feature = "source-dynamodb")]
    if let Some(record) = ctx.dynamodb_record() {
        // Through a `Value`, whose maps are sorted: the record's own maps (keys, images) are
        // hash maps, written in another order by every copy of the record.
        return serde_json::to_value(&record.change)
            .and_then(|change| serde_json::to_vec(&change))
            .map(std::borrow::Cow::Owned)
            .map_err(Error::internal);
    }
    Ok(std::borrow::Cow::Borrowed(ctx.body()))
}

/// A DynamoDB JSON attribute value (`{"S": "7"}`) as plain JSON (`"7"`; a number as a JSON
/// number, as in a JSON payload, unless it does not fit one; binary as its base64 text).
#[cfg(feature = "source-dynamodb")]
fn untyped(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let Value::Object(map) = value else {
        return value;
    };
    if map.len() != 1 {
        return Value::Object(map);
    }
    let Some((tag, inner)) = map.into_iter().next() else {
        return Value::Null;
    };
    match (tag.as_str(), inner) {
        ("NULL", _) => Value::Null,
        // A number is one only when it reads back as written: a larger or longer one would
        // round to an f64, and two ids would key as one.
        ("N", Value::String(number)) => match serde_json::from_str::<serde_json::Number>(&number) {
            Ok(parsed) if parsed.to_string() == number => Value::Number(parsed),
            _ => Value::String(number),
        },
        ("M", Value::Object(fields)) => Value::Object(
            fields
                .into_iter()
                .map(|(name, value)| (name, untyped(value)))
                .collect(),
        ),
        ("L", Value::Array(items)) => Value::Array(items.into_iter().map(untyped).collect()),
        (_, inner) => inner,
    }
}

/// The JSON value `key_fields` are read from: the payload, or a stream record's image (the
/// new one, or the old one of a removal) as plain JSON.
#[cfg_attr(not(feature = "source-dynamodb"), allow(unused_variables))]
fn fields_of(ctx: &Context, payload: &[u8]) -> Result<serde_json::Value, Error> {
    #[cfg(feature = "source-dynamodb")]
    if let Some(record) = ctx.dynamodb_record() {
        let change = &record.change;
        let image = if change.new_image.is_empty() {
            &change.old_image
        } else {
            &change.new_image
        };
        // DynamoDB's JSON (`{"id": {"S": "7"}}`, binary as base64), unwrapped to plain JSON:
        // any attribute reads, a binary one too.
        let typed = serde_json::to_value(image).map_err(Error::internal)?;
        return Ok(match typed {
            serde_json::Value::Object(attributes) => serde_json::Value::Object(
                attributes
                    .into_iter()
                    .map(|(name, value)| (name, untyped(value)))
                    .collect(),
            ),
            other => other,
        });
    }
    serde_json::from_slice(payload)
        .map_err(|_| Error::bad_request("the payload must be JSON to derive its idempotency key"))
}

/// The record key and the payload hash of a request, or `None` when it has no key.
fn key_of(config: &IdempotencyConfig, ctx: &Context) -> Result<Option<(String, String)>, Error> {
    let payload = payload_of(ctx)?;
    let payload = payload.as_ref();
    let material = match &config.key {
        KeySource::Payload => {
            if payload.is_empty() {
                return Ok(None);
            }
            payload.to_vec()
        }
        KeySource::Fields(pointers) => {
            let value = fields_of(ctx, payload)?;
            match fields_material(&value, pointers).map_err(Error::internal)? {
                Some(material) => material,
                None => return Ok(None),
            }
        }
        // The header's bytes as sent: a value that is not visible ASCII is a key still.
        KeySource::Header(name) => match ctx
            .http()
            .and_then(|http| http.headers().get(name.as_str()))
            .map(http::HeaderValue::as_bytes)
            .or_else(|| ctx.header(name.as_str()).map(str::as_bytes))
        {
            Some(value) if !value.is_empty() => value.to_vec(),
            _ => return Ok(None),
        },
        KeySource::Custom(key) => match key(ctx) {
            Some(key) => key.into_bytes(),
            None => return Ok(None),
        },
    };
    // An HTTP request's operation is its method and route: POST and DELETE of one path
    // with the same body are two operations, never one key.
    let prefix = match (ctx.http(), ctx.route()) {
        (Some(http), Some(route)) => format!("{}.{} {route}", ctx.function_name(), http.method()),
        (_, route) => format!(
            "{}.{}",
            ctx.function_name(),
            route.unwrap_or(ctx.source().as_str())
        ),
    };
    let hash = scoped_hash(&scope_parts(config, ctx), &material);
    // The payload's hash, with the query under a client-chosen key (out of its scope).
    let validation = match query_params(ctx).filter(|_| config.key.client_chosen()) {
        Some(query) => scoped_hash(&[(b'q', query)], payload),
        None => sha256_hex(payload),
    };
    Ok(Some((format!("{prefix}#{hash}"), validation)))
}

/// How long a claim holds its key: the invocation's remaining time (at least a second), or
/// Lambda's longest timeout, 15 minutes, when the invocation has no deadline.
fn lock_for(ctx: &Context) -> Duration {
    ctx.remaining()
        .unwrap_or(Duration::from_secs(15 * 60))
        .max(Duration::from_secs(1))
}

pub(crate) struct Shared {
    store: Store,
    config: IdempotencyConfig,
    cache: Option<moka::sync::Cache<String, Arc<Remembered>>>,
}

/// What a call with a key is to do.
enum Turn {
    /// It holds the key: run, then complete or release it through the guard, armed until
    /// then.
    Run(Held),
    /// Another call finished with this key: answer as it did.
    Answer(Record),
    /// Another call holds the key and did not finish in the time allowed to wait.
    Busy,
}

impl Shared {
    /// Claims `key`, or finds the record of the call that holds it, waiting for one in
    /// progress as long as the configuration allows.
    ///
    /// The guard is armed before the claim is sent: a call dropped while its claim is in
    /// flight (which may have landed) releases it, conditional on its token, rather than
    /// leaving the key locked with nothing logged.
    async fn turn(
        self: &Arc<Self>,
        key: &str,
        validation: &str,
        lock_for: Duration,
    ) -> Result<Turn, Error> {
        let mut held = Held::new(self, key);
        let claim = self
            .store
            .claim(
                key,
                validation,
                self.config.now(),
                self.config.expires_after,
                lock_for,
                &held.token,
            )
            .await;
        let claim = match claim {
            Ok(claim) => claim,
            Err(error) => {
                held.disarm();
                return Err(error.into());
            }
        };
        if !matches!(claim, Claim::Won) {
            held.disarm();
        }
        Ok(match claim {
            Claim::Won => Turn::Run(held),
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

    /// Stores the completed record in place of the claim, retrying a store error that may
    /// pass; `false` when the call outlived its lock and another call holds the key by now
    /// (a warning), or when the record could not be stored (an ERROR: the key stays locked
    /// until its lock lapses, then a repeat runs again). The call's answer goes out either
    /// way: a call that ran is never turned into a failure by its bookkeeping.
    async fn finish(
        &self,
        record: &Record,
        token: &ClaimToken,
        deadline: Option<SystemTime>,
    ) -> bool {
        let key = record.id.as_str();
        match retried(key, "storing a call's answer", deadline, || {
            self.store.complete(record, token)
        })
        .await
        {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(target: "lift::idempotency", code = "idempotency_lock_lapsed", %key, "the call outlived its lock and another call claimed the key; that call's answer is the one kept");
                false
            }
            Err((error, attempts)) => {
                tracing::error!(target: "lift::idempotency", code = "idempotency_complete_failed", %key, attempts, %error, "could not store a call's answer: the key stays locked until its lock lapses, and a repeat then runs again");
                false
            }
        }
    }

    /// Releases a failed call's key, so that a retry runs. A store error that may pass is
    /// retried (see [`retried`]); a release that still fails is logged at ERROR with the
    /// key, which stays locked until its lock lapses.
    async fn release(&self, key: &str, token: &ClaimToken, deadline: Option<SystemTime>) {
        let released = retried(key, "releasing a failed call's key", deadline, || {
            self.store.release(key, token)
        })
        .await;
        if let Err((error, attempts)) = released {
            tracing::error!(target: "lift::idempotency", code = "idempotency_release_failed", %key, attempts, %error, "could not release a failed call's key: it stays locked until its lock lapses");
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
///
/// Add it after (inside) the layers that resolve the tenant and the caller
/// ([`crate::tenancy::TenantLayer`], [`crate::auth`]'s JWT layer): the key is made when the
/// request reaches this layer, and a tenant resolved further in is not in it. With
/// `App::layer`, the layer added last is the outermost, so add this one first.
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

/// Runs a store write, retrying an error that may pass with backoff (25 ms doubling, at most
/// 800 ms) and jitter while the invocation has time left (a margin before its deadline; five
/// attempts without one); the last error and the attempts made when it never succeeds. With
/// a deadline, each attempt (the SDK's own retries included) also ends by that margin, so
/// that a write that hangs or backs off inside the SDK is still given up, and logged, before
/// Lambda ends the invocation.
async fn retried<T, F, Fut>(
    key: &str,
    what: &'static str,
    deadline: Option<SystemTime>,
    mut op: F,
) -> Result<T, (crate::dynamo::DynamoError, u32)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::dynamo::DynamoError>>,
{
    const MARGIN: Duration = Duration::from_millis(100);
    const ATTEMPTS_WITHOUT_DEADLINE: u32 = 5;
    // The least an attempt is given, however close the deadline.
    const MIN_ATTEMPT: Duration = Duration::from_millis(20);
    // The deadline on the runtime's monotonic clock, read once.
    let end = deadline.map(|deadline| {
        tokio::time::Instant::now()
            + deadline
                .duration_since(SystemTime::now())
                .unwrap_or_default()
    });
    let mut pause = Duration::from_millis(25);
    let mut attempt = 1;
    loop {
        let attempt_result = match end {
            Some(end) => {
                let limit = end
                    .saturating_duration_since(tokio::time::Instant::now())
                    .saturating_sub(MARGIN)
                    .max(MIN_ATTEMPT);
                match tokio::time::timeout(limit, op()).await {
                    Ok(result) => result,
                    Err(_) => Err(crate::dynamo::DynamoError::Timeout {
                        operation: what,
                        after: limit,
                    }),
                }
            }
            None => op().await,
        };
        let error = match attempt_result {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let wait = pause.mul_f64(0.5 + fastrand::f64());
        let has_time = match end {
            Some(end) => tokio::time::Instant::now() + wait + MARGIN < end,
            None => attempt < ATTEMPTS_WITHOUT_DEADLINE,
        };
        if !error.is_retryable() || !has_time {
            return Err((error, attempt));
        }
        tracing::warn!(target: "lift::idempotency", %key, attempt, %error, "{what} failed; retrying");
        tokio::time::sleep(wait).await;
        pause = (pause * 2).min(Duration::from_millis(800));
        attempt += 1;
    }
}

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
                && !remembered.record.expired(shared.config.now())
            {
                return remembered.answer(&shared, &validation);
            }
            let lock_for = lock_for(&ctx);
            let held = match shared.turn(&key, &validation, lock_for).await? {
                Turn::Run(held) => held,
                Turn::Answer(record) => return answer(&shared, &record, &validation),
                Turn::Busy => return Err(in_progress()),
            };
            let deadline = ctx.deadline();
            // `held` (armed since the claim was sent) releases the key however this future
            // ends before it completes or releases it: dropped by a timeout around it, or
            // unwound by a panic in the handler.
            let result = service.oneshot(ctx).await.map_err(Into::into);
            match &result {
                Ok(response)
                    if !response.status().is_server_error()
                        && !lift_core::stream::is_streaming(response) =>
                {
                    let record = match Record::completed(
                        &key,
                        response,
                        &validation,
                        shared.config.now(),
                        shared.config.expires_after,
                    ) {
                        Ok(record) => record,
                        Err(error) => {
                            // An answer that cannot be stored: nothing to remember, so a
                            // retry is to run.
                            held.release(deadline).await;
                            return Err(Box::new(Error::internal(error)));
                        }
                    };
                    if held.finish(&record, deadline).await
                        && let Some(cache) = &shared.cache
                        && let Ok(remembered) = Remembered::new(record)
                    {
                        cache.insert(key, Arc::new(remembered));
                    }
                }
                _ => {
                    // A failure must not be remembered, and a streamed body cannot be
                    // replayed: release the key.
                    held.release(deadline).await;
                }
            }
            result
        })
    }
}

/// A key this call claimed and has neither completed nor released. Dropped armed (the call's
/// future was dropped by a timeout around it, or a panic unwound through it), it logs the key
/// at ERROR and releases it in a task of its own, so that a retry runs rather than finding
/// the key in progress until its lock lapses (the invocation's remaining time).
pub(crate) struct Held {
    shared: Arc<Shared>,
    key: String,
    token: ClaimToken,
    /// Cleared once the call has completed or released the key itself.
    armed: bool,
}

impl Held {
    /// How long a release in a task of its own may take: not the invocation's deadline,
    /// which a timeout around the call may have nearly reached, and which a freeze of the
    /// environment leaves behind.
    const RELEASE_TIME: Duration = Duration::from_secs(5);

    /// Armed for `key`, with a token no other claim has, before the claim is sent.
    fn new(shared: &Arc<Shared>, key: &str) -> Self {
        Held {
            shared: shared.clone(),
            key: key.to_owned(),
            token: ClaimToken::fresh(),
            armed: true,
        }
    }

    /// The claim was not this call's: nothing to release.
    fn disarm(&mut self) {
        self.armed = false;
    }

    /// Releases the key (see [`Shared::release`]). Armed until the release has run: a
    /// future dropped meanwhile still releases it, in a task of its own.
    pub(crate) async fn release(mut self, deadline: Option<SystemTime>) {
        self.shared.release(&self.key, &self.token, deadline).await;
        self.armed = false;
    }

    /// Stores the completed record in place of the claim (see [`Shared::finish`]). Armed
    /// until it has run: a future dropped meanwhile releases the key, which changes nothing
    /// once the record is stored (a release is conditional on the claim in progress).
    pub(crate) async fn finish(mut self, record: &Record, deadline: Option<SystemTime>) -> bool {
        let stored = self.shared.finish(record, &self.token, deadline).await;
        self.armed = false;
        stored
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let shared = self.shared.clone();
        let key = std::mem::take(&mut self.key);
        tracing::error!(target: "lift::idempotency", code = "idempotency_call_abandoned", %key, "the call ended before it finished (a timeout around it or a panic): releasing its key");
        let token = self.token.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let deadline = SystemTime::now() + Held::RELEASE_TIME;
                    shared.release(&key, &token, Some(deadline)).await;
                });
            }
            Err(_) => {
                tracing::error!(target: "lift::idempotency", code = "idempotency_release_failed", %key, "no runtime to release the key on: it stays locked until its lock lapses");
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Principal, VerifiedBy};
    use crate::tenancy::{TenantConfig, TenantLayer, TenantSource};
    use lift_core::testing::{TestApp, events};
    use lift_core::{App, Json};
    use serde_json::{Value, json};

    /// An App whose handler answers the idempotency key `config` derives for its request;
    /// the tenant comes from `x-tenant-id`, the JWT subject (if any) from `x-test-sub`.
    fn keys(config: IdempotencyConfig) -> TestApp {
        keys_and_records(config).0
    }

    /// [`keys`], and the keys the SQS and DynamoDB stream records got, in order.
    fn keys_and_records(
        config: IdempotencyConfig,
    ) -> (TestApp, Arc<std::sync::Mutex<Vec<String>>>) {
        let record_keys = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = record_keys.clone();
        let config = Arc::new(config);
        let on_http = config.clone();
        let on_delete = config.clone();
        let on_deposit = config.clone();
        let key = move |config: Arc<IdempotencyConfig>, ctx: Context| async move {
            let (key, validation) = key_of(&config, &ctx)?.unzip();
            Ok::<_, Error>(Json(json!({ "key": key, "validation": validation })))
        };
        let principal = tower::layer::layer_fn(|inner: lift_core::BoxService| {
            tower::util::MapRequest::new(inner, |mut ctx: Context| {
                if let Some(subject) = ctx.header("x-test-sub").map(str::to_owned) {
                    let claims = serde_json::Map::from_iter([
                        ("sub".to_owned(), Value::from(subject)),
                        ("iss".to_owned(), Value::from("issuer")),
                    ]);
                    ctx.set_principal(std::sync::Arc::new(Principal::from_claims(
                        claims,
                        VerifiedBy::Lift,
                    )));
                }
                ctx
            })
        });
        let tenants = TenantConfig::builder()
            .source(TenantSource::Header("x-tenant-id".into()))
            .trust_headers(true)
            .required(false)
            .build()
            .expect("tenancy");
        let on_event = config.clone();
        let on_stream = config.clone();
        let stream_seen = seen.clone();
        let on_sqs = config;
        let app = TestApp::new(
            App::new()
                .post("/orders", move |ctx| key(on_http.clone(), ctx))
                .delete("/orders", move |ctx| key(on_delete.clone(), ctx))
                .post("/accounts/{id}/deposit", move |ctx| {
                    key(on_deposit.clone(), ctx)
                })
                .event_fallback(move |ctx: Context| {
                    let config = on_event.clone();
                    async move {
                        Ok::<_, Error>(Json(json!({ "key": key_of(&config, &ctx)?.map(|k| k.0) })))
                    }
                })
                .sqs(move |ctx: Context| {
                    let (config, seen) = (on_sqs.clone(), seen.clone());
                    async move {
                        let key = key_of(&config, &ctx)?.map(|k| k.0).unwrap_or_default();
                        seen.lock().expect("keys").push(key);
                        Ok::<_, Error>(())
                    }
                })
                .dynamodb(move |ctx: Context| {
                    let (config, seen) = (on_stream.clone(), stream_seen.clone());
                    async move {
                        let key = key_of(&config, &ctx)?.map(|k| k.0).unwrap_or_default();
                        seen.lock().expect("keys").push(key);
                        Ok::<_, Error>(())
                    }
                })
                .layer(principal)
                .layer(TenantLayer::new(tenants)),
        )
        .expect("app");
        (app, record_keys)
    }

    async fn http_key(app: &TestApp, headers: &[(&str, &str)], body: &str) -> Option<String> {
        http_key_at(app, "/orders", headers, body).await
    }

    async fn http_key_at(
        app: &TestApp,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Option<String> {
        let mut event = events::http("POST", path).body(body);
        for (name, value) in headers {
            event = event.header(name, value);
        }
        let response = app.http(event.v2()).await.expect("response");
        assert_eq!(response.status, 200, "{}", response.text());
        let body: Value = response.json().expect("json");
        body["key"].as_str().map(str::to_owned)
    }

    /// The operation is the method and the route: a DELETE and a POST of one path with
    /// the same key and body are two operations.
    #[tokio::test]
    async fn two_methods_of_one_route_are_two_keys() {
        let app = keys(header_config());
        let post = http_key(&app, &[("Idempotency-Key", "k1")], "{}")
            .await
            .expect("key");
        let event = events::http("DELETE", "/orders")
            .body("{}")
            .header("Idempotency-Key", "k1")
            .v2();
        let response = app.http(event).await.expect("response");
        let body: Value = response.json().expect("json");
        let delete = body["key"].as_str().expect("key").to_owned();
        assert_ne!(post, delete);
        assert!(post.starts_with("lift-test.POST /orders#"), "{post}");
        assert!(delete.starts_with("lift-test.DELETE /orders#"), "{delete}");
    }

    fn header_config() -> IdempotencyConfig {
        IdempotencyConfig::builder("t")
            .key_header("Idempotency-Key")
            .build()
            .expect("config")
    }

    #[tokio::test]
    async fn the_same_body_for_two_resources_of_one_route_is_two_keys() {
        let app = keys(IdempotencyConfig::builder("t").build().expect("config"));
        let body = r#"{"amount":5}"#;
        let a = http_key_at(&app, "/accounts/A/deposit", &[], body).await;
        let b = http_key_at(&app, "/accounts/B/deposit", &[], body).await;
        let a_again = http_key_at(&app, "/accounts/A/deposit", &[], body).await;
        assert!(a.is_some());
        assert_ne!(a, b);
        assert_eq!(a, a_again);
    }

    /// A header key that is not visible ASCII is a key all the same (it was read as no
    /// header, so the call just ran, every time).
    #[tokio::test]
    async fn a_header_key_that_is_not_ascii_is_a_key() {
        let app = keys(header_config());
        let key = |value: &'static str| {
            let app = &app;
            async move {
                let mut event = events::http("POST", "/orders").body("{}").v2();
                event["headers"]["idempotency-key"] = json!(value);
                let response = app.http(event).await.expect("response");
                let body: Value = response.json().expect("json");
                body["key"].as_str().map(str::to_owned)
            }
        };
        let first = key("ключ-1").await;
        assert!(first.is_some(), "no key");
        assert_eq!(first, key("ключ-1").await);
        assert_ne!(first, key("ключ-2").await);
    }

    /// The query names the operation as much as the path does: the same body sent with
    /// `?to=alice` and `?to=bob` is two operations (Bob got Alice's stored answer). Under a
    /// key the client chose, it is that key's request changed: one key, another payload
    /// hash (a 422 under validation).
    #[tokio::test]
    async fn the_same_body_with_another_query_is_another_key() {
        for (config, field) in [
            (
                IdempotencyConfig::builder("t").build().expect("config"),
                "key",
            ),
            (header_config(), "validation"),
        ] {
            let app = keys(config);
            let key = |to: &'static str, repeat: Option<&'static str>| {
                let app = &app;
                async move {
                    let mut event = events::http("POST", "/orders")
                        .query("to", to)
                        .header("idempotency-key", "k-1")
                        .body(r#"{"amount":5}"#);
                    if let Some(repeat) = repeat {
                        event = event.query("to", repeat);
                    }
                    let response = app.http(event.v2()).await.expect("response");
                    let body: Value = response.json().expect("json");
                    body[field].as_str().map(str::to_owned)
                }
            };
            let alice = key("alice", None).await;
            assert!(alice.is_some());
            assert_ne!(alice, key("bob", None).await);
            assert_eq!(alice, key("alice", None).await);
            assert_ne!(
                key("alice", Some("bob")).await,
                key("bob", Some("alice")).await
            );
        }
        // Under the client's key, one key whatever the query.
        let app = keys(header_config());
        let at = |to: &'static str| {
            let event = events::http("POST", "/orders")
                .query("to", to)
                .header("idempotency-key", "k-1")
                .body(r#"{"amount":5}"#)
                .v2();
            let app = &app;
            async move {
                let body: Value = app
                    .http(event)
                    .await
                    .expect("response")
                    .json()
                    .expect("json");
                body["key"].as_str().map(str::to_owned)
            }
        };
        assert_eq!(at("alice").await, at("bob").await);
    }

    /// A stream image's attributes read as a JSON payload's would: a number keys as the
    /// same number (so `/n` of `{"N": "7"}` and of `{"n": 7}` are one key), a string as the
    /// string, maps and lists through.
    #[cfg(feature = "source-dynamodb")]
    #[test]
    fn stream_attributes_read_as_plain_json() {
        assert_eq!(untyped(json!({"N": "7"})), json!(7));
        // Past what a JSON number holds exactly: the text, so that two ids stay two keys.
        assert_eq!(
            untyped(json!({"N": "20000000000000000001"})),
            json!("20000000000000000001")
        );
        assert_ne!(
            untyped(json!({"N": "20000000000000000001"})),
            untyped(json!({"N": "20000000000000000002"}))
        );
        assert_eq!(untyped(json!({"N": "1.5"})), json!(1.5));
        assert_eq!(untyped(json!({"S": "7"})), json!("7"));
        assert_eq!(untyped(json!({"B": "AAE="})), json!("AAE="));
        assert_eq!(untyped(json!({"NULL": true})), Value::Null);
        assert_eq!(
            untyped(json!({"M": {"k": {"L": [{"N": "1"}, {"BOOL": true}]}}})),
            json!({"k": [1, true]})
        );
        let pointers = ["/n".to_owned()];
        assert_eq!(
            fields_material(&json!({"n": untyped(json!({"N": "7"}))}), &pointers).expect("json"),
            fields_material(&json!({"n": 7}), &pointers).expect("json")
        );
    }

    #[test]
    fn a_missing_key_field_is_not_another_field() {
        let pointers = ["/orderId".to_owned(), "/cartId".to_owned()];
        let order = fields_material(&json!({"orderId": "7"}), &pointers).expect("json");
        let cart = fields_material(&json!({"cartId": "7"}), &pointers).expect("json");
        assert!(order.is_some());
        assert_ne!(order, cart);
        assert_eq!(
            fields_material(&json!({"other": 1}), &pointers).expect("json"),
            None,
            "no field at all: no key"
        );
    }

    /// A header key is the caller's whoever verified the caller: behind an HTTP API's JWT
    /// authorizer, a REST API's Cognito authorizer or IAM, two callers sending one key and
    /// body are two keys, and one caller sending them again is one. (Only Lift's own JWT
    /// layer and a `principalId` counted: every caller behind these shared one key.)
    #[tokio::test]
    async fn callers_verified_by_api_gateway_do_not_share_a_header_key() {
        let app = keys(header_config());
        let key = |version: &'static str, authorizer: Value| {
            let app = &app;
            async move {
                let request = events::http("POST", "/orders")
                    .header("idempotency-key", "k1")
                    .body("{}");
                let mut event = if version == "v1" {
                    request.v1()
                } else {
                    request.v2()
                };
                event["requestContext"]["authorizer"] = authorizer;
                let response = app.http(event).await.expect("response");
                assert_eq!(response.status, 200, "{}", response.text());
                response.json::<Value>().expect("json")["key"].clone()
            }
        };
        let jwt = |sub: &str| json!({"jwt": {"claims": {"iss": "https://issuer", "sub": sub}, "scopes": null}});
        let cognito = |sub: &str| json!({"claims": {"iss": "https://issuer", "sub": sub}});
        let iam = |arn: &str| json!({"iam": {"userArn": arn, "accountId": "123456789012"}});
        for (version, alice, bob) in [
            ("v2", jwt("alice"), jwt("bob")),
            (
                "v1",
                json!({"principalId": "alice", "sub": "tier-1"}),
                json!({"principalId": "bob", "sub": "tier-1"}),
            ),
            ("v1", cognito("alice"), cognito("bob")),
            (
                "v2",
                iam("arn:aws:iam::123456789012:user/alice"),
                iam("arn:aws:iam::123456789012:user/bob"),
            ),
        ] {
            let first = key(version, alice.clone()).await;
            assert!(first.is_string(), "{alice}");
            assert_eq!(first, key(version, alice.clone()).await, "{alice}");
            assert_ne!(first, key(version, bob).await, "{alice}");
        }
        // A REST API's IAM caller is named in the request's identity.
        let rest_iam = |arn: &'static str| {
            let app = &app;
            async move {
                let mut event = events::http("POST", "/orders")
                    .header("idempotency-key", "k1")
                    .body("{}")
                    .v1();
                event["requestContext"]["identity"]["userArn"] = json!(arn);
                let response = app.http(event).await.expect("response");
                response.json::<Value>().expect("json")["key"].clone()
            }
        };
        let alice = rest_iam("arn:aws:iam::123456789012:user/alice").await;
        assert!(alice.is_string());
        assert_eq!(
            alice,
            rest_iam("arn:aws:iam::123456789012:user/alice").await
        );
        assert_ne!(alice, rest_iam("arn:aws:iam::123456789012:user/bob").await);
        // One user is one caller whether API Gateway or Lift verified the token.
        let by_lift = http_key(
            &app,
            &[("idempotency-key", "k1"), ("x-test-sub", "alice")],
            "{}",
        )
        .await;
        let by_gateway = key(
            "v2",
            json!({"jwt": {"claims": {"iss": "issuer", "sub": "alice"}, "scopes": null}}),
        )
        .await;
        assert_eq!(by_lift.as_deref(), by_gateway.as_str());
    }

    /// A caller without a tenant controls the whole of its material: sent as the body, the
    /// bytes a tenant's key is hashed from (its tagged, length-prefixed tenant, `|`, the
    /// tenant's body) must not land on the tenant's record.
    #[tokio::test]
    async fn a_body_sent_without_a_tenant_cannot_forge_a_tenants_key() {
        let app = keys(IdempotencyConfig::builder("t").build().expect("config"));
        let body = r#"{"amount":5}"#;
        let tenant = http_key(&app, &[("x-tenant-id", "t1")], body).await;
        let forged = format!("t{}t1|{body}", "\0".repeat(7) + "\u{2}");
        let anonymous = http_key(&app, &[], &forged).await;
        assert!(tenant.is_some() && anonymous.is_some());
        assert_ne!(tenant, anonymous);
    }

    #[tokio::test]
    async fn the_same_key_and_body_under_two_tenants_are_two_keys() {
        let app = keys(header_config());
        let t1 = http_key(
            &app,
            &[("idempotency-key", "k"), ("x-tenant-id", "t1")],
            "{}",
        )
        .await;
        let t2 = http_key(
            &app,
            &[("idempotency-key", "k"), ("x-tenant-id", "t2")],
            "{}",
        )
        .await;
        let t1_again = http_key(
            &app,
            &[("idempotency-key", "k"), ("x-tenant-id", "t1")],
            "{}",
        )
        .await;
        assert!(t1.is_some());
        assert_ne!(t1, t2);
        assert_eq!(t1, t1_again);
    }

    #[tokio::test]
    async fn a_client_chosen_key_is_scoped_by_caller_unless_turned_off() {
        let app = keys(header_config());
        let alice = http_key(
            &app,
            &[("idempotency-key", "k"), ("x-test-sub", "alice")],
            "{}",
        )
        .await;
        let bob = http_key(
            &app,
            &[("idempotency-key", "k"), ("x-test-sub", "bob")],
            "{}",
        )
        .await;
        assert_ne!(alice, bob);

        let shared = keys(
            IdempotencyConfig::builder("t")
                .key_header("Idempotency-Key")
                .scope_by_principal(false)
                .build()
                .expect("config"),
        );
        let alice = http_key(
            &shared,
            &[("idempotency-key", "k"), ("x-test-sub", "alice")],
            "{}",
        )
        .await;
        let bob = http_key(
            &shared,
            &[("idempotency-key", "k"), ("x-test-sub", "bob")],
            "{}",
        )
        .await;
        assert_eq!(alice, bob);

        // A payload key is not client-chosen: not scoped by caller unless asked.
        let payload = keys(IdempotencyConfig::builder("t").build().expect("config"));
        let alice = http_key(&payload, &[("x-test-sub", "alice")], "{\"a\":1}").await;
        let bob = http_key(&payload, &[("x-test-sub", "bob")], "{\"a\":1}").await;
        assert_eq!(alice, bob);
    }

    /// The record id of an unscoped key, against a SHA-256 computed elsewhere: a release
    /// that changes ids loses the records stored before it (a repeat within their expiry
    /// runs again), so no change to them goes unnoticed.
    #[tokio::test]
    async fn an_unscoped_key_is_the_sha256_of_a_bar_and_its_material() {
        let app = keys(header_config());
        let key = http_key(&app, &[("idempotency-key", "k-1")], "{}").await;
        // SHA-256 of `|k-1`.
        let expected = format!(
            "{}.POST /orders#117af7f341d43b6291c21e5339866d5bd444158ce8a0d9a7f7f883755f9cbdf3",
            test_function_name(&app).await,
        );
        assert_eq!(key.as_deref(), Some(expected.as_str()));
        // No header: not idempotent at all.
        assert_eq!(http_key(&app, &[], "{}").await, None);
    }

    /// The function name the testing kit gives a Context.
    async fn test_function_name(app: &TestApp) -> String {
        let _ = app;
        lift_core::testing::lambda_context("r")
            .env_config
            .function_name
            .clone()
    }

    #[tokio::test]
    async fn records_are_scoped_by_the_event_they_came_in() {
        let (app, record_keys) =
            keys_and_records(IdempotencyConfig::builder("t").build().expect("config"));
        let detail = json!({"orderId": "o-1"});
        let a = app
            .invoke(&events::eventbridge(
                "shop.orders",
                "OrderPlaced",
                detail.clone(),
            ))
            .await
            .expect("a");
        let b = app
            .invoke(&events::eventbridge(
                "shop.orders",
                "OrderCancelled",
                detail.clone(),
            ))
            .await
            .expect("b");
        let a_again = app
            .invoke(&events::eventbridge("shop.orders", "OrderPlaced", detail))
            .await
            .expect("a again");
        assert!(a["key"].is_string());
        assert_ne!(a["key"], b["key"]);
        assert_eq!(a["key"], a_again["key"]);

        // The same body twice from one queue and once from another: two keys.
        let mut batch = events::sqs(["same body", "same body", "same body"]);
        batch["Records"][2]["eventSourceARN"] =
            json!("arn:aws:sqs:us-east-1:000000000000:other-queue");
        let answer = app.invoke(&batch).await.expect("batch");
        assert!(lift_core::testing::batch_failures(&answer).is_empty());
        let seen = record_keys.lock().expect("keys").clone();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0], seen[1]);
        assert_ne!(seen[0], seen[2]);
    }

    /// A store write that never answers (a stalled connection, or the SDK backing off
    /// inside one attempt) is given up by the deadline's margin, not left for Lambda to end
    /// the invocation before the failure is logged.
    #[tokio::test(start_paused = true)]
    async fn a_store_write_that_hangs_is_given_up_before_the_deadline() {
        let started = tokio::time::Instant::now();
        let deadline = SystemTime::now() + Duration::from_secs(2);
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let outcome = retried("k", "releasing a failed call's key", Some(deadline), || {
            attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::pending::<Result<(), crate::dynamo::DynamoError>>()
        });
        let outcome = tokio::time::timeout(Duration::from_secs(60), outcome)
            .await
            .expect("given up, not left hanging");
        let (error, tries) = outcome.expect_err("never answered");
        assert!(
            matches!(error, crate::dynamo::DynamoError::Timeout { .. }),
            "{error:?}"
        );
        assert_eq!(tries, attempts.load(std::sync::atomic::Ordering::SeqCst));
        assert!(
            started.elapsed() <= Duration::from_millis(1900),
            "{:?}",
            started.elapsed()
        );
    }

    /// Every run of a schedule has the same source, detail-type and empty detail: each run
    /// is a key of its own (its event id), and a run delivered again keeps its key. A `|` in
    /// a source or detail-type cannot make two events one.
    #[tokio::test]
    async fn each_run_of_a_schedule_is_a_key_of_its_own() {
        let (app, _) = keys_and_records(IdempotencyConfig::builder("t").build().expect("config"));
        let run = |id: &str| {
            let mut event = events::schedule();
            event["id"] = json!(id);
            event
        };
        let first = app.invoke(&run("run-1")).await.expect("first");
        let again = app.invoke(&run("run-1")).await.expect("again");
        let second = app.invoke(&run("run-2")).await.expect("second");
        assert!(first["key"].is_string());
        assert_eq!(first["key"], again["key"]);
        assert_ne!(first["key"], second["key"]);

        let detail = json!({"orderId": "o-1"});
        let a = app
            .invoke(&events::eventbridge("a|b", "c", detail.clone()))
            .await
            .expect("a");
        let b = app
            .invoke(&events::eventbridge("a", "b|c", detail))
            .await
            .expect("b");
        assert_ne!(a["key"], b["key"]);
    }

    /// A DynamoDB stream record has no byte payload: its key comes from the record (the
    /// same on every delivery of it, another for another record), and named fields are read
    /// from its image. (It had none: the handler just ran on every redelivery, and with
    /// `key_fields` every record failed as "not JSON".)
    #[tokio::test]
    async fn a_stream_record_has_a_key_of_its_own() {
        let stream_keys = |config: IdempotencyConfig| async move {
            let (app, seen) = keys_and_records(config);
            // Several attributes: each copy of a record holds them in a hash map of its own
            // order, which must not change the key.
            let image = |id: &str, n: u32| {
                json!({
                    "id": {"S": id}, "n": {"N": n.to_string()}, "a": {"S": "1"},
                    "b": {"S": "2"}, "c": {"S": "3"}, "d": {"S": "4"}, "e": {"S": "5"},
                    "blob": {"B": "AAE="}, "tags": {"L": [{"S": "x"}, {"M": {"k": {"N": "1"}}}]}
                })
            };
            let mut batch = events::dynamodb([
                ("INSERT", image("7", 1), json!({})),
                ("MODIFY", image("7", 2), image("7", 1)),
            ]);
            let again = batch["Records"][0].clone();
            batch["Records"]
                .as_array_mut()
                .expect("records")
                .push(again);
            let answer = app.invoke(&batch).await.expect("batch");
            assert!(
                lift_core::testing::batch_failures(&answer).is_empty(),
                "{answer}"
            );
            seen.lock().expect("keys").clone()
        };
        let by_record = stream_keys(IdempotencyConfig::builder("t").build().expect("config")).await;
        assert_eq!(by_record.len(), 3);
        assert!(by_record.iter().all(|k| !k.is_empty()), "{by_record:?}");
        assert_ne!(by_record[0], by_record[1], "two records, two keys");
        assert_eq!(by_record[0], by_record[2], "a redelivery, the same key");

        let by_field = stream_keys(
            IdempotencyConfig::builder("t")
                .key_fields(&["/id"])
                .build()
                .expect("config"),
        )
        .await;
        assert_eq!(by_field.len(), 3);
        assert!(by_field.iter().all(|k| !k.is_empty()), "{by_field:?}");
        assert_eq!(by_field[0], by_field[1], "the same item id");
    }
}
