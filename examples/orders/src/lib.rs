//! `orders`: an order API on DynamoDB, with Lift's request-path features working together.
//!
//! - `POST /orders` (`{"customer": "c-1", "items": [{"sku": "A-1", "quantity": 2}]}`) places
//!   an order. The body is typed and validated (a `422` lists every failing field by its
//!   JSON pointer). With an `Idempotency-Key` header the call is idempotent: a repeat gets the
//!   first answer without placing another order, a repeat while the first runs waits for its
//!   answer, and the same key with another body is a `422 idempotency_key_reused`. The order
//!   is written with a conditional put under an id the customer's key names ([`order_id`]),
//!   so a run that stored the order but not its answer (a lost answer, a run cut short) is
//!   answered with that order when the request comes again, never a second one; the
//!   invocation's EMF document counts `OrdersPlaced` and `ItemsOrdered`.
//! - `GET /orders/{id}` reads an order, cached for 30 s in memory and in DynamoDB per
//!   customer ([`PerCustomer`]: the key holds the caller the authorizer verified, so one
//!   customer's cached order is never another's answer; the `x-cache` header says `hit` or
//!   `miss`); an unknown id is a `404`, never cached.
//!
//! Orders are mapped to DynamoDB items with `serde_dynamo` (through `lift_middleware::dynamo`).
//!
//! In `template.yaml` the function also sits behind an HTTP API whose routes are guarded by
//! a Lambda authorizer, the `orders-authorizer` binary ([`authorizer_app`]): `JwtAuthLayer`
//! verifies the caller's HS256 bearer token and the handler allows the caller on the whole
//! stage, passing its subject on as `customer`, which `POST /orders` then takes over the
//! body's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use aws_sdk_dynamodb::Client;
use lift_core::authorizer::Authorization;
use lift_core::http::StatusCode;
use lift_core::metrics::{MetricsConfig, Unit};
use lift_core::{App, Context, Created, Error, Json, Result, with_layer};
use lift_middleware::auth::{JwtAuthLayer, JwtConfig};
use lift_middleware::cache::{Cache, CacheLayer, CachePolicy, CacheRule, HttpGetPolicy};
use lift_middleware::dynamo::{self, DynamoError};
use lift_middleware::idempotency::{IdempotencyConfig, IdempotencyLayer};
use serde::{Deserialize, Serialize};

/// How long a read order is served from the cache.
pub const CACHE_TTL: Duration = Duration::from_secs(30);

/// The body of `POST /orders`.
#[derive(Debug, Serialize, Deserialize, garde::Validate)]
pub struct NewOrder {
    /// Who orders.
    #[garde(length(min = 1, max = 64))]
    pub customer: String,
    /// What they order: 1 to 50 lines.
    #[garde(length(min = 1, max = 50), dive)]
    pub items: Vec<Line>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, garde::Validate)]
pub struct Line {
    /// The product.
    #[garde(length(min = 1, max = 32))]
    pub sku: String,
    /// How many, 1 to 1000.
    #[garde(range(min = 1, max = 1000))]
    pub quantity: u32,
}

/// A placed order, as stored and as answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// The order's id (`o-` and 16 hex digits).
    pub id: String,
    /// Who ordered.
    pub customer: String,
    /// What they ordered.
    pub items: Vec<Line>,
    /// When it was placed, in seconds since the epoch.
    pub placed_at: u64,
}

/// The orders table: partition key `id`, a string.
#[derive(Debug, Clone)]
pub struct Orders {
    client: Client,
    table: String,
}

impl Orders {
    /// Orders in `table`, through `client`.
    pub fn new(client: Client, table: &str) -> Self {
        Orders {
            client,
            table: table.to_owned(),
        }
    }

    /// Stores a new order; an order with the same id is never overwritten.
    ///
    /// # Errors
    /// `409 order_exists` when the id is taken, a 500 when DynamoDB fails.
    pub async fn insert(&self, order: &Order) -> Result<()> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(dynamo::to_item(order)?))
            .condition_expression("attribute_not_exists(id)")
            .send();
        match dynamo::send("PutItem", put).await {
            Ok(_) => Ok(()),
            Err(DynamoError::ConditionFailed { .. }) => Err(Error::new(
                StatusCode::CONFLICT,
                "order_exists",
                "an order with this id already exists",
            )),
            Err(other) => Err(other.into()),
        }
    }

    /// The order with this id, if there is one.
    ///
    /// # Errors
    /// A 500 when DynamoDB fails or the item is not an order.
    pub async fn get(&self, id: &str) -> Result<Option<Order>> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(
                "id",
                aws_sdk_dynamodb::types::AttributeValue::S(id.to_owned()),
            )
            .send();
        let output = dynamo::send("GetItem", get).await?;
        Ok(output.item.map(dynamo::from_item).transpose()?)
    }
}

