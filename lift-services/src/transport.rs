//! How a call reaches an instance: Lambda `Invoke` of its qualified ARN with an API Gateway
//! HTTP API (payload 2.0) event ([`LambdaTransport`]), HTTP to its Function URL, signed with
//! SigV4 for IAM auth ([`HttpTransport`]), or an in-process Lift App standing in for a
//! service in tests ([`InProcessTransport`]).
//!
//! The Lambda and in-process transports build the same event from the request, so any Lift
//! HTTP route is callable without an API in front of it, authorized by IAM
//! (`lambda:InvokeFunction` on the target); the HTTP transport sends the request as it is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use lift_core::{BoxError, LiftService};
use lift_middleware::classify::{RequestInfo, ResponseStatus};
use serde_json::{Value, json};

pub use crate::http_transport::{DEFAULT_MAX_RESPONSE_BYTES, HttpTransport};
use crate::model::Instance;

/// A request to a service.
#[derive(Debug, Clone)]
pub struct ServiceRequest {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) tenant: Option<String>,
    pub(crate) deadline: Option<SystemTime>,
    pub(crate) idempotent: bool,
    pub(crate) metrics: Option<lift_core::metrics::Metrics>,
}

impl ServiceRequest {
    /// A request with `method` on `path` (with its query string, if any).
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        ServiceRequest {
            method,
            path: path.into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            tenant: None,
            deadline: None,
            idempotent,
            metrics: None,
        }
    }

    /// A `GET`.
    pub fn get(path: impl Into<String>) -> Self {
        ServiceRequest::new(Method::GET, path)
    }

    /// A `POST`.
    pub fn post(path: impl Into<String>) -> Self {
        ServiceRequest::new(Method::POST, path)
    }

    /// A request made while handling `ctx`: it carries the trace header, the correlation id
    /// and the tenant onward ([`lift_core::Context::outbound_headers`]), stops at the
    /// invocation's deadline, and records the call in the invocation's metrics.
    pub fn from_context(ctx: &lift_core::Context, method: Method, path: impl Into<String>) -> Self {
        let mut request = ServiceRequest::new(method, path);
        request.headers = ctx.outbound_headers();
        request.tenant = ctx.tenant().map(str::to_owned);
        request.deadline = ctx.deadline();
        request.metrics = Some(ctx.metrics().clone());
        request
    }

    /// A JSON body.
    ///
    /// # Errors
    /// The value cannot be serialized.
    pub fn json<T: serde::Serialize + ?Sized>(
        mut self,
        body: &T,
    ) -> Result<Self, serde_json::Error> {
        self.body = Bytes::from(serde_json::to_vec(body)?);
        self.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(self)
    }

    /// A raw body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// A header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// The tenant the call is made for (also sent as `x-tenant-id`).
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        let tenant = tenant.into();
        if let Ok(value) = HeaderValue::from_str(&tenant) {
            self.headers.insert("x-tenant-id", value);
        }
        self.tenant = Some(tenant);
        self
    }

    /// When the caller stops waiting.
    pub fn deadline(mut self, deadline: SystemTime) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Whether sending it twice has the effect of sending it once (default: true for `GET`,
    /// `HEAD`, `PUT`, `DELETE` and `OPTIONS`): only such a request fails over after it may
    /// have reached an instance.
    pub fn idempotent(mut self, yes: bool) -> Self {
        self.idempotent = yes;
        self
    }

    /// The request's headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The request's tenant.
    pub fn tenant_id(&self) -> Option<&str> {
        self.tenant.as_deref()
    }
}

/// A service's answer.
#[derive(Debug, Clone)]
pub struct ServiceResponse {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl ResponseStatus for ServiceResponse {
    fn status_code(&self) -> Option<u16> {
        Some(self.status)
    }
}

/// One call on its way to one instance: what the middleware stack and the transport see.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The instance called.
    pub instance: Arc<Instance>,
    /// The request, with the propagated headers.
    pub request: Arc<ServiceRequest>,
    /// The calling service's name, sent as `x-lift-caller`.
    pub caller: Option<Arc<HeaderValue>>,
}

impl RequestInfo for Outbound {
    fn deadline(&self) -> Option<SystemTime> {
        self.request.deadline
    }
    fn is_idempotent(&self) -> bool {
        self.request.idempotent
    }
}

