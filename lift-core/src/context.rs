//! The per-invocation (per-record, for batches) state a handler and its middleware see.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(feature = "dynamodb")]
use aws_lambda_events::dynamodb::EventRecord as DynamoDbRecord;
#[cfg(feature = "eventbridge")]
use aws_lambda_events::eventbridge::EventBridgeEvent;
#[cfg(feature = "sns")]
use aws_lambda_events::sns::SnsRecord;
#[cfg(feature = "sqs")]
use aws_lambda_events::sqs::SqsMessage;
use bytes::Bytes;
use http::{HeaderMap, Method};
#[cfg(feature = "eventbridge")]
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::handler::Endpoint;

/// Which kind of event a [`Context`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// API Gateway REST API (payload format 1.0).
    ApiGatewayV1,
    /// API Gateway HTTP API or a Lambda Function URL (payload format 2.0).
    ApiGatewayV2,
    /// An Application Load Balancer target group.
    Alb,
    /// One record of an SQS batch.
    Sqs,
    /// One record of a DynamoDB Streams batch.
    DynamoDbStream,
    /// One SNS notification.
    Sns,
    /// An EventBridge event.
    EventBridge,
    /// A scheduled EventBridge event (`detail-type: Scheduled Event`).
    Schedule,
    /// An API Gateway Lambda authorizer request; see [`Context::authorizer`].
    Authorizer,
    /// An API Gateway WebSocket API event (`$connect`, `$disconnect` or a message); see
    /// [`Context::websocket`].
    WebSocket,
}

impl Source {
    /// A short stable name: `apigw_v1`, `apigw_v2`, `alb`, `sqs`, `dynamodb`, `sns`,
    /// `eventbridge`, `schedule`, `websocket`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::ApiGatewayV1 => "apigw_v1",
            Source::ApiGatewayV2 => "apigw_v2",
            Source::Alb => "alb",
            Source::Sqs => "sqs",
            Source::DynamoDbStream => "dynamodb",
            Source::Sns => "sns",
            Source::EventBridge => "eventbridge",
            Source::Schedule => "schedule",
            Source::WebSocket => "websocket",
            Source::Authorizer => "authorizer",
        }
    }

    /// Whether the source is an HTTP front end (API Gateway, Function URL, ALB).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Source::ApiGatewayV1 | Source::ApiGatewayV2 | Source::Alb
        )
    }
}

/// The tenant a request acts for, as tenancy middleware resolved it: set with
/// [`Context::set_tenant`] and read with [`Context::tenant`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantId(pub Arc<str>);

/// An HTTP request as Lift parsed it from an API Gateway, Function URL or ALB event.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) path_is_encoded: bool,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) multi_value: bool,
    pub(crate) request_context: lambda_http::request::RequestContext,
    /// The App's body limit, for a body a layer reads again (decompressed, say).
    pub(crate) body_limit: usize,
}

impl HttpRequest {
    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }
    /// The request path, without the API Gateway stage and without the query string.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// Every query parameter, decoded, in the order the source gave them.
    pub fn query_pairs(&self) -> &[(String, String)] {
        &self.query
    }
    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    /// The decoded request body (base64 already undone).
    pub fn body(&self) -> &Bytes {
        &self.body
    }
    /// The source's request context (authorizer claims, source IP, stage, ...).
    pub fn request_context(&self) -> &lambda_http::request::RequestContext {
        &self.request_context
    }
}

/// What one unit of work (an HTTP request or one record) carries.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Http(Arc<HttpRequest>),
    #[cfg(feature = "sqs")]
    Sqs(Arc<SqsMessage>),
    #[cfg(feature = "dynamodb")]
    DynamoDb(Arc<DynamoDbRecord>),
    #[cfg(feature = "sns")]
    Sns(Arc<SnsRecord>),
    #[cfg(feature = "eventbridge")]
    EventBridge(Arc<EventBridgeEvent<Box<RawValue>>>),
    #[cfg(feature = "websocket")]
    WebSocket(Arc<crate::websocket::WebSocketRequest>),
    #[cfg(feature = "authorizer")]
    Authorizer(Arc<crate::authorizer::AuthorizerRequest>),
}

