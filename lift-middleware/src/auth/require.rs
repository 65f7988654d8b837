//! Route requirements on the authenticated principal: scopes, roles, or any predicate.

use std::borrow::Cow;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures_util::future::{Either, MapErr, TryFutureExt};
use lift_core::{BoxError, Context, Error, Response};
use tower::{Layer, Service};

use super::Principal;

type Check = Arc<dyn Fn(&Principal) -> bool + Send + Sync>;

/// Allows a request only when its [`Principal`] meets a requirement: 401 without a
/// principal, 403 (`insufficient_scope`, with a bearer challenge) when it falls short. Put
/// it inside (after) [`JwtAuthLayer`](super::JwtAuthLayer), usually on one route with
/// [`lift_core::with_layer`].
#[derive(Clone)]
pub struct RequireLayer {
    check: Check,
    describe: Arc<str>,
    realm: Arc<str>,
}

impl std::fmt::Debug for RequireLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireLayer")
            .field("requires", &self.describe)
            .field("realm", &self.realm)
            .finish()
    }
}

impl RequireLayer {
    /// Requires every one of `scopes`.
    pub fn scopes(scopes: &[&str]) -> Self {
        let wanted: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        let describe = wanted.join(" ");
        RequireLayer {
            check: Arc::new(move |p| wanted.iter().all(|s| p.has_scope(s))),
            describe: Arc::from(describe),
            realm: Arc::from("lift"),
        }
    }

    /// Requires at least one of `roles`.
    pub fn any_role(roles: &[&str]) -> Self {
        let wanted: Vec<String> = roles.iter().map(|s| (*s).to_owned()).collect();
        let describe = format!("role:{}", wanted.join("|"));
        RequireLayer {
            check: Arc::new(move |p| wanted.iter().any(|r| p.has_role(r))),
            describe: Arc::from(describe),
            realm: Arc::from("lift"),
        }
    }

    /// Requires `check` (a permission rule of your own), described as `describe`.
    pub fn predicate(
        describe: &str,
        check: impl Fn(&Principal) -> bool + Send + Sync + 'static,
    ) -> Self {
        RequireLayer {
            check: Arc::new(check),
            describe: Arc::from(describe),
            realm: Arc::from("lift"),
        }
    }

    /// The realm its challenges name (default `lift`): give it the one given to
    /// [`JwtConfigBuilder::realm`](super::JwtConfigBuilder::realm), so that a client sees
    /// one realm. Quotes are left out.
    #[must_use]
    pub fn realm(mut self, realm: &str) -> Self {
        self.realm = Arc::from(realm.replace('"', ""));
        self
    }
}

impl<S> Layer<S> for RequireLayer {
    type Service = Require<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Require {
            inner,
            layer: self.clone(),
        }
    }
}

/// The requirement service.
#[derive(Clone, Debug)]
pub struct Require<S> {
    inner: S,
    layer: RequireLayer,
}

impl<S> Service<Context> for Require<S>
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

    fn call(&mut self, ctx: Context) -> Self::Future {
        let refusal = match ctx.principal() {
            None => Some(Error::Unauthorized {
                challenge: Cow::Owned(format!("Bearer realm=\"{}\"", self.layer.realm)),
                reason: Cow::Borrowed("a bearer token is required"),
            }),
            Some(principal) if !(self.layer.check)(principal) => Some(Error::Forbidden {
                code: Cow::Borrowed("insufficient_scope"),
                message: Cow::Owned(format!("this requires {}", self.layer.describe)),
                challenge: Some(Cow::Owned(format!(
                    "Bearer realm=\"{}\", error=\"insufficient_scope\", scope=\"{}\"",
                    self.layer.realm,
                    self.layer.describe.replace('"', "")
                ))),
            }),
            Some(_) => None,
        };
        match refusal {
            Some(error) => Either::Left(ready(Err(Box::new(error)))),
            None => Either::Right(
                self.inner
                    .call(ctx)
                    .map_err(Into::into as crate::IntoBox<S::Error>),
            ),
        }
    }
}
