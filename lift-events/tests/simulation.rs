//! Deterministic simulation of sagas under faults.
//!
//! Each seed runs one saga workload against in-memory models of DynamoDB (conditional
//! writes, a transaction per participant effect, the table's stream), EventBridge (per-entry
//! failures) and SQS (visibility timeouts, delays, at-least-once delivery) under one seeded
//! scheduler and clock. The orchestrator, the store contract and the relay are the crate's
//! own code; every AWS call is a point where the scheduler may switch to another task, and
//! where faults strike: a crash (the task dies after the call took effect), throttling, a
//! saga write that took effect but whose answer was lost (the SDK's retry then fails its
//! condition on the write itself, or the call's time limit ends it), a duplicate or
//! reordered delivery, a delay beyond the step's timeout, a participant that
//! fails or answers twice, a relay that lags or dies mid-batch (the stream then delivers
//! the whole batch again), conflicting writers (duplicates handled at the same time race
//! on the saga's version), starts sent again by the client, some with another client's
//! data, and environments whose clocks are up to 2 s apart.
//!
//! `LIFT_SIM_SEEDS=<first>..<last> cargo test -p lift-events --release --test simulation`
//! runs exactly those seeds; without it a few thousand run.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use lift_events::Envelope;
use lift_events::relay::{
    FINISHED_TYPE, Relay, Transport, TransportError, reply_envelope, saga_input, timer_delay,
    timer_envelope,
};
use lift_events::saga::{
    Command, Handled, HistoryEvent, Orchestrator, OrchestratorError, Phase, Registry, Reply,
    RetryPolicy, Saga, SagaState, SagaStatus, StartMeta, Step, StepCall, StepError, local, remote,
};
use lift_events::store::{SagaStore, SagaSummary, StoreError};
use serde_json::{Value, json};

#[path = "support/contract.rs"]
mod contract;

const SAGA_ID: &str = "saga-1";
const VISIBILITY_MS: u64 = 30_000;
/// Deliveries of a message before its queue sends it to the dead-letter queue.
const MAX_RECEIVES: u32 = 5;
/// Attempts of an asynchronous invocation before Lambda sends it to the function's
/// on-failure destination: the first and two retries, one and two minutes apart.
const INVOKE_ATTEMPTS: u32 = 3;
const INVOKE_RETRY_MS: u64 = 60_000;
const MAX_TICKS: u64 = 200_000;
/// The simulated time at which a run starts (ms).
const START_MS: u64 = 1_000_000;

// ---------------------------------------------------------------- the world

/// One participant effect, as the world saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Effect {
    Action(u32),
    Compensation(u32),
}

#[derive(Debug, Clone)]
struct Faults {
    crash: f64,
    throttle: f64,
    entry_failure: f64,
    duplicate: f64,
    delay: f64,
    max_delay_ms: u64,
    fail: f64,
    reject: f64,
    reject_compensation: f64,
    answer_twice: f64,
    relay_weight: u32,
    reject_step: Option<u32>,
    /// How commands and replies travel.
    channel: Channel,
    /// A saga write that took effect answers an error.
    ambiguous: f64,
    /// Starts of the same saga sent again by its client, each at a time after the first
    /// start: `true` for one that carries other data (a client reusing an id).
    restarts: Vec<(u64, bool)>,
    /// How far an environment's clock may be from true time, either way (ms).
    skew_ms: u64,
    /// When someone cancels the saga, if anyone does.
    cancel_at: Option<u64>,
    /// How many times an operator fixes what stopped a saga that needs attention (no more
    /// refusals) and redrives it.
    redrives: u32,
}

/// How commands and replies travel (timers always ride the orchestrator's queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    /// On the bus, a rule routing each to a queue.
    Bus,
    /// Straight to the queues.
    Queues,
    /// Asynchronous invocations of the functions.
    Invoke,
}

impl Faults {
    fn of(rng: &mut fastrand::Rng) -> Self {
        let p = |rng: &mut fastrand::Rng, max: f64| rng.f64() * max;
        Faults {
            crash: p(rng, 0.08),
            throttle: p(rng, 0.08),
            entry_failure: p(rng, 0.2),
            duplicate: p(rng, 0.2),
            delay: p(rng, 0.2),
            max_delay_ms: rng.u64(1..120_000),
            fail: p(rng, 0.3),
            reject: p(rng, 0.15),
            reject_compensation: if rng.u8(..10) == 0 { p(rng, 0.3) } else { 0.0 },
            answer_twice: p(rng, 0.3),
            relay_weight: rng.u32(1..10),
            reject_step: None,
            channel: [Channel::Bus, Channel::Queues, Channel::Invoke][rng.usize(..3)],
            // Drawn last: the seeds keep the faults they had before it.
            ambiguous: p(rng, 0.08),
            restarts: Vec::new(),
            skew_ms: 0,
            cancel_at: None,
            redrives: 0,
        }
    }

    /// The faults added after the others, drawn from a generator of their own so that
    /// each seed keeps the saga and the faults it had before them.
    fn with_later(mut self, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5bd1_e995_0f1e_2d3c);
        let restarts = [0, 0, 1, 2, 3][rng.usize(..5)];
        self.restarts = (0..restarts)
            .map(|_| (START_MS + rng.u64(0..200_000), rng.u8(..4) == 0))
            .collect();
        self.skew_ms = if rng.bool() { rng.u64(1..=2_000) } else { 0 };
        // Most sagas end within seconds: half the cancels come within the first 3 s.
        self.cancel_at = (rng.u8(..3) == 0).then(|| {
            START_MS
                + if rng.bool() {
                    rng.u64(0..3_000)
                } else {
                    rng.u64(0..120_000)
                }
        });
        // Drawn last, as above.
        self.redrives = if rng.u8(..4) == 0 { 0 } else { rng.u32(1..=2) };
        self
    }
}

#[derive(Debug, Clone)]
struct Queued {
    body: Envelope,
    visible_at: u64,
    receives: u32,
    /// An asynchronous invocation in Lambda's own queue, not an SQS message.
    invoked: bool,
}

#[derive(Debug, Default)]
struct Queue {
    next_id: u64,
    messages: BTreeMap<u64, Queued>,
}

impl Queue {
    fn push(&mut self, body: Envelope, visible_at: u64) {
        self.insert(body, visible_at, false);
    }

    fn insert(&mut self, body: Envelope, visible_at: u64, invoked: bool) {
        self.next_id += 1;
        self.messages.insert(
            self.next_id,
            Queued {
                body,
                visible_at,
                receives: 0,
                invoked,
            },
        );
    }
}

/// The queue a task took its message from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum QueueName {
    Orchestrator,
    Participant,
}

