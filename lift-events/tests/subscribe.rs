//! Typed envelopes as handler input on lift-core's `App`: from EventBridge events, and
//! from SQS messages (bare, or as an EventBridge rule delivers them to a queue).

use lift_core::testing::{TestApp, batch_failures, events};
use lift_core::{App, Context, Error, Json};
use lift_events::{Envelope, Event};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct OrderPlaced {
    order: u32,
}

impl Event for OrderPlaced {
    const TYPE: &'static str = "OrderPlaced";
}

async fn placed(ctx: Context, e: Envelope<OrderPlaced>) -> Result<Json<Value>, Error> {
    Ok(Json(json!({
        "order": e.payload.order,
        "id": e.id,
        "correlation": ctx.correlation_id(),
        "extra": e.extra.get("region"),
    })))
}

fn envelope(order: u32) -> Envelope {
    let mut e = Envelope::new("orders", OrderPlaced { order });
    e.correlation_id = "corr-1".into();
    let mut e = e.into_untyped().unwrap();
    e.extra.insert("region".into(), json!("eu-west-1"));
    e
}

#[tokio::test]
async fn an_eventbridge_route_gets_the_typed_envelope_and_its_correlation() {
    let app = TestApp::new(App::new().event("orders", OrderPlaced::TYPE, placed)).unwrap();
    let e = envelope(3);
    let out = app
        .invoke(&events::eventbridge(
            "orders",
            "OrderPlaced",
            serde_json::to_value(&e).unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(out["order"], 3);
    assert_eq!(out["id"], e.id.as_str());
    assert_eq!(out["correlation"], "corr-1");
    assert_eq!(out["extra"], "eu-west-1");
}

#[tokio::test]
async fn an_sqs_handler_reads_bare_and_rule_delivered_envelopes_and_refuses_other_types() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = TestApp::new(
        App::new().sqs(move |_ctx: Context, e: Envelope<OrderPlaced>| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(e.payload.order);
                Ok::<_, Error>(())
            }
        }),
    )
    .unwrap();
    let bare = serde_json::to_string(&envelope(1)).unwrap();
    let via_rule = events::eventbridge(
        "orders",
        "OrderPlaced",
        serde_json::to_value(envelope(2)).unwrap(),
    )
    .to_string();
    let mut other = envelope(3);
    other.kind = "OrderShipped".into();
    let other = serde_json::to_string(&other).unwrap();
    let out = app
        .invoke(&events::sqs([
            bare.as_str(),
            via_rule.as_str(),
            other.as_str(),
            "not json",
        ]))
        .await
        .unwrap();
    assert_eq!(
        batch_failures(&out),
        ["m2", "m3"],
        "a wrong type and a non-envelope fail alone"
    );
    assert_eq!(*seen.lock().unwrap(), [1, 2]);
}