/// Carries a call to an instance.
pub trait Transport: Send + Sync + 'static {
    /// Sends `call` and returns the instance's answer; an error means no answer.
    fn send(&self, call: Outbound) -> BoxFuture<'static, Result<ServiceResponse, BoxError>>;
}

/// An error of a transport: the instance has no endpoint the transport can use, or its
/// answer could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The instance has no endpoint this transport can reach.
    #[error("instance `{instance}` has no endpoint this transport can reach")]
    NoEndpoint {
        /// The instance.
        instance: String,
    },
    /// The function failed (an unhandled error or a crash) rather than answering.
    #[error("the function failed: {kind}")]
    FunctionError {
        /// Lambda's `FunctionError` (`Unhandled`).
        kind: String,
        /// The error payload.
        payload: String,
    },
    /// The answer is not an HTTP-shaped Lambda response.
    #[error("the answer is not an HTTP response: {0}")]
    BadResponse(String),
    /// Lambda throttled the invocation (`TooManyRequestsException`): the function did not
    /// run, so any request may go to another instance.
    #[error("Lambda throttled the invocation of instance `{instance}`")]
    Throttled {
        /// The instance.
        instance: String,
    },
    /// Lambda could not run the instance's function (its alias does not exist, it is being
    /// updated or not ready, its network interfaces could not be set up), or over HTTP no
    /// connection to it could be made: nothing ran, so any request may go to another
    /// instance.
    #[error("instance `{instance}` was not invoked: {reason}")]
    NotInvoked {
        /// The instance.
        instance: String,
        /// Lambda's error.
        reason: String,
    },
    /// Lambda refused the caller before running anything: no permission to invoke the
    /// function (`AccessDeniedException`), credentials it does not recognise or that have
    /// expired, a bad signature, a region not enabled. Nothing ran, so any request may go to
    /// another instance (a policy may name some functions and not others, a region may be
    /// reachable and another not). It does not count in the instance's breaker (a caller
    /// missing `lambda:InvokeFunction` everywhere would otherwise open every breaker and see
    /// only open circuits, the cause hidden), only against its ejection, as a throttle does.
    /// `Display` names Lambda's code and message.
    #[error("Lambda refused the caller's invocation of instance `{instance}` ({code}): {message}")]
    Unauthorized {
        /// The instance.
        instance: String,
        /// Lambda's error code (`AccessDeniedException`, ...).
        code: String,
        /// Lambda's message.
        message: String,
    },
    /// The request could not be made here (a path that is not a valid URI; over a Function
    /// URL, no credentials to sign it with; an `Invoke` the SDK could not build): nothing
    /// was sent. It is the caller's to fix, not the instance's
    /// failure: it counts in neither the instance's breaker nor its ejection, and is not
    /// sent to another instance, which would refuse it the same way.
    #[error("the request to instance `{instance}` could not be made, so nothing was sent")]
    NotSent {
        /// The instance.
        instance: String,
        /// Why.
        #[source]
        source: BoxError,
    },
}

impl TransportError {
    /// [`TransportError::NotSent`] for `instance`, from `source`.
    pub(crate) fn not_sent(instance: &str, source: impl Into<BoxError>) -> BoxError {
        Box::new(TransportError::NotSent {
            instance: instance.to_owned(),
            source: source.into(),
        })
    }

    /// Whether `error` is a [`TransportError::NotSent`].
    pub(crate) fn is_not_sent(error: &BoxError) -> bool {
        matches!(
            error.downcast_ref::<TransportError>(),
            Some(TransportError::NotSent { .. })
        )
    }
}