struct World {
    rng: fastrand::Rng,
    now: u64,
    faults: Faults,
    // DynamoDB: the saga table, its stream, and the participants' table.
    items: HashMap<String, SagaState>,
    stream: Vec<SagaState>,
    relayed: usize,
    participant_records: HashMap<String, Result<Value, StepError>>,
    // SQS queues; the bus routes commands to the participants' queue, replies to the
    // orchestrator's.
    orchestrator_q: Queue,
    participant_q: Queue,
    finished: Vec<Envelope>,
    effects: Vec<Effect>,
    current_task: u64,
    crashed: HashSet<u64>,
    calls: u64,
    ops: BTreeMap<&'static str, u64>,
    stats: Stats,
    planted: Planted,
    /// A cancel was accepted: the saga must not complete.
    cancel_accepted: bool,
    /// When the operator redrives the saga that needs attention.
    redrive_at: Option<u64>,
    /// The versions the operator decided to redrive the saga at.
    redrives_decided: BTreeSet<u64>,
    /// Those with a send that may have been lost (a dead letter, a process that died, a
    /// call given up on): excused from being applied. The others must be.
    redrives_lost: BTreeSet<u64>,
}

/// How often each fault struck, over a run.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    crashes: u64,
    throttles: u64,
    conflicts: u64,
    duplicates: u64,
    delays: u64,
    timeouts: u64,
    failed_entries: u64,
    dead_letters: u64,
    ambiguous: u64,
    restarts: u64,
    replayed_batches: u64,
    skewed_runs: u64,
    /// Cancels sent (each until it got an answer).
    cancels: u64,
    /// Runs whose saga ended cancelled (a `Cancelled` entry in its history).
    cancelled: u64,
    /// Redrives an operator decided (each sent until it got an answer, some twice).
    redrives: u64,
    /// Redrives applied (`Redriven` entries in the sagas' histories).
    redriven: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.crashes += o.crashes;
        self.throttles += o.throttles;
        self.conflicts += o.conflicts;
        self.duplicates += o.duplicates;
        self.delays += o.delays;
        self.timeouts += o.timeouts;
        self.failed_entries += o.failed_entries;
        self.dead_letters += o.dead_letters;
        self.ambiguous += o.ambiguous;
        self.restarts += o.restarts;
        self.replayed_batches += o.replayed_batches;
        self.skewed_runs += o.skewed_runs;
        self.cancels += o.cancels;
        self.cancelled += o.cancelled;
        self.redrives += o.redrives;
        self.redriven += o.redriven;
    }
}

/// Bugs that can be planted on purpose to show the harness finds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Planted {
    #[default]
    None,
    /// The participant forgets the command id: each delivery takes effect again.
    ParticipantNotIdempotent,
    /// A timer that finds the saga waiting for a later time is dropped, not sent again.
    TimerNotSentAgain,
    /// The table takes a saga's first write even when the saga is already stored.
    StartOverwrites,
}

type Shared = Arc<Mutex<World>>;

fn lock(world: &Shared) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|e| e.into_inner())
}

/// A point where the scheduler switches tasks: every AWS call starts with one.
struct Yield(bool);

impl Future for Yield {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            // Woken at once, so the model also runs under an ordinary executor.
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

#[derive(Debug)]
struct Throttled;

/// An AWS call: a switch point, then maybe throttled (no effect).
async fn aws_call(world: &Shared, op: &'static str) -> Result<(), Throttled> {
    Yield(false).await;
    let mut w = lock(world);
    w.calls += 1;
    *w.ops.entry(op).or_default() += 1;
    w.now += w.rng.u64(0..5);
    let p = w.faults.throttle;
    if w.rng.f64() < p {
        w.stats.throttles += 1;
        return Err(Throttled);
    }
    Ok(())
}

impl World {
    /// The time on the clock of the environment running the current task: each
    /// environment's clock is off true time by its own amount, up to the skew either way.
    fn clock(&self) -> u64 {
        let skew = self.faults.skew_ms;
        if skew == 0 {
            return self.now;
        }
        let mixed = self.current_task.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33;
        (self.now + mixed % (2 * skew + 1)).saturating_sub(skew)
    }

    /// After a call took effect: maybe the task dies right here.
    fn after_effect(&mut self) {
        if self.rng.f64() < self.faults.crash {
            let task = self.current_task;
            self.crashed.insert(task);
            self.stats.crashes += 1;
        }
    }

    /// After a saga write took effect: maybe its answer is lost. The SDK sends it again,
    /// and the condition fails on the item just written, which comes back with the
    /// failure; or the call's time limit ends it before the answer.
    fn lost_answer(&mut self, written: &SagaState) -> Option<StoreError> {
        if self.rng.f64() >= self.faults.ambiguous {
            return None;
        }
        self.stats.ambiguous += 1;
        Some(if self.rng.bool() {
            StoreError::Conflict {
                id: written.id().to_owned(),
                current: Some(Box::new(written.clone())),
            }
        } else {
            StoreError::Unavailable {
                operation: "PutItem",
                source: "the call's time limit ran out".into(),
            }
        })
    }

    /// Routes an event on the bus (EventBridge → SQS), sent to a queue, or invoked
    /// (Lambda's queue for asynchronous invocations), with duplicates and delays.
    fn route(&mut self, event: Envelope) {
        self.deliver(event, false);
    }

    /// An asynchronous invocation with `event`, delivered as [`route`](Self::route) does.
    fn invoke(&mut self, event: Envelope) {
        self.deliver(event, true);
    }

    fn deliver(&mut self, event: Envelope, invoked: bool) {
        let copies = if self.rng.f64() < self.faults.duplicate {
            self.stats.duplicates += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = self.now + self.rng.u64(0..50);
            if self.rng.f64() < self.faults.delay {
                at += self.rng.u64(0..=self.faults.max_delay_ms);
                self.stats.delays += 1;
            }
            match event.kind.as_str() {
                lift_events::relay::REPLY_TYPE | lift_events::relay::TIMER_TYPE => {
                    self.orchestrator_q.insert(event.clone(), at, invoked)
                }
                FINISHED_TYPE => self.finished.push(event.clone()),
                _ => self.participant_q.insert(event.clone(), at, invoked),
            }
        }
    }
}

// ---------------------------------------------------------------- AWS models

#[derive(Clone)]
struct SimStore(Shared);

impl SagaStore for SimStore {
    async fn save(&self, state: &SagaState) -> Result<(), StoreError> {
        aws_call(&self.0, "dynamodb:PutItem")
            .await
            .map_err(|_| StoreError::Throttled)?;
        let mut w = lock(&self.0);
        let stored = w.items.get(state.id()).map(SagaState::version);
        let expected = state.version().checked_sub(1).filter(|v| *v > 0);
        let unconditional = w.planted == Planted::StartOverwrites && state.version() == 1;
        if stored != expected && !unconditional {
            // As DynamoDB with ReturnValuesOnConditionCheckFailure: the stored item
            // comes back with the failure.
            w.stats.conflicts += 1;
            return Err(StoreError::Conflict {
                id: state.id().to_owned(),
                current: w.items.get(state.id()).cloned().map(Box::new),
            });
        }
        w.items.insert(state.id().to_owned(), state.clone());
        w.stream.push(state.clone());
        w.after_effect();
        match w.lost_answer(state) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    async fn save_over(&self, state: &SagaState, base: &SagaState) -> Result<(), StoreError> {
        // As DynamoDB's condition on the stored content: the base must be the stored saga,
        // its outbox aside.
        let content = |s: &SagaState| {
            let mut value = serde_json::to_value(s).expect("a state encodes");
            if let Some(map) = value.as_object_mut() {
                map.remove("outbox");
            }
            value
        };
        let differs = lock(&self.0)
            .items
            .get(state.id())
            .is_some_and(|stored| content(stored) != content(base));
        if differs {
            aws_call(&self.0, "dynamodb:PutItem")
                .await
                .map_err(|_| StoreError::Throttled)?;
            let mut w = lock(&self.0);
            w.stats.conflicts += 1;
            return Err(StoreError::Conflict {
                id: state.id().to_owned(),
                current: w.items.get(state.id()).cloned().map(Box::new),
            });
        }
        self.save(state).await
    }

    async fn load(&self, id: &str) -> Result<Option<SagaState>, StoreError> {
        aws_call(&self.0, "dynamodb:GetItem")
            .await
            .map_err(|_| StoreError::Throttled)?;
        Ok(lock(&self.0).items.get(id).cloned())
    }

    async fn list(&self, status: SagaStatus, limit: usize) -> Result<Vec<SagaSummary>, StoreError> {
        aws_call(&self.0, "dynamodb:Query")
            .await
            .map_err(|_| StoreError::Throttled)?;
        let w = lock(&self.0);
        let mut found: Vec<SagaSummary> = w
            .items
            .values()
            .filter(|s| s.status() == status)
            .map(SagaSummary::of)
            .collect();
        found.sort_by(|a, b| a.updated_ms.cmp(&b.updated_ms).then(a.id.cmp(&b.id)));
        found.truncate(limit);
        Ok(found)
    }
}

#[derive(Clone)]
struct SimTransport(Shared);

impl Transport for SimTransport {
    async fn put_events(&self, entries: &[Envelope]) -> Result<Vec<usize>, TransportError> {
        aws_call(&self.0, "eventbridge:PutEvents")
            .await
            .map_err(|_| TransportError::Throttled)?;
        assert!(entries.len() <= 10, "PutEvents takes at most 10 entries");
        let mut w = lock(&self.0);
        for e in entries {
            let who = if e.kind == lift_events::relay::REPLY_TYPE {
                "eventbridge:entries (participant replies)"
            } else {
                "eventbridge:entries (relay)"
            };
            *w.ops.entry(who).or_default() += 1;
        }
        let mut failed = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let p = w.faults.entry_failure;
            if w.rng.f64() < p {
                w.stats.failed_entries += 1;
                failed.push(i);
            } else {
                w.route(e.clone());
            }
        }
        w.after_effect();
        Ok(failed)
    }

