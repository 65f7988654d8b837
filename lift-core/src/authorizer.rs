//! API Gateway Lambda authorizers: one handler decides who may call an API, for REST APIs
//! (`TOKEN` and `REQUEST` authorizers), HTTP APIs (payload format 1.0 or 2.0) and
//! WebSocket APIs (a `REQUEST` authorizer on `$connect`).
//!
//! Register it with [`App::authorizer`](crate::App::authorizer). Events that carry a
//! `methodArn` or `routeArn` then reach that handler; it reads the request from the
//! [`Context`](crate::Context) ([`Context::authorizer`](crate::Context::authorizer), and
//! `header()` / `query()` as for HTTP) and answers with an [`Authorization`]:
//!
//! - [`Authorization::allow`] and [`Authorization::deny`] become the IAM policy API Gateway
//!   expects, for the ARN that was asked about, or with
//!   [`Authorization::for_all_routes`] for the whole stage (so that a cached decision
//!   serves every route); [`Authorization::context`] values reach the integration
//!   (`requestContext.authorizer`).
//! - For an HTTP API whose authorizer has simple responses enabled,
//!   [`App::authorizer_simple_responses`](crate::App::authorizer_simple_responses) answers
//!   payload 2.0 events with `{"isAuthorized": ..., "context": ...}` instead.
//! - A handler error with status 401, for a REST or WebSocket API, becomes the invocation
//!   error `Unauthorized`, which API Gateway answers with a `401`. An HTTP API has no such
//!   convention (an invocation error is a `500` there), so for its events, payload 1.0 or
//!   2.0, a 401 becomes a deny, as a 403 does everywhere. Any other error is an invocation
//!   error (API Gateway answers `500`).
//!
//! ```no_run
//! use lift_core::authorizer::Authorization;
//! use lift_core::http::StatusCode;
//! use lift_core::{App, Context, Error, Result};
//!
//! async fn authorize(ctx: Context) -> Result<Authorization> {
//!     // A REQUEST authorizer's headers, or a TOKEN authorizer's token.
//!     let token = ctx
//!         .header("authorization")
//!         .or_else(|| ctx.authorizer().and_then(|request| request.token()));
//!     match token {
//!         Some("Bearer let-me-in") => Ok(Authorization::allow("user-1")
//!             .context("tenant", "acme")
//!             .for_all_routes()),
//!         Some(_) => Ok(Authorization::deny("anonymous")),
//!         None => Err(Error::new(
//!             StatusCode::UNAUTHORIZED,
//!             "unauthorized",
//!             "a bearer token is required",
//!         )),
//!     }
//! }
//!
//! # async fn run() -> Result<()> {
//! App::new().authorizer(authorize).run().await
//! # }
//! ```

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

/// Which authorizer type sent the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthorizerKind {
    /// A REST API `TOKEN` authorizer: one token, from the configured header.
    Token,
    /// A `REQUEST` authorizer: headers, query and context of the request.
    Request,
}

/// What an authorizer is asked about.
#[derive(Debug, Clone)]
pub struct AuthorizerRequest {
    pub(crate) kind: AuthorizerKind,
    pub(crate) version2: bool,
    pub(crate) http_api: bool,
    pub(crate) arn: String,
    pub(crate) token: Option<String>,
    pub(crate) identity_source: Vec<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) route_key: Option<String>,
    pub(crate) connection_id: Option<String>,
}

impl AuthorizerRequest {
    /// `TOKEN` or `REQUEST`.
    pub fn kind(&self) -> AuthorizerKind {
        self.kind
    }

    /// Whether the event is in payload format 2.0 (an HTTP API).
    pub fn is_v2(&self) -> bool {
        self.version2
    }

    /// Whether an HTTP API sent the request (its events carry a `version`, 1.0 or 2.0); a
    /// REST or WebSocket API's do not.
    pub fn is_http_api(&self) -> bool {
        self.http_api
    }

