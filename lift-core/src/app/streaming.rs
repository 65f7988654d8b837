//! Streamed HTTP responses for Function URLs: the App settings and the runtime's reply.
//! The body types and the rules live in [`crate::stream`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::{FunctionResponse, StreamResponse};
use serde_json::value::RawValue;

use super::{App, LiftService, error_response, log_error};
use crate::context::Source;
use crate::error::Error;
use crate::http_event;
use crate::metrics::Metrics;
use crate::probe::{Kind, probe};
use crate::response::Response;
use crate::stream::{
    self, DEFAULT_COLLECT_LIMIT, DEFAULT_STREAM_DEADLINE_MARGIN, ResponseStream, StreamError,
};

/// What the Lambda runtime sends back for one invocation.
pub(super) type Reply = FunctionResponse<Box<RawValue>, ResponseStream>;

/// How HTTP responses leave the function.
#[derive(Debug, Clone, Copy)]
pub(super) struct StreamingConfig {
    /// Stream every payload-2.0 response (a `RESPONSE_STREAM` Function URL).
    enabled: bool,
    /// The most bytes of a streamed body collected into a buffered response.
    collect_limit: usize,
    /// How long before the invocation's deadline a streamed body is ended.
    deadline_margin: Duration,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            enabled: false,
            collect_limit: DEFAULT_COLLECT_LIMIT,
            deadline_margin: DEFAULT_STREAM_DEADLINE_MARGIN,
        }
    }
}

impl App {
    /// Streams HTTP responses, for a function behind a Function URL whose invoke mode is
    /// `RESPONSE_STREAM`: every payload-2.0 event is answered with a streamed reply, a
    /// [`StreamBody`](crate::stream::StreamBody) chunk by chunk and any other body as one
    /// chunk. Leave it off for `BUFFERED` URLs, API Gateway and ALB; their streamed bodies
    /// are collected instead ([`App::stream_collect_limit`]). See [`crate::stream`].
    pub fn response_streaming(mut self) -> Self {
        self.streaming.enabled = true;
        self
    }

    /// The most bytes of a [`StreamBody`](crate::stream::StreamBody) collected into a
    /// buffered response (default [`DEFAULT_COLLECT_LIMIT`], 6 MiB), as sent: a binary
    /// body, sent in base64, may have three quarters of it. A longer body is cut off at the
    /// limit and answered with a `500`
    /// ([`StreamError::TooLarge`](crate::stream::StreamError::TooLarge) in the log).
    pub fn stream_collect_limit(mut self, bytes: usize) -> Self {
        self.streaming.collect_limit = bytes;
        self
    }

    /// How long before the invocation's deadline a streamed body that is still running is
    /// ended (default [`DEFAULT_STREAM_DEADLINE_MARGIN`], 500 ms), so that the function
    /// answers instead of being stopped at its timeout mid-response, which would also cost
    /// the execution environment.
    ///
    /// A streamed reply then ends with the body's
    /// [`StreamBody::on_deadline`](crate::stream::StreamBody::on_deadline) chunk; a body
    /// being collected for a buffered reply is answered with a `504` instead
    /// ([`Error::Timeout`]). Either way a warning is logged and the producer's channel is
    /// closed.
    pub fn stream_deadline_margin(mut self, margin: Duration) -> Self {
        self.streaming.deadline_margin = margin;
        self
    }
}

impl LiftService {
    /// Handles one raw event as [`App::run`] does, returning what the runtime sends back:
    /// under [`App::response_streaming`], a streamed reply for a payload-2.0 (Function URL)
    /// event; otherwise the buffered JSON of [`LiftService::invoke`].
    ///
    /// # Errors
    /// As [`LiftService::invoke`]; for a streamed reply only an event that cannot be
    /// decoded, every other failure being an error response.
    pub async fn respond(
        &self,
        event: &RawValue,
        lambda: lambda_runtime::Context,
    ) -> Result<Reply, Error> {
        self.respond_shared(event, Arc::new(lambda)).await
    }

