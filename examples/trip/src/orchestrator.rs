//! The `trip-orchestrator` Lambda function (`bootstrap`) of `template.yaml`: trip requests
//! from the bus, replies and timers from its queue, the saga table's stream.
//!
//! `SAGA_TABLE`, `BUS_NAME`, `ORCHESTRATOR_QUEUE_URL`, `INVENTORY_QUEUE_URL` and
//! `PAYMENTS_QUEUE_URL` name its table, the bus it publishes the sagas' ends on, its own
//! queue (for timers) and the participants' queues (for their commands); they are read
//! once, at cold start.

use lift_events::publish::{AwsTransport, EventBridgePublisher, PublishConfig, SqsPublisher};
use lift_events::store::DynamoStore;

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = lift_core::aws::sdk_config().await;
    let bus = EventBridgePublisher::new(
        aws_sdk_eventbridge::Client::new(config),
        &env("BUS_NAME")?,
        PublishConfig::default(),
    );
    let timers = SqsPublisher::new(
        aws_sdk_sqs::Client::new(config),
        &env("ORCHESTRATOR_QUEUE_URL")?,
        PublishConfig::default(),
    );
    let queue = |url: String| {
        SqsPublisher::new(
            aws_sdk_sqs::Client::new(config),
            &url,
            PublishConfig::default(),
        )
    };
    // Commands go straight to the participants' queues: no bus entry per command.
    let transport = AwsTransport::new(bus, timers)
        .with_participant_queue("inventory", queue(env("INVENTORY_QUEUE_URL")?))
        .with_participant_queue("payments", queue(env("PAYMENTS_QUEUE_URL")?));
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(config), &env("SAGA_TABLE")?);
    let orchestrator = trip::orchestrator(store)?;
    trip::orchestrator_app(orchestrator, transport)
        .run()
        .await?;
    Ok(())
}
