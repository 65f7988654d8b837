//! The orders function: the shop's HTTP front door.
//!
//! - `POST /orders` (`{"items": [{"sku": "kettle", "quantity": 1}], "ship_to": "Lisbon"}`,
//!   a bearer JWT whose `sub` is the customer and whose `tenant` claim is the tenant)
//!   validates the body (a `422` lists every failing field by its JSON pointer), asks the
//!   `inventory` service for a quote through the service client (discovery finds its
//!   instance in the registry; a product it does not sell is a `422`, one it lacks a `409`),
//!   puts [`OrderPlaced`] on the bus and answers `202` with the order's id. With an
//!   `Idempotency-Key` header a repeat answers the first answer and places nothing; the key
//!   is the caller's own (scoped by tenant and customer), and the order's id is derived from
//!   it ([`order_id`]), so even a retry after a crash between the bus and the stored answer
//!   names the same order: once that order's saga has started, the retry answers it as
//!   placed (its amount as quoted then) and the key with other lines or another address is
//!   a `422` (`idempotency_key_reused`). A retry that comes before the saga started (the
//!   bus still delivering, well under a second) publishes again, and the saga's start,
//!   idempotent by id, keeps the first order: its answer names the right order, but its
//!   amount is the new quote's.
//! - `GET /orders/{id}` answers the order's saga — status, reason, each step and the
//!   timeline — to the customer who placed it, and `404` to anyone else (and until the
//!   orchestrator has started the saga, well under a second after the `202`).
//! - `POST /orders/{id}/cancel` cancels the order for the customer who placed it: its
//!   saga stops and undoes what it did, the step in flight included (a charge whose
//!   answer has not come is refunded), and the answer is `202` with the saga's status;
//!   sent again, the same answer. An order that completed is a `409`
//!   (`saga_not_cancellable`); one that was compensated answers `202` as it is.

use std::sync::Arc;
use std::time::Duration;

use lift_core::http::StatusCode;
use lift_core::metrics::MetricsConfig;
use lift_core::{App, Context, Error, Json, Result, with_layer};
use lift_events::Envelope;
use lift_events::publish::EventBridgePublisher;
use lift_events::saga::{Orchestrator, SagaState};
use lift_events::store::{DynamoStore, SagaStore};
use lift_middleware::auth::{JwtAuthLayer, JwtConfig};
use lift_middleware::idempotency::{IdempotencyConfig, IdempotencyLayer};
use lift_middleware::tenancy::{TenantConfig, TenantLayer, TenantSource};
use lift_services::client::{CallError, ServiceClient};
use lift_services::transport::ServiceRequest;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::participants::{Quote, QuoteRequest};
use crate::{Line, MAX_LINES, OrderPlaced, SOURCE};

/// The issuer the shop's tokens come from (`iss`).
pub const TOKEN_ISSUER: &str = "lift-shop";
/// The claim that names the caller's tenant.
pub const TENANT_CLAIM: &str = "tenant";

/// The body of `POST /orders`.
#[derive(Debug, Serialize, Deserialize, garde::Validate)]
pub struct NewOrder {
    /// What is ordered: 1 to 10 lines.
    #[garde(length(min = 1, max = MAX_LINES), dive)]
    pub items: Vec<Line>,
    /// Where it goes.
    #[garde(length(min = 1, max = 64))]
    pub ship_to: String,
}

/// The answer of `POST /orders` (`202 Accepted`): the order is on its way through the saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    /// The order's id (and its saga's).
    pub order: String,
    /// `placed`.
    pub status: String,
    /// What it costs, as quoted.
    pub amount: u64,
    /// Which instance of inventory quoted it; absent when the answer is of an order this
    /// key placed before (a retry whose first answer was lost), which nothing quoted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quoted_by: Option<String>,
}

/// The answer of `GET /orders/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderView {
    /// The order's id.
    pub order: String,
    /// The saga's status: `running`, `compensating`, `completed`, `compensated`,
    /// `needs_attention`.
    pub status: String,
    /// Why it did not complete, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Each step by name, with its state.
    pub steps: Vec<(String, Value)>,
    /// The order as placed.
    pub order_data: Value,
    /// What each step answered.
    pub outputs: Value,
    /// The saga's history, one line per transition.
    pub timeline: String,
}

/// The answer of `POST /orders/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancelled {
    /// The order's id.
    pub order: String,
    /// The saga's status: `compensating` while its steps are undone, `compensated` once
    /// they are.
    pub status: String,
}

