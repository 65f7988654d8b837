//! HTTP security: CORS ([`CorsLayer`]) and security response headers
//! ([`SecurityHeadersLayer`]).
//!
//! **CORS.** A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is
//! answered by the layer itself, before the router: `204` with
//! `Access-Control-Allow-Origin` (the request's origin, or `*` for any origin without
//! credentials), `-Allow-Methods`, `-Allow-Headers`, `-Max-Age`, `-Allow-Credentials` and
//! `Vary: Origin, Access-Control-Request-Method, Access-Control-Request-Headers`. A
//! preflight from an origin or for a method that is not allowed is refused with
//! [`Error::Forbidden`](lift_core::Error::Forbidden) (`403`, code `cors_forbidden`) and no
//! CORS headers. An actual request from an allowed origin gets
//! `Access-Control-Allow-Origin`, `-Allow-Credentials`, `-Expose-Headers` and
//! `Vary: Origin` on its response; one from another origin passes with only
//! `Vary: Origin` (the browser keeps the response from the page); one without `Origin`
//! passes untouched.
//!
//! Allowed origins are exact (`https://app.example.com`), patterns with one leading
//! wildcard label (`https://*.example.com` matches `https://a.example.com` and
//! `https://a.b.example.com`, never `https://example.com`, another scheme or another
//! port), or any (`*`, which [`CorsConfigBuilder::build`] refuses with credentials).
//!
//! tower-http's `CorsLayer` also works on a Lift App (through
//! [`lift_core::http_layer::HttpLayer`]). This one stays for what that one does not do: an
//! invalid configuration is a typed error at build time rather than a panic when the layer
//! is made, origin patterns need no predicate closure, and a refused preflight is a `403`
//! with Lift's error body rather than a `200` without CORS headers.
//!
//! **Security headers.** [`SecurityHeadersLayer`] adds HSTS, `X-Content-Type-Options`,
//! `X-Frame-Options` and `Referrer-Policy` to every HTTP response that does not already
//! carry them; each is configurable or removable.
//!
//! **Errors are not decorated.** Both layers change responses, not errors: when the
//! service below returns an error (a handler's `Err`, or a refusal by an inner layer such
//! as a rate limit), the App turns it into a response *outside* every layer, so it carries
//! no CORS or security headers, and a browser hides a cross-origin error's body from the
//! page. Return error *responses* (`Ok((StatusCode, body))`) where a page must read them.
//!
//! Both layers act only on HTTP requests; batch records pass through untouched. Put CORS
//! outside authentication, so that preflights (which carry no credentials) are answered:
//!
//! ```
//! use std::time::Duration;
//! use http::Method;
//! use lift_core::testing::{TestApp, events};
//! use lift_core::{App, Context, Result};
//! use lift_middleware::http_security::{CorsConfig, CorsLayer, SecurityHeadersLayer};
//! use tower::ServiceBuilder;
//!
//! async fn orders(_ctx: Context) -> Result<&'static str> {
//!     Ok("[]")
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! let cors = CorsConfig::builder()
//!     .allow_origins(["https://app.example.com", "https://*.preview.example.com"])
//!     .allow_methods([Method::GET, Method::POST, Method::DELETE])
//!     .allow_headers(["content-type", "authorization"])
//!     .expose_headers(["x-request-id"])
//!     .allow_credentials(true)
//!     .max_age(Duration::from_secs(3600))
//!     .build()?;
//! let stack = ServiceBuilder::new()
//!     .layer(SecurityHeadersLayer::new())
//!     .layer(CorsLayer::new(cors));
//! let app = TestApp::new(App::new().get("/orders", orders).layer(stack))?;
//!
//! let preflight = events::http("OPTIONS", "/orders")
//!     .header("origin", "https://pr-7.preview.example.com")
//!     .header("access-control-request-method", "DELETE");
//! let response = app.http(preflight.v2()).await?;
//! assert_eq!(response.status, 204);
//! assert_eq!(
//!     response.header("access-control-allow-origin"),
//!     Some("https://pr-7.preview.example.com")
//! );
//! assert_eq!(response.header("x-frame-options"), Some("DENY"));
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//! [`CorsConfigBuilder::build`] returns a [`ConfigError`](crate::ConfigError) naming the
//! field. At run time the CORS layer refuses disallowed preflights with `403`
//! (`cors_forbidden`); the security headers layer never fails.
//!
//! # Default
//! CORS: no origin (one is required), methods `GET, HEAD, POST`, request header
//! `content-type`, nothing exposed, no credentials, `Access-Control-Max-Age: 600`.
//! Security headers: `Strict-Transport-Security: max-age=31536000; includeSubDomains`,
//! `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
//! `Referrer-Policy: no-referrer`.

mod cors;
mod headers;
mod origin;

pub use cors::{Cors, CorsConfig, CorsConfigBuilder, CorsFuture, CorsLayer};
pub use headers::{
    FrameOptions, ReferrerPolicy, SecurityHeaders, SecurityHeadersFuture, SecurityHeadersLayer,
};
