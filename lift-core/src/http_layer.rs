//! Layers written for `http::Request` / `http::Response` services — tower-http's `CorsLayer`,
//! `CompressionLayer`, `TraceLayer`, `SetRequestIdLayer` and the like — on Lift's HTTP
//! requests.
//!
//! A Lift service takes a [`Context`], because one App serves HTTP and SQS, SNS, DynamoDB
//! Streams, EventBridge, WebSocket and authorizer events through one tower stack: the same
//! retry, timeout, tenancy or idempotency layer applies to a record as to a request. A
//! layer from the `http` ecosystem expects `Service<http::Request<B>>` answering
//! `http::Response<B2>`, both bodies [`http_body::Body`]s. [`HttpLayer`] puts such a layer
//! into a Lift stack:
//!
//! - an HTTP request becomes an `http::Request` with its method, path and query, headers
//!   and a real body ([`http_body_util::Full`] of the request's bytes); the layer sees it,
//!   may change it, and hands it on; what reaches the Lift service below is the request as
//!   the layer left it — headers, body and the extensions the layer added (routing already
//!   happened, so a rewritten path is not routed again);
//! - the response comes back up as an `http::Response` whose body is the response's bytes,
//!   or, for a [`StreamBody`](crate::stream::StreamBody), its chunks as they are produced —
//!   so a compressing layer compresses a stream chunk by chunk and a body-reading layer
//!   reads the real bytes — and returns to Lift as a buffered or a streamed body, as it
//!   went in;
//! - every other event (a record, a WebSocket message) goes around the layer untouched.
//!
//! An adapter rather than a `Context` built on `http::Request`: records are not requests, and
//! a conversion paid on every record and every request, wanted or not, is what Lift's
//! dispatch must not cost. The adapter pays the conversion only on requests that pass a
//! layer that needs it.
//!
//! A streamed body's [`on_deadline`](crate::stream::StreamBody::on_deadline) chunk is kept
//! when the layer leaves the body's encoding alone; a layer that sets `content-encoding`
//! (compression) takes the bytes over, and a body it encodes is then cut at the deadline
//! without that chunk.
//!
//! ```
//! use lift_core::http_layer::HttpLayer;
//! use lift_core::testing::{TestApp, events};
//! use lift_core::{App, Context, Result};
//!
//! async fn hello(_ctx: Context) -> Result<&'static str> {
//!     Ok("hello")
//! }
//!
//! /// A layer of the `http` world: adds a header to every response.
//! #[derive(Clone)]
//! struct Stamp<S>(S);
//!
//! impl<S, B> tower::Service<http::Request<B>> for Stamp<S>
//! where
//!     S: tower::Service<http::Request<B>, Response = http::Response<lift_core::http_layer::Body>>,
//!     S::Future: Send + 'static,
//! {
//!     type Response = S::Response;
//!     type Error = S::Error;
//!     type Future = std::pin::Pin<
//!         Box<dyn std::future::Future<Output = std::result::Result<S::Response, S::Error>> + Send>,
//!     >;
//!     fn poll_ready(
//!         &mut self,
//!         cx: &mut std::task::Context<'_>,
//!     ) -> std::task::Poll<std::result::Result<(), S::Error>> {
//!         self.0.poll_ready(cx)
//!     }
//!     fn call(&mut self, request: http::Request<B>) -> Self::Future {
//!         let future = self.0.call(request);
//!         Box::pin(async move {
//!             let mut response = future.await?;
//!             response.headers_mut().insert("x-stamp", http::HeaderValue::from_static("1"));
//!             Ok(response)
//!         })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<()> {
//! let app = App::new()
//!     .get("/hello", hello)
//!     .layer(HttpLayer::new(tower::layer::layer_fn(Stamp)));
//! let response = TestApp::new(app)?.http(events::http("GET", "/hello").v2()).await?;
//! assert_eq!(response.header("x-stamp"), Some("1"));
//! assert_eq!(response.text(), "hello");
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::{Buf, Bytes};
use futures_util::stream::StreamExt;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody as FrameStream};
use tower::{Layer, Service, ServiceExt};

use crate::context::{Context, Payload};
use crate::error::BoxError;
use crate::handler::BoxFuture;
use crate::response::{Body as LiftBody, Response};
use crate::stream::{StreamSlot, Streamed, take_stream};

