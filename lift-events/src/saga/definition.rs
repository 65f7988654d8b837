//! Saga definitions: a name, a version and an ordered list of steps.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::ConfigError;

/// The future a local step returns.
pub type StepFuture = Pin<Box<dyn Future<Output = StepResult> + Send>>;

/// What a step's action or compensation answered.
pub type StepResult = Result<Value, StepError>;

type LocalFn = Arc<dyn Fn(StepCall) -> StepFuture + Send + Sync>;

/// Why a step's action or compensation did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// A business refusal (card declined, out of stock): final, nothing took effect, no
    /// retry. A refused action is not compensated.
    #[error("refused: {0}")]
    Rejected(String),
    /// A technical failure (a timeout, a throttled call): retried under the step's
    /// [`RetryPolicy`].
    #[error("failed: {0}")]
    Failed(String),
}

/// What a local step receives: the saga, the step, and the command id to be idempotent by.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StepCall {
    /// The saga instance.
    pub saga_id: String,
    /// The step's name.
    pub step: String,
    /// Whether this is the action or the compensation.
    pub phase: super::Phase,
    /// The attempt, from 1.
    pub attempt: u32,
    /// The id to be idempotent by: the same for every attempt of this step and phase.
    pub command_id: String,
    /// The saga's input data.
    pub data: Value,
    /// The outputs of the steps that completed so far, by step name.
    pub outputs: BTreeMap<String, Value>,
}

/// The most attempts a [`RetryPolicy`] allows a step. Each attempt adds about 75 bytes of
/// history to the saga's item (DynamoDB's limit is 400 KB), and a step that has failed a
/// hundred times wants a person more than a hundred and first attempt.
pub const MAX_ATTEMPTS: u32 = 100;

/// How a step is retried after a technical failure or a timeout.
///
/// # Default
/// 3 attempts, 1 s backoff doubling up to 60 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// At most `max_attempts` attempts (1 to [`MAX_ATTEMPTS`]), the first retry after
    /// `initial_backoff`, each next one after twice the last, up to `max_backoff`.
    ///
    /// # Errors
    /// [`ConfigError`] naming `max_attempts` when it is 0 or above [`MAX_ATTEMPTS`], or
    /// `max_backoff` when it is below `initial_backoff`.
    pub fn new(
        max_attempts: u32,
        initial_backoff: Duration,
        max_backoff: Duration,
    ) -> Result<Self, ConfigError> {
        if max_attempts == 0 {
            return Err(ConfigError::invalid("max_attempts", "must be at least 1"));
        }
        if max_attempts > MAX_ATTEMPTS {
            return Err(ConfigError::invalid(
                "max_attempts",
                "must be at most 100: each attempt's lines stay in the saga's item",
            ));
        }
        if max_backoff < initial_backoff {
            return Err(ConfigError::invalid(
                "max_backoff",
                "must not be below initial_backoff",
            ));
        }
        Ok(RetryPolicy {
            max_attempts,
            initial_backoff,
            max_backoff,
        })
    }

    /// The number of attempts allowed.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The wait before attempt `attempt` (2 or more).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(20);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }

    /// How long the attempts of one phase can take at most, each `timeout` long: from the
    /// first command to the last attempt's timeout, backoffs included.
    pub(crate) fn horizon(&self, timeout: Duration) -> Duration {
        (2..=self.max_attempts).fold(
            timeout.saturating_mul(self.max_attempts),
            |total, attempt| total.saturating_add(self.backoff(attempt)),
        )
    }
}

/// Where an action or a compensation runs.
#[derive(Clone)]
pub(crate) enum Work {
    /// A command event of this type to a participant, which answers with a reply event.
    Remote {
        participant: String,
        command: String,
    },
    /// An async function in the orchestrator.
    Local(LocalFn),
}

impl fmt::Debug for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Work::Remote {
                participant,
                command,
            } => write!(f, "Remote({participant}/{command})"),
            Work::Local(_) => f.write_str("Local"),
        }
    }
}

/// An action or a compensation: a command to a participant ([`remote`]) or an async
/// function in the orchestrator ([`local`]).
#[derive(Debug, Clone)]
pub struct Action {
    pub(crate) work: Work,
}

