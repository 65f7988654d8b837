//! The service authorization layer, its service and future.

use std::borrow::Cow;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::HeaderMap;
use lambda_http::request::RequestContext;
#[cfg(feature = "source-websocket")]
use lift_core::websocket::EventType;
use lift_core::{BoxError, Context, Error, HttpRequest, Response};
use tower::{Layer, Service};

use super::config::ServiceAuthConfig;
use super::token::{self, SERVICE_TOKEN_HEADER};
use crate::classify::{SystemClock, WallClock};

const CHALLENGE: &str = r#"LiftService realm="lift""#;
const INVALID_TOKEN_CHALLENGE: &str = r#"LiftService realm="lift", error="invalid_token""#;

/// The calling service, as [`ServiceAuth`] identified and allowed it: a service name (from
/// a service token) or an IAM principal ARN. Stored in the [`Context`]'s extensions:
/// `ctx.extensions().get::<ServiceCaller>()`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceCaller(pub String);

impl std::fmt::Display for ServiceCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The IAM principal API Gateway authenticated for `request`, if any: REST API
/// `requestContext.identity.userArn` (else `caller`), HTTP API / Function URL
/// `requestContext.authorizer.iam.userArn`. ALB requests have none.
pub fn iam_principal(request: &HttpRequest) -> Option<&str> {
    let principal = match request.request_context() {
        RequestContext::ApiGatewayV1(c) => c
            .identity
            .user_arn
            .as_deref()
            .filter(|a| !a.is_empty())
            .or(c.identity.caller.as_deref()),
        RequestContext::ApiGatewayV2(c) => c
            .authorizer
            .as_ref()
            .and_then(|a| a.iam.as_ref())
            .and_then(|iam| iam.user_arn.as_deref()),
        _ => None,
    };
    principal.filter(|p| !p.trim().is_empty())
}

/// The headers and IAM principal of a WebSocket `$connect` (REST-style
/// `requestContext.identity.userArn`, else `caller`, for a `$connect` route with `AWS_IAM`
/// authorization). Later messages on the connection carry neither: the connection was
/// admitted at `$connect`, as API Gateway's own authorizers have it.
#[cfg(feature = "source-websocket")]
fn websocket_connect(ctx: &Context) -> Option<(&HeaderMap, Option<&str>)> {
    let ws = ctx
        .websocket()
        .filter(|ws| ws.event_type() == EventType::Connect)?;
    let identity = &ws.request_context().identity;
    let principal = identity
        .user_arn
        .as_deref()
        .filter(|a| !a.is_empty())
        .or(identity.caller.as_deref())
        .filter(|p| !p.trim().is_empty());
    Some((ws.headers(), principal))
}

/// Without WebSocket events no request is a `$connect`.
#[cfg(not(feature = "source-websocket"))]
fn websocket_connect(_: &Context) -> Option<(&HeaderMap, Option<&str>)> {
    None
}

/// Applies [`ServiceAuth`] to a service.
#[derive(Clone)]
pub struct ServiceAuthLayer {
    config: Arc<ServiceAuthConfig>,
    clock: Arc<dyn WallClock>,
}

impl std::fmt::Debug for ServiceAuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAuthLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ServiceAuthLayer {
    /// A layer enforcing `config`.
    pub fn new(config: ServiceAuthConfig) -> Self {
        ServiceAuthLayer {
            config: Arc::new(config),
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` to check service token expiries.
    pub fn with_clock(mut self, clock: impl WallClock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

impl<S> Layer<S> for ServiceAuthLayer {
    type Service = ServiceAuth<S>;
    fn layer(&self, inner: S) -> ServiceAuth<S> {
        ServiceAuth {
            inner,
            layer: self.clone(),
        }
    }
}

/// Lets only allowed calling services through; see the [module docs](super).
#[derive(Clone, Debug)]
pub struct ServiceAuth<S> {
    inner: S,
    layer: ServiceAuthLayer,
}

crate::inner_accessors!(ServiceAuth<S>);

fn unauthorized(challenge: &'static str, reason: &'static str) -> Error {
    Error::Unauthorized {
        challenge: Cow::Borrowed(challenge),
        reason: Cow::Borrowed(reason),
    }
}

impl ServiceAuthLayer {
    /// Who is calling: a verified service token, else the IAM principal.
    fn identify(&self, headers: &HeaderMap, iam: Option<&str>) -> Result<String, Error> {
        let config = &self.config;
        if !config.secrets.is_empty()
            && let Some(value) = headers.get(SERVICE_TOKEN_HEADER)
        {
            let verified = value
                .to_str()
                .map_err(|_| token::Rejection::Malformed)
                .and_then(|text| {
                    token::verify(
                        text.trim(),
                        &config.secrets,
                        self.clock.now(),
                        config.max_token_lifetime,
                        config.audience.as_deref(),
                    )
                });
            return match verified {
                Ok(service) => Ok(service.to_owned()),
                Err(rejection) => {
                    tracing::debug!(target: "lift::service_auth", reason = rejection.reason(), "service token refused");
                    Err(unauthorized(INVALID_TOKEN_CHALLENGE, rejection.reason()))
                }
            };
        }
        if config.iam
            && let Some(principal) = iam
        {
            return Ok(principal.to_owned());
        }
        tracing::debug!(target: "lift::service_auth", "no service identity");
        Err(unauthorized(CHALLENGE, "no service identity"))
    }

    /// Identifies the caller and checks the route's allow-list.
    fn authorize(
        &self,
        ctx: &Context,
        headers: &HeaderMap,
        iam: Option<&str>,
    ) -> Result<String, Error> {
        let caller = self.identify(headers, iam)?;
        let allowed = self
            .config
            .policy_for(ctx.route())
            .iter()
            .any(|pattern| pattern.matches(&caller));
        if !allowed {
            tracing::warn!(
                target: "lift::service_auth",
                caller = %caller,
                callee = ctx.function_name(),
                route = ctx.route().unwrap_or("-"),
                "service not allowed"
            );
            return Err(Error::forbidden(
                "service_not_allowed",
                "the calling service is not allowed to call this route",
            ));
        }
        tracing::debug!(target: "lift::service_auth", caller = %caller, route = ctx.route().unwrap_or("-"), "service allowed");
        Ok(caller)
    }
}

impl<S> Service<Context> for ServiceAuth<S>
where
    S: Service<Context, Response = Response>,
    S::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut ctx: Context) -> Self::Future {
        let decision = match ctx.http() {
            Some(request) => Some(self.layer.authorize(
                &ctx,
                request.headers(),
                iam_principal(request),
            )),
            // A WebSocket `$connect` is checked; the connection's later events pass, and
            // batch records are authorized by the event source's IAM policy.
            None => websocket_connect(&ctx)
                .map(|(headers, iam)| self.layer.authorize(&ctx, headers, iam)),
        };
        match decision {
            Some(Err(error)) => ResponseFuture::refused(Box::new(error)),
            Some(Ok(caller)) => {
                // A verified service's word on its request's priority is taken as given
                // (a client's `x-priority` can only lower it; see `classify`).
                if let Some(priority) = crate::classify::header_priority(&ctx) {
                    ctx.extensions_mut().insert(priority);
                }
                ctx.extensions_mut().insert(ServiceCaller(caller));
                ResponseFuture::inner(self.inner.call(ctx))
            }
            None => ResponseFuture::inner(self.inner.call(ctx)),
        }
    }
}

/// The future of [`ServiceAuth`]: the refusal, or the inner service's result.
pub type ResponseFuture<F> = crate::refusal::RefusedOr<F>;
