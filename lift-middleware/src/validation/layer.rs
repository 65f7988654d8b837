//! The validation layer, its service and its future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};

use http::header;
use lift_core::{Body, BoxError, Context, Error, FieldError, Input, Json, Response};
use pin_project_lite::pin_project;
use serde_json::Value;
use tower::{Layer, Service};

use super::check::{Check, Validator};
use super::schema::JsonSchema;

/// A check of a request payload that also reads the request's [`Context`].
type ContextCheck = dyn Fn(&Value, &Context) -> Result<(), Vec<FieldError>> + Send + Sync;

/// The context-aware request checks, in the order they were added.
#[derive(Clone, Default)]
struct ContextChecks(Vec<Arc<ContextCheck>>);

impl fmt::Debug for ContextChecks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} context check(s)", self.0.len())
    }
}

/// What the layer checks, shared by every service it makes.
#[derive(Debug, Clone, Default)]
struct Rules {
    request: Validator,
    request_in_context: ContextChecks,
    response: Validator,
}

/// Validates request payloads before the handler runs, and optionally the handler's
/// response before it is sent; see the [module docs](super).
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ValidationLayer {
    rules: Arc<Rules>,
}

impl ValidationLayer {
    /// A layer that checks nothing until a schema or a check is added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates each request payload against `schema` (replacing any set before).
    pub fn request(mut self, schema: JsonSchema) -> Self {
        let rules = Arc::make_mut(&mut self.rules);
        rules.request = std::mem::take(&mut rules.request).schema(schema);
        self
    }

    /// Adds a custom check of each request payload, run after the schema; its failures
    /// are reported together with the schema's.
    pub fn check(mut self, check: impl Check) -> Self {
        let rules = Arc::make_mut(&mut self.rules);
        rules.request = std::mem::take(&mut rules.request).check(check);
        self
    }

    /// Adds a custom check of each request payload that also reads the request's
    /// [`Context`]: its tenant, headers, route or principal (a limit that depends on the
    /// tenant's plan, a field that must match the caller). It runs after the schema and
    /// the plain checks, and its failures are reported together with theirs.
    pub fn check_with_context(
        mut self,
        check: impl Fn(&Value, &Context) -> Result<(), Vec<FieldError>> + Send + Sync + 'static,
    ) -> Self {
        let rules = Arc::make_mut(&mut self.rules);
        rules.request_in_context.0.push(Arc::new(check));
        self
    }

    /// Validates each successful (2xx) response body against `schema` (replacing any set
    /// before).
    pub fn response(mut self, schema: JsonSchema) -> Self {
        let rules = Arc::make_mut(&mut self.rules);
        rules.response = std::mem::take(&mut rules.response).schema(schema);
        self
    }

    /// Adds a custom check of each successful (2xx) response body.
    pub fn response_check(mut self, check: impl Check) -> Self {
        let rules = Arc::make_mut(&mut self.rules);
        rules.response = std::mem::take(&mut rules.response).check(check);
        self
    }
}

impl<S> Layer<S> for ValidationLayer {
    type Service = Validation<S>;

    fn layer(&self, inner: S) -> Validation<S> {
        Validation {
            inner,
            rules: Arc::clone(&self.rules),
        }
    }
}

/// Validates requests and responses around `S`; made by [`ValidationLayer`].
#[derive(Debug, Clone)]
pub struct Validation<S> {
    inner: S,
    rules: Arc<Rules>,
}

crate::inner_accessors!(Validation<S>);

/// The validated request payload, put into the [`Context`]'s extensions by
/// [`ValidationLayer`] when it validates requests, so that a handler of an untyped payload
/// need not parse it again: `ctx.extensions().get::<ValidatedJson>()`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedJson(Arc<Value>);

impl ValidatedJson {
    /// The payload, as it passed validation.
    pub fn value(&self) -> &Value {
        &self.0
    }
}

/// A handler's response broke its schema; it was not sent. Reaches the App as
/// [`Error::Internal`] (a 500 whose body says only "internal error", or a failed record),
/// so classifiers find it with `downcast_ref`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the response breaks its schema ({} violation(s))", .violations.len())]
pub struct InvalidResponse {
    violations: Vec<FieldError>,
}

impl InvalidResponse {
    /// Every violation: the JSON pointer in the response body and the reason (which never
    /// quotes the body's values).
    pub fn violations(&self) -> &[FieldError] {
        &self.violations
    }
}

/// Renders field errors for a log line: `/a: reason; /b: reason`.
struct Violations<'a>(&'a [FieldError]);

impl fmt::Display for Violations<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, field) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            let pointer = if field.pointer.is_empty() {
                "(document)"
            } else {
                &field.pointer
            };
            write!(f, "{pointer}: {}", field.message)?;
        }
        Ok(())
    }
}

