//! The pure transition function: (state, input, now) → (new state, outbox, history).

use std::collections::BTreeMap;

use serde_json::Value;

use super::StepError;
use super::definition::{Saga, Work};
use super::state::{
    Cancel, Command, Cursor, Finished, Halted, HistoryEntry, HistoryEvent, Message, Phase, Redrive,
    Reply, SagaInput, SagaState, SagaStatus, StepStatus, Target, Timer, TimerKind, Waiting,
    command_id, redriven_command_id,
};

/// Who started a saga: the correlation id and tenant its events carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartMeta {
    /// The correlation id (the saga id when empty).
    pub correlation_id: String,
    /// The tenant.
    pub tenant: Option<String>,
}

/// A transition that changes the state: the new state (with its outbox and its history
/// grown by this transition's entries).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    state: SagaState,
    first_new: usize,
}

impl Transition {
    /// The new state (version one above the old one).
    pub fn state(&self) -> &SagaState {
        &self.state
    }

    /// The new state, owned.
    pub fn into_state(self) -> SagaState {
        self.state
    }

    /// The messages to publish once the state is stored.
    pub fn outbox(&self) -> &[Message] {
        &self.state.outbox
    }

    /// The history entries this transition added.
    pub fn history(&self) -> &[HistoryEntry] {
        &self.state.history[self.first_new..]
    }
}

/// Why an input changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ignored {
    /// The saga already ended.
    Finished,
    /// The input is for another step, phase or attempt than the one in flight: late,
    /// duplicate or out of order.
    Stale,
    /// The input names a step, attempt or command the saga never sent.
    Unknown,
    /// A cancel of a saga whose step in flight is its pivot or a step after it: what
    /// those did cannot be undone, so the saga goes on.
    PastPivot,
    /// A redrive of a saga that needs attention without a command to send again
    /// ([`SagaState::halted`] is `None`).
    NotRedrivable,
}

/// The result of applying an input.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
// `Applied` is the common case: boxing it would add an allocation per transition.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// The state moved: store it (one conditional write), then publish its outbox.
    Applied(Transition),
    /// Nothing to do; acknowledge the input.
    Ignored(Ignored),
    /// Nothing due yet: the timer came early (a delay is capped at 15 minutes), or the
    /// saga moved on and now waits for a later time. Send this timer, no write.
    Rearm(Timer),
}

/// Starts saga `id` of definition `saga` with input `data`: version 1, the first command
/// in its outbox.
pub fn start(saga: &Saga, id: &str, data: Value, meta: StartMeta, now_ms: u64) -> Transition {
    let correlation_id = if meta.correlation_id.is_empty() {
        id.to_owned()
    } else {
        meta.correlation_id
    };
    let state = SagaState {
        id: id.to_owned(),
        name: saga.name.clone(),
        definition_version: saga.version,
        status: SagaStatus::Running,
        reason: None,
        cursor: None,
        halted: None,
        steps: vec![StepStatus::Pending; saga.steps.len()],
        step_names: saga.steps.iter().map(|s| s.name.clone()).collect(),
        data,
        outputs: BTreeMap::new(),
        correlation_id,
        tenant: meta.tenant,
        version: 0,
        wake_ms: None,
        created_ms: now_ms,
        updated_ms: now_ms,
        history: Vec::new(),
        outbox: Vec::new(),
    };
    let mut tx = Tx::begin(saga, &state, now_ms);
    tx.log(HistoryEvent::Started {
        definition_version: saga.version,
    });
    tx.send(0, Phase::Action, 1);
    tx.finish()
}

/// Whether `state` has the shape of `saga`: a status per step, and a cursor on one.
pub(crate) fn fits(saga: &Saga, state: &SagaState) -> bool {
    state.steps().len() == saga.steps().len()
        && state
            .cursor()
            .is_none_or(|cursor| (cursor.step as usize) < saga.steps().len())
}

