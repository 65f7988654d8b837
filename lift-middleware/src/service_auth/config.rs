//! Service authorization configuration: identity sources and the per-route allow-lists,
//! validated once by [`ServiceAuthConfigBuilder::build`].

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::DecodingKey;

use super::token::{check_secret, valid_service_name};
use crate::error::{ConfigError, check};

const MAX_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// One allowed caller: an exact identity, or an ARN prefix (`.../role-name/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallerPattern {
    Exact(String),
    /// Everything up to and including the last `/`; matches one more non-empty segment.
    Under(String),
}

impl CallerPattern {
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() || text.chars().any(char::is_whitespace) {
            return None;
        }
        if let Some(prefix) = text.strip_suffix('*') {
            if !prefix.starts_with("arn:") || !prefix.ends_with('/') || prefix.contains('*') {
                return None;
            }
            return Some(CallerPattern::Under(prefix.to_owned()));
        }
        if text.contains('*') {
            return None;
        }
        // A service name, or an ARN (which service names can never look like).
        (valid_service_name(text) || text.starts_with("arn:"))
            .then(|| CallerPattern::Exact(text.to_owned()))
    }

    pub(crate) fn matches(&self, caller: &str) -> bool {
        match self {
            CallerPattern::Exact(exact) => caller == exact,
            CallerPattern::Under(prefix) => caller
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/')),
        }
    }
}

/// A validated service authorization configuration; see [`ServiceAuthConfig::builder`].
#[derive(Clone)]
pub struct ServiceAuthConfig {
    /// Each secret with the one service name it may sign for (`None`: any name).
    pub(crate) secrets: Vec<(Option<String>, DecodingKey)>,
    pub(crate) iam: bool,
    pub(crate) routes: HashMap<String, Vec<CallerPattern>>,
    pub(crate) default: Vec<CallerPattern>,
    pub(crate) max_token_lifetime: Duration,
    /// This function's service name, which tokens must be for.
    pub(crate) audience: Option<String>,
}

impl std::fmt::Debug for ServiceAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAuthConfig")
            .field("secrets", &self.secrets.len())
            .field("iam", &self.iam)
            .field("routes", &self.routes)
            .field("default", &self.default)
            .field("max_token_lifetime", &self.max_token_lifetime)
            .field("audience", &self.audience)
            .finish()
    }
}

impl ServiceAuthConfig {
    /// Starts a configuration.
    ///
    /// # Default
    /// IAM principals accepted, no shared secret (service tokens ignored), no route listed,
    /// nobody allowed on unlisted routes, service tokens valid at most 15 minutes ahead.
    pub fn builder() -> ServiceAuthConfigBuilder {
        ServiceAuthConfigBuilder {
            secrets: Vec::new(),
            iam: true,
            routes: Vec::new(),
            default: Vec::new(),
            max_token_lifetime: Duration::from_secs(15 * 60),
            audience: None,
        }
    }

    /// The allow-list of `route` (a route pattern), or the default one.
    pub(crate) fn policy_for(&self, route: Option<&str>) -> &[CallerPattern] {
        route
            .and_then(|route| self.routes.get(route))
            .unwrap_or(&self.default)
    }
}

/// Builds a [`ServiceAuthConfig`]; [`ServiceAuthConfigBuilder::build`] validates it.
#[must_use]
pub struct ServiceAuthConfigBuilder {
    secrets: Vec<(Option<String>, Vec<u8>)>,
    iam: bool,
    routes: Vec<(String, Vec<String>)>,
    default: Vec<String>,
    max_token_lifetime: Duration,
    audience: Option<String>,
}

impl std::fmt::Debug for ServiceAuthConfigBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAuthConfigBuilder")
            .field("secrets", &self.secrets.len())
            .field("iam", &self.iam)
            .field("routes", &self.routes)
            .field("default", &self.default)
            .field("max_token_lifetime", &self.max_token_lifetime)
            .field("audience", &self.audience)
            .finish()
    }
}

