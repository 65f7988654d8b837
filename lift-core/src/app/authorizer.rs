//! API Gateway Lambda authorizers: the App settings and the dispatch. The request and the
//! decision types live in [`crate::authorizer`]. Built with the `authorizer` feature.

use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use serde_json::value::RawValue;

use super::{App, LiftService, Unit, log_error, settle};
use crate::authorizer::{self, Authorization};
use crate::context::{Payload, Source};
use crate::error::Error;
use crate::handler::{Endpoint, Handler};
use crate::metrics::Metrics;

impl App {
    /// Serves API Gateway Lambda authorizer requests (REST `TOKEN` and `REQUEST`, HTTP API
    /// payload 1.0 and 2.0, WebSocket `$connect`) with `handler`, which answers with an
    /// [`Authorization`]. Events with a top-level `methodArn` or `routeArn` go to it; see
    /// [`crate::authorizer`].
    pub fn authorizer<H: Handler<Args>, Args: 'static>(mut self, handler: H) -> Self {
        let registered = App::register_once(
            &mut self.authorizer,
            Endpoint::new(handler),
            "a Lambda authorizer handler (App::authorizer)",
        );
        self.remember(registered);
        self
    }

    /// Answers payload 2.0 authorizer requests in the simple format
    /// (`{"isAuthorized": ..., "context": ...}`), for an HTTP API authorizer with
    /// `EnableSimpleResponses`; without it they get an IAM policy like the others.
    pub fn authorizer_simple_responses(mut self) -> Self {
        self.authorizer_simple = true;
        self
    }
}

impl LiftService {
    /// Whether `event` goes to the authorizer handler.
    pub(super) fn is_authorizer_request(&self, event: &RawValue) -> bool {
        self.inner.authorizer.is_some() && authorizer::is_authorizer_request(event.get())
    }

    pub(super) async fn authorize(
        &self,
        event: &RawValue,
        lambda: Arc<lambda_runtime::Context>,
        metrics: &Metrics,
    ) -> Result<Box<RawValue>, Error> {
        let Some(endpoint) = self.inner.authorizer.clone() else {
            return Err(Error::NoHandler(super::NO_AUTHORIZER.to_owned()));
        };
        let request = authorizer::parse(event.get()).map_err(|source| Error::InvalidEvent {
            kind: "API Gateway authorizer",
            source,
        })?;
        let span = Arc::new(tracing::info_span!(
            target: "lift",
            "authorizer",
            tenant = tracing::field::Empty,
            requestId = lambda.request_id.as_str(),
            xrayTraceId = lambda.xray_trace_id.as_deref(),
            source = Source::Authorizer.as_str(),
            arn = %request.arn(),
        ));
        // What the answer needs once the request has moved into the Context.
        let arn = request.arn().to_owned();
        let simple = self.inner.authorizer_simple && request.is_v2();
        let http_api = request.is_http_api();
        let ctx = self.context(
            &lambda,
            metrics,
            Unit::unrouted(
                Source::Authorizer,
                Payload::Authorizer(Arc::new(request)),
                None,
                endpoint,
                span.clone(),
            ),
        );
        let started = Instant::now();
        let outcome = settle(self.run_unit(ctx).await);
        self.observe(metrics, "authorizer", outcome.is_err(), started);
        let decision = match outcome {
            Ok(response) => response
                .extensions()
                .get::<Authorization>()
                .cloned()
                .ok_or_else(|| {
                    Error::internal(
                        "an authorizer handler must answer with lift_core::authorizer::Authorization",
                    )
                })?,
            Err(error)
                if error.status() == StatusCode::UNAUTHORIZED && !http_api =>
            {
                let _entered = span.enter();
                tracing::info!(target: "lift", code = error.code(), error = %error, "authorizer: unauthorized");
                // REST and WebSocket APIs answer 401 for exactly this invocation error.
                return Err(Error::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Unauthorized",
                ));
            }
            Err(error)
                if error.status() == StatusCode::UNAUTHORIZED
                    || error.status() == StatusCode::FORBIDDEN =>
            {
                let _entered = span.enter();
                tracing::info!(target: "lift", code = error.code(), error = %error, "authorizer: denied");
                Authorization::deny("unknown")
            }
            Err(error) => {
                let _entered = span.enter();
                log_error(&error, "authorizer");
                return Err(error);
            }
        };
        serde_json::value::to_raw_value(&decision.to_json(&arn, simple, http_api))
            .map_err(Error::internal)
    }
}