/// The API Gateway HTTP API (payload 2.0) event a request becomes.
pub fn api_gateway_v2_event(call: &Outbound) -> Value {
    let request = &call.request;
    let (path, query) = match request.path.split_once('?') {
        Some((path, query)) => (path, query),
        None => (request.path.as_str(), ""),
    };
    let mut headers = serde_json::Map::new();
    for name in request.headers.keys() {
        let joined = request
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        headers.insert(name.as_str().to_owned(), Value::String(joined));
    }
    if let Some(caller) = call.caller.as_deref().and_then(|c| c.to_str().ok()) {
        headers.insert("x-lift-caller".to_owned(), Value::String(caller.to_owned()));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let (body, encoded) = match std::str::from_utf8(&request.body) {
        _ if request.body.is_empty() => (Value::Null, false),
        Ok(text) => (Value::String(text.to_owned()), false),
        Err(_) => (
            Value::String(base64::engine::general_purpose::STANDARD.encode(&request.body)),
            true,
        ),
    };
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "lift-service-client",
            "domainName": "lift-service-client",
            "domainPrefix": "lift-service-client",
            "http": {
                "method": request.method.as_str(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "lift-service-client"
            },
            "requestId": format!("{now:x}-{:08x}", fastrand::u32(..)),
            "routeKey": "$default",
            "stage": "$default",
            "time": "",
            "timeEpoch": now
        },
        "body": body,
        "isBase64Encoded": encoded
    })
}

/// Reads an HTTP-shaped Lambda response (`statusCode`, `headers`, `body`,
/// `isBase64Encoded`).
///
/// # Errors
/// [`TransportError::BadResponse`] when it is not one.
pub fn parse_proxy_response(payload: &[u8]) -> Result<ServiceResponse, TransportError> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| TransportError::BadResponse(e.to_string()))?;
    let status = value
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| TransportError::BadResponse("no statusCode".to_owned()))?;
    let mut headers = HeaderMap::new();
    if let Some(map) = value.get("headers").and_then(Value::as_object) {
        for (name, v) in map {
            if let (Ok(name), Some(Ok(v))) = (
                HeaderName::try_from(name.as_str()),
                v.as_str().map(HeaderValue::from_str),
            ) {
                headers.insert(name, v);
            }
        }
    }
    // Payload 2.0 answers carry their Set-Cookie values apart, in `cookies`; a payload 1.0
    // answer may carry repeated headers in `multiValueHeaders`.
    if let Some(cookies) = value.get("cookies").and_then(Value::as_array) {
        for cookie in cookies.iter().filter_map(Value::as_str) {
            if let Ok(cookie) = HeaderValue::from_str(cookie) {
                headers.append(http::header::SET_COOKIE, cookie);
            }
        }
    }
    if let Some(map) = value.get("multiValueHeaders").and_then(Value::as_object) {
        for (name, values) in map {
            let Ok(name) = HeaderName::try_from(name.as_str()) else {
                continue;
            };
            let values: Vec<HeaderValue> = values
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().and_then(|v| HeaderValue::from_str(v).ok()))
                .collect();
            if !values.is_empty() {
                headers.remove(&name);
                for v in values {
                    headers.append(name.clone(), v);
                }
            }
        }
    }
    let body = match value.get("body").and_then(Value::as_str) {
        None => Bytes::new(),
        Some(text) if value.get("isBase64Encoded") == Some(&Value::Bool(true)) => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| TransportError::BadResponse(e.to_string()))?,
        ),
        Some(text) => Bytes::from(text.to_owned()),
    };
    Ok(ServiceResponse {
        status,
        headers,
        body,
    })
}

/// Calls an instance through Lambda `Invoke` of its qualified ARN, in the ARN's region
/// (whatever the client's own region), so instances registered in other regions are reached.
///
/// The client's other settings go with every call: its credentials, and its endpoint URL
/// when it has one. An endpoint of one region (a VPC interface endpoint for Lambda) cannot
/// reach another region's functions, and Lambda's FIPS endpoints exist in some regions only:
/// with either, calls to instances in the regions it cannot reach fail (refused to the
/// caller when the endpoint refuses the signature, may have run when no FIPS endpoint's
/// name resolves), so give such a caller a transport per region it can reach.
#[derive(Debug, Clone)]
pub struct LambdaTransport {
    client: aws_sdk_lambda::Client,
}

impl LambdaTransport {
    /// A transport over `client` (built once, at init).
    pub fn new(client: aws_sdk_lambda::Client) -> Self {
        LambdaTransport { client }
    }
}

