//! A testing kit: build any event in a line, load a fixture, invoke an [`App`] in-process
//! (no Lambda runtime, no network) and read the typed response.
//!
//! ```
//! use lift_core::testing::{TestApp, events};
//! use lift_core::{App, Context, Json, Result};
//!
//! async fn hello(ctx: Context) -> Result<Json<String>> {
//!     Ok(Json(format!("Hello, {}!", ctx.path_param("name")?)))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<()> {
//! let app = TestApp::new(App::new().get("/hello/{name}", hello))?;
//! let response = app.http(events::http("GET", "/hello/world").v2()).await?;
//! assert_eq!(response.status, 200);
//! assert_eq!(response.json::<String>()?, "Hello, world!");
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::app::{App, LiftService};
use crate::error::Error;

/// A Lambda context for tests: the given request id, a deadline 30 s from now, function
/// `lift-test` version `$LATEST`.
pub fn lambda_context(request_id: &str) -> lambda_runtime::Context {
    let config = lambda_runtime::Config {
        function_name: "lift-test".to_owned(),
        version: "$LATEST".to_owned(),
        memory: 128,
        ..Default::default()
    };
    let deadline = SystemTime::now()
        .checked_add(Duration::from_secs(30))
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let mut context = lambda_runtime::Context::default();
    context.request_id = request_id.to_owned();
    context.deadline = deadline;
    context.invoked_function_arn =
        "arn:aws:lambda:us-east-1:123456789012:function:lift-test".to_owned();
    context.xray_trace_id = Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".to_owned());
    context.env_config = std::sync::Arc::new(config);
    context
}

/// Reads a JSON event fixture from a file.
///
/// # Errors
/// [`Error::Internal`] when the file cannot be read or is not JSON.
pub fn fixture(path: impl AsRef<Path>) -> Result<Value, Error> {
    let text = std::fs::read_to_string(path.as_ref()).map_err(Error::internal)?;
    serde_json::from_str(&text).map_err(Error::internal)
}

/// The outputs of a local deployment, as `scripts/deploy.py` writes them into the file
/// `LIFT_STACK_FILE` names (functions with their names and URLs, stack outputs), for tests
/// that call deployed functions. A relative path is looked for from the working directory
/// up: cargo runs a member crate's tests in that crate's directory, so
/// `target/lift-local/stack.json` given at the workspace root is found from there.
///
/// # Errors
/// [`Error::Environment`] when `LIFT_STACK_FILE` is not set (nothing was deployed);
/// [`Error::Internal`] when the file cannot be read or is not JSON.
pub fn deployed_stack() -> Result<Value, Error> {
    let path =
        std::env::var("LIFT_STACK_FILE").map_err(|_| Error::Environment("LIFT_STACK_FILE"))?;
    let found = std::env::current_dir()
        .ok()
        .and_then(|dir| find_upwards(Path::new(&path), &dir));
    fixture(found.unwrap_or_else(|| path.into()))
}

/// A relative `path` found from `dir` or the nearest of its parents; `None` when `path` is
/// absolute or nowhere.
fn find_upwards(path: &Path, dir: &Path) -> Option<std::path::PathBuf> {
    if path.is_absolute() {
        return None;
    }
    dir.ancestors().map(|d| d.join(path)).find(|p| p.is_file())
}

/// One output of the local deployment ([`deployed_stack`]), by its name in `template.yaml`.
///
/// # Errors
/// As [`deployed_stack`], and [`Error::Config`] naming an output the stack does not have.
pub fn stack_output(name: &str) -> Result<String, Error> {
    deployed_stack()?["outputs"][name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Config(format!("the deployed stack has no output {name}")))
}

/// An [`App`] frozen for in-process invocations.
#[derive(Debug, Clone)]
pub struct TestApp {
    service: LiftService,
}

/// An HTTP response read back from any source's response shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Every header value, by lower-case name, from `headers`, `multiValueHeaders` and
    /// `cookies` (as `set-cookie`).
    pub headers: BTreeMap<String, Vec<String>>,
    /// The body, base64 undone.
    pub body: Vec<u8>,
    /// Whether the body travelled base64-encoded.
    pub base64: bool,
    /// Whether the response used `multiValueHeaders`.
    pub multi_value: bool,
}

