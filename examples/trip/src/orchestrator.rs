//! The `trip-orchestrator` Lambda function (`bootstrap`) of `template.yaml`: trip requests
//! from the bus, replies and timers from its queue, the saga table's stream.
//!
//! `SAGA_TABLE`, `BUS_NAME`, `ORCHESTRATOR_QUEUE_URL`, `INVENTORY_FUNCTION` and
//! `PAYMENTS_FUNCTION` name its table, the bus it publishes the sagas' ends on, its own
//! queue (for timers) and the participants' functions (invoked asynchronously with their
//! commands); they are read once, at cold start.

use lift_events::publish::{
    AwsTransport, EventBridgePublisher, LambdaInvoker, PublishConfig, SqsPublisher,
};
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
    let lambda = aws_sdk_lambda::Client::new(config);
    let function =
        |name: String| LambdaInvoker::new(lambda.clone(), &name, PublishConfig::default());
    // Commands invoke the participants: no bus entry and no SQS request per command.
    let transport = AwsTransport::new(bus, timers)
        .with_participant_function("inventory", function(env("INVENTORY_FUNCTION")?))
        .with_participant_function("payments", function(env("PAYMENTS_FUNCTION")?));
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(config), &env("SAGA_TABLE")?);
    let orchestrator = trip::orchestrator(store)?;
    trip::orchestrator_app(orchestrator, transport)
        .run()
        .await?;
    Ok(())
}
