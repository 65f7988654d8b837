//! The [`App`] builder and the Lambda service it becomes.

#[cfg(feature = "authorizer")]
mod authorizer;
#[cfg(feature = "dynamodb")]
mod dynamodb;
#[cfg(feature = "eventbridge")]
mod eventbridge;
#[cfg(feature = "sns")]
mod sns;
#[cfg(feature = "sqs")]
mod sqs;
mod streaming;
#[cfg(feature = "websocket")]
mod websocket;

use std::borrow::Cow;
#[cfg(feature = "sqs")]
use std::num::NonZeroUsize;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Instant, SystemTime};

use aws_lambda_events::alb::AlbTargetGroupRequest;
use aws_lambda_events::apigw::ApiGatewayProxyRequest;
use futures_util::future::{Either, FutureExt};
use http::Method;
use lambda_runtime::LambdaEvent;
use serde_json::value::RawValue;
use tower::{Layer, Service, ServiceExt};

use crate::context::{Context, HttpRequest, InvocationDeadline, Payload, Source};
use crate::error::{BoxError, Chain, Error};
use crate::handler::{BoxFuture, Dispatch, Endpoint, Handler};
use crate::http_event;
use crate::metrics::{Metrics, MetricsConfig, Unit as MetricUnit};
use crate::probe::{Kind, probe};
use crate::response::{Response, json_response};
use crate::router::Router;

pub use crate::boxed::BoxService;

/// Lambda's synchronous invocation payload limit (6 MB), the default body limit.
pub const DEFAULT_BODY_LIMIT: usize = 6 * 1024 * 1024;

/// The header an HTTP error answer carries, with the value `before-handler`, when a layer
/// (a rate limit, a load shedder, a bulkhead, an open circuit, authentication) refused the
/// request before its handler was called: nothing of the handler's ran, so a caller may
/// send even a request that is not idempotent to another instance. An error the handler
/// returns (say an open circuit of its own outbound call, after it wrote something) has
/// none.
pub const REFUSED_HEADER: &str = "x-lift-refused";

/// A Lambda function: handlers for every event source, one middleware stack, one binary.
///
/// The event's shape picks the handler: HTTP events (API Gateway REST and HTTP APIs,
/// Function URLs, ALB) are routed by method and path; WebSocket API events by route key
/// ([`App::websocket`]); SQS, DynamoDB Streams and SNS batches run one handler call per
/// record; EventBridge events are routed by `source` and `detail-type`.
///
/// ```no_run
/// use lift_core::{App, Context, Json, Result};
///
/// async fn hello(ctx: Context) -> Result<Json<String>> {
///     Ok(Json(format!("Hello, {}!", ctx.path_param("name")?)))
/// }
///
/// # async fn run() -> Result<()> {
/// App::new().get("/hello/{name}", hello).run().await
/// # }
/// ```
pub struct App {
    router: Router,
    #[cfg(feature = "sqs")]
    sqs: Option<Endpoint>,
    #[cfg(feature = "dynamodb")]
    dynamodb: Option<Endpoint>,
    #[cfg(feature = "sns")]
    sns: Option<Endpoint>,
    #[cfg(feature = "eventbridge")]
    events: Vec<eventbridge::EventRoute>,
    #[cfg(feature = "eventbridge")]
    schedule: Option<Endpoint>,
    #[cfg(feature = "eventbridge")]
    event_fallback: Option<Endpoint>,
    #[cfg(feature = "websocket")]
    websocket: websocket::WebSocketRoutes,
    #[cfg(feature = "authorizer")]
    authorizer: Option<Endpoint>,
    #[cfg(feature = "authorizer")]
    authorizer_simple: bool,
    service: Option<BoxService>,
    body_limit: usize,
    base_paths: Vec<Box<str>>,
    #[cfg(feature = "sqs")]
    sqs_concurrency: NonZeroUsize,
    #[cfg(any(feature = "sqs", feature = "dynamodb"))]
    batch_deadline_margin: std::time::Duration,
    metrics: Option<MetricsConfig>,
    streaming: streaming::StreamingConfig,
    config_error: Option<String>,
    background: Vec<crate::lifecycle::Task>,
    /// Set by [`App::shutdown_extension`]`(true)`: see [`crate::shutdown::Hooks`].
    shutdown_extension: Option<crate::shutdown::Hooks>,
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("body_limit", &self.body_limit)
            .field("base_paths", &self.base_paths)
            .finish_non_exhaustive()
    }
}

macro_rules! method_routes {
    ($($(#[$doc:meta])* $name:ident => $method:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $name<H: Handler<Args>, Args: 'static>(self, path: &str, handler: H) -> Self {
                self.route(Method::$method, path, handler)
            }
        )*
    };
}

impl App {
    /// An App with no handlers, no middleware and a body limit of 6 MB.
    pub fn new() -> Self {
        App {
            router: Router::default(),
            #[cfg(feature = "sqs")]
            sqs: None,
            #[cfg(feature = "dynamodb")]
            dynamodb: None,
            #[cfg(feature = "sns")]
            sns: None,
            #[cfg(feature = "eventbridge")]
            events: Vec::new(),
            #[cfg(feature = "eventbridge")]
            schedule: None,
            #[cfg(feature = "eventbridge")]
            event_fallback: None,
            #[cfg(feature = "websocket")]
            websocket: websocket::WebSocketRoutes::default(),
            #[cfg(feature = "authorizer")]
            authorizer: None,
            #[cfg(feature = "authorizer")]
            authorizer_simple: false,
            service: None,
            body_limit: DEFAULT_BODY_LIMIT,
            base_paths: Vec::new(),
            #[cfg(feature = "sqs")]
            sqs_concurrency: NonZeroUsize::MIN,
            #[cfg(any(feature = "sqs", feature = "dynamodb"))]
            batch_deadline_margin: DEFAULT_BATCH_DEADLINE_MARGIN,
            metrics: None,
            streaming: streaming::StreamingConfig::default(),
            config_error: None,
            background: Vec::new(),
            shutdown_extension: None,
        }
    }