impl HttpResponse {
    /// Parses a v1, v2 or ALB response.
    ///
    /// # Errors
    /// [`Error::Internal`] when the value is not an HTTP event response.
    pub fn from_value(value: &Value) -> Result<Self, Error> {
        let status = value["statusCode"]
            .as_u64()
            .ok_or_else(|| Error::internal("the response has no statusCode"))?
            as u16;
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some(map) = value["headers"].as_object() {
            for (name, v) in map {
                headers
                    .entry(name.to_ascii_lowercase())
                    .or_default()
                    .push(v.as_str().unwrap_or_default().to_owned());
            }
        }
        let multi_value = value["multiValueHeaders"].is_object();
        if let Some(map) = value["multiValueHeaders"].as_object() {
            for (name, values) in map {
                let entry = headers.entry(name.to_ascii_lowercase()).or_default();
                for v in values.as_array().into_iter().flatten() {
                    entry.push(v.as_str().unwrap_or_default().to_owned());
                }
            }
        }
        for cookie in value["cookies"].as_array().into_iter().flatten() {
            headers
                .entry("set-cookie".to_owned())
                .or_default()
                .push(cookie.as_str().unwrap_or_default().to_owned());
        }
        let base64 = value["isBase64Encoded"].as_bool().unwrap_or(false);
        let text = value["body"].as_str().unwrap_or_default();
        let body = if base64 {
            STANDARD.decode(text).map_err(Error::internal)?
        } else {
            text.as_bytes().to_vec()
        };
        Ok(HttpResponse {
            status,
            headers,
            body,
            base64,
            multi_value,
        })
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|values| values.first())
            .map(String::as_str)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    ///
    /// # Errors
    /// [`Error::Internal`] when the body is not that JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(Error::internal)
    }
}

/// The `itemIdentifier`s of a batch response's `batchItemFailures`.
pub fn batch_failures(response: &Value) -> Vec<String> {
    response["batchItemFailures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
        .collect()
}

impl TestApp {
    /// Freezes `app` for tests.
    ///
    /// # Errors
    /// The App's configuration error, as [`App::into_service`] reports it.
    pub fn new(app: App) -> Result<Self, Error> {
        Ok(TestApp {
            service: app.into_service()?,
        })
    }

    /// The frozen App, for what the kit does not wrap ([`LiftService::lifecycle`],
    /// [`LiftService::start_background`]).
    pub fn service(&self) -> &LiftService {
        &self.service
    }

    /// Invokes the App with a raw event, as the runtime would, with a fresh request id.
    ///
    /// # Errors
    /// The invocation error the runtime would report.
    pub async fn invoke(&self, event: &Value) -> Result<Value, Error> {
        self.invoke_with(event, lambda_context("test-request-id"))
            .await
    }

    /// Invokes the App with a raw event and a given Lambda context.
    ///
    /// # Errors
    /// The invocation error the runtime would report.
    pub async fn invoke_with(
        &self,
        event: &Value,
        context: lambda_runtime::Context,
    ) -> Result<Value, Error> {
        let raw: Box<RawValue> = serde_json::value::to_raw_value(event).map_err(Error::internal)?;
        let response = self.service.invoke(&raw, context).await?;
        serde_json::from_str(response.get()).map_err(Error::internal)
    }

    /// Invokes the App with an HTTP event and reads the HTTP response back.
    ///
    /// # Errors
    /// The invocation error, or [`Error::Internal`] when the response is not HTTP-shaped.
    pub async fn http(&self, event: Value) -> Result<HttpResponse, Error> {
        HttpResponse::from_value(&self.invoke(&event).await?)
    }

    /// Invokes the App with a WebSocket event ([`events::websocket`]) and reads the
    /// WebSocket proxy response (`statusCode`, `headers`, `body`) back.
    ///
    /// # Errors
    /// The invocation error, or [`Error::Internal`] when the response has no `statusCode`.
    pub async fn websocket(&self, event: Value) -> Result<HttpResponse, Error> {
        HttpResponse::from_value(&self.invoke(&event).await?)
    }
}

/// A streamed HTTP response, read back chunk by chunk as the Lambda runtime would send it
/// (see [`crate::stream`]).
#[derive(Debug)]
pub struct StreamedResponse {
    /// The status code from the prelude.
    pub status: u16,
    /// The prelude's headers, by lower-case name (one value each; `set-cookie` is in
    /// [`StreamedResponse::cookies`]).
    pub headers: BTreeMap<String, String>,
    /// The prelude's cookies.
    pub cookies: Vec<String>,
    body: crate::stream::ResponseStream,
}

impl StreamedResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// Whether the body is produced as it goes (a streamed body) rather than a buffered
    /// body sent as one chunk.
    pub fn is_live(&self) -> bool {
        self.body.is_live()
    }

    /// The next chunk of the body, `None` at its end. Chunks come one by one, as produced;
    /// until this is called, the producer gets no further than its backpressure allows.
    pub async fn next_chunk(&mut self) -> Option<bytes::Bytes> {
        use futures_util::StreamExt;
        match self.body.next().await {
            Some(Ok(chunk)) => Some(chunk),
            Some(Err(never)) => match never {},
            None => None,
        }
    }

    /// The rest of the body.
    pub async fn body(mut self) -> Vec<u8> {
        let mut body = Vec::new();
        while let Some(chunk) = self.next_chunk().await {
            body.extend_from_slice(&chunk);
        }
        body
    }

    /// The body's stream, as the runtime receives it.
    pub fn into_stream(self) -> crate::stream::ResponseStream {
        self.body
    }
}