    async fn send_commands(
        &self,
        _participant: &str,
        commands: &[Envelope],
    ) -> Result<bool, TransportError> {
        let channel = lock(&self.0).faults.channel;
        if channel == Channel::Bus {
            return Ok(false);
        }
        if channel == Channel::Invoke {
            // One `Invoke` a command; a crash between two leaves the rest unsent, and the
            // stream delivers the record again.
            for c in commands {
                aws_call(&self.0, "lambda:Invoke (commands)")
                    .await
                    .map_err(|_| TransportError::Throttled)?;
                let mut w = lock(&self.0);
                w.invoke(c.clone());
                w.after_effect();
            }
            return Ok(true);
        }
        aws_call(&self.0, "sqs:SendMessageBatch (commands)")
            .await
            .map_err(|_| TransportError::Throttled)?;
        assert!(commands.len() <= 10, "SendMessageBatch takes at most 10");
        let mut w = lock(&self.0);
        *w.ops.entry("sqs:messages (commands)").or_default() += commands.len() as u64;
        for c in commands {
            w.route(c.clone());
        }
        w.after_effect();
        Ok(true)
    }

    async fn send_delayed(
        &self,
        message: &Envelope,
        delay: Duration,
    ) -> Result<(), TransportError> {
        aws_call(&self.0, "sqs:SendMessage (timers)")
            .await
            .map_err(|_| TransportError::Throttled)?;
        assert!(
            delay <= Duration::from_secs(900),
            "SQS delays stop at 15 minutes"
        );
        let mut w = lock(&self.0);
        // SQS delays are whole seconds; the SQS publisher rounds up.
        let at = w.now + delay.as_millis().div_ceil(1000) as u64 * 1000;
        w.orchestrator_q.push(message.clone(), at);
        w.after_effect();
        Ok(())
    }
}

/// A participant as the crate's docs ask for: its effect and the record of the command id
/// are one DynamoDB transaction; a compensation of an action that never happened records a
/// tombstone so the late action is refused.
async fn participant(world: Shared, envelope: Envelope) -> Result<(), ()> {
    let command: Command = serde_json::from_value(envelope.payload.clone()).map_err(|_| ())?;
    aws_call(&world, "dynamodb:TransactWriteItems (participant)")
        .await
        .map_err(|_| ())?;
    let outcome = {
        let mut w = lock(&world);
        let stored = w.participant_records.get(&command.command_id).cloned();
        let outcome = match stored {
            Some(outcome) if w.planted != Planted::ParticipantNotIdempotent => outcome,
            _ => decide(&mut w, &command),
        };
        w.after_effect();
        outcome
    };
    let reply = Reply::to(&command, outcome);
    let event = reply_envelope("participant", &command, &reply).map_err(|_| ())?;
    let twice = {
        let mut w = lock(&world);
        let p = w.faults.answer_twice;
        w.rng.f64() < p
    };
    let channel = lock(&world).faults.channel;
    for _ in 0..if twice { 2 } else { 1 } {
        if channel == Channel::Invoke {
            aws_call(&world, "lambda:Invoke (replies)")
                .await
                .map_err(|_| ())?;
            let mut w = lock(&world);
            w.invoke(event.clone());
            w.after_effect();
            continue;
        }
        if channel == Channel::Queues {
            // Straight to the orchestrator's queue.
            aws_call(&world, "sqs:SendMessage (replies)")
                .await
                .map_err(|_| ())?;
            let mut w = lock(&world);
            w.route(event.clone());
            w.after_effect();
            continue;
        }
        // The participant's publisher resends failed entries; a call that keeps failing
        // fails the task, and the command is delivered again.
        let transport = SimTransport(world.clone());
        let mut ok = false;
        for _ in 0..3 {
            if transport
                .put_events(std::slice::from_ref(&event))
                .await
                .map_err(|_| ())?
                .is_empty()
            {
                ok = true;
                break;
            }
        }
        if !ok {
            return Err(());
        }
    }
    Ok(())
}

/// The participant's decision and effect, in one transaction with the command's record.
fn decide(w: &mut World, command: &Command) -> Result<Value, StepError> {
    let step = command.step;
    let action_id = command.action_id();
    match command.phase {
        Phase::Action => {
            if w.faults.reject_step == Some(step) {
                let outcome = Err(StepError::Rejected("refused".into()));
                w.participant_records
                    .insert(command.command_id.clone(), outcome.clone());
                return outcome;
            }
            let roll = w.rng.f64();
            if roll < w.faults.fail {
                // A technical failure: nothing recorded, nothing done.
                return Err(StepError::Failed("participant down".into()));
            }
            let outcome = if roll < w.faults.fail + w.faults.reject {
                Err(StepError::Rejected("refused".into()))
            } else {
                w.effects.push(Effect::Action(step));
                Ok(json!({ "step": step }))
            };
            // Its own id: a refused action redriven goes under another than its step's id.
            // Only actions at or past the pivot are redriven, and those have no
            // compensation, so the tombstone a compensation leaves under the step's id
            // (below) still meets every action it must refuse.
            w.participant_records
                .insert(command.command_id.clone(), outcome.clone());
            outcome
        }
        Phase::Compensation => {
            let roll = w.rng.f64();
            if roll < w.faults.fail {
                return Err(StepError::Failed("participant down".into()));
            }
            if roll < w.faults.fail + w.faults.reject_compensation {
                let outcome = Err(StepError::Rejected("cannot undo".into()));
                w.participant_records
                    .insert(command.command_id.clone(), outcome.clone());
                return outcome;
            }
            match w.participant_records.get(&action_id) {
                Some(Ok(_)) => w.effects.push(Effect::Compensation(step)),
                // Never happened: a tombstone refuses the action if it comes late.
                None => {
                    w.participant_records
                        .insert(action_id, Err(StepError::Rejected("cancelled".into())));
                }
                Some(Err(_)) => {}
            }
            let outcome = Ok(Value::Null);
            w.participant_records
                .insert(command.command_id.clone(), outcome.clone());
            outcome
        }
    }
}

/// A local step: its effect and the record of its command id in one transaction.
async fn local_step(world: Shared, call: StepCall, step: u32) -> Result<Value, StepError> {
    aws_call(&world, "dynamodb:TransactWriteItems (local step)")
        .await
        .map_err(|_| StepError::Failed("throttled".into()))?;
    let mut w = lock(&world);
    let command = Command::clone(&fake_command(&call, step));
    let outcome = match w.participant_records.get(&call.command_id).cloned() {
        Some(outcome) => outcome,
        None => decide(&mut w, &command),
    };
    w.after_effect();
    outcome
}

fn fake_command(call: &StepCall, step: u32) -> Command {
    // Built through serde: `Command` is non-exhaustive outside the crate.
    serde_json::from_value(json!({
        "command_id": call.command_id, "saga_id": call.saga_id, "saga": "sim", "step": step,
        "step_name": call.step, "phase": call.phase, "attempt": call.attempt,
        "target": {"kind": "local"}, "data": call.data, "outputs": call.outputs,
        "correlation_id": call.saga_id,
    }))
    .expect("a command")
}

/// A start of the saga by its client, with the first data or (`other_data`) another
/// client's, which may come first. A start answers the saga only when it is the one
/// stored, with the data it sent; a start with other data is refused.
async fn start_saga(
    world: Shared,
    orchestrator: Orchestrator<SimStore>,
    other_data: bool,
) -> Result<(), ()> {
    let data = json!({ "order": if other_data { 2 } else { 1 } });
    let answer = orchestrator
        .start("sim", SAGA_ID, &data, StartMeta::default())
        .await;
    let stored = lock(&world).stream.first().map(|s| s.data().clone());
    match answer {
        Ok(state) => {
            assert_eq!(state.data(), &data, "a start answered another start's saga");
            assert_eq!(
                Some(&data),
                stored.as_ref(),
                "a start answered a saga not stored"
            );
            Ok(())
        }
        Err(OrchestratorError::AlreadyExists(_)) => {
            assert!(
                stored.is_some_and(|stored| stored != data),
                "a start was refused though its saga is the one stored"
            );
            Ok(())
        }
        Err(_) => Err(()),
    }
}

/// A cancel took effect, or found the saga compensating already: the saga must be
/// compensating, compensated, or needing attention (a local compensation run by the
/// cancel was refused); it must not complete after this.
fn cancel_taken(world: &Shared, state: &SagaState) {
    assert!(
        matches!(
            state.status(),
            SagaStatus::Compensating | SagaStatus::Compensated | SagaStatus::NeedsAttention
        ),
        "a cancel that was taken left the saga {:?}",
        state.status()
    );
    let mut w = lock(world);
    w.cancel_accepted = true;
    w.stats.cancels += 1;
}

/// A cancel was not taken: a running saga is left alone only at or past its pivot, where
/// it still is while it runs (steps only move forward until it compensates).
fn cancel_not_taken(world: &Shared, pivot: Option<usize>) {
    let mut w = lock(world);
    let stored = w
        .items
        .get(SAGA_ID)
        .expect("a saga whose cancel was not taken is stored");
    if stored.status() == SagaStatus::Running {
        let step = stored.cursor().map_or(0, |c| c.step as usize);
        assert!(
            pivot.is_some_and(|p| step >= p),
            "a cancel at step {step} before the pivot {pivot:?} was not taken"
        );
    }
    w.stats.cancels += 1;
}

/// Someone cancelling the saga, sending the cancel again while the store fails. An
/// accepted cancel answers a saga compensating or compensated; a refused one, a saga
/// that ended, or one at or past its pivot.
async fn cancel_saga(
    world: Shared,
    orchestrator: Orchestrator<SimStore>,
    pivot: Option<usize>,
) -> Result<(), ()> {
    for _ in 0..10 {
        match orchestrator
            .cancel(SAGA_ID, "cancelled by the simulation")
            .await
        {
            Ok(state) => {
                cancel_taken(&world, &state);
                return Ok(());
            }
            Err(OrchestratorError::NotCancellable { status, .. }) => {
                assert!(
                    status.is_final() || (status == SagaStatus::Running && pivot.is_some()),
                    "a cancel of a {status:?} saga without a pivot was refused"
                );
                cancel_not_taken(&world, pivot);
                return Ok(());
            }
            // Not started yet: nothing to cancel.
            Err(OrchestratorError::UnknownSaga(_)) => return Ok(()),
            Err(_) => {}
        }
    }
    Ok(())
}

/// A cancel on the orchestrator's queue, as `lift cancel` sends it: the envelope read back
/// from its body and handled as the orchestrator's function handles it, delivered again
/// while it fails (the saga not stored yet, a failing store). Applied, the saga is
/// compensating, compensated or needing attention (a local compensation refused); not
/// applied, it compensates already, ended, or runs at or past its pivot.
async fn cancel_by_message(
    world: Shared,
    orchestrator: Orchestrator<SimStore>,
    pivot: Option<usize>,
) -> Result<(), ()> {
    let envelope = lift_events::relay::cancel_envelope("sim", SAGA_ID, "cancelled on the queue")
        .expect("a cancel envelope");
    let body = serde_json::to_vec(&envelope).expect("a message body");
    let read = Envelope::from_body(&body).expect("the body reads back");
    let Some(Ok(input)) = saga_input(&read) else {
        panic!("a cancel is a saga input");
    };
    for _ in 0..10 {
        match orchestrator.handle(&input).await {
            Ok(Handled::Applied(state)) => {
                cancel_taken(&world, &state);
                return Ok(());
            }
            Ok(Handled::Ignored(_)) => {
                cancel_not_taken(&world, pivot);
                return Ok(());
            }
            Ok(other) => panic!("a cancel answered {other:?}"),
            Err(_) => {}
        }
    }
    Ok(())
}

/// The operator reads the saga and, when it still needs attention, stops its participants
/// refusing (technical failures go on as before) and redrives it at the version they read: through `Orchestrator::redrive` (sent again while
/// the store fails) or on the orchestrator's queue, as `lift redrive` sends it; a quarter
/// of the redrives are sent a second time, on the queue, up to a minute later.
fn redrive(
    w: &mut World,
    orchestrator: &Orchestrator<SimStore>,
    world: &Shared,
    id: u64,
    tasks: &mut Vec<Running>,
) {
    w.redrive_at = None;
    // The operator reads the saga first: another redrive may have moved it since.
    let stuck = w
        .items
        .get(SAGA_ID)
        .is_some_and(|s| s.status() == SagaStatus::NeedsAttention && s.halted().is_some());
    if !stuck {
        return;
    }
    w.faults.redrives -= 1;
    w.faults.reject = 0.0;
    w.faults.reject_compensation = 0.0;
    let version = w.items.get(SAGA_ID).map_or(0, SagaState::version);
    let envelope = lift_events::relay::redrive_envelope("sim", SAGA_ID, version, "fixed")
        .expect("a redrive envelope");
    w.stats.redrives += 1;
    w.redrives_decided.insert(version);
    let now = w.now;
    if w.rng.u8(..4) == 0 {
        let later = now + w.rng.u64(0..60_000);
        w.orchestrator_q.push(envelope.clone(), later);
    }
    if w.rng.bool() {
        w.orchestrator_q.push(envelope, now);
        return;
    }
    let o = orchestrator.clone();
    let stuck = world.clone();
    tasks.push(Running {
        id,
        future: Box::pin(async move {
            for _ in 0..10 {
                match o.redrive(SAGA_ID, version, "fixed").await {
                    Ok(_) => return Ok(()),
                    Err(OrchestratorError::NotRedrivable { .. }) => {
                        let now = lock(&stuck).items.get(SAGA_ID).map(SagaState::version);
                        panic!("a redrive decided at version {version} was refused at {now:?}");
                    }
                    Err(_) => {}
                }
            }
            // Given up on: it may not have been written.
            lock(&stuck).redrives_lost.insert(version);
            Ok(())
        }),
        role: Role::Redrive { version },
    });
}

// ---------------------------------------------------------------- the scheduler

type Task = Pin<Box<dyn Future<Output = Result<(), ()>> + Send>>;

struct Running {
    id: u64,
    future: Task,
    role: Role,
}

/// What a task is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The saga's first start.
    Start,
    /// A start sent again by the saga's client.
    Restart,
    /// Someone cancelling the saga.
    Cancel,
    /// An operator redriving the saga at `version`.
    Redrive { version: u64 },
    /// A batch of stream records, from the record at `batch_start`.
    Relay { batch_start: usize },
    /// Handling a message from a queue.
    Message(QueueName, u64),
}

