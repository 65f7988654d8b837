//! The shop's `orders` function (`bootstrap`): `POST /orders` and `GET /orders/{id}`.
//!
//! `SHOP_AUTH_SECRET` is the HS256 secret of the customers' tokens; `BUS_NAME`,
//! `SAGA_TABLE`, `IDEMPOTENCY_TABLE` and `LIFT_REGISTRY_TABLE` name the bus, the sagas,
//! the idempotency records and the service registry. Read once, at cold start; the clients
//! make no network call before the first request.

use std::sync::Arc;
use std::time::Duration;

use lift_events::publish::{EventBridgePublisher, PublishConfig};
use lift_events::store::DynamoStore;
use lift_services::client::ServiceClient;
use lift_services::discovery::Discovery;
use lift_services::health::HealthSignals;
use lift_services::transport::LambdaTransport;
use lift_services::{DynamoRegistry, RegisterExt, Registration};

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = lift_core::aws::sdk_config().await;
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
        bus: EventBridgePublisher::new(
            aws_sdk_eventbridge::Client::new(config),
            &env("BUS_NAME")?,
            PublishConfig::default(),
        ),
        sagas: DynamoStore::new(dynamodb.clone(), &env("SAGA_TABLE")?),
        idempotency: shop::orders::idempotency(dynamodb, &env("IDEMPOTENCY_TABLE")?)?,
        jwt: shop::orders::jwt(env("SHOP_AUTH_SECRET")?.as_bytes())?,
    };
    shop::orders::app(deps)?
        .register_with(Registration::new(shop::service_config("orders"))?.signals(signals))
        .run()
        .await?;
    Ok(())
}