    /// [`LiftService::respond`] with the runtime's context already shared.
    pub(crate) async fn respond_shared(
        &self,
        event: &RawValue,
        lambda: Arc<lambda_runtime::Context>,
    ) -> Result<Reply, Error> {
        // An HTTP API authorizer's payload 2.0 event probes as an HTTP request: it goes to
        // the authorizer (through `invoke`), never to a route.
        #[cfg(feature = "authorizer")]
        let authorizer = self.is_authorizer_request(event);
        #[cfg(not(feature = "authorizer"))]
        let authorizer = false;
        if self.inner.streaming.enabled
            && !authorizer
            && matches!(probe(event.get()), Some(Kind::ApiGatewayV2))
        {
            self.inner.lifecycle.observe(&lambda);
            let metrics = Metrics::default();
            // Boxed: a streamed reply's future is large and most invocations are not one.
            let result = Box::pin(self.stream_http(event, &lambda, &metrics)).await;
            return match result {
                // The answer is sent when its last chunk is: the invocation's metrics
                // (what the body's producer records included) are flushed then, and only
                // then does it count as answered.
                Ok(mut response) => {
                    let this = self.clone();
                    response.stream = response.stream.on_end(move || {
                        this.flush(&metrics, &lambda);
                        this.inner.lifecycle.answered();
                    });
                    Ok(FunctionResponse::StreamingResponse(response))
                }
                Err(error) => {
                    self.flush(&metrics, &lambda);
                    self.inner.lifecycle.answered();
                    Err(error)
                }
            };
        }
        self.invoke_shared(event, lambda)
            .await
            .map(FunctionResponse::BufferedResponse)
    }

    async fn stream_http(
        &self,
        event: &RawValue,
        lambda: &Arc<lambda_runtime::Context>,
        metrics: &Metrics,
    ) -> Result<StreamResponse<ResponseStream>, Error> {
        let request =
            super::decode_http::<http_event::V2Event>("API Gateway HTTP API", event, false)
                .and_then(http_event::from_v2);
        let (_, response) = self
            .http_response(
                Source::ApiGatewayV2,
                request,
                lambda.clone(),
                metrics,
                false,
            )
            .await;
        Ok(stream::into_stream_response(
            response,
            &lambda.request_id,
            self.stream_deadline(lambda),
        ))
    }

    /// When a streamed body must end: the invocation's deadline less the margin, on Tokio's
    /// clock. `None` when the invocation carries no deadline.
    fn stream_deadline(&self, lambda: &lambda_runtime::Context) -> Option<tokio::time::Instant> {
        if lambda.deadline == 0 {
            return None;
        }
        let deadline = UNIX_EPOCH + Duration::from_millis(lambda.deadline);
        let left = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .saturating_sub(self.inner.streaming.deadline_margin);
        Some(tokio::time::Instant::now() + left)
    }

    /// Collects a streamed body for a buffered reply; over the limit or on a producer
    /// failure, the logged error's response instead.
    pub(super) async fn collected(
        &self,
        response: Response,
        span: &tracing::Span,
        lambda: &lambda_runtime::Context,
    ) -> Response {
        let started = Instant::now();
        let request_id = &lambda.request_id;
        // The limit is on what Lambda is sent: a body that goes out in base64 grows by a
        // third, so it may be at most three quarters of it.
        let limit = self.inner.streaming.collect_limit;
        let limit = if crate::http_event::is_textual(response.headers()) {
            limit
        } else {
            limit / 4 * 3
        };
        let collected = stream::collect(response, limit, self.stream_deadline(lambda)).await;
        match collected {
            Ok(response) => {
                let _entered = span.enter();
                tracing::debug!(target: "lift::stream", elapsed = ?started.elapsed(), "streamed body collected for a buffered response");
                response
            }
            Err(error) => {
                let error = match error {
                    StreamError::Deadline { .. } => {
                        let _entered = span.enter();
                        tracing::warn!(target: "lift::stream", code = "stream_deadline", error = %error, "streamed body not collected before the invocation's deadline");
                        Error::Timeout {
                            after: started.elapsed(),
                        }
                    }
                    error => Error::internal(error),
                };
                let _entered = span.enter();
                log_error(&error, "response stream");
                error_response(&error, request_id)
            }
        }
    }
}
