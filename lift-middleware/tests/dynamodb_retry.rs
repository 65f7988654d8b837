//! The DynamoDB retry preset against the emulator: a real failed condition is not retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use lift_core::BoxError;
use lift_middleware::classify::RequestInfo;
use lift_middleware::presets;
use tower::{Layer, ServiceExt};

#[derive(Clone)]
struct Put(String);

impl RequestInfo for Put {}

#[tokio::test]
async fn a_failed_condition_is_tried_once() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
    );
    let client = Client::new(lift_core::aws::sdk_config().await);
    let table = format!(
        "lift-retry-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("time")
            .as_nanos()
    );
    client
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");

    let attempts = Arc::new(AtomicU32::new(0));
    let service = {
        let (client, table, attempts) = (client.clone(), table.clone(), attempts.clone());
        tower::service_fn(move |put: Put| {
            let (client, table, attempts) = (client.clone(), table.clone(), attempts.clone());
            async move {
                attempts.fetch_add(1, Ordering::SeqCst);
                client
                    .put_item()
                    .table_name(table)
                    .item("pk", AttributeValue::S(put.0))
                    .condition_expression("attribute_not_exists(pk)")
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| Box::new(aws_sdk_dynamodb::Error::from(e)) as BoxError)
            }
        })
    };
    let retried = presets::dynamodb_retry().layer(service);
    retried
        .clone()
        .oneshot(Put("order-1".to_owned()))
        .await
        .expect("first put creates the item");
    let error = retried
        .oneshot(Put("order-1".to_owned()))
        .await
        .expect_err("the second put fails its condition");
    assert!(matches!(
        error.downcast_ref::<aws_sdk_dynamodb::Error>(),
        Some(aws_sdk_dynamodb::Error::ConditionalCheckFailedException(_))
    ));
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        2,
        "one attempt each, no retry"
    );
}
