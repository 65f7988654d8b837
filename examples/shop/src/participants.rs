//! The saga's participants: inventory, payments and shipping, one binary deployed three
//! times, each with its effects in the shop table.
//!
//! Exactly once in effect: every command of a step carries the same order, and each effect
//! is one DynamoDB transaction that also writes the order's record (`reservation#<order>`,
//! `payment#<order>`, `shipment#<order>`) on the condition that it is not there yet. So a
//! command delivered twice — or run again after the process died between its effect and its
//! reply — finds the record and answers "done" without doing it twice; the idempotency
//! record of [`Participant`] only saves the second run. An undo writes the record as
//! `undone` (a tombstone when the action never took effect), so an action that arrives after
//! its compensation is refused instead of taking effect for good.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem, Update};
use lift_core::{App, Context, Error, Json, Result};
use lift_events::consume::Participant;
use lift_events::saga::{Command, Phase, StepError};
use lift_middleware::dynamo::{self, DynamoError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{CARD_LIMIT, Line, UNDELIVERABLE, merged, product};

/// A record's state: the effect is in place.
const DONE: &str = "done";
/// A record's state: the effect was undone, or never took effect and never will.
const UNDONE: &str = "undone";

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A technical failure: the orchestrator sends the command again.
fn failed(error: impl std::fmt::Display) -> StepError {
    StepError::Failed(error.to_string())
}

/// The shop table (partition key `pk`, a string): the stock of each product
/// (`stock#<sku>`) and each order's records.
#[derive(Debug, Clone)]
pub struct Ledger {
    client: Client,
    table: String,
}

/// Another item a [`Ledger`] write changes in the same transaction, and what to answer
/// when its condition fails.
struct Also {
    item: TransactWriteItem,
    refusal: String,
}

impl Ledger {
    /// The ledger in `table`, through `client`.
    pub fn new(client: Client, table: &str) -> Self {
        Ledger {
            client,
            table: table.to_owned(),
        }
    }

    /// The item `key`, read consistently.
    async fn item(&self, key: &str) -> std::result::Result<Option<dynamo::Item>, StepError> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .consistent_read(true)
            .send();
        Ok(dynamo::send("GetItem", get).await.map_err(failed)?.item)
    }

    /// The state of record `key` (`done` or `undone`), read consistently.
    ///
    /// # Errors
    /// A technical failure when DynamoDB fails.
    pub async fn state(&self, key: &str) -> std::result::Result<Option<String>, StepError> {
        let item = self.item(key).await?;
        Ok(item.and_then(|mut item| match item.remove("state") {
            Some(AttributeValue::S(state)) => Some(state),
            _ => None,
        }))
    }

    /// Puts `key` as done with `attributes`, with `also` in the same transaction, unless
    /// `key` is there already: done already is a success (a repeat), undone is a refusal.
    async fn apply(
        &self,
        key: &str,
        attributes: HashMap<String, AttributeValue>,
        also: Vec<Also>,
    ) -> std::result::Result<(), StepError> {
        let mut item = attributes;
        item.insert("pk".to_owned(), s(key));
        item.insert("state".to_owned(), s(DONE));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(failed)?;
        let record = TransactWriteItem::builder().put(put).build();
        match self.transact(record, &also).await {
            Ok(()) => Ok(()),
            Err(Some(0)) => match self.state(key).await?.as_deref() {
                Some(DONE) => Ok(()),
                Some(_) => Err(StepError::Rejected("cancelled before it was done".into())),
                None => Err(failed("the record vanished; try again")),
            },
            Err(Some(i)) => Err(StepError::Rejected(also[i - 1].refusal.clone())),
            Err(None) => Err(failed("the transaction failed")),
        }
    }

    /// Marks `key` undone, with `also` in the same transaction, when it is done (refused
    /// when a condition of `also` fails); when it is not there, writes it undone whatever
    /// `also` says (nothing to undo, and the action can no longer happen); when it is undone
    /// already, does nothing.
    async fn undo(&self, key: &str, also: Vec<Also>) -> std::result::Result<(), StepError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(key))
            .update_expression("SET #s = :undone")
            .condition_expression("#s = :done")
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":undone", s(UNDONE))
            .expression_attribute_values(":done", s(DONE))
            .build()
            .map_err(failed)?;
        let record = TransactWriteItem::builder().update(update).build();
        match self.transact(record, &also).await {
            Ok(()) => Ok(()),
            Err(Some(0)) => match self.state(key).await?.as_deref() {
                Some(UNDONE) => Ok(()),
                Some(_) => Err(failed("the record changed meanwhile; try again")),
                None => {
                    let tombstone = self
                        .client
                        .put_item()
                        .table_name(&self.table)
                        .item("pk", s(key))
                        .item("state", s(UNDONE))
                        .condition_expression("attribute_not_exists(pk)")
                        .send();
                    match dynamo::send("PutItem", tombstone).await {
                        Ok(_) => Ok(()),
                        Err(DynamoError::ConditionFailed { .. }) => {
                            Err(failed("the action landed meanwhile; try again"))
                        }
                        Err(other) => Err(failed(other)),
                    }
                }
            },
            Err(Some(i)) => Err(StepError::Rejected(also[i - 1].refusal.clone())),
            Err(None) => Err(failed("the transaction failed")),
        }
    }

    /// One transaction of `record` and `also`. `Err(Some(i))`: the condition of action `i`
    /// failed (0 is `record`); `Err(None)`: any other failure (logged).
    async fn transact(
        &self,
        record: TransactWriteItem,
        also: &[Also],
    ) -> std::result::Result<(), Option<usize>> {
        let items = std::iter::once(record)
            .chain(also.iter().map(|a| a.item.clone()))
            .collect();
        let call = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send();
        match dynamo::send("TransactWriteItems", call).await {
            Ok(_) => Ok(()),
            Err(DynamoError::TransactionCanceled { reasons, .. }) => {
                let failed_condition = reasons
                    .iter()
                    .position(|r| r.as_deref() == Some("ConditionalCheckFailed"));
                if failed_condition.is_none() {
                    tracing::warn!(target: "lift::shop", ?reasons, "transaction cancelled");
                }
                Err(failed_condition)
            }
            Err(other) => {
                tracing::warn!(target: "lift::shop", error = %other, "transaction failed");
                Err(None)
            }
        }
    }

    /// The stock update of `line`: `available` down (the product's initial stock when the
    /// item is new) on the condition that enough is left; or back up by as much.
    fn stock(&self, line: &Line, take: bool) -> std::result::Result<Also, StepError> {
        let initial = product(&line.sku).map_or(0, |p| p.initial_stock);
        let (expression, condition) = if take {
            let condition = if initial >= line.quantity {
                "attribute_not_exists(available) OR available >= :q"
            } else {
                "available >= :q"
            };
            (
                "SET available = if_not_exists(available, :initial) - :q",
                Some(condition),
            )
        } else {
            (
                "SET available = if_not_exists(available, :initial) + :q",
                None,
            )
        };
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(format!("stock#{}", line.sku)))
            .update_expression(expression)
            .set_condition_expression(condition.map(str::to_owned))
            .expression_attribute_values(":q", n(line.quantity))
            .expression_attribute_values(":initial", n(initial))
            .build()
            .map_err(failed)?;
        Ok(Also {
            item: TransactWriteItem::builder().update(update).build(),
            refusal: format!("out of stock: {}", line.sku),
        })
    }

    /// The condition that refunds to `customer` of `tenant` are not on hold: the payments
    /// team puts the item [`refund_hold_key`] (a fraud review, a closed card) and deletes
    /// it when the hold is lifted.
    fn no_refund_hold(
        &self,
        tenant: Option<&str>,
        customer: &str,
    ) -> std::result::Result<Also, StepError> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", s(refund_hold_key(tenant, customer)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(failed)?;
        Ok(Also {
            item: TransactWriteItem::builder().condition_check(check).build(),
            refusal: format!("refunds to {customer} are on hold"),
        })
    }

    /// How many of `sku` are left (the initial stock before any order).
    ///
    /// # Errors
    /// A technical failure when DynamoDB fails.
    pub async fn available(&self, sku: &str) -> std::result::Result<u64, StepError> {
        let item = self.item(&format!("stock#{sku}")).await?;
        let initial = product(sku).map_or(0, |p| p.initial_stock);
        Ok(match item.as_ref().and_then(|i| i.get("available")) {
            Some(AttributeValue::N(text)) => text.parse().map_err(failed)?,
            _ => initial,
        })
    }
}

