//! Response compression: `gzip` or `deflate` (zlib) for clients that ask for it, over the
//! `flate2` crate.
//!
//! A Lambda response is capped at 6 MB and billed by the time it takes to send, and
//! neither API Gateway HTTP APIs nor Function URLs compress a function's answer, so
//! [`CompressionLayer`] does it in the function:
//!
//! - Answers to HTTP APIs, Function URLs and ALBs are compressed; answers to REST APIs
//!   only with [`CompressionLayer::rest_api_binary_media_types`], since a REST API passes
//!   a base64 body on as text unless its `binaryMediaTypes` cover the request's `Accept`.
//! - The coding is negotiated from the request's `Accept-Encoding` with its quality values
//!   (`gzip;q=1, deflate;q=0.5`, `*`, `q=0` refusals); `gzip` wins a tie. Without an
//!   acceptable coding the response goes out as it is.
//! - Only bodies worth it are compressed: at least [`CompressionLayer::min_size`] bytes
//!   (1 KiB by default), of a compressible type (`text/*`, JSON, XML, JavaScript, SVG,
//!   NDJSON, ...; [`CompressionLayer::content_types`] replaces the rule), without a
//!   `Content-Encoding` already or `Cache-Control: no-transform`, and not for `HEAD`, `204`
//!   or `304`.
//! - A compressed response gets `Content-Encoding`, `Vary: Accept-Encoding` and a binary
//!   body (base64 in the Lambda response); `Content-Length` is dropped.
//! - A streamed body ([`lift_core::stream`]) of a compressible type is compressed chunk by
//!   chunk, whatever its size: each chunk is flushed (a zlib sync flush), so a client
//!   decodes every NDJSON line or SSE event as soon as it arrives, at some cost in ratio
//!   for small chunks.
//!
//! tower-http's `CompressionLayer` also works on a Lift App (through
//! [`lift_core::http_layer::HttpLayer`]); this one stays for what that one does not do on
//! Lambda: it flushes every chunk of a streamed body, where tower-http's encoder holds bytes
//! until its buffer fills (and leaves `text/event-stream` uncompressed for that reason), so
//! a streamed reply behind a Function URL would reach the client late or not at all.
//!
//! Add it with `App::layer` last, so that it is outermost: caching and idempotency inside
//! it then keep the uncompressed answer and every client gets the coding it asked for.
//!
//! ```
//! use lift_core::App;
//! use lift_middleware::compression::CompressionLayer;
//!
//! # async fn report() -> lift_core::Result<String> { Ok(String::new()) }
//! let app = App::new()
//!     .get("/report", report)
//!     .layer(CompressionLayer::new().min_size(512));
//! # let _ = app;
//! ```

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};

use flate2::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use lift_core::{Body, BoxError, Context, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// A content coding [`CompressionLayer`] can apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Coding {
    /// `gzip` (RFC 1952).
    Gzip,
    /// `deflate`: the zlib format (RFC 1950), as HTTP's `deflate` means.
    Deflate,
}

impl Coding {
    /// The token in `Content-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }
}

/// Picks the coding for an `Accept-Encoding` value: the acceptable one with the highest
/// quality, `gzip` on a tie; `None` when neither is acceptable (identity it is).
pub fn negotiate(accept_encoding: &str) -> Option<Coding> {
    let mut gzip: Option<f32> = None;
    let mut deflate: Option<f32> = None;
    let mut any: Option<f32> = None;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';');
        let token = parts.next().unwrap_or_default().trim();
        let mut quality = 1.0_f32;
        for parameter in parts {
            if let Some((name, value)) = parameter.split_once('=')
                && name.trim().eq_ignore_ascii_case("q")
            {
                // A qvalue is 0 to 1 (RFC 9110 §12.4.2): anything else (`NaN`, `inf`, `2`)
                // is no acceptance.
                quality = value
                    .trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))
                    .unwrap_or(0.0);
            }
        }
        let slot = if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
            &mut gzip
        } else if token.eq_ignore_ascii_case("deflate") {
            &mut deflate
        } else if token == "*" {
            &mut any
        } else {
            continue;
        };
        *slot = Some(slot.map_or(quality, |q: f32| q.max(quality)));
    }
    let gzip = gzip.or(any).unwrap_or(0.0);
    let deflate = deflate.or(any).unwrap_or(0.0);
    if gzip <= 0.0 && deflate <= 0.0 {
        None
    } else if gzip >= deflate {
        Some(Coding::Gzip)
    } else {
        Some(Coding::Deflate)
    }
}

/// Whether a `Content-Type` is worth compressing: text, and the structured formats that
/// are text (JSON, XML, JavaScript, SVG, NDJSON, event streams, form data, wasm).
pub fn is_compressible(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/xml"
                | "application/javascript"
                | "application/x-javascript"
                | "application/ecmascript"
                | "application/x-ndjson"
                | "application/graphql-response+json"
                | "application/x-www-form-urlencoded"
                | "application/wasm"
                | "image/svg+xml"
        )
}

