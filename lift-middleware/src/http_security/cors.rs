//! CORS: the configuration, its builder, the layer, the service and its future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use lift_core::{Body, BoxError, Context, Error, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::origin::{self, OriginRule};
use crate::error::{ConfigError, check};

const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Which origins may read responses.
#[derive(Debug, Clone)]
enum Origins {
    /// `*`: every origin (never with credentials).
    Any,
    /// Exact origins and `*.`-patterns.
    List(Vec<OriginRule>),
}

/// Which request headers a preflight allows.
#[derive(Debug, Clone)]
enum AllowHeaders {
    /// These, joined (`None` when the list is empty).
    List(Option<HeaderValue>),
    /// Whatever `Access-Control-Request-Headers` asks for.
    Mirror,
}

/// A validated CORS configuration; see [`CorsConfig::builder`].
#[derive(Debug, Clone)]
pub struct CorsConfig {
    origins: Origins,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    allow_headers: AllowHeaders,
    expose_headers: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

impl CorsConfig {
    /// Starts a configuration.
    ///
    /// # Default
    /// No origin (at least one is required); methods `GET, HEAD, POST`; request header
    /// `content-type`; nothing exposed; no credentials; preflights cached 10 minutes.
    pub fn builder() -> CorsConfigBuilder {
        CorsConfigBuilder {
            origins: Vec::new(),
            methods: vec![Method::GET, Method::HEAD, Method::POST],
            allow_headers: Some(vec!["content-type".to_owned()]),
            expose_headers: Vec::new(),
            credentials: false,
            max_age: Duration::from_secs(600),
        }
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, or `None` when it is not
    /// allowed: the request's own origin for a list, `*` for any origin.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match &self.origins {
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::List(rules) => {
                let parts = origin::parse(origin.to_str().ok()?)?;
                rules
                    .iter()
                    .any(|rule| rule.matches(&parts))
                    .then(|| origin.clone())
            }
        }
    }

    /// Answers a preflight: 204 with the CORS headers, or 403 for an origin or a method
    /// that is not allowed.
    fn preflight(&self, origin: &HeaderValue, request: &HeaderMap) -> Result<Response, Error> {
        let Some(allow_origin) = self.allow_origin(origin) else {
            tracing::debug!(target: "lift::cors", origin = ?origin, "preflight from a disallowed origin");
            return Err(Error::forbidden(
                "cors_forbidden",
                "the origin is not allowed to make this request",
            ));
        };
        let method = request
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
        if !method.as_ref().is_some_and(|m| self.methods.contains(m)) {
            tracing::debug!(target: "lift::cors", origin = ?origin, method = ?method, "preflight for a disallowed method");
            return Err(Error::forbidden(
                "cors_forbidden",
                "the method is not allowed for cross-origin requests",
            ));
        }
        let mut response = Response::new(Body::Empty);
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        let allow_headers = match &self.allow_headers {
            AllowHeaders::List(list) => list.clone(),
            AllowHeaders::Mirror => request.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
        };
        if let Some(allow_headers) = allow_headers {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
        }
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        headers.insert(header::VARY, HeaderValue::from_static(PREFLIGHT_VARY));
        Ok(response)
    }