fn definition(world: &Shared, rng: &mut fastrand::Rng) -> Saga {
    let steps = rng.u32(2..=5);
    let pivot = rng.bool().then(|| rng.u32(0..steps));
    let local_at = rng.bool().then(|| rng.u32(0..steps));
    let mut b = Saga::named("sim", 1);
    for i in 0..steps {
        let is_local = local_at == Some(i);
        let undoable = pivot.is_none_or(|p| i < p);
        let action = if is_local {
            let w = world.clone();
            local(move |call| local_step(w.clone(), call, i))
        } else {
            remote("participant", &format!("Do{i}"))
        };
        let compensation = undoable.then(|| {
            if is_local {
                let w = world.clone();
                local(move |call| local_step(w.clone(), call, i))
            } else {
                remote("participant", &format!("Undo{i}"))
            }
        });
        let step = Step::new(&format!("s{i}"), action, compensation)
            .timeout(Duration::from_millis(rng.u64(1_000..60_000)))
            .retry(
                RetryPolicy::new(
                    rng.u32(1..5),
                    Duration::from_millis(500),
                    Duration::from_secs(20),
                )
                .expect("policy"),
            )
            .compensation_retry(
                RetryPolicy::new(
                    rng.u32(5..20),
                    Duration::from_millis(500),
                    Duration::from_secs(20),
                )
                .expect("policy"),
            );
        b = if pivot == Some(i) {
            b.pivot(step)
        } else {
            b.step(step)
        };
    }
    b.build().expect("definition")
}

