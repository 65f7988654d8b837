//! The participants' work on a table of their own on the emulator: each effect happens once
//! however many times its command arrives, an undo of what never happened blocks the late
//! action, and a refusal writes nothing.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use lift_events::saga::{Command, Phase, StepError};
use serde_json::{Value, json};
use shop::participants::{Ledger, QuoteRequest, quote, work};

async fn ledger() -> Ledger {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
    );
    let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
    let table = format!(
        "shop-{}-{:08x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
        fastrand::u32(..)
    );
    client
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create the shop table");
    Ledger::new(client, &table)
}

fn order(id: &str, items: Value, amount: u64, ship_to: &str) -> Value {
    json!({
        "order": id, "customer": "alice", "items": items,
        "amount": amount, "ship_to": ship_to,
    })
}

fn command(step: u32, name: &str, phase: Phase, data: &Value) -> Command {
    // As the orchestrator sends it (`Command` is built by transitions, not by hand).
    let participant = ["inventory", "payments", "shipping"][step as usize];
    serde_json::from_value(json!({
        "command_id": format!("{}-{step}-{phase:?}", data["order"].as_str().unwrap()),
        "saga_id": data["order"],
        "saga": shop::SAGA,
        "step": step,
        "step_name": name,
        "phase": phase,
        "attempt": 1,
        "target": {"kind": "remote", "participant": participant, "command": name},
        "data": data,
        "outputs": {},
        "correlation_id": "c-1",
    }))
    .expect("a command")
}

#[tokio::test]
async fn a_reservation_takes_stock_once_and_its_release_gives_it_back_once() {
    let ledger = ledger().await;
    let data = order(
        "o-1",
        json!([{"sku": "kettle", "quantity": 2}, {"sku": "teapot", "quantity": 1}, {"sku": "kettle", "quantity": 1}]),
        145,
        "Lisbon",
    );
    let reserve = command(0, "reserve", Phase::Action, &data);
    let initial = ledger.available("kettle").await.unwrap();
    // Delivered three times (a redelivery, a retry after a crash): one effect.
    for _ in 0..3 {
        let answer = work(&ledger, "inventory", &reserve).await.unwrap();
        assert_eq!(
            answer["reserved"][0],
            json!({"sku": "kettle", "quantity": 3})
        );
    }
    assert_eq!(ledger.available("kettle").await.unwrap(), initial - 3);
    assert_eq!(ledger.available("teapot").await.unwrap(), initial - 1);
    assert_eq!(
        ledger.state("reservation#o-1").await.unwrap().as_deref(),
        Some("done")
    );

    let release = command(0, "reserve", Phase::Compensation, &data);
    for _ in 0..2 {
        work(&ledger, "inventory", &release).await.unwrap();
    }
    assert_eq!(ledger.available("kettle").await.unwrap(), initial);
    assert_eq!(ledger.available("teapot").await.unwrap(), initial);
    assert_eq!(
        ledger.state("reservation#o-1").await.unwrap().as_deref(),
        Some("undone")
    );
    // A late delivery of the action after its compensation is refused: no stock taken.
    let late = work(&ledger, "inventory", &reserve).await;
    assert!(matches!(late, Err(StepError::Rejected(_))), "{late:?}");
    assert_eq!(ledger.available("kettle").await.unwrap(), initial);
}

#[tokio::test]
async fn a_compensation_that_overtakes_its_action_blocks_it() {
    let ledger = ledger().await;
    let data = order("o-2", json!([{"sku": "teapot", "quantity": 1}]), 25, "Oslo");
    // The refund arrives first (the charge timed out and the saga gave up on it).
    work(
        &ledger,
        "payments",
        &command(1, "charge", Phase::Compensation, &data),
    )
    .await
    .unwrap();
    assert_eq!(
        ledger.state("payment#o-2").await.unwrap().as_deref(),
        Some("undone")
    );
    let charge = work(
        &ledger,
        "payments",
        &command(1, "charge", Phase::Action, &data),
    )
    .await;
    match charge {
        Err(StepError::Rejected(reason)) => assert!(reason.contains("cancelled"), "{reason}"),
        other => panic!("the late charge must be refused: {other:?}"),
    }
    assert_eq!(
        ledger.state("payment#o-2").await.unwrap().as_deref(),
        Some("undone")
    );
}

