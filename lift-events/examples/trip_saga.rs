//! A trip saga's orchestrator, deployed by `deploy/template.yaml`: it starts a saga for
//! each `TripRequested` event on the bus, applies the replies and timers from its queue,
//! and relays each stored transition's outbox from the saga table's stream.
//!
//! Steps: `reserve` (inventory; undone by `release`), `charge` (payments; undone by
//! `refund`), `confirm` (inventory; refused when the request says `fail_last`).
//!
//! Env: `SAGA_TABLE`, `BUS_NAME`, `ORCHESTRATOR_QUEUE_URL`.

use std::time::Duration;

use lift_core::{App, Context, Error, Json};
use lift_events::consume::{OutboxImage, orchestrator_message, relay_image};
use lift_events::publish::{AwsTransport, EventBridgePublisher, PublishConfig, SqsPublisher};
use lift_events::relay::Relay;
use lift_events::saga::{Orchestrator, Registry, Saga, StartMeta, Step, remote};
use lift_events::store::DynamoStore;
use lift_events::{Envelope, Event};
use serde::{Deserialize, Serialize};

/// What starts a trip saga.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TripRequested {
    trip: String,
    amount: u64,
    #[serde(default)]
    fail_last: bool,
}

impl Event for TripRequested {
    const TYPE: &'static str = "TripRequested";
}

fn trip_saga() -> Result<Saga, lift_events::ConfigError> {
    let timeout = Duration::from_secs(60);
    Saga::named("trip", 1)
        .step(
            Step::new(
                "reserve",
                remote("inventory", "Reserve"),
                Some(remote("inventory", "Release")),
            )
            .timeout(timeout),
        )
        .step(
            Step::new(
                "charge",
                remote("payments", "Charge"),
                Some(remote("payments", "Refund")),
            )
            .timeout(timeout),
        )
        .step(Step::new("confirm", remote("inventory", "Confirm"), None).timeout(timeout))
        .build()
}

fn env(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| Error::internal(format!("{name} is not set")))
}

fn app(orchestrator: Orchestrator<DynamoStore>, transport: AwsTransport) -> App {
    let relay = Relay::new(transport.clone());
    let starter = orchestrator.clone();
    App::new()
        .event(
            "lift.demo",
            TripRequested::TYPE,
            move |_ctx: Context, e: Envelope<TripRequested>| {
                let orchestrator = starter.clone();
                async move {
                    let meta = StartMeta {
                        correlation_id: e.correlation_id.clone(),
                        tenant: e.tenant.clone(),
                    };
                    orchestrator
                        .start("trip", &e.payload.trip, &e.payload, meta)
                        .await
                        .map_err(Error::internal)?;
                    Ok::<_, Error>(())
                }
            },
        )
        .sqs(move |ctx: Context| {
            let (o, t) = (orchestrator.clone(), transport.clone());
            async move { orchestrator_message(&o, &t, &ctx).await }
        })
        .dynamodb(move |_ctx: Context, Json(image): Json<OutboxImage>| {
            let relay = relay.clone();
            async move { relay_image(&relay, &image).await }
        })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
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
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(config), &env("SAGA_TABLE")?);
    let saga = trip_saga().map_err(Error::internal)?;
    let orchestrator = Orchestrator::new(Registry::new().with(saga), store);
    app(orchestrator, AwsTransport::new(bus, timers))
        .run()
        .await
}
