//! The one error model of Lift: what went wrong, which status it maps to, and the body a
//! client sees.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::Serialize;

/// A boxed error, the type middleware and handler errors travel as.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `Result` with Lift's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One field of the input that failed to parse or validate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The JSON pointer of the field (RFC 6901), `""` for the document itself.
    pub pointer: String,
    /// Why the field was refused.
    pub message: String,
}

/// Everything that can go wrong between an event arriving and a response leaving.
///
/// Each variant maps to an HTTP status ([`Error::status`]), a stable machine-readable code
/// ([`Error::code`]) and a client-safe message; for a batch record any error means the record
/// failed. Server-side errors (5xx) never show their details to a client: they are logged in
/// full with the request id instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The body is not well-formed JSON.
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    MalformedJson {
        /// 1-based line of the first error.
        line: usize,
        /// 1-based column of the first error.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// A typed input was expected but the body is empty.
    #[error("the request body is empty; a JSON document was expected")]
    EmptyBody,
    /// The input parsed but one or more fields are missing, of the wrong type or invalid.
    #[error("{} field(s) of the input are invalid", .0.len())]
    Validation(Vec<FieldError>),
    /// The body's content type is not one the handler accepts.
    #[error("unsupported media type `{found}`; expected `application/json`")]
    UnsupportedMediaType {
        /// The content type that arrived (empty when none was sent).
        found: String,
    },
    /// The body is larger than the configured limit.
    #[error("the request body of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Size of the body that arrived.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// No route matches the request's path.
    #[error("no route matches `{path}`")]
    NotFound {
        /// The path that was asked for.
        path: String,
    },
    /// A route matches the path but not the method.
    #[error("method `{method}` is not allowed on `{path}`")]
    MethodNotAllowed {
        /// The method that was used.
        method: Method,
        /// The path that was asked for.
        path: String,
        /// The methods the path accepts, for the `Allow` header.
        allow: Vec<Method>,
    },
    /// A handler asked for a path parameter its route does not declare.
    #[error("the route has no path parameter `{0}`")]
    MissingPathParam(String),
    /// An error a handler chose to show the client, with its own status and code.
    #[error("{message}")]
    Status {
        /// HTTP status of the response.
        status: StatusCode,
        /// Stable machine-readable code.
        code: Cow<'static, str>,
        /// Client-safe message.
        message: Cow<'static, str>,
    },
    /// A handler panicked; the panic was caught and the runtime kept serving.
    #[error("the handler panicked: {0}")]
    Panic(String),
    /// The invocation's event matches no registered handler.
    #[error("no handler is registered for {0}")]
    NoHandler(String),
    /// The event was recognised but could not be decoded into its Lambda type.
    #[error("the {kind} event could not be decoded: {source}")]
    InvalidEvent {
        /// The event kind that was recognised.
        kind: &'static str,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The App's configuration is invalid (for example two routes that conflict).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The Lambda environment is incomplete (a variable the runtime needs is missing).
    #[error("the Lambda environment variable `{0}` is not set")]
    Environment(&'static str),
    /// A circuit breaker is open: the protected call was not attempted.
    #[error("circuit `{name}` is open")]
    CircuitOpen {
        /// The breaker's name (and key, for keyed breakers).
        name: Arc<str>,
        /// When the breaker will let a probe call through.
        retry_after: Duration,
    },
    /// A bulkhead has no capacity left and its wait queue is full or timed out.
    #[error("bulkhead `{name}` is full")]
    BulkheadFull {
        /// The bulkhead's name (and key, for keyed bulkheads).
        name: Arc<str>,
    },
    /// A call did not finish in time; it was cancelled.
    #[error("timed out after {after:?}")]
    Timeout {
        /// The timeout that applied (the configured one or the remaining invocation time).
        after: Duration,
    },
    /// A rate limit refused the call.
    #[error("rate limit of {limit} exceeded")]
    RateLimited {
        /// Calls allowed per window.
        limit: u64,
        /// Calls left in the current window.
        remaining: u64,
        /// Time until the window resets.
        reset: Duration,
        /// When a retry may succeed.
        retry_after: Duration,
    },
    /// Load shedding refused the call to protect the function.
    #[error("overloaded: {reason}")]
    Overloaded {
        /// Why the call was shed.
        reason: &'static str,
    },
    /// The request is not authenticated: no credentials, or credentials that do not verify.
    /// Answered 401 with a `WWW-Authenticate` challenge; the credentials are never echoed.
    #[error("unauthenticated: {reason}")]
    Unauthorized {
        /// The `WWW-Authenticate` header value (e.g. `Bearer realm="lift", error="invalid_token"`).
        challenge: Cow<'static, str>,
        /// A client-safe reason (never the token).
        reason: Cow<'static, str>,
    },
    /// The caller is authenticated but not allowed to do this.
    #[error("{message}")]
    Forbidden {
        /// Stable machine-readable code (`insufficient_scope`, `tenant_mismatch`, ...).
        code: Cow<'static, str>,
        /// Client-safe message.
        message: Cow<'static, str>,
        /// A `WWW-Authenticate` challenge for bearer-token scope errors, if any.
        challenge: Option<Cow<'static, str>>,
    },
    /// A failure inside the function; shown to clients only as "internal error".
    #[error("internal error: {0}")]
    Internal(#[source] BoxError),
}

impl Error {
    /// A client-facing error with its own status, stable code and message.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Error::Status {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// A 400 Bad Request with the given message.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A 404 Not Found with the given message (for a resource, not a route).
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A 409 Conflict with the given message.
    pub fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// A 403 Forbidden with a stable code and a client-safe message.
    pub fn forbidden(
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Error::Forbidden {
            code: code.into(),
            message: message.into(),
            challenge: None,
        }
    }

    /// Wraps any error as an internal (500) error.
    pub fn internal(error: impl Into<BoxError>) -> Self {
        Error::Internal(error.into())
    }

    /// Recovers a Lift error from a boxed one: a boxed [`Error`] comes back as itself,
    /// anything else becomes [`Error::Internal`].
    pub fn from_boxed(error: BoxError) -> Self {
        match error.downcast::<Error>() {
            Ok(error) => *error,
            Err(other) => Error::Internal(other),
        }
    }

    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::MalformedJson { .. } | Error::EmptyBody => StatusCode::BAD_REQUEST,
            Error::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::Status { status, .. } => *status,
            Error::InvalidEvent { .. } => StatusCode::BAD_REQUEST,
            Error::CircuitOpen { .. } | Error::BulkheadFull { .. } | Error::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::MissingPathParam(_)
            | Error::Panic(_)
            | Error::NoHandler(_)
            | Error::Config(_)
            | Error::Environment(_)
            | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable, machine-readable code for this error (`snake_case`).
    pub fn code(&self) -> &str {
        match self {
            Error::MalformedJson { .. } => "malformed_json",
            Error::EmptyBody => "empty_body",
            Error::Validation(_) => "validation_failed",
            Error::UnsupportedMediaType { .. } => "unsupported_media_type",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::NotFound { .. } => "route_not_found",
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::Status { code, .. } => code,
            Error::InvalidEvent { .. } => "invalid_event",
            Error::CircuitOpen { .. } => "circuit_open",
            Error::BulkheadFull { .. } => "bulkhead_full",
            Error::Timeout { .. } => "timeout",
            Error::RateLimited { .. } => "rate_limited",
            Error::Overloaded { .. } => "overloaded",
            Error::Unauthorized { .. } => "unauthorized",
            Error::Forbidden { code, .. } => code,
            Error::NoHandler(_) => "no_handler",
            Error::Config(_) => "invalid_configuration",
            Error::Environment(_) => "environment",
            Error::MissingPathParam(_) | Error::Panic(_) | Error::Internal(_) => "internal",
        }
    }

    /// When the client may try again, for errors that know (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::CircuitOpen { retry_after, .. } | Error::RateLimited { retry_after, .. } => {
                Some(*retry_after)
            }
            Error::BulkheadFull { .. } | Error::Overloaded { .. } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// The headers an HTTP response for this error carries: `Retry-After` (whole seconds,
    /// rounded up), the `RateLimit-*` headers for [`Error::RateLimited`] and `Allow` for
    /// [`Error::MethodNotAllowed`].
    pub fn response_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(after) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(ceil_secs(after)));
        }
        match self {
            Error::RateLimited {
                limit,
                remaining,
                reset,
                ..
            } => {
                headers.insert("ratelimit-limit", HeaderValue::from(*limit));
                headers.insert("ratelimit-remaining", HeaderValue::from(*remaining));
                headers.insert("ratelimit-reset", HeaderValue::from(ceil_secs(*reset)));
            }
            Error::Unauthorized { challenge, .. }
            | Error::Forbidden {
                challenge: Some(challenge),
                ..
            } => {
                if let Ok(value) = HeaderValue::from_str(challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            Error::MethodNotAllowed { allow, .. } => {
                let joined = allow
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                if let Ok(value) = HeaderValue::from_str(&joined) {
                    headers.insert(header::ALLOW, value);
                }
            }
            _ => {}
        }
        headers
    }

    /// Whether the error is the client's (4xx) rather than the function's (5xx).
    pub fn is_client_error(&self) -> bool {
        self.status().is_client_error()
    }

    /// The body a client is shown: the code, a safe message, the failing fields and the
    /// request id. Server-side errors show only `"internal error"`.
    pub fn to_body(&self, request_id: &str) -> ErrorBody<'_> {
        let message: Cow<'_, str> = if self.status().is_server_error() {
            Cow::Borrowed("internal error")
        } else {
            Cow::Owned(self.to_string())
        };
        let (line, column) = match self {
            Error::MalformedJson { line, column, .. } => (Some(*line), Some(*column)),
            _ => (None, None),
        };
        ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message,
                fields: match self {
                    Error::Validation(fields) => fields.as_slice(),
                    _ => &[],
                },
                line,
                column,
                request_id: request_id.to_owned(),
            },
        }
    }
}

