//! Tenancy: which tenant a request acts for, and isolation of its data.
//!
//! [`TenantLayer`] resolves the tenant from the sources you configure, in order: a claim of
//! the verified token ([`TenantSource::Claim`], needs [`crate::auth::JwtAuthLayer`] outside
//! it), API Gateway's authorizer context ([`TenantSource::Authorizer`]), a header, a path
//! parameter, or the host's first label. A header is unverified: it is only honoured when
//! the configuration says it is trusted (behind a gateway that sets it). When two sources
//! name different tenants the request is refused (403 `tenant_mismatch`, logged); when a
//! claim source is configured and the verified caller's token lacks the claim, no other
//! source names the tenant for it (403 `tenant_claim_missing`: the path, a header or the
//! host speak for anonymous requests only); when none
//! names one and a tenant is required, 400 `tenant_required`. Tenant ids are 1 to 64 ASCII
//! letters, digits, `-` or `_` (400 `invalid_tenant` otherwise), so they cannot smuggle a
//! key separator into storage keys.
//!
//! The tenant goes into the [`Context`] ([`Context::tenant`]), on the request's span (so
//! every later log line carries it), optionally into the metrics' dimensions
//! ([`TenantConfigBuilder::metrics_dimension`]); [`propagate`] copies it onto outbound
//! calls.
//! [`TenantTable`] scopes DynamoDB access to the tenant.
//!
//! ```
//! use lift_core::App;
//! use lift_middleware::tenancy::{TenantConfig, TenantLayer, TenantSource};
//!
//! # fn main() -> Result<(), lift_middleware::ConfigError> {
//! let tenancy = TenantConfig::builder()
//!     .source(TenantSource::Claim("tenant_id".to_owned()))
//!     .source(TenantSource::PathParam("tenant".to_owned()))
//!     .build()?;
//! let app = App::new().layer(TenantLayer::new(tenancy));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "dynamodb")]
mod table;

use std::borrow::Cow;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures_util::future::{Either, MapErr, TryFutureExt};
use http::StatusCode;
use lift_core::{BoxError, Context, Error, Response, TenantId};
use tower::{Layer, Service};

use crate::error::{ConfigError, check};

#[cfg(feature = "dynamodb")]
pub use table::{Cursor, Item, Page, TenantTable, TenantTables, WRITE_TOKEN_ATTR};

/// The header the tenant travels in on outbound calls and, when trusted, on inbound ones.
pub const TENANT_HEADER: &str = "x-tenant-id";

/// Where a tenant id can come from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenantSource {
    /// A claim of the verified token (the [`Principal`](crate::auth::Principal)).
    Claim(String),
    /// A claim of API Gateway's JWT authorizer, or a field of a Lambda authorizer's context.
    Authorizer(String),
    /// A request header; unverified, honoured only with [`TenantConfigBuilder::trust_headers`].
    Header(String),
    /// A path parameter of the matched route.
    PathParam(String),
    /// The first label of the `Host`, lower-cased (`Acme.api.example.com` → `acme`), of any
    /// host with three labels or more: the API's own host (`api.example.com` → `api`, an
    /// `execute-api` or Function URL host → its id) names one too. Prefer
    /// [`TenantSource::SubdomainOf`], which takes tenants under one domain only.
    Subdomain,
    /// The one label before `base` in the `Host`, lower-cased (`acme.api.example.com` with
    /// base `api.example.com` → `acme`); any other host (the base itself, a deeper name,
    /// another domain) names no tenant.
    SubdomainOf(String),
    /// A message attribute of an SQS or SNS record (such as `tenantId`, the attribute
    /// `propagate` sets), or the string field at the top of an EventBridge event's `detail`
    /// (such as `tenant`, where an event envelope carries it), set by the publisher; trusted
    /// as far as the queue's, topic's or bus's writers are.
    MessageAttribute(String),
}

/// A validated tenancy configuration.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    sources: Vec<TenantSource>,
    trust_headers: bool,
    required: bool,
    metrics_dimension: bool,
}