    /// Puts `endpoint` in `slot`, or remembers a second registration of `what` as a
    /// configuration error (the second would silently replace the first).
    #[cfg(any(
        feature = "sqs",
        feature = "sns",
        feature = "dynamodb",
        feature = "eventbridge",
        feature = "authorizer"
    ))]
    fn register_once(
        slot: &mut Option<Endpoint>,
        endpoint: Endpoint,
        what: &str,
    ) -> Result<(), String> {
        if slot.is_some() {
            return Err(format!("{what} is registered twice"));
        }
        *slot = Some(endpoint);
        Ok(())
    }

    fn remember(&mut self, result: Result<(), String>) {
        if let Err(error) = result
            && self.config_error.is_none()
        {
            self.config_error = Some(error);
        }
    }

    /// Routes `method` on `path` to `handler`. Paths take `{param}` segments and a final
    /// `{*rest}` catch-all. A conflicting or duplicate route is reported by
    /// [`App::into_service`] and [`App::run`].
    pub fn route<H: Handler<Args>, Args: 'static>(
        mut self,
        method: Method,
        path: &str,
        handler: H,
    ) -> Self {
        let result = self.router.add(Some(method), path, Endpoint::new(handler));
        self.remember(result);
        self
    }

    /// Routes every method on `path` that has no route of its own to `handler`.
    pub fn any<H: Handler<Args>, Args: 'static>(mut self, path: &str, handler: H) -> Self {
        let result = self.router.add(None, path, Endpoint::new(handler));
        self.remember(result);
        self
    }

    method_routes! {
        /// Routes `GET` on `path`.
        get => GET;
        /// Routes `POST` on `path`.
        post => POST;
        /// Routes `PUT` on `path`.
        put => PUT;
        /// Routes `PATCH` on `path`.
        patch => PATCH;
        /// Routes `DELETE` on `path`.
        delete => DELETE;
    }

    /// Wraps every handler call (each HTTP request and each record) in `layer`.
    ///
    /// Layers see the [`Context`] after routing, so [`Context::route`] is known. The layer
    /// added last is the outermost. Any `tower` layer whose service is `Clone + Send + Sync`
    /// fits; errors it raises are mapped through [`Error::from_boxed`].
    ///
    /// Each layer added here runs in a DEBUG span `middleware` (target `lift::middleware`)
    /// named after its type, which records `elapsedUs` and `status`; add middleware one
    /// `layer` call at a time to see each in its own span (a `ServiceBuilder` stack is one).
    pub fn layer<L, E>(mut self, layer: L) -> Self
    where
        L: Layer<BoxService>,
        L::Service:
            Service<Context, Response = Response, Error = E> + Clone + Send + Sync + 'static,
        <L::Service as Service<Context>>::Future: Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let inner = self
            .service
            .take()
            .unwrap_or_else(|| BoxService::new(Dispatch));
        let layered = crate::trace::Timed {
            inner: layer.layer(inner).map_err(Into::into),
            name: crate::trace::layer_name::<L>(),
        };
        self.service = Some(BoxService::new(layered));
        self
    }

    /// Refuses HTTP bodies over `bytes` with `413 Payload Too Large`, before any parsing;
    /// a body an [`HttpLayer`](crate::http_layer::HttpLayer) hands on (decompressed, say)
    /// is held to the same limit as it is read.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Routes HTTP requests whose path starts with `base` (`/v1`: a REST API's custom
    /// domain with a base path mapping, which API Gateway leaves in the path) as if it were
    /// not there: `/v1/orders/7` finds `/orders/{id}`, while `/orders/7` (the same API on
    /// its `execute-api` URL) still does too. Call again for several; a base matches whole
    /// segments only (`/v1` does not strip `/v10`). The context's path stays as sent.
    pub fn base_path(mut self, base: &str) -> Self {
        let base = base.trim_end_matches('/');
        if !base.starts_with('/') {
            self.config_error
                .get_or_insert_with(|| format!("base path `{base}` must start with `/`"));
            return self;
        }
        self.base_paths.push(Box::from(base));
        self
    }

    /// Flushes the invocation's metrics ([`Context::metrics`]) as CloudWatch EMF once per
    /// invocation, with per-route `Requests`, `Errors` and `Latency` and a `ColdStart`
    /// count unless switched off (see [`MetricsConfig`]). Without it, nothing is flushed.
    pub fn metrics(mut self, config: MetricsConfig) -> Self {
        self.metrics = Some(config);
        self
    }

    /// Starts `task` with the runtime ([`App::run`]), concurrently with the first poll for
    /// an invocation: it never delays a response, and what it does not finish during one
    /// invocation resumes on a later one (Lambda freezes the environment in between). The
    /// task sees the first invocation's details, the invocation count and the shutdown
    /// signal through its [`Lifecycle`](crate::lifecycle::Lifecycle); see
    /// [`crate::lifecycle`]. Without [`App::run`], [`LiftService::start_background`] starts
    /// the tasks.
    pub fn background<F, Fut>(mut self, task: F) -> Self
    where
        F: FnOnce(crate::lifecycle::Lifecycle) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.background.push(crate::lifecycle::task(task));
        self
    }

    /// Whether [`App::run`] registers the internal extension through which Lambda sends
    /// SIGTERM before it ends the environment, so that background tasks can finish (off by
    /// default: it costs a Runtime API round trip in every cold start; only an App with
    /// background tasks registers it). See [`crate::shutdown`].
    pub fn shutdown_extension(mut self, on: bool) -> Self {
        self.shutdown_extension = on.then(crate::shutdown::Hooks::new);
        self
    }

    /// Freezes the App into the service the Lambda runtime drives.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid or conflicting route.
    pub fn into_service(self) -> Result<LiftService, Error> {
        if let Some(error) = self.config_error {
            return Err(Error::Config(error));
        }
        Ok(LiftService {
            inner: Arc::new(Inner {
                router: self.router,
                #[cfg(feature = "sqs")]
                sqs: self.sqs,
                #[cfg(feature = "dynamodb")]
                dynamodb: self.dynamodb,
                #[cfg(feature = "sns")]
                sns: self.sns,
                #[cfg(feature = "eventbridge")]
                events: self.events,
                #[cfg(feature = "eventbridge")]
                schedule: self.schedule,
                #[cfg(feature = "eventbridge")]
                event_fallback: self.event_fallback,
                #[cfg(feature = "websocket")]
                websocket: self.websocket,
                #[cfg(feature = "authorizer")]
                authorizer: self.authorizer,
                #[cfg(feature = "authorizer")]
                authorizer_simple: self.authorizer_simple,
                service: self.service.map(ServicePool::new),
                body_limit: self.body_limit,
                base_paths: self.base_paths,
                #[cfg(feature = "sqs")]
                sqs_concurrency: self.sqs_concurrency.get(),
                #[cfg(any(feature = "sqs", feature = "dynamodb"))]
                batch_deadline_margin: self.batch_deadline_margin,
                metrics: self.metrics,
                streaming: self.streaming,
                cold: AtomicBool::new(true),
                lifecycle: crate::lifecycle::Lifecycle::new(),
                background: std::sync::Mutex::new(self.background),
                running: std::sync::Mutex::new(Vec::new()),
            }),
        })
    }

    /// Serves invocations until the runtime stops. Installs Lift's log format
    /// ([`crate::logging`]) unless a global subscriber is already set. Invocations run
    /// concurrently when Lambda Managed Instances ask for it (`AWS_LAMBDA_MAX_CONCURRENCY`).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid App, [`Error::Environment`] outside Lambda, and the
    /// runtime's own error if its loop fails.
    pub async fn run(self) -> Result<(), Error> {
        // The extension's registration round trip overlaps with building the service.
        let extension = match (
            self.shutdown_extension,
            std::env::var("AWS_LAMBDA_RUNTIME_API"),
        ) {
            (Some(hooks), Ok(api)) if !self.background.is_empty() => {
                Some((hooks, (hooks.start)(api)))
            }
            _ => None,
        };
        let service = self.into_service()?;
        check_environment(|name| std::env::var(name).ok())?;
        crate::logging::try_init();
        service.start_background();
        if let Some((hooks, pending)) = extension {
            (hooks.install)(service.clone(), pending).await;
        }
        lambda_runtime::run_concurrent(service)
            .await
            .map_err(Error::Internal)
    }
}

