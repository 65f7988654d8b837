//! The shop's participants (`bootstrap`), deployed three times by `template.yaml`: as
//! inventory, payments and shipping.
//!
//! `PARTICIPANT` is its name, `SHOP_TABLE` where its effects live, `IDEMPOTENCY_TABLE`
//! where it records command ids, `ORCHESTRATOR_QUEUE_URL` the queue it replies to, `BUS_NAME`
//! the bus, `LIFT_REGISTRY_TABLE` the service registry, and `SHOP_CRASH_SKU` (optional, on
//! the emulator only) the product whose first charge the process dies in the middle of.
//! Read once, at cold start.

use lift_events::consume::Participant;
use lift_events::publish::{EventBridgePublisher, PublishConfig, SqsPublisher};
use lift_services::RegisterExt;
use shop::participants::Ledger;

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = lift_core::aws::sdk_config().await;
    let name = env("PARTICIPANT")?;
    let dynamodb = aws_sdk_dynamodb::Client::new(config);
    let bus = EventBridgePublisher::new(
        aws_sdk_eventbridge::Client::new(config),
        &env("BUS_NAME")?,
        PublishConfig::default(),
    );
    let participant = Participant::new(&name, dynamodb.clone(), &env("IDEMPOTENCY_TABLE")?, bus)?
        // Replies go straight to the orchestrator's queue: no bus entry per reply.
        .reply_to_queue(SqsPublisher::new(
            aws_sdk_sqs::Client::new(config),
            &env("ORCHESTRATOR_QUEUE_URL")?,
            PublishConfig::default(),
        ));
    let ledger = Ledger::new(dynamodb, &env("SHOP_TABLE")?);
    let crash_sku = env("SHOP_CRASH_SKU").ok().filter(|sku| !sku.is_empty());
    shop::participants::app(participant, ledger, &name, crash_sku)
        .try_register(shop::service_config(&name))?
        .run()
        .await?;
    Ok(())
}
