//! DynamoDB Streams batches: one handler call per record, in order; after a record fails,
//! later changes of the same item wait for it. Failures reported by sequence number. Built
//! with the `dynamodb` feature.

use std::sync::Arc;

use aws_lambda_events::dynamodb::Event as DynamoDbEvent;
use serde_json::value::RawValue;

use super::{App, LiftService, Unit, report};
use crate::context::{Payload, Source};
use crate::error::Error;
use crate::handler::{Endpoint, Handler};
use crate::metrics::Metrics;

impl App {
    /// Handles each record of a DynamoDB Streams batch, in order; a failed record and the
    /// later changes of the same item (not run: Lambda delivers them again from the failed
    /// one, in order) are reported by sequence number in `batchItemFailures`. Typed input
    /// comes from the new image (the old image for `REMOVE`).
    pub fn dynamodb<H: Handler<Args>, Args: 'static>(mut self, handler: H) -> Self {
        let registered = App::register_once(
            &mut self.dynamodb,
            Endpoint::new(handler),
            "a DynamoDB Streams handler (App::dynamodb)",
        );
        self.remember(registered);
        self
    }
}

impl LiftService {
    pub(super) async fn dynamodb(
        &self,
        batch: DynamoDbEvent,
        lambda: Arc<lambda_runtime::Context>,
        metrics: &Metrics,
    ) -> Result<Box<RawValue>, Error> {
        let Some(endpoint) = self.inner.dynamodb.clone() else {
            return Err(Error::NoHandler(
                "a DynamoDB Streams batch (register one with App::dynamodb)".to_owned(),
            ));
        };
        let mut failures = Vec::new();
        let mut unstarted = 0;
        let mut after_failure = 0;
        // The items whose change failed in this batch, by their keys.
        let mut failed_items = std::collections::HashSet::new();
        for record in batch.records {
            let sequence = record.change.sequence_number.clone();
            // A later change of an item whose change failed waits for it: run now, it
            // would change the item before its earlier change (Lambda resumes the shard at
            // the lowest failed sequence number, so it comes again in order). Other items'
            // changes run now, and come again with the redelivery: a stream handler is
            // idempotent anyway, Lambda delivering each record at least once.
            if !failed_items.is_empty() && failed_items.contains(&item_of(&record)) {
                after_failure += 1;
                failures.push(sequence);
                continue;
            }
            if self.out_of_time(&lambda) {
                unstarted += 1;
                failures.push(sequence);
                continue;
            }
            let record = Arc::new(record);
            let span = Arc::new(tracing::info_span!(
                target: "lift",
                "record",
                tenant = tracing::field::Empty,
                requestId = lambda.request_id.as_str(),
                xrayTraceId = lambda.xray_trace_id.as_deref(),
                source = "dynamodb",
                eventName = %record.event_name,
                sequenceNumber = sequence.as_deref().unwrap_or_default(),
            ));
            let unit = Unit::unrouted(
                Source::DynamoDbStream,
                Payload::DynamoDb(record.clone()),
                None,
                endpoint.clone(),
                span,
            );
            if !self.record(&lambda, metrics, unit).await {
                failures.push(sequence);
                failed_items.insert(item_of(&record));
            }
        }
        super::log_unstarted(unstarted, "dynamodb");
        if after_failure > 0 {
            tracing::warn!(target: "lift", after_failure, source = "dynamodb", "later changes of an item whose change failed not run: reported failed, to be delivered again in order");
        }
        report(failures, "SequenceNumber")
    }
}

/// A record's item, by its keys, as text: the keys' map in a fixed order.
fn item_of(record: &aws_lambda_events::dynamodb::EventRecord) -> String {
    serde_json::to_value(&record.change.keys)
        .map(|keys| keys.to_string())
        .unwrap_or_default()
}