/// The body of the responses a layer under [`HttpLayer`] sees: a response's bytes, or a
/// streamed body's chunks as they come.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The body of the requests a layer under [`HttpLayer`] sees: the request's bytes.
pub type RequestBody = Full<Bytes>;

/// Puts a layer written for `http::Request` / `http::Response` services (tower-http's, for
/// one) into a Lift stack: [`App::layer`](crate::App::layer) or
/// [`with_layer`](crate::with_layer). See the [module docs](self).
#[derive(Debug, Clone)]
pub struct HttpLayer<L> {
    layer: L,
}

impl<L> HttpLayer<L> {
    /// Adapts `layer`.
    pub fn new(layer: L) -> Self {
        HttpLayer { layer }
    }
}

impl<S: Clone, L: Layer<ToLift<S>>> Layer<S> for HttpLayer<L> {
    type Service = FromLift<L::Service, S>;

    fn layer(&self, inner: S) -> Self::Service {
        FromLift {
            layered: self.layer.layer(ToLift {
                inner: inner.clone(),
            }),
            bypass: inner,
        }
    }
}

/// The Lift service an [`HttpLayer`] makes: HTTP requests go through the adapted layer,
/// everything else straight to the service below.
#[derive(Debug, Clone)]
pub struct FromLift<L, S> {
    layered: L,
    bypass: S,
}

/// The `http` service an adapted layer wraps: it hands the request, as the layer left it,
/// to the Lift service below and its response back up as an `http::Response`.
#[derive(Debug, Clone)]
pub struct ToLift<S> {
    inner: S,
}

/// The [`Context`] riding in the `http::Request`'s extensions down to [`ToLift`].
#[derive(Clone)]
struct Carried(Context);

/// What the response's body was before it went up through the layer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Empty,
    Text,
    Binary,
    /// A [`StreamBody`](crate::stream::StreamBody).
    Streamed,
}

/// A streamed body's deadline chunk, kept aside while the body goes up through the layer.
#[derive(Clone)]
struct DeadlineChunk(Bytes);

impl<L, S, B> Service<Context> for FromLift<L, S>
where
    L: Service<http::Request<RequestBody>, Response = http::Response<B>> + Clone + Send + 'static,
    L::Error: Into<BoxError>,
    L::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    S: Service<Context, Response = Response> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        // Each call drives a clone to readiness (`oneshot`), so that the request picks its
        // path (through the layer or around it) before any readiness is taken.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ctx: Context) -> Self::Future {
        let Some(mut request) = to_http_request(&ctx) else {
            let bypass = self.bypass.clone();
            return Box::pin(async move { bypass.oneshot(ctx).await.map_err(Into::into) });
        };
        request.extensions_mut().insert(Carried(ctx));
        let layered = self.layered.clone();
        Box::pin(async move {
            let response = layered.oneshot(request).await.map_err(Into::into)?;
            from_http_response(response).await
        })
    }
}

impl<S, B> Service<http::Request<B>> for ToLift<S>
where
    S: Service<Context, Response = Response> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone stays; the service made ready in `poll_ready` serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let Carried(mut ctx) = parts
                .extensions
                .remove::<Carried>()
                .ok_or("an HttpLayer's inner service got a request that did not come through it")?;
            #[allow(irrefutable_let_patterns)] // the only payload without event-source features
            let limit = if let Payload::Http(http) = &ctx.payload {
                http.body_limit
            } else {
                usize::MAX
            };
            let body = collect_within(body, limit).await?;
            #[allow(irrefutable_let_patterns)] // the only payload without event-source features
            if let Payload::Http(http) = &mut ctx.payload {
                // Copied only when a clone of the context (a retry's) still shares it.
                let http = Arc::make_mut(http);
                http.headers = parts.headers;
                http.body = body;
            }
            if !parts.extensions.is_empty() {
                ctx.extensions_mut().extend(parts.extensions);
            }
            let response = inner.call(ctx).await.map_err(Into::into)?;
            Ok(to_http_response(response))
        })
    }
}

/// The body a layer hands on, read up to the App's body limit: past it, 413; a body that
/// cannot be read (a `Content-Encoding` its bytes do not follow), 400.
async fn collect_within<B>(body: B, limit: usize) -> Result<Bytes, BoxError>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    let mut size = 0_usize;
    // Each frame's bytes as they are (no copy for a body of one frame, the usual case).
    let mut parts: Vec<Bytes> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            let error: BoxError = error.into();
            crate::Error::bad_request(format!("the request body could not be read: {error}"))
        })?;
        if let Ok(mut data) = frame.into_data() {
            size = size.saturating_add(data.remaining());
            if size > limit {
                return Err(crate::Error::PayloadTooLarge { size, limit }.into());
            }
            let remaining = data.remaining();
            parts.push(data.copy_to_bytes(remaining));
        }
    }
    Ok(match parts.len() {
        0 => Bytes::new(),
        1 => parts.swap_remove(0),
        _ => parts.concat().into(),
    })
}