impl ServiceAuthConfigBuilder {
    /// Accepts service tokens (`x-lift-service-token`) signed with `secret` (at least 32
    /// bytes), whatever service they name. Call again to accept several secrets while
    /// rotating. Whoever holds a shared secret can sign for any name: for allow-lists that
    /// must keep callers apart, give each calling service its own secret
    /// ([`ServiceAuthConfigBuilder::caller_secret`]).
    pub fn shared_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secrets.push((None, secret.as_ref().to_vec()));
        self
    }

    /// Accepts service tokens signed with `secret` (at least 32 bytes) for the service
    /// `caller` only: a token naming another service is refused even if this secret
    /// signed it, so a service cannot pass for another it shares no secret with.
    pub fn caller_secret(mut self, caller: &str, secret: impl AsRef<[u8]>) -> Self {
        self.secrets
            .push((Some(caller.to_owned()), secret.as_ref().to_vec()));
        self
    }

    /// Whether the IAM principal API Gateway authenticated is an identity (REST API
    /// `requestContext.identity.userArn`, else `caller`; HTTP API and Function URL
    /// `requestContext.authorizer.iam.userArn`).
    pub fn iam(mut self, accept: bool) -> Self {
        self.iam = accept;
        self
    }

    /// Allows `callers` on `route`, a route pattern as registered (`/internal/orders/{id}`),
    /// or `$connect` for a WebSocket API's connections.
    /// A caller is a service name (from a token), an ARN, or an ARN prefix ending in `/*`
    /// (`arn:aws:sts::123456789012:assumed-role/orders-role/*`: any session of the role).
    /// A listed route uses its own list only; repeat to add callers.
    pub fn allow(
        mut self,
        route: &str,
        callers: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Self {
        let callers = callers.into_iter().map(|c| c.as_ref().to_owned());
        match self.routes.iter_mut().find(|(r, _)| r == route) {
            Some((_, list)) => list.extend(callers),
            None => self.routes.push((route.to_owned(), callers.collect())),
        }
        self
    }

    /// Allows `callers` on every route not listed with [`ServiceAuthConfigBuilder::allow`]
    /// (and on requests that matched no route).
    pub fn allow_by_default(mut self, callers: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        self.default
            .extend(callers.into_iter().map(|c| c.as_ref().to_owned()));
        self
    }

    /// How far ahead a service token's expiry may be (longer-lived tokens are refused).
    pub fn max_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_token_lifetime = lifetime;
        self
    }

    /// This function's service name: a service token must be for it (minted with
    /// [`ServiceTokenSigner::sign_for`](super::ServiceTokenSigner::sign_for), as
    /// lift-services' client does for the service it calls), so a token another service
    /// received cannot be replayed here. Tokens for no service
    /// ([`ServiceTokenSigner::sign`](super::ServiceTokenSigner::sign)) are then refused.
    /// Without it, a token is good at any function that accepts its secret.
    pub fn audience(mut self, service: &str) -> Self {
        self.audience = Some(service.to_owned());
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field: `shared_secret` (under 32 bytes), `iam` (no
    /// identity source left), `allow` (a route neither starting with `/` nor `$connect`, or
    /// a caller that is neither a service name, an ARN nor an ARN prefix ending in `/*`),
    /// `max_token_lifetime` (zero or over 24 hours), `audience` (not a service name).
    pub fn build(self) -> Result<ServiceAuthConfig, ConfigError> {
        if let Some(audience) = &self.audience {
            check(
                valid_service_name(audience),
                "audience",
                "a service name: letters, digits, '-' and '_'",
            )?;
        }
        for (caller, secret) in &self.secrets {
            check_secret(secret)?;
            if let Some(caller) = caller {
                check(
                    valid_service_name(caller),
                    "caller_secret",
                    "a service name: letters, digits, '-' and '_'",
                )?;
            }
        }
        if !self.iam && self.secrets.is_empty() {
            return Err(ConfigError::Conflict {
                field: "iam",
                reason: "no identity source: accept IAM principals or set a shared secret",
            });
        }
        check(
            !self.max_token_lifetime.is_zero() && self.max_token_lifetime <= MAX_MAX_TOKEN_LIFETIME,
            "max_token_lifetime",
            "more than zero and at most 24 hours",
        )?;
        let mut routes = HashMap::with_capacity(self.routes.len());
        for (route, callers) in &self.routes {
            check(
                route.starts_with('/') || route == "$connect",
                "allow",
                "a route pattern starts with `/` (or is a WebSocket API's `$connect`)",
            )?;
            routes.insert(route.clone(), patterns(callers)?);
        }
        Ok(ServiceAuthConfig {
            secrets: self
                .secrets
                .iter()
                .map(|(caller, secret)| (caller.clone(), DecodingKey::from_secret(secret)))
                .collect(),
            iam: self.iam,
            routes,
            default: patterns(&self.default)?,
            max_token_lifetime: self.max_token_lifetime,
            audience: self.audience,
        })
    }
}

fn patterns(callers: &[String]) -> Result<Vec<CallerPattern>, ConfigError> {
    callers
        .iter()
        .map(|caller| {
            CallerPattern::parse(caller).ok_or(ConfigError::OutOfRange {
                field: "allow",
                reason: "a caller is a service name (`A-Z a-z 0-9 _ -`), an ARN, or an ARN prefix ending in `/*`",
            })
        })
        .collect()
}