/// A command event of type `command` to the participant `participant`, which answers with
/// a reply event.
pub fn remote(participant: &str, command: &str) -> Action {
    Action {
        work: Work::Remote {
            participant: participant.to_owned(),
            command: command.to_owned(),
        },
    }
}

/// An async function run in the orchestrator. It may run more than once for one step (after
/// a crash or a timeout), always with the same [`StepCall::command_id`]: make its effect
/// idempotent by that id.
pub fn local<F, Fut>(f: F) -> Action
where
    F: Fn(StepCall) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = StepResult> + Send + 'static,
{
    Action {
        work: Work::Local(Arc::new(move |call| Box::pin(f(call)))),
    }
}

/// One step: an action, its compensation (none for a pivot or a step with nothing to
/// undo), a retry policy and a timeout.
#[derive(Debug, Clone)]
pub struct Step {
    pub(crate) name: String,
    pub(crate) action: Action,
    pub(crate) compensation: Option<Action>,
    pub(crate) retry: RetryPolicy,
    pub(crate) compensation_retry: RetryPolicy,
    pub(crate) timeout: Duration,
}

impl Step {
    /// A step named `name` running `action`, undone by `compensation`.
    ///
    /// # Default
    /// [`RetryPolicy::default`] for the action, 10 attempts for the compensation, a 30 s
    /// timeout per attempt.
    pub fn new(name: &str, action: Action, compensation: Option<Action>) -> Self {
        Step {
            name: name.to_owned(),
            action,
            compensation,
            retry: RetryPolicy::default(),
            compensation_retry: RetryPolicy {
                max_attempts: 10,
                ..RetryPolicy::default()
            },
            timeout: Duration::from_secs(30),
        }
    }

    /// The action's retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The compensation's retry policy; when it runs out the saga ends `NeedsAttention`.
    pub fn compensation_retry(mut self, policy: RetryPolicy) -> Self {
        self.compensation_retry = policy;
        self
    }

    /// How long one attempt may take before it counts as a failed attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn work(&self, phase: super::Phase) -> Option<&Work> {
        match phase {
            super::Phase::Action => Some(&self.action.work),
            super::Phase::Compensation => self.compensation.as_ref().map(|a| &a.work),
        }
    }

    pub(crate) fn policy(&self, phase: super::Phase) -> &RetryPolicy {
        match phase {
            super::Phase::Action => &self.retry,
            super::Phase::Compensation => &self.compensation_retry,
        }
    }
}

/// A saga definition under construction; [`SagaBuilder::build`] checks it.
#[derive(Debug, Clone)]
pub struct SagaBuilder {
    name: String,
    version: u32,
    steps: Vec<Step>,
    pivot: Option<usize>,
    duplicate_window: Duration,
    error: Option<ConfigError>,
}

/// A checked saga definition: a name, a version, ordered steps and an optional pivot.
///
/// ```
/// use std::time::Duration;
/// use lift_events::saga::{Saga, Step, remote};
///
/// let order = Saga::named("order", 1)
///     .step(Step::new("reserve", remote("inventory", "ReserveStock"), Some(remote("inventory", "ReleaseStock"))))
///     .step(Step::new("charge", remote("payments", "Charge"), Some(remote("payments", "Refund")))
///         .timeout(Duration::from_secs(30)))
///     .pivot(Step::new("ship", remote("shipping", "CreateShipment"), None))
///     .build()
///     .unwrap();
/// assert_eq!(order.steps().len(), 3);
/// ```
#[derive(Debug, Clone)]
pub struct Saga {
    pub(crate) name: String,
    pub(crate) version: u32,
    pub(crate) steps: Vec<Step>,
    pub(crate) pivot: Option<usize>,
}

impl Saga {
    /// Starts a definition named `name` at version `version`. Running sagas keep the
    /// version they started with, so a new version is a new definition beside the old one.
    pub fn named(name: &str, version: u32) -> SagaBuilder {
        SagaBuilder {
            name: name.to_owned(),
            version,
            steps: Vec::new(),
            pivot: None,
            duplicate_window: crate::consume::MIN_WINDOW,
            error: None,
        }
    }