/// What the orders App is built from.
#[derive(Debug, Clone)]
pub struct Deps {
    /// Calls other services by name (`inventory` for quotes).
    pub services: ServiceClient,
    /// Where [`OrderPlaced`] goes.
    pub bus: EventBridgePublisher,
    /// Reads the sagas and cancels them ([`crate::orchestrator`] over the saga table).
    pub sagas: Orchestrator<DynamoStore>,
    /// Makes `POST /orders` idempotent.
    pub idempotency: IdempotencyLayer,
    /// How bearer tokens are verified.
    pub jwt: JwtConfig,
}

/// The usual token settings: HS256 with `secret`, issued by [`TOKEN_ISSUER`].
///
/// # Errors
/// A configuration error for an unusable secret.
pub fn jwt(secret: &[u8]) -> std::result::Result<JwtConfig, lift_middleware::ConfigError> {
    JwtConfig::builder()
        .hs256_secret(None, secret)
        .algorithms(&[jsonwebtoken::Algorithm::HS256])
        .issuers(&[TOKEN_ISSUER])
        .build()
}

/// The usual idempotency settings on `table`: the `Idempotency-Key` header, scoped by
/// tenant and customer, the body checked against the key's first use, kept 24 hours.
///
/// # Errors
/// A configuration error for an empty table name.
pub fn idempotency(
    client: aws_sdk_dynamodb::Client,
    table: &str,
) -> std::result::Result<IdempotencyLayer, lift_middleware::ConfigError> {
    let config = IdempotencyConfig::builder(table)
        .key_header(IDEMPOTENCY_KEY)
        .scope_by_principal(true)
        .validate_payload(true)
        .expires_after(Duration::from_secs(24 * 3600))
        .wait_for_in_progress(Duration::from_secs(3))
        .build()?;
    Ok(IdempotencyLayer::new(client, config))
}

/// The header that makes a `POST /orders` idempotent.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// Longer than any id [`order_id`] makes (26 bytes): looked up, such an id is not found.
const MAX_ORDER_ID: usize = 64;

/// The id of a new order: derived from the tenant, the customer and the request's
/// idempotency key when it has one, random otherwise.
///
/// The idempotency layer answers a repeat with the stored first answer. What it cannot
/// cover is a first attempt that put the event on the bus and then died before its answer
/// was stored: the key's lock expires and the client's retry runs the handler again. With
/// the id derived from the key, that retry publishes an `OrderPlaced` for the *same* order,
/// and the saga's start, idempotent by id, starts nothing new. Without a key every request
/// is a new order, by design.
pub fn order_id(tenant: Option<&str>, customer: &str, key: Option<&str>) -> String {
    // An empty header is no key, as the idempotency layer sees it: each such request is
    // a new order, so it must not share an id with the others.
    match key.filter(|key| !key.is_empty()) {
        Some(key) => {
            let mut hash = Sha256::new();
            // Length-prefixed parts: ("ab", "c") and ("a", "bc") must not meet.
            for part in [tenant.unwrap_or(""), customer, key] {
                hash.update((part.len() as u64).to_be_bytes());
                hash.update(part.as_bytes());
            }
            let digest = hash.finalize();
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("o-{hex}")
        }
        None => format!("o-{:024x}", fastrand::u128(..) >> 32),
    }
}

fn customer(ctx: &Context) -> Result<String> {
    ctx.principal()
        .and_then(|p| p.subject.clone())
        .ok_or_else(|| {
            Error::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the token names no subject",
            )
        })
}

/// The order `order` if this key placed it before: the same lines and address answer it
/// again (its amount as quoted then), anything else is the key reused for another order.
///
/// The idempotency layer answers a repeat from its stored answer; this covers a repeat
/// that found no stored answer (the first attempt died after the bus took the order), where
/// running the handler again would quote afresh and answer an amount or lines the saga,
/// started by the first attempt's event, does not run.
async fn placed_before(
    deps: &Deps,
    ctx: &Context,
    order: &str,
    customer: &str,
    items: &[Line],
    ship_to: &str,
) -> Result<Option<Placed>> {
    let Some(state) = deps
        .sagas
        .store()
        .load(order)
        .await
        .map_err(Error::internal)?
    else {
        return Ok(None);
    };
    let before: OrderPlaced =
        serde_json::from_value(state.data().clone()).map_err(Error::internal)?;
    if state.name() != crate::SAGA
        || state.tenant() != ctx.tenant()
        || before.customer != customer
        || before.items != items
        || before.ship_to != ship_to
    {
        return Err(Error::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this idempotency key already placed an order with other lines or another address; use a new key for a new order",
        ));
    }
    Ok(Some(Placed {
        order: state.id().to_owned(),
        status: "placed".to_owned(),
        amount: before.amount,
        quoted_by: None,
    }))
}

