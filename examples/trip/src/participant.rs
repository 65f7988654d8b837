//! The `trip-participant` Lambda function (`bootstrap`), deployed twice by `template.yaml`:
//! as inventory and as payments.
//!
//! `PARTICIPANT` is its name (`inventory` or `payments`), `IDEMPOTENCY_TABLE` where it
//! records command ids, `ORCHESTRATOR_FUNCTION` the orchestrator it replies to (invoking
//! it asynchronously) and `BUS_NAME` the bus (for business events); read once, at cold
//! start.

use lift_events::consume::Participant;
use lift_events::publish::{EventBridgePublisher, LambdaInvoker, PublishConfig};

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = lift_core::aws::sdk_config().await;
    let name = env("PARTICIPANT")?;
    let bus = EventBridgePublisher::new(
        aws_sdk_eventbridge::Client::new(config),
        &env("BUS_NAME")?,
        PublishConfig::default(),
    );
    let participant = Participant::new(
        &name,
        aws_sdk_dynamodb::Client::new(config),
        &env("IDEMPOTENCY_TABLE")?,
        bus,
    )?
    // Replies invoke the orchestrator: no bus entry and no SQS request per reply.
    .reply_by_invoke(LambdaInvoker::new(
        aws_sdk_lambda::Client::new(config),
        &env("ORCHESTRATOR_FUNCTION")?,
        PublishConfig::default(),
    ));
    trip::participant_app(participant, &name).run().await?;
    Ok(())
}