/// Applies `input` to `state` under its definition `saga` at time `now_ms`. Pure: the same
/// arguments give the same outcome.
///
/// A reply is applied only when it answers the command in flight (same step, phase and
/// command id): a success or a refusal from any attempt of it (a participant idempotent by
/// command id gives every attempt the same answer), a technical failure only from the
/// current attempt. Anything else is [`Outcome::Ignored`], so each reply changes the state
/// at most once.
/// A state that does not fit `saga` (a saga redefined under the same name and version)
/// cannot be applied: [`Ignored::Unknown`].
///
/// A redrive applies to a saga that needs attention only, at the version it names: see
/// [`Redrive`].
pub fn transition(saga: &Saga, state: &SagaState, input: &SagaInput, now_ms: u64) -> Outcome {
    if let SagaInput::Redrive(redrive) = input {
        return on_redrive(saga, state, redrive, now_ms);
    }
    if state.status.is_final() {
        return Outcome::Ignored(Ignored::Finished);
    }
    if input.saga_id() != state.id || !fits(saga, state) {
        return Outcome::Ignored(Ignored::Unknown);
    }
    let Some(cursor) = state.cursor.clone() else {
        return Outcome::Ignored(Ignored::Unknown);
    };
    match input {
        SagaInput::Reply(reply) => on_reply(saga, state, &cursor, reply, now_ms),
        SagaInput::Timer(timer) => on_timer(saga, state, &cursor, timer, now_ms),
        SagaInput::Cancel(cancel) => on_cancel(saga, state, &cursor, cancel, now_ms),
        SagaInput::Redrive(_) => Outcome::Ignored(Ignored::Unknown),
    }
}

/// Sends again the command a saga that needs attention stopped on ([`SagaState::halted`]),
/// from its first attempt: under the same id when it may have taken effect, under a new
/// one ([`redriven_command_id`]) when it was refused. A compensation goes on compensating
/// (the reason it compensates for is the one it had), an action after the pivot goes on
/// forward. Applies at the version the redrive names only: a redrive delivered twice, or
/// after the saga stopped again, is [`Ignored::Stale`].
fn on_redrive(saga: &Saga, state: &SagaState, redrive: &Redrive, now_ms: u64) -> Outcome {
    if redrive.saga_id != state.id || !fits(saga, state) {
        return Outcome::Ignored(Ignored::Unknown);
    }
    match state.status {
        SagaStatus::NeedsAttention if redrive.version == state.version => {}
        SagaStatus::Completed | SagaStatus::Compensated => {
            return Outcome::Ignored(Ignored::Finished);
        }
        _ => return Outcome::Ignored(Ignored::Stale),
    }
    let Some(halted) = state.halted.clone() else {
        return Outcome::Ignored(Ignored::NotRedrivable);
    };
    if halted.step as usize >= saga.steps.len() {
        return Outcome::Ignored(Ignored::Unknown);
    }
    let mut tx = Tx::begin(saga, state, now_ms);
    tx.log(HistoryEvent::Redriven {
        step: halted.step,
        phase: halted.phase,
        reason: bounded(&redrive.reason),
    });
    tx.state.halted = None;
    // The timer sent before the saga stopped may have come while it was stopped, and was
    // dropped then (one due later than 15 minutes comes early): send one of its own.
    tx.state.wake_ms = None;
    match halted.phase {
        Phase::Action => {
            tx.state.status = SagaStatus::Running;
            tx.state.reason = None;
        }
        Phase::Compensation => {
            tx.state.status = SagaStatus::Compensating;
            tx.state.reason = compensating_for(state);
        }
    }
    let id = if halted.resend() {
        halted.command_id
    } else {
        redriven_command_id(&state.id, halted.step, halted.phase, state.redrives() + 1)
    };
    tx.send_as(halted.step, halted.phase, 1, id);
    Outcome::Applied(tx.finish())
}

