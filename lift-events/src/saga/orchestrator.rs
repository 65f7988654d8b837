//! The orchestrator: applies inputs to stored sagas, one conditional write each.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::definition::{Registry, Saga, StepCall, Work};
use super::state::{
    Cancel, Command, HistoryEvent, Message, Redrive, Reply, SagaInput, SagaState, SagaStatus,
    Target, Timer,
};
use super::transition::{Ignored, Outcome, StartMeta, fits, park, start, transition};
use crate::store::{SagaStore, StoreError};

type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// How many times an input is re-applied after losing a conditional write.
const MAX_CONFLICTS: u32 = 5;

/// What became of an input.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
// `Applied` is the common case: boxing it would add an allocation per transition.
#[allow(clippy::large_enum_variant)]
pub enum Handled {
    /// The saga moved (possibly several times, when local steps ran inline); this is its
    /// stored state.
    Applied(SagaState),
    /// Nothing changed: the input was late, a duplicate, or for a finished saga.
    Ignored(Ignored),
    /// A timer came early: send it again (no write happened).
    Rearm(Timer),
}

/// Why the orchestrator could not apply an input. The input must be delivered again
/// (leave the message on its queue), which is safe: delivered again, it is applied once.
/// A store that failed may still have written the transition (its answer lost, or the
/// call's time limit reached while the write was on its way); its local steps then wait
/// for the step's timer, and the input delivered again is found applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrchestratorError {
    /// No saga with this id exists.
    #[error("no saga `{0}`")]
    UnknownSaga(String),
    /// The saga's definition (name and version) is not in the registry.
    #[error("no definition `{name}` version {version}")]
    UnknownDefinition {
        /// The saga's name.
        name: String,
        /// The version it started with.
        version: u32,
    },
    /// The saga's steps do not fit its definition (a definition changed without a new
    /// version): applying an input to it could not be done safely.
    #[error(
        "saga `{id}` has {steps} steps where its definition `{name}` version {version} has {defined}"
    )]
    DefinitionMismatch {
        /// The saga.
        id: String,
        /// The saga's name.
        name: String,
        /// The version it started with.
        version: u32,
        /// The steps the saga has.
        steps: usize,
        /// The steps the definition has.
        defined: usize,
    },
    /// The saga's data does not serialize.
    #[error("the saga's data does not serialize: {0}")]
    Data(String),
    /// The saga's id, correlation id or tenant could not travel with its messages, which
    /// carry them as SQS message attributes: the id or the tenant is empty, the id longer
    /// than [`MAX_ID_BYTES`], or one holds a character SQS refuses there (as in a message
    /// body: a control character other than tab, line feed and carriage return; U+FFFE;
    /// U+FFFF). Nothing is stored:
    /// started, such a saga's timers would be refused for good, and it would wait forever.
    #[error("the saga's {field} cannot travel with its messages: {reason}")]
    Unsendable {
        /// `id`, `correlation_id` or `tenant`.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A saga with this id is stored, and it was started with another definition name,
    /// another tenant or other data: this start is not a retry of that one. Nothing is
    /// changed, and nothing of the stored saga is told (it may be another tenant's).
    #[error("saga `{0}` exists, started with another definition, tenant or data")]
    AlreadyExists(String),
    /// The saga cannot be cancelled: it completed, it needs attention (without having
    /// been cancelled), or its step in flight is its pivot or a step after it. Nothing was
    /// changed.
    #[error("saga `{id}` cannot be cancelled: it is {} (a running saga is past its pivot)", status.as_str())]
    NotCancellable {
        /// The saga.
        id: String,
        /// Its status when the cancel found it.
        status: SagaStatus,
    },
    /// The saga cannot be redriven at the version named: it does not need attention, it
    /// moved on since that version, or it needs attention with no command to send again
    /// ([`SagaState::halted`] is `None`). Nothing was changed.
    #[error("saga `{id}` cannot be redriven at version {asked}: it is {} at version {version}{}", status.as_str(), if !*halted && *status == SagaStatus::NeedsAttention { " with no command to send again" } else { "" })]
    NotRedrivable {
        /// The saga.
        id: String,
        /// The version the redrive named.
        asked: u64,
        /// Its status when the redrive found it.
        status: SagaStatus,
        /// Its version then.
        version: u64,
        /// Whether it kept the command it stopped on.
        halted: bool,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a handler that starts, cancels or redrives sagas answers for each error, so that
/// `?` can take it: 409 `saga_exists` for [`OrchestratorError::AlreadyExists`], 409
/// `saga_not_cancellable` for [`OrchestratorError::NotCancellable`], 409
/// `saga_not_redrivable` for [`OrchestratorError::NotRedrivable`], 404 for
/// [`OrchestratorError::UnknownSaga`]; 400 for an id, correlation id, tenant or data the
/// saga cannot take ([`OrchestratorError::Unsendable`], [`OrchestratorError::Data`]); 500
/// for the rest (the log has the cause), so that a failed store is retried.
impl From<OrchestratorError> for lift_core::Error {
    fn from(error: OrchestratorError) -> Self {
        match error {
            OrchestratorError::AlreadyExists(_) => lift_core::Error::new(
                lift_core::http::StatusCode::CONFLICT,
                "saga_exists",
                error.to_string(),
            ),
            OrchestratorError::NotCancellable { .. } => lift_core::Error::new(
                lift_core::http::StatusCode::CONFLICT,
                "saga_not_cancellable",
                error.to_string(),
            ),
            OrchestratorError::NotRedrivable { .. } => lift_core::Error::new(
                lift_core::http::StatusCode::CONFLICT,
                "saga_not_redrivable",
                error.to_string(),
            ),
            OrchestratorError::UnknownSaga(_) => lift_core::Error::not_found(error.to_string()),
            OrchestratorError::Unsendable { .. } | OrchestratorError::Data(_) => {
                lift_core::Error::bad_request(error.to_string())
            }
            other => lift_core::Error::internal(other),
        }
    }
}

/// The longest saga id [`Orchestrator::start`] takes: room for the step names and suffixes
/// of its command ids within DynamoDB's 2,048-byte key.
pub const MAX_ID_BYTES: usize = 512;

/// Why `value` (a saga's `field`) could not travel as an SQS message attribute, if it
/// could not.
fn unsendable(field: &'static str, value: &str) -> Result<(), OrchestratorError> {
    let refused = |c: char| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
    };
    let reason = if value.contains(refused) {
        "it holds a character SQS refuses in a message attribute"
    } else if field != "correlation_id" && value.is_empty() {
        // SQS takes no empty attribute; an empty correlation id means the saga id.
        "it is empty"
    } else if field == "id" && value.len() > MAX_ID_BYTES {
        "it is longer than 512 bytes"
    } else {
        return Ok(());
    };
    Err(OrchestratorError::Unsendable { field, reason })
}

/// Applies replies and timers to sagas kept in a [`SagaStore`].
///
/// Each input is one conditional write of the saga's item, whose outbox the relay then
/// publishes. A reply carries the saga as its command left it, so it is applied without
/// a read; a timer reads the saga (strongly consistent). A lost write (another
/// orchestrator moved the saga) is applied again to the stored saga that DynamoDB hands
/// back with the failure. Local steps run inline right after the write that decided them,
/// and their result is applied as a reply to the state just written.
///
/// ```
/// use lift_events::saga::{Orchestrator, Registry, Saga, Step, local};
/// use lift_events::store::MemoryStore;
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let saga = Saga::named("greet", 1)
///     .step(Step::new("hello", local(|_call| async { Ok(serde_json::json!("hi")) }), None))
///     .build()?;
/// let orchestrator = Orchestrator::new(Registry::new().with(saga), MemoryStore::new());
/// let state = orchestrator.start("greet", "saga-1", &serde_json::json!({}), Default::default()).await?;
/// assert_eq!(state.status(), lift_events::saga::SagaStatus::Completed);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Orchestrator<S> {
    registry: Arc<Registry>,
    store: S,
    clock: Clock,
}

