//! API Gateway WebSocket events: routing by route key and the WebSocket proxy response.

use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use serde_json::value::RawValue;

use super::{App, LiftService, Unit, correlation_header, error_response, log_error};
use crate::context::{Payload, Source};
use crate::error::Error;
use crate::handler::{Endpoint, Handler};
use crate::http_event;
use crate::metrics::Metrics;
use crate::websocket::{self, EventType};

/// The WebSocket handlers of an App, by route key.
#[derive(Default)]
pub(super) struct WebSocketRoutes {
    routes: Vec<(Arc<str>, Endpoint)>,
}

impl WebSocketRoutes {
    fn add(&mut self, route_key: &str, endpoint: Endpoint) -> Result<(), String> {
        if route_key.is_empty() {
            return Err("a WebSocket route key must not be empty".to_owned());
        }
        if self.routes.iter().any(|(key, _)| &**key == route_key) {
            return Err(format!("WebSocket route `{route_key}` is registered twice"));
        }
        self.routes.push((Arc::from(route_key), endpoint));
        Ok(())
    }

    fn find(&self, route_key: &str) -> Option<(Arc<str>, Endpoint)> {
        self.routes
            .iter()
            .find(|(key, _)| &**key == route_key)
            .map(|(key, endpoint)| (key.clone(), endpoint.clone()))
    }

    /// The handler for an event: its own key's, else `$default`'s for a message.
    fn resolve(&self, route_key: &str, event_type: EventType) -> Option<(Arc<str>, Endpoint)> {
        self.find(route_key).or_else(|| match event_type {
            EventType::Message => self.find("$default"),
            _ => None,
        })
    }
}

impl App {
    /// Handles API Gateway WebSocket events with this route key: `$connect`, `$disconnect`,
    /// `$default` or a custom key (the value the API's route selection expression picks,
    /// such as `sendMessage`).
    ///
    /// A message whose key has no handler runs the `$default` handler; `$connect` and
    /// `$disconnect` never fall back to it. A typed input is the message body, parsed and
    /// validated as an HTTP body. A `$connect` handler that answers with a non-2xx status or
    /// an error refuses the connection. See [`crate::websocket`].
    /// A duplicate or empty key is reported by [`App::into_service`] and [`App::run`].
    pub fn websocket<H: Handler<Args>, Args: 'static>(
        mut self,
        route_key: &str,
        handler: H,
    ) -> Self {
        let result = self.websocket.add(route_key, Endpoint::new(handler));
        self.remember(result);
        self
    }
}

impl LiftService {
    /// Runs one WebSocket event and answers in WebSocket proxy shape; an event the client's
    /// request made undecodable (`Err`, a 400) is refused as any other malformed request.
    pub(super) async fn websocket(
        &self,
        event: Result<ApiGatewayWebsocketProxyRequest, Error>,
        lambda: Arc<lambda_runtime::Context>,
        metrics: &Metrics,
    ) -> Result<Box<RawValue>, Error> {
        let started = Instant::now();
        let (operation, response) = match event.and_then(websocket::from_event) {
            Err(error @ Error::InvalidEvent { .. }) => return Err(error),
            Err(error) => {
                log_error(&error, "message");
                (
                    "websocket rejected".to_owned(),
                    error_response(&error, &lambda.request_id),
                )
            }
            Ok(request) if request.body.len() > self.inner.body_limit => {
                let error = Error::PayloadTooLarge {
                    size: request.body.len(),
                    limit: self.inner.body_limit,
                };
                log_error(&error, "message");
                (
                    format!("websocket {}", request.route_key),
                    error_response(&error, &lambda.request_id),
                )
            }
            Ok(request) => {
                let operation = format!("websocket {}", request.route_key);
                let correlation_id = correlation_header(&request.headers);
                let resolved = self
                    .inner
                    .websocket
                    .resolve(&request.route_key, request.event_type);
                let span = Arc::new(tracing::info_span!(
                    target: "lift",
                    "request",
                    tenant = tracing::field::Empty,
                    requestId = lambda.request_id.as_str(),
                    xrayTraceId = lambda.xray_trace_id.as_deref(),
                    correlationId = correlation_id.as_deref().unwrap_or(&lambda.request_id),
                    source = Source::WebSocket.as_str(),
                    route = resolved.as_ref().map(|(key, _)| &**key).unwrap_or_default(),
                    routeKey = request.route_key.as_str(),
                    eventType = request.event_type.as_str(),
                    connectionId = %request.connection_id,
                ));
                let response = match resolved {
                    None => {
                        let error = Error::NoHandler(format!(
                            "the WebSocket route key `{}` ({}; register one with App::websocket)",
                            request.route_key,
                            match request.event_type {
                                EventType::Message => "no `$default` handler either",
                                _ => "`$connect` and `$disconnect` never fall back to `$default`",
                            }
                        ));
                        let _entered = span.enter();
                        log_error(&error, "message");
                        error_response(&error, &lambda.request_id)
                    }
                    Some((route, endpoint)) => {
                        let ctx = self.context(
                            &lambda,
                            metrics,
                            Unit {
                                source: Source::WebSocket,
                                payload: Payload::WebSocket(Arc::new(request)),
                                correlation_id,
                                endpoint,
                                route: Some(route),
                                params: crate::router::Params::default(),
                                span: span.clone(),
                            },
                        );
                        match self.run_unit(ctx).await {
                            Ok(response) => response,
                            Err(error) => {
                                let _entered = span.enter();
                                log_error(&error, "message");
                                error_response(&error, &lambda.request_id)
                            }
                        }
                    }
                };
                (operation, response)
            }
        };
        self.observe(
            metrics,
            &operation,
            response.status().is_server_error(),
            started,
        );
        http_event::to_event_response(Source::WebSocket, false, &response).map_err(Error::internal)
    }
}