/// Runs seed `seed`; returns the violations found.
/// What a run simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// A random saga (2 to 5 steps, maybe a pivot and a local step) under random faults.
    Faulty,
    /// Five remote steps, no faults; the last step refused when `fail_last`.
    Clean { fail_last: bool },
}

type Summary = (&'static str, u64, Stats, BTreeMap<&'static str, u64>, u64);

fn run(seed: u64, planted: Planted) -> Result<Summary, String> {
    simulate(seed, planted, Workload::Faulty)
}

fn simulate(seed: u64, planted: Planted, workload: Workload) -> Result<Summary, String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut faults = Faults::of(&mut rng);
    if let Workload::Clean { fail_last } = workload {
        faults = Faults {
            crash: 0.0,
            throttle: 0.0,
            entry_failure: 0.0,
            duplicate: 0.0,
            delay: 0.0,
            max_delay_ms: 0,
            fail: 0.0,
            reject: 0.0,
            reject_compensation: 0.0,
            answer_twice: 0.0,
            relay_weight: 5,
            reject_step: fail_last.then_some(4),
            channel: Channel::Queues,
            ambiguous: 0.0,
            restarts: Vec::new(),
            skew_ms: 0,
            cancel_at: None,
            redrives: 0,
        };
    } else {
        faults = faults.with_later(seed);
    }
    let world: Shared = Arc::new(Mutex::new(World {
        rng: fastrand::Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15),
        now: START_MS,
        faults,
        items: HashMap::new(),
        stream: Vec::new(),
        relayed: 0,
        participant_records: HashMap::new(),
        orchestrator_q: Queue::default(),
        participant_q: Queue::default(),
        finished: Vec::new(),
        effects: Vec::new(),
        current_task: 0,
        crashed: HashSet::new(),
        calls: 0,
        ops: BTreeMap::new(),
        stats: Stats::default(),
        planted,
        cancel_accepted: false,
        redrive_at: None,
        redrives_decided: BTreeSet::new(),
        redrives_lost: BTreeSet::new(),
    }));
    let saga = match workload {
        Workload::Faulty => definition(&world, &mut rng),
        Workload::Clean { .. } => {
            let mut b = Saga::named("sim", 1);
            for i in 0..5 {
                b = b.step(
                    Step::new(
                        &format!("s{i}"),
                        remote("participant", &format!("Do{i}")),
                        Some(remote("participant", &format!("Undo{i}"))),
                    )
                    .timeout(Duration::from_secs(60)),
                );
            }
            b.build().expect("definition")
        }
    };
    let steps = saga.steps().len();
    let pivot = saga.pivot();
    let clock_world = world.clone();
    let orchestrator = Orchestrator::new(Registry::new().with(saga), SimStore(world.clone()))
        .with_clock(move || lock(&clock_world).clock());
    let relay = Relay::new(SimTransport(world.clone()));

    let mut tasks: Vec<Running> = Vec::new();
    let mut next_task = 0u64;
    let mut started = false;
    let mut ticks = 0u64;
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    loop {
        ticks += 1;
        if ticks > MAX_TICKS {
            return Err("the run did not settle".into());
        }
        let mut w = lock(&world);
        w.now += 1;
        let now = w.now;
        // What can happen now.
        let start_ready = !started && !tasks.iter().any(|t| t.role == Role::Start);
        let relay_ready = w.relayed < w.stream.len()
            && !tasks.iter().any(|t| matches!(t.role, Role::Relay { .. }));
        let restart_ready = w.faults.restarts.iter().position(|(at, _)| *at <= now);
        let cancel_ready = w.faults.cancel_at.is_some_and(|at| at <= now);
        // An operator notices a saga that needs attention, some time later.
        let redrivable = w
            .items
            .get(SAGA_ID)
            .is_some_and(|s| s.status() == SagaStatus::NeedsAttention && s.halted().is_some());
        if redrivable && w.redrive_at.is_none() && w.faults.redrives > 0 {
            w.redrive_at = Some(now + w.rng.u64(0..30_000));
        }
        let redrive_ready = w.redrive_at.is_some_and(|at| at <= now);
        let visible = |q: &Queue| {
            q.messages
                .iter()
                .filter(|(_, m)| m.visible_at <= now)
                .map(|(id, _)| *id)
                .collect::<Vec<_>>()
        };
        let orch_ready = visible(&w.orchestrator_q);
        let part_ready = visible(&w.participant_q);
        let choices = tasks.len() as u32 * 4
            + u32::from(start_ready) * 4
            + u32::from(restart_ready.is_some()) * 4
            + u32::from(cancel_ready) * 4
            + u32::from(redrive_ready) * 4
            + u32::from(relay_ready) * w.faults.relay_weight
            + orch_ready.len().min(3) as u32 * 2
            + part_ready.len().min(3) as u32 * 2;
        if choices == 0 {
            // Idle: jump to the next message's time, or stop.
            let next = w
                .orchestrator_q
                .messages
                .values()
                .chain(w.participant_q.messages.values())
                .map(|m| m.visible_at)
                .chain(w.faults.restarts.iter().map(|(at, _)| *at))
                .chain(w.faults.cancel_at)
                .chain(w.redrive_at)
                .min();
            match next {
                Some(at) => {
                    w.now = w.now.max(at);
                    continue;
                }
                None => break,
            }
        }
        let mut pick = w.rng.u32(0..choices);
        // Poll a running task.
        if pick < tasks.len() as u32 * 4 {
            let index = (pick / 4) as usize;
            let id = tasks[index].id;
            if w.crashed.contains(&id) {
                // The process died: its message stays invisible until the timeout, and a
                // stream batch is delivered again from its first record (no checkpoint
                // is taken when the function does not answer).
                let dead = tasks.swap_remove(index);
                if let Role::Relay { batch_start } = dead.role {
                    w.relayed = batch_start;
                    w.stats.replayed_batches += 1;
                }
                if let Role::Redrive { version } = dead.role {
                    w.redrives_lost.insert(version);
                }
                drop(w);
                drop(dead);
                continue;
            }
            w.current_task = id;
            drop(w);
            let poll = tasks[index].future.as_mut().poll(&mut cx);
            let Poll::Ready(result) = poll else { continue };
            let done = tasks.swap_remove(index);
            let mut w = lock(&world);
            if w.crashed.contains(&id) {
                // It died on its last call: as above, no checkpoint.
                if let Role::Relay { batch_start } = done.role {
                    w.relayed = batch_start;
                    w.stats.replayed_batches += 1;
                }
                continue;
            }
            match (result, done.role) {
                (Ok(()), Role::Message(queue, msg)) => {
                    // Deleting the message is a call too: when it fails, the message comes
                    // back after its visibility timeout. An invocation that returned is done.
                    let p = w.faults.throttle + w.faults.crash;
                    let invoked = match queue {
                        QueueName::Orchestrator => w.orchestrator_q.messages.get(&msg),
                        QueueName::Participant => w.participant_q.messages.get(&msg),
                    }
                    .is_some_and(|m| m.invoked);
                    if invoked || w.rng.f64() >= p {
                        match queue {
                            QueueName::Orchestrator => w.orchestrator_q.messages.remove(&msg),
                            QueueName::Participant => w.participant_q.messages.remove(&msg),
                        };
                    }
                }
                (Ok(()), Role::Start) => started = true,
                (_, _) => {}
            }
            continue;
        }
        pick -= tasks.len() as u32 * 4;
        next_task += 1;
        let id = next_task;
        if start_ready {
            if pick < 4 {
                drop(w);
                let o = orchestrator.clone();
                tasks.push(Running {
                    id,
                    future: Box::pin(start_saga(world.clone(), o, false)),
                    role: Role::Start,
                });
                continue;
            }
            pick -= 4;
        }
        if let Some(index) = restart_ready {
            if pick < 4 {
                let (_, other_data) = w.faults.restarts.swap_remove(index);
                w.stats.restarts += 1;
                drop(w);
                let o = orchestrator.clone();
                let started_by = world.clone();
                tasks.push(Running {
                    id,
                    future: Box::pin(async move {
                        // Whatever it answers, the client's retry is done.
                        let _ = start_saga(started_by, o, other_data).await;
                        Ok(())
                    }),
                    role: Role::Restart,
                });
                continue;
            }
            pick -= 4;
        }
        if cancel_ready {
            if pick < 4 {
                w.faults.cancel_at = None;
                // Half through the orchestrator's queue, as `lift cancel` sends it.
                let on_the_queue = w.rng.bool();
                drop(w);
                let (cw, o) = (world.clone(), orchestrator.clone());
                let future: Task = if on_the_queue {
                    Box::pin(cancel_by_message(cw, o, pivot))
                } else {
                    Box::pin(cancel_saga(cw, o, pivot))
                };
                tasks.push(Running {
                    id,
                    future,
                    role: Role::Cancel,
                });
                continue;
            }
            pick -= 4;
        }
        if redrive_ready {
            if pick < 4 {
                redrive(&mut w, &orchestrator, &world, id, &mut tasks);
                continue;
            }
            pick -= 4;
        }
        if relay_ready {
            if pick < w.faults.relay_weight {
                let batch_start = w.relayed;
                drop(w);
                let r = relay.clone();
                let rw = world.clone();
                tasks.push(Running {
                    id,
                    future: Box::pin(async move {
                        // A batch of up to 10 stream records, checkpointed record by record.
                        for _ in 0..10 {
                            let (record, now) = {
                                let w = lock(&rw);
                                match w.stream.get(w.relayed) {
                                    Some(r) => (r.clone(), w.clock()),
                                    None => return Ok(()),
                                }
                            };
                            r.relay_states(&[&record], now).await.map_err(|_| ())?;
                            lock(&rw).relayed += 1;
                        }
                        Ok(())
                    }),
                    role: Role::Relay { batch_start },
                });
                continue;
            }
            pick -= w.faults.relay_weight;
        }
        let orch_weight = orch_ready.len().min(3) as u32 * 2;
        let (queue, ready) = if pick < orch_weight {
            (QueueName::Orchestrator, orch_ready)
        } else {
            (QueueName::Participant, part_ready)
        };
        // Any visible message, not the oldest: delivery order is not guaranteed.
        let msg = ready[w.rng.usize(0..ready.len())];
        let q = match queue {
            QueueName::Orchestrator => &mut w.orchestrator_q,
            QueueName::Participant => &mut w.participant_q,
        };
        let Some(m) = q.messages.get_mut(&msg) else {
            continue;
        };
        m.receives += 1;
        if m.invoked && m.receives > INVOKE_ATTEMPTS {
            // Lambda's on-failure destination: as lost to the saga as a dead letter.
            q.messages.remove(&msg);
            w.stats.dead_letters += 1;
            continue;
        }
        if !m.invoked && m.receives > MAX_RECEIVES {
            // The queue's redrive policy: after its fifth failed delivery the message goes
            // to the dead-letter queue. A command or reply lost so: only a timer moves the
            // saga on.
            if let Some(lost) = q.messages.remove(&msg)
                && lost.body.kind == lift_events::relay::REDRIVE_TYPE
            {
                let version = lost.body.payload["version"].as_u64().unwrap_or(0);
                w.redrives_lost.insert(version);
            }
            w.stats.dead_letters += 1;
            continue;
        }
        // The next attempt, should this one fail: SQS after the visibility timeout, Lambda
        // one then two minutes later.
        m.visible_at = now
            + if m.invoked {
                INVOKE_RETRY_MS * u64::from(m.receives)
            } else {
                VISIBILITY_MS
            };
        let body = m.body.clone();
        drop(w);
        let future: Task = match queue {
            QueueName::Participant => Box::pin(participant(world.clone(), body)),
            QueueName::Orchestrator => {
                let o = orchestrator.clone();
                let t = SimTransport(world.clone());
                let cw = world.clone();
                Box::pin(async move {
                    let Some(input) = saga_input(&body) else {
                        return Ok(());
                    };
                    let input = input.map_err(|_| ())?;
                    let drops_timers = lock(&cw).planted == Planted::TimerNotSentAgain;
                    match o.handle(&input).await {
                        Ok(Handled::Rearm(_)) if drops_timers => Ok(()),
                        Ok(Handled::Rearm(timer)) => {
                            let now = lock(&cw).clock();
                            let env = timer_envelope(format!("rearm-{}", body.id), &timer)
                                .map_err(|_| ())?;
                            t.send_delayed(&env, timer_delay(timer.due_ms, now))
                                .await
                                .map_err(|_| ())
                        }
                        Ok(_) => Ok(()),
                        Err(_) => Err(()),
                    }
                })
            }
        };
        tasks.push(Running {
            id,
            future,
            role: Role::Message(queue, msg),
        });
    }
    check(&world, steps, pivot)?;
    let w = lock(&world);
    let status = w
        .items
        .get(SAGA_ID)
        .map(|s| s.status().as_str())
        .unwrap_or("none");
    let mut stats = w.stats;
    stats.skewed_runs = u64::from(w.faults.skew_ms > 0);
    stats.cancelled = u64::from(w.items.get(SAGA_ID).is_some_and(SagaState::cancelled));
    stats.redriven = w.items.get(SAGA_ID).map_or(0, |s| u64::from(s.redrives()));
    stats.timeouts = w.items.get(SAGA_ID).map_or(0, |s| {
        s.history()
            .iter()
            .filter(|h| matches!(h.event, HistoryEvent::TimedOut { .. }))
            .count() as u64
    });
    let version = w.items.get(SAGA_ID).map_or(0, SagaState::version);
    Ok((status, w.calls, stats, w.ops.clone(), version))
}