/// Parses the payload as a typed input would (same 415/400 errors) and validates it.
fn check_request(rules: &Rules, ctx: &Context) -> Result<Value, Error> {
    let Json(value) = <Json<Value> as Input>::from_context(ctx)?;
    let mut fields = rules.request.validate(&value).err().unwrap_or_default();
    for check in &rules.request_in_context.0 {
        if let Err(errors) = check(&value, ctx) {
            if errors.is_empty() {
                fields.push(FieldError {
                    pointer: String::new(),
                    message: "failed a custom check".to_owned(),
                });
            }
            fields.extend(errors);
        }
    }
    let outcome = if fields.is_empty() {
        Ok(())
    } else {
        Err(fields)
    };
    outcome.map_err(|fields| {
        let violations = Violations(&fields);
        if ctx.source().is_http() {
            tracing::debug!(target: "lift::validation", count = fields.len(), %violations, "request refused");
        } else {
            tracing::info!(target: "lift::validation", count = fields.len(), %violations, "record refused");
        }
        Error::Validation(fields)
    })?;
    Ok(value)
}

/// `application/json` or `application/*+json`, with or without parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Checks a successful response's body; errors and bodiless responses pass.
fn check_response(validator: &Validator, response: &Response) -> Result<(), Vec<FieldError>> {
    if !response.status().is_success() {
        return Ok(());
    }
    // An encoded body (pre-compressed JSON, or a compression layer inside this one) is not
    // JSON to read as it is: left unchecked, at DEBUG, rather than refused as malformed.
    if response
        .headers()
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|coding| !coding.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        tracing::debug!(target: "lift::validation", "response not validated: its body is content-encoded");
        return Ok(());
    }
    let bytes: &[u8] = match response.body() {
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => return Ok(()),
    };
    if bytes.is_empty() {
        return Ok(());
    }
    let document = |message: String| {
        vec![FieldError {
            pointer: String::new(),
            message,
        }]
    };
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    match content_type {
        Some(content_type) if is_json(&content_type) => {}
        Some(content_type) => {
            return Err(document(format!("the body is `{content_type}`, not JSON")));
        }
        None => {
            return Err(document(
                "the body has no content type; JSON was expected".to_owned(),
            ));
        }
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|error| {
        document(format!(
            "the body is not well-formed JSON (line {}, column {})",
            error.line(),
            error.column()
        ))
    })?;
    validator.validate(&value)
}

impl<S> Service<Context> for Validation<S>
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
        if !self.rules.request.is_empty() || !self.rules.request_in_context.0.is_empty() {
            match check_request(&self.rules, &ctx) {
                Ok(value) => {
                    ctx.extensions_mut().insert(ValidatedJson(Arc::new(value)));
                }
                Err(error) => {
                    return ResponseFuture {
                        state: State::Refused { error: Some(error) },
                    };
                }
            }
        }
        let rules = (!self.rules.response.is_empty()).then(|| Arc::clone(&self.rules));
        ResponseFuture {
            state: State::Forward {
                inner: self.inner.call(ctx),
                rules,
            },
        }
    }
}

pin_project! {
    /// Resolves to the refusal of an invalid request, or to the inner response once it
    /// passed response validation.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Refused { error: Option<Error> },
        Forward { #[pin] inner: F, rules: Option<Arc<Rules>> },
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused { error } => Poll::Ready(Err(match error.take() {
                Some(error) => Box::new(error),
                None => "validation ResponseFuture polled after completion".into(),
            })),
            StateProj::Forward { inner, rules } => {
                let response = ready!(inner.poll(cx)).map_err(Into::into)?;
                let Some(rules) = rules.take() else {
                    return Poll::Ready(Ok(response));
                };
                match check_response(&rules.response, &response) {
                    Ok(()) => Poll::Ready(Ok(response)),
                    Err(violations) => {
                        tracing::error!(
                            target: "lift::validation",
                            status = response.status().as_u16(),
                            count = violations.len(),
                            violations = %Violations(&violations),
                            "the response breaks its schema; it was not sent"
                        );
                        drop(response);
                        Poll::Ready(Err(Box::new(Error::internal(InvalidResponse {
                            violations,
                        }))))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }

    #[test]
    fn violations_render_for_logs() {
        let fields = [
            FieldError {
                pointer: "/a".to_owned(),
                message: "is required".to_owned(),
            },
            FieldError {
                pointer: String::new(),
                message: "not JSON".to_owned(),
            },
        ];
        assert_eq!(
            Violations(&fields).to_string(),
            "/a: is required; (document): not JSON"
        );
    }
}