/// Per-invocation state: who asked, for what, and how long is left.
///
/// A batch (SQS, DynamoDB Streams, SNS) gives each record a `Context` of its own that shares
/// the invocation's data, so per-request middleware applies per record. Nothing here lives in
/// a static or an environment variable, so concurrent invocations in one process (Lambda
/// Managed Instances) never see each other's state.
///
/// Cloning is cheap: the invocation data, the request and the extensions are shared (a clone
/// that changes its extensions copies them first), so middleware that replays a call
/// (retry) clones it freely.
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) invocation: Arc<lambda_runtime::Context>,
    pub(crate) source: Source,
    pub(crate) payload: Payload,
    /// The caller's correlation id; `None`: the request id serves.
    pub(crate) correlation_id: Option<String>,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) params: crate::router::Params,
    pub(crate) endpoint: Endpoint,
    /// `None` until something is inserted; shared between clones until one changes it.
    pub(crate) extensions: Option<Arc<http::Extensions>>,
    /// Its own field rather than an extension: nearly every multi-tenant request has one,
    /// and an extension costs three allocations.
    pub(crate) tenant: Option<TenantId>,
    /// The authenticated caller, once authentication ran; shared, as the tenant is.
    pub(crate) principal: Option<Arc<crate::principal::Principal>>,
    /// Shared: a copy of the context (a retry's, the stack's own) costs no subscriber call.
    pub(crate) span: Arc<tracing::Span>,
    pub(crate) metrics: crate::metrics::Metrics,
}

impl Context {
    /// The Lambda request id of the invocation.
    pub fn request_id(&self) -> &str {
        &self.invocation.request_id
    }

    /// The correlation id: the caller's `x-correlation-id` header, `correlationId` message
    /// attribute, or `correlationId` at the top of an EventBridge event's `detail` (where an
    /// event envelope carries it) when one was sent, otherwise the Lambda request id.
    pub fn correlation_id(&self) -> &str {
        self.correlation_id
            .as_deref()
            .unwrap_or(&self.invocation.request_id)
    }

    /// The X-Ray trace header of the invocation, if tracing is active.
    pub fn trace_id(&self) -> Option<&str> {
        self.invocation.xray_trace_id.as_deref()
    }

