//! SQS batches: one handler call per record, partial batch failures, FIFO order.
//! Built with the `sqs` feature.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::Arc;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use futures_util::stream::{self, StreamExt};
use serde_json::value::RawValue;

use super::{App, LiftService, Unit, report};
use crate::context::{Payload, Source};
use crate::error::Error;
use crate::handler::{Endpoint, Handler};
use crate::metrics::Metrics;

impl App {
    /// Handles each record of an SQS batch. Failed records are reported in
    /// `batchItemFailures` (enable `ReportBatchItemFailures` on the event source mapping);
    /// on a FIFO queue, the records after a failure in the same message group are reported
    /// failed without running, so the group's order holds.
    pub fn sqs<H: Handler<Args>, Args: 'static>(mut self, handler: H) -> Self {
        let registered = App::register_once(
            &mut self.sqs,
            Endpoint::new(handler),
            "an SQS handler (App::sqs)",
        );
        self.remember(registered);
        self
    }

    /// Runs up to `limit` records of a standard SQS batch at once (default 1). FIFO batches
    /// always run in order.
    pub fn sqs_concurrency(mut self, limit: NonZeroUsize) -> Self {
        self.sqs_concurrency = limit;
        self
    }
}

impl LiftService {
    fn sqs_unit(
        &self,
        endpoint: &Endpoint,
        lambda: &lambda_runtime::Context,
        message: SqsMessage,
    ) -> Unit {
        let correlation_id = message
            .message_attributes
            .get("correlationId")
            .and_then(|a| a.string_value.clone())
            .filter(|id| super::usable_correlation_id(id));
        let span = Arc::new(tracing::info_span!(
            target: "lift",
            "record",
            tenant = tracing::field::Empty,
            requestId = lambda.request_id.as_str(),
            xrayTraceId = lambda.xray_trace_id.as_deref(),
            correlationId = correlation_id.as_deref().unwrap_or(&lambda.request_id),
            source = "sqs",
            messageId = message.message_id.as_deref().unwrap_or_default(),
        ));
        Unit::unrouted(
            Source::Sqs,
            Payload::Sqs(Arc::new(message)),
            correlation_id,
            endpoint.clone(),
            span,
        )
    }

    pub(super) async fn sqs(
        &self,
        batch: SqsEvent,
        lambda: Arc<lambda_runtime::Context>,
        metrics: &Metrics,
    ) -> Result<Box<RawValue>, Error> {
        let Some(endpoint) = self.inner.sqs.clone() else {
            return Err(Error::NoHandler(
                "an SQS batch (register one with App::sqs)".to_owned(),
            ));
        };
        let records = batch.records;
        let fifo = records
            .first()
            .and_then(|r| r.event_source_arn.as_deref())
            .is_some_and(|arn| arn.ends_with(".fifo"));
        let mut failures: Vec<Option<String>> = Vec::new();
        let unstarted = std::sync::atomic::AtomicUsize::new(0);
        if fifo || self.inner.sqs_concurrency == 1 {
            let mut failed_groups: HashSet<String> = HashSet::new();
            for message in records {
                let id = message.message_id.clone();
                if self.out_of_time(&lambda) {
                    unstarted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    failures.push(id);
                    continue;
                }
                let group = message.attributes.get("MessageGroupId").cloned();
                if let Some(group) = group.as_ref().filter(|g| failed_groups.contains(*g)) {
                    tracing::warn!(target: "lift", messageId = id.as_deref().unwrap_or_default(), group = %group, "record skipped: an earlier record of its message group failed");
                    failures.push(id);
                    continue;
                }
                let unit = self.sqs_unit(&endpoint, &lambda, message);
                if !self.record(&lambda, metrics, unit).await {
                    failures.push(id);
                    if let Some(group) = group.filter(|_| fifo) {
                        failed_groups.insert(group);
                    }
                }
            }
        } else {
            let results: Vec<(Option<String>, bool)> = stream::iter(records)
                .map(|message| {
                    let id = message.message_id.clone();
                    let endpoint = &endpoint;
                    let lambda = &lambda;
                    let unstarted = &unstarted;
                    // Checked when the record's turn comes, not when the batch arrives.
                    async move {
                        if self.out_of_time(lambda) {
                            unstarted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            return (id, false);
                        }
                        let unit = self.sqs_unit(endpoint, lambda, message);
                        (id, self.record(lambda, metrics, unit).await)
                    }
                })
                .buffered(self.inner.sqs_concurrency)
                .collect()
                .await;
            failures.extend(results.into_iter().filter(|(_, ok)| !ok).map(|(id, _)| id));
        }
        super::log_unstarted(unstarted.into_inner(), "sqs");
        report(failures, "messageId")
    }
}