    /// The saga's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The definition's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The index of the pivot step, if any: it and the steps after it are never
    /// compensated; the steps after it are retried forward.
    pub fn pivot(&self) -> Option<usize> {
        self.pivot
    }
}

impl SagaBuilder {
    /// Appends a step.
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// Appends the pivot step: once it completes the saga only goes forward. It has no
    /// compensation (one given is refused by [`build`](Self::build)).
    pub fn pivot(mut self, step: Step) -> Self {
        if self.pivot.is_some() {
            self.error.get_or_insert(ConfigError::invalid(
                "pivot",
                "a saga has at most one pivot",
            ));
        }
        self.pivot = Some(self.steps.len());
        self.steps.push(step);
        self
    }

    /// How long the participants of its remote steps remember a command
    /// ([`Participant::with_window`](crate::consume::Participant::with_window); 24 hours,
    /// [`MIN_WINDOW`](crate::consume::MIN_WINDOW), by default). Every attempt of a phase
    /// carries the same command id (until a redrive sends a refused one under a new id),
    /// so a participant answers a late attempt from its record instead of acting again
    /// only while it remembers the first: the attempts of each remote phase (timeout ×
    /// attempts, and the backoffs) must end within this window. A redrive may come later:
    /// see [`Orchestrator::redrive`](super::Orchestrator::redrive).
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// Checks the definition.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field: an empty `name`, no `steps`, two steps with the
    /// same name, a second `pivot`, a pivot or a step after it with a compensation, a
    /// zero `timeout`, or a remote phase whose attempts can outlast the
    /// `duplicate_window`.
    pub fn build(self) -> Result<Saga, ConfigError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if self.name.is_empty() {
            return Err(ConfigError::invalid("name", "must not be empty"));
        }
        if self.steps.is_empty() {
            return Err(ConfigError::invalid(
                "steps",
                "a saga needs at least one step",
            ));
        }
        for (i, step) in self.steps.iter().enumerate() {
            if step.name.is_empty() {
                return Err(ConfigError::invalid(
                    "steps",
                    "a step name must not be empty",
                ));
            }
            if self.steps[..i].iter().any(|s| s.name == step.name) {
                return Err(ConfigError::invalid("steps", "step names must be unique"));
            }
            if step.timeout.is_zero() {
                return Err(ConfigError::invalid("timeout", "must be above zero"));
            }
            let phases = [
                (Some(&step.action), &step.retry),
                (step.compensation.as_ref(), &step.compensation_retry),
            ];
            for (action, policy) in phases {
                if action.is_some_and(|a| matches!(a.work, Work::Remote { .. }))
                    && policy.horizon(step.timeout) > self.duplicate_window
                {
                    return Err(ConfigError::invalid(
                        "timeout",
                        "a remote step's attempts (timeout × attempts, and the backoffs) must end within the participants' duplicate window (see duplicate_window)",
                    ));
                }
            }
            if self.pivot.is_some_and(|p| i >= p) && step.compensation.is_some() {
                return Err(ConfigError::invalid(
                    "pivot",
                    "the pivot and the steps after it have no compensation",
                ));
            }
        }
        Ok(Saga {
            name: self.name,
            version: self.version,
            steps: self.steps,
            pivot: self.pivot,
        })
    }
}

/// The definitions an orchestrator knows, by name and version.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    sagas: BTreeMap<(String, u32), Arc<Saga>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a definition beside the others (a new version does not replace an old one).
    pub fn with(mut self, saga: Saga) -> Self {
        self.sagas
            .insert((saga.name.clone(), saga.version), Arc::new(saga));
        self
    }

    /// The definition `name` at `version`.
    pub fn get(&self, name: &str, version: u32) -> Option<&Arc<Saga>> {
        self.sagas.get(&(name.to_owned(), version))
    }

    /// The newest version of `name`: the one new sagas start with.
    pub fn latest(&self, name: &str) -> Option<&Arc<Saga>> {
        self.sagas
            .range((name.to_owned(), 0)..=(name.to_owned(), u32::MAX))
            .next_back()
            .map(|(_, saga)| saga)
    }
}