/// The JSON body of an error response: `{"error": {...}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// The error itself.
    pub error: ErrorDetail<'a>,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail<'a> {
    /// Stable machine-readable code.
    pub code: &'a str,
    /// Client-safe message.
    pub message: Cow<'a, str>,
    /// The failing fields, for validation errors.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub fields: &'a [FieldError],
    /// Line of a JSON syntax error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Column of a JSON syntax error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// The Lambda request id, to find the full log lines.
    pub request_id: String,
}

impl From<Error> for lambda_runtime::Diagnostic {
    fn from(error: Error) -> Self {
        lambda_runtime::Diagnostic {
            error_type: format!("Lift.{}", error.code()),
            error_message: error.to_string(),
        }
    }
}

/// Whole seconds, rounded up, so that a client never retries too early.
fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Renders an error with its whole `source()` chain, for logs.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

/// Converts a garde-style path (`items[0].name`) into a JSON pointer (`/items/0/name`).
pub(crate) fn json_pointer(path: &str) -> String {
    let mut pointer = String::with_capacity(path.len() + 1);
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        for part in segment.split('[') {
            let part = part.trim_end_matches(']');
            if part.is_empty() {
                continue;
            }
            pointer.push('/');
            pointer.push_str(&part.replace('~', "~0").replace('/', "~1"));
        }
    }
    pointer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_follow_rfc_6901() {
        assert_eq!(json_pointer("name"), "/name");
        assert_eq!(json_pointer("items[0].name"), "/items/0/name");
        assert_eq!(json_pointer("."), "");
        assert_eq!(json_pointer("a/b"), "/a~1b");
    }

    #[test]
    fn internal_errors_never_leak_into_the_body() {
        let error = Error::internal(std::io::Error::other("db password is hunter2"));
        let body = serde_json::to_string(&error.to_body("req-1")).expect("serializes");
        assert!(!body.contains("hunter2"), "{body}");
        assert!(body.contains("\"code\":\"internal\""), "{body}");
        assert!(body.contains("\"requestId\":\"req-1\""), "{body}");
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn resilience_errors_carry_retry_headers() {
        let limited = Error::RateLimited {
            limit: 10,
            remaining: 0,
            reset: Duration::from_millis(1500),
            retry_after: Duration::from_millis(200),
        };
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        let headers = limited.response_headers();
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(headers["ratelimit-limit"], "10");
        assert_eq!(headers["ratelimit-remaining"], "0");
        assert_eq!(headers["ratelimit-reset"], "2");
        let open = Error::CircuitOpen {
            name: Arc::from("db"),
            retry_after: Duration::from_secs(30),
        };
        assert_eq!(open.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(open.response_headers()["retry-after"], "30");
        assert_eq!(
            Error::Timeout {
                after: Duration::from_secs(1)
            }
            .status(),
            StatusCode::GATEWAY_TIMEOUT
        );
    }

    #[test]
    fn boxed_lift_errors_keep_their_identity() {
        let boxed: BoxError = Box::new(Error::EmptyBody);
        assert!(matches!(Error::from_boxed(boxed), Error::EmptyBody));
        let foreign: BoxError = "boom".into();
        assert!(matches!(Error::from_boxed(foreign), Error::Internal(_)));
    }
}
