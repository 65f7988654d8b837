//! The shop's orchestrator (`bootstrap`): [`shop::OrderPlaced`] events from the bus,
//! replies and timers from its queue, the saga table's stream.
//!
//! `SAGA_TABLE`, `BUS_NAME`, `ORCHESTRATOR_QUEUE_URL`, `INVENTORY_QUEUE_URL`,
//! `PAYMENTS_QUEUE_URL`, `SHIPPING_QUEUE_URL` and `LIFT_REGISTRY_TABLE` name its table, the
//! bus it publishes the sagas' ends on, its own queue (for timers), the participants'
//! queues (for their commands) and the service registry; read once, at cold start.

use lift_events::publish::{AwsTransport, EventBridgePublisher, PublishConfig, SqsPublisher};
use lift_events::store::DynamoStore;
use lift_services::RegisterExt;

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = lift_core::aws::sdk_config().await;
    let queue = |url: String| {
        SqsPublisher::new(
            aws_sdk_sqs::Client::new(config),
            &url,
            PublishConfig::default(),
        )
    };
    let bus = EventBridgePublisher::new(
        aws_sdk_eventbridge::Client::new(config),
        &env("BUS_NAME")?,
        PublishConfig::default(),
    );
    // Commands go straight to the participants' queues: no bus entry per command.
    let transport = AwsTransport::new(bus, queue(env("ORCHESTRATOR_QUEUE_URL")?))
        .with_participant_queue("inventory", queue(env("INVENTORY_QUEUE_URL")?))
        .with_participant_queue("payments", queue(env("PAYMENTS_QUEUE_URL")?))
        .with_participant_queue("shipping", queue(env("SHIPPING_QUEUE_URL")?));
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(config), &env("SAGA_TABLE")?);
    shop::orchestrator_app(shop::orchestrator(store)?, transport)
        .try_register(shop::service_config("orchestrator"))?
        .run()
        .await?;
    Ok(())
}
