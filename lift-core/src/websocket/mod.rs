//! API Gateway WebSocket APIs: the event a handler sees, and (feature `aws`) the client that
//! sends to connections.
//!
//! A WebSocket API invokes its Lambda integration for three kinds of event: `$connect` when a
//! client opens a connection (a non-2xx answer refuses it), a message on a route key
//! (`$default` or a custom key chosen by the API's route selection expression, typically
//! `$request.body.action`), and `$disconnect` after the connection closed. Register a
//! handler per route key with [`App::websocket`](crate::App::websocket), in the same `App` as
//! HTTP and batch handlers; the handler reads its event through
//! [`Context::websocket`](crate::Context::websocket) and
//! [`Context::connection_id`](crate::Context::connection_id), and a typed input is the
//! message body, parsed and validated as an HTTP body is.
//!
//! Routing: the event's route key picks the handler. A message whose key has no handler goes
//! to the `$default` handler when there is one; `$connect` and `$disconnect` never fall back
//! (the `$default` handler handles messages, not the connection's life cycle). With no
//! handler, the answer is a `500` with code `no_handler`, and the log names the key.
//!
//! The answer is in WebSocket proxy shape (`statusCode`, `headers`, `body`,
//! `isBase64Encoded`); errors become the same status and JSON body as for HTTP. API Gateway
//! reads the status of `$connect` (2xx accepts the connection); a message route's answer
//! reaches the client only when the route has a route response. To push data to a client at
//! any time, use `Connections` (the API Gateway Management API, feature `aws`).
//!
//! ```no_run
//! use lift_core::http::StatusCode;
//! use lift_core::{App, Context, Error, Result};
//!
//! #[derive(serde::Deserialize, garde::Validate)]
//! struct Say {
//!     #[garde(length(min = 1, max = 512))]
//!     text: String,
//! }
//!
//! async fn connect(ctx: Context) -> Result<()> {
//!     match ctx.query("token") {
//!         Some("secret") => Ok(()),
//!         _ => Err(Error::new(StatusCode::UNAUTHORIZED, "unauthorized", "a token is required")),
//!     }
//! }
//!
//! async fn say(ctx: Context, input: Say) -> Result<String> {
//!     let from = ctx.connection_id().unwrap_or_default();
//!     Ok(format!("{from} said {}", input.text))
//! }
//!
//! # async fn run() -> Result<()> {
//! App::new()
//!     .websocket("$connect", connect)
//!     .websocket("say", say)
//!     .run()
//!     .await
//! # }
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::apigw::{
    ApiGatewayWebsocketProxyRequest, ApiGatewayWebsocketProxyRequestContext,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::HeaderMap;

use crate::error::Error;

#[cfg(feature = "aws")]
mod connections;

#[cfg(feature = "aws")]
pub use connections::{ConnectionError, ConnectionInfo, Connections};

/// What happened on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventType {
    /// A client is opening the connection (`$connect`); a non-2xx answer refuses it.
    Connect,
    /// A message arrived on the connection.
    Message,
    /// The connection closed (`$disconnect`); the answer is ignored.
    Disconnect,
}

impl EventType {
    /// The name API Gateway uses: `CONNECT`, `MESSAGE` or `DISCONNECT`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Connect => "CONNECT",
            EventType::Message => "MESSAGE",
            EventType::Disconnect => "DISCONNECT",
        }
    }
}

/// A deployed WebSocket API stage: what it takes to reach its connections through the API
/// Gateway Management API. Serializable, so that it can be stored beside connection ids for
/// a later push from another function.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebSocketApi {
    api_id: String,
    stage: String,
    domain_name: String,
}

impl WebSocketApi {
    /// An API by its id, stage name and domain name (`{apiId}.execute-api.{region}.amazonaws.com`
    /// or a custom domain).
    pub fn new(
        api_id: impl Into<String>,
        stage: impl Into<String>,
        domain_name: impl Into<String>,
    ) -> Self {
        WebSocketApi {
            api_id: api_id.into(),
            stage: stage.into(),
            domain_name: domain_name.into(),
        }
    }

    /// The API id.
    pub fn api_id(&self) -> &str {
        &self.api_id
    }

    /// The stage name.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// The domain name clients connected to.
    pub fn domain_name(&self) -> &str {
        &self.domain_name
    }

    /// Whether the domain name is the API's own `execute-api` host (not a custom domain).
    pub fn has_execute_api_domain(&self) -> bool {
        self.domain_name
            .strip_prefix(self.api_id.as_str())
            .is_some_and(|rest| rest.starts_with(".execute-api."))
    }
}