impl TestApp {
    /// Invokes the App as [`App::run`] does ([`LiftService::respond`]) and returns its
    /// streamed HTTP response without reading the body.
    ///
    /// # Errors
    /// The invocation error; [`Error::Internal`] when the reply is buffered (the App has no
    /// [`App::response_streaming`], or the event is not payload 2.0).
    pub async fn stream(&self, event: Value) -> Result<StreamedResponse, Error> {
        let raw: Box<RawValue> =
            serde_json::value::to_raw_value(&event).map_err(Error::internal)?;
        let reply = self
            .service
            .respond(&raw, lambda_context("test-request-id"))
            .await?;
        let lambda_runtime::FunctionResponse::StreamingResponse(response) = reply else {
            return Err(Error::internal(
                "the reply is buffered: enable App::response_streaming and send a payload 2.0 event",
            ));
        };
        let prelude = response.metadata_prelude;
        let headers = prelude
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        Ok(StreamedResponse {
            status: prelude.status_code.as_u16(),
            headers,
            cookies: prelude.cookies,
            body: response.stream,
        })
    }
}

/// One-line builders for every event source Lift serves.
pub mod events {
    use serde_json::{Map, Value, json};

    /// Starts API Gateway WebSocket events on connection `connection_id` of API `api-id`,
    /// stage `test`; finish one with [`WebSocketEvent::connect`],
    /// [`WebSocketEvent::message`] or [`WebSocketEvent::disconnect`].
    pub fn websocket(connection_id: &str) -> WebSocketEvent {
        WebSocketEvent {
            connection_id: connection_id.to_owned(),
            api_id: "api-id".to_owned(),
            stage: "test".to_owned(),
            query: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// WebSocket events being built (see [`websocket`]).
    #[derive(Debug, Clone)]
    pub struct WebSocketEvent {
        connection_id: String,
        api_id: String,
        stage: String,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
    }

    impl WebSocketEvent {
        /// Sets the API id and stage (the domain name follows the API id).
        pub fn api(mut self, api_id: &str, stage: &str) -> Self {
            self.api_id = api_id.to_owned();
            self.stage = stage.to_owned();
            self
        }
        /// Adds a handshake query parameter (sent with `$connect`).
        pub fn query(mut self, name: &str, value: &str) -> Self {
            self.query.push((name.to_owned(), value.to_owned()));
            self
        }
        /// Adds a handshake header (sent with `$connect`).
        pub fn header(mut self, name: &str, value: &str) -> Self {
            self.headers.push((name.to_owned(), value.to_owned()));
            self
        }

        fn context(&self, route_key: &str, event_type: &str) -> Value {
            let mut context = json!({
                "routeKey": route_key,
                "eventType": event_type,
                "extendedRequestId": "ext-request-id",
                "requestTime": "23/Nov/2026:12:00:00 +0000",
                "messageDirection": "IN",
                "stage": self.stage,
                "connectedAt": 1_795_000_000_000_u64,
                "requestTimeEpoch": 1_795_000_000_500_u64,
                "identity": { "sourceIp": "192.0.2.1", "userAgent": "lift-test" },
                "requestId": "api-request-id",
                "domainName": format!("{}.execute-api.us-east-1.amazonaws.com", self.api_id),
                "connectionId": self.connection_id,
                "apiId": self.api_id
            });
            match event_type {
                "MESSAGE" => context["messageId"] = Value::from("message-id"),
                "DISCONNECT" => {
                    context["disconnectStatusCode"] = Value::from(1000);
                    context["disconnectReason"] = Value::from("Client-side close frame");
                }
                _ => {}
            }
            context
        }

        /// The `$connect` event, with the handshake's headers and query.
        pub fn connect(&self) -> Value {
            let (headers, multi_headers) = single_and_multi(&self.headers);
            let (query, multi_query) = single_and_multi(&self.query);
            json!({
                "headers": headers,
                "multiValueHeaders": multi_headers,
                "queryStringParameters": query,
                "multiValueQueryStringParameters": multi_query,
                "requestContext": self.context("$connect", "CONNECT"),
                "isBase64Encoded": false
            })
        }

        /// A message that API Gateway routed to `route_key` (`$default` or a custom key).
        pub fn message(&self, route_key: &str, body: &str) -> Value {
            json!({
                "requestContext": self.context(route_key, "MESSAGE"),
                "body": body,
                "isBase64Encoded": false
            })
        }

        /// The `$disconnect` event (the client closed with status 1000).
        pub fn disconnect(&self) -> Value {
            json!({
                "headers": { "Host": format!("{}.execute-api.us-east-1.amazonaws.com", self.api_id) },
                "multiValueHeaders": { "Host": [format!("{}.execute-api.us-east-1.amazonaws.com", self.api_id)] },
                "requestContext": self.context("$disconnect", "DISCONNECT"),
                "isBase64Encoded": false
            })
        }
    }

    /// `pairs` as a single-value map (the last value of a name wins) and a multi-value map,
    /// each `null` when empty, as API Gateway sends them.
    fn single_and_multi(pairs: &[(String, String)]) -> (Value, Value) {
        let mut single = Map::new();
        let mut multi: Map<String, Value> = Map::new();
        for (name, value) in pairs {
            single.insert(name.clone(), Value::from(value.clone()));
            if let Value::Array(values) = multi
                .entry(name.clone())
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                values.push(Value::from(value.clone()));
            }
        }
        let or_null = |map: Map<String, Value>| {
            if map.is_empty() {
                Value::Null
            } else {
                Value::Object(map)
            }
        };
        (or_null(single), or_null(multi))
    }

    /// Starts an HTTP event; finish it with [`HttpEvent::v1`], [`HttpEvent::v2`] or
    /// [`HttpEvent::alb`].
    pub fn http(method: &str, path: &str) -> HttpEvent {
        HttpEvent {
            method: method.to_owned(),
            path: path.to_owned(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            base64: false,
        }
    }

    /// An HTTP request being built.
    #[derive(Debug, Clone)]
    pub struct HttpEvent {
        method: String,
        path: String,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        body: Option<String>,
        base64: bool,
    }

    fn encode(text: &str) -> String {
        form_urlencoded::byte_serialize(text.as_bytes()).collect()
    }

    impl HttpEvent {
        /// Adds a query parameter (repeat for several values).
        pub fn query(mut self, name: &str, value: &str) -> Self {
            self.query.push((name.to_owned(), value.to_owned()));
            self
        }
        /// Adds a header (repeat for several values).
        pub fn header(mut self, name: &str, value: &str) -> Self {
            self.headers.push((name.to_owned(), value.to_owned()));
            self
        }
        /// Sets a text body.
        pub fn body(mut self, body: &str) -> Self {
            self.body = Some(body.to_owned());
            self.base64 = false;
            self
        }
        /// Sets a binary body (sent base64-encoded).
        pub fn binary(mut self, body: &[u8]) -> Self {
            use base64::Engine;
            self.body = Some(base64::engine::general_purpose::STANDARD.encode(body));
            self.base64 = true;
            self
        }
        /// Sets a JSON body and `content-type: application/json`.
        pub fn json(self, body: &Value) -> Self {
            self.header("content-type", "application/json")
                .body(&body.to_string())
        }

        fn single_headers(&self) -> Map<String, Value> {
            let mut map = Map::new();
            for (name, value) in &self.headers {
                map.insert(name.clone(), Value::from(value.clone()));
            }
            map
        }

        fn multi_headers(&self) -> Map<String, Value> {
            let mut map = Map::new();
            for (name, value) in &self.headers {
                let entry = map
                    .entry(name.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(values) = entry {
                    values.push(Value::from(value.clone()));
                }
            }
            map
        }

        fn multi_query(&self, encoded: bool) -> Map<String, Value> {
            let mut map = Map::new();
            for (name, value) in &self.query {
                let (name, value) = if encoded {
                    (encode(name), encode(value))
                } else {
                    (name.clone(), value.clone())
                };
                let entry = map.entry(name).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(values) = entry {
                    values.push(Value::from(value));
                }
            }
            map
        }

        /// An API Gateway HTTP API / Function URL event (payload format 2.0).
        pub fn v2(&self) -> Value {
            let raw_query = self
                .query
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            let mut headers = Map::new();
            for (name, value) in &self.headers {
                let name = name.to_ascii_lowercase();
                match headers.get_mut(&name) {
                    Some(Value::String(existing)) => {
                        existing.push(',');
                        existing.push_str(value);
                    }
                    _ => {
                        headers.insert(name, Value::from(value.clone()));
                    }
                }
            }
            json!({
                "version": "2.0",
                "routeKey": "$default",
                "rawPath": self.path,
                "rawQueryString": raw_query,
                "headers": headers,
                "requestContext": {
                    "accountId": "123456789012",
                    "apiId": "api-id",
                    "domainName": "api-id.execute-api.us-east-1.amazonaws.com",
                    "domainPrefix": "api-id",
                    "http": {
                        "method": self.method,
                        "path": self.path,
                        "protocol": "HTTP/1.1",
                        "sourceIp": "192.0.2.1",
                        "userAgent": "lift-test"
                    },
                    "requestId": "api-request-id",
                    "routeKey": "$default",
                    "stage": "$default",
                    "time": "23/Nov/2026:12:00:00 +0000",
                    "timeEpoch": 1_795_000_000_000_u64
                },
                "body": self.body,
                "isBase64Encoded": self.base64
            })
        }

        /// An API Gateway REST API event (payload format 1.0, with multi-value maps).
        pub fn v1(&self) -> Value {
            json!({
                "resource": "/{proxy+}",
                "path": self.path,
                "httpMethod": self.method,
                "headers": self.single_headers(),
                "multiValueHeaders": self.multi_headers(),
                "queryStringParameters": null,
                "multiValueQueryStringParameters": self.multi_query(false),
                "pathParameters": null,
                "stageVariables": null,
                "requestContext": {
                    "accountId": "123456789012",
                    "resourceId": "abc123",
                    "stage": "prod",
                    "requestId": "api-request-id",
                    "identity": { "sourceIp": "192.0.2.1" },
                    "resourcePath": "/{proxy+}",
                    "httpMethod": self.method,
                    "apiId": "api-id"
                },
                "body": self.body,
                "isBase64Encoded": self.base64
            })
        }

        /// An ALB event with multi-value headers enabled on the target group.
        pub fn alb(&self) -> Value {
            json!({
                "requestContext": { "elb": {
                    "targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/lift/abc"
                }},
                "httpMethod": self.method,
                "path": self.path,
                "multiValueQueryStringParameters": self.multi_query(true),
                "multiValueHeaders": self.multi_headers(),
                "body": self.body.clone().unwrap_or_default(),
                "isBase64Encoded": self.base64
            })
        }
    }

    fn sqs_record(id: &str, body: &str, arn: &str, group: Option<&str>) -> Value {
        let mut attributes = json!({
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1795000000000",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1795000000001"
        });
        if let Some(group) = group {
            attributes["MessageGroupId"] = Value::from(group);
            attributes["MessageDeduplicationId"] = Value::from(id);
        }
        json!({
            "messageId": id,
            "receiptHandle": format!("handle-{id}"),
            "body": body,
            "attributes": attributes,
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": arn,
            "awsRegion": "us-east-1"
        })
    }

    /// A standard-queue SQS batch; message ids are `m0`, `m1`, ...
    pub fn sqs<'a>(bodies: impl IntoIterator<Item = &'a str>) -> Value {
        let records: Vec<Value> = bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| {
                sqs_record(
                    &format!("m{i}"),
                    body,
                    "arn:aws:sqs:us-east-1:123456789012:lift-queue",
                    None,
                )
            })
            .collect();
        json!({ "Records": records })
    }

    /// A FIFO-queue SQS batch of `(message group, body)`; message ids are `m0`, `m1`, ...
    pub fn sqs_fifo<'a>(messages: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
        let records: Vec<Value> = messages
            .into_iter()
            .enumerate()
            .map(|(i, (group, body))| {
                sqs_record(
                    &format!("m{i}"),
                    body,
                    "arn:aws:sqs:us-east-1:123456789012:lift-queue.fifo",
                    Some(group),
                )
            })
            .collect();
        json!({ "Records": records })
    }