type TypeRule = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Clone)]
struct Settings {
    min_size: usize,
    level: Compression,
    compressible: TypeRule,
    /// Whether REST API answers are compressed too.
    rest_api: bool,
}

/// Compresses HTTP responses for clients that accept `gzip` or `deflate`; see the
/// [module docs](self).
///
/// # Default
/// Bodies of 1 KiB or more, of the types [`is_compressible`] accepts, at compression level
/// 6 (zlib's default).
#[derive(Clone)]
#[must_use]
pub struct CompressionLayer {
    settings: Arc<Settings>,
}

impl std::fmt::Debug for CompressionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressionLayer")
            .field("min_size", &self.settings.min_size)
            .field("level", &self.settings.level.level())
            .finish_non_exhaustive()
    }
}

impl Default for CompressionLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl CompressionLayer {
    /// The default layer.
    pub fn new() -> Self {
        CompressionLayer {
            settings: Arc::new(Settings {
                min_size: 1024,
                level: Compression::default(),
                compressible: Arc::new(is_compressible),
                rest_api: false,
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        change(Arc::make_mut(&mut self.settings));
        self
    }

    /// Leaves bodies smaller than `bytes` uncompressed (default 1024): below about a
    /// kilobyte, the coding's overhead eats the gain.
    pub fn min_size(self, bytes: usize) -> Self {
        self.with(|s| s.min_size = bytes)
    }

    /// The compression level, 0 (none) to 9 (smallest, slowest); default 6. Higher
    /// levels cost CPU time, which Lambda bills.
    pub fn level(self, level: u32) -> Self {
        self.with(|s| s.level = Compression::new(level.min(9)))
    }

    /// Compresses answers to REST API (payload 1.0) requests too, for an API whose
    /// `binaryMediaTypes` cover what its clients `Accept` (`*/*` does). Off by default: a
    /// REST API decodes a base64 body only for those types, and otherwise sends the base64
    /// text itself, labelled `Content-Encoding: gzip`, which no client can read. A REST
    /// API can also compress on its own (`minimumCompressionSize`).
    pub fn rest_api_binary_media_types(self, configured: bool) -> Self {
        self.with(|s| s.rest_api = configured)
    }

    /// Replaces the rule for which `Content-Type`s are compressed (default
    /// [`is_compressible`]).
    pub fn content_types(self, rule: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.with(|s| s.compressible = Arc::new(rule))
    }
}

impl<S> Layer<S> for CompressionLayer {
    type Service = CompressionService<S>;
    fn layer(&self, inner: S) -> CompressionService<S> {
        CompressionService {
            inner,
            settings: Arc::clone(&self.settings),
        }
    }
}

/// The compression service; see [`CompressionLayer`].
#[derive(Clone)]
pub struct CompressionService<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> std::fmt::Debug for CompressionService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressionService").finish_non_exhaustive()
    }
}

crate::inner_accessors!(CompressionService<S>);

impl<S> Service<Context> for CompressionService<S>
where
    S: Service<Context, Response = Response>,
    S::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = BoxError;
    type Future = CompressionFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, ctx: Context) -> Self::Future {
        let rest_api = ctx.source() == lift_core::Source::ApiGatewayV1;
        let coding = ctx
            .http()
            .filter(|request| request.method() != Method::HEAD)
            .filter(|_| !rest_api || self.settings.rest_api)
            .and_then(|_| ctx.header("accept-encoding"))
            .and_then(negotiate);
        CompressionFuture {
            inner: self.inner.call(ctx),
            plan: coding.map(|coding| (coding, Arc::clone(&self.settings))),
        }
    }
}

pin_project! {
    /// Resolves to the inner response, compressed when the request and the body allow.
    pub struct CompressionFuture<F> {
        #[pin]
        inner: F,
        plan: Option<(Coding, Arc<Settings>)>,
    }
}

impl<F, E> Future for CompressionFuture<F>
where
    F: Future<Output = Result<Response, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx)).map_err(Into::into);
        Poll::Ready(match (result, this.plan.take()) {
            (Ok(response), Some((coding, settings))) => Ok(compress(response, coding, &settings)),
            (result, _) => result,
        })
    }
}

