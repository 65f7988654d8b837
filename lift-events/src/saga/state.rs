//! The state of one saga instance, its history and its outbox.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StepError;

/// Whether a command runs a step's action or its compensation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The step's action.
    Action,
    /// The step's compensation.
    Compensation,
}

impl Phase {
    fn letter(self) -> &'static str {
        match self {
            Phase::Action => "a",
            Phase::Compensation => "c",
        }
    }
}

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SagaStatus {
    /// Running its actions forward.
    Running,
    /// A step failed: undoing the completed steps in reverse order.
    Compensating,
    /// Every step completed. Final.
    Completed,
    /// A step failed and every completed step was undone. Final.
    Compensated,
    /// Stuck: a compensation kept failing, or a step after the pivot did. A person must
    /// look; [`SagaState::reason`] says why. Final for the orchestrator, until someone
    /// redrives it ([`Orchestrator::redrive`](super::Orchestrator::redrive)).
    NeedsAttention,
}

impl SagaStatus {
    /// Whether the orchestrator is done with the saga (until someone redrives one that
    /// needs attention).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::NeedsAttention
        )
    }

    /// The status as stored (`running`, `needs_attention`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::NeedsAttention => "needs_attention",
        }
    }
}

/// Where one step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Its action was sent; no answer yet.
    Running,
    /// Its action succeeded.
    Done,
    /// Its action was refused: nothing took effect, nothing to undo.
    Rejected,
    /// Its attempts ran out without an answer: it may have taken effect, so it is
    /// compensated like a completed step.
    Uncertain,
    /// Its compensation was sent; no answer yet.
    Compensating,
    /// Its compensation succeeded.
    Compensated,
}

/// What the saga waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "for")]
#[non_exhaustive]
pub enum Waiting {
    /// The reply to the current attempt, until `deadline_ms`.
    Reply {
        /// When the attempt times out (ms since the epoch).
        deadline_ms: u64,
    },
    /// The retry timer of the current attempt, due at `due_ms`.
    Retry {
        /// When the attempt is sent (ms since the epoch).
        due_ms: u64,
    },
}

/// The command in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The step's index.
    pub step: u32,
    /// Action or compensation.
    pub phase: Phase,
    /// The attempt, from 1.
    pub attempt: u32,
    /// The command id (the same for every attempt of this step and phase).
    pub command_id: String,
    /// What the saga waits for.
    pub waiting: Waiting,
}

/// The id of the command of `step`'s `phase` in saga `saga_id`: the same for every attempt
/// (and every redrive, but that of a refused command: [`redriven_command_id`]), so a
/// participant idempotent by command id applies the step at most once.
pub fn command_id(saga_id: &str, step: u32, phase: Phase) -> String {
    format!("{saga_id}:{step}:{}", phase.letter())
}

/// The id of the command that redrive `redrive` (from 1) sends for `step`'s `phase` when
/// the command the saga stopped on was refused: a participant answers a command id it
/// recorded with its recorded outcome, so a refusal sent again under the same id would be
/// refused again. A command that may have taken effect keeps its id instead
/// ([`Halted::resend`]).
pub fn redriven_command_id(saga_id: &str, step: u32, phase: Phase, redrive: u32) -> String {
    format!("{}:r{redrive}", command_id(saga_id, step, phase))
}

/// The command a saga that needs attention stopped on, kept so that a redrive
/// ([`Orchestrator::redrive`](super::Orchestrator::redrive)) can send it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halted {
    /// The step's index.
    pub step: u32,
    /// Action or compensation.
    pub phase: Phase,
    /// The id it was sent with.
    pub command_id: String,
    /// Whether its participant refused it (nothing took effect, and the refusal is
    /// recorded under its id), rather than its attempts running out (it may have taken
    /// effect).
    pub refused: bool,
}

impl Halted {
    /// Whether a redrive sends it again under the same id: when it may have taken effect,
    /// so that a participant idempotent by command id does not act twice. A refused one
    /// goes under a new id ([`redriven_command_id`]).
    pub fn resend(&self) -> bool {
        !self.refused
    }
}