    /// One SNS notification carrying `message`.
    pub fn sns(message: &str) -> Value {
        json!({ "Records": [{
            "EventSource": "aws:sns",
            "EventVersion": "1.0",
            "EventSubscriptionArn": "arn:aws:sns:us-east-1:123456789012:lift-topic:sub",
            "Sns": {
                "Type": "Notification",
                "MessageId": "sns-message-0",
                "TopicArn": "arn:aws:sns:us-east-1:123456789012:lift-topic",
                "Subject": null,
                "Message": message,
                "Timestamp": "2026-11-23T12:00:00.000Z",
                "SignatureVersion": "1",
                "Signature": "c2lnbmF0dXJl",
                "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/cert.pem",
                "UnsubscribeUrl": "https://sns.us-east-1.amazonaws.com/unsubscribe",
                "MessageAttributes": {}
            }
        }]})
    }

    /// An EventBridge event.
    pub fn eventbridge(source: &str, detail_type: &str, detail: Value) -> Value {
        json!({
            "version": "0",
            "id": "eb-event-0",
            "detail-type": detail_type,
            "source": source,
            "account": "123456789012",
            "time": "2026-11-23T12:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": detail
        })
    }

    /// A scheduled event, as an EventBridge schedule rule sends it.
    pub fn schedule() -> Value {
        eventbridge("aws.events", "Scheduled Event", json!({}))
    }