/// The response, compressed with `coding` when its body is worth it.
fn compress(mut response: Response, coding: Coding, settings: &Settings) -> Response {
    if response.status() == StatusCode::NO_CONTENT || response.status() == StatusCode::NOT_MODIFIED
    {
        return response;
    }
    let headers = response.headers();
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if headers.contains_key(header::CONTENT_ENCODING)
        || header(header::CACHE_CONTROL).is_some_and(|value| {
            value
                .split(',')
                .any(|directive| directive.trim().eq_ignore_ascii_case("no-transform"))
        })
        || !header(header::CONTENT_TYPE).is_some_and(|value| (settings.compressible)(value))
    {
        return response;
    }
    if lift_core::stream::is_streaming(&response) {
        let encoder = StreamEncoder::new(coding, settings.level);
        if lift_core::stream::encode_stream(&response, encoder) {
            mark(&mut response, coding);
        }
        return response;
    }
    let bytes: &[u8] = match response.body() {
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => return response,
    };
    if bytes.len() < settings.min_size {
        return response;
    }
    let compressed = match encode(bytes, coding, settings.level) {
        Ok(compressed) => compressed,
        Err(error) => {
            tracing::warn!(target: "lift::compression", %error, "compression failed; the response goes out uncompressed");
            return response;
        }
    };
    mark(&mut response, coding);
    *response.body_mut() = Body::Binary(compressed);
    response
}

/// The headers of a response compressed with `coding`.
fn mark(response: &mut Response, coding: Coding) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.as_str()),
    );
    headers.remove(header::CONTENT_LENGTH);
    let varies = headers.get_all(header::VARY).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',').any(|name| {
                matches!(name.trim(), "*") || name.trim().eq_ignore_ascii_case("accept-encoding")
            })
        })
    });
    if !varies {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// Compresses a streamed body chunk by chunk, with a sync flush after each.
enum StreamEncoder {
    Gzip(GzEncoder<Vec<u8>>),
    Deflate(ZlibEncoder<Vec<u8>>),
}

impl StreamEncoder {
    fn new(coding: Coding, level: Compression) -> Self {
        match coding {
            Coding::Gzip => StreamEncoder::Gzip(GzEncoder::new(Vec::new(), level)),
            Coding::Deflate => StreamEncoder::Deflate(ZlibEncoder::new(Vec::new(), level)),
        }
    }
}

impl lift_core::stream::ChunkEncoder for StreamEncoder {
    fn encode(&mut self, chunk: &[u8]) -> std::io::Result<bytes::Bytes> {
        let out = match self {
            StreamEncoder::Gzip(encoder) => {
                encoder.write_all(chunk)?;
                encoder.flush()?;
                encoder.get_mut()
            }
            StreamEncoder::Deflate(encoder) => {
                encoder.write_all(chunk)?;
                encoder.flush()?;
                encoder.get_mut()
            }
        };
        Ok(std::mem::take(out).into())
    }

    fn finish(&mut self) -> std::io::Result<bytes::Bytes> {
        let out = match self {
            StreamEncoder::Gzip(encoder) => {
                encoder.try_finish()?;
                encoder.get_mut()
            }
            StreamEncoder::Deflate(encoder) => {
                encoder.try_finish()?;
                encoder.get_mut()
            }
        };
        Ok(std::mem::take(out).into())
    }
}

fn encode(bytes: &[u8], coding: Coding, level: Compression) -> std::io::Result<Vec<u8>> {
    let capacity = bytes.len() / 3 + 64;
    match coding {
        Coding::Gzip => {
            let mut encoder = GzEncoder::new(Vec::with_capacity(capacity), level);
            encoder.write_all(bytes)?;
            encoder.finish()
        }
        Coding::Deflate => {
            let mut encoder = ZlibEncoder::new(Vec::with_capacity(capacity), level);
            encoder.write_all(bytes)?;
            encoder.finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_quality_values() {
        for (header, expected) in [
            ("gzip", Some(Coding::Gzip)),
            ("deflate", Some(Coding::Deflate)),
            ("gzip, deflate, br", Some(Coding::Gzip)),
            ("deflate;q=1, gzip;q=0.5", Some(Coding::Deflate)),
            ("gzip;q=0, deflate", Some(Coding::Deflate)),
            ("gzip;q=0, deflate;q=0", None),
            ("*", Some(Coding::Gzip)),
            ("*;q=0", None),
            ("*, gzip;q=0", Some(Coding::Deflate)),
            ("br", None),
            ("identity", None),
            ("", None),
            ("GZIP ; Q=0.8", Some(Coding::Gzip)),
            ("x-gzip", Some(Coding::Gzip)),
            ("gzip;q=oops", None),
            ("gzip;q=NaN", None),
            ("gzip;q=NaN, deflate;q=0.1", Some(Coding::Deflate)),
            ("deflate;q=inf, gzip;q=0.5", Some(Coding::Gzip)),
            ("gzip;q=2, deflate;q=0.5", Some(Coding::Deflate)),
        ] {
            assert_eq!(negotiate(header), expected, "{header:?}");
        }
    }

    #[test]
    fn text_and_structured_text_types_are_compressible() {
        for compressible in [
            "text/html; charset=utf-8",
            "application/json",
            "application/problem+json",
            "application/x-ndjson",
            "image/svg+xml",
            "text/event-stream",
        ] {
            assert!(is_compressible(compressible), "{compressible}");
        }
        for not in [
            "image/png",
            "application/octet-stream",
            "application/zip",
            "video/mp4",
            "",
        ] {
            assert!(!is_compressible(not), "{not}");
        }
    }
}