    /// The ARN the decision is about: `methodArn` (REST, WebSocket, payload 1.0) or
    /// `routeArn` (payload 2.0).
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The token of a `TOKEN` authorizer (`authorizationToken`).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The identity sources' values (payload 2.0 `identitySource`).
    pub fn identity_source(&self) -> &[String] {
        &self.identity_source
    }

    /// The route key (payload 2.0 and WebSocket `$connect`).
    pub fn route_key(&self) -> Option<&str> {
        self.route_key.as_deref()
    }

    /// The WebSocket connection being opened, for a WebSocket API's `$connect`.
    pub fn connection_id(&self) -> Option<&str> {
        self.connection_id.as_deref()
    }

    /// The ARN covering every route of the stage: `…:{api id}/{stage}/*`.
    pub fn stage_arn(&self) -> String {
        stage_wildcard(&self.arn)
    }
}

/// `arn:…:{api id}/{stage}/…` → `arn:…:{api id}/{stage}/*`; an ARN of another shape is
/// returned as it is.
fn stage_wildcard(arn: &str) -> String {
    // The resource is what follows the ARN's fifth `:` (`arn:partition:service:region:
    // account:`); the route after it may hold `:` itself (`/POST/items:batchGet`).
    let Some(colon) = arn.match_indices(':').nth(4).map(|(i, _)| i) else {
        return arn.to_owned();
    };
    let (prefix, path) = arn.split_at(colon + 1);
    let mut parts = path.splitn(3, '/');
    match (parts.next(), parts.next()) {
        (Some(api), Some(stage)) if !api.is_empty() && !stage.is_empty() => {
            format!("{prefix}{api}/{stage}/*")
        }
        _ => arn.to_owned(),
    }
}

/// An authorizer's decision; see the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Authorization {
    allow: bool,
    principal_id: String,
    context: Map<String, Value>,
    all_routes: bool,
    usage_identifier_key: Option<String>,
}

impl Authorization {
    /// Lets `principal_id` call the route asked about.
    pub fn allow(principal_id: impl Into<String>) -> Self {
        Self::new(true, principal_id.into())
    }

    /// Refuses the call: API Gateway answers `403`.
    pub fn deny(principal_id: impl Into<String>) -> Self {
        Self::new(false, principal_id.into())
    }

    fn new(allow: bool, principal_id: String) -> Self {
        Authorization {
            allow,
            principal_id,
            context: Map::new(),
            all_routes: false,
            usage_identifier_key: None,
        }
    }

    /// Whether the call is allowed.
    pub fn is_allowed(&self) -> bool {
        self.allow
    }

    /// Passes `key` to the integration (`requestContext.authorizer.{key}`; under
    /// `lambda` for payload 2.0). REST and WebSocket APIs take strings, numbers and
    /// booleans only: a list or an object goes to them as its JSON text, a null not at all.
    pub fn context(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.context.insert(key.into(), value.into());
        self
    }

    /// Makes the decision cover every route of the stage, not only the one asked about:
    /// what a cached authorizer result (keyed by token or identity source) needs, since
    /// API Gateway reuses it for other routes.
    pub fn for_all_routes(mut self) -> Self {
        self.all_routes = true;
        self
    }

    /// The API key of a usage plan (`usageIdentifierKey`), for REST APIs whose key source
    /// is the authorizer.
    pub fn usage_identifier_key(mut self, key: impl Into<String>) -> Self {
        self.usage_identifier_key = Some(key.into());
        self
    }