/// The key of the item that puts refunds to `customer` of `tenant` on hold, in the shop's
/// table: `refund-hold#<tenant>#<customer>`.
pub fn refund_hold_key(tenant: Option<&str>, customer: &str) -> String {
    format!("refund-hold#{}#{customer}", tenant.unwrap_or(""))
}

/// What the saga hands every command: the order as placed.
#[derive(Debug, Deserialize)]
struct OrderData {
    order: String,
    #[serde(default)]
    customer: String,
    items: Vec<Line>,
    amount: u64,
    ship_to: String,
}

/// The work of participant `name` on one command, on `ledger`.
///
/// # Errors
/// [`StepError::Rejected`] for a refusal (out of stock, card declined, undeliverable, an
/// action after its compensation); [`StepError::Failed`] when DynamoDB fails.
pub async fn work(
    ledger: &Ledger,
    name: &str,
    command: &Command,
) -> std::result::Result<Value, StepError> {
    let data: OrderData = serde_json::from_value(command.data.clone())
        .map_err(|e| StepError::Rejected(format!("not an order: {e}")))?;
    let order = &data.order;
    let lines = merged(&data.items);
    let stock = |take| {
        lines
            .iter()
            .map(|line| ledger.stock(line, take))
            .collect::<std::result::Result<Vec<_>, _>>()
    };
    let done = match (name, command.step_name.as_str(), command.phase) {
        ("inventory", "reserve", Phase::Action) => {
            if let Some(line) = lines.iter().find(|l| product(&l.sku).is_none()) {
                return Err(StepError::Rejected(format!("unknown product {}", line.sku)));
            }
            let attributes = HashMap::from([(
                "lines".to_owned(),
                s(serde_json::to_string(&lines).map_err(failed)?),
            )]);
            ledger
                .apply(&format!("reservation#{order}"), attributes, stock(true)?)
                .await?;
            json!({ "reserved": lines })
        }
        ("inventory", "reserve", Phase::Compensation) => {
            ledger
                .undo(&format!("reservation#{order}"), stock(false)?)
                .await?;
            json!({ "released": lines })
        }
        ("payments", "charge", Phase::Action) => {
            if data.amount > CARD_LIMIT {
                return Err(StepError::Rejected(format!(
                    "card declined: {} is above the limit of {CARD_LIMIT}",
                    data.amount
                )));
            }
            let attributes = HashMap::from([("amount".to_owned(), n(data.amount))]);
            ledger
                .apply(&format!("payment#{order}"), attributes, Vec::new())
                .await?;
            json!({ "charged": data.amount })
        }
        ("payments", "charge", Phase::Compensation) => {
            // A charge that was made is refunded unless refunds to the customer are on
            // hold: refused then, with nothing written, the charge stays. One never made is
            // cancelled whatever the hold (rule 4: its late arrival is refused).
            // The hold is checked in the refund's own transaction, so a charge landing
            // meanwhile is not refunded past it.
            let hold = ledger.no_refund_hold(command.tenant.as_deref(), &data.customer)?;
            ledger.undo(&format!("payment#{order}"), vec![hold]).await?;
            json!({ "refunded": data.amount })
        }
        ("shipping", "ship", Phase::Action) => {
            if data.ship_to == UNDELIVERABLE {
                return Err(StepError::Rejected(format!(
                    "no carrier delivers to {}",
                    data.ship_to
                )));
            }
            let attributes = HashMap::from([("ship_to".to_owned(), s(data.ship_to.clone()))]);
            ledger
                .apply(&format!("shipment#{order}"), attributes, Vec::new())
                .await?;
            json!({ "shipment": format!("parcel-{order}") })
        }
        ("shipping", "ship", Phase::Compensation) => {
            ledger
                .undo(&format!("shipment#{order}"), Vec::new())
                .await?;
            json!({ "cancelled": format!("parcel-{order}") })
        }
        (name, step, phase) => {
            return Err(StepError::Rejected(format!(
                "{name} does not take {step} ({phase:?})"
            )));
        }
    };
    tracing::info!(target: "lift::shop", participant = name, step = %command.step_name, phase = ?command.phase, order, "done");
    Ok(done)
}

