//! # lift-events
//!
//! Events between functions, and sagas whose state lives in DynamoDB.
//!
//! - [`Envelope`] and [`Event`]: the envelope every event and command travels in (id,
//!   type, source, time, tenant, correlation and causation ids, trace header, schema
//!   version, saga id and step, payload; unknown fields kept), typed per event type, and
//!   usable as handler input on lift-core's `App` (`App::event`, `App::sqs`).
//! - [`publish`]: EventBridge `PutEvents` and SQS `SendMessageBatch`, batched at 10, failed
//!   entries resent with backoff until a deadline, then reported.
//! - [`consume`]: duplicate deliveries recognised by event id ([`consume::Inbox`]),
//!   participants idempotent by command id ([`consume::Participant`]), and the handlers of
//!   an orchestrator function.
//! - [`saga`]: definitions, the pure transition function, the [`saga::Orchestrator`].
//! - [`store`]: where saga state lives ([`store::DynamoStore`], [`store::MemoryStore`]).
//! - [`relay`]: publish after commit, from the saga table's stream.
//!
//! ```no_run
//! use std::time::Duration;
//! use lift_events::saga::{Orchestrator, Registry, Saga, Step, local, remote};
//! use lift_events::store::DynamoStore;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let order = Saga::named("order", 1)
//!     .step(Step::new("reserve", remote("inventory", "ReserveStock"), Some(remote("inventory", "ReleaseStock"))))
//!     .step(Step::new("charge", remote("payments", "Charge"), Some(remote("payments", "Refund")))
//!         .timeout(Duration::from_secs(30)))
//!     .pivot(Step::new("ship", remote("shipping", "CreateShipment"), None))
//!     .build()?;
//! let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
//! let orchestrator = Orchestrator::new(Registry::new().with(order), DynamoStore::new(client, "sagas"));
//! let saga = orchestrator
//!     .start("order", "order-42", &serde_json::json!({"order": 42}), Default::default())
//!     .await?;
//! # let _ = saga;
//! # Ok(())
//! # }
//! ```
//!
//! # Failure semantics
//!
//! **Delivery is at least once, everywhere.** EventBridge retries a target for up to 24
//! hours, SQS redelivers a message whose handler failed or timed out, a DynamoDB Stream
//! redelivers a batch until it is processed, Lambda retries, and any process may crash
//! between two AWS calls. Nothing in this crate assumes a message arrives once, in order,
//! or on time.
//!
//! **What is exactly once in effect, and why:**
//! - *A saga transition.* Each input is applied by one conditional write on the saga's
//!   version. The transition is a pure function of the stored state, so a redelivered
//!   input is either applied (the first write never happened) or recognised: a reply is
//!   applied only when it answers the command in flight (same step, phase and command id);
//!   a success or refusal from an earlier attempt of it counts (the participant gave it
//!   once), a technical failure only from the current attempt, anything else is ignored.
//!   Two orchestrators racing on one saga cannot both win: the loser re-reads and finds
//!   the input already applied.
//! - *Publishing.* The messages a transition decides (its outbox) are written in the same
//!   conditional write as the state, and the relay publishes them from the table's stream.
//!   An event is thus never published for a write that did not happen, and never lost
//!   after one that did. The relay may publish twice (a crash before its checkpoint), with
//!   the same event ids.
//! - *A step's effect* — provided the participant is idempotent by command id. Every
//!   attempt of one step carries the same command id, so retries, timeouts and duplicate
//!   deliveries do not repeat it.
//!
//! **What a participant must do** ([`consume::Participant`] does the first two):
//! 1. Record each command id with its outcome (success or refusal) and answer a repeat
//!    with the recorded outcome, without acting again.
//! 2. Answer with a reply event: success (with an output), refusal (business failure,
//!    nothing took effect: not retried, not compensated) or technical failure (retried).
//! 3. Make the effect and the record of the command id atomic (one DynamoDB transaction,
//!    or an effect conditional on the command id): a crash between them would otherwise
//!    repeat the effect.
//! 4. Make a compensation of a command that never took effect a no-op that *records* that
//!    the command is cancelled, so the action arriving late is refused. A step whose
//!    attempts all timed out is compensated without knowing whether it acted.
//!
//! **Compensation.** When a step is refused, or runs out of attempts, the steps that
//! completed (or may have: out of attempts) are compensated in reverse order. A
//! compensation is retried under its own policy; when it is refused or its attempts run
//! out the saga ends `NeedsAttention` with the reason. After the pivot a saga only goes
//! forward; a step after it that fails for good ends `NeedsAttention` too. A running saga
//! keeps the definition version it started with.
//!
//! **Durable timeouts: SQS delays.** Each attempt's timeout (and each retry's backoff) is
//! a message to the orchestrator's own queue with a delivery delay, sent by the relay
//! with the command. SQS was chosen over EventBridge Scheduler because the timer then rides
//! the path every other orchestrator input takes (one queue, its dead-letter queue, its
//! partial batch failures), costs one SQS request ($0.40 per million) instead of a
//! schedule ($1 per million, plus a delete), needs no IAM role for a scheduler to assume,
//! and fires on time (the local emulator's Scheduler fires about 10 s late). Its limit, a
//! 15-minute delay, is handled in code: a timer due later arrives early and is sent again
//! with the remaining delay, without a write. Timers are never cancelled; one for an
//! attempt that already answered is recognised as stale and dropped.
//!
//! **Cost per transition.** One strongly consistent `GetItem` and one conditional
//! `PutItem` of the saga item (which holds its history: a few KB), at most one `PutEvents`
//! entry and one SQS message (the timer). Counted for a 5-step saga by the simulation
//! (`aws_calls_per_transition_on_the_clean_paths`): 6 transitions, 6 `PutItem`, 10
//! `GetItem` (5 replies and 5 timeouts that come after their reply), 6 bus entries, 5
//! timers; with the last step refused, 10 transitions, 10 `PutItem`, 10 bus entries.
//! A timer is never cancelled, so each costs a later (ignored) orchestrator invocation.
//!
//! # Checked by simulation
//!
//! `tests/simulation.rs` runs one saga per seed against in-memory models of DynamoDB,
//! EventBridge and SQS under one seeded scheduler and clock, switching tasks at every AWS
//! call, with crashes between calls, throttling, per-entry `PutEvents` failures, duplicate,
//! reordered and late deliveries (beyond step timeouts), participants that fail, refuse or
//! answer twice, a lagging relay and racing writers. After each run it checks that the saga
//! ended (`Completed`, `Compensated` or `NeedsAttention` with a reason), that each action
//! and compensation took effect at most once, compensations only of actions in effect and
//! in reverse order, that every stored version was relayed and the end published, and that
//! no version was skipped. A failing seed prints the command that replays it:
//!
//! ```text
//! LIFT_SIM_SEEDS=<first>..<last> cargo test -p lift-events --release --test simulation
//! ```
//!
//! # On the emulator
//!
//! The `trip` example (`examples/trip` in the workspace) runs a three-step saga across
//! three functions deployed by the workspace's `template.yaml`: the orchestrator and relay
//! (`trip-orchestrator`) and two participants (`trip-participant`, deployed as inventory
//! and as payments), with the bus, the rules, a queue per function with its dead-letter
//! queue, the saga table with its stream and `finished` index, and the participants'
//! idempotency table. Its tests start a trip that completes and one refused at its last
//! step that compensates in reverse, read both histories back, and check that a repeated
//! start changes nothing; `scripts/demo.sh` shows both timelines.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)
)]

pub mod consume;
mod envelope;
mod error;
pub mod publish;
pub mod relay;
pub mod saga;
pub mod store;

pub use envelope::{Envelope, EnvelopeError, Event};
pub use error::ConfigError;