/// Checks, once at cold start, the variables `lambda_runtime` would otherwise `expect`, so
/// that a missing one is an error rather than a panic.
fn check_environment(get: impl Fn(&str) -> Option<String>) -> Result<(), Error> {
    for variable in [
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
    ] {
        if get(variable).is_none() {
            return Err(Error::Environment(variable));
        }
    }
    let memory = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE";
    match get(memory).map(|value| value.parse::<i32>()) {
        Some(Ok(_)) => Ok(()),
        _ => Err(Error::Environment(memory)),
    }
}

struct Inner {
    router: Router,
    #[cfg(feature = "sqs")]
    sqs: Option<Endpoint>,
    #[cfg(feature = "dynamodb")]
    dynamodb: Option<Endpoint>,
    #[cfg(feature = "sns")]
    sns: Option<Endpoint>,
    #[cfg(feature = "eventbridge")]
    events: Vec<eventbridge::EventRoute>,
    #[cfg(feature = "eventbridge")]
    schedule: Option<Endpoint>,
    #[cfg(feature = "eventbridge")]
    event_fallback: Option<Endpoint>,
    #[cfg(feature = "websocket")]
    websocket: websocket::WebSocketRoutes,
    #[cfg(feature = "authorizer")]
    authorizer: Option<Endpoint>,
    #[cfg(feature = "authorizer")]
    authorizer_simple: bool,
    service: Option<ServicePool>,
    body_limit: usize,
    base_paths: Vec<Box<str>>,
    #[cfg(feature = "sqs")]
    sqs_concurrency: usize,
    #[cfg(any(feature = "sqs", feature = "dynamodb"))]
    batch_deadline_margin: std::time::Duration,
    metrics: Option<MetricsConfig>,
    streaming: streaming::StreamingConfig,
    cold: AtomicBool,
    lifecycle: crate::lifecycle::Lifecycle,
    background: std::sync::Mutex<Vec<crate::lifecycle::Task>>,
    running: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A frozen [`App`]: the `tower::Service` the Lambda runtime calls with each raw event.
/// Cheap to clone.
#[derive(Clone)]
pub struct LiftService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LiftService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiftService").finish_non_exhaustive()
    }
}

/// What the runtime sends back: the buffered JSON response, or (for a Function URL under
/// [`App::response_streaming`]) a streamed one. See [`LiftService::respond`].
impl Service<LambdaEvent<Box<RawValue>>> for LiftService {
    type Response = streaming::Reply;
    type Error = Error;
    type Future = BoxFuture<Result<streaming::Reply, Error>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, event: LambdaEvent<Box<RawValue>>) -> Self::Future {
        let this = self.clone();
        // Shared from here on: the runtime's context is 376 bytes, which every future
        // holding it by value would carry (and copy into the heap) on every invocation.
        let LambdaEvent { payload, context } = event;
        let lambda = Arc::new(context);
        Box::pin(async move { this.respond_shared(&payload, lambda).await })
    }
}

/// The middleware stack, and copies of it that have served a call and wait for the next.
///
/// `tower::Service::call` takes `&mut self`, so concurrent calls (an SQS batch's records,
/// invocations of a streaming function) each need their own copy of the stack. A copy is
/// free again as soon as `call` has returned its future, so it goes back here and the next
/// call takes it rather than cloning the whole stack (one allocation per boxed layer).
struct ServicePool {
    prototype: BoxService,
    idle: std::sync::Mutex<Vec<BoxService>>,
}

impl ServicePool {
    /// More idle copies than this are dropped rather than kept.
    const MAX_IDLE: usize = 64;