/// Why `state` compensates: the reason of the last compensation it began, or of its
/// cancel.
fn compensating_for(state: &SagaState) -> Option<String> {
    state
        .history
        .iter()
        .rev()
        .find_map(|entry| match &entry.event {
            HistoryEvent::CompensationStarted { reason } => Some(reason.clone()),
            HistoryEvent::Cancelled { reason } => Some(format!("cancelled: {reason}")),
            _ => None,
        })
}

/// Stops a running saga going forward. The step in flight, or waiting to be tried again,
/// may have taken effect: it counts as uncertain, and the saga compensates from it (its
/// compensation included, which a participant keeping rule 4 of the crate's docs makes
/// refuse the action should it arrive later), as when a step runs out of attempts. A saga
/// already compensating goes on as it is ([`Ignored::Stale`]); one whose step in flight is
/// its pivot or after it cannot be undone ([`Ignored::PastPivot`]).
fn on_cancel(
    saga: &Saga,
    state: &SagaState,
    cursor: &Cursor,
    cancel: &Cancel,
    now_ms: u64,
) -> Outcome {
    if cursor.phase == Phase::Compensation {
        return Outcome::Ignored(Ignored::Stale);
    }
    let step = cursor.step as usize;
    if saga.pivot.is_some_and(|pivot| step >= pivot) {
        return Outcome::Ignored(Ignored::PastPivot);
    }
    let reason = bounded(&cancel.reason);
    let mut tx = Tx::begin(saga, state, now_ms);
    tx.log(HistoryEvent::Cancelled {
        reason: reason.clone(),
    });
    tx.state.steps[step] = StepStatus::Uncertain;
    tx.state.status = SagaStatus::Compensating;
    tx.state.reason = Some(format!("cancelled: {reason}"));
    tx.compensate_from(step);
    Outcome::Applied(tx.finish())
}

fn on_reply(
    saga: &Saga,
    state: &SagaState,
    cursor: &Cursor,
    reply: &Reply,
    now_ms: u64,
) -> Outcome {
    if reply.step != cursor.step || reply.phase != cursor.phase {
        return Outcome::Ignored(if (reply.step as usize) < saga.steps.len() {
            Ignored::Stale
        } else {
            Ignored::Unknown
        });
    }
    if reply.command_id != cursor.command_id || reply.attempt == 0 || reply.attempt > cursor.attempt
    {
        return Outcome::Ignored(Ignored::Unknown);
    }
    let mut tx = Tx::begin(saga, state, now_ms);
    let step = cursor.step;
    match &reply.outcome {
        Ok(output) => {
            tx.log(HistoryEvent::Replied {
                step,
                phase: cursor.phase,
                attempt: reply.attempt,
                ok: true,
                reason: None,
            });
            match cursor.phase {
                Phase::Action => tx.action_done(step, output.clone()),
                Phase::Compensation => tx.compensation_done(step),
            }
        }
        Err(StepError::Rejected(reason)) => {
            let reason = &bounded(reason);
            tx.log(HistoryEvent::Replied {
                step,
                phase: cursor.phase,
                attempt: reply.attempt,
                ok: false,
                reason: Some(reason.clone()),
            });
            match cursor.phase {
                Phase::Action => tx.action_failed(step, false, reason),
                Phase::Compensation => tx.needs_attention(
                    format!(
                        "the compensation of step `{}` was refused: {reason}",
                        tx.step_name(step)
                    ),
                    Some(halted_on(cursor, true)),
                ),
            }
        }
        Err(StepError::Failed(reason)) => {
            let current =
                reply.attempt == cursor.attempt && matches!(cursor.waiting, Waiting::Reply { .. });
            if !current {
                return Outcome::Ignored(Ignored::Stale);
            }
            let reason = &bounded(reason);
            tx.log(HistoryEvent::Replied {
                step,
                phase: cursor.phase,
                attempt: reply.attempt,
                ok: false,
                reason: Some(reason.clone()),
            });
            tx.attempt_failed(cursor, reason);
        }
    }
    Outcome::Applied(tx.finish())
}