    /// A DynamoDB Streams batch of `(eventName, NewImage, OldImage)` in DynamoDB JSON;
    /// sequence numbers are `100`, `101`, ..., and each record is a change of its own item
    /// (`Keys` `{"pk": "key-0"}`, `key-1`, ...; set `Keys` alike for changes of one item).
    pub fn dynamodb(records: impl IntoIterator<Item = (&'static str, Value, Value)>) -> Value {
        let records: Vec<Value> = records
            .into_iter()
            .enumerate()
            .map(|(i, (name, new_image, old_image))| {
                json!({
                    "eventID": format!("event-{i}"),
                    "eventName": name,
                    "eventVersion": "1.1",
                    "eventSource": "aws:dynamodb",
                    "awsRegion": "us-east-1",
                    "dynamodb": {
                        "ApproximateCreationDateTime": 1_795_000_000,
                        "Keys": { "pk": { "S": format!("key-{i}") } },
                        "NewImage": new_image,
                        "OldImage": old_image,
                        "SequenceNumber": format!("{}", 100 + i),
                        "SizeBytes": 26,
                        "StreamViewType": "NEW_AND_OLD_IMAGES"
                    },
                    "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/lift/stream/2026-11-23T00:00:00.000"
                })
            })
            .collect();
        json!({ "Records": records })
    }

    /// Starts API Gateway authorizer requests about `method path` of API `abc123`, stage
    /// `prod`, in account `123456789012`; finish one with [`AuthorizerEvent::token`],
    /// [`AuthorizerEvent::request_v1`], [`AuthorizerEvent::request_v2`] or
    /// [`AuthorizerEvent::websocket_connect`]. The shapes follow the API Gateway developer
    /// guide's Lambda authorizer input formats.
    pub fn authorizer(method: &str, path: &str) -> AuthorizerEvent {
        AuthorizerEvent {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            query: Vec::new(),
        }
    }

    /// An authorizer request being built (see [`authorizer`]).
    #[derive(Debug, Clone)]
    pub struct AuthorizerEvent {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        query: Vec<(String, String)>,
    }

    const API_ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:abc123";

    impl AuthorizerEvent {
        /// Adds a request header.
        pub fn header(mut self, name: &str, value: &str) -> Self {
            self.headers.push((name.to_owned(), value.to_owned()));
            self
        }

        /// Adds a query parameter.
        pub fn query(mut self, name: &str, value: &str) -> Self {
            self.query.push((name.to_owned(), value.to_owned()));
            self
        }

        fn arn(&self) -> String {
            format!("{API_ARN}/prod/{}{}", self.method, self.path)
        }

        fn map(pairs: &[(String, String)]) -> Value {
            Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )
        }

        /// A REST API `TOKEN` authorizer request carrying `token`.
        pub fn token(&self, token: &str) -> Value {
            json!({
                "type": "TOKEN",
                "authorizationToken": token,
                "methodArn": self.arn(),
            })
        }

        /// A REST API (or HTTP API payload 1.0) `REQUEST` authorizer request.
        pub fn request_v1(&self) -> Value {
            json!({
                "type": "REQUEST",
                "methodArn": self.arn(),
                "resource": self.path,
                "path": self.path,
                "httpMethod": self.method,
                "headers": Self::map(&self.headers),
                "queryStringParameters": Self::map(&self.query),
                "pathParameters": {},
                "stageVariables": {},
                "requestContext": {
                    "accountId": "123456789012",
                    "apiId": "abc123",
                    "httpMethod": self.method,
                    "path": format!("/prod{}", self.path),
                    "requestId": "authorizer-request-id",
                    "resourcePath": self.path,
                    "stage": "prod"
                }
            })
        }

        /// An HTTP API payload 2.0 `REQUEST` authorizer request; its identity source is
        /// the `authorization` header, when there is one.
        pub fn request_v2(&self) -> Value {
            let identity: Vec<&str> = self
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.as_str())
                .collect();
            let raw_query: Vec<String> =
                self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            json!({
                "version": "2.0",
                "type": "REQUEST",
                "routeArn": self.arn(),
                "identitySource": identity,
                "routeKey": format!("{} {}", self.method, self.path),
                "rawPath": self.path,
                "rawQueryString": raw_query.join("&"),
                "headers": Self::map(&self.headers),
                "queryStringParameters": Self::map(&self.query),
                "requestContext": {
                    "accountId": "123456789012",
                    "apiId": "abc123",
                    "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
                    "http": {
                        "method": self.method,
                        "path": self.path,
                        "protocol": "HTTP/1.1",
                        "sourceIp": "203.0.113.9",
                        "userAgent": "lift-test"
                    },
                    "requestId": "authorizer-request-id",
                    "routeKey": format!("{} {}", self.method, self.path),
                    "stage": "prod",
                    "time": "23/Nov/2026:12:00:00 +0000",
                    "timeEpoch": 1_795_435_200_000_u64
                }
            })
        }

