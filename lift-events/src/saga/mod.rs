//! Sagas: multi-step business transactions, each step with a compensation, driven by
//! events, with their state in one DynamoDB item per instance.
//!
//! - [`Saga`] defines one: a name, a version, ordered [`Step`]s ([`remote`] commands to
//!   participants or [`local`] async fns), an optional pivot, a [`RetryPolicy`] and a
//!   timeout per step.
//! - [`start`] and [`transition`] are the whole state machine, pure and deterministic:
//!   (state, input, now) → new state, the messages to publish (its outbox) and the history
//!   entries it adds.
//! - [`Orchestrator`] runs it over a [`SagaStore`](crate::store::SagaStore): each input is
//!   one conditional write (no read when a reply carries the saga).

mod definition;
mod orchestrator;
mod state;
mod transition;

pub use definition::{
    Action, MAX_ATTEMPTS, Registry, RetryPolicy, Saga, SagaBuilder, Step, StepCall, StepError,
    StepFuture, StepResult, local, remote,
};
pub use orchestrator::{Handled, MAX_ID_BYTES, Orchestrator, OrchestratorError};
pub use state::{
    Cancel, Command, Cursor, Finished, Halted, HistoryEntry, HistoryEvent, Message, Phase, Redrive,
    Reply, SagaInput, SagaState, SagaStatus, Snapshot, StepStatus, Target, Timer, TimerKind,
    Waiting, command_id, redriven_command_id,
};
pub use transition::{
    Ignored, MAX_REASON_BYTES, Outcome, StartMeta, Transition, start, transition,
};

#[cfg(test)]
mod tests;