/// The most of a participant's reason a saga keeps: it is stored up to four times (the
/// history's lines and the saga's reason), and a saga item has 400 KB in all.
pub const MAX_REASON_BYTES: usize = 1024;

/// `reason`, cut to [`MAX_REASON_BYTES`] on a character boundary, with `…` when cut.
fn bounded(reason: &str) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason.to_owned();
    }
    let mut end = MAX_REASON_BYTES - '…'.len_utf8();
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reason[..end])
}

fn on_timer(
    saga: &Saga,
    state: &SagaState,
    cursor: &Cursor,
    timer: &Timer,
    now_ms: u64,
) -> Outcome {
    // A timer wakes the saga up; what it does depends on what the saga waits for now,
    // not on the attempt that sent it (one timer serves several steps).
    let (kind, due_ms) = match cursor.waiting {
        Waiting::Reply { deadline_ms } => (TimerKind::Timeout, deadline_ms),
        Waiting::Retry { due_ms } => (TimerKind::Retry, due_ms),
    };
    let wait = |due_ms| {
        Outcome::Rearm(Timer {
            saga_id: state.id.clone(),
            kind,
            step: cursor.step,
            phase: cursor.phase,
            attempt: cursor.attempt,
            due_ms,
        })
    };
    if now_ms < timer.due_ms {
        // Early: a delay stops at 15 minutes. It keeps its own due time, which later
        // transitions rely on.
        return wait(timer.due_ms);
    }
    if now_ms < due_ms {
        // The saga moved on since: wait for what it waits for now, unless a transition
        // sent a timer for then (or before) that is still to come. Sent again, this copy
        // would only double that one, and both would be sent again at every wait after.
        if state
            .wake_ms
            .is_some_and(|wake| now_ms < wake && wake <= due_ms)
        {
            return Outcome::Ignored(Ignored::Stale);
        }
        return wait(due_ms);
    }
    let mut tx = Tx::begin(saga, state, now_ms);
    match kind {
        TimerKind::Timeout => {
            tx.log(HistoryEvent::TimedOut {
                step: cursor.step,
                phase: cursor.phase,
                attempt: cursor.attempt,
            });
            let timeout = saga.steps[cursor.step as usize].timeout;
            tx.attempt_failed(cursor, &format!("timed out after {timeout:?}"));
        }
        TimerKind::Retry => tx.send(cursor.step, cursor.phase, cursor.attempt),
    }
    Outcome::Applied(tx.finish())
}

/// The transition that ends `state` as [`SagaStatus::NeedsAttention`] with `reason`, its
/// in-flight work left as it is: for an input the saga cannot take (one that would make it
/// too large to store).
pub(crate) fn park(saga: &Saga, state: &SagaState, reason: String, now_ms: u64) -> Transition {
    let mut tx = Tx::begin(saga, state, now_ms);
    // Not redrivable: the participant would answer the same again.
    tx.needs_attention(reason, None);
    tx.finish()
}

/// The command in flight at `cursor`, as a saga that stops on it keeps it.
fn halted_on(cursor: &Cursor, refused: bool) -> Halted {
    Halted {
        step: cursor.step,
        phase: cursor.phase,
        command_id: cursor.command_id.clone(),
        refused,
    }
}

/// A transition being built on a copy of the state.
struct Tx<'a> {
    saga: &'a Saga,
    state: SagaState,
    first_new: usize,
    now_ms: u64,
}

impl<'a> Tx<'a> {
    fn begin(saga: &'a Saga, state: &SagaState, now_ms: u64) -> Self {
        let mut state = state.clone();
        state.version += 1;
        state.updated_ms = now_ms.max(state.updated_ms);
        state.outbox.clear();
        let first_new = state.history.len();
        Tx {
            saga,
            state,
            first_new,
            now_ms,
        }
    }

    fn finish(self) -> Transition {
        Transition {
            state: self.state,
            first_new: self.first_new,
        }
    }