    /// The response API Gateway expects for a request about `arn`: the simple response of
    /// payload 2.0 when `simple`, else an IAM policy. For a REST or WebSocket API
    /// (`http_api` false), whose authorizer context takes strings, numbers and booleans
    /// only (anything else fails the call with a 500 that only API Gateway's logs explain),
    /// a list or an object is passed as its JSON text and a null left out, each with a WARN.
    pub(crate) fn to_json(&self, arn: &str, simple: bool, http_api: bool) -> Value {
        let mut out = Map::new();
        if simple {
            out.insert("isAuthorized".to_owned(), Value::Bool(self.allow));
        } else {
            let resource = if self.all_routes {
                stage_wildcard(arn)
            } else {
                arn.to_owned()
            };
            out.insert(
                "principalId".to_owned(),
                Value::String(self.principal_id.clone()),
            );
            out.insert(
                "policyDocument".to_owned(),
                serde_json::json!({
                    "Version": "2012-10-17",
                    "Statement": [{
                        "Action": "execute-api:Invoke",
                        "Effect": if self.allow { "Allow" } else { "Deny" },
                        "Resource": [resource],
                    }],
                }),
            );
            if let Some(key) = &self.usage_identifier_key {
                out.insert("usageIdentifierKey".to_owned(), Value::String(key.clone()));
            }
        }
        if !self.context.is_empty() {
            let context = if http_api {
                self.context.clone()
            } else {
                flat_context(&self.context)
            };
            out.insert("context".to_owned(), Value::Object(context));
        }
        Value::Object(out)
    }
}

/// `context` as a REST or WebSocket API takes it: strings, numbers and booleans.
fn flat_context(context: &Map<String, Value>) -> Map<String, Value> {
    context
        .iter()
        .filter_map(|(key, value)| match value {
            Value::Null => {
                tracing::warn!(target: "lift::authorizer", key, "an authorizer context value is null, which a REST or WebSocket API refuses: left out");
                None
            }
            Value::Array(_) | Value::Object(_) => {
                tracing::warn!(target: "lift::authorizer", key, "an authorizer context value is a list or an object, which a REST or WebSocket API refuses: passed as its JSON text");
                Some((key.clone(), Value::String(value.to_string())))
            }
            other => Some((key.clone(), other.clone())),
        })
        .collect()
}

impl crate::response::IntoResponse for Authorization {
    fn into_response(self) -> crate::response::Response {
        let mut response = crate::response::Response::new(crate::response::Body::Empty);
        response.extensions_mut().insert(self);
        response
    }
}

/// Whether a raw event is an authorizer request: a top-level `methodArn` or `routeArn`.
/// It reads every top-level key (values are skipped), so only Apps with an authorizer pay.
pub(crate) fn is_authorizer_request(json: &str) -> bool {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an event object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut found = false;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                found |= key == "methodArn" || key == "routeArn";
                map.next_value::<IgnoredAny>()?;
            }
            Ok(found)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(json);
    serde::Deserializer::deserialize_map(&mut deserializer, Keys).unwrap_or(false)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRequest {
    version: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    method_arn: Option<String>,
    route_arn: Option<String>,
    authorization_token: Option<String>,
    #[serde(default)]
    identity_source: Option<IdentitySource>,
    #[serde(default)]
    headers: Option<HashMap<String, String>>,
    /// REST `REQUEST` events: every value of each header.
    #[serde(default)]
    multi_value_headers: Option<HashMap<String, Vec<String>>>,
    /// Payload 2.0: the cookies, which are not in `headers`.
    #[serde(default)]
    cookies: Option<Vec<String>>,
    #[serde(default)]
    query_string_parameters: Option<HashMap<String, String>>,
    /// REST `REQUEST` events: every value of each query parameter.
    #[serde(default)]
    multi_value_query_string_parameters: Option<HashMap<String, Vec<String>>>,
    /// Payload 2.0: the query as the client sent it (its parameters join repeats with `,`).
    raw_query_string: Option<String>,
    route_key: Option<String>,
    #[serde(default)]
    request_context: Option<RawContext>,
}