/// A quote request (`POST /quote` on inventory), validated as an order's lines are: 1 to
/// 10 lines of 1 to 100 of a product, so no price overflows.
#[derive(Debug, Serialize, Deserialize, garde::Validate)]
pub struct QuoteRequest {
    /// What is asked for.
    #[garde(length(min = 1, max = crate::MAX_LINES), dive)]
    pub items: Vec<Line>,
}

/// A quote: the price of every line and the total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// One line per product, with its unit price.
    pub lines: Vec<QuotedLine>,
    /// What the order costs.
    pub amount: u64,
}

/// One line of a [`Quote`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotedLine {
    /// The product.
    pub sku: String,
    /// How many.
    pub quantity: u64,
    /// The unit price.
    pub price: u64,
    /// How many are left now (an order may still find fewer).
    pub available: u64,
}

/// Prices `request` from the catalog and the stock in `ledger`.
///
/// # Errors
/// A 422 naming each unknown product; a 500 when DynamoDB fails.
pub async fn quote(ledger: &Ledger, request: &QuoteRequest) -> Result<Quote> {
    let mut lines = Vec::new();
    let mut unknown = Vec::new();
    for (i, line) in request.items.iter().enumerate() {
        if product(&line.sku).is_none() {
            unknown.push(lift_core::FieldError {
                pointer: format!("/items/{i}/sku"),
                message: format!("unknown product {}", line.sku),
            });
        }
    }
    if !unknown.is_empty() {
        return Err(Error::Validation(unknown));
    }
    for line in merged(&request.items) {
        let price = product(&line.sku).map_or(0, |p| p.price);
        let available = ledger
            .available(&line.sku)
            .await
            .map_err(|e| Error::internal(e.to_string()))?;
        lines.push(QuotedLine {
            sku: line.sku,
            quantity: line.quantity,
            price,
            available,
        });
    }
    let amount = lines.iter().map(|l| l.price * l.quantity).sum();
    Ok(Quote { lines, amount })
}