    fn log(&mut self, event: HistoryEvent) {
        self.state.history.push(HistoryEntry {
            version: self.state.version,
            at_ms: self.now_ms,
            event,
        });
    }

    fn step_name(&self, step: u32) -> &str {
        &self.saga.steps[step as usize].name
    }

    /// Sends attempt `attempt` of `step`'s `phase`, with its timeout timer, under the id
    /// of the command in flight when it is the same step and phase (a retry), else under
    /// the step's own id.
    fn send(&mut self, step: u32, phase: Phase, attempt: u32) {
        let id = match &self.state.cursor {
            Some(cursor) if cursor.step == step && cursor.phase == phase => {
                cursor.command_id.clone()
            }
            _ => command_id(&self.state.id, step, phase),
        };
        self.send_as(step, phase, attempt, id);
    }

    /// [`send`](Self::send) under command id `id`.
    fn send_as(&mut self, step: u32, phase: Phase, attempt: u32, id: String) {
        let definition = &self.saga.steps[step as usize];
        let target = match definition.work(phase) {
            Some(Work::Remote {
                participant,
                command,
            }) => Target::Remote {
                participant: participant.clone(),
                command: command.clone(),
            },
            Some(Work::Local(_)) | None => Target::Local,
        };
        let deadline_ms = self
            .now_ms
            .saturating_add(u64::try_from(definition.timeout.as_millis()).unwrap_or(u64::MAX));
        self.state.steps[step as usize] = match phase {
            Phase::Action => StepStatus::Running,
            Phase::Compensation => StepStatus::Compensating,
        };
        self.state.cursor = Some(Cursor {
            step,
            phase,
            attempt,
            command_id: id.clone(),
            waiting: Waiting::Reply { deadline_ms },
        });
        self.state.outbox.push(Message::Command(Command {
            command_id: id,
            saga_id: self.state.id.clone(),
            saga: self.state.name.clone(),
            step,
            step_name: definition.name.clone(),
            phase,
            attempt,
            target,
            data: self.state.data.clone(),
            outputs: self.state.outputs.clone(),
            correlation_id: self.state.correlation_id.clone(),
            tenant: self.state.tenant.clone(),
            snapshot: None,
        }));
        self.arm(TimerKind::Timeout, step, phase, attempt, deadline_ms);
        self.log(HistoryEvent::CommandSent {
            step,
            phase,
            attempt,
        });
    }

    /// Makes sure a timer wakes the saga up at `due_ms` or before: a timer sent earlier
    /// that is still to come, due no later, does (when it comes, the saga waits for
    /// `due_ms`, so it is sent again for then); otherwise a new one goes in the outbox.
    /// On the happy path a saga thus sends one timer in all, not one per attempt.
    fn arm(&mut self, kind: TimerKind, step: u32, phase: Phase, attempt: u32, due_ms: u64) {
        let pending = self
            .state
            .wake_ms
            .is_some_and(|wake| self.now_ms < wake && wake <= due_ms);
        if pending {
            return;
        }
        self.state.wake_ms = Some(due_ms);
        self.state.outbox.push(Message::Timer(Timer {
            saga_id: self.state.id.clone(),
            kind,
            step,
            phase,
            attempt,
            due_ms,
        }));
    }

    /// A technical failure or a timeout of the current attempt: retry, or give up.
    fn attempt_failed(&mut self, cursor: &Cursor, reason: &str) {
        let definition = &self.saga.steps[cursor.step as usize];
        let policy = *definition.policy(cursor.phase);
        if cursor.attempt < policy.max_attempts() {
            let attempt = cursor.attempt + 1;
            let backoff = u64::try_from(policy.backoff(attempt).as_millis()).unwrap_or(u64::MAX);
            let due_ms = self.now_ms.saturating_add(backoff);
            self.state.cursor = Some(Cursor {
                attempt,
                waiting: Waiting::Retry { due_ms },
                ..cursor.clone()
            });
            self.arm(TimerKind::Retry, cursor.step, cursor.phase, attempt, due_ms);
            self.log(HistoryEvent::RetryScheduled {
                step: cursor.step,
                phase: cursor.phase,
                attempt,
                due_ms,
            });
            return;
        }
        let reason = format!(
            "step `{}` failed {} times: {reason}",
            definition.name, cursor.attempt
        );
        match cursor.phase {
            Phase::Action => {
                self.log(HistoryEvent::StepUncertain { step: cursor.step });
                self.action_failed(cursor.step, true, &reason);
            }
            Phase::Compensation => self.needs_attention(
                format!("the compensation of {reason}"),
                Some(halted_on(cursor, false)),
            ),
        }
    }

