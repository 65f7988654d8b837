//! The DynamoDB retry preset against the emulator: a real failed condition is not retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_dynamodb::types::AttributeValue;
use lift_core::BoxError;
use lift_middleware::classify::RequestInfo;
use lift_middleware::presets;
use tower::{Layer, ServiceExt};

use crate::aws;

#[derive(Clone)]
struct Put(String);

/// A conditional put: sending it twice has the effect of sending it once.
impl RequestInfo for Put {
    fn is_idempotent(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_failed_condition_is_tried_once() {
    let client = aws::client().await;
    let table = aws::table(&client, "lift-retry").await;

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
