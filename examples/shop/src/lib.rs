//! `shop`: an order saga across five Lambda functions that find each other in the service
//! registry and talk over EventBridge and SQS, with every state in DynamoDB.
//!
//! The functions (`template.yaml` deploys them, five times the one `shop` binary with its
//! role in `SHOP_ROLE`; each registers itself on its first invocation, off the response
//! path):
//!
//! - **orders** ([`orders::app`]): `POST /orders` takes a customer's order (a bearer JWT
//!   names the customer and the tenant; the body is typed and validated; an
//!   `Idempotency-Key` makes a repeat answer the first answer and place nothing), asks the
//!   `inventory` service for a quote — found through discovery and called through the
//!   service client — and puts an [`OrderPlaced`] event on the bus. `GET /orders/{id}`
//!   answers the order's saga: its status, each step, and its timeline.
//!   `POST /orders/{id}/cancel` cancels it for its customer: the steps done, and the one
//!   in flight, are undone in reverse.
//! - **orchestrator** ([`orchestrator_app`]): starts a saga for each [`OrderPlaced`] event,
//!   applies the participants' replies, its own timers, and the cancels and redrives
//!   `lift cancel` and `lift redrive` send, from its queue, and relays each stored
//!   transition's outbox from the saga table's stream.
//! - **inventory**, **payments** and **shipping** ([`participants::app`]): each takes its
//!   commands from its queue, does them at most once in effect ([`participants::Ledger`])
//!   and replies to the orchestrator's queue. Inventory also answers the quotes
//!   (`POST /quote`).
//!
//! The saga ([`saga`]): `reserve` the goods (inventory; undone by `release`), `charge` the
//! card (payments; undone by `refund`), `ship` the parcel (shipping; undone by `cancel`).
//! When a step is refused, the steps done before it are undone in reverse order.
//!
//! The demo's rules: a charge above [`CARD_LIMIT`] is declined; shipping refuses
//! [`UNDELIVERABLE`]; payments refuses the refund of a charge made to a customer whose
//! refunds are on hold (an item [`participants::refund_hold_key`] in the shop's table,
//! which the payments team puts and deletes), so that order's saga needs attention until
//! someone redrives it (`lift redrive ID`) once the hold is lifted; and, where the
//! template sets
//! `SHOP_CRASH_SKU` (on the emulator), the payments process dies in the middle of the
//! first delivery of a charge for an order of that product — after the charge is
//! written, before the reply — and the saga still ends.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)
)]

pub mod orders;
pub mod participants;

use std::collections::BTreeMap;
use std::time::Duration;

use lift_core::{App, Context, Error, FieldError, Json};
use lift_events::consume::orchestrator_inputs;
use lift_events::relay::Transport;
use lift_events::saga::{Orchestrator, OrchestratorError, Registry, Saga, StartMeta, Step, remote};
use lift_events::store::SagaStore;
use lift_events::{ConfigError, Envelope, Event};
use serde::{Deserialize, Serialize};

/// The `source` of the shop's events on the bus.
pub const SOURCE: &str = "lift.shop";
/// The saga's name.
pub const SAGA: &str = "order";
/// The largest amount the payments participant charges; above it the card is declined.
pub const CARD_LIMIT: u64 = 1000;
/// The destination shipping refuses.
pub const UNDELIVERABLE: &str = "Atlantis";
/// How long the orchestrator waits for a reply before it sends the command again.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// The most lines an order has.
pub const MAX_LINES: usize = 10;

/// A product the shop sells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Product {
    /// Its stock-keeping unit.
    pub sku: &'static str,
    /// Its price, in whole currency units.
    pub price: u64,
    /// How many the warehouse holds before the first order.
    pub initial_stock: u64,
}

/// What the shop sells. `gremlin` is the product whose charge the payments process dies in
/// the middle of, where `SHOP_CRASH_SKU` names it.
pub const CATALOG: &[Product] = &[
    Product {
        sku: "kettle",
        price: 40,
        initial_stock: 1_000_000,
    },
    Product {
        sku: "teapot",
        price: 25,
        initial_stock: 1_000_000,
    },
    Product {
        sku: "piano",
        price: 2500,
        initial_stock: 1_000_000,
    },
    Product {
        sku: "gremlin",
        price: 5,
        initial_stock: 1_000_000,
    },
    Product {
        sku: "unicorn",
        price: 300,
        initial_stock: 0,
    },
];

/// The product with this SKU.
pub fn product(sku: &str) -> Option<&'static Product> {
    CATALOG.iter().find(|p| p.sku == sku)
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, garde::Validate)]
pub struct Line {
    /// The product.
    #[garde(length(min = 1, max = 32))]
    pub sku: String,
    /// How many, 1 to 100.
    #[garde(range(min = 1, max = 100))]
    pub quantity: u64,
}

/// `lines` with one line per product, quantities added up, in SKU order.
pub fn merged(lines: &[Line]) -> Vec<Line> {
    let mut by_sku = BTreeMap::<&str, u64>::new();
    for line in lines {
        *by_sku.entry(&line.sku).or_default() += line.quantity;
    }
    by_sku
        .into_iter()
        .map(|(sku, quantity)| Line {
            sku: sku.to_owned(),
            quantity,
        })
        .collect()
}

/// The event that starts an order's saga (`detail-type` `OrderPlaced`, source [`SOURCE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The order's id, which is the saga's id: a second event for it starts nothing.
    pub order: String,
    /// Who ordered (the token's subject).
    pub customer: String,
    /// What, one line per product.
    pub items: Vec<Line>,
    /// What it costs, as quoted by inventory.
    pub amount: u64,
    /// Where it goes.
    pub ship_to: String,
}