    fn action_done(&mut self, step: u32, output: Value) {
        let index = step as usize;
        self.state.steps[index] = StepStatus::Done;
        self.state
            .outputs
            .insert(self.saga.steps[index].name.clone(), output);
        if index + 1 < self.saga.steps.len() {
            self.send(step + 1, Phase::Action, 1);
        } else {
            self.end(SagaStatus::Completed, None);
        }
    }

    /// The action of `step` failed for good: refused (`uncertain == false`) or out of
    /// attempts (it may have taken effect).
    fn action_failed(&mut self, step: u32, uncertain: bool, reason: &str) {
        let index = step as usize;
        self.state.steps[index] = if uncertain {
            StepStatus::Uncertain
        } else {
            StepStatus::Rejected
        };
        let name = &self.saga.steps[index].name;
        if let Some(pivot) = self.saga.pivot {
            let halted = self.state.cursor.as_ref().map(|c| halted_on(c, !uncertain));
            if index > pivot {
                let reason = format!("step `{name}` after the pivot failed: {reason}");
                return self.needs_attention(reason, halted);
            }
            if index == pivot && uncertain {
                let reason = format!("the pivot `{name}` may have taken effect: {reason}");
                return self.needs_attention(reason, halted);
            }
        }
        self.state.status = SagaStatus::Compensating;
        self.state.reason = Some(reason.to_owned());
        self.log(HistoryEvent::CompensationStarted {
            reason: reason.to_owned(),
        });
        self.compensate_from(index);
    }

    /// Compensates the highest step at or below `upper` that completed (or may have) and
    /// has a compensation; ends `Compensated` when none is left.
    fn compensate_from(&mut self, upper: usize) {
        let next = (0..=upper).rev().find(|&j| {
            matches!(
                self.state.steps[j],
                StepStatus::Done | StepStatus::Uncertain
            ) && self.saga.steps[j].compensation.is_some()
        });
        match next {
            Some(j) => self.send(j as u32, Phase::Compensation, 1),
            None => {
                let reason = self.state.reason.clone();
                self.end(SagaStatus::Compensated, reason);
            }
        }
    }

    fn compensation_done(&mut self, step: u32) {
        let index = step as usize;
        self.state.steps[index] = StepStatus::Compensated;
        if index == 0 {
            let reason = self.state.reason.clone();
            self.end(SagaStatus::Compensated, reason);
        } else {
            self.compensate_from(index - 1);
        }
    }

    /// Ends the saga for a person to look at, keeping the command it stopped on (when a
    /// redrive can send it again).
    fn needs_attention(&mut self, reason: String, halted: Option<Halted>) {
        self.end(SagaStatus::NeedsAttention, Some(reason));
        self.state.halted = halted;
    }

    fn end(&mut self, status: SagaStatus, reason: Option<String>) {
        self.state.status = status;
        self.state.reason.clone_from(&reason);
        self.state.cursor = None;
        self.state.outbox.push(Message::Finished(Finished {
            saga_id: self.state.id.clone(),
            saga: self.state.name.clone(),
            status,
            reason: reason.clone(),
            correlation_id: self.state.correlation_id.clone(),
            tenant: self.state.tenant.clone(),
        }));
        self.log(HistoryEvent::Finished { status, reason });
    }
}
