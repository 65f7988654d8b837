//! `trip`: a saga across three Lambda functions, on lift-events.
//!
//! A trip is booked in three steps: `reserve` a seat (inventory; undone by `release`),
//! `charge` the card (payments; undone by `refund`), and `confirm` the booking (inventory).
//! When a step is refused, the steps done before it are undone in reverse order.
//!
//! - The **orchestrator** ([`orchestrator_app`], the `trip-orchestrator` binary) starts a
//!   saga for each [`TripRequested`] event on the bus, applies the participants' replies
//!   (invoked) and its own timers (from its queue), and relays each stored transition's
//!   outbox (the commands) from the saga table's stream.
//! - A **participant** ([`participant_app`], the `trip-participant` binary, deployed twice:
//!   inventory and payments) takes the commands the relay invokes it with, runs each at
//!   most once per command id ([`work`]) and replies by invoking the orchestrator.
//!
//! Commands and replies are asynchronous invocations
//! ([`LambdaInvoker`](lift_events::publish::LambdaInvoker)): a bus entry or an SQS message
//! each would cost more than the rest of a transition; the bus carries the trip requests
//! and the sagas' ends. `template.yaml` deploys the three functions (each with a
//! dead-letter queue for what Lambda could not deliver) with the bus, the request rule,
//! the orchestrator's timer queue, the saga table (with its stream and the `finished`
//! index) and the participants' idempotency table.
//!
//! The demo's rules: a charge above [`CARD_LIMIT`] is declined (the saga compensates the
//! reservation); a request with `fail_last` is refused at `confirm`, the last step (the
//! saga refunds, then releases).
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)
)]

use std::time::Duration;

use lift_core::{App, Context, Error, FieldError, Json};
use lift_events::consume::{Participant, orchestrator_inputs};
use lift_events::relay::{SAGA_SOURCE, Transport};
use lift_events::saga::{
    Command, Orchestrator, Phase, Registry, Saga, StartMeta, Step, StepError, remote,
};
use lift_events::store::SagaStore;
use lift_events::{ConfigError, Envelope, Event};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The `source` of the events that start a trip.
pub const SOURCE: &str = "lift.trips";
/// The saga's name.
pub const SAGA: &str = "trip";
/// The longest trip id.
pub const MAX_TRIP_ID: usize = 128;
/// The largest amount the payments participant charges; above it the card is declined.
pub const CARD_LIMIT: u64 = 1000;
/// How long the orchestrator waits for a reply before it sends the command again.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The event that starts a trip saga (`detail-type` `TripRequested`, source [`SOURCE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripRequested {
    /// The trip's id, which is the saga's id: a second request for it starts nothing.
    pub trip: String,
    /// What the trip costs.
    pub amount: u64,
    /// Refuse the last step (`confirm`), to see the saga compensate.
    #[serde(default)]
    pub fail_last: bool,
}

impl Event for TripRequested {
    const TYPE: &'static str = "TripRequested";
}

/// What a start answers (to a direct invocation; EventBridge drops it): the saga as stored.
/// A repeated request answers the stored saga, unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// The saga's id (the trip's).
    pub saga: String,
    /// Its status (`running`, `completed`, ...).
    pub status: String,
    /// Its state version.
    pub version: u64,
}

/// The trip saga's definition: `reserve` and `charge`, each with its compensation, then
/// `confirm`; every step times out after [`STEP_TIMEOUT`].
///
/// # Errors
/// [`ConfigError`] when the definition is invalid (it is not).
pub fn saga() -> Result<Saga, ConfigError> {
    Saga::named(SAGA, 1)
        .step(
            Step::new(
                "reserve",
                remote("inventory", "Reserve"),
                Some(remote("inventory", "Release")),
            )
            .timeout(STEP_TIMEOUT),
        )
        .step(
            Step::new(
                "charge",
                remote("payments", "Charge"),
                Some(remote("payments", "Refund")),
            )
            .timeout(STEP_TIMEOUT),
        )
        .step(Step::new("confirm", remote("inventory", "Confirm"), None).timeout(STEP_TIMEOUT))
        .build()
}

/// The orchestrator of [`saga`] over `store`.
///
/// # Errors
/// [`ConfigError`] when the definition is invalid.
pub fn orchestrator<S: SagaStore>(store: S) -> Result<Orchestrator<S>, ConfigError> {
    Ok(Orchestrator::new(Registry::new().with(saga()?), store))
}

fn invalid(pointer: &str, message: &str) -> Error {
    Error::Validation(vec![FieldError {
        pointer: pointer.to_owned(),
        message: message.to_owned(),
    }])
}

/// The orchestrator's function: [`TripRequested`] events from the bus start a saga (and
/// answer [`Started`]), SQS messages are replies and timers, DynamoDB stream records are
/// stored transitions whose outbox it publishes through `transport`.
pub fn orchestrator_app<S, T>(orchestrator: Orchestrator<S>, transport: T) -> App
where
    S: SagaStore + Clone + 'static,
    T: Transport + Clone + 'static,
{
    let starter = orchestrator.clone();
    let app = App::new().event(
        SOURCE,
        TripRequested::TYPE,
        move |_ctx: Context, request: Envelope<TripRequested>| {
            let orchestrator = starter.clone();
            async move {
                let trip = &request.payload.trip;
                if trip.is_empty() || trip.len() > MAX_TRIP_ID {
                    return Err(invalid("/payload/trip", "must be 1 to 128 characters long"));
                }
                let meta = StartMeta {
                    correlation_id: request.correlation_id.clone(),
                    tenant: request.tenant.clone(),
                };
                let state = orchestrator
                    .start(SAGA, trip, &request.payload, meta)
                    .await?;
                Ok(Json(Started {
                    saga: state.id().to_owned(),
                    status: state.status().as_str().to_owned(),
                    version: state.version(),
                }))
            }
        },
    );
    orchestrator_inputs(app, orchestrator, transport)
}

/// A participant's work on one command. The demo has no inventory or ledger: it answers
/// who did what, refuses a charge above [`CARD_LIMIT`] and a `confirm` of a trip asked
/// with `fail_last`, and never fails technically. A real participant writes its effect
/// conditionally on `command.command_id` (see lift-events' failure semantics).
///
/// # Errors
/// [`StepError::Rejected`] for the refusals above.
pub async fn work(participant: &str, command: Command) -> Result<Value, StepError> {
    let amount = command.data["amount"].as_u64().unwrap_or(0);
    let fail_last = command.data["fail_last"].as_bool().unwrap_or(false);
    match (command.step_name.as_str(), command.phase) {
        ("charge", Phase::Action) if amount > CARD_LIMIT => {
            Err(StepError::Rejected("card declined".into()))
        }
        ("confirm", Phase::Action) if fail_last => Err(StepError::Rejected("no seat left".into())),
        (step, phase) => {
            tracing::info!(
                target: "lift::trip",
                participant,
                step,
                ?phase,
                command = %command.command_id,
                "done"
            );
            Ok(json!({ "by": participant, "command": command.command_id }))
        }
    }
}

/// A participant's function, named `name` (`inventory` or `payments`): commands invoked
/// by the orchestrator's relay (saga events, [`SAGA_SOURCE`]), each run once per command
/// id by `participant` ([`work`]), answered through it.
pub fn participant_app(participant: Participant, name: &str) -> App {
    let name = name.to_owned();
    App::new().event_source(SAGA_SOURCE, move |ctx: Context| {
        let (participant, name) = (participant.clone(), name.clone());
        async move {
            participant
                .handle(&ctx, |command| async move { work(&name, command).await })
                .await
        }
    })
}
