//! The orchestrator's function in-process, on an in-memory saga store: what it does with
//! the `OrderPlaced` events of one order.

use std::time::Duration;

use lift_core::testing::{TestApp, events};
use lift_events::relay::{Transport, TransportError};
use lift_events::saga::SagaStatus;
use lift_events::store::{MemoryStore, SagaStore};
use lift_events::{Envelope, Event};
use serde_json::{Value, json};
use shop::{Line, OrderPlaced};

/// A transport that takes everything: these tests look at the saga table only.
#[derive(Debug, Clone, Default)]
struct Quiet;

impl Transport for Quiet {
    async fn put_events(&self, _entries: &[Envelope]) -> Result<Vec<usize>, TransportError> {
        Ok(Vec::new())
    }

    async fn send_delayed(
        &self,
        _message: &Envelope,
        _delay: Duration,
    ) -> Result<(), TransportError> {
        Ok(())
    }
}

fn placed(order: &str, amount: u64) -> Value {
    placed_to(order, amount, "Lisbon")
}

fn placed_to(order: &str, amount: u64, ship_to: &str) -> Value {
    let envelope = Envelope::new(
        shop::SOURCE,
        OrderPlaced {
            order: order.to_owned(),
            customer: "alice".to_owned(),
            items: vec![Line {
                sku: "kettle".to_owned(),
                quantity: 1,
            }],
            amount,
            ship_to: ship_to.to_owned(),
        },
    );
    events::eventbridge(
        shop::SOURCE,
        OrderPlaced::TYPE,
        serde_json::to_value(envelope).unwrap(),
    )
}

/// The order's id comes from its idempotency key, so a second `OrderPlaced` for it that
/// differs in its amount alone is a retry of the same order that quoted again: the saga
/// keeps the first event's data, and the second event is done (not failed, which would
/// send it to the dead-letter queue after EventBridge's retries). Another address under
/// the same id is another order: refused, so the event is kept.
#[tokio::test]
async fn a_second_order_placed_quoted_again_is_done_and_another_is_refused() {
    let store = MemoryStore::new();
    let orchestrator = shop::orchestrator(store.clone()).unwrap();
    let app = TestApp::new(shop::orchestrator_app(orchestrator, Quiet)).unwrap();
    let first = app.invoke(&placed("o-1", 40)).await.unwrap();
    assert_eq!(first["status"], "running", "{first}");
    let stored = store.load("o-1").await.unwrap().unwrap();
    let again = app.invoke(&placed("o-1", 40)).await.unwrap();
    assert_eq!(again["status"], "running", "{again}");
    let requoted = app.invoke(&placed("o-1", 45)).await.unwrap();
    assert_eq!(requoted["status"], "exists", "{requoted}");
    let elsewhere = app
        .invoke(&placed_to("o-1", 40, "Porto"))
        .await
        .expect_err("another order under a used id is refused");
    assert_eq!(elsewhere.status(), 409, "{elsewhere}");
    let after = store.load("o-1").await.unwrap().unwrap();
    assert_eq!(after, stored);
    assert_eq!(after.data()["amount"], json!(40));
    assert_eq!(after.status(), SagaStatus::Running);
}
