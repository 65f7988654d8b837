//! # lift-events
//!
//! Events between functions, and sagas whose state lives in DynamoDB.
//!
//! - [`Envelope`] and [`Event`]: the envelope every event and command travels in (id,
//!   type, source, time, tenant, correlation and causation ids, trace header, schema
//!   version, saga id and step, payload; unknown fields kept), typed per event type, and
//!   usable as handler input on lift-core's `App` (`App::event`, `App::sqs`).
//! - [`publish`]: EventBridge `PutEvents` and SQS `SendMessageBatch`, batched at 10, and
//!   asynchronous Lambda invocations; failed entries resent with backoff until a deadline,
//!   then reported.
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
//! - *A saga's start.* Its first write is conditional on no item under its id. A start
//!   sent again (same definition name, tenant and data: a retried request, a redelivered
//!   event) answers the stored saga; any other start under that id is refused with
//!   [`saga::OrchestratorError::AlreadyExists`], told nothing of the stored saga. Ids are
//!   unique in the table across definitions and tenants, as an execution's name is in Step
//!   Functions, where a start with the same name and other input is refused too.
//! - *A saga transition.* Each input is applied by one conditional write on the saga's
//!   version. The transition is a pure function of the stored state, so a redelivered
//!   input is either applied (the first write never happened) or recognised: a reply is
//!   applied only when it answers the command in flight (same step, phase and command id);
//!   a success or refusal from an earlier attempt of it counts (the participant gave it
//!   once), a technical failure only from the current attempt, anything else is ignored.
//!   Two orchestrators racing on one saga cannot both win: the loser gets the stored saga
//!   back with its failed write and finds the input already applied.
//! - *Read-free transitions.* A command carries the saga as the transition that sent it
//!   stored it ([`saga::Command::snapshot`], attached by the relay) and the reply hands it
//!   back, so the orchestrator writes on that version without reading first. When the
//!   saga moved on meanwhile (a duplicate, a late or a reordered reply) the write fails,
//!   DynamoDB returns the stored item with the failure (`ReturnValuesOnConditionCheckFailure`)
//!   and the input is applied to it, or ignored: still at most once, and no read. A state
//!   that may be behind is never trusted to ignore an input: the saga is read then. Timers
//!   read the saga (strongly consistent), since they carry no state, and so do replies
//!   that come without a snapshot (a saga above [`relay::MAX_SNAPSHOT_BYTES`], a reply
//!   resent without it) or with one the saga moved past. Participants
//!   pass the snapshot on without reading it ([`saga::Snapshot`]): a participant on this
//!   release or later still runs a command whose saga a later release wrote, so upgrade
//!   the orchestrator after its participants. (A participant on an earlier release
//!   decodes the snapshot, and refuses such a command.)
//! - *Publishing.* The messages a transition decides (its outbox) are written in the same
//!   conditional write as the state, and the relay publishes them from the table's stream.
//!   An event is thus never published for a write that did not happen, and not lost after
//!   one that did while the stream holds its record: 24 hours, or until the mapping's retry
//!   limits send the record to its on-failure destination (the template's does after a
//!   relay failure that lasts, a missing `PutEvents` permission say): alarm on that
//!   destination, where a saga's outbox then waits for someone to send it. The relay may publish twice (a crash before its checkpoint), with
//!   the same event ids. The item marks (`out`) the transitions with something to publish,
//!   so a stream mapping filtered on it leaves the others (local steps) out. Publishing
//!   right after the write instead, with the input's redelivery for the crash case, would
//!   save the relay's invocation but lose the commands of a start whose caller crashed
//!   after the write and never retried: nothing would deliver that start again. The
//!   stream needs no redelivery of the input, batches up to 100 records an invocation
//!   under load, and its filtered records cost nothing, so the relay stays. A message
//!   refused for what it holds (too large, EventBridge's `InvalidArgument` or
//!   `MalformedDetail`, an SQS sender fault) is left out alone and logged at ERROR: sending
//!   it again cannot succeed, and failing the stream record would hold up the sagas behind
//!   it until the record leaves the stream (24 hours). Throttling, a missing permission and
//!   any other failure fail the record, which is relayed again.
//! - *A step's effect* — provided the participant is idempotent by command id. Every
//!   attempt of one step carries the same command id (until a redrive sends a refused one
//!   under a new id, see Redrive), so retries, timeouts and duplicate deliveries do not
//!   repeat it.
//!
//! **What a participant must do** ([`consume::Participant`] does the first two):
//! 1. Record each command id with its outcome (success or refusal) and answer a repeat
//!    with the recorded outcome, without acting again.
//! 2. Answer with a reply event: success (with an output), refusal (business failure,
//!    nothing took effect: not retried, not compensated) or technical failure (retried),
//!    handing back the command's snapshot ([`saga::Reply::to`] does).
//! 3. Make the effect and the record of the command id atomic (one DynamoDB transaction
//!    with the record, or an effect conditional on a record of its own): a crash between
//!    them would otherwise repeat the effect. Key the effect's own record on the step's
//!    id, [`saga::Command::step_id`] (the command id, except for a refused command a
//!    redrive sent again), and keep it longer than rule 1's record: a command delivered
//!    again once rule 1's record expired, under its own id or an older one, then finds
//!    the effect there instead of acting twice.
//! 4. Make a compensation of a command that never took effect a no-op that *records* that
//!    the command is cancelled, so the action arriving late is refused. A step whose
//!    attempts all timed out, or that was in flight when the saga was cancelled
//!    ([`saga::Orchestrator::cancel`]), is compensated without knowing whether it acted.
//!    The compensation records the cancellation under its action's step id
//!    ([`saga::Command::action_id`]; its own id may end in `:r<n>`), and the refusal
//!    belongs in the atomic write of rule 3 (the effect conditional on no such
//!    cancellation), not in a read before it: an action already past such a read when
//!    its compensation records the cancellation would still take effect, and the saga end
//!    `Compensated` with it in place.
//!
//! **Who may answer a step.** A reply is applied when it names the command in flight
//! (saga, step, phase and command id, and an attempt no later than the current one):
//! command ids are derived from the saga id,
//! and the orchestrator does not check who sent the reply (its envelope's `source` is the
//! sender's to write, and one participant function may answer for several steps). Whoever
//! can deliver a reply to the orchestrator (send to its queue, invoke its function, put a
//! `lift.saga.Reply` event on a bus a rule routes to it) can thus complete any step of a
//! saga whose id it knows, cancel any saga by sending a `lift.saga.Cancel`
//! ([`relay::cancel_envelope`]), and redrive one that needs attention with a
//! `lift.saga.Redrive` ([`relay::redrive_envelope`]): grant those permissions to the
//! participants, and to the operators who use `lift cancel` and `lift redrive`, alone.
//! [`consume::Participant`] keeps its record of a command by command id within its
//! delivery path (the queue, or the event's source and type, and the function): moving a
//! participant to another path (from a queue to invocations, say) while commands are in
//! flight, or redriving a dead-letter queue through another queue, can run a repeat
//! again, which only rule 3 then stops.
//!
//! **Compensation.** When a step is refused, or runs out of attempts, the steps that
//! completed (or may have: out of attempts) are compensated in reverse order. A
//! compensation is retried under its own policy; when it is refused or its attempts run
//! out the saga ends `NeedsAttention` with the reason. After the pivot a saga only goes
//! forward; a step after it that fails for good ends `NeedsAttention` too. A running saga
//! keeps the definition version it started with.
//!
//! **Redrive.** A saga that needs attention keeps the command it stopped on
//! ([`saga::SagaState::halted`]). Once what stopped it is fixed (a participant that
//! refused a compensation, one down for longer than its retries), an operator redrives it
//! ([`saga::Orchestrator::redrive`], a `lift.saga.Redrive` on the orchestrator's queue, or
//! `lift redrive ID`): that command goes out again from its first attempt, and the saga
//! goes on compensating, or forward after its pivot, as Step Functions'
//! `RedriveExecution` restarts an execution from the state that failed. A command whose
//! attempts ran out may have taken effect and goes under its own id, which a participant
//! keeping rule 1 answers without acting twice while it remembers the id (24 hours by
//! default); past that, only rule 3's record keyed on the step's id stops a second
//! effect. A refused one
//! goes under a new id (its step's id and `:r<n>`, for the saga's n-th redrive), since the
//! participant answers its recorded refusal to the old one. A redrive names the saga's
//! version it was decided on, so one delivered twice, or after the saga stopped again,
//! changes nothing. A saga stopped by an input too large to store keeps no command, since
//! the participant would answer the same again, and a saga too large to go on running
//! (within 8 KB of its item limit) cannot be redriven. A pivot that may have acted is
//! sent again, never compensated. A technical failure of an attempt from before the
//! redrive of a command sent again under its own id, delivered after the redrive, counts
//! against the redriven attempt with the same number: with one attempt left, the saga
//! stops again and needs another redrive. A redriven saga publishes
//! `lift.saga.Finished` again when it ends.
//!
//! **Messages: invocations or queues for commands and replies, the bus for business
//! events.** A command or a reply on EventBridge costs an entry ($1 per million) plus the
//! SQS requests of the queue a rule routes it to; sent straight to the queue it costs
//! those requests alone (a send, a receive and a delete: $1.20 per million at batches of
//! one); as an asynchronous invocation of the function that takes it
//! ([`publish::LambdaInvoker`]) it costs nothing beyond that function's invocation, which
//! every path pays. [`publish::AwsTransport::with_participant_function`] invokes a
//! participant with its commands and [`consume::Participant::reply_by_invoke`] the
//! orchestrator with replies; `with_participant_queue` and `reply_to_queue` send them to
//! queues instead, which batch under load (up to 10 messages an invocation) and let an
//! operator pause a consumer by disabling its mapping. Lambda's queue for asynchronous
//! invocations retries a failed invocation twice (one, then two minutes later) and then
//! hands it to the function's on-failure destination (a dead-letter queue), where an SQS
//! queue redelivers until its own redrive count: either way a command or reply lost for
//! good leaves the saga to its timer. The timer is the last resort: one that ends in the
//! orchestrator queue's own dead-letter queue (after its redrive count, in a long outage)
//! leaves its saga running until someone acts, so alarm on that queue; `lift sagas --state
//! running` (and `--state compensating`) lists those sagas least recently moved first. The saga's end ([`relay::FINISHED_TYPE`]) and the
//! application's own events stay on the bus, where any number of consumers can follow
//! them.
//!
//! **Durable timeouts: SQS delays, one timer per saga.** A step's timeout (and a retry's
//! backoff) is a message to the orchestrator's own queue with a delivery delay, sent by
//! the relay with the transition's commands. SQS was chosen over EventBridge Scheduler
//! because the timer then rides the path every other orchestrator input takes (one
//! queue, its dead-letter queue, its partial batch failures), costs one SQS request
//! ($0.40 per million) instead of a schedule ($1 per million, plus a delete), needs no IAM
//! role for a scheduler to assume, and fires on time (the local emulator's Scheduler fires
//! about 10 s late). A timer wakes the saga up rather than naming an attempt: a
//! transition sends one only when no timer due no later is still to come, and a timer
//! that finds the saga waiting for a later time is sent again for then, without a write,
//! unless a transition has sent one for then (or before) that is still to come: copies do
//! not pile up.
//! A saga answered within its first step's timeout thus sends one timer in all (unless a
//! later step's timeout falls before it, which sends one for then), which comes after the
//! end, reads the saga and is dropped. SQS counts delays in whole seconds
//! (rounded up, so a timer never comes early) up to 15 minutes; a timer due later comes
//! early and is sent again with the remaining delay, without a write.
//!
//! # Cost per saga
//!
//! Counted on the local emulator by `tests/emulator.rs` (an interceptor on the SDK
//! clients of the real orchestrator, relay and participant code records every call) for
//! a 5-step saga, completed and refused at its last step (compensated: 4 compensations).
//! Remote steps are commands and replies as asynchronous invocations of the functions
//! (the functions are real ones on the emulator, whose events the test hands to the
//! handlers) or through SQS queues; local steps call the participant from the
//! orchestrator (as a durable function's steps do), so the saga runs whole in the
//! invocation that starts it.
//!
//! | per saga: completed / compensated | remote, invoked | remote, queues | local |
//! |---|---|---|---|
//! | transitions = conditional `PutItem`s | 6 / 10 | 6 / 10 | 6 / 10 |
//! | write units (a unit per started KB of item) | 7 / 15 | 7 / 15 | 7 / 15 |
//! | `GetItem` (the timer's, after the end) | 1 / 1 | 1 / 1 | 1 / 1 |
//! | EventBridge entries (the end) | 1 / 1 | 1 / 1 | 1 / 1 |
//! | asynchronous `Invoke`s (commands, replies) | 5 + 5 / 9 + 9 | 0 / 0 | 0 / 0 |
//! | SQS messages (commands, replies, timer) | 0 + 0 + 1 / 0 + 0 + 1 | 5 + 5 + 1 / 9 + 9 + 1 | 0 + 0 + 1 / 0 + 0 + 1 |
//! | orchestrator invocations (start, replies and timer) | 1 + 6 / 1 + 10 | 1 + 6 / 1 + 10 | 1 + 1 / 1 + 1 |
//! | relay invocations (filtered stream records) | 6 / 10 | 6 / 10 | 2 / 2 |
//! | **$ per million sagas** | **9.73 / 16.60** | **21.73 / 38.20** | **7.63 / 12.63** |
//!
//! At US East prices: DynamoDB on demand $0.625 per million write units and $0.125 per
//! million read units (after the November 2024 cut; a strongly consistent read of up to
//! 4 KB is one unit), EventBridge $1 per million entries (64 KB chunks), SQS $0.40 per
//! million requests (64 KB chunks; a message is a send, a receive and a delete: batches of
//! one, the worst case), Lambda $0.20 per million requests plus $0.0000133334 per GB-s
//! (Arm; 128 MB, 20 ms an invocation assumed: $0.033 per million). DynamoDB Streams reads
//! by Lambda and filtered-out stream records are free. The participants' own invocations
//! and idempotency records are left out: every system pays for the work itself. Under
//! load, Lambda's SQS pollers receive and delete in batches (up to 10): a message then
//! costs about 1.2 requests, and the remote paths through queues $13.81 and $24.52 per
//! million. An asynchronous `Invoke` is not billed beyond the invocation it makes.
//!
//! The others, for the same 5-step saga:
//! - **Step Functions Standard**, $25 per million state transitions: a Task state per
//!   step is 5 transitions when it completes and 9 when the last step fails (5 tasks, then
//!   4 compensation tasks from its `Catch`), more with a `Succeed`, `Fail`, `Choice` or
//!   retried state: at least **$125** and **$225** per million sagas.
//! - **Lambda durable functions**, $8 per million durable operations plus the function's
//!   requests and the checkpoint data written and kept (per GB, negligible at these
//!   sizes): a step per saga step is 5 operations when it completes and 9 when it
//!   compensates, in one invocation: at least **$40.20** and **$72.20**. Steps that wait
//!   for a remote participant's reply (a step sending the command and a callback) are two
//!   operations each, and the function is invoked again on each reply: at least $81.20 and
//!   $146 (plus the same messages to the participants).
//!
//! Lift per saga, as a share of those: local steps 0.06 of Step Functions, 0.19 and 0.17
//! of durable functions; remote steps invoked 0.08 and 0.07 of Step Functions, 0.12 and
//! 0.11 of durable functions waiting on callbacks; remote steps through queues 0.17 and
//! 0.17 of Step Functions, 0.27 and 0.26 of durable functions with SQS at batches of one
//! (0.17 under load). What Lift adds that the others do not is in the table: the relay's
//! invocations, the timer, the end event and, through queues, the SQS requests of its
//! messages.
//!
//! # Checked by simulation
//!
//! `tests/simulation.rs` runs one saga per seed against in-memory models of DynamoDB,
//! EventBridge and SQS under one seeded scheduler and clock, switching tasks at every AWS
//! call, with crashes between calls, throttling, per-entry `PutEvents` failures, duplicate,
//! reordered and late deliveries (beyond step timeouts), participants that fail, refuse or
//! answer twice, a lagging relay, racing writers and queues that send a message to their
//! dead-letter queue after its fifth failed delivery, and asynchronous invocations that
//! Lambda retries twice, a minute then two apart, before its on-failure destination (a
//! command or reply lost so leaves only the saga's timer to move it on); each seed also
//! draws whether commands and replies go through the bus, straight to the queues, or as
//! asynchronous invocations (with a crash possible between two of them). The models follow the calls
//! the crate makes: a failed conditional write hands back the stored item, SQS delays are
//! whole seconds. Most runs also draw starts sent again, clocks apart, a cancel at a
//! random time, and an operator who, when the saga needs attention, stops its
//! participants refusing and redrives it (at the version read, through the orchestrator
//! or its queue, a quarter of the redrives sent twice). After each run it checks that the saga
//! ended (`Completed`, `Compensated` or `NeedsAttention` with a reason), that each action
//! and compensation took effect at most once, compensations only of actions in effect and
//! in reverse order, that every stored version was relayed and the end published, and that
//! no version was skipped, and that no more redrives were applied than decided. A failing
//! seed prints the command that replays it:
//!
//! ```text
//! LIFT_SIM_SEEDS=<first>..<last> cargo test -p lift-events --release --test simulation
//! ```
//!
//! It finds planted bugs: a participant that forgets command ids (a step takes effect
//! twice), and a timer that finds the saga waiting for a later time and is dropped
//! instead of sent again (seed 141: a command goes to the dead-letter queue and the saga
//! waits forever in `Running`).
//!
//! # On the emulator
//!
//! The `trip` example (`examples/trip` in the workspace) runs a three-step saga across
//! three functions deployed by the workspace's `template.yaml`: the orchestrator and relay
//! (`trip-orchestrator`) and two participants (`trip-participant`, deployed as inventory
//! and as payments), with the bus and its trip request rule, commands and replies as
//! asynchronous invocations (each function with a dead-letter queue as its on-failure
//! destination), the orchestrator's timer queue, the saga table with its stream (filtered
//! on `out`) and `finished` index, and the participants' idempotency table. The `shop`
//! example sends them through queues. Its tests start a trip that completes and one refused at its last
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