    fn new(prototype: BoxService) -> Self {
        ServicePool {
            prototype,
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<BoxService>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for a copy of the stack to be ready, calls it with `ctx` and puts it back
    /// for the next call; a copy whose readiness failed is dropped.
    async fn call(&self, ctx: Context) -> Result<Response, BoxError> {
        let taken = self.idle().pop();
        let mut service = taken.unwrap_or_else(|| self.prototype.clone());
        std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
        let future = service.call(ctx);
        {
            let mut idle = self.idle();
            if idle.len() < Self::MAX_IDLE {
                idle.push(service);
            }
        }
        future.await
    }
}

/// `raw` as the event type of `kind`; a failure is logged at ERROR with its cause (the
/// field, line and column), since no handler sees it.
#[cfg(any(
    feature = "sqs",
    feature = "dynamodb",
    feature = "sns",
    feature = "eventbridge"
))]
fn decode<T: serde::de::DeserializeOwned>(kind: &'static str, raw: &RawValue) -> Result<T, Error> {
    serde_json::from_str(raw.get()).map_err(|source| {
        tracing::error!(target: "lift", code = "invalid_event", kind, error = %source, "the event could not be decoded");
        Error::InvalidEvent { kind, source }
    })
}

/// Decodes an event known to be an HTTP request; one that does not decode (a header name or
/// value, a query or a path the types cannot hold) is the client's request, answered 400 in
/// the source's shape rather than failing the invocation (a 502 from API Gateway).
pub(super) fn decode_http<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    raw: &RawValue,
    multi_value: bool,
) -> Result<T, http_event::Rejected> {
    serde_json::from_str(raw.get()).map_err(|source| {
        // Not the decoder's message: for REST and ALB events it quotes the value it refused,
        // which may be a cookie or a token.
        tracing::warn!(target: "lift", code = "invalid_request", kind, line = source.line(), column = source.column(), category = ?source.classify(), "the HTTP request could not be decoded");
        http_event::Rejected {
            multi_value,
            error: Error::bad_request(format!(
                "the {kind} request could not be read: a header, query or path value it cannot hold"
            )),
        }
    })
}

/// The error for an event from a source this build of lift-core leaves out: it names the
/// cargo feature that adds it.
#[cfg(not(all(
    feature = "sqs",
    feature = "dynamodb",
    feature = "sns",
    feature = "eventbridge",
    feature = "websocket"
)))]
fn not_built(kind: &Kind) -> Error {
    let (what, feature) = match kind {
        Kind::Sqs => ("an SQS batch", "sqs"),
        Kind::DynamoDb => ("a DynamoDB Streams batch", "dynamodb"),
        Kind::Sns => ("an SNS notification", "sns"),
        Kind::EventBridge => ("an EventBridge event", "eventbridge"),
        _ => ("an API Gateway WebSocket event", "websocket"),
    };
    no_handler(format!(
        "{what}: lift-core was built without its `{feature}` feature"
    ))
}

/// The invocation error for an event no handler takes, logged here once.
fn no_handler(description: String) -> Error {
    tracing::error!(target: "lift", event = %description, "no handler for the event");
    Error::NoHandler(description)
}

/// What an authorizer request to an App without an authorizer is.
pub(super) const NO_AUTHORIZER: &str = "an authorizer request (register one with App::authorizer)";

fn describe_unknown(raw: &RawValue) -> String {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw.get()) {
        Ok(map) => {
            let keys: Vec<&str> = map.keys().take(12).map(String::as_str).collect();
            format!("an event with top-level keys {keys:?}")
        }
        Err(_) => "an event that is not a JSON object".to_owned(),
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(message) => *message,
        Err(panic) => match panic.downcast::<&'static str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => "a non-string panic payload".to_owned(),
        },
    }
}

/// The HTTP response for an error: status, its headers (`Allow`, `Retry-After`,
/// `RateLimit-*`) and the JSON error body.
pub(crate) fn error_response(error: &Error, request_id: &str) -> Response {
    let mut response = json_response(error.status(), &error.to_body(request_id));
    response.headers_mut().extend(error.response_headers());
    response
}

/// The one rule for when a unit that is not an HTTP request fails — an SQS, DynamoDB
/// Streams, SNS or EventBridge record, a scheduled event, an authorizer request: its
/// handler (or a layer around it) returned an error or panicked, **or** answered with a 4xx
/// or 5xx status. Such an answer becomes an error with that status and the code
/// `record_failed`, and the source's failure path follows (a batch item failure, an
/// invocation error, an authorizer's 401 or deny).
#[cfg(any(
    feature = "sqs",
    feature = "dynamodb",
    feature = "sns",
    feature = "eventbridge",
    feature = "authorizer"
))]
fn settle(outcome: Result<Response, Error>) -> Result<Response, Error> {
    match outcome {
        Ok(response)
            if response.status().is_client_error() || response.status().is_server_error() =>
        {
            Err(Error::new(
                response.status(),
                "record_failed",
                "the handler answered with an error status",
            ))
        }
        other => other,
    }
}

/// `path` without the first of `bases` it starts with (whole segments), `/` when that
/// leaves nothing.
fn without_base<'p>(bases: &[Box<str>], path: &'p str) -> &'p str {
    for base in bases {
        if let Some(rest) = path.strip_prefix(&**base) {
            if rest.is_empty() {
                return "/";
            }
            if rest.starts_with('/') {
                return rest;
            }
        }
    }
    path
}

/// The answer to a HEAD request: the status and headers a GET would get, no body (a
/// streamed one is dropped unread).
fn without_body(mut response: Response) -> Response {
    drop(crate::stream::take_stream(&response));
    response
        .extensions_mut()
        .remove::<crate::stream::StreamSlot>();
    *response.body_mut() = crate::response::Body::Empty;
    response
}

fn log_error(error: &Error, what: &'static str) {
    if error.status().is_server_error() {
        tracing::error!(target: "lift", code = error.code(), error = %Chain(error), "{what} failed");
    } else {
        tracing::info!(target: "lift", code = error.code(), error = %error, "{what} refused");
    }
}