/// The invariants, checked after every run.
fn check(world: &Shared, steps: usize, pivot: Option<usize>) -> Result<(), String> {
    let w = lock(world);
    let state = w.items.get(SAGA_ID).ok_or("the saga was never stored")?;
    let status = state.status();
    if !status.is_final() {
        return Err(format!(
            "the saga stopped in {status:?} (not a final state)"
        ));
    }
    // No skipped transition: the stream saw every version, in order, and the history
    // has entries for each.
    let versions: Vec<u64> = w.stream.iter().map(SagaState::version).collect();
    if w.stream.iter().any(|s| s.data() != w.stream[0].data()) {
        return Err("the saga's data changed after its start".into());
    }
    let expected: Vec<u64> = (1..=state.version()).collect();
    if versions != expected {
        return Err(format!(
            "stored versions {versions:?}, expected 1..={}",
            state.version()
        ));
    }
    let mut seen: Vec<u64> = state.history().iter().map(|h| h.version).collect();
    if seen.windows(2).any(|p| p[1] < p[0]) {
        return Err("the history is out of order".into());
    }
    seen.dedup();
    if seen != expected {
        return Err(format!(
            "history versions {seen:?}, expected 1..={}",
            state.version()
        ));
    }
    if !matches!(
        state.history().last().map(|h| &h.event),
        Some(HistoryEvent::Finished { .. })
    ) {
        return Err("the history does not end with the saga's end".into());
    }
    // No event lost: every stored outbox relayed, the end published, queues drained.
    if w.relayed != w.stream.len() {
        return Err("outboxes left unrelayed".into());
    }
    if !w
        .finished
        .iter()
        .any(|e| e.payload.get("status") == Some(&json!(status)))
    {
        return Err("the saga's end was never published".into());
    }
    if !w.orchestrator_q.messages.is_empty() || !w.participant_q.messages.is_empty() {
        return Err("messages left on a queue".into());
    }
    // Effects: at most once each, compensations only of actions in effect, in reverse.
    let mut actions = vec![0u32; steps];
    let mut compensations = vec![0u32; steps];
    let mut last_compensated: Option<u32> = None;
    for e in &w.effects {
        match *e {
            Effect::Action(s) => {
                if compensations[s as usize] > 0 {
                    return Err(format!("step {s} took effect after its compensation"));
                }
                actions[s as usize] += 1;
            }
            Effect::Compensation(s) => {
                if actions[s as usize] == 0 {
                    return Err(format!("step {s} compensated without having taken effect"));
                }
                if last_compensated.is_some_and(|l| s >= l) {
                    return Err(format!(
                        "step {s} compensated after step {last_compensated:?}"
                    ));
                }
                last_compensated = Some(s);
                compensations[s as usize] += 1;
            }
        }
    }
    for s in 0..steps {
        if actions[s] > 1 || compensations[s] > 1 {
            return Err(format!(
                "step {s} took effect {} times and was compensated {} times",
                actions[s], compensations[s]
            ));
        }
    }
    // Redrives: each applied at a version the operator decided on, and each decided one
    // applied, unless all its sends may have been lost.
    let redriven: Vec<u64> = state
        .history()
        .iter()
        .filter(|h| matches!(h.event, HistoryEvent::Redriven { .. }))
        .map(|h| h.version - 1)
        .collect();
    if let Some(v) = redriven.iter().find(|v| !w.redrives_decided.contains(v)) {
        return Err(format!(
            "a redrive applied at version {v}, which nobody decided on"
        ));
    }
    if let Some(v) = w
        .redrives_decided
        .iter()
        .find(|v| !redriven.contains(v) && !w.redrives_lost.contains(v))
    {
        return Err(format!(
            "the redrive decided at version {v} was never applied"
        ));
    }
    if w.cancel_accepted && status == SagaStatus::Completed {
        return Err("the saga completed after a cancel was accepted".into());
    }
    match status {
        SagaStatus::Completed => {
            if actions.iter().any(|a| *a != 1) || compensations.iter().any(|c| *c != 0) {
                return Err(format!(
                    "completed with actions {actions:?} compensations {compensations:?}"
                ));
            }
        }
        SagaStatus::Compensated => {
            for s in 0..steps {
                let undoable = pivot.is_none_or(|p| s < p);
                if undoable && actions[s] != compensations[s] {
                    return Err(format!("compensated, but step {s} is still in effect"));
                }
                if !undoable && actions[s] != 0 {
                    return Err(format!(
                        "compensated after step {s} beyond the pivot took effect"
                    ));
                }
            }
        }
        _ => {
            if state.reason().is_none() {
                return Err("needs attention without a reason".into());
            }
        }
    }
    Ok(())
}