/// Where a command runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Target {
    /// A command event of type `command` to `participant`.
    Remote {
        /// The participant service.
        participant: String,
        /// The command's event type.
        command: String,
    },
    /// A local step, run by the orchestrator itself.
    Local,
}

/// A command decided by a transition: run a step's action or compensation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Command {
    /// The id a participant is idempotent by.
    pub command_id: String,
    /// The saga instance.
    pub saga_id: String,
    /// The saga's name.
    pub saga: String,
    /// The step's index.
    pub step: u32,
    /// The step's name.
    pub step_name: String,
    /// Action or compensation.
    pub phase: Phase,
    /// The attempt, from 1.
    pub attempt: u32,
    /// Where it runs.
    pub target: Target,
    /// The saga's input data.
    pub data: Value,
    /// The outputs of the completed steps, by step name.
    pub outputs: BTreeMap<String, Value>,
    /// The saga's correlation id.
    pub correlation_id: String,
    /// The saga's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The saga as stored by the transition that sent this command (without its outbox),
    /// attached by the relay. A participant hands it back in its [`Reply`] unchanged
    /// ([`Reply::to`] does), so the orchestrator applies the reply without reading the
    /// saga first. Absent from the stored outbox, and when the saga is too large to carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
}

impl Command {
    /// The id of its step's phase, [`command_id`]`(saga_id, step, phase)`: the same for
    /// every attempt and every redrive. [`command_id`](Command::command_id) is that id too,
    /// except for a refused command sent again by a redrive, which goes under a new one so
    /// that a participant does not answer it with its recorded refusal. Key the effect's
    /// own record (rule 3 of the crate's docs) on this id: a command delivered again under
    /// an older id, once its participant forgot it, then finds the effect of a newer one.
    pub fn step_id(&self) -> String {
        command_id(&self.saga_id, self.step, self.phase)
    }

    /// The step id of its step's action, [`command_id`]`(saga_id, step, Phase::Action)`,
    /// whichever phase it is: where a compensation records that its action is cancelled
    /// (rule 4 of the crate's docs), so that the action arriving late is refused.
    pub fn action_id(&self) -> String {
        command_id(&self.saga_id, self.step, Phase::Action)
    }
}

/// The saga a [`Command`] carries and its [`Reply`] hands back ([`Command::snapshot`]),
/// kept as the JSON it came as. A participant passes it on without reading it, so a
/// participant on this release or a later one runs a command whose saga it could not read
/// (one written by a later release, with a status or history entry added since) instead of
/// refusing it. The orchestrator reads the stored saga when a snapshot does not read as a
/// saga; an orchestrator cannot run sagas a later release wrote, from a snapshot or from
/// the store, so orchestrators are upgraded after the participants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Snapshot(Value);

impl Snapshot {
    /// `state` as a command carries it: without its outbox.
    ///
    /// # Errors
    /// When the state does not serialise as JSON.
    pub fn of(state: &SagaState) -> Result<Self, serde_json::Error> {
        let mut carried = state.clone();
        carried.outbox.clear();
        serde_json::to_value(&carried).map(Snapshot)
    }

    /// The saga it carries.
    ///
    /// # Errors
    /// When it is not a saga as this release of the crate writes one.
    pub fn state(&self) -> Result<SagaState, serde_json::Error> {
        SagaState::deserialize(&self.0)
    }
}

/// Why a timer was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TimerKind {
    /// The attempt's timeout.
    Timeout,
    /// The backoff before a retry.
    Retry,
}

/// A durable timer: delivered back to the orchestrator at `due_ms` (an SQS message with a
/// delay; one due more than 15 minutes ahead is re-sent until it is due).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    /// The saga instance.
    pub saga_id: String,
    /// Timeout or retry.
    pub kind: TimerKind,
    /// The step's index.
    pub step: u32,
    /// Action or compensation.
    pub phase: Phase,
    /// The attempt it belongs to.
    pub attempt: u32,
    /// When it is due (ms since the epoch).
    pub due_ms: u64,
}