impl Transport for LambdaTransport {
    fn send(&self, call: Outbound) -> BoxFuture<'static, Result<ServiceResponse, BoxError>> {
        let client = self.client.clone();
        Box::pin(async move {
            let Some(arn) = call.instance.endpoints.lambda_arn.clone() else {
                return Err(TransportError::NoEndpoint {
                    instance: call.instance.id.to_string(),
                }
                .into());
            };
            let payload = serde_json::to_vec(&api_gateway_v2_event(&call))?;
            // One invocation per attempt: the client decides what is tried again and where
            // (a request that is not idempotent never is once it may have run), so the SDK's
            // own retries, which would invoke again inside one attempt, are off.
            let mut once = aws_sdk_lambda::config::Builder::default()
                .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled());
            // Lambda invokes only functions of the region it is called in: an instance in
            // another region is invoked there (through the client's region, Lambda answers
            // `ResourceNotFoundException`, and the healthy instance would be blamed).
            if let Some(region) = crate::model::parse_function_arn(&arn).map(|a| a.region)
                && client.config().region().map(|r| r.as_ref()) != Some(region)
            {
                once = once.region(aws_sdk_lambda::config::Region::new(region.to_owned()));
            }
            let sent = client
                .invoke()
                .function_name(arn)
                .payload(aws_sdk_lambda::primitives::Blob::new(payload))
                .customize()
                .config_override(once)
                .send()
                .await;
            let output = match sent {
                Ok(output) => output,
                // Not dispatched: the request could not be built (no endpoint for the
                // region, a payload that does not serialize). Missing credentials are a
                // dispatch failure in the SDK, indistinct from those that may have sent.
                Err(error @ aws_sdk_lambda::error::SdkError::ConstructionFailure(_)) => {
                    return Err(TransportError::not_sent(&call.instance.id, error));
                }
                Err(error) => {
                    return refusal(&call.instance.id, aws_sdk_lambda::Error::from(error));
                }
            };
            let body = output.payload().map(|b| b.as_ref()).unwrap_or_default();
            if let Some(kind) = output.function_error() {
                return Err(TransportError::FunctionError {
                    kind: kind.to_owned(),
                    payload: String::from_utf8_lossy(body).into_owned(),
                }
                .into());
            }
            Ok(parse_proxy_response(body)?)
        })
    }
}

/// What an `Invoke` that Lambda refused means for the call: an answer when the request
/// itself was refused (too large, not JSON: every instance would refuse it, and none is to
/// blame), [`TransportError::Throttled`] or [`TransportError::NotInvoked`] when the function
/// did not run (Lambda's error codes are for errors that kept it from running: its
/// configuration, its file systems, its network, its keys, its snapshot),
/// [`TransportError::Unauthorized`] when Lambda refused the caller, the error as it is
/// otherwise (a `ServiceException`, or anything unknown: the function may have run).
fn refusal(instance: &str, error: aws_sdk_lambda::Error) -> Result<ServiceResponse, BoxError> {
    use aws_sdk_lambda::Error as E;
    use aws_sdk_lambda::error::ProvideErrorMetadata;
    let refused = |status: u16, code: &str, message: Option<&str>| {
        let body = serde_json::json!({"error": {
            "code": code,
            "message": message.unwrap_or("Lambda refused the request"),
        }});
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(ServiceResponse {
            status,
            headers,
            body: Bytes::from(body.to_string()),
        })
    };
    let not_invoked = |reason: String| {
        Err(Box::new(TransportError::NotInvoked {
            instance: instance.to_owned(),
            reason,
        }) as BoxError)
    };
    match error {
        E::RequestTooLargeException(e) => refused(413, "request_too_large", e.message()),
        E::SerializedRequestEntityTooLargeException(e) => {
            refused(413, "request_too_large", e.message())
        }
        E::InvalidRequestContentException(e) => refused(400, "invalid_request", e.message()),
        E::UnsupportedMediaTypeException(e) => refused(415, "unsupported_media_type", e.message()),
        E::TooManyRequestsException(_) => Err(Box::new(TransportError::Throttled {
            instance: instance.to_owned(),
        })),
        error @ (E::ResourceNotFoundException(_)
        | E::ResourceConflictException(_)
        | E::ResourceNotReadyException(_)
        | E::EniLimitReachedException(_)
        | E::EniNotReadyException(_)
        | E::SubnetIpAddressLimitReachedException(_)
        | E::Ec2ThrottledException(_)
        | E::Ec2AccessDeniedException(_)
        | E::Ec2UnexpectedException(_)
        | E::InvalidSubnetIdException(_)
        | E::InvalidSecurityGroupIdException(_)
        | E::EfsMountConnectivityException(_)
        | E::EfsMountFailureException(_)
        | E::EfsMountTimeoutException(_)
        | E::S3FilesMountConnectivityException(_)
        | E::S3FilesMountFailureException(_)
        | E::S3FilesMountTimeoutException(_)
        | E::KmsAccessDeniedException(_)
        | E::KmsDisabledException(_)
        | E::KmsInvalidStateException(_)
        | E::KmsNotFoundException(_)
        | E::InvalidRuntimeException(_)
        | E::InvalidZipFileException(_)
        | E::CodeArtifactUserDeletedException(_)
        | E::CodeArtifactUserFailedException(_)
        | E::CodeArtifactUserPendingException(_)
        | E::NoPublishedVersionException(_)
        | E::SnapStartException(_)
        | E::SnapStartNotReadyException(_)
        | E::SnapStartRegenerationFailureException(_)
        | E::SnapStartTimeoutException(_)
        | E::RecursiveInvocationException(_)) => not_invoked(error.to_string()),
        // Not modelled by the SDK: the caller's identity or permissions.
        other
            if other
                .code()
                .is_some_and(|code| CALLER_REFUSED.contains(&code)) =>
        {
            Err(Box::new(TransportError::Unauthorized {
                instance: instance.to_owned(),
                code: other.code().unwrap_or_default().to_owned(),
                message: other.message().unwrap_or_default().to_owned(),
            }))
        }
        other => Err(Box::new(other)),
    }
}