/// Builds a [`TenantConfig`].
#[derive(Debug, Clone)]
pub struct TenantConfigBuilder {
    config: TenantConfig,
}

impl TenantConfig {
    /// Starts a configuration.
    ///
    /// # Default
    /// No source (add one), headers not trusted, a tenant required, no `tenant` metrics
    /// dimension (each tenant is a metric series of its own: mind the cardinality).
    pub fn builder() -> TenantConfigBuilder {
        TenantConfigBuilder {
            config: TenantConfig {
                sources: Vec::new(),
                trust_headers: false,
                required: true,
                metrics_dimension: false,
            },
        }
    }
}

impl TenantConfigBuilder {
    /// Adds a source, tried after the ones before it.
    pub fn source(mut self, source: TenantSource) -> Self {
        self.config.sources.push(source);
        self
    }
    /// Honours header sources (only behind something that sets the header itself).
    pub fn trust_headers(mut self, trust: bool) -> Self {
        self.config.trust_headers = trust;
        self
    }
    /// Whether a request without a tenant is refused (default) or passes without one.
    pub fn required(mut self, required: bool) -> Self {
        self.config.required = required;
        self
    }
    /// Adds the tenant as the `tenant` dimension of the invocation's metrics.
    pub fn metrics_dimension(mut self, on: bool) -> Self {
        self.config.metrics_dimension = on;
        self
    }
    /// Validates the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] without sources, or with a header source that is not trusted.
    pub fn build(self) -> Result<TenantConfig, ConfigError> {
        let c = &self.config;
        check(!c.sources.is_empty(), "sources", "add at least one source")?;
        check(
            c.trust_headers
                || !c
                    .sources
                    .iter()
                    .any(|s| matches!(s, TenantSource::Header(_))),
            "trust_headers",
            "a header source is unverified: trust it explicitly",
        )?;
        Ok(self.config)
    }
}

/// Whether `id` is a well-formed tenant id.
pub fn is_valid_tenant(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn value_of<'a>(ctx: &'a Context, source: &TenantSource) -> Option<Cow<'a, str>> {
    match source {
        TenantSource::Claim(name) => ctx
            .principal()
            .and_then(|p| p.claim_str(name))
            .map(Cow::Borrowed),
        TenantSource::Authorizer(name) => ctx.authorizer_value(name).map(Cow::Owned),
        TenantSource::Header(name) => ctx.header(name).map(Cow::Borrowed),
        TenantSource::PathParam(name) => ctx.path_param(name).ok().map(Cow::Borrowed),
        TenantSource::MessageAttribute(name) => ctx.message_attribute(name).map(Cow::Borrowed),
        TenantSource::Subdomain => {
            let host = ctx.header(http::header::HOST)?;
            let host = host.split(':').next()?;
            let mut labels = host.split('.');
            let first = labels.next()?;
            (labels.count() >= 2).then(|| lower(first))
        }
        TenantSource::SubdomainOf(base) => {
            let host = ctx.header(http::header::HOST)?;
            let host = host.split(':').next()?.trim_end_matches('.');
            let label = host
                .len()
                .checked_sub(base.len() + 1)
                .filter(|&at| {
                    host[at + 1..].eq_ignore_ascii_case(base) && host.as_bytes()[at] == b'.'
                })
                .map(|at| &host[..at])?;
            (!label.is_empty() && !label.contains('.')).then(|| lower(label))
        }
    }
}

/// A host label as a tenant id: DNS names ignore case, so `Acme` and `acme` are one.
fn lower(label: &str) -> Cow<'_, str> {
    if label.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(label.to_ascii_lowercase())
    } else {
        Cow::Borrowed(label)
    }
}

/// Resolves the request's tenant as `config` says.
///
/// # Errors
/// 400 `invalid_tenant` or `tenant_required`, 403 `tenant_mismatch`.
pub fn resolve(config: &TenantConfig, ctx: &Context) -> Result<Option<String>, Error> {
    resolve_in_place(config, ctx).map(|tenant| tenant.map(Cow::into_owned))
}

