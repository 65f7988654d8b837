//! EventBridge events, routed by `source` and `detail-type`, and scheduled events. Built
//! with the `eventbridge` feature.

use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde_json::value::RawValue;

use super::{App, LiftService, Unit, log_error, output_json, settle};
use crate::context::{Payload, Source};
use crate::error::Error;
use crate::handler::{Endpoint, Handler};
use crate::metrics::Metrics;

/// An EventBridge route: a `source`, and a `detail-type` unless it takes the whole source.
pub(super) struct EventRoute {
    source: String,
    detail_type: Option<String>,
    endpoint: Endpoint,
}

impl App {
    /// Handles EventBridge events with this `source` and `detail-type`; typed input comes
    /// from `detail`.
    pub fn event<H: Handler<Args>, Args: 'static>(
        self,
        source: &str,
        detail_type: &str,
        handler: H,
    ) -> Self {
        self.push_event(EventRoute {
            source: source.to_owned(),
            detail_type: Some(detail_type.to_owned()),
            endpoint: Endpoint::new(handler),
        })
    }

    /// Handles EventBridge events with this `source` and a `detail-type` no
    /// [`App::event`] route names.
    pub fn event_source<H: Handler<Args>, Args: 'static>(self, source: &str, handler: H) -> Self {
        self.push_event(EventRoute {
            source: source.to_owned(),
            detail_type: None,
            endpoint: Endpoint::new(handler),
        })
    }

    /// Adds an EventBridge route; a second route for the same source and detail-type is a
    /// configuration error (the first would take every event, the second none).
    fn push_event(mut self, route: EventRoute) -> Self {
        if self
            .events
            .iter()
            .any(|r| r.source == route.source && r.detail_type == route.detail_type)
        {
            let what = match &route.detail_type {
                Some(detail_type) => format!(
                    "the EventBridge route for source `{}` and detail-type `{detail_type}`",
                    route.source
                ),
                None => format!("the EventBridge route for source `{}`", route.source),
            };
            self.remember(Err(format!("{what} is registered twice")));
            return self;
        }
        self.events.push(route);
        self
    }

    /// Handles scheduled events (`source: aws.events`, `detail-type: Scheduled Event`).
    pub fn schedule<H: Handler<Args>, Args: 'static>(mut self, handler: H) -> Self {
        let registered = App::register_once(
            &mut self.schedule,
            Endpoint::new(handler),
            "a schedule handler (App::schedule)",
        );
        self.remember(registered);
        self
    }

    /// Handles EventBridge events no other route matches.
    pub fn event_fallback<H: Handler<Args>, Args: 'static>(mut self, handler: H) -> Self {
        let registered = App::register_once(
            &mut self.event_fallback,
            Endpoint::new(handler),
            "an EventBridge fallback (App::event_fallback)",
        );
        self.remember(registered);
        self
    }
}

impl LiftService {
    pub(super) async fn eventbridge(
        &self,
        event: EventBridgeEvent<Box<RawValue>>,
        lambda: Arc<lambda_runtime::Context>,
        metrics: &Metrics,
    ) -> Result<Box<RawValue>, Error> {
        let scheduled = event.source == "aws.events" && event.detail_type == "Scheduled Event";
        let inner = &self.inner;
        let exact = inner.events.iter().find(|r| {
            r.source == event.source && r.detail_type.as_deref() == Some(event.detail_type.as_str())
        });
        let by_source = || {
            inner
                .events
                .iter()
                .find(|r| r.source == event.source && r.detail_type.is_none())
        };
        // A schedule handler names source and detail type (`aws.events`, `Scheduled
        // Event`): it comes before a route on the source alone.
        let endpoint = exact
            .map(|r| r.endpoint.clone())
            .or_else(|| scheduled.then(|| inner.schedule.clone()).flatten())
            .or_else(|| by_source().map(|r| r.endpoint.clone()))
            .or_else(|| inner.event_fallback.clone());
        let Some(endpoint) = endpoint else {
            return Err(Error::NoHandler(format!(
                "the EventBridge event `{}` / `{}`",
                event.source, event.detail_type
            )));
        };
        let operation = format!("{}/{}", event.source, event.detail_type);
        let correlation_id = detail_correlation_id(&event.detail);
        let span = Arc::new(tracing::info_span!(
            target: "lift",
            "event",
            tenant = tracing::field::Empty,
            requestId = lambda.request_id.as_str(),
            xrayTraceId = lambda.xray_trace_id.as_deref(),
            source = event.source.as_str(),
            detailType = event.detail_type.as_str(),
            eventId = event.id.as_deref().unwrap_or_default(),
            correlationId = correlation_id.as_deref().unwrap_or(&lambda.request_id),
        ));
        let ctx = self.context(
            &lambda,
            metrics,
            Unit::unrouted(
                if scheduled {
                    Source::Schedule
                } else {
                    Source::EventBridge
                },
                Payload::EventBridge(Arc::new(event)),
                correlation_id,
                endpoint,
                span.clone(),
            ),
        );
        let started = Instant::now();
        let outcome = settle(self.run_unit(ctx).await);
        self.observe(metrics, &operation, outcome.is_err(), started);
        match outcome {
            Ok(response) => output_json(&response),
            Err(error) => {
                let _entered = span.enter();
                log_error(&error, "event");
                Err(error)
            }
        }
    }
}

/// The `correlationId` string at the top of an event's `detail` (where an event envelope
/// carries it), as SQS carries it in a message attribute.
fn detail_correlation_id(detail: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Correlated {
        #[serde(rename = "correlationId")]
        correlation_id: Option<String>,
    }
    serde_json::from_str::<Correlated>(detail.get())
        .ok()?
        .correlation_id
        .filter(|id| super::usable_correlation_id(id))
}