/// The error codes with which Lambda (or the AWS front end before it) refuses the caller
/// rather than the request or the function.
const CALLER_REFUSED: &[&str] = &[
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredTokenException",
    "ExpiredToken",
    "RequestExpired",
    "OptInRequired",
];

/// Lift Apps in this process standing in for services, reached by the qualified ARN their
/// instances register: a test double the real client reaches through the real discovery
/// path, with the same event the Lambda transport sends.
#[derive(Debug, Clone, Default)]
pub struct InProcessTransport {
    targets: Arc<HashMap<String, LiftService>>,
}

impl InProcessTransport {
    /// No targets yet.
    pub fn new() -> Self {
        InProcessTransport::default()
    }

    /// Serves the ARN `arn` with `service` (an App's [`lift_core::App::into_service`]).
    pub fn serve(mut self, arn: impl Into<String>, service: LiftService) -> Self {
        Arc::make_mut(&mut self.targets).insert(arn.into(), service);
        self
    }
}

impl Transport for InProcessTransport {
    fn send(&self, call: Outbound) -> BoxFuture<'static, Result<ServiceResponse, BoxError>> {
        let targets = self.targets.clone();
        Box::pin(async move {
            let arn = call
                .instance
                .endpoints
                .lambda_arn
                .as_deref()
                .unwrap_or_default();
            let Some(service) = targets.get(arn) else {
                return Err(TransportError::NoEndpoint {
                    instance: call.instance.id.to_string(),
                }
                .into());
            };
            let event = serde_json::value::to_raw_value(&api_gateway_v2_event(&call))?;
            let mut context = lift_core::testing::lambda_context("in-process");
            context.invoked_function_arn = arn.to_owned();
            let response = service.invoke(&event, context).await?;
            Ok(parse_proxy_response(response.get().as_bytes())?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `Invoke` the SDK could not build (here: no endpoint for its region) was not
    /// sent: the caller's to fix, not the instance's failure.
    #[tokio::test]
    async fn an_invoke_the_sdk_cannot_build_is_not_sent() {
        let config = aws_sdk_lambda::Config::builder()
            .behavior_version(aws_sdk_lambda::config::BehaviorVersion::latest())
            .region(aws_sdk_lambda::config::Region::new("not a region/"))
            .credentials_provider(aws_sdk_lambda::config::Credentials::for_tests())
            .build();
        let transport = LambdaTransport::new(aws_sdk_lambda::Client::from_conf(config));
        let call = Outbound {
            instance: Arc::new(crate::Instance::new(
                "payments",
                "a",
                "us-east-1",
                // In the client's region: the ARN's own would be asked for instead.
                crate::Endpoints::lambda(
                    "arn:aws:lambda:not a region/:123456789012:function:p:live",
                ),
            )),
            request: Arc::new(ServiceRequest::get("/charges")),
            caller: None,
        };
        let error = transport.send(call).await.expect_err("no endpoint");
        assert!(TransportError::is_not_sent(&error), "{error:?}");
    }

    /// A function whose key is disabled never ran: not invoked, whatever the request. A
    /// caller Lambda refused (an error the SDK does not model) is the caller's to fix.
    #[test]
    fn errors_that_kept_the_function_from_running_or_refused_the_caller() {
        let kms = aws_sdk_lambda::Error::KmsDisabledException(
            aws_sdk_lambda::types::error::KmsDisabledException::builder().build(),
        );
        let error = refusal("a", kms).expect_err("no answer");
        assert!(
            matches!(
                error.downcast_ref::<TransportError>(),
                Some(TransportError::NotInvoked { .. })
            ),
            "{error:?}"
        );
        let denied =
            aws_sdk_lambda::Error::from(aws_sdk_lambda::operation::invoke::InvokeError::generic(
                aws_sdk_lambda::error::ErrorMetadata::builder()
                    .code("AccessDeniedException")
                    .message("not authorized to perform: lambda:InvokeFunction")
                    .build(),
            ));
        let error = refusal("a", denied).expect_err("no answer");
        assert!(
            matches!(
                error.downcast_ref::<TransportError>(),
                Some(TransportError::Unauthorized { .. })
            ),
            "{error:?}"
        );
        let fault =
            aws_sdk_lambda::Error::from(aws_sdk_lambda::operation::invoke::InvokeError::generic(
                aws_sdk_lambda::error::ErrorMetadata::builder()
                    .code("SomethingElse")
                    .build(),
            ));
        let error = refusal("a", fault).expect_err("no answer");
        assert!(
            error.downcast_ref::<TransportError>().is_none(),
            "{error:?}"
        );
    }

    /// The cookies of a payload 2.0 answer and the repeated headers of a 1.0 one arrive as
    /// headers, every value kept.
    #[test]
    fn cookies_and_repeated_headers_are_kept() {
        let v2 = parse_proxy_response(
            br#"{"statusCode": 200, "headers": {"content-type": "text/plain"},
                 "cookies": ["a=1; Path=/", "b=2"], "body": "ok"}"#,
        )
        .expect("a response");
        let cookies: Vec<_> = v2.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1; Path=/", "b=2"]);
        assert_eq!(v2.headers["content-type"], "text/plain");
        let v1 = parse_proxy_response(
            br#"{"statusCode": 200, "headers": {"x-a": "one"},
                 "multiValueHeaders": {"x-a": ["one", "two"]}, "body": ""}"#,
        )
        .expect("a response");
        let values: Vec<_> = v1.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["one", "two"]);
    }

