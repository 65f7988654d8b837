//! Carries a request's trace, correlation id and tenant onto the messages and events a
//! function publishes, as [`Context::outbound_headers`] does for HTTP calls.
//!
//! - SQS: the X-Ray trace header goes in the `AWSTraceHeader` system attribute (which
//!   SQS passes on to its consumers); the correlation id and tenant go in the
//!   [`CORRELATION_ATTRIBUTE`] and [`TENANT_ATTRIBUTE`] message attributes. A Lift
//!   consumer reads them back: [`Context::correlation_id`], [`Context::upstream_trace`]
//!   and, with [`TenantSource::MessageAttribute`](crate::tenancy::TenantSource), the
//!   tenant.
//! - EventBridge: the trace header goes in the entry's `TraceHeader`. An event has no
//!   attributes, so a correlation id or tenant belongs in its `detail`.
//!
//! ```no_run
//! use lift_core::{Context, Error, Result};
//! use lift_middleware::propagate;
//!
//! async fn place(ctx: Context) -> Result<()> {
//!     let sqs = aws_sdk_sqs::Client::new(lift_core::aws::sdk_config().await);
//!     propagate::sqs_message(&ctx, sqs.send_message())
//!         .queue_url("https://sqs.us-east-1.amazonaws.com/123456789012/orders")
//!         .message_body(r#"{"orderId":"o-1"}"#)
//!         .send()
//!         .await
//!         .map_err(Error::internal)?;
//!     Ok(())
//! }
//! ```

use aws_sdk_eventbridge::types::builders::PutEventsRequestEntryBuilder;
use aws_sdk_sqs::operation::send_message::builders::SendMessageFluentBuilder;
use aws_sdk_sqs::types::builders::SendMessageBatchRequestEntryBuilder;
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeNameForSends, MessageSystemAttributeValue,
};
use lift_core::Context;

/// The SQS message attribute that carries the correlation id (the one Lift's consumers
/// read).
pub const CORRELATION_ATTRIBUTE: &str = "correlationId";

/// The SQS message attribute that carries the tenant.
pub const TENANT_ATTRIBUTE: &str = "tenantId";

/// A String attribute; none for an empty value, which SQS refuses (failing the send).
fn text(value: &str) -> Option<MessageAttributeValue> {
    if value.is_empty() {
        return None;
    }
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .ok()
}

fn trace(value: &str) -> Option<MessageSystemAttributeValue> {
    MessageSystemAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .ok()
}

/// What goes on an SQS message: the system attribute and the message attributes.
fn sqs_attributes(
    ctx: &Context,
) -> (
    Option<MessageSystemAttributeValue>,
    Vec<(&'static str, MessageAttributeValue)>,
) {
    let mut attributes = Vec::with_capacity(2);
    if let Some(value) = text(ctx.correlation_id()) {
        attributes.push((CORRELATION_ATTRIBUTE, value));
    }
    if let Some(value) = ctx.tenant().and_then(text) {
        attributes.push((TENANT_ATTRIBUTE, value));
    }
    (ctx.trace_id().and_then(trace), attributes)
}

/// Adds the request's trace, correlation id and tenant to an SQS `SendMessage`.
pub fn sqs_message(
    ctx: &Context,
    mut message: SendMessageFluentBuilder,
) -> SendMessageFluentBuilder {
    let (system, attributes) = sqs_attributes(ctx);
    if let Some(system) = system {
        message = message
            .message_system_attributes(MessageSystemAttributeNameForSends::AwsTraceHeader, system);
    }
    for (name, value) in attributes {
        message = message.message_attributes(name, value);
    }
    message
}

/// Adds the request's trace, correlation id and tenant to one entry of an SQS
/// `SendMessageBatch`.
pub fn sqs_batch_entry(
    ctx: &Context,
    mut entry: SendMessageBatchRequestEntryBuilder,
) -> SendMessageBatchRequestEntryBuilder {
    let (system, attributes) = sqs_attributes(ctx);
    if let Some(system) = system {
        entry = entry
            .message_system_attributes(MessageSystemAttributeNameForSends::AwsTraceHeader, system);
    }
    for (name, value) in attributes {
        entry = entry.message_attributes(name, value);
    }
    entry
}

/// Adds the request's X-Ray trace header to an EventBridge `PutEvents` entry.
pub fn eventbridge_entry(
    ctx: &Context,
    entry: PutEventsRequestEntryBuilder,
) -> PutEventsRequestEntryBuilder {
    match ctx.trace_id() {
        Some(trace) => entry.trace_header(trace),
        None => entry,
    }
}