    /// The headers that carry this request's trace onto an outbound call:
    /// `x-amzn-trace-id` (the X-Ray trace header, when tracing is active),
    /// `x-correlation-id`, and `x-tenant-id` once a tenant is resolved. Values that are not
    /// valid header values are left out.
    pub fn outbound_headers(&self) -> http::HeaderMap {
        let mut headers = http::HeaderMap::with_capacity(3);
        let mut put = |name: &'static str, value: &str| {
            if let Ok(value) = http::HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        };
        if let Some(trace) = self.trace_id() {
            put("x-amzn-trace-id", trace);
        }
        put("x-correlation-id", self.correlation_id());
        if let Some(tenant) = self.tenant() {
            put("x-tenant-id", tenant);
        }
        headers
    }

    /// The name of the running function.
    pub fn function_name(&self) -> &str {
        &self.invocation.env_config.function_name
    }

    /// The version of the running function.
    pub fn function_version(&self) -> &str {
        &self.invocation.env_config.version
    }

    /// The ARN the function was invoked with (it names an alias or version when one was used).
    pub fn invoked_function_arn(&self) -> &str {
        &self.invocation.invoked_function_arn
    }

    /// The Lambda runtime's own context, for anything Lift does not surface.
    pub fn lambda(&self) -> &lambda_runtime::Context {
        &self.invocation
    }

    /// When Lambda will stop the invocation; `None` when the runtime sent no deadline (a
    /// deadline of 0, as some local runtimes and emulators send), which deadline-aware
    /// middleware takes as "no deadline" rather than one long passed.
    pub fn deadline(&self) -> Option<SystemTime> {
        match self.invocation.deadline {
            0 => None,
            millis => Some(UNIX_EPOCH + Duration::from_millis(millis)),
        }
    }

    /// Time left before the deadline, as seen at `now` (zero once it has passed; `None`
    /// without a deadline).
    pub fn remaining_at(&self, now: SystemTime) -> Option<Duration> {
        self.deadline()
            .map(|deadline| deadline.duration_since(now).unwrap_or(Duration::ZERO))
    }

    /// Time left before the deadline (zero once it has passed; `None` without a deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.remaining_at(SystemTime::now())
    }

    /// The kind of event this context came from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The matched route pattern (`/orders/{id}`), for HTTP requests that matched one; for
    /// WebSocket events, the route key of the [`App::websocket`](crate::App::websocket)
    /// handler that runs (`$default` when a message's own key has no handler; the key API
    /// Gateway selected is [`WebSocketRequest::route_key`](crate::websocket::WebSocketRequest::route_key)).
    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    /// The invocation's metrics, flushed as CloudWatch EMF when the invocation ends (when the
    /// App has a [`MetricsConfig`](crate::metrics::MetricsConfig)).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The `tracing` span of this request or record; every log line inside carries its fields.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The tenant the request acts for, once tenancy middleware resolved one.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_ref().map(|t| &*t.0)
    }

    /// Sets the tenant the request acts for (tenancy middleware calls this); it also goes
    /// on the request's span, so every later log line carries it.
    pub fn set_tenant(&mut self, tenant: TenantId) {
        self.span.record("tenant", &*tenant.0);
        self.tenant = Some(tenant);
    }

    /// The authenticated caller, once authentication middleware (lift-middleware's
    /// `JwtAuthLayer`) verified one.
    pub fn principal(&self) -> Option<&crate::principal::Principal> {
        self.principal.as_deref()
    }

    /// Sets the authenticated caller (authentication middleware calls this). Shared: a
    /// cache of verified tokens hands the same principal to every request that sends the
    /// token, and clones of the context share it.
    pub fn set_principal(&mut self, principal: Arc<crate::principal::Principal>) {
        self.principal = Some(principal);
    }

    /// Typed values that middleware attach for handlers.
    pub fn extensions(&self) -> &http::Extensions {
        static NONE: LazyLock<http::Extensions> = LazyLock::new(http::Extensions::new);
        self.extensions.as_deref().unwrap_or(&NONE)
    }

    /// Mutable access to the typed extensions.
    pub fn extensions_mut(&mut self) -> &mut http::Extensions {
        Arc::make_mut(self.extensions.get_or_insert_with(Arc::default))
    }

    /// The HTTP request, when the event came from an HTTP source.
    pub fn http(&self) -> Option<&HttpRequest> {
        match &self.payload {
            Payload::Http(request) => Some(request),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The path parameter `name` of the matched route, decoded.
    ///
    /// # Errors
    /// [`Error::MissingPathParam`] (a 500: the route and the handler disagree) when the route
    /// declares no such parameter.
    pub fn path_param(&self, name: &str) -> Result<&str> {
        self.params
            .get(name)
            .ok_or_else(|| Error::MissingPathParam(name.to_owned()))
    }

    /// Every path parameter of the matched route as `(name, value)`, in route order.
    pub fn path_params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter()
    }

    /// The request's headers: an HTTP request's, or a WebSocket `$connect`'s handshake
    /// headers (API Gateway sends headers with `$connect` only).
    fn request_headers(&self) -> Option<&HeaderMap> {
        match &self.payload {
            Payload::Http(request) => Some(&request.headers),
            #[cfg(feature = "websocket")]
            Payload::WebSocket(request) => Some(&request.headers),
            #[cfg(feature = "authorizer")]
            Payload::Authorizer(request) => Some(&request.headers),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The request's decoded query: an HTTP request's, or a WebSocket `$connect`'s.
    fn request_query(&self) -> &[(String, String)] {
        match &self.payload {
            Payload::Http(request) => &request.query,
            #[cfg(feature = "websocket")]
            Payload::WebSocket(request) => &request.query,
            #[cfg(feature = "authorizer")]
            Payload::Authorizer(request) => &request.query,
            #[allow(unreachable_patterns)]
            _ => &[],
        }
    }

    /// The first value of the query parameter `name`, decoded (HTTP requests and WebSocket
    /// `$connect` events).
    pub fn query(&self, name: &str) -> Option<&str> {
        self.request_query()
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of the query parameter `name`, decoded, in order.
    pub fn query_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.request_query()
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The first value of header `name` when it is valid UTF-8 (HTTP sources, and the
    /// handshake headers of a WebSocket `$connect`).
    ///
    /// `name` is a `&str` (any case) or an [`http::HeaderName`]; a `HeaderName` kept in a
    /// constant is not checked and lower-cased again on every call, which is what a layer
    /// reading the same header on every request wants.
    ///
    /// ```
    /// use http::header::{AUTHORIZATION, HeaderName};
    /// # fn check(ctx: &lift_core::Context) {
    /// const TENANT: HeaderName = HeaderName::from_static("x-tenant-id");
    /// let tenant = ctx.header(&TENANT);
    /// let token = ctx.header(AUTHORIZATION);
    /// let same = ctx.header("Authorization");
    /// # }
    /// ```
    pub fn header<K: http::header::AsHeaderName>(&self, name: K) -> Option<&str> {
        self.request_headers()?.get(name)?.to_str().ok()
    }

    /// The raw payload: the HTTP body, the SQS message body, the SNS message, the
    /// EventBridge `detail` JSON or the WebSocket message. DynamoDB stream records have no
    /// byte payload (see [`Context::dynamodb_record`]).
    pub fn body(&self) -> &[u8] {
        match &self.payload {
            Payload::Http(request) => &request.body,
            #[cfg(feature = "websocket")]
            Payload::WebSocket(request) => &request.body,
            #[cfg(feature = "sqs")]
            Payload::Sqs(message) => message.body.as_deref().unwrap_or_default().as_bytes(),
            #[cfg(feature = "sns")]
            Payload::Sns(record) => record.sns.message.as_bytes(),
            #[cfg(feature = "eventbridge")]
            Payload::EventBridge(event) => event.detail.get().as_bytes(),
            #[cfg(feature = "dynamodb")]
            Payload::DynamoDb(_) => &[],
            #[cfg(feature = "authorizer")]
            Payload::Authorizer(_) => &[],
        }
    }

    /// What the API Gateway authorizer in front of this request passed on as `name`: a
    /// claim a JWT authorizer verified, or a field of a Lambda authorizer's `context`
    /// (`requestContext.authorizer.{name}` for REST APIs, payload 1.0 and WebSocket
    /// events; `requestContext.authorizer.lambda.{name}` for payload 2.0). Numbers and
    /// booleans come as their text. `None` for other sources, or when no authorizer ran.
    pub fn authorizer_value(&self, name: &str) -> Option<String> {
        use aws_lambda_events::apigw::ApiGatewayRequestAuthorizer;
        use lambda_http::request::RequestContext;

        fn text(value: &serde_json::Value) -> Option<String> {
            match value {
                serde_json::Value::String(text) => Some(text.clone()),
                serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                    Some(value.to_string())
                }
                _ => None,
            }
        }
        let authorizer: &ApiGatewayRequestAuthorizer = match &self.payload {
            Payload::Http(request) => match request.request_context() {
                RequestContext::ApiGatewayV2(c) => c.authorizer.as_ref()?,
                RequestContext::ApiGatewayV1(c) => &c.authorizer,
                _ => return None,
            },
            #[cfg(feature = "websocket")]
            Payload::WebSocket(request) => &request.request_context().authorizer,
            #[allow(unreachable_patterns)]
            _ => return None,
        };
        if let Some(claim) = authorizer.jwt.as_ref().and_then(|jwt| jwt.claims.get(name)) {
            return Some(claim.clone());
        }
        authorizer
            .fields
            .get(name)
            .and_then(text)
            .or_else(|| authorizer.fields.get("lambda")?.get(name).and_then(text))
    }

    /// The string value of message attribute `name`, for an SQS or SNS record (how a
    /// publisher passes a correlation id or tenant along with the message). An EventBridge
    /// event has no attributes: for one, this is the string field `name` at the top of its
    /// `detail`, where an event envelope carries the same metadata (`tenant`,
    /// `correlationId`, `traceHeader`).
    pub fn message_attribute(&self, name: &str) -> Option<&str> {
        match &self.payload {
            #[cfg(feature = "eventbridge")]
            Payload::EventBridge(event) => detail_field(&event.detail, name),
            #[cfg(feature = "sqs")]
            Payload::Sqs(message) => message
                .message_attributes
                .get(name)?
                .string_value
                .as_deref(),
            #[cfg(feature = "sns")]
            // A Binary attribute's value is base64 text, no string value at all (as SQS
            // has none for one).
            Payload::Sns(record) => record
                .sns
                .message_attributes
                .get(name)
                .filter(|attribute| attribute.data_type.starts_with("String"))
                .map(|attribute| attribute.value.as_str()),
            _ => {
                let _ = name;
                None
            }
        }
    }

    /// The X-Ray trace header of whoever sent this SQS message (its `AWSTraceHeader`
    /// system attribute) or EventBridge event (the `traceHeader` field at the top of its
    /// `detail`, where an event envelope carries it), to link the producer's trace;
    /// [`Context::trace_id`] is this invocation's own.
    pub fn upstream_trace(&self) -> Option<&str> {
        match &self.payload {
            #[cfg(feature = "sqs")]
            Payload::Sqs(message) => message.attributes.get("AWSTraceHeader").map(String::as_str),
            #[cfg(feature = "eventbridge")]
            Payload::EventBridge(event) => detail_field(&event.detail, "traceHeader"),
            _ => None,
        }
    }

    #[cfg(feature = "sqs")]
    /// The SQS message, for an SQS record.
    pub fn sqs_message(&self) -> Option<&SqsMessage> {
        match &self.payload {
            Payload::Sqs(message) => Some(message),
            _ => None,
        }
    }

    #[cfg(feature = "dynamodb")]
    /// The DynamoDB Streams record, for a stream record.
    pub fn dynamodb_record(&self) -> Option<&DynamoDbRecord> {
        match &self.payload {
            Payload::DynamoDb(record) => Some(record),
            _ => None,
        }
    }

    #[cfg(feature = "sns")]
    /// The SNS record, for an SNS notification.
    pub fn sns_record(&self) -> Option<&SnsRecord> {
        match &self.payload {
            Payload::Sns(record) => Some(record),
            _ => None,
        }
    }

    #[cfg(feature = "websocket")]
    /// The WebSocket event (route key, event type, connection and API), for an API Gateway
    /// WebSocket API event.
    pub fn websocket(&self) -> Option<&crate::websocket::WebSocketRequest> {
        match &self.payload {
            Payload::WebSocket(request) => Some(request),
            _ => None,
        }
    }

    #[cfg(feature = "websocket")]
    /// The id of the WebSocket connection the event belongs to, for WebSocket events: the
    /// id to send to with [`Connections`](crate::websocket) (feature `aws`) and to store
    /// for later messages.
    pub fn connection_id(&self) -> Option<&str> {
        self.websocket().map(|request| request.connection_id())
    }

    /// The authorizer request (its ARN, token, identity sources, route key and connection),
    /// for an API Gateway Lambda authorizer; its headers and query are also read by
    /// [`Context::header`] and [`Context::query`].
    #[cfg(feature = "authorizer")]
    pub fn authorizer(&self) -> Option<&crate::authorizer::AuthorizerRequest> {
        match &self.payload {
            Payload::Authorizer(request) => Some(request),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    #[cfg(feature = "eventbridge")]
    /// The EventBridge event (its `detail` kept as raw JSON), for EventBridge and scheduled
    /// events.
    pub fn eventbridge_event(&self) -> Option<&EventBridgeEvent<Box<RawValue>>> {
        match &self.payload {
            Payload::EventBridge(event) => Some(event),
            _ => None,
        }
    }
}

/// The string field `name` at the top of an EventBridge event's `detail`, borrowed from it
/// (`None` when the detail is not an object, lacks the field, or it is not a string without
/// escapes, which metadata such as ids and trace headers never need).
#[cfg(feature = "eventbridge")]
fn detail_field<'a>(detail: &'a RawValue, name: &str) -> Option<&'a str> {
    let fields: std::collections::HashMap<&str, &RawValue> =
        serde_json::from_str(detail.get()).ok()?;
    serde_json::from_str::<&str>(fields.get(name)?.get()).ok()
}

tokio::task_local! {
    /// The deadline of the invocation the task serves: `Some(None)` for one without.
    static INVOCATION_DEADLINE: Option<SystemTime>;
}

/// The deadline of the invocation whose handler the current task runs, for code that has
/// no [`Context`] at hand (a publisher's own resend loop, a client's retries): set while
/// the invocation's middleware stack and handler run (a layer added with
/// [`App::layer`](crate::App::layer), a route's own layers, the handler), `None` elsewhere:
/// on a task the handler spawned, on a task a layer spawned to run the service inside it
/// (the handler's call included), in a streamed body's producer once the handler returned,
/// or when the runtime gave no deadline.
pub fn invocation_deadline() -> Option<SystemTime> {
    INVOCATION_DEADLINE
        .try_with(|deadline| *deadline)
        .ok()
        .flatten()
}

/// An invocation's deadline, put in scope while its middleware stack and handler are
/// polled so that [`invocation_deadline`] answers inside them. Not around the whole
/// invocation: that scope moved the invocation's large future once more and cost every
/// request half a microsecond.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InvocationDeadline(Option<SystemTime>);

impl InvocationDeadline {
    /// The runtime's deadline, milliseconds since the epoch (0 for none).
    pub(crate) fn from_millis(deadline: u64) -> Self {
        InvocationDeadline((deadline != 0).then(|| UNIX_EPOCH + Duration::from_millis(deadline)))
    }

    /// Runs `work` with the deadline in scope.
    fn within<T>(self, work: impl FnOnce() -> T) -> T {
        INVOCATION_DEADLINE.sync_scope(self.0, work)
    }

    /// `work`, polled inside `span` with the deadline in scope: the call of a stack's
    /// services happens inside its first poll, so both hold there too. Dropped unfinished
    /// (the invocation cancelled), it is dropped inside both as well.
    pub(crate) fn scope<F: std::future::Future>(
        self,
        work: F,
        span: Arc<tracing::Span>,
    ) -> Scoped<F> {
        Scoped {
            work: Some(work),
            deadline: self,
            span,
        }
    }
}

pin_project_lite::pin_project! {
    /// A unit's middleware stack and handler, polled inside the unit's span (entered
    /// through the context's shared copy, which costs no subscriber call to clone) with
    /// the invocation's deadline in scope: [`InvocationDeadline::scope`]. `work` is `None`
    /// once it has finished or been dropped.
    pub(crate) struct Scoped<F> {
        #[pin]
        work: Option<F>,
        deadline: InvocationDeadline,
        span: Arc<tracing::Span>,
    }

    impl<F> PinnedDrop for Scoped<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if this.work.is_some() {
                let _entered = this.span.enter();
                let deadline = *this.deadline;
                deadline.within(|| this.work.set(None));
            }
        }
    }
}

impl<F: std::future::Future> std::future::Future for Scoped<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        let deadline = *this.deadline;
        deadline.within(|| {
            let Some(work) = this.work.as_mut().as_pin_mut() else {
                // Polled after it finished: a caller's bug, answered as `Fuse` would.
                return std::task::Poll::Pending;
            };
            let poll = work.poll(cx);
            if poll.is_ready() {
                this.work.set(None);
            }
            poll
        })
    }
}