#[cfg(any(feature = "sns", feature = "eventbridge"))]
/// The JSON a non-HTTP handler's response becomes as the invocation's response.
fn output_json(response: &Response) -> Result<Box<RawValue>, Error> {
    use crate::response::Body;
    use http::header;

    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::input::is_json);
    let raw = match response.body() {
        Body::Text(text) if is_json => RawValue::from_string(text.clone()),
        Body::Text(text) => serde_json::value::to_raw_value(text),
        Body::Binary(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) if is_json => RawValue::from_string(text.to_owned()),
            Ok(text) => serde_json::value::to_raw_value(text),
            Err(_) => serde_json::value::to_raw_value(&base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                bytes,
            )),
        },
        _ => RawValue::from_string("null".to_owned()),
    };
    raw.map_err(Error::internal)
}

/// The caller's correlation id from an `x-correlation-id` header, if it sent one.
fn correlation_header(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| usable_correlation_id(id))
        .map(str::to_owned)
}

/// Whether a caller's correlation id is taken as given: 1 to 128 visible ASCII characters.
/// Another (empty, huge, spaced) is ignored for the request id: it goes into every log line
/// and onto every message sent on, where SQS refuses an empty attribute.
pub(crate) fn usable_correlation_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(any(feature = "sqs", feature = "dynamodb"))]
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchResponse {
    batch_item_failures: Vec<ItemFailure>,
}

#[cfg(any(feature = "sqs", feature = "dynamodb"))]
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemFailure {
    item_identifier: String,
}

#[cfg(any(feature = "sqs", feature = "dynamodb"))]
fn batch_response(failures: Vec<String>) -> Result<Box<RawValue>, Error> {
    let response = BatchResponse {
        batch_item_failures: failures
            .into_iter()
            .map(|item_identifier| ItemFailure { item_identifier })
            .collect(),
    };
    serde_json::value::to_raw_value(&response).map_err(Error::internal)
}

/// One unit of work (a request or a record) before it becomes a [`Context`].
struct Unit {
    source: Source,
    payload: Payload,
    correlation_id: Option<String>,
    endpoint: Endpoint,
    route: Option<Arc<str>>,
    params: crate::router::Params,
    span: Arc<tracing::Span>,
}

#[cfg(any(
    feature = "sqs",
    feature = "dynamodb",
    feature = "sns",
    feature = "eventbridge",
    feature = "authorizer"
))]
impl Unit {
    /// A record or event, which has no route or path parameters.
    fn unrouted(
        source: Source,
        payload: Payload,
        correlation_id: Option<String>,
        endpoint: Endpoint,
        span: Arc<tracing::Span>,
    ) -> Unit {
        Unit {
            source,
            payload,
            correlation_id,
            endpoint,
            route: None,
            params: crate::router::Params::default(),
            span,
        }
    }
}

impl LiftService {
    /// Handles one raw event the way the Lambda runtime would, returning the invocation's
    /// response JSON. The entry point of the [`crate::testing`] kit and of benchmarks.
    ///
    /// # Errors
    /// An invocation error: an event no handler is registered for, an event that cannot be
    /// decoded, a failed EventBridge or SNS handler, or a batch whose failed record cannot be
    /// reported individually.
    pub async fn invoke(
        &self,
        event: &RawValue,
        lambda: lambda_runtime::Context,
    ) -> Result<Box<RawValue>, Error> {
        self.invoke_shared(event, Arc::new(lambda)).await
    }

    /// [`LiftService::invoke`] with the runtime's context already shared.
    pub(crate) async fn invoke_shared(
        &self,
        event: &RawValue,
        lambda: Arc<lambda_runtime::Context>,
    ) -> Result<Box<RawValue>, Error> {
        self.inner.lifecycle.observe(&lambda);
        let metrics = Metrics::default();
        let result = self.dispatch(event, &lambda, &metrics).await;
        self.flush(&metrics, &lambda);
        self.inner.lifecycle.answered();
        result
    }

    /// The environment as the App's background tasks see it.
    pub fn lifecycle(&self) -> &crate::lifecycle::Lifecycle {
        &self.inner.lifecycle
    }