    /// Adds the headers of an actual (non-preflight) response.
    fn decorate(&self, allow_origin: Option<HeaderValue>, headers: &mut HeaderMap) {
        if let Some(allow_origin) = allow_origin {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
            if self.credentials {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            if let Some(expose) = &self.expose_headers {
                headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
            }
        }
        add_vary_origin(headers);
    }
}

/// Adds `Origin` to `Vary`, keeping what the handler listed (and leaving `Vary: *`).
fn add_vary_origin(headers: &mut HeaderMap) {
    let mut listed = Vec::new();
    for value in headers.get_all(header::VARY) {
        let Ok(text) = value.to_str() else {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
            return;
        };
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" || name.eq_ignore_ascii_case("origin") {
                return;
            }
            listed.push(name);
        }
    }
    if listed.is_empty() {
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        return;
    }
    let joined = format!("{}, Origin", listed.join(", "));
    match HeaderValue::from_str(&joined) {
        Ok(value) => {
            headers.insert(header::VARY, value);
        }
        Err(_) => {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

/// Builds a [`CorsConfig`]; [`CorsConfigBuilder::build`] validates it.
#[derive(Debug, Clone)]
#[must_use]
pub struct CorsConfigBuilder {
    origins: Vec<String>,
    methods: Vec<Method>,
    allow_headers: Option<Vec<String>>,
    expose_headers: Vec<String>,
    credentials: bool,
    max_age: Duration,
}

impl CorsConfigBuilder {
    /// Allows one origin (repeat for several): exact (`https://app.example.com`), a pattern
    /// with one leading wildcard label (`https://*.example.com`: any subdomain, at any depth,
    /// of `example.com`, never `example.com` itself, with the same scheme and port), or `*`
    /// for any origin.
    pub fn allow_origin(mut self, origin: &str) -> Self {
        self.origins.push(origin.to_owned());
        self
    }

    /// Allows each of `origins`, as [`CorsConfigBuilder::allow_origin`] does.
    pub fn allow_origins(mut self, origins: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        self.origins
            .extend(origins.into_iter().map(|o| o.as_ref().to_owned()));
        self
    }

    /// Allows any origin (`Access-Control-Allow-Origin: *`); refused with credentials.
    pub fn allow_any_origin(self) -> Self {
        self.allow_origin("*")
    }

    /// The methods cross-origin requests may use (replaces the default).
    pub fn allow_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// The request headers cross-origin requests may send (replaces the default).
    pub fn allow_headers(mut self, headers: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        self.allow_headers = Some(headers.into_iter().map(|h| h.as_ref().to_owned()).collect());
        self
    }

    /// Allows whatever request headers a preflight asks for (it echoes
    /// `Access-Control-Request-Headers`).
    pub fn mirror_request_headers(mut self) -> Self {
        self.allow_headers = None;
        self
    }

    /// The response headers a cross-origin page may read, beyond the CORS-safelisted ones.
    pub fn expose_headers(mut self, headers: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        self.expose_headers = headers.into_iter().map(|h| h.as_ref().to_owned()).collect();
        self
    }

    /// Whether cross-origin requests may carry cookies and credentials
    /// (`Access-Control-Allow-Credentials: true`).
    pub fn allow_credentials(mut self, allow: bool) -> Self {
        self.credentials = allow;
        self
    }

    /// How long a browser may cache a preflight answer (`Access-Control-Max-Age`).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field: `allowed_origins` (none, or one that is not
    /// `scheme://host[:port]` with at most a leading `*.` label, or `*` mixed with others),
    /// `allow_credentials` (with any origin), `allowed_methods` (none),
    /// `allowed_headers`/`exposed_headers` (an invalid header name, or `*`), `max_age`
    /// (over 24 hours).
    pub fn build(self) -> Result<CorsConfig, ConfigError> {
        check(
            !self.origins.is_empty(),
            "allowed_origins",
            "at least one origin is required",
        )?;
        let any = self.origins.iter().any(|o| o.trim() == "*");
        let origins = if any {
            if self.origins.iter().any(|o| o.trim() != "*") {
                return Err(ConfigError::Conflict {
                    field: "allowed_origins",
                    reason: "`*` cannot be combined with listed origins",
                });
            }
            if self.credentials {
                return Err(ConfigError::Conflict {
                    field: "allow_credentials",
                    reason: "credentials cannot be allowed for any origin (`*`); list the origins",
                });
            }
            Origins::Any
        } else {
            let mut rules = Vec::with_capacity(self.origins.len());
            for origin in &self.origins {
                let rule = OriginRule::parse(origin).ok_or(ConfigError::OutOfRange {
                    field: "allowed_origins",
                    reason: "an origin is `scheme://host[:port]`, optionally with one leading `*.` label before at least two labels",
                })?;
                rules.push(rule);
            }
            Origins::List(rules)
        };
        check(
            !self.methods.is_empty(),
            "allowed_methods",
            "at least one method is required",
        )?;
        let allow_methods = joined(
            self.methods.iter().map(Method::as_str),
            "allowed_methods",
            "methods must be header-safe tokens",
        )?
        .ok_or(ConfigError::OutOfRange {
            field: "allowed_methods",
            reason: "at least one method is required",
        })?;
        let allow_headers = match &self.allow_headers {
            Some(list) => AllowHeaders::List(header_list(list, "allowed_headers")?),
            None => AllowHeaders::Mirror,
        };
        let expose_headers = header_list(&self.expose_headers, "exposed_headers")?;
        check(
            self.max_age <= MAX_MAX_AGE,
            "max_age",
            "at most 24 hours (browsers cap it lower)",
        )?;
        Ok(CorsConfig {
            origins,
            methods: self.methods,
            allow_methods,
            allow_headers,
            expose_headers,
            credentials: self.credentials,
            max_age: HeaderValue::from(self.max_age.as_secs()),
        })
    }
}

/// Validates header names (no `*`) and joins them, lower-cased; `None` for an empty list.
fn header_list(names: &[String], field: &'static str) -> Result<Option<HeaderValue>, ConfigError> {
    let mut valid = Vec::with_capacity(names.len());
    for name in names {
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
            ConfigError::OutOfRange {
                field,
                reason: "not a valid header name",
            }
        })?;
        check(
            name.as_str() != "*",
            field,
            "`*` is not a header name; list the headers (or mirror request headers)",
        )?;
        valid.push(name);
    }
    joined(
        valid.iter().map(HeaderName::as_str),
        field,
        "not a valid header name",
    )
}