/// Whether the message in `ctx` is an SQS message on its first delivery.
fn first_delivery(ctx: &Context) -> bool {
    ctx.sqs_message()
        .and_then(|m| m.attributes.get("ApproximateReceiveCount"))
        .is_some_and(|count| count == "1")
}

/// A participant's function, named `name` (`inventory`, `payments` or `shipping`):
/// commands from its queue, run once in effect by [`work`] and answered through
/// `participant`; inventory also answers `POST /quote`. With `crash_sku`, payments dies
/// in the middle of the first delivery of a charge for an order of that product: after
/// the charge is written, before the reply.
pub fn app(participant: Participant, ledger: Ledger, name: &str, crash_sku: Option<String>) -> App {
    let quotes = name == "inventory";
    let name = name.to_owned();
    let on_quote = ledger.clone();
    let app = App::new().sqs(move |ctx: Context| {
        let (participant, ledger, name) = (participant.clone(), ledger.clone(), name.clone());
        let crash = crash_sku.clone().filter(|_| first_delivery(&ctx));
        async move {
            participant
                .handle(&ctx, |command| async move {
                    let done = work(&ledger, &name, &command).await?;
                    let ordered = |sku: &str| {
                        command.data["items"]
                            .as_array()
                            .is_some_and(|items| items.iter().any(|l| l["sku"] == sku))
                    };
                    if let Some(sku) = crash.filter(|sku| ordered(sku))
                        && command.phase == Phase::Action
                    {
                        tracing::error!(target: "lift::shop", participant = name, sku, "dying in the middle of the step, as configured (SHOP_CRASH_SKU)");
                        std::process::exit(70);
                    }
                    Ok(done)
                })
                .await
        }
    });
    if !quotes {
        return app;
    }
    app.post("/quote", move |_ctx: Context, request: QuoteRequest| {
        let ledger = on_quote.clone();
        async move { quote(&ledger, &request).await.map(Json) }
    })
}