/// `identitySource`: a list in payload 2.0, a string in some 1.0 events.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdentitySource {
    Many(Vec<String>),
    One(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawContext {
    connection_id: Option<String>,
    route_key: Option<String>,
}

/// Every (name, value) of a multi-value map (REST `multiValueHeaders`, or its query).
fn pairs(multi: HashMap<String, Vec<String>>) -> Vec<(String, String)> {
    multi
        .into_iter()
        .flat_map(|(name, values)| values.into_iter().map(move |v| (name.clone(), v)))
        .collect()
}

/// Decodes an authorizer event.
pub(crate) fn parse(json: &str) -> Result<AuthorizerRequest, serde_json::Error> {
    let raw: RawRequest = serde_json::from_str(json)?;
    let kind = if raw.kind.eq_ignore_ascii_case("TOKEN") {
        AuthorizerKind::Token
    } else {
        AuthorizerKind::Request
    };
    // Every value where the event has them: multi-value maps (REST), else the single ones;
    // payload 2.0's cookies as the `cookie` header a handler reads.
    let header_pairs: Vec<(String, String)> = match raw.multi_value_headers {
        Some(multi) if !multi.is_empty() => pairs(multi),
        _ => raw.headers.unwrap_or_default().into_iter().collect(),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in header_pairs {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(name, value);
        }
    }
    if let Some(cookies) = raw.cookies.filter(|c| !c.is_empty())
        && let Ok(value) = HeaderValue::from_str(&cookies.join("; "))
    {
        headers.insert(http::header::COOKIE, value);
    }
    let mut query: Vec<(String, String)> = match (
        raw.raw_query_string.filter(|q| !q.is_empty()),
        raw.multi_value_query_string_parameters,
    ) {
        (Some(raw_query), _) => form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        (None, Some(multi)) if !multi.is_empty() => pairs(multi),
        _ => raw
            .query_string_parameters
            .unwrap_or_default()
            .into_iter()
            .collect(),
    };
    // By name only (a map's names come in no order); a name's values stay in the order sent,
    // so `query` is the first value the route behind will read too.
    query.sort_by(|a, b| a.0.cmp(&b.0));
    let context = raw.request_context;
    Ok(AuthorizerRequest {
        kind,
        version2: raw.version.as_deref() == Some("2.0"),
        http_api: raw.version.is_some(),
        arn: raw.route_arn.or(raw.method_arn).unwrap_or_default(),
        token: raw.authorization_token,
        identity_source: match raw.identity_source {
            Some(IdentitySource::Many(values)) => values,
            Some(IdentitySource::One(value)) => vec![value],
            None => Vec::new(),
        },
        headers,
        query,
        route_key: raw
            .route_key
            .or_else(|| context.as_ref().and_then(|c| c.route_key.clone())),
        connection_id: context.and_then(|c| c.connection_id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stage_arn_covers_every_route() {
        assert_eq!(
            stage_wildcard("arn:aws:execute-api:us-east-1:123456789012:abc123/prod/GET/orders/7"),
            "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/*"
        );
        assert_eq!(
            stage_wildcard("arn:aws:execute-api:eu-west-1:123456789012:ws1/live/$connect"),
            "arn:aws:execute-api:eu-west-1:123456789012:ws1/live/*"
        );
        assert_eq!(stage_wildcard("not-an-arn"), "not-an-arn");
        assert_eq!(
            stage_wildcard(
                "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/POST/items:batchGet"
            ),
            "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/*",
            "a `:` in the route"
        );
    }

    #[test]
    fn authorizer_requests_are_told_by_their_arn_wherever_it_stands() {
        assert!(is_authorizer_request(
            r#"{"type":"TOKEN","authorizationToken":"t","methodArn":"arn:x"}"#
        ));
        assert!(is_authorizer_request(
            r#"{"version":"2.0","requestContext":{"http":{"method":"GET"}},"routeArn":"arn:x"}"#
        ));
        assert!(!is_authorizer_request(
            r#"{"version":"2.0","requestContext":{"http":{"method":"GET"}},"body":"{\"routeArn\":1}"}"#
        ));
        assert!(!is_authorizer_request("[1,2]"));
    }
}
