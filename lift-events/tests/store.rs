//! One contract for every `SagaStore`: the in-memory store and DynamoDB on the emulator
//! (through the real SDK client) must behave the same.

#[path = "support/contract.rs"]
mod contract;

use contract::{contract, unique};
use lift_events::saga::{Saga, StartMeta, Step, remote, start};
use lift_events::store::{DynamoStore, MemoryStore, SagaStore, StoreError};
use serde_json::json;

fn saga() -> Saga {
    Saga::named("contract", 1)
        .step(Step::new("a", remote("p", "A"), Some(remote("p", "UndoA"))))
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    contract(MemoryStore::new()).await;
}

#[tokio::test]
async fn the_dynamodb_store_keeps_the_contract() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
    );
    let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
    let table = unique("sagas");
    DynamoStore::create_table(&client, &table).await.unwrap();
    contract(DynamoStore::new(client, &table)).await;
}

#[tokio::test]
async fn the_dynamodb_store_refuses_an_item_above_400_kb_before_sending() {
    // No emulator needed: the size is checked before any call.
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .build();
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(config), "t");
    let big = start(
        &saga(),
        "big",
        json!({"blob": "x".repeat(420 * 1024)}),
        StartMeta::default(),
        1,
    )
    .into_state();
    assert!(matches!(
        store.save(&big).await,
        Err(StoreError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn a_missing_table_is_refused_not_retried() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
    );
    let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
    let store = DynamoStore::new(client, &unique("no-such-table"));
    let error = store.load("s-1").await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Refused {
                operation: "GetItem",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}