async fn place(
    deps: Arc<Deps>,
    ctx: Context,
    input: NewOrder,
) -> Result<(StatusCode, Json<Placed>)> {
    let customer = customer(&ctx)?;
    // As the idempotency layer reads it: the bytes sent, visible ASCII or not.
    let key = ctx
        .http()
        .and_then(|http| http.headers().get(IDEMPOTENCY_KEY))
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .filter(|key| !key.is_empty());
    let key = key.as_deref();
    let order = order_id(ctx.tenant(), &customer, key);
    let items = crate::merged(&input.items);
    if key.is_some()
        && let Some(placed) =
            placed_before(&deps, &ctx, &order, &customer, &items, &input.ship_to).await?
    {
        tracing::info!(target: "lift::shop", order = %placed.order, "order placed before under this key");
        return Ok((StatusCode::ACCEPTED, Json(placed)));
    }
    // A quote reads stock and prices and changes nothing: a POST that may go to a second
    // instance when the first fails after the request reached it.
    let request = ServiceRequest::from_context(&ctx, http::Method::POST, "/quote")
        .idempotent(true)
        .json(&QuoteRequest {
            items: input.items.clone(),
        })
        .map_err(Error::internal)?;
    let reply = match deps.services.call("inventory", request).await {
        Ok(reply) => reply,
        Err(CallError::Status {
            status: 422, body, ..
        }) => {
            return Err(Error::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "quote_refused",
                format!(
                    "inventory refused the order: {}",
                    String::from_utf8_lossy(&body)
                ),
            ));
        }
        Err(other) => {
            tracing::warn!(target: "lift::shop", error = %other, step = other.step(), "no quote");
            return Err(Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "inventory_unavailable",
                format!("no quote from inventory ({}): {other}", other.step()),
            ));
        }
    };
    let quote: Quote = reply.json().map_err(Error::internal)?;
    if let Some(short) = quote.lines.iter().find(|l| l.available < l.quantity) {
        return Err(Error::new(
            StatusCode::CONFLICT,
            "out_of_stock",
            format!("only {} of {} left", short.available, short.sku),
        ));
    }
    let placed = OrderPlaced {
        order,
        customer,
        items,
        amount: quote.amount,
        ship_to: input.ship_to,
    };
    let event = Envelope::new(SOURCE, placed.clone())
        .in_context(&ctx)
        .into_untyped()
        .map_err(Error::internal)?;
    deps.bus.publish(&[event]).await.map_err(|e| {
        // Refused or still undelivered at the deadline: the bus has not taken it. Any other
        // failure (a connection lost after the bus took the event) leaves it unknown, and a
        // retry without the same key would place a second order.
        let message = if matches!(
            e,
            lift_events::relay::TransportError::Refused(_)
                | lift_events::relay::TransportError::Undelivered { .. }
        ) {
            format!("order {} was not placed; retry", placed.order)
        } else {
            format!(
                "order {} may or may not have been placed; retry with the same Idempotency-Key",
                placed.order
            )
        };
        tracing::warn!(target: "lift::shop", order = %placed.order, error = %e, "publishing the order failed");
        Error::new(StatusCode::SERVICE_UNAVAILABLE, "bus_unavailable", message)
    })?;
    ctx.metrics()
        .count("OrdersPlaced", 1.0)
        .map_err(Error::internal)?;
    tracing::info!(target: "lift::shop", order = %placed.order, amount = placed.amount, "order placed");
    Ok((
        StatusCode::ACCEPTED,
        Json(Placed {
            order: placed.order,
            status: "placed".to_owned(),
            amount: placed.amount,
            quoted_by: Some(reply.instance.to_string()),
        }),
    ))
}