#[tokio::test]
async fn refusals_write_nothing() {
    let ledger = ledger().await;
    // Above the card limit.
    let data = order(
        "o-3",
        json!([{"sku": "piano", "quantity": 1}]),
        2500,
        "Oslo",
    );
    let declined = work(
        &ledger,
        "payments",
        &command(1, "charge", Phase::Action, &data),
    )
    .await;
    assert!(
        matches!(declined, Err(StepError::Rejected(ref r)) if r.contains("declined")),
        "{declined:?}"
    );
    assert_eq!(ledger.state("payment#o-3").await.unwrap(), None);
    // Nowhere to ship.
    let data = order(
        "o-4",
        json!([{"sku": "teapot", "quantity": 1}]),
        25,
        shop::UNDELIVERABLE,
    );
    let refused = work(
        &ledger,
        "shipping",
        &command(2, "ship", Phase::Action, &data),
    )
    .await;
    assert!(
        matches!(refused, Err(StepError::Rejected(_))),
        "{refused:?}"
    );
    assert_eq!(ledger.state("shipment#o-4").await.unwrap(), None);
    // Out of stock: neither the stock of the other line nor the reservation is written.
    let kettles = ledger.available("kettle").await.unwrap();
    let data = order(
        "o-5",
        json!([{"sku": "kettle", "quantity": 1}, {"sku": "unicorn", "quantity": 1}]),
        340,
        "Oslo",
    );
    let short = work(
        &ledger,
        "inventory",
        &command(0, "reserve", Phase::Action, &data),
    )
    .await;
    assert!(
        matches!(short, Err(StepError::Rejected(ref r)) if r.contains("unicorn")),
        "{short:?}"
    );
    assert_eq!(ledger.available("kettle").await.unwrap(), kettles);
    assert_eq!(ledger.state("reservation#o-5").await.unwrap(), None);
    // A command for a step this participant does not own.
    let data = order("o-6", json!([{"sku": "teapot", "quantity": 1}]), 25, "Oslo");
    let wrong = work(
        &ledger,
        "shipping",
        &command(1, "charge", Phase::Action, &data),
    )
    .await;
    assert!(matches!(wrong, Err(StepError::Rejected(_))), "{wrong:?}");
}

#[tokio::test]
async fn a_quote_prices_known_products_and_names_unknown_ones() {
    let ledger = ledger().await;
    let request: QuoteRequest = serde_json::from_value(json!({
        "items": [{"sku": "kettle", "quantity": 2}, {"sku": "teapot", "quantity": 1}]
    }))
    .unwrap();
    let priced = quote(&ledger, &request).await.unwrap();
    assert_eq!(priced.amount, 2 * 40 + 25);
    assert_eq!(priced.lines.len(), 2);
    let request: QuoteRequest = serde_json::from_value(json!({
        "items": [{"sku": "kettle", "quantity": 1}, {"sku": "dragon", "quantity": 1}]
    }))
    .unwrap();
    match quote(&ledger, &request).await {
        Err(lift_core::Error::Validation(fields)) => {
            assert_eq!(fields.len(), 1);
            assert_eq!(fields[0].pointer, "/items/1/sku");
        }
        other => panic!("an unknown product is a validation error: {other:?}"),
    }
}

#[tokio::test]
async fn concurrent_deliveries_of_one_command_take_effect_once() {
    let ledger = ledger().await;
    let data = order(
        "o-7",
        json!([{"sku": "kettle", "quantity": 5}]),
        200,
        "Oslo",
    );
    let reserve = command(0, "reserve", Phase::Action, &data);
    let initial = ledger.available("kettle").await.unwrap();
    // Eight deliveries at once: one transaction wins, the others find its record (or lose
    // to it in DynamoDB's conflict check and are retried as technical failures).
    let runs =
        futures_util::future::join_all((0..8).map(|_| work(&ledger, "inventory", &reserve))).await;
    assert!(runs.iter().any(Result::is_ok), "{runs:?}");
    assert!(
        runs.iter()
            .all(|r| !matches!(r, Err(StepError::Rejected(_)))),
        "no delivery is refused: {runs:?}"
    );
    assert_eq!(ledger.available("kettle").await.unwrap(), initial - 5);
    assert_eq!(
        ledger.state("reservation#o-7").await.unwrap().as_deref(),
        Some("done")
    );
}