/// The seeds to run: `LIFT_SIM_SEEDS=<first>..<last>` (both included), else 0..=2999.
fn seeds() -> std::ops::RangeInclusive<u64> {
    match std::env::var("LIFT_SIM_SEEDS") {
        Ok(range) => {
            let (first, last) = range
                .split_once("..")
                .expect("LIFT_SIM_SEEDS is <first>..<last>");
            let first: u64 = first.trim().parse().expect("the first seed is a number");
            let last: u64 = last
                .trim()
                .trim_start_matches('=')
                .parse()
                .expect("the last seed is a number");
            first..=last
        }
        Err(_) => 0..=2_999,
    }
}

fn replay(seed: u64) -> String {
    format!("LIFT_SIM_SEEDS={seed}..{seed} cargo test -p lift-events --release --test simulation")
}

#[test]
fn sagas_keep_their_invariants_under_faults() {
    let range = seeds();
    let began = Instant::now();
    let mut failures = Vec::new();
    let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut calls = 0u64;
    let mut stats = Stats::default();
    for seed in range.clone() {
        match std::panic::catch_unwind(|| run(seed, Planted::None)) {
            Ok(Ok(summary)) => {
                *outcomes.entry(summary.0).or_default() += 1;
                calls += summary.1;
                stats += summary.2;
            }
            Ok(Err(violation)) => {
                eprintln!("seed {seed}: {violation}\n  replay: {}", replay(seed));
                failures.push(seed);
            }
            Err(_) => {
                eprintln!("seed {seed}: panicked\n  replay: {}", replay(seed));
                failures.push(seed);
            }
        }
    }
    let count = range.end() - range.start() + 1;
    eprintln!(
        "simulated {count} sagas (seeds {}..{}) in {:.1?}: {outcomes:?}, {calls} AWS calls, faults {stats:?}, {} violations",
        range.start(),
        range.end(),
        began.elapsed(),
        failures.len()
    );
    assert!(failures.is_empty(), "violations at seeds {failures:?}");
    assert!(
        count < 1_000 || stats.redriven > 0,
        "no saga was redriven in {count} runs"
    );
}