/// A saga ended: published so others can follow sagas without reading the table. A saga
/// that ended needing attention and is redriven ends again later, and publishes another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    /// The saga instance.
    pub saga_id: String,
    /// The saga's name.
    pub saga: String,
    /// `Completed`, `Compensated` or `NeedsAttention`.
    pub status: SagaStatus,
    /// Why, unless it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The saga's correlation id.
    pub correlation_id: String,
    /// The saga's tenant, when it has one: the envelope of the event carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// A message a transition decided; written in the same conditional write as the state,
/// published after it by the relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "message")]
#[non_exhaustive]
pub enum Message {
    /// A command to a participant (or a local step).
    Command(Command),
    /// A durable timer back to the orchestrator.
    Timer(Timer),
    /// The saga ended.
    Finished(Finished),
}

/// A reply to a command: the step's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The saga instance.
    pub saga_id: String,
    /// The command answered.
    pub command_id: String,
    /// The step's index.
    pub step: u32,
    /// Action or compensation.
    pub phase: Phase,
    /// The attempt answered.
    pub attempt: u32,
    /// The step's output, or why it failed.
    pub outcome: Result<Value, StepError>,
    /// The command's [`Command::snapshot`], handed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
}

impl Reply {
    /// The reply to `command` with `outcome`.
    pub fn to(command: &Command, outcome: Result<Value, StepError>) -> Self {
        Reply {
            saga_id: command.saga_id.clone(),
            command_id: command.command_id.clone(),
            step: command.step,
            phase: command.phase,
            attempt: command.attempt,
            outcome,
            snapshot: command.snapshot.clone(),
        }
    }
}

/// A request to stop a running saga and undo what it did
/// ([`Orchestrator::cancel`](super::Orchestrator::cancel)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    /// The saga instance.
    pub saga_id: String,
    /// Why, kept in the saga's history and as its reason.
    pub reason: String,
}

/// A request to send again the command a saga that needs attention stopped on
/// ([`Orchestrator::redrive`](super::Orchestrator::redrive)), once what stopped it is
/// fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redrive {
    /// The saga instance.
    pub saga_id: String,
    /// The version the saga had when someone decided to redrive it: a redrive applies to
    /// that version only, so one delivered twice, or after the saga stopped again, does
    /// nothing.
    pub version: u64,
    /// Why, kept in the saga's history.
    pub reason: String,
}

/// What moves a saga: a reply, a timer, a cancel or a redrive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "input")]
#[non_exhaustive]
pub enum SagaInput {
    /// A reply from a participant or a local step.
    Reply(Reply),
    /// A timer came due.
    Timer(Timer),
    /// Someone cancelled the saga.
    Cancel(Cancel),
    /// Someone redrove a saga that needs attention.
    Redrive(Redrive),
}

impl SagaInput {
    /// The saga it is for.
    pub fn saga_id(&self) -> &str {
        match self {
            SagaInput::Reply(r) => &r.saga_id,
            SagaInput::Timer(t) => &t.saga_id,
            SagaInput::Cancel(c) => &c.saga_id,
            SagaInput::Redrive(r) => &r.saga_id,
        }
    }
}