        /// A WebSocket API `REQUEST` authorizer request for `$connect` on connection
        /// `connection_id` (the method and path are not used).
        pub fn websocket_connect(&self, connection_id: &str) -> Value {
            json!({
                "type": "REQUEST",
                "methodArn": format!("{API_ARN}/prod/$connect"),
                "headers": Self::map(&self.headers),
                "queryStringParameters": Self::map(&self.query),
                "stageVariables": {},
                "requestContext": {
                    "routeKey": "$connect",
                    "eventType": "CONNECT",
                    "extendedRequestId": "ext-1",
                    "requestTime": "23/Nov/2026:12:00:00 +0000",
                    "messageDirection": "IN",
                    "stage": "prod",
                    "connectedAt": 1_795_435_200_000_u64,
                    "requestTimeEpoch": 1_795_435_200_000_u64,
                    "requestId": "authorizer-request-id",
                    "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
                    "connectionId": connection_id,
                    "apiId": "abc123"
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `target/lift-local/stack.json` given at the workspace root is found from a member
    /// crate's directory, where cargo runs its tests.
    #[test]
    fn a_relative_stack_file_is_found_from_a_member_crate() {
        let root = std::env::temp_dir().join(format!("lift-find-{}", std::process::id()));
        let member = root.join("examples").join("shop");
        std::fs::create_dir_all(&member).expect("dirs");
        std::fs::create_dir_all(root.join("target/lift-local")).expect("dirs");
        let stack = root.join("target/lift-local/stack.json");
        std::fs::write(&stack, "{}").expect("write");
        let relative = Path::new("target/lift-local/stack.json");
        assert_eq!(find_upwards(relative, &member), Some(stack.clone()));
        assert_eq!(find_upwards(relative, &root), Some(stack));
        assert_eq!(find_upwards(Path::new("target/none.json"), &member), None);
        std::fs::remove_dir_all(&root).expect("clean up");
    }
}