fn joined<'a>(
    items: impl Iterator<Item = &'a str>,
    field: &'static str,
    reason: &'static str,
) -> Result<Option<HeaderValue>, ConfigError> {
    let text = items.collect::<Vec<_>>().join(", ");
    if text.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(&text)
        .map(Some)
        .map_err(|_| ConfigError::OutOfRange { field, reason })
}

/// Applies [`Cors`] to a service.
#[derive(Debug, Clone)]
pub struct CorsLayer {
    config: Arc<CorsConfig>,
}

impl CorsLayer {
    /// A layer applying `config`.
    pub fn new(config: CorsConfig) -> Self {
        CorsLayer {
            config: Arc::new(config),
        }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;
    fn layer(&self, inner: S) -> Cors<S> {
        Cors {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// Answers CORS preflights and adds CORS headers to responses for allowed origins.
#[derive(Debug, Clone)]
pub struct Cors<S> {
    inner: S,
    config: Arc<CorsConfig>,
}

crate::inner_accessors!(Cors<S>);

impl<S> Service<Context> for Cors<S>
where
    S: Service<Context, Response = Response>,
    S::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = BoxError;
    type Future = CorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, ctx: Context) -> Self::Future {
        let request = ctx.http();
        let Some(origin) = request.and_then(|r| r.headers().get(header::ORIGIN).cloned()) else {
            // No CORS headers, but `Vary: Origin` on an HTTP response all the same: a cache
            // must not hand this answer, without them, to a cross-origin request.
            let decorate = request.is_some().then(|| Decorate {
                allow_origin: None,
                config: Arc::clone(&self.config),
            });
            return CorsFuture::forward(self.inner.call(ctx), decorate);
        };
        let preflight = request.is_some_and(|r| {
            r.method() == Method::OPTIONS
                && r.headers()
                    .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        });
        if preflight {
            let answer = match request {
                Some(r) => self.config.preflight(&origin, r.headers()),
                None => Err(Error::forbidden("cors_forbidden", "not an HTTP request")),
            };
            return CorsFuture {
                state: State::Answered {
                    result: Some(answer.map_err(|e| Box::new(e) as BoxError)),
                },
            };
        }
        let allow_origin = self.config.allow_origin(&origin);
        let decorate = Decorate {
            allow_origin,
            config: Arc::clone(&self.config),
        };
        CorsFuture::forward(self.inner.call(ctx), Some(decorate))
    }
}

/// What an actual request's response gets once it resolves.
#[derive(Debug)]
struct Decorate {
    allow_origin: Option<HeaderValue>,
    config: Arc<CorsConfig>,
}

pin_project! {
    /// Resolves to the preflight answer, or to the inner response with CORS headers added.
    pub struct CorsFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Answered { result: Option<Result<Response, BoxError>> },
        Forward { #[pin] inner: F, decorate: Option<Decorate> },
    }
}

impl<F> CorsFuture<F> {
    fn forward(inner: F, decorate: Option<Decorate>) -> Self {
        CorsFuture {
            state: State::Forward { inner, decorate },
        }
    }
}

impl<F, E> Future for CorsFuture<F>
where
    F: Future<Output = Result<Response, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Answered { result } => Poll::Ready(
                result
                    .take()
                    .unwrap_or_else(|| Err("CorsFuture polled after completion".into())),
            ),
            StateProj::Forward { inner, decorate } => {
                let mut result = ready!(inner.poll(cx)).map_err(Into::into);
                if let (Ok(response), Some(decorate)) = (&mut result, decorate.take()) {
                    decorate
                        .config
                        .decorate(decorate.allow_origin, response.headers_mut());
                }
                Poll::Ready(result)
            }
        }
    }
}
