//! The shop deployed on the emulator: five functions from `template.yaml`, orders reached
//! through Lambda `Invoke` on its alias with API Gateway v2 events (what its Function URL
//! sends), the saga running over the bus, the queues and the saga table's stream.
//!
//! `scripts/test.sh` starts the emulator, builds and deploys the functions and points
//! `LIFT_STACK_FILE` at the deployment's outputs before the tests run. Without it these
//! tests fail loudly: they never pretend to pass.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_lambda::primitives::Blob;
use lift_core::testing::{HttpResponse, events, stack_output};
use lift_events::saga::{HistoryEvent, Phase, SagaState, SagaStatus, StepStatus};
use lift_events::store::{DynamoStore, SagaStore};
use lift_services::{DynamoRegistry, Registry};
use serde_json::{Value, json};
use shop::orders::OrderView;
use tokio::sync::OnceCell;

/// The `ShopAuthSecret` `scripts/deploy.py` gives the local deployment (the template has no
/// default).
const SECRET: &[u8] = b"lift-local-shop-secret-of-32-bytes!";
/// How long a saga may take; a crash in the middle of a step costs the payments queue's
/// visibility timeout (30 s).
const WAIT: Duration = Duration::from_secs(90);

fn output(name: &str) -> String {
    stack_output(name).unwrap_or_else(|e| {
        panic!("no deployment to test ({e}): run scripts/test.sh, which deploys the examples onto the emulator")
    })
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(customer: &str, tenant: &str, expires_in: i64) -> String {
    let claims = json!({
        "sub": customer, "tenant": tenant, "iss": shop::orders::TOKEN_ISSUER,
        "exp": now_s() as i64 + expires_in,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

struct Shop {
    lambda: aws_sdk_lambda::Client,
    orders: String,
    store: DynamoStore,
}

static READY: OnceCell<()> = OnceCell::const_new();

/// The deployed shop, once inventory is in the registry: it registers itself on its
/// first invocation (this quote), and orders cannot find it before.
async fn shop() -> Shop {
    let config = lift_core::aws::sdk_config().await;
    let shop = Shop {
        lambda: aws_sdk_lambda::Client::new(config),
        orders: output("ShopOrdersAliasArn"),
        store: DynamoStore::new(
            aws_sdk_dynamodb::Client::new(config),
            &output("ShopSagaTableName"),
        ),
    };
    READY
        .get_or_init(|| async {
            let inventory = output("ShopInventoryAliasArn");
            let quote = events::http("POST", "/quote")
                .json(&json!({"items": [{"sku": "kettle", "quantity": 1}]}))
                .v2();
            let answer = invoke(&shop.lambda, &inventory, &quote).await;
            assert_eq!(answer.status, 200, "{}", answer.text());
            let registry = DynamoRegistry::new(
                aws_sdk_dynamodb::Client::new(config),
                output("ServiceRegistryTableName"),
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let instances = registry.instances("inventory").await.unwrap();
                if instances.iter().any(|i| {
                    i.endpoints.lambda_arn.as_deref() == Some(inventory.as_str())
                        && i.environments.keys().any(|env| env != "deploy")
                }) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "inventory did not register itself: {instances:#?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
    shop
}

async fn invoke(lambda: &aws_sdk_lambda::Client, function: &str, event: &Value) -> HttpResponse {
    let output = lambda
        .invoke()
        .function_name(function)
        .payload(Blob::new(serde_json::to_vec(event).unwrap()))
        .send()
        .await
        .expect("the Invoke call itself succeeds");
    let payload: Value =
        serde_json::from_slice(output.payload().expect("payload").as_ref()).expect("JSON");
    assert!(
        output.function_error().is_none(),
        "function error: {payload}"
    );
    HttpResponse::from_value(&payload).expect("an HTTP response")
}

impl Shop {
    async fn post(&self, token: Option<&str>, body: &Value, key: Option<&str>) -> HttpResponse {
        let mut event = events::http("POST", "/orders").json(body);
        if let Some(token) = token {
            event = event.header("authorization", &format!("Bearer {token}"));
        }
        if let Some(key) = key {
            event = event.header("idempotency-key", key);
        }
        invoke(&self.lambda, &self.orders, &event.v2()).await
    }

    /// Places an order and answers its id.
    async fn place(&self, token: &str, body: Value) -> String {
        let answer = self.post(Some(token), &body, None).await;
        assert_eq!(answer.status, 202, "{}", answer.text());
        answer.json::<Value>().unwrap()["order"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn cancel(&self, token: &str, order: &str) -> HttpResponse {
        let event = events::http("POST", &format!("/orders/{order}/cancel"))
            .header("authorization", &format!("Bearer {token}"))
            .v2();
        invoke(&self.lambda, &self.orders, &event).await
    }

    async fn get(&self, token: &str, order: &str) -> HttpResponse {
        let event = events::http("GET", &format!("/orders/{order}"))
            .header("authorization", &format!("Bearer {token}"))
            .v2();
        invoke(&self.lambda, &self.orders, &event).await
    }

    /// The saga of `stuck` (which needs attention) once a redrive of its version, put on
    /// the orchestrator's queue as `lift redrive` puts it, was applied and the saga ended
    /// again (read from the saga table; the order's view is read too).
    async fn redriven(&self, token: &str, stuck: &SagaState) -> SagaState {
        let redrive = lift_events::relay::redrive_envelope(
            "ops",
            stuck.id(),
            stuck.version(),
            "the hold was looked at",
        )
        .unwrap();
        let queue = lift_events::publish::SqsPublisher::new(
            aws_sdk_sqs::Client::new(lift_core::aws::sdk_config().await),
            &output("ShopOrchestratorQueueUrl"),
            lift_events::publish::PublishConfig::default(),
        );
        queue
            .send(&[lift_events::publish::SqsMessage::new(redrive)])
            .await
            .expect("send the redrive");
        // Until the redrive is applied the saga still needs attention at its version.
        let deadline = Instant::now() + WAIT;
        loop {
            let state = self.store.load(stuck.id()).await.unwrap().unwrap();
            if state.version() > stuck.version() && state.status().is_final() {
                // The customer's view shows the same end.
                let (view, _) = self.ended(token, stuck.id()).await;
                assert_eq!(view.status, state.status().as_str(), "{view:#?}");
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "the redrive was not applied, or the saga did not end again, within {WAIT:?}: {:?} at version {}",
                state.status(),
                state.version()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The order as its customer sees it once its saga ended, and the saga as stored.
    async fn ended(&self, token: &str, order: &str) -> (OrderView, SagaState) {
        let deadline = Instant::now() + WAIT;
        loop {
            let answer = self.get(token, order).await;
            if answer.status == 200 {
                let view: OrderView = answer.json().unwrap();
                if ["completed", "compensated", "needs_attention"].contains(&view.status.as_str()) {
                    let state = self.store.load(order).await.unwrap().unwrap();
                    return (view, state);
                }
            }
            assert!(
                Instant::now() < deadline,
                "order {order} did not end within {WAIT:?}: {} {}",
                answer.status,
                answer.text()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// The replies of a saga, in order, as `(step, phase, ok)`.
fn replies(state: &SagaState) -> Vec<(u32, Phase, bool)> {
    state
        .history()
        .iter()
        .filter_map(|entry| match &entry.event {
            HistoryEvent::Replied {
                step, phase, ok, ..
            } => Some((*step, *phase, *ok)),
            _ => None,
        })
        .collect()
}

const A: Phase = Phase::Action;
const C: Phase = Phase::Compensation;

#[tokio::test]
async fn an_order_completes_and_a_declined_payment_releases_the_goods() {
    let shop = shop().await;
    let alice = token("alice", "acme", 600);
    let done = shop
        .place(
            &alice,
            json!({"items": [{"sku": "kettle", "quantity": 2}], "ship_to": "Lisbon"}),
        )
        .await;
    let declined = shop
        .place(
            &alice,
            json!({"items": [{"sku": "piano", "quantity": 1}], "ship_to": "Oslo"}),
        )
        .await;

    let (view, state) = shop.ended(&alice, &done).await;
    assert_eq!(view.status, "completed", "{view:#?}");
    assert_eq!(replies(&state), [(0, A, true), (1, A, true), (2, A, true)]);
    assert_eq!(state.tenant(), Some("acme"));
    assert_eq!(view.order_data["amount"], 80);
    assert_eq!(view.outputs["charge"]["charged"], 80);
    assert!(
        view.timeline.contains("ended completed"),
        "{}",
        view.timeline
    );
    // A completed order cannot be cancelled: what shipped stays shipped.
    let late = shop.cancel(&alice, &done).await;
    assert_eq!(late.status, 409, "{}", late.text());
    assert_eq!(
        late.json::<Value>().unwrap()["error"]["code"],
        "saga_not_cancellable"
    );
    assert_eq!(shop.store.load(&done).await.unwrap(), Some(state));

    let (view, state) = shop.ended(&alice, &declined).await;
    assert_eq!(view.status, "compensated", "{view:#?}");
    assert!(
        view.reason
            .as_deref()
            .is_some_and(|r| r.contains("card declined")),
        "{view:#?}"
    );
    assert_eq!(replies(&state), [(0, A, true), (1, A, false), (0, C, true)]);
}

#[tokio::test]
async fn a_shipping_failure_after_payment_refunds_then_releases() {
    let shop = shop().await;
    let bob = token("bob", "acme", 600);
    let order = shop
        .place(
            &bob,
            json!({"items": [{"sku": "teapot", "quantity": 3}], "ship_to": shop::UNDELIVERABLE}),
        )
        .await;
    let (view, state) = shop.ended(&bob, &order).await;
    assert_eq!(view.status, "compensated", "{view:#?}");
    // Refund (charge, step 1) before release (reserve, step 0).
    assert_eq!(
        replies(&state),
        [
            (0, A, true),
            (1, A, true),
            (2, A, false),
            (1, C, true),
            (0, C, true)
        ]
    );
    assert_eq!(state.status(), SagaStatus::Compensated);
}

#[tokio::test]
async fn a_repeated_request_places_nothing_and_keys_belong_to_their_caller() {
    let shop = shop().await;
    let carol = token("carol", "globex", 600);
    let dave = token("dave", "globex", 600);
    let key = format!("k-{:016x}", fastrand::u64(..));
    let body = json!({"items": [{"sku": "teapot", "quantity": 1}], "ship_to": "Lisbon"});
    let first = shop.post(Some(&carol), &body, Some(&key)).await;
    assert_eq!(first.status, 202, "{}", first.text());
    let again = shop.post(Some(&carol), &body, Some(&key)).await;
    assert_eq!(again.status, 202, "{}", again.text());
    let first: Value = first.json().unwrap();
    let again: Value = again.json().unwrap();
    assert_eq!(first, again, "a repeat answers the first answer");
    // The same key from another customer of the same tenant is that customer's own.
    let other = shop.post(Some(&dave), &body, Some(&key)).await;
    let other: Value = other.json().unwrap();
    assert_ne!(other["order"], first["order"]);
    // The same key with another body is refused.
    let reused = shop
        .post(
            Some(&carol),
            &json!({"items": [{"sku": "kettle", "quantity": 1}], "ship_to": "Lisbon"}),
            Some(&key),
        )
        .await;
    assert_eq!(reused.status, 422, "{}", reused.text());
    let (view, _) = shop.ended(&carol, first["order"].as_str().unwrap()).await;
    assert_eq!(view.status, "completed");
}

/// The state of a participant's record in the shop's table (`payment#<order>`, ...).
async fn ledger(key: &str) -> Option<String> {
    let dynamodb = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
    let item = dynamodb
        .get_item()
        .table_name(output("ShopTableName"))
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(key.to_owned()),
        )
        .consistent_read(true)
        .send()
        .await
        .expect("read the shop's table")
        .item?;
    item.get("state").and_then(|v| v.as_s().ok()).cloned()
}

/// The idempotency record of the answer that names `order`, deleted: what a client's retry
/// meets when the first attempt died after putting the order on the bus and before its
/// answer was stored (the key's lock expires with the invocation).
async fn forget_answer(order: &str) {
    let dynamodb = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
    let table = output("ShopIdempotencyTableName");
    let items = dynamodb
        .scan()
        .table_name(&table)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let ids: Vec<_> = items
        .iter()
        .filter(|item| {
            // The orders function's records (its route in the key), not the participants'
            // (shipping's answer names the order too).
            item["id"]
                .as_s()
                .is_ok_and(|id| id.contains(".POST /orders#"))
                && item
                    .get("data")
                    .and_then(|d| d.as_s().ok())
                    .is_some_and(|d| d.contains(order))
        })
        .map(|item| item["id"].clone())
        .collect();
    assert_eq!(ids.len(), 1, "one stored answer names {order}");
    dynamodb
        .delete_item()
        .table_name(&table)
        .key("id", ids[0].clone())
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_retry_after_the_answer_was_lost_names_the_same_order() {
    let shop = shop().await;
    let erin = token("erin", "initech", 600);
    let key = format!("k-{:016x}", fastrand::u64(..));
    let body = json!({"items": [{"sku": "kettle", "quantity": 1}], "ship_to": "Faro"});
    let first = shop.post(Some(&erin), &body, Some(&key)).await;
    assert_eq!(first.status, 202, "{}", first.text());
    let first: Value = first.json().unwrap();
    let order = first["order"].as_str().unwrap().to_owned();
    assert_eq!(
        order,
        shop::orders::order_id(Some("initech"), "erin", Some(&key))
    );
    let (view, state) = shop.ended(&erin, &order).await;
    assert_eq!(view.status, "completed", "{view:#?}");
    assert_eq!(replies(&state), [(0, A, true), (1, A, true), (2, A, true)]);
    forget_answer(&order).await;
    // The handler runs again (the record is back afterwards), finds the order this key
    // placed, and answers it as placed: no new quote, nothing published.
    let retry = shop.post(Some(&erin), &body, Some(&key)).await;
    assert_eq!(retry.status, 202, "{}", retry.text());
    let retry: Value = retry.json().unwrap();
    assert_eq!(retry["order"], order.as_str());
    assert_eq!(retry["amount"], first["amount"]);
    assert_eq!(retry.get("quoted_by"), None, "{retry}");
    // The retry stored its answer: exactly one record names the order again.
    forget_answer(&order).await;
    // The same key for another address is refused, not answered with the first order.
    let elsewhere = json!({"items": [{"sku": "kettle", "quantity": 1}], "ship_to": "Porto"});
    let reused = shop.post(Some(&erin), &elsewhere, Some(&key)).await;
    assert_eq!(reused.status, 422, "{}", reused.text());
    assert_eq!(
        reused.json::<Value>().unwrap()["error"]["code"],
        "idempotency_key_reused",
        "{}",
        reused.text()
    );
    let after = shop.store.load(&order).await.unwrap().unwrap();
    assert_eq!(after.data()["ship_to"], "Faro");
    assert_eq!(after.history().len(), state.history().len());
}

/// Waits until the charge of `order` is written: for a `gremlin` order, its payments
/// process has then died before replying, and SQS delivers the command again only after
/// 30 s.
async fn charge_written(order: &str) {
    let deadline = Instant::now() + WAIT;
    while ledger(&format!("payment#{order}")).await.as_deref() != Some("done") {
        assert!(
            Instant::now() < deadline,
            "the charge of {order} was never written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The payments process dies on the first delivery of a charge for `gremlin`, after
/// writing the charge and before replying. The first order waits for the second delivery
/// and completes, charged once. The second, placed once the first's charge is written (so
/// that the two charges never share a delivery), is cancelled by its customer while its
/// charge is in doubt: the saga refunds the charge and releases the goods without the
/// charge's answer (none is in its history), the late answer changes nothing, and nothing
/// ships. One test, so that no other test's `gremlin` order shares a delivery with these.
#[tokio::test]
async fn a_participant_dying_mid_step_stops_no_saga_and_a_charge_in_doubt_can_be_cancelled() {
    let shop = shop().await;
    let alice = token("alice", "acme", 600);
    let frank = token("frank", "acme", 600);
    let gremlin = |to: &str| json!({"items": [{"sku": "gremlin", "quantity": 1}], "ship_to": to});
    let order = shop.place(&alice, gremlin("Porto")).await;
    charge_written(&order).await;
    let doubtful = shop.place(&frank, gremlin("Braga")).await;
    charge_written(&doubtful).await;
    // SQS delivers the charge again 30 s after its first delivery, which died by now.
    let redelivered_by = Instant::now() + Duration::from_secs(35);
    let charging = shop.store.load(&doubtful).await.unwrap().unwrap();
    assert_eq!(charging.steps()[1], StepStatus::Running, "no answer yet");
    // Only its customer may cancel it.
    let other = shop.cancel(&token("mallory", "acme", 600), &doubtful).await;
    assert_eq!(other.status, 404, "{}", other.text());
    let cancelled = shop.cancel(&frank, &doubtful).await;
    assert_eq!(cancelled.status, 202, "{}", cancelled.text());
    let cancelled: shop::orders::Cancelled = cancelled.json().unwrap();
    assert_eq!(cancelled.status, "compensating");

    let (view, cancelled) = shop.ended(&frank, &doubtful).await;
    assert_eq!(view.status, "compensated", "{view:#?}");
    assert_eq!(
        view.reason.as_deref(),
        Some("cancelled: the customer cancelled the order")
    );
    // Reserved, then the charge refunded and the goods released; nothing shipped.
    assert_eq!(
        replies(&cancelled),
        [(0, A, true), (1, C, true), (0, C, true)]
    );
    assert_eq!(
        ledger(&format!("payment#{doubtful}")).await.as_deref(),
        Some("undone"),
        "refunded"
    );
    let again = shop.cancel(&frank, &doubtful).await;
    assert_eq!(again.status, 202, "{}", again.text());
    assert_eq!(again.json::<Value>().unwrap()["status"], "compensated");

    let (view, state) = shop.ended(&alice, &order).await;
    assert_eq!(view.status, "completed", "{view:#?}");
    // One reply per step: the charge's second delivery found the charge written by the
    // process that died and replied, instead of charging twice.
    assert_eq!(replies(&state), [(0, A, true), (1, A, true), (2, A, true)]);
    let charged = state
        .history()
        .iter()
        .find_map(|e| match &e.event {
            HistoryEvent::Replied { step: 1, .. } => Some(e.at_ms),
            _ => None,
        })
        .unwrap();
    // The payments queue's visibility timeout is 30 s: only a second delivery, after the
    // process died, answers this late (a slow first one would answer within seconds).
    assert!(
        charged - state.created_ms() >= 25_000,
        "the charge was answered {} ms after the start: by the first delivery, not the second",
        charged - state.created_ms()
    );
    // Once the cancelled order's charge has come again, its answer changed nothing.
    tokio::time::sleep_until(redelivered_by.into()).await;
    let after = shop.store.load(&doubtful).await.unwrap().unwrap();
    assert_eq!(
        after.version(),
        cancelled.version(),
        "{}",
        after.stored_timeline()
    );
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_orders_stay_private() {
    let shop = shop().await;
    let alice = token("alice", "acme", 600);
    let body = json!({"items": [{"sku": "kettle", "quantity": 1}], "ship_to": "Lisbon"});
    let cases = [
        (None, body.clone(), 401, "unauthorized"),
        (
            Some(token("alice", "acme", -600)),
            body.clone(),
            401,
            "unauthorized",
        ),
        (
            Some(alice.clone()),
            json!({"items": [], "ship_to": ""}),
            422,
            "validation_failed",
        ),
        (
            Some(alice.clone()),
            json!({"items": [{"sku": "kettle"}], "ship_to": "x"}),
            422,
            "validation_failed",
        ),
        (
            Some(alice.clone()),
            json!({"items": [{"sku": "dragon", "quantity": 1}], "ship_to": "x"}),
            422,
            "quote_refused",
        ),
        (
            Some(alice.clone()),
            json!({"items": [{"sku": "unicorn", "quantity": 1}], "ship_to": "x"}),
            409,
            "out_of_stock",
        ),
    ];
    for (token, body, status, code) in cases {
        let answer = shop.post(token.as_deref(), &body, None).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.text());
        let error: Value = answer.json().unwrap();
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
    }
    let order = shop.place(&alice, body).await;
    shop.ended(&alice, &order).await;
    // Another customer, and the same customer name in another tenant, see nothing.
    for other in [token("bob", "acme", 600), token("alice", "globex", 600)] {
        let answer = shop.get(&other, &order).await;
        assert_eq!(answer.status, 404, "{}", answer.text());
    }
    // An id longer than the table takes as a key is not found either (a 500 before).
    let answer = shop.get(&alice, &"o".repeat(3000)).await;
    assert_eq!(answer.status, 404, "{}", answer.text());
}

/// Inventory's quote takes what an order takes: a quantity past 100 is a 422, not a price
/// that overflows.
#[tokio::test]
async fn a_quote_for_an_impossible_quantity_is_refused() {
    let shop = shop().await;
    let quote = events::http("POST", "/quote")
        .json(&json!({"items": [{"sku": "kettle", "quantity": 2_305_843_009_213_693_952_u64}]}))
        .v2();
    let answer = invoke(&shop.lambda, &output("ShopInventoryAliasArn"), &quote).await;
    assert_eq!(answer.status, 422, "{}", answer.text());
}

/// A refund refused (refunds to the customer on hold) stops the compensation of an order
/// whose shipping failed: the saga needs attention, stopped on the refund, charged and not
/// released. Redriven while the hold is on, the refund is refused again; redriven once the
/// hold is lifted (a redrive on the orchestrator's queue, what `lift redrive` sends), it
/// goes through and the saga ends compensated: refunded, then released. Each redrive sends
/// the refund under a new command id: payments recorded each refusal under the id it came
/// with, and would answer it again.
#[tokio::test]
async fn a_refused_refund_needs_attention_until_a_redrive_after_the_hold_is_lifted() {
    let shop = shop().await;
    let customer = format!("erin-{}", now_s() * 1000 + u64::from(fastrand::u16(..)));
    let erin = token(&customer, "acme", 600);
    let dynamodb = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
    let hold = shop::participants::refund_hold_key(Some("acme"), &customer);
    let key = aws_sdk_dynamodb::types::AttributeValue::S(hold.clone());
    dynamodb
        .put_item()
        .table_name(output("ShopTableName"))
        .item("pk", key.clone())
        .send()
        .await
        .expect("put the hold");
    let order = shop
        .place(
            &erin,
            json!({"items": [{"sku": "kettle", "quantity": 1}], "ship_to": shop::UNDELIVERABLE}),
        )
        .await;
    let (view, stuck) = shop.ended(&erin, &order).await;
    assert_eq!(view.status, "needs_attention", "{view:#?}");
    assert!(
        stuck.reason().is_some_and(|r| r.contains("on hold")),
        "{:?}",
        stuck.reason()
    );
    let halted = stuck.halted().expect("the refund it stopped on").clone();
    assert_eq!(
        (halted.step, halted.phase, halted.refused),
        (1, C, true),
        "{halted:?}"
    );
    assert_eq!(
        ledger(&format!("payment#{order}")).await.as_deref(),
        Some("done")
    );
    assert_eq!(
        ledger(&format!("reservation#{order}")).await.as_deref(),
        Some("done")
    );

    let stopped_again = shop.redriven(&erin, &stuck).await;
    assert_eq!(stopped_again.status(), SagaStatus::NeedsAttention);
    assert_eq!(
        stopped_again.halted().map(|h| h.command_id.clone()),
        Some(format!("{order}:1:c:r1"))
    );
    dynamodb
        .delete_item()
        .table_name(output("ShopTableName"))
        .key("pk", key)
        .send()
        .await
        .expect("lift the hold");
    let state = shop.redriven(&erin, &stopped_again).await;
    assert_eq!(state.status(), SagaStatus::Compensated);
    assert_eq!(
        replies(&state),
        [
            (0, A, true),
            (1, A, true),
            (2, A, false),
            (1, C, false),
            (1, C, false),
            (1, C, true),
            (0, C, true)
        ]
    );
    assert_eq!(state.redrives(), 2);
    assert_eq!(
        ledger(&format!("payment#{order}")).await.as_deref(),
        Some("undone")
    );
    assert_eq!(
        ledger(&format!("reservation#{order}")).await.as_deref(),
        Some("undone")
    );
}
