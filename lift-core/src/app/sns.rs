//! SNS notifications: one handler call per record. Built with the `sns` feature.

use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::sns::SnsEvent;
use serde_json::value::RawValue;

use super::{App, LiftService, Unit, log_error, output_json, settle};
use crate::context::{Payload, Source};
use crate::error::Error;
use crate::handler::{Endpoint, Handler};
use crate::metrics::Metrics;

impl App {
    /// Handles each SNS notification; typed input comes from the `Message`.
    pub fn sns<H: Handler<Args>, Args: 'static>(mut self, handler: H) -> Self {
        let registered = App::register_once(
            &mut self.sns,
            Endpoint::new(handler),
            "an SNS handler (App::sns)",
        );
        self.remember(registered);
        self
    }
}

impl LiftService {
    pub(super) async fn sns(
        &self,
        batch: SnsEvent,
        lambda: Arc<lambda_runtime::Context>,
        metrics: &Metrics,
    ) -> Result<Box<RawValue>, Error> {
        let Some(endpoint) = self.inner.sns.clone() else {
            return Err(Error::NoHandler(
                "an SNS notification (register one with App::sns)".to_owned(),
            ));
        };
        let mut outputs = Vec::with_capacity(batch.records.len());
        let mut first_error = None;
        for record in batch.records {
            let correlation_id = record
                .sns
                .message_attributes
                .get("correlationId")
                .filter(|a| a.data_type.starts_with("String"))
                .map(|a| a.value.clone())
                .filter(|id| super::usable_correlation_id(id));
            let span = Arc::new(tracing::info_span!(
                target: "lift",
                "record",
                tenant = tracing::field::Empty,
                requestId = lambda.request_id.as_str(),
                xrayTraceId = lambda.xray_trace_id.as_deref(),
                correlationId = correlation_id.as_deref().unwrap_or(&lambda.request_id),
                source = "sns",
                messageId = record.sns.message_id.as_str(),
            ));
            let ctx = self.context(
                &lambda,
                metrics,
                Unit::unrouted(
                    Source::Sns,
                    Payload::Sns(Arc::new(record)),
                    correlation_id,
                    endpoint.clone(),
                    span.clone(),
                ),
            );
            let started = Instant::now();
            let outcome = settle(self.run_unit(ctx).await);
            self.observe(metrics, "sns", outcome.is_err(), started);
            match outcome {
                Ok(response) => outputs.push(output_json(&response)?),
                Err(error) => {
                    let _entered = span.enter();
                    log_error(&error, "notification");
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        if outputs.len() == 1 {
            return Ok(outputs.remove(0));
        }
        serde_json::value::to_raw_value(&outputs).map_err(Error::internal)
    }
}