/// The saga of order `{id}`, if the caller placed it; a `404` otherwise.
async fn own_order(deps: &Deps, ctx: &Context) -> Result<SagaState> {
    let customer = customer(ctx)?;
    let id = ctx.path_param("id")?;
    let not_found = || {
        Error::new(
            StatusCode::NOT_FOUND,
            "order_not_found",
            "no order of yours has this id (a new order shows here once its saga started)",
        )
    };
    // No order id is that long; the table would refuse the key (over 2048 bytes) as a 500.
    if id.len() > MAX_ORDER_ID {
        return Err(not_found());
    }
    let state = deps
        .sagas
        .store()
        .load(id)
        .await
        .map_err(Error::internal)?
        .ok_or_else(not_found)?;
    let ours = state.name() == crate::SAGA
        && state.tenant() == ctx.tenant()
        && state.data()["customer"] == customer.as_str();
    if !ours {
        return Err(not_found());
    }
    Ok(state)
}

async fn fetch(deps: Arc<Deps>, ctx: Context) -> Result<Json<OrderView>> {
    let state = own_order(&deps, &ctx).await?;
    let steps = state
        .step_names()
        .iter()
        .cloned()
        .zip(
            state
                .steps()
                .iter()
                .map(|s| serde_json::to_value(s).unwrap_or(Value::Null)),
        )
        .collect();
    Ok(Json(OrderView {
        order: state.id().to_owned(),
        status: state.status().as_str().to_owned(),
        reason: state.reason().map(str::to_owned),
        steps,
        order_data: state.data().clone(),
        outputs: serde_json::to_value(state.outputs()).map_err(Error::internal)?,
        timeline: state.stored_timeline(),
    }))
}

async fn cancel(deps: Arc<Deps>, ctx: Context) -> Result<(StatusCode, Json<Cancelled>)> {
    let order = own_order(&deps, &ctx).await?;
    // The cancel names who asked; a saga already cancelled or compensating answers as it is.
    let state = deps
        .sagas
        .cancel(order.id(), "the customer cancelled the order")
        .await?;
    tracing::info!(target: "lift::shop", order = %state.id(), status = state.status().as_str(), "order cancelled");
    Ok((
        StatusCode::ACCEPTED,
        Json(Cancelled {
            order: state.id().to_owned(),
            status: state.status().as_str().to_owned(),
        }),
    ))
}

/// The orders App: bearer JWTs ([`jwt`]) and the tenant from their [`TENANT_CLAIM`] on
/// every route.
///
/// # Errors
/// A configuration error of the tenancy layer (there is none in this configuration).
pub fn app(deps: Deps) -> std::result::Result<App, lift_middleware::ConfigError> {
    let tenancy = TenantConfig::builder()
        .source(TenantSource::Claim(TENANT_CLAIM.to_owned()))
        .required(true)
        .build()?;
    let jwt = JwtAuthLayer::new(deps.jwt.clone());
    let idempotency = deps.idempotency.clone();
    let deps = Arc::new(deps);
    let on_fetch = deps.clone();
    let on_cancel = deps.clone();
    Ok(App::new()
        .post(
            "/orders",
            with_layer(
                move |ctx, input| place(deps.clone(), ctx, input),
                idempotency,
            ),
        )
        .get("/orders/{id}", move |ctx| fetch(on_fetch.clone(), ctx))
        .post("/orders/{id}/cancel", move |ctx| {
            cancel(on_cancel.clone(), ctx)
        })
        .layer(TenantLayer::new(tenancy))
        .layer(jwt)
        .metrics(MetricsConfig::new("LiftExamples").service("shop-orders")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_id_follows_from_tenant_customer_and_key() {
        let id = order_id(Some("acme"), "alice", Some("k1"));
        assert_eq!(id, order_id(Some("acme"), "alice", Some("k1")));
        assert_eq!(id.len(), 26, "{id}");
        assert!(id[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        let others = [
            order_id(Some("globex"), "alice", Some("k1")),
            order_id(None, "alice", Some("k1")),
            order_id(Some("acme"), "bob", Some("k1")),
            order_id(Some("acme"), "alice", Some("k2")),
            // The parts' boundaries count: ("acme", "alicek1") is not ("acme", "alice", "k1").
            order_id(Some("acme"), "alicek", Some("1")),
        ];
        for other in others {
            assert_ne!(id, other);
        }
    }

    #[test]
    fn an_order_without_a_key_is_a_new_order() {
        let a = order_id(Some("acme"), "alice", None);
        let b = order_id(Some("acme"), "alice", None);
        assert_ne!(a, b);
        assert_eq!(a.len(), 26, "{a}");
        // An empty Idempotency-Key is no key to the idempotency layer either.
        assert_ne!(
            order_id(Some("acme"), "alice", Some("")),
            order_id(Some("acme"), "alice", Some(""))
        );
    }
}