impl<S> std::fmt::Debug for Orchestrator<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl<S: SagaStore> Orchestrator<S> {
    /// An orchestrator of the definitions in `registry`, storing sagas in `store`, on the
    /// system clock.
    pub fn new(registry: Registry, store: S) -> Self {
        Orchestrator {
            registry: Arc::new(registry),
            store,
            clock: Arc::new(system_ms),
        }
    }

    /// Reads time (ms since the epoch) from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Starts saga `id` with the newest definition named `name`. Once the first transition
    /// is stored the start has succeeded: local steps it sends run at once, and one whose
    /// result cannot be stored now (a throttled table) is moved on by its timer, without
    /// failing the start.
    ///
    /// A start sent again, with the same definition name, tenant and data (the correlation
    /// id may differ), changes nothing and returns the saga as stored, however far it has
    /// gone, so a retried request or a redelivered event is harmless. Ids are unique in
    /// the table, across definitions and tenants: where clients choose them, put what
    /// scopes them (the tenant, the kind of saga) in the id.
    ///
    /// # Errors
    /// [`OrchestratorError`]: an unknown definition, an id, correlation id or tenant its
    /// messages cannot carry ([`OrchestratorError::Unsendable`]), data that does not
    /// serialize or makes the first command larger than [`crate::relay::MAX_COMMAND_BYTES`]
    /// (nothing is stored in these cases), an id stored for another definition, tenant or
    /// data ([`OrchestratorError::AlreadyExists`]), or a store failure.
    pub async fn start(
        &self,
        name: &str,
        id: &str,
        data: &impl Serialize,
        meta: StartMeta,
    ) -> Result<SagaState, OrchestratorError> {
        unsendable("id", id)?;
        unsendable("correlation_id", &meta.correlation_id)?;
        if let Some(tenant) = &meta.tenant {
            unsendable("tenant", tenant)?;
        }
        let saga = self
            .registry
            .latest(name)
            .ok_or_else(|| OrchestratorError::UnknownDefinition {
                name: name.to_owned(),
                version: 0,
            })?
            .clone();
        let data =
            serde_json::to_value(data).map_err(|e| OrchestratorError::Data(e.to_string()))?;
        let first = start(&saga, id, data, meta, (self.clock)());
        // Refused here, with nothing stored, rather than relayed never.
        for message in first.state().outbox() {
            if let Message::Command(command) = message
                && command.target != Target::Local
                && let Some(bytes) = crate::relay::too_large(command)
                    .map_err(|e| OrchestratorError::Data(e.to_string()))?
            {
                return Err(OrchestratorError::Data(format!(
                    "the first command is {bytes} bytes with this data, above the {} bytes a command may have",
                    crate::relay::MAX_COMMAND_BYTES
                )));
            }
        }
        match self.store.save(first.state()).await {
            Ok(()) => {
                tracing::info!(target: "lift::saga", saga = %saga.name, saga_id = %id, "started");
                Ok(self.local_work(&saga, first.into_state()).await)
            }
            // Our own write, applied by an attempt whose answer was lost and refused when
            // the SDK sent it again: started, with its local work still to run.
            Err(StoreError::Conflict {
                current: Some(current),
                ..
            }) if same_write(&current, first.state()) => {
                Ok(self.local_work(&saga, first.into_state()).await)
            }
            Err(StoreError::Conflict {
                current: Some(current),
                ..
            }) => started_again(*current, first.state()),
            Err(StoreError::Conflict { .. }) => match self.store.load(id).await? {
                Some(current) => started_again(current, first.state()),
                None => Err(OrchestratorError::UnknownSaga(id.to_owned())),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Cancels saga `id`: it stops going forward, compensates the steps that took effect
    /// in reverse, and ends [`SagaStatus::Compensated`] with the reason `cancelled:
    /// {reason}`. The step in flight (or waiting to be tried again) may have taken effect,
    /// so its compensation runs too; a participant that keeps rule 4 of the crate's docs
    /// refuses its action should it arrive after that. A step without a compensation is
    /// not undone, as on any compensation path: cancelled while in flight, it may still
    /// take effect. The cancel is one conditional write, as any transition, and its
    /// commands go out through the relay; a local compensation runs before this returns.
    ///
    /// Answers the saga as stored: compensating, compensated, or needing attention when
    /// a compensation run here was refused. A cancel sent again, or one that finds the
    /// saga compensating or compensated already, changes nothing and answers the same.
    ///
    /// A cancel adds a history entry ([`HistoryEvent::Cancelled`](super::HistoryEvent::Cancelled)) that releases before
    /// this one cannot read: deploy every function that reads the saga table (the
    /// orchestrator and its relay, the `lift` command) at this release or later before
    /// any function cancels.
    ///
    /// # Errors
    /// [`OrchestratorError::NotCancellable`] for a saga that completed, that needs
    /// attention without having been cancelled, or whose step in flight is its pivot or
    /// after it (nothing was changed); [`OrchestratorError::UnknownSaga`]; a store failure
    /// (the cancel may have been written: send it again).
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<SagaState, OrchestratorError> {
        let input = SagaInput::Cancel(Cancel {
            saga_id: id.to_owned(),
            reason: reason.to_owned(),
        });
        let state = match self.operate(&input, "cancelled").await? {
            Operated::Applied(state) => return Ok(state),
            Operated::Ignored(state) => state,
        };
        match state.status() {
            SagaStatus::Compensating | SagaStatus::Compensated => Ok(state),
            _ if state.cancelled() => Ok(state),
            status => Err(OrchestratorError::NotCancellable {
                id: id.to_owned(),
                status,
            }),
        }
    }

    /// Redrives saga `id`, which needs attention at `version` (as read from the store):
    /// sends again the command it stopped on ([`SagaState::halted`]), from its first
    /// attempt under the step's policy, once what stopped it is fixed (a participant that
    /// refused a compensation, one down for longer than its retries). A command that may
    /// have taken effect (its attempts ran out) goes under the same id, so a participant
    /// idempotent by command id answers it without acting twice; a refused one under a
    /// new id ([`redriven_command_id`](super::redriven_command_id)), since a participant
    /// answers its recorded refusal to the old one. A compensation goes on compensating,
    /// an action (after the pivot, or the pivot that may have acted) goes on forward. As
    /// Step Functions' `RedriveExecution` restarts a failed execution from the state that
    /// failed.
    ///
    /// The redrive is one conditional write, as any transition, and its command goes out
    /// through the relay; a local step runs before this returns. Answers the saga as
    /// stored. A redrive sent again (same id and version) answers the saga as stored.
    ///
    /// The command goes under its own id whenever it was first sent: a participant that
    /// remembers command ids for a window (24 hours for [`Participant`](crate::consume::Participant) by
    /// default) and has forgotten this one runs it again, and only rule 3 of the crate's
    /// docs (the effect conditional on [`Command::step_id`]) then stops a second effect. A
    /// pivot that may have acted is sent again, never compensated: a saga only goes forward
    /// from its pivot.
    ///
    /// A redrive adds a history entry ([`HistoryEvent::Redriven`]) and keeps the command a
    /// saga stops on, which releases before this one cannot read (the entry) or keep (the
    /// command): deploy every function that reads or writes the saga table at this release
    /// or later before any function redrives. A saga that ended needing attention under an
    /// earlier release kept no command, and cannot be redriven.
    ///
    /// # Errors
    /// [`OrchestratorError::NotRedrivable`] for a saga that does not need attention at
    /// `version`, or has no command to send again (nothing was changed);
    /// [`OrchestratorError::UnknownSaga`]; [`StoreError::TooLarge`] (as
    /// [`OrchestratorError::Store`]) for a saga whose item is too large to go on running
    /// (a saga may use the last 8 KB of its item only once it has stopped): nothing was
    /// changed, and sending it again cannot help; any other store failure (the redrive may
    /// have been written: send it again).
    pub async fn redrive(
        &self,
        id: &str,
        version: u64,
        reason: &str,
    ) -> Result<SagaState, OrchestratorError> {
        let input = SagaInput::Redrive(Redrive {
            saga_id: id.to_owned(),
            version,
            reason: reason.to_owned(),
        });
        let state = match self.operate(&input, "redriven").await? {
            Operated::Applied(state) => return Ok(state),
            Operated::Ignored(state) => state,
        };
        if redriven_at(&state, version) {
            return Ok(state);
        }
        Err(OrchestratorError::NotRedrivable {
            id: id.to_owned(),
            asked: version,
            status: state.status(),
            version: state.version(),
            halted: state.halted().is_some(),
        })
    }

    /// Applies an operator's `input` (a cancel, a redrive) to its saga, logged as `done`
    /// when applied: the saga after it and its local work, or, when it changed nothing,
    /// the saga as stored.
    async fn operate(
        &self,
        input: &SagaInput,
        done: &'static str,
    ) -> Result<Operated, OrchestratorError> {
        let id = input.saga_id();
        let (saga, handled) = self.apply_to(input, None).await?;
        if let Handled::Applied(state) = handled {
            tracing::info!(target: "lift::saga", saga = %saga.name, saga_id = %id, version = state.version(), "{done}");
            return Ok(Operated::Applied(self.local_work(&saga, state).await));
        }
        let state = self
            .store
            .load(id)
            .await?
            .ok_or_else(|| OrchestratorError::UnknownSaga(id.to_owned()))?;
        Ok(Operated::Ignored(state))
    }

    /// Applies a reply or a timer to its saga.
    ///
    /// # Errors
    /// [`OrchestratorError`]: the saga or its definition is unknown, or the store failed
    /// (after [`StoreError::Conflict`] five times in a row, too).
    pub async fn handle(&self, input: &SagaInput) -> Result<Handled, OrchestratorError> {
        let (saga, handled) = self.apply(input).await?;
        match handled {
            Handled::Applied(state) => Ok(Handled::Applied(self.local_work(&saga, state).await)),
            other => Ok(other),
        }
    }

    /// Runs the local steps `state` sent, once it is stored: a failure to apply their
    /// results (a throttled or unavailable store) is logged and left to the step's timer,
    /// which is already on its way, so the caller is not told that a stored transition
    /// failed. Answers the saga as far as it got stored.
    async fn local_work(&self, saga: &Saga, state: SagaState) -> SagaState {
        match self.run_local(saga, state).await {
            Ok(state) => state,
            Err((stored, error)) => {
                tracing::warn!(target: "lift::saga", saga_id = %stored.id(), version = stored.version(), %error, "a local step's result was not applied; its timer will move the saga on");
                stored
            }
        }
    }

    /// One input: transition, conditional write; again after a conflict.
    ///
    /// The state comes from the input when it carries one (a reply hands back the
    /// [`Command::snapshot`] of the transition that sent its command), else from a
    /// strongly consistent read. A write that loses gets the stored saga back with the
    /// failure and applies the input to it; a snapshot the input is not for (never the
    /// case for a reply to its own command), or one that does not read as a saga (altered
    /// on its way), is not trusted: the saga is read instead.
    async fn apply(&self, input: &SagaInput) -> Result<(Arc<Saga>, Handled), OrchestratorError> {
        let known = match input {
            SagaInput::Reply(reply) => {
                reply
                    .snapshot
                    .as_ref()
                    .and_then(|snapshot| match snapshot.state() {
                        Ok(state) => Some(state),
                        Err(error) => {
                            tracing::debug!(target: "lift::saga", saga_id = %reply.saga_id, %error, "a snapshot that does not read as a saga; reading the saga");
                            None
                        }
                    })
            }
            SagaInput::Timer(_) | SagaInput::Cancel(_) | SagaInput::Redrive(_) => None,
        };
        self.apply_to(input, known).await
    }

    /// [`apply`](Self::apply), starting from `known` (a state of the saga that may be
    /// behind the stored one) when given.
    async fn apply_to(
        &self,
        input: &SagaInput,
        known: Option<SagaState>,
    ) -> Result<(Arc<Saga>, Handled), OrchestratorError> {
        let id = input.saga_id();
        let mut conflicts = 0;
        // The state to apply the input to, and whether it may be behind the stored one.
        let mut next: Option<(SagaState, bool)> = known.filter(|s| s.id() == id).map(|s| (s, true));
        loop {
            let (state, maybe_behind) = match next.take() {
                Some(known) => known,
                None => {
                    let state = self
                        .store
                        .load(id)
                        .await?
                        .ok_or_else(|| OrchestratorError::UnknownSaga(id.to_owned()))?;
                    (state, false)
                }
            };
            let Some(saga) = self
                .registry
                .get(state.name(), state.definition_version())
                .cloned()
            else {
                // A snapshot naming a saga or version this orchestrator does not run is not
                // the stored saga: read that instead.
                if maybe_behind {
                    continue;
                }
                return Err(OrchestratorError::UnknownDefinition {
                    name: state.name().to_owned(),
                    version: state.definition_version(),
                });
            };
            if !fits(&saga, &state) {
                // A snapshot handed back by a participant is not trusted beyond its shape:
                // read the stored saga. A stored one that does not fit is an error, never
                // an index out of bounds.
                if maybe_behind {
                    continue;
                }
                return Err(OrchestratorError::DefinitionMismatch {
                    id: id.to_owned(),
                    name: state.name().to_owned(),
                    version: state.definition_version(),
                    steps: state.steps().len(),
                    defined: saga.steps().len(),
                });
            }
            let transition = match transition(&saga, &state, input, (self.clock)()) {
                Outcome::Applied(transition) => transition,
                // A state that may be behind cannot tell the input is stale: read.
                Outcome::Ignored(_) | Outcome::Rearm(_) if maybe_behind => continue,
                Outcome::Ignored(reason) => {
                    tracing::debug!(target: "lift::saga", saga_id = %id, ?reason, "input ignored");
                    return Ok((saga, Handled::Ignored(reason)));
                }
                Outcome::Rearm(timer) => return Ok((saga, Handled::Rearm(timer))),
            };
            // A state handed back with a reply is written over only if it is the stored
            // one, content and all: a participant cannot alter the saga through it.
            let mut transition = transition;
            let mut parked = false;
            let saved = loop {
                let saved = if maybe_behind {
                    self.store.save_over(transition.state(), &state).await
                } else {
                    self.store.save(transition.state()).await
                };
                match saved {
                    // The input makes the saga larger than its item may be (an output of
                    // hundreds of KB, say): delivering it again cannot help. The saga ends
                    // for a person to look at, with why, and the input is acknowledged.
                    // A redrive is refused instead: parked, the saga would lose the command it
                    // stopped on, and with it any later redrive.
                    Err(StoreError::TooLarge { bytes, limit, .. })
                        if !parked && !matches!(input, SagaInput::Redrive(_)) =>
                    {
                        let reason = format!(
                            "the saga would be {bytes} bytes with this input, above its item limit ({limit} bytes); the input was not applied"
                        );
                        tracing::error!(target: "lift::saga", saga_id = %id, bytes, "saga too large to store; it needs attention");
                        transition = park(&saga, &state, reason, (self.clock)());
                        parked = true;
                    }
                    other => break other,
                }
            };
            let saved = match saved {
                // Our own write, applied by an attempt whose answer was lost and refused when
                // the SDK sent it again: stored.
                Err(StoreError::Conflict {
                    current: Some(current),
                    ..
                }) if same_write(&current, transition.state()) => Ok(()),
                other => other,
            };
            match saved {
                Ok(()) => {
                    let state = transition.into_state();
                    tracing::debug!(
                        target: "lift::saga",
                        saga_id = %id,
                        version = state.version(),
                        status = state.status().as_str(),
                        "transition stored"
                    );
                    if state.status().is_final() {
                        tracing::info!(
                            target: "lift::saga",
                            saga_id = %id,
                            status = state.status().as_str(),
                            reason = state.reason(),
                            "saga ended"
                        );
                    }
                    return Ok((saga, Handled::Applied(state)));
                }
                Err(StoreError::Conflict { current, .. }) if conflicts < MAX_CONFLICTS => {
                    conflicts += 1;
                    tracing::debug!(target: "lift::saga", saga_id = %id, conflicts, "write conflict");
                    // The stored saga, when it came back with the failure, is current.
                    next = current.map(|c| (*c, false));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Runs the local commands in `state`'s outbox and applies their results, until the
    /// saga waits for something else.
    ///
    /// # Errors
    /// The saga as last stored, with why a result was not applied.
    async fn run_local(
        &self,
        saga: &Saga,
        state: SagaState,
    ) -> Result<SagaState, (SagaState, OrchestratorError)> {
        let mut state = state;
        let mut pending: VecDeque<Command> = local_commands(&state).collect();
        while let Some(command) = pending.pop_front() {
            let step = saga.steps.get(command.step as usize);
            let outcome = match step.and_then(|s| Some((s, s.work(command.phase)?))) {
                Some((step, Work::Local(f))) => {
                    let call = f(StepCall {
                        saga_id: command.saga_id.clone(),
                        step: command.step_name.clone(),
                        phase: command.phase,
                        attempt: command.attempt,
                        command_id: command.command_id.clone(),
                        data: command.data.clone(),
                        outputs: command.outputs.clone(),
                    });
                    // An attempt has the step's timeout, and never outlives the invocation:
                    // one killed by the function's timeout would take its whole batch of
                    // other sagas' messages back to the queue with it.
                    let limit = match crate::publish::invocation_time_left() {
                        Some(left) => step
                            .timeout
                            .min(left.saturating_sub(crate::publish::INVOCATION_MARGIN)),
                        None => step.timeout,
                    };
                    // Outside a Tokio runtime (a simulation's own executor) there is no
                    // timer to cut it with.
                    let timed = match tokio::runtime::Handle::try_current() {
                        Ok(_) => tokio::time::timeout(limit, call).await,
                        Err(_) => Ok(call.await),
                    };
                    match timed {
                        Ok(outcome) => outcome,
                        Err(_) => {
                            tracing::warn!(target: "lift::saga", saga_id = %command.saga_id, step = %command.step_name, attempt = command.attempt, ?limit, "a local step's attempt ran out of time; its timer will move the saga on");
                            continue;
                        }
                    }
                }
                // A step without a compensation: nothing to undo.
                _ => Ok(serde_json::Value::Null),
            };
            match self.apply_local(Reply::to(&command, outcome), &state).await {
                Ok(Some(next)) => {
                    pending.extend(local_commands(&next));
                    state = next;
                }
                Ok(None) => {}
                Err(error) => return Err((state, error)),
            }
        }
        Ok(state)
    }

    /// Applies a local step's reply to `state`, the saga as this orchestrator last
    /// stored it: no read.
    async fn apply_local(
        &self,
        reply: Reply,
        state: &SagaState,
    ) -> Result<Option<SagaState>, OrchestratorError> {
        match self
            .apply_to(&SagaInput::Reply(reply), Some(state.clone()))
            .await?
            .1
        {
            Handled::Applied(state) => Ok(Some(state)),
            _ => Ok(None),
        }
    }
}

fn local_commands(state: &SagaState) -> impl Iterator<Item = Command> + '_ {
    state.outbox().iter().filter_map(|m| match m {
        Message::Command(c) if c.target == Target::Local => Some(c.clone()),
        _ => None,
    })
}

/// The answer to a start (`ours`, its first state) that found `stored` under its id: the
/// stored saga when the start is one sent again, else [`OrchestratorError::AlreadyExists`].
fn started_again(stored: SagaState, ours: &SagaState) -> Result<SagaState, OrchestratorError> {
    if stored.name() == ours.name()
        && stored.tenant() == ours.tenant()
        && stored.data() == ours.data()
    {
        Ok(stored)
    } else {
        Err(OrchestratorError::AlreadyExists(stored.id().to_owned()))
    }
}

/// What an operator's input did ([`Orchestrator::operate`]).
enum Operated {
    /// Applied: the saga as it got stored.
    Applied(SagaState),
    /// Ignored: the saga as stored.
    Ignored(SagaState),
}

/// Whether `state` was redriven at `version`: its transition to `version + 1` is a
/// redrive.
pub(crate) fn redriven_at(state: &SagaState, version: u64) -> bool {
    state.history().iter().any(|entry| {
        entry.version == version.saturating_add(1)
            && matches!(entry.event, HistoryEvent::Redriven { .. })
    })
}

/// Whether `stored` is `ours`, as written: the same version and content (the outbox aside).
fn same_write(stored: &SagaState, ours: &SagaState) -> bool {
    stored.version() == ours.version() && crate::store::same_content(stored, ours).unwrap_or(false)
}