/// A WebSocket API event as Lift parsed it: route key, event type, connection, API and body.
#[derive(Debug, Clone)]
pub struct WebSocketRequest {
    pub(crate) route_key: String,
    pub(crate) event_type: EventType,
    pub(crate) connection_id: String,
    pub(crate) api: WebSocketApi,
    pub(crate) headers: HeaderMap,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) body: Bytes,
    pub(crate) request_context: ApiGatewayWebsocketProxyRequestContext,
}

impl WebSocketRequest {
    /// The route key API Gateway selected: `$connect`, `$disconnect`, `$default` or a custom
    /// key. ([`Context::route`](crate::Context::route) is the key of the handler that runs.)
    pub fn route_key(&self) -> &str {
        &self.route_key
    }

    /// Whether the client is connecting, sending a message or gone.
    pub fn event_type(&self) -> EventType {
        self.event_type
    }

    /// The connection's id.
    pub fn connection_id(&self) -> &str {
        &self.connection_id
    }

    /// The API and stage the connection belongs to, for `Connections` (feature `aws`).
    pub fn api(&self) -> &WebSocketApi {
        &self.api
    }

    /// The API id.
    pub fn api_id(&self) -> &str {
        &self.api.api_id
    }

    /// The stage name.
    pub fn stage(&self) -> &str {
        &self.api.stage
    }

    /// The domain name the client connected to.
    pub fn domain_name(&self) -> &str {
        &self.api.domain_name
    }

    /// The id of this message (messages only).
    pub fn message_id(&self) -> Option<&str> {
        self.request_context.message_id.as_deref()
    }

    /// When the connection was opened.
    pub fn connected_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.request_context.connected_at.max(0).unsigned_abs())
    }

    /// The handshake headers (`$connect` only: API Gateway sends none with other events).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The handshake's decoded query parameters (`$connect` only).
    pub fn query_pairs(&self) -> &[(String, String)] {
        &self.query
    }

    /// The message body (base64 already undone); empty for `$connect` and `$disconnect`.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The event's whole request context (authorizer output, caller identity, disconnect
    /// status code and reason, ...).
    pub fn request_context(&self) -> &ApiGatewayWebsocketProxyRequestContext {
        &self.request_context
    }
}

fn missing(field: &str) -> Error {
    Error::InvalidEvent {
        kind: "API Gateway WebSocket",
        source: <serde_json::Error as serde::de::Error>::custom(format!(
            "requestContext.{field} is missing"
        )),
    }
}

/// Parses a WebSocket event. [`Error::InvalidEvent`] when the request context lacks what
/// every WebSocket event carries; a `400` error for a body that claims base64 and is not.
pub(crate) fn from_event(
    event: ApiGatewayWebsocketProxyRequest,
) -> Result<WebSocketRequest, Error> {
    let context = event.request_context;
    let connection_id = context
        .connection_id
        .clone()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| missing("connectionId"))?;
    let route_key = context
        .route_key
        .clone()
        .filter(|key| !key.is_empty())
        .ok_or_else(|| missing("routeKey"))?;
    let event_type = match context.event_type.as_deref() {
        Some("CONNECT") => EventType::Connect,
        Some("DISCONNECT") => EventType::Disconnect,
        Some("MESSAGE") => EventType::Message,
        None if route_key == "$connect" => EventType::Connect,
        None if route_key == "$disconnect" => EventType::Disconnect,
        None => EventType::Message,
        Some(_) => return Err(missing("eventType (CONNECT, MESSAGE or DISCONNECT)")),
    };
    let api = WebSocketApi {
        api_id: context.apiid.clone().ok_or_else(|| missing("apiId"))?,
        stage: context.stage.clone().ok_or_else(|| missing("stage"))?,
        domain_name: context
            .domain_name
            .clone()
            .ok_or_else(|| missing("domainName"))?,
    };
    let body = match event.body {
        None => Bytes::new(),
        Some(body) if event.is_base64_encoded => {
            STANDARD.decode(body).map(Bytes::from).map_err(|_| {
                Error::bad_request("the body is marked base64-encoded but is not valid base64")
            })?
        }
        Some(body) => Bytes::from(body),
    };
    let mut headers = event.multi_value_headers;
    for (name, value) in &event.headers {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    let query_map = if event.multi_value_query_string_parameters.is_empty() {
        &event.query_string_parameters
    } else {
        &event.multi_value_query_string_parameters
    };
    // API Gateway decodes the handshake's query string itself.
    let query = query_map
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok(WebSocketRequest {
        route_key,
        event_type,
        connection_id,
        api,
        headers,
        query,
        body,
        request_context: context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execute_api_domains_are_told_from_custom_ones() {
        let own = WebSocketApi::new(
            "a1b2c3",
            "prod",
            "a1b2c3.execute-api.eu-west-1.amazonaws.com",
        );
        assert!(own.has_execute_api_domain());
        let custom = WebSocketApi::new("a1b2c3", "prod", "chat.example.com");
        assert!(!custom.has_execute_api_domain());
    }
}