    /// Spawns the tasks added with [`App::background`] on the current tokio runtime, once:
    /// a second call starts nothing. Returns how many were started. [`App::run`] calls it.
    ///
    /// # Panics
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn start_background(&self) -> usize {
        let tasks = match self.inner.background.lock() {
            Ok(mut tasks) => std::mem::take(&mut *tasks),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        let started = tasks.len();
        let handles = tasks
            .into_iter()
            .map(|task| tokio::spawn(task(self.inner.lifecycle.clone())));
        match self.inner.running.lock() {
            Ok(mut running) => running.extend(handles),
            Err(poisoned) => poisoned.into_inner().extend(handles),
        }
        started
    }

    /// Signals shutdown to the background tasks ([`crate::lifecycle::Lifecycle::shutdown`])
    /// and waits up to `grace` for them to finish: what a SIGTERM handler calls (Lambda
    /// gives the runtime about 500 ms after SIGTERM when an extension is registered).
    /// Returns whether they all finished in time.
    pub async fn shut_down(&self, grace: std::time::Duration) -> bool {
        self.inner.lifecycle.shut_down();
        let handles = match self.inner.running.lock() {
            Ok(mut running) => std::mem::take(&mut *running),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        let all = futures_util::future::join_all(handles);
        tokio::time::timeout(grace, all).await.is_ok()
    }

    fn flush(&self, metrics: &Metrics, lambda: &lambda_runtime::Context) {
        let Some(config) = &self.inner.metrics else {
            return;
        };
        if config.cold_start && self.inner.cold.swap(false, Ordering::AcqRel) {
            let _ = metrics.record_builtin("ColdStart", 1.0, MetricUnit::Count);
        }
        let request_id = ("requestId", lambda.request_id.as_str());
        let fixed = match &lambda.xray_trace_id {
            Some(trace) => &[request_id, ("xrayTraceId", trace.as_str())][..],
            None => &[request_id][..],
        };
        metrics.documents(config, SystemTime::now(), fixed, |document| {
            config.sink.write(&document);
        });
    }

    /// Per-route `Requests`, `Errors` and `Latency`, when configured.
    fn observe(&self, metrics: &Metrics, operation: &str, failed: bool, started: Instant) {
        if !self.inner.metrics.as_ref().is_some_and(|c| c.route_metrics) {
            return;
        }
        metrics.record_route(operation, failed, crate::metrics::millis(started.elapsed()));
    }

    async fn dispatch(
        &self,
        event: &RawValue,
        lambda: &Arc<lambda_runtime::Context>,
        metrics: &Metrics,
    ) -> Result<Box<RawValue>, Error> {
        let lambda = lambda.clone();
        #[cfg(feature = "authorizer")]
        if self.is_authorizer_request(event) {
            return Box::pin(self.authorize(event, lambda, metrics)).await;
        }
        let Some(kind) = probe(event.get()) else {
            return Err(Error::NoHandler(describe_unknown(event)));
        };
        match kind {
            Kind::ApiGatewayV2 => {
                let request =
                    decode_http::<http_event::V2Event>("API Gateway HTTP API", event, false)
                        .and_then(http_event::from_v2);
                self.http(Source::ApiGatewayV2, request, lambda, metrics)
                    .await
            }
            Kind::ApiGatewayV1 { multi_value } => {
                let request = decode_http::<ApiGatewayProxyRequest>(
                    "API Gateway REST API",
                    event,
                    multi_value,
                )
                .and_then(|decoded| http_event::from_v1(decoded, multi_value));
                self.http(Source::ApiGatewayV1, request, lambda, metrics)
                    .await
            }
            Kind::Alb { multi_value } => {
                let request = decode_http::<AlbTargetGroupRequest>("ALB", event, multi_value)
                    .and_then(|decoded| http_event::from_alb(decoded, multi_value));
                self.http(Source::Alb, request, lambda, metrics).await
            }
            #[cfg(feature = "sqs")]
            // The other sources' futures are boxed: inline, the largest of them would size
            // every invocation's future, HTTP requests included, and each invocation copies
            // its future once into the heap.
            Kind::Sqs => Box::pin(self.sqs(decode("SQS", event)?, lambda, metrics)).await,
            #[cfg(feature = "dynamodb")]
            Kind::DynamoDb => {
                Box::pin(self.dynamodb(decode("DynamoDB Streams", event)?, lambda, metrics)).await
            }
            #[cfg(feature = "sns")]
            Kind::Sns => Box::pin(self.sns(decode("SNS", event)?, lambda, metrics)).await,
            #[cfg(feature = "eventbridge")]
            Kind::EventBridge => {
                Box::pin(self.eventbridge(decode("EventBridge", event)?, lambda, metrics)).await
            }
            #[cfg(feature = "websocket")]
            // A `$connect` header the types cannot hold is the client's request: refused with
            // a 400, never a failed invocation quoting the value.
            Kind::WebSocket => {
                let decoded = decode_http("API Gateway WebSocket", event, false)
                    .map_err(|rejected| rejected.error);
                Box::pin(self.websocket(decoded, lambda, metrics)).await
            }
            #[cfg(not(all(
                feature = "sqs",
                feature = "dynamodb",
                feature = "sns",
                feature = "eventbridge",
                feature = "websocket"
            )))]
            #[allow(unreachable_patterns)]
            Kind::Sqs | Kind::DynamoDb | Kind::Sns | Kind::EventBridge | Kind::WebSocket => {
                Err(not_built(&kind))
            }
            // An App with an authorizer took it above.
            Kind::Authorizer => {
                let description = if cfg!(feature = "authorizer") {
                    NO_AUTHORIZER
                } else {
                    "an authorizer request: lift-core was built without its `authorizer` feature"
                };
                Err(no_handler(description.to_owned()))
            }
            Kind::Unknown(description) => {
                let description = if description.is_empty() {
                    describe_unknown(event)
                } else {
                    description
                };
                Err(no_handler(description))
            }
        }
    }

    fn context(
        &self,
        lambda: &Arc<lambda_runtime::Context>,
        metrics: &Metrics,
        unit: Unit,
    ) -> Context {
        Context {
            metrics: metrics.clone(),
            correlation_id: unit.correlation_id,
            invocation: lambda.clone(),
            source: unit.source,
            payload: unit.payload,
            route: unit.route,
            params: unit.params,
            endpoint: unit.endpoint,
            extensions: None,
            tenant: None,
            principal: None,
            span: unit.span,
        }
    }

    /// Runs one context through the middleware stack and its endpoint; a panic anywhere in
    /// there becomes [`Error::Panic`].
    async fn run_unit(&self, ctx: Context) -> Result<Response, Error> {
        let span = Arc::clone(&ctx.span);
        let deadline = InvocationDeadline::from_millis(ctx.invocation.deadline);
        let fut = match &self.inner.service {
            Some(pool) => Either::Left(pool.call(ctx)),
            None => Either::Right(async move { Dispatch.call(ctx).await }),
        };
        // The request's timing, logged at DEBUG inside its span when that level is on.
        let timing = tracing::enabled!(target: "lift", tracing::Level::DEBUG)
            .then(|| (Instant::now(), Arc::clone(&span)));
        let result = match deadline
            .scope(AssertUnwindSafe(fut).catch_unwind(), span)
            .await
        {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(Error::from_boxed(error)),
            Err(panic) => Err(Error::Panic(panic_message(panic))),
        };
        if let Some((started, span)) = timing {
            let status = match &result {
                Ok(response) => response.status(),
                Err(error) => error.status(),
            };
            tracing::debug!(
                target: "lift",
                parent: &*span,
                durationUs = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                status = status.as_u16(),
                "handled"
            );
        }
        result
    }

    async fn http(
        &self,
        source: Source,
        request: Result<Arc<HttpRequest>, http_event::Rejected>,
        lambda: Arc<lambda_runtime::Context>,
        metrics: &Metrics,
    ) -> Result<Box<RawValue>, Error> {
        let (multi_value, response) = self
            .http_response(source, request, lambda, metrics, true)
            .await;
        http_event::to_event_response(source, multi_value, &response).map_err(Error::internal)
    }

    /// Routes and runs one HTTP request: its `multi_value` flag and the response. With
    /// `collect`, a streamed body ([`crate::stream::StreamBody`]) is collected into an
    /// ordinary one; without it, it is left in the response for the caller to stream.
    async fn http_response(
        &self,
        source: Source,
        request: Result<Arc<HttpRequest>, http_event::Rejected>,
        lambda: Arc<lambda_runtime::Context>,
        metrics: &Metrics,
        collect: bool,
    ) -> (bool, Response) {
        let started = Instant::now();
        let mut operation = Cow::Borrowed("rejected");
        let (multi_value, response) = match request {
            Err(rejected) => {
                log_error(&rejected.error, "request");
                (
                    rejected.multi_value,
                    error_response(&rejected.error, &lambda.request_id),
                )
            }
            Ok(request) if request.body.len() > self.inner.body_limit => {
                let error = Error::PayloadTooLarge {
                    size: request.body.len(),
                    limit: self.inner.body_limit,
                };
                log_error(&error, "request");
                (
                    request.multi_value,
                    error_response(&error, &lambda.request_id),
                )
            }
            Ok(mut request) => {
                // Not shared yet: set in place.
                Arc::make_mut(&mut request).body_limit = self.inner.body_limit;
                let multi_value = request.multi_value;
                let head = request.method == Method::HEAD;
                let resolved = self.inner.router.resolve(
                    &request.method,
                    without_base(&self.inner.base_paths, &request.path),
                    request.path_is_encoded,
                );
                operation = match resolved.operation {
                    Some(registered) => Cow::Borrowed(registered),
                    None => Cow::Owned(format!(
                        "{} {}",
                        request.method,
                        resolved.route.as_deref().unwrap_or("unmatched")
                    )),
                };
                let correlation_id = correlation_header(&request.headers);
                let span = Arc::new(tracing::info_span!(
                    target: "lift",
                    "request",
                    tenant = tracing::field::Empty,
                    requestId = lambda.request_id.as_str(),
                    xrayTraceId = lambda.xray_trace_id.as_deref(),
                    correlationId = correlation_id.as_deref().unwrap_or(&lambda.request_id),
                    source = source.as_str(),
                    method = request.method.as_str(),
                    route = resolved.route.as_deref().unwrap_or_default(),
                ));
                let ctx = self.context(
                    &lambda,
                    metrics,
                    Unit {
                        source,
                        payload: Payload::Http(request),
                        correlation_id,
                        endpoint: resolved.endpoint,
                        route: resolved.route,
                        params: resolved.params,
                        span: span.clone(),
                    },
                );
                // Boxed: inline, the unit's future would make every invocation's future
                // larger than the allocator's per-thread cache takes (1 KiB), so that each
                // request allocated it on the slow path.
                let response = match Box::pin(self.run_unit(ctx)).await {
                    Ok(response) => response,
                    Err(error) => {
                        let _entered = span.enter();
                        log_error(&error, "request");
                        let mut response = error_response(&error, &lambda.request_id);
                        if !metrics.was_handler_called() {
                            // A layer refused it: nothing of the handler's ran, so a caller
                            // may send even a request that is not idempotent elsewhere.
                            response.headers_mut().insert(
                                http::HeaderName::from_static(REFUSED_HEADER),
                                http::HeaderValue::from_static("before-handler"),
                            );
                        }
                        response
                    }
                };
                let response = if head {
                    without_body(response)
                } else if collect && crate::stream::is_streaming(&response) {
                    // Boxed: the collecting future is large, and only a streamed body
                    // needs it; inline it would grow every request's future.
                    Box::pin(self.collected(response, &span, &lambda)).await
                } else {
                    response
                };
                (multi_value, response)
            }
        };
        self.observe(
            metrics,
            &operation,
            response.status().is_server_error(),
            started,
        );
        (multi_value, response)
    }

    #[cfg(any(feature = "sqs", feature = "dynamodb"))]
    /// Runs one record; `true` when it succeeded (a 2xx or 3xx response).
    async fn record(
        &self,
        lambda: &Arc<lambda_runtime::Context>,
        metrics: &Metrics,
        unit: Unit,
    ) -> bool {
        let span = unit.span.clone();
        let started = Instant::now();
        let operation = unit.source.as_str();
        let ctx = self.context(lambda, metrics, unit);
        let outcome = settle(self.run_unit(ctx).await);
        self.observe(metrics, operation, outcome.is_err(), started);
        let error = match outcome {
            Ok(_) => return true,
            Err(error) => error,
        };
        let _entered = span.enter();
        tracing::warn!(target: "lift", code = error.code(), error = %Chain(&error), "record failed");
        false
    }
}