/// [`resolve`], borrowing the tenant from the request where it can.
fn resolve_in_place<'a>(
    config: &TenantConfig,
    ctx: &'a Context,
) -> Result<Option<Cow<'a, str>>, Error> {
    let mut found: Option<(Cow<'a, str>, &TenantSource)> = None;
    // A verified caller whose token names no tenant (the claim absent, or not a string).
    let mut claim_missing = false;
    for source in &config.sources {
        let Some(value) = value_of(ctx, source) else {
            claim_missing |= matches!(source, TenantSource::Claim(_)) && ctx.principal().is_some();
            continue;
        };
        if !is_valid_tenant(&value) {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                "invalid_tenant",
                "the tenant id is not 1-64 letters, digits, '-' or '_'",
            ));
        }
        match &found {
            None => found = Some((value, source)),
            Some((tenant, first)) if *tenant != value => {
                tracing::warn!(
                    target: "lift::tenancy",
                    tenant = %tenant, from = ?first, other = %value, other_from = ?source,
                    "tenant mismatch"
                );
                return Err(Error::forbidden(
                    "tenant_mismatch",
                    "the request names two different tenants",
                ));
            }
            Some(_) => {}
        }
    }
    match found {
        // Such a caller does not choose a tenant through the path, a header or the host:
        // a token without the claim (a client-credentials token) is not for any tenant.
        Some((_, source)) if claim_missing && !matches!(source, TenantSource::Authorizer(_)) => {
            tracing::warn!(target: "lift::tenancy", from = ?source, "the caller's token names no tenant");
            Err(Error::forbidden(
                "tenant_claim_missing",
                "the caller's token does not name a tenant",
            ))
        }
        Some((tenant, _)) => Ok(Some(tenant)),
        None if config.required => Err(Error::new(
            StatusCode::BAD_REQUEST,
            "tenant_required",
            "the request does not say which tenant it is for",
        )),
        None => Ok(None),
    }
}

/// Copies the request's tenant onto an outbound call's headers.
pub fn propagate(ctx: &Context, headers: &mut http::HeaderMap) {
    if let Some(value) = ctx
        .tenant()
        .and_then(|t| http::HeaderValue::from_str(t).ok())
    {
        headers.insert(TENANT_HEADER, value);
    }
}

/// Resolves the tenant of every request; see the module docs.
#[derive(Clone, Debug)]
pub struct TenantLayer {
    config: Arc<TenantConfig>,
}

impl TenantLayer {
    /// Resolves tenants as `config` says.
    pub fn new(config: TenantConfig) -> Self {
        TenantLayer {
            config: Arc::new(config),
        }
    }
}

impl<S> Layer<S> for TenantLayer {
    type Service = Tenant<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Tenant {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The tenancy service.
#[derive(Clone, Debug)]
pub struct Tenant<S> {
    inner: S,
    config: Arc<TenantConfig>,
}

crate::inner_accessors!(Tenant<S>);

impl<S> Service<Context> for Tenant<S>
where
    S: Service<Context, Response = Response>,
    S::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = BoxError;
    type Future =
        Either<Ready<Result<Response, BoxError>>, MapErr<S::Future, crate::IntoBox<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut ctx: Context) -> Self::Future {
        let resolved =
            resolve_in_place(&self.config, &ctx).map(|tenant| tenant.map(Arc::<str>::from));
        match resolved {
            Ok(tenant) => {
                if let Some(tenant) = tenant {
                    if self.config.metrics_dimension
                        && let Err(error) = ctx.metrics().dimension("tenant", &tenant)
                    {
                        tracing::warn!(target: "lift::tenancy", %error, "tenant not added to metrics");
                    }
                    ctx.set_tenant(TenantId(tenant));
                }
                Either::Right(
                    self.inner
                        .call(ctx)
                        .map_err(Into::into as crate::IntoBox<S::Error>),
                )
            }
            Err(error) => Either::Left(ready(Err(Box::new(error)))),
        }
    }
}