/// What the App is built from: the orders table, the idempotency layer and the cache.
#[derive(Debug, Clone)]
pub struct Deps {
    /// Where orders live.
    pub orders: Orders,
    /// Makes `POST /orders` idempotent.
    pub idempotency: IdempotencyLayer,
    /// Caches `GET /orders/{id}`.
    pub cache: Cache,
}

impl Deps {
    /// The usual dependencies on three tables: orders, idempotency records (partition key
    /// `id`) and cache entries (partition key `pk`, sort key `sk`).
    ///
    /// # Errors
    /// A configuration error of the idempotency layer or the cache.
    pub fn new(
        client: Client,
        orders_table: &str,
        idempotency_table: &str,
        cache_table: &str,
    ) -> std::result::Result<Self, lift_middleware::ConfigError> {
        // A key is the customer's own: two customers who happen to send the same
        // Idempotency-Key each get their order placed, and neither sees the other's.
        let idempotency = IdempotencyConfig::builder(idempotency_table)
            .key_header("Idempotency-Key")
            .scope_fn(customer_of)
            .validate_payload(true)
            .expires_after(Duration::from_secs(24 * 3600))
            .wait_for_in_progress(Duration::from_secs(3))
            .build()?;
        let cache = Cache::builder("orders")
            .memory(1_000)
            .dynamodb(client.clone(), cache_table)
            .build()?;
        Ok(Deps {
            orders: Orders::new(client.clone(), orders_table),
            idempotency: IdempotencyLayer::new(client, idempotency),
            cache,
        })
    }
}

/// The customer a request is for: the one the authorizer verified behind the APIs, else
/// the one the body names (through the Function URL, which `template.yaml` creates on a
/// local emulator only: a function reached without an authorizer must not trust the body
/// on AWS).
fn customer_of(ctx: &Context) -> Option<String> {
    ctx.authorizer_value("customer").or_else(|| {
        let body: serde_json::Value = serde_json::from_slice(ctx.body()).ok()?;
        body.get("customer")?.as_str().map(str::to_owned)
    })
}