#[cfg(any(feature = "sqs", feature = "dynamodb"))]
impl App {
    /// Stops starting the records of an SQS or DynamoDB Streams batch once less than
    /// `margin` is left before the invocation's deadline (default
    /// [`DEFAULT_BATCH_DEADLINE_MARGIN`](crate::DEFAULT_BATCH_DEADLINE_MARGIN), 1 s):
    /// the records not started are reported failed, so that only they are delivered again,
    /// where a timeout would have the whole batch delivered again, the records done
    /// included.
    pub fn batch_deadline_margin(mut self, margin: std::time::Duration) -> Self {
        self.batch_deadline_margin = margin;
        self
    }
}

/// How much of an invocation's time a batch keeps when it stops starting records.
#[cfg(any(feature = "sqs", feature = "dynamodb"))]
pub const DEFAULT_BATCH_DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

impl LiftService {
    /// Whether a batch's next record must not start: under the margin before the
    /// invocation's deadline (none when the runtime sent none).
    #[cfg(any(feature = "sqs", feature = "dynamodb"))]
    fn out_of_time(&self, lambda: &lambda_runtime::Context) -> bool {
        if lambda.deadline == 0 {
            return false;
        }
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let margin = self.inner.batch_deadline_margin.as_millis() as u64;
        now.saturating_add(margin) >= lambda.deadline
    }
}