/// The `http::Request` of an HTTP [`Context`], without the context itself; `None` for
/// any other event.
fn to_http_request(ctx: &Context) -> Option<http::Request<RequestBody>> {
    let http = ctx.http()?;
    let mut target = if http.path_is_encoded {
        http.path.clone()
    } else {
        percent_encoding::utf8_percent_encode(&http.path, PATH).to_string()
    };
    if !http.query.is_empty() {
        target.push('?');
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in &http.query {
            query.append_pair(key, value);
        }
        target.push_str(&query.finish());
    }
    let mut request = http::Request::new(Full::new(http.body.clone()));
    *request.method_mut() = http.method.clone();
    *request.uri_mut() = target
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("/"));
    *request.headers_mut() = http.headers.clone();
    Some(request)
}

/// What a path may hold as it is: everything but controls, space, `"`, `#`, `%`, `<`, `>`,
/// `?`, `` ` ``, `{`, `}` (RFC 3986's path characters, `%` escaped since the path is
/// decoded here).
const PATH: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// A Lift response on its way up through the layer.
fn to_http_response(response: Response) -> http::Response<Body> {
    let streamed = take_stream(&response);
    let (mut parts, body) = response.into_parts();
    parts.extensions.remove::<StreamSlot>();
    let (shape, body) = match streamed {
        Some(streamed) => {
            if let Some(chunk) = &streamed.on_deadline {
                parts.extensions.insert(DeadlineChunk(chunk.clone()));
            }
            let frames = crate::stream::encoded(streamed).map(|chunk| chunk.map(Frame::data));
            (
                Shape::Streamed,
                BodyExt::boxed_unsync(FrameStream::new(frames)),
            )
        }
        None => {
            let (shape, bytes) = match body {
                LiftBody::Empty => (Shape::Empty, Bytes::new()),
                LiftBody::Text(text) => (Shape::Text, Bytes::from(text)),
                LiftBody::Binary(bytes) => (Shape::Binary, Bytes::from(bytes)),
                other => (Shape::Binary, Bytes::copy_from_slice(&other)),
            };
            let full = Full::new(bytes).map_err(|never| match never {});
            (shape, BodyExt::boxed_unsync(full))
        }
    };
    parts.extensions.insert(shape);
    http::Response::from_parts(parts, body)
}

/// The layer's response, back in Lift's form: a streamed body stays streamed, any other
/// is collected.
async fn from_http_response<B>(response: http::Response<B>) -> Result<Response, BoxError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    // `None`: a response the layer made itself (a CORS preflight, a timeout).
    let shape = parts.extensions.remove::<Shape>();
    let deadline = parts.extensions.remove::<DeadlineChunk>();
    if shape == Some(Shape::Streamed) {
        let encoded_here = parts.headers.contains_key(CONTENT_ENCODING);
        let chunks = body.into_data_stream().map(|chunk| match chunk {
            Ok(mut data) => Ok(data.copy_to_bytes(data.remaining())),
            Err(error) => Err(error.into()),
        });
        parts.extensions.insert(StreamSlot::new(Streamed {
            chunks: Box::pin(chunks),
            on_deadline: deadline.filter(|_| !encoded_here).map(|chunk| chunk.0),
            encoders: Vec::new(),
        }));
        parts.headers.remove(CONTENT_LENGTH);
        return Ok(Response::from_parts(parts, LiftBody::Empty));
    }
    let bytes = body.collect().await.map_err(Into::into)?.to_bytes();
    let body = if bytes.is_empty() && shape != Some(Shape::Binary) {
        LiftBody::Empty
    } else if shape != Some(Shape::Binary) && !parts.headers.contains_key(CONTENT_ENCODING) {
        match String::from_utf8(bytes.to_vec()) {
            Ok(text) => LiftBody::Text(text),
            Err(not_text) => LiftBody::Binary(not_text.into_bytes()),
        }
    } else {
        LiftBody::Binary(bytes.to_vec())
    };
    Ok(Response::from_parts(parts, body))
}