/// The harness can fail: a participant that forgets command ids applies a step twice,
/// and some seed among the first few hundred shows it.
#[test]
fn the_harness_catches_a_participant_that_is_not_idempotent() {
    let found = (0..500u64).find(|&seed| run(seed, Planted::ParticipantNotIdempotent).is_err());
    let seed = found.expect("no seed caught the planted bug");
    let violation = run(seed, Planted::ParticipantNotIdempotent).unwrap_err();
    assert!(
        violation.contains("times") || violation.contains("effect"),
        "{violation}"
    );
}

/// The harness can fail: a timer that finds the saga waiting for a later time must be sent
/// again (one timer serves a saga); dropped, a saga whose command went to a dead-letter
/// queue waits forever, and some seed among the first few thousand shows it.
#[test]
fn the_harness_catches_a_timer_that_is_not_sent_again() {
    let found = (0..3000u64).find(|&seed| run(seed, Planted::TimerNotSentAgain).is_err());
    let seed = found.expect("no seed caught the planted bug");
    let violation = run(seed, Planted::TimerNotSentAgain).unwrap_err();
    eprintln!("seed {seed}: {violation}");
    assert!(
        violation.contains("not a final state") || violation.contains("settle"),
        "{violation}"
    );
}

/// The harness can fail: a table that takes a saga's first write over a stored saga lets a
/// start sent again by the client (or by another client with the same id) begin the saga
/// anew, and some seed among the first few thousand shows it.
#[test]
fn the_harness_catches_a_start_that_overwrites_the_saga() {
    let found = (0..3000u64).find(|&seed| {
        std::panic::catch_unwind(|| run(seed, Planted::StartOverwrites))
            .map_or(true, |outcome| outcome.is_err())
    });
    let seed = found.expect("no seed caught the planted bug");
    eprintln!("seed {seed} caught a start that overwrites");
}

/// The model of DynamoDB keeps the same store contract as DynamoDB itself (the suite the
/// emulator runs), so the simulation cannot drift from the real service.
#[tokio::test]
async fn the_dynamodb_model_keeps_the_store_contract() {
    let mut rng = fastrand::Rng::with_seed(0);
    let mut faults = Faults::of(&mut rng);
    faults.throttle = 0.0;
    faults.crash = 0.0;
    faults.ambiguous = 0.0;
    let world: Shared = Arc::new(Mutex::new(World {
        rng,
        now: 0,
        faults,
        items: HashMap::new(),
        stream: Vec::new(),
        relayed: 0,
        participant_records: HashMap::new(),
        orchestrator_q: Queue::default(),
        participant_q: Queue::default(),
        finished: Vec::new(),
        effects: Vec::new(),
        current_task: 0,
        crashed: HashSet::new(),
        calls: 0,
        ops: BTreeMap::new(),
        stats: Stats::default(),
        planted: Planted::None,
        cancel_accepted: false,
        redrive_at: None,
        redrives_decided: BTreeSet::new(),
        redrives_lost: BTreeSet::new(),
    }));
    contract::contract(SimStore(world)).await;
}

/// AWS calls of a 5-step saga without faults, success and compensation paths: one
/// conditional write per transition, at most one bus entry per transition, no read before
/// a write, one timer per saga.
#[test]
fn aws_calls_per_transition_on_the_clean_paths() {
    for fail_last in [false, true] {
        let (status, _, _, ops, transitions) =
            simulate(1, Planted::None, Workload::Clean { fail_last }).expect("no violation");
        assert_eq!(
            status,
            if fail_last {
                "compensated"
            } else {
                "completed"
            }
        );
        let per = |op: &str| ops.get(op).copied().unwrap_or(0) as f64 / transitions as f64;
        eprintln!("5 steps, {status}: {transitions} transitions");
        for (op, n) in &ops {
            eprintln!("  {op:<45} {n:>3}  ({:.2} per transition)", per(op));
        }
        assert_eq!(
            ops["dynamodb:PutItem"], transitions,
            "one write per transition"
        );
        assert!(
            per("eventbridge:entries (relay)") <= 1.0,
            "at most one bus entry per transition"
        );
        assert_eq!(transitions, if fail_last { 10 } else { 6 });
        // Replies carry the saga: no read before a write. The one read is the saga's
        // one timer, which comes after the end.
        assert_eq!(ops.get("dynamodb:GetItem").copied(), Some(1), "reads");
        assert_eq!(
            ops.get("sqs:SendMessage (timers)").copied(),
            Some(1),
            "timers"
        );
    }
}
