//! A participant of the trip saga, deployed twice by `deploy/template.yaml` (inventory
//! and payments): it takes commands from its queue, runs each at most once per command id
//! and replies on the bus.
//!
//! Env: `PARTICIPANT` (`inventory` or `payments`), `IDEMPOTENCY_TABLE`, `BUS_NAME`.

use lift_core::{App, Context, Error};
use lift_events::consume::Participant;
use lift_events::publish::{EventBridgePublisher, PublishConfig};
use lift_events::saga::{Command, Phase, StepError};
use serde_json::{Value, json};

fn env(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| Error::internal(format!("{name} is not set")))
}

/// The participant's work. A real one would write its effect conditionally on the
/// command id; this one only answers.
async fn work(name: String, command: Command) -> Result<Value, StepError> {
    let amount = command.data["amount"].as_u64().unwrap_or(0);
    let fail_last = command.data["fail_last"].as_bool().unwrap_or(false);
    match (command.step_name.as_str(), command.phase) {
        ("charge", Phase::Action) if amount > 1000 => {
            Err(StepError::Rejected("card declined".into()))
        }
        ("confirm", Phase::Action) if fail_last => Err(StepError::Rejected("no seat left".into())),
        (step, phase) => {
            tracing::info!(target: "lift::demo", participant = %name, step, ?phase, command = %command.command_id, "done");
            Ok(json!({ "by": name, "command": command.command_id }))
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
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
    )
    .map_err(Error::internal)?;
    App::new()
        .sqs(move |ctx: Context| {
            let (p, name) = (participant.clone(), name.clone());
            async move { p.handle(&ctx, |command| work(name, command)).await }
        })
        .run()
        .await
}
