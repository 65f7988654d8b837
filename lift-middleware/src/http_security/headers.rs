//! Security response headers: the layer, the service and its future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use lift_core::{BoxError, Context, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// `X-Frame-Options`: whether pages may frame the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameOptions {
    /// `DENY`: never.
    Deny,
    /// `SAMEORIGIN`: only pages of the same origin.
    SameOrigin,
}

impl FrameOptions {
    fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            FrameOptions::Deny => "DENY",
            FrameOptions::SameOrigin => "SAMEORIGIN",
        })
    }
}

/// `Referrer-Policy`: how much of the page's URL a browser sends as `Referer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReferrerPolicy {
    /// `no-referrer`.
    NoReferrer,
    /// `no-referrer-when-downgrade`.
    NoReferrerWhenDowngrade,
    /// `origin`.
    Origin,
    /// `origin-when-cross-origin`.
    OriginWhenCrossOrigin,
    /// `same-origin`.
    SameOrigin,
    /// `strict-origin`.
    StrictOrigin,
    /// `strict-origin-when-cross-origin`.
    StrictOriginWhenCrossOrigin,
    /// `unsafe-url`.
    UnsafeUrl,
}

impl ReferrerPolicy {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReferrerPolicy::NoReferrer => "no-referrer",
            ReferrerPolicy::NoReferrerWhenDowngrade => "no-referrer-when-downgrade",
            ReferrerPolicy::Origin => "origin",
            ReferrerPolicy::OriginWhenCrossOrigin => "origin-when-cross-origin",
            ReferrerPolicy::SameOrigin => "same-origin",
            ReferrerPolicy::StrictOrigin => "strict-origin",
            ReferrerPolicy::StrictOriginWhenCrossOrigin => "strict-origin-when-cross-origin",
            ReferrerPolicy::UnsafeUrl => "unsafe-url",
        }
    }
}

/// Adds security headers to HTTP responses, never replacing one the handler set.
///
/// # Default
/// `Strict-Transport-Security: max-age=31536000; includeSubDomains`,
/// `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
/// `Referrer-Policy: no-referrer`. Remove any with [`SecurityHeadersLayer::without`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SecurityHeadersLayer {
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
}

impl Default for SecurityHeadersLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl SecurityHeadersLayer {
    /// The default headers (listed under `# Default` on [`SecurityHeadersLayer`]).
    pub fn new() -> Self {
        Self::empty()
            .with_hsts(Duration::from_secs(31_536_000), true)
            .with_header(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            )
            .with_frame_options(FrameOptions::Deny)
            .with_referrer_policy(ReferrerPolicy::NoReferrer)
    }

    /// No header at all; add them with the `with_*` methods.
    pub fn empty() -> Self {
        SecurityHeadersLayer {
            headers: Arc::new(Vec::new()),
        }
    }

    /// Sets `Strict-Transport-Security: max-age=<secs>[; includeSubDomains]`.
    pub fn with_hsts(self, max_age: Duration, include_subdomains: bool) -> Self {
        let mut value = format!("max-age={}", max_age.as_secs());
        if include_subdomains {
            value.push_str("; includeSubDomains");
        }
        match HeaderValue::from_str(&value) {
            Ok(value) => self.with_header(header::STRICT_TRANSPORT_SECURITY, value),
            // Digits and ASCII only: always a valid value.
            Err(_) => self,
        }
    }

    /// Sets `X-Frame-Options`.
    pub fn with_frame_options(self, options: FrameOptions) -> Self {
        self.with_header(header::X_FRAME_OPTIONS, options.value())
    }

    /// Sets `Referrer-Policy`.
    pub fn with_referrer_policy(self, policy: ReferrerPolicy) -> Self {
        self.with_header(
            header::REFERRER_POLICY,
            HeaderValue::from_static(policy.as_str()),
        )
    }

    /// Sets any header (`Content-Security-Policy`, `Permissions-Policy`, ...), replacing the
    /// value this layer had for it.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        let headers = Arc::make_mut(&mut self.headers);
        match headers.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => headers.push((name, value)),
        }
        self
    }

    /// Stops adding `name` (e.g. `header::STRICT_TRANSPORT_SECURITY`).
    pub fn without(mut self, name: HeaderName) -> Self {
        Arc::make_mut(&mut self.headers).retain(|(n, _)| *n != name);
        self
    }
}

impl<S> Layer<S> for SecurityHeadersLayer {
    type Service = SecurityHeaders<S>;
    fn layer(&self, inner: S) -> SecurityHeaders<S> {
        SecurityHeaders {
            inner,
            headers: Arc::clone(&self.headers),
        }
    }
}

/// Adds the configured security headers to HTTP responses.
#[derive(Debug, Clone)]
pub struct SecurityHeaders<S> {
    inner: S,
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
}

crate::inner_accessors!(SecurityHeaders<S>);

impl<S> Service<Context> for SecurityHeaders<S>
where
    S: Service<Context, Response = Response>,
    S::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = BoxError;
    type Future = SecurityHeadersFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, ctx: Context) -> Self::Future {
        let headers = ctx.source().is_http().then(|| Arc::clone(&self.headers));
        SecurityHeadersFuture {
            inner: self.inner.call(ctx),
            headers,
        }
    }
}

pin_project! {
    /// Resolves to the inner response with the missing security headers added.
    pub struct SecurityHeadersFuture<F> {
        #[pin]
        inner: F,
        headers: Option<Arc<Vec<(HeaderName, HeaderValue)>>>,
    }
}

impl<F, E> Future for SecurityHeadersFuture<F>
where
    F: Future<Output = Result<Response, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx)).map_err(Into::into);
        if let (Ok(response), Some(headers)) = (&mut result, this.headers.take()) {
            let present = response.headers_mut();
            for (name, value) in headers.iter() {
                if !present.contains_key(name) {
                    present.insert(name.clone(), value.clone());
                }
            }
        }
        Poll::Ready(result)
    }
}