impl Event for OrderPlaced {
    const TYPE: &'static str = "OrderPlaced";
}

/// The order saga: `reserve`, `charge` and `ship`, each with its compensation; every
/// step times out after [`STEP_TIMEOUT`].
///
/// # Errors
/// [`ConfigError`] when the definition is invalid (it is not).
pub fn saga() -> Result<Saga, ConfigError> {
    Saga::named(SAGA, 1)
        .step(
            Step::new(
                "reserve",
                remote("inventory", "Reserve"),
                Some(remote("inventory", "Release")),
            )
            .timeout(STEP_TIMEOUT),
        )
        .step(
            Step::new(
                "charge",
                remote("payments", "Charge"),
                Some(remote("payments", "Refund")),
            )
            .timeout(STEP_TIMEOUT),
        )
        .step(
            Step::new(
                "ship",
                remote("shipping", "Create"),
                Some(remote("shipping", "Cancel")),
            )
            .timeout(STEP_TIMEOUT),
        )
        .build()
}

/// Whether two orders' data differ in their amount alone.
fn same_but_amount(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    let without = |v: &serde_json::Value| {
        let mut v = v.clone();
        if let Some(map) = v.as_object_mut() {
            map.remove("amount");
        }
        v
    };
    without(a) == without(b)
}

/// The orchestrator of [`saga`] over `store`.
///
/// # Errors
/// [`ConfigError`] when the definition is invalid.
pub fn orchestrator<S: SagaStore>(store: S) -> Result<Orchestrator<S>, ConfigError> {
    Ok(Orchestrator::new(Registry::new().with(saga()?), store))
}

/// How every shop function registers itself: as `service`, in the registry that
/// `LIFT_REGISTRY_TABLE` names, renewing its lease every `LIFT_RENEW_SECONDS` (default
/// 300).
pub fn service_config(service: &str) -> lift_services::ServiceConfig {
    let renew = std::env::var("LIFT_RENEW_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    lift_services::ServiceConfig::new(service).renew_every(Duration::from_secs(renew))
}

/// A validation error on one field.
pub(crate) fn invalid(pointer: &str, message: &str) -> Error {
    Error::Validation(vec![FieldError {
        pointer: pointer.to_owned(),
        message: message.to_owned(),
    }])
}

/// The orchestrator's function: [`OrderPlaced`] events from the bus start a saga (a
/// repeated event starts nothing), SQS messages are replies, timers, cancels and
/// redrives, DynamoDB stream records are stored transitions whose outbox it publishes
/// through `transport`.
pub fn orchestrator_app<S, T>(orchestrator: Orchestrator<S>, transport: T) -> App
where
    S: SagaStore + Clone + 'static,
    T: Transport + Clone + 'static,
{
    let starter = orchestrator.clone();
    let app = App::new()
        .event(
            SOURCE,
            OrderPlaced::TYPE,
            move |_ctx: Context, placed: Envelope<OrderPlaced>| {
                let orchestrator = starter.clone();
                async move {
                    let order = &placed.payload.order;
                    if order.is_empty() || order.len() > 64 {
                        return Err(invalid("/payload/order", "must be 1 to 64 characters long"));
                    }
                    let meta = StartMeta {
                        correlation_id: placed.correlation_id.clone(),
                        tenant: placed.tenant.clone(),
                    };
                    let state = match orchestrator.start(SAGA, order, &placed.payload, meta).await {
                        Ok(state) => state,
                        // The order's id comes from its idempotency key: a second event for
                        // it with only another amount is a retry of the same order that
                        // quoted again, and the saga runs with the first event's data. Done,
                        // not retried. Other lines or another address under the same key
                        // are another order: refused (409), so the event is kept.
                        Err(OrchestratorError::AlreadyExists(id)) => {
                            let stored = orchestrator.store().load(order).await.map_err(Error::internal)?;
                            let requoted = serde_json::to_value(&placed.payload)
                                .is_ok_and(|sent| stored.is_some_and(|s| same_but_amount(s.data(), &sent)));
                            if !requoted {
                                return Err(OrchestratorError::AlreadyExists(id).into());
                            }
                            tracing::warn!(target: "lift::shop", order, "a second OrderPlaced quoted again; the saga keeps the first amount");
                            return Ok(Json(serde_json::json!({"saga": order, "status": "exists"})));
                        }
                        Err(error) => return Err(error.into()),
                    };
                    tracing::info!(target: "lift::shop", order, status = state.status().as_str(), "saga started");
                    Ok(Json(serde_json::json!({
                        "saga": state.id(),
                        "status": state.status().as_str(),
                    })))
                }
            },
        );
    orchestrator_inputs(app, orchestrator, transport)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_one_product_are_added_up() {
        let line = |sku: &str, quantity| Line {
            sku: sku.to_owned(),
            quantity,
        };
        assert_eq!(
            merged(&[line("teapot", 1), line("kettle", 2), line("teapot", 3)]),
            vec![line("kettle", 2), line("teapot", 4)]
        );
    }

    #[test]
    fn the_saga_undoes_reserve_and_charge_in_reverse() {
        let saga = saga().expect("valid");
        assert_eq!(saga.name(), SAGA);
        let names: Vec<&str> = saga.steps().iter().map(|s| s.name()).collect();
        assert_eq!(names, ["reserve", "charge", "ship"]);
    }
}