/// What happened in a transition, as kept in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
#[non_exhaustive]
pub enum HistoryEvent {
    /// The saga started with this definition version.
    Started {
        /// The definition's version.
        definition_version: u32,
    },
    /// A command was decided.
    CommandSent {
        /// The step's index.
        step: u32,
        /// Action or compensation.
        phase: Phase,
        /// The attempt.
        attempt: u32,
    },
    /// A reply was applied.
    Replied {
        /// The step's index.
        step: u32,
        /// Action or compensation.
        phase: Phase,
        /// The attempt answered.
        attempt: u32,
        /// Whether it succeeded.
        ok: bool,
        /// Why it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// An attempt timed out.
    TimedOut {
        /// The step's index.
        step: u32,
        /// Action or compensation.
        phase: Phase,
        /// The attempt.
        attempt: u32,
    },
    /// A retry was scheduled.
    RetryScheduled {
        /// The step's index.
        step: u32,
        /// Action or compensation.
        phase: Phase,
        /// The next attempt.
        attempt: u32,
        /// When it is sent (ms since the epoch).
        due_ms: u64,
    },
    /// A step's action ran out of attempts without an answer.
    StepUncertain {
        /// The step's index.
        step: u32,
    },
    /// Compensation began.
    CompensationStarted {
        /// Why.
        reason: String,
    },
    /// The saga was cancelled: it compensates from the step that was in flight, which
    /// may have taken effect.
    Cancelled {
        /// Why.
        reason: String,
    },
    /// A saga that needed attention was redriven: the command it stopped on is sent again.
    Redriven {
        /// The step's index.
        step: u32,
        /// Action or compensation.
        phase: Phase,
        /// Why.
        reason: String,
    },
    /// The saga ended.
    Finished {
        /// The final status.
        status: SagaStatus,
        /// Why, unless it completed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// One line of a saga's history: the transition (state version) it belongs to, when, and
/// what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The state version the transition wrote.
    pub version: u64,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub event: HistoryEvent,
}

/// The state of one saga instance, as stored: status, per-step status, data, version,
/// history and the outbox of its last transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaState {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) definition_version: u32,
    pub(crate) status: SagaStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cursor: Option<Cursor>,
    /// The command a saga that needs attention stopped on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) halted: Option<Halted>,
    pub(crate) steps: Vec<StepStatus>,
    /// The steps' names, for reading the saga without its definition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) step_names: Vec<String>,
    pub(crate) data: Value,
    #[serde(default)]
    pub(crate) outputs: BTreeMap<String, Value>,
    pub(crate) correlation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tenant: Option<String>,
    pub(crate) version: u64,
    /// The due time of the last timer a transition sent (ms since the epoch): a later
    /// transition whose due time is not earlier relies on it instead of sending another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) wake_ms: Option<u64>,
    pub(crate) created_ms: u64,
    pub(crate) updated_ms: u64,
    #[serde(default)]
    pub(crate) history: Vec<HistoryEntry>,
    #[serde(default)]
    pub(crate) outbox: Vec<Message>,
}

impl SagaState {
    /// The saga instance's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The saga's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The definition version it started with (and keeps).
    pub fn definition_version(&self) -> u32 {
        self.definition_version
    }

    /// Where it is.
    pub fn status(&self) -> SagaStatus {
        self.status
    }

    /// Why it compensated or needs attention.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The command in flight.
    pub fn cursor(&self) -> Option<&Cursor> {
        self.cursor.as_ref()
    }

    /// The command a saga that needs attention stopped on, when a redrive can send it
    /// again. `None` for any other saga, for one stopped because an input would have made
    /// it too large to store (the participant would give the same answer again), and for
    /// one that ended needing attention under a release that did not keep it.
    pub fn halted(&self) -> Option<&Halted> {
        self.halted.as_ref()
    }

    /// How many times the saga was redriven: its [`HistoryEvent::Redriven`] entries.
    pub fn redrives(&self) -> u32 {
        let count = self
            .history
            .iter()
            .filter(|entry| matches!(entry.event, HistoryEvent::Redriven { .. }))
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Each step's status, in order.
    pub fn steps(&self) -> &[StepStatus] {
        &self.steps
    }

    /// The saga's input data.
    pub fn data(&self) -> &Value {
        &self.data
    }

    /// The completed steps' outputs, by step name.
    pub fn outputs(&self) -> &BTreeMap<String, Value> {
        &self.outputs
    }

    /// The correlation id its events carry.
    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }

    /// The tenant its events carry.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// Whether the saga was cancelled: its history holds a [`HistoryEvent::Cancelled`].
    pub fn cancelled(&self) -> bool {
        self.history
            .iter()
            .any(|entry| matches!(entry.event, HistoryEvent::Cancelled { .. }))
    }

    /// The state version: 1 after the start, one more per transition.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When it started (ms since the epoch).
    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    /// When it last moved (ms since the epoch).
    pub fn updated_ms(&self) -> u64 {
        self.updated_ms
    }