/// The id of the order a request places: under an `Idempotency-Key`, the customer's key
/// names it, so every run of one request writes the same order (the conditional put keeps
/// the first); without one, a new id.
pub fn order_id(customer: &str, key: Option<&str>) -> String {
    match key.filter(|key| !key.is_empty()) {
        Some(key) => {
            let mut hash = Sha256::new();
            // Length-prefixed parts: ("ab", "c") and ("a", "bc") must not meet.
            for part in [customer, key] {
                hash.update((part.len() as u64).to_be_bytes());
                hash.update(part.as_bytes());
            }
            let hex: String = hash.finalize()[..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("o-{hex}")
        }
        None => format!("o-{:024x}", fastrand::u128(..) >> 32),
    }
}

async fn place(orders: Orders, ctx: Context, input: NewOrder) -> Result<Created<Order>> {
    // Behind the APIs, the customer is the one the authorizer verified, whatever the body
    // says; through the Function URL, the body names it.
    let customer = ctx.authorizer_value("customer").unwrap_or(input.customer);
    // As the idempotency layer reads it: the bytes sent, visible ASCII or not.
    let key = ctx
        .http()
        .and_then(|http| http.headers().get("idempotency-key"))
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let key = key.as_deref();
    let order = Order {
        id: order_id(&customer, key),
        customer,
        items: input.items,
        placed_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    match orders.insert(&order).await {
        Ok(()) => {}
        // An earlier run of this request stored the order and never stored its answer (the
        // put's answer was lost, or the run was cut short): that order is the answer.
        Err(error) if key.is_some() && error.code() == "order_exists" => {
            return match orders.get(&order.id).await? {
                Some(stored)
                    if stored.customer == order.customer && stored.items == order.items =>
                {
                    Ok(Created(stored))
                }
                _ => Err(error),
            };
        }
        Err(error) => return Err(error),
    }
    let quantity: u32 = order.items.iter().map(|line| line.quantity).sum();
    let metrics = ctx.metrics();
    metrics
        .count("OrdersPlaced", 1.0)
        .map_err(Error::internal)?;
    metrics
        .value("ItemsOrdered", f64::from(quantity), Unit::Count)
        .map_err(Error::internal)?;
    metrics
        .property("orderId", order.id.clone())
        .map_err(Error::internal)?;
    tracing::info!(order = %order.id, customer = %order.customer, "order placed");
    Ok(Created(order))
}

async fn fetch(orders: Orders, ctx: Context) -> Result<Json<Order>> {
    let id = ctx.path_param("id")?;
    // Behind the APIs, a customer sees their own orders only: another's is not found, as
    // if it did not exist (no hint that the id is taken). No order id is over 64 bytes; the
    // table would refuse such a key (over 2048 bytes) as a 500.
    let caller = ctx.authorizer_value("customer");
    let found = if id.len() > 64 {
        None
    } else {
        orders.get(id).await?
    };
    match found {
        Some(order) if caller.as_ref().is_none_or(|c| *c == order.customer) => Ok(Json(order)),
        _ => Err(Error::new(
            StatusCode::NOT_FOUND,
            "order_not_found",
            "no order has this id",
        )),
    }
}

/// The orders App.
pub fn app(deps: Deps) -> App {
    let Deps {
        orders,
        idempotency,
        cache,
    } = deps;
    let on_place = orders.clone();
    let on_fetch = orders;
    App::new()
        .post(
            "/orders",
            with_layer(
                move |ctx, input| place(on_place.clone(), ctx, input),
                idempotency,
            ),
        )
        .get(
            "/orders/{id}",
            with_layer(
                move |ctx| fetch(on_fetch.clone(), ctx),
                CacheLayer::new(cache, PerCustomer(HttpGetPolicy::new(CACHE_TTL))),
            ),
        )
        .metrics(MetricsConfig::new("LiftExamples").service("orders"))
}

/// The usual HTTP cache policy, with the caller the authorizer verified (`customer`) in
/// the key: each customer's reads are cached apart, so a cached order is only ever its own
/// customer's answer (the ownership check in the handler is not skipped for another), and
/// an answer to a caller with credentials may be kept, being that caller's alone. A read
/// without an authorizer (a direct invocation, the local Function URL) is cached apart too.
#[derive(Debug, Clone)]
pub struct PerCustomer(pub HttpGetPolicy);

impl CachePolicy for PerCustomer {
    fn rule(&self, ctx: &Context) -> Option<CacheRule> {
        let mut rule = self.0.rule(ctx)?;
        let customer = ctx.authorizer_value("customer").unwrap_or_default();
        // Length-prefixed: no customer name can spell another's key.
        rule.key = format!("{}\u{1f}customer={}:{customer}", rule.key, customer.len());
        rule.shared_only = false;
        Some(rule)
    }

    fn keep(&self, rule: &CacheRule, response: &lift_core::Response) -> Option<Duration> {
        self.0.keep(rule, response)
    }
}

/// The issuer the authorizer accepts in tokens (`iss`).
pub const TOKEN_ISSUER: &str = "lift-orders";

/// The Lambda authorizer of the orders HTTP API: bearer JWTs signed with HS256 and
/// `secret`, issued by [`TOKEN_ISSUER`], verified by `JwtAuthLayer`; a valid caller is
/// allowed on every route of the stage (API Gateway may cache the decision), any other is
/// denied (the HTTP API answers 403; without a token at all, API Gateway answers 401
/// before asking).
///
/// # Errors
/// A configuration error for an unusable secret.
pub fn authorizer_app(secret: &[u8]) -> std::result::Result<App, lift_middleware::ConfigError> {
    let jwt = JwtConfig::builder()
        .hs256_secret(None, secret)
        .algorithms(&[jsonwebtoken::Algorithm::HS256])
        .issuers(&[TOKEN_ISSUER])
        .build()?;
    Ok(App::new()
        .authorizer(authorize)
        .layer(JwtAuthLayer::new(jwt)))
}

async fn authorize(ctx: Context) -> Result<Authorization> {
    let subject = ctx
        .principal()
        .and_then(|principal| principal.subject.clone())
        .ok_or_else(|| {
            Error::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the token names no subject",
            )
        })?;
    Ok(Authorization::allow(subject.clone())
        .context("customer", subject)
        .for_all_routes())
}
