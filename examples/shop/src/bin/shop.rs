//! The shop's one binary (`bootstrap`), deployed five times by `template.yaml`: `SHOP_ROLE`
//! says which function this is — `orders`, `orchestrator`, or one of the participants
//! `inventory`, `payments` and `shipping`.
//!
//! One binary rather than one per role: the five share every dependency, and each extra
//! binary is another whole-program (LTO) link of the same code in a release build — about
//! two and a half minutes each on two cores in `sam build`. The role costs one string match
//! at cold start.
//!
//! What each role reads from its environment, once, at cold start (the clients make no
//! network call before the first event):
//!
//! - all: `LIFT_REGISTRY_TABLE` (the service registry), `BUS_NAME` (the shop's bus);
//! - orders: `SHOP_AUTH_SECRET` (the HS256 secret of the customers' tokens), `SAGA_TABLE`,
//!   `IDEMPOTENCY_TABLE`;
//! - orchestrator: `SAGA_TABLE`, `ORCHESTRATOR_QUEUE_URL` (its own queue, for timers) and
//!   `INVENTORY_QUEUE_URL`, `PAYMENTS_QUEUE_URL`, `SHIPPING_QUEUE_URL` (the commands);
//! - participants: `SHOP_TABLE` (their effects), `IDEMPOTENCY_TABLE` (command ids),
//!   `ORCHESTRATOR_QUEUE_URL` (the replies) and, on the emulator only, `SHOP_CRASH_SKU` (the
//!   product whose first charge the payments process dies in the middle of).

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use lift_core::App;
use lift_events::consume::Participant;
use lift_events::publish::{AwsTransport, EventBridgePublisher, PublishConfig, SqsPublisher};
use lift_events::store::DynamoStore;
use lift_services::client::ServiceClient;
use lift_services::discovery::Discovery;
use lift_services::health::HealthSignals;
use lift_services::transport::LambdaTransport;
use lift_services::{DynamoRegistry, RegisterExt, Registration};
use shop::participants::Ledger;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let config = lift_core::aws::sdk_config().await;
    let role = env("SHOP_ROLE")?;
    let app = match role.as_str() {
        "orders" => orders(config)?,
        "orchestrator" => orchestrator(config)?,
        "inventory" | "payments" | "shipping" => participant(config, &role)?,
        other => return Err(format!(
            "SHOP_ROLE is {other:?}: expected orders, orchestrator, inventory, payments or shipping"
        )
        .into()),
    };
    app.run().await?;
    Ok(())
}

fn bus(config: &SdkConfig) -> Result<EventBridgePublisher, BoxError> {
    Ok(EventBridgePublisher::new(
        aws_sdk_eventbridge::Client::new(config),
        &env("BUS_NAME")?,
        PublishConfig::default(),
    ))
}

fn queue(config: &SdkConfig, variable: &str) -> Result<SqsPublisher, BoxError> {
    Ok(SqsPublisher::new(
        aws_sdk_sqs::Client::new(config),
        &env(variable)?,
        PublishConfig::default(),
    ))
}

/// `POST /orders` and `GET /orders/{id}`.
fn orders(config: &SdkConfig) -> Result<App, BoxError> {
    let dynamodb = aws_sdk_dynamodb::Client::new(config);
    let registry = DynamoRegistry::new(dynamodb.clone(), &env("LIFT_REGISTRY_TABLE")?);
    // The client counts its calls and failures here; the registration reports them with
    // each lease renewal, which is how the service map learns that orders calls inventory.
    let signals = HealthSignals::new();
    let services = ServiceClient::builder(
        Discovery::new(Arc::new(registry)),
        Arc::new(LambdaTransport::new(aws_sdk_lambda::Client::new(config))),
    )
    .caller("orders")
    .signals(signals.clone())
    .timeout(Duration::from_secs(5))
    .build()?;
    let deps = shop::orders::Deps {
        services,
        bus: bus(config)?,
        sagas: shop::orchestrator(DynamoStore::new(dynamodb.clone(), &env("SAGA_TABLE")?))?,
        idempotency: shop::orders::idempotency(dynamodb, &env("IDEMPOTENCY_TABLE")?)?,
        jwt: shop::orders::jwt(env("SHOP_AUTH_SECRET")?.as_bytes())?,
    };
    Ok(shop::orders::app(deps)?
        .register_with(Registration::new(shop::service_config("orders"))?.signals(signals)))
}

/// `OrderPlaced` from the bus, replies and timers from its queue, the saga table's stream.
fn orchestrator(config: &SdkConfig) -> Result<App, BoxError> {
    // Commands go straight to the participants' queues: no bus entry per command.
    let transport = AwsTransport::new(bus(config)?, queue(config, "ORCHESTRATOR_QUEUE_URL")?)
        .with_participant_queue("inventory", queue(config, "INVENTORY_QUEUE_URL")?)
        .with_participant_queue("payments", queue(config, "PAYMENTS_QUEUE_URL")?)
        .with_participant_queue("shipping", queue(config, "SHIPPING_QUEUE_URL")?);
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(config), &env("SAGA_TABLE")?);
    Ok(
        shop::orchestrator_app(shop::orchestrator(store)?, transport)
            .try_register(shop::service_config("orchestrator"))?,
    )
}

/// Inventory, payments or shipping: commands from its queue, replies to the orchestrator's.
fn participant(config: &SdkConfig, name: &str) -> Result<App, BoxError> {
    let dynamodb = aws_sdk_dynamodb::Client::new(config);
    let participant = Participant::new(
        name,
        dynamodb.clone(),
        &env("IDEMPOTENCY_TABLE")?,
        bus(config)?,
    )?
    // Replies go straight to the orchestrator's queue: no bus entry per reply.
    .reply_to_queue(queue(config, "ORCHESTRATOR_QUEUE_URL")?);
    let ledger = Ledger::new(dynamodb, &env("SHOP_TABLE")?);
    let crash_sku = env("SHOP_CRASH_SKU").ok().filter(|sku| !sku.is_empty());
    Ok(
        shop::participants::app(participant, ledger, name, crash_sku)
            .try_register(shop::service_config(name))?,
    )
}