    /// A request Lambda refuses for what it is answers as an HTTP refusal would: final, and
    /// no instance's fault (its status is under 500).
    #[test]
    fn a_request_lambda_refuses_is_a_client_error_answer() {
        let too_large = aws_sdk_lambda::Error::RequestTooLargeException(
            aws_sdk_lambda::types::error::RequestTooLargeException::builder()
                .message("Request must be smaller than 6291456 bytes")
                .build(),
        );
        let answer = refusal("a", too_large).expect("an answer");
        assert_eq!(answer.status, 413);
        let body: Value = serde_json::from_slice(&answer.body).expect("JSON");
        assert_eq!(body["error"]["code"], "request_too_large");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("6291456"))
        );
        let serialized_too_large = aws_sdk_lambda::Error::SerializedRequestEntityTooLargeException(
            aws_sdk_lambda::types::error::SerializedRequestEntityTooLargeException::builder()
                .build(),
        );
        assert_eq!(
            refusal("a", serialized_too_large)
                .expect("an answer")
                .status,
            413
        );
        let throttled = aws_sdk_lambda::Error::TooManyRequestsException(
            aws_sdk_lambda::types::error::TooManyRequestsException::builder().build(),
        );
        let error = refusal("a", throttled).expect_err("no answer");
        assert!(matches!(
            error.downcast_ref::<TransportError>(),
            Some(TransportError::Throttled { .. })
        ));
    }
}
