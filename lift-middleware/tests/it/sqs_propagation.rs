//! Trace, correlation id and tenant carried across a real SQS queue on the local
//! emulator: a Lift handler publishes with `propagate::sqs_message`, the message read back
//! from the queue carries them, and a Lift consumer of that message sees them again.
//! EventBridge accepts an entry with the trace header and delivers it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use lift_core::testing::{TestApp, batch_failures, events};
use lift_core::{App, Context, Error, TenantId};
use lift_middleware::propagate;
use lift_middleware::tenancy::{TenantConfig, TenantLayer, TenantSource};
use serde_json::{Map, Value, json};
use tower::util::MapRequestLayer;

/// What the consumer saw: correlation id, tenant and upstream trace.
type Seen = (String, Option<String>, Option<String>);

/// The trace header `lift_core::testing` gives every invocation.
const TRACE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1";

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn require_emulator() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
    );
}

/// The ARN of the queue at `url`.
async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap()
}

/// The Lambda SQS event for messages read from a queue, as the event source mapping
/// builds it.
fn sqs_event(messages: &[aws_sdk_sqs::types::Message], queue_arn: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: Map<String, Value> = m
                .attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str().to_owned(), Value::from(v.clone())))
                .collect();
            let message_attributes: Map<String, Value> = m
                .message_attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        json!({
                            "stringValue": v.string_value(),
                            "stringListValues": [],
                            "binaryListValues": [],
                            "dataType": v.data_type(),
                        }),
                    )
                })
                .collect();
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    json!({ "Records": records })
}

#[tokio::test]
async fn trace_correlation_and_tenant_cross_a_real_queue() {
    require_emulator();
    let sqs = aws_sdk_sqs::Client::new(lift_core::aws::sdk_config().await);
    let queue = sqs
        .create_queue()
        .queue_name(unique("lift-propagate"))
        .send()
        .await
        .unwrap();
    let queue_url = queue.queue_url().unwrap().to_owned();
    let queue_arn = queue_arn(&sqs, &queue_url).await;

    // The producer: an HTTP handler for tenant acme publishing an order.
    let (client, url) = (sqs.clone(), queue_url.clone());
    let place = move |ctx: Context| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            propagate::sqs_message(&ctx, client.send_message())
                .queue_url(url)
                .message_body(r#"{"orderId":"o-9"}"#)
                .send()
                .await
                .map_err(Error::internal)?;
            Ok::<_, Error>(())
        }
    };
    let producer = App::new()
        .post("/orders", place)
        .layer(MapRequestLayer::new(|mut ctx: Context| {
            ctx.set_tenant(TenantId("acme".into()));
            ctx
        }));
    let producer = TestApp::new(producer).unwrap();
    let placed = producer
        .http(
            events::http("POST", "/orders")
                .header("x-correlation-id", "corr-77")
                .v2(),
        )
        .await
        .unwrap();
    assert_eq!(placed.status, 204, "{}", placed.text());

    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap();
    let messages = received.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    let system: HashMap<String, String> = message
        .attributes()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
        .collect();
    assert_eq!(
        system.get("AWSTraceHeader").map(String::as_str),
        Some(TRACE)
    );
    let attribute = |name: &str| {
        message
            .message_attributes()
            .and_then(|a| a.get(name))
            .and_then(|v| v.string_value())
            .map(str::to_owned)
    };
    assert_eq!(
        attribute(propagate::CORRELATION_ATTRIBUTE).as_deref(),
        Some("corr-77")
    );
    assert_eq!(
        attribute(propagate::TENANT_ATTRIBUTE).as_deref(),
        Some("acme")
    );

    // The consumer: a Lift SQS handler with the tenant read from the message attribute.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = seen.clone();
    let consume = move |ctx: Context| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push((
                ctx.correlation_id().to_owned(),
                ctx.tenant().map(str::to_owned),
                ctx.upstream_trace().map(str::to_owned),
            ));
            Ok::<_, Error>(())
        }
    };
    let tenancy = TenantConfig::builder()
        .source(TenantSource::MessageAttribute(
            propagate::TENANT_ATTRIBUTE.to_owned(),
        ))
        .required(true)
        .build()
        .unwrap();
    let consumer = App::new().sqs(consume).layer(TenantLayer::new(tenancy));
    let consumer = TestApp::new(consumer).unwrap();
    let response = consumer
        .invoke(&sqs_event(messages, &queue_arn))
        .await
        .unwrap();
    assert!(batch_failures(&response).is_empty(), "{response}");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [(
            "corr-77".to_owned(),
            Some("acme".to_owned()),
            Some(TRACE.to_owned())
        )]
    );
}

#[tokio::test]
async fn eventbridge_takes_the_trace_header_and_delivers_the_event() {
    require_emulator();
    let config = lift_core::aws::sdk_config().await;
    let events_client = aws_sdk_eventbridge::Client::new(config);
    let sqs = aws_sdk_sqs::Client::new(config);
    let bus = unique("lift-bus");
    events_client
        .create_event_bus()
        .name(&bus)
        .send()
        .await
        .unwrap();
    let queue_url = sqs
        .create_queue()
        .queue_name(unique("lift-bus-target"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let queue_arn = queue_arn(&sqs, &queue_url).await;
    events_client
        .put_rule()
        .name("orders")
        .event_bus_name(&bus)
        .event_pattern(r#"{"source":["lift.orders"]}"#)
        .send()
        .await
        .unwrap();
    events_client
        .put_targets()
        .rule("orders")
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(&queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let (client, bus_name) = (events_client.clone(), bus.clone());
    let publish = move |ctx: Context| {
        let (client, bus_name) = (client.clone(), bus_name.clone());
        async move {
            let entry = propagate::eventbridge_entry(
                &ctx,
                aws_sdk_eventbridge::types::PutEventsRequestEntry::builder(),
            )
            .event_bus_name(bus_name)
            .source("lift.orders")
            .detail_type("Order Placed")
            .detail(json!({"orderId": "o-5", "correlationId": ctx.correlation_id()}).to_string())
            .build();
            assert_eq!(entry.trace_header(), Some(TRACE));
            let output = client
                .put_events()
                .entries(entry)
                .send()
                .await
                .map_err(Error::internal)?;
            Ok::<_, Error>(output.failed_entry_count().to_string())
        }
    };
    let app = TestApp::new(App::new().post("/publish", publish)).unwrap();
    let response = app
        .http(
            events::http("POST", "/publish")
                .header("x-correlation-id", "corr-5")
                .v2(),
        )
        .await
        .unwrap();
    assert_eq!((response.status, response.text()), (200, "0".to_owned()));

    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .wait_time_seconds(3)
        .send()
        .await
        .unwrap();
    let event: Value = serde_json::from_str(received.messages()[0].body().unwrap()).unwrap();
    assert_eq!(event["detail-type"], "Order Placed");
    assert_eq!(event["detail"]["correlationId"], "corr-5");
}