    /// Every transition, in order.
    pub fn history(&self) -> &[HistoryEntry] {
        &self.history
    }

    /// The messages the last transition decided.
    pub fn outbox(&self) -> &[Message] {
        &self.outbox
    }

    /// The commands among them.
    pub fn commands(&self) -> impl Iterator<Item = &Command> {
        self.outbox.iter().filter_map(|m| match m {
            Message::Command(c) => Some(c),
            _ => None,
        })
    }
}

impl SagaState {
    /// The history as a timeline, one line per entry: the version, the time since the
    /// start, and what happened, with step names from `saga` (the definition it started
    /// with).
    ///
    /// ```text
    /// v1  +0ms      started (definition 1)
    /// v1  +0ms      sent reserve (action, attempt 1)
    /// v2  +120ms    reserve answered ok (attempt 1)
    /// ```
    pub fn timeline(&self, saga: &super::Saga) -> String {
        let names: Vec<&str> = saga.steps().iter().map(|s| s.name()).collect();
        self.timeline_with(&names)
    }

    /// The step names, in order, as the saga's definition gave them at its start (empty
    /// for a saga stored before they were kept).
    pub fn step_names(&self) -> &[String] {
        &self.step_names
    }

    /// [`timeline`](Self::timeline) with the step names the saga keeps (see
    /// [`step_names`](Self::step_names)): no definition needed, as for a command-line
    /// tool reading the table.
    pub fn stored_timeline(&self) -> String {
        let names: Vec<&str> = self.step_names.iter().map(String::as_str).collect();
        self.timeline_with(&names)
    }

    fn timeline_with(&self, names: &[&str]) -> String {
        use std::fmt::Write;
        let name = |step: u32| {
            names
                .get(step as usize)
                .map_or_else(|| format!("#{step}"), |s| (*s).to_owned())
        };
        let phase = |p: Phase| match p {
            Phase::Action => "action",
            Phase::Compensation => "compensation",
        };
        let mut out = String::new();
        for entry in &self.history {
            let what = match &entry.event {
                HistoryEvent::Started { definition_version } => {
                    format!("started (definition {definition_version})")
                }
                HistoryEvent::CommandSent {
                    step,
                    phase: p,
                    attempt,
                } => format!("sent {} ({}, attempt {attempt})", name(*step), phase(*p)),
                HistoryEvent::Replied {
                    step,
                    phase: p,
                    attempt,
                    ok,
                    reason,
                } => format!(
                    "{} {} {} (attempt {attempt}){}",
                    name(*step),
                    phase(*p),
                    if *ok { "answered ok" } else { "failed" },
                    reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
                HistoryEvent::TimedOut {
                    step,
                    phase: p,
                    attempt,
                } => format!(
                    "{} {} timed out (attempt {attempt})",
                    name(*step),
                    phase(*p)
                ),
                HistoryEvent::RetryScheduled {
                    step,
                    phase: p,
                    attempt,
                    due_ms,
                } => format!(
                    "retry {} {} as attempt {attempt} at +{}ms",
                    name(*step),
                    phase(*p),
                    due_ms.saturating_sub(self.created_ms)
                ),
                HistoryEvent::StepUncertain { step } => {
                    format!("{} out of attempts: may have taken effect", name(*step))
                }
                HistoryEvent::CompensationStarted { reason } => format!("compensating: {reason}"),
                HistoryEvent::Cancelled { reason } => format!("cancelled: {reason}"),
                HistoryEvent::Redriven {
                    step,
                    phase: p,
                    reason,
                } => format!("redriven: {} {} again: {reason}", name(*step), phase(*p)),
                HistoryEvent::Finished { status, reason } => format!(
                    "ended {}{}",
                    status.as_str(),
                    reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
            };
            let _ = writeln!(
                out,
                "v{:<3} +{:<8} {what}",
                entry.version,
                format!("{}ms", entry.at_ms.saturating_sub(self.created_ms))
            );
        }
        out
    }
}