/// Logs the records of a batch left unstarted for lack of time.
#[cfg(any(feature = "sqs", feature = "dynamodb"))]
fn log_unstarted(unstarted: usize, source: &'static str) {
    if unstarted > 0 {
        tracing::warn!(target: "lift", unstarted, source, "records not started: the invocation's deadline is near; reported failed, to be delivered again");
    }
}

#[cfg(any(feature = "sqs", feature = "dynamodb"))]
/// The batch response; a failed record without an identifier fails the whole invocation so
/// Lambda retries every record rather than losing one.
fn report(failures: Vec<Option<String>>, what: &str) -> Result<Box<RawValue>, Error> {
    let mut ids = Vec::with_capacity(failures.len());
    for failure in failures {
        match failure {
            Some(id) if !id.is_empty() => ids.push(id),
            _ => {
                return Err(Error::Internal(
                    format!("a record failed and has no {what} to report it by; failing the batch")
                        .into(),
                ));
            }
        }
    }
    batch_response(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer whose services count their clones and refuse readiness once `fail` is set.
    #[derive(Clone)]
    struct Counted {
        clones: Arc<std::sync::atomic::AtomicUsize>,
        fail: Arc<AtomicBool>,
    }

    impl Layer<BoxService> for Counted {
        type Service = CountedService;
        fn layer(&self, inner: BoxService) -> CountedService {
            CountedService {
                inner,
                counted: self.clone(),
            }
        }
    }

    struct CountedService {
        inner: BoxService,
        counted: Counted,
    }

    impl Clone for CountedService {
        fn clone(&self) -> Self {
            self.counted.clones.fetch_add(1, Ordering::SeqCst);
            CountedService {
                inner: self.inner.clone(),
                counted: self.counted.clone(),
            }
        }
    }

    impl Service<Context> for CountedService {
        type Response = Response;
        type Error = BoxError;
        type Future = <BoxService as Service<Context>>::Future;

        fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
            if self.counted.fail.load(Ordering::SeqCst) {
                return Poll::Ready(Err("not ready".into()));
            }
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, ctx: Context) -> Self::Future {
            self.inner.call(ctx)
        }
    }

    #[tokio::test]
    async fn a_copy_of_the_stack_serves_call_after_call_and_a_broken_one_is_dropped() {
        use crate::testing::{TestApp, events};

        let counted = Counted {
            clones: Arc::default(),
            fail: Arc::default(),
        };
        let app = App::new()
            .get("/", |_ctx: Context| async { Ok::<_, Error>("ok") })
            .layer(counted.clone());
        let app = TestApp::new(app).expect("app");
        let status = || async {
            let answer = app.http(events::http("GET", "/").v2()).await;
            answer.expect("an answer").status
        };
        for _ in 0..10 {
            assert_eq!(status().await, 200);
        }
        assert_eq!(
            counted.clones.load(Ordering::SeqCst),
            1,
            "ten calls one after the other share one copy"
        );
        counted.fail.store(true, Ordering::SeqCst);
        assert_eq!(status().await, 500, "readiness failed");
        counted.fail.store(false, Ordering::SeqCst);
        assert_eq!(status().await, 200);
        assert_eq!(
            counted.clones.load(Ordering::SeqCst),
            2,
            "the copy whose readiness failed was not kept"
        );
    }

    #[test]
    fn a_missing_or_broken_lambda_environment_is_an_error() {
        let full = |name: &str| -> Option<String> {
            Some(match name {
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE" => "128".to_owned(),
                _ => "x".to_owned(),
            })
        };
        assert!(check_environment(full).is_ok());
        let no_api = |name: &str| {
            (name != "AWS_LAMBDA_RUNTIME_API")
                .then(|| full(name))
                .flatten()
        };
        assert!(matches!(
            check_environment(no_api),
            Err(Error::Environment("AWS_LAMBDA_RUNTIME_API"))
        ));
        let bad_memory = |name: &str| {
            if name == "AWS_LAMBDA_FUNCTION_MEMORY_SIZE" {
                Some("lots".to_owned())
            } else {
                full(name)
            }
        };
        assert!(matches!(
            check_environment(bad_memory),
            Err(Error::Environment("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"))
        ));
    }

    /// Built without an event source's feature, an App answers that source's events with
    /// an error that names the feature, and still serves HTTP. Runs in the test command's
    /// `--no-default-features` step.
    #[cfg(not(any(
        feature = "sqs",
        feature = "dynamodb",
        feature = "sns",
        feature = "eventbridge",
        feature = "websocket"
    )))]
    #[tokio::test]
    async fn an_event_source_left_out_is_named_in_the_error() {
        use crate::testing::{TestApp, events};
        use crate::{Json, Result};

        async fn hello(_ctx: Context) -> Result<Json<&'static str>> {
            Ok(Json("hello"))
        }

        let app = TestApp::new(App::new().get("/hello", hello)).expect("app");
        let cases = [
            (events::sqs(["{}"]), "an SQS batch", "sqs"),
            (events::sns("{}"), "an SNS notification", "sns"),
            (
                events::dynamodb([("INSERT", serde_json::json!({}), serde_json::json!({}))]),
                "a DynamoDB Streams batch",
                "dynamodb",
            ),
            (events::schedule(), "an EventBridge event", "eventbridge"),
            (
                events::websocket("conn-1").connect(),
                "an API Gateway WebSocket event",
                "websocket",
            ),
        ];
        for (event, what, feature) in cases {
            match app.invoke(&event).await {
                Err(Error::NoHandler(message)) => assert_eq!(
                    message,
                    format!("{what}: lift-core was built without its `{feature}` feature")
                ),
                other => panic!("{what}: expected NoHandler, got {other:?}"),
            }
        }
        let response = app
            .http(events::http("GET", "/hello").v2())
            .await
            .expect("HTTP still served");
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "\"hello\"");
    }

    #[tokio::test]
    async fn run_outside_lambda_is_an_error_not_a_panic() {
        assert!(
            std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none(),
            "this test needs a process without a Lambda Runtime API"
        );
        let result = App::new().run().await;
        assert!(matches!(result, Err(Error::Environment(_))), "{result:?}");
    }
}
