//! The saga commands: `lift sagas` lists sagas by state, `lift saga ID` shows one as a
//! timeline, `lift cancel ID` and `lift redrive ID` send a cancel or a redrive to its
//! orchestrator. [`list`] and [`show`] render what the commands print.

use lift_events::publish::{PublishConfig, SqsMessage};
use lift_events::saga::{HistoryEvent, Phase, SagaState, SagaStatus, StepStatus, Waiting};
use lift_events::store::{DynamoStore, SagaStore, SagaSummary};

use crate::{Args, CliError};

/// How many sagas `lift sagas` lists per state unless `--limit` says otherwise.
const DEFAULT_LIMIT: usize = 50;

const ALL: [SagaStatus; 5] = [
    SagaStatus::NeedsAttention,
    SagaStatus::Running,
    SagaStatus::Compensating,
    SagaStatus::Completed,
    SagaStatus::Compensated,
];

/// The status named `name` (`needs-attention` or `needs_attention`, `running`, ...).
///
/// # Errors
/// [`CliError::Usage`] for any other name.
pub fn status(name: &str) -> Result<SagaStatus, CliError> {
    ALL.into_iter()
        .find(|s| s.as_str() == name.replace('-', "_"))
        .ok_or_else(|| {
            CliError::Usage(format!(
                "unknown state {name} (needs-attention, running, compensating, completed, compensated)"
            ))
        })
}

/// A time (ms since the epoch) as RFC 3339, UTC.
fn at(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || format!("{ms}ms"),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
}

/// A duration in ms, short: `850ms`, `12.4s`, `3m05s`, `2h14m`.
fn span(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// The lines of `lift sagas`: one per saga, with its state, name, id, when it last moved
/// and why it compensated or needs attention.
pub fn list(sagas: &[SagaSummary]) -> String {
    let mut out = format!(
        "{:<16} {:<16} {:<40} {:<24}  {}\n",
        "STATE", "SAGA", "ID", "LAST MOVED", "REASON"
    );
    for s in sagas {
        out.push_str(&format!(
            "{:<16} {:<16} {:<40} {:<24}  {}\n",
            s.status.as_str(),
            s.name,
            s.id,
            at(s.updated_ms),
            s.reason.as_deref().unwrap_or("-")
        ));
    }
    if sagas.is_empty() {
        out.push_str("(none)\n");
    }
    out
}

fn step_status(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Pending => "pending",
        StepStatus::Running => "running",
        StepStatus::Done => "done",
        StepStatus::Rejected => "refused",
        StepStatus::Uncertain => "uncertain",
        StepStatus::Compensating => "compensating",
        StepStatus::Compensated => "compensated",
        // A status a newer lift-events added.
        _ => "other",
    }
}

/// What `lift saga ID` prints: the saga's state, its steps, what it waits for (or, for one
/// that needs attention, the command a redrive would send again), and its history as a
/// timeline (every transition: commands and their attempts, replies,
/// timeouts, retries, compensations, the end, with times since the start).
pub fn show(state: &SagaState) -> String {
    let name = |i: usize| step_name(state, i);
    let mut out = format!(
        "saga     {} ({} v{})\nstate    {}{}\n",
        state.id(),
        state.name(),
        state.definition_version(),
        state.status().as_str(),
        state.reason().map(|r| format!(": {r}")).unwrap_or_default()
    );
    out.push_str(&format!(
        "started  {}\nmoved    {} (+{}), {} transitions\n",
        at(state.created_ms()),
        at(state.updated_ms()),
        span(state.updated_ms().saturating_sub(state.created_ms())),
        state.version()
    ));
    let steps: Vec<String> = state
        .steps()
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{} {}", name(i), step_status(*s)))
        .collect();
    out.push_str(&format!("steps    {}\n", steps.join(", ")));
    if let Some(cursor) = state.cursor() {
        let phase = phase_name(cursor.phase);
        let what = match cursor.waiting {
            Waiting::Reply { deadline_ms } => format!(
                "a reply, until {} (+{})",
                at(deadline_ms),
                span(deadline_ms.saturating_sub(state.created_ms()))
            ),
            Waiting::Retry { due_ms } => format!(
                "its retry at {} (+{})",
                at(due_ms),
                span(due_ms.saturating_sub(state.created_ms()))
            ),
            other => format!("{other:?}"),
        };
        out.push_str(&format!(
            "waiting  {} {phase}, attempt {}: {what}\n",
            name(cursor.step as usize),
            cursor.attempt
        ));
    }
    if let Some(halted) = state.halted() {
        let phase = phase_name(halted.phase);
        let (why, how) = if halted.refused {
            ("refused", "under a new command id")
        } else {
            (
                "out of attempts, may have taken effect",
                "under its own command id (answered from the participant's record while it remembers the id)",
            )
        };
        out.push_str(&format!(
            "stopped  on {} {phase} ({why}): `lift redrive {}` sends it again {how}\n",
            name(halted.step as usize),
            state.id()
        ));
    }
    out.push_str("\ntimeline\n");
    out.push_str(&state.stored_timeline());
    out
}

/// The name of step `i` of `state`, as the saga keeps it (`#i` for a saga stored before
/// step names were kept).
fn step_name(state: &SagaState, i: usize) -> String {
    state
        .step_names()
        .get(i)
        .cloned()
        .unwrap_or_else(|| format!("#{i}"))
}

/// `action` or `compensation`.
fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Action => "action",
        Phase::Compensation => "compensation",
    }
}

/// The saga table of `args` (`--table`, else `LIFT_SAGA_TABLE`) and a store on it.
async fn saga_store(args: &Args) -> Result<(String, DynamoStore), CliError> {
    let table = match &args.table {
        Some(table) => table.clone(),
        None => std::env::var("LIFT_SAGA_TABLE").map_err(|_| {
            CliError::Usage("no table: pass --table or set LIFT_SAGA_TABLE".to_owned())
        })?,
    };
    let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
    let store = DynamoStore::new(client, &table);
    Ok((table, store))
}

/// A failed read of `table`, with every cause.
fn read_failed(table: &str, e: &lift_events::store::StoreError) -> CliError {
    let mut message = format!("reading table {table} failed: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    CliError::Failed(message)
}

/// `lift cancel ID`: a cancel of saga `ID` on its orchestrator's queue, which applies it
/// as `Orchestrator::cancel` does (the command has no saga definitions to apply it
/// with). The saga is read first: an unknown one, or one that completed or needs
/// attention, is refused and nothing is sent; one that compensates already, or ended
/// compensated, is said so and nothing is sent. Whether the orchestrator could cancel a
/// running saga (not at or past its pivot) shows in `lift saga ID`.
pub(crate) async fn cancel(args: &Args) -> Result<String, CliError> {
    let (id, queue, state) = operated_saga(args).await?;
    match state.status() {
        SagaStatus::Running => {}
        SagaStatus::Compensating | SagaStatus::Compensated => {
            return Ok(format!(
                "saga {id} is {} already; nothing sent\n",
                state.status().as_str()
            ));
        }
        _ if state.cancelled() => {
            return Ok(format!(
                "saga {id} was cancelled and is {}; nothing sent\n",
                state.status().as_str()
            ));
        }
        status => {
            return Err(CliError::Failed(format!(
                "saga {id} is {}: it cannot be cancelled; nothing sent",
                status.as_str()
            )));
        }
    }
    let reason = args
        .reason
        .as_deref()
        .unwrap_or("cancelled with lift cancel");
    let envelope = lift_events::relay::cancel_envelope("lift-cli", id, reason)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    send(&queue, envelope).await?;
    Ok(format!(
        "cancel of saga {id} sent to {queue}; `lift saga {id}` shows what it did\n"
    ))
}

/// `lift redrive ID`: a redrive of saga `ID` on its orchestrator's queue, at the version
/// read, which the orchestrator applies as `Orchestrator::redrive` does: the command the
/// saga stopped on is sent again. The saga is read first: one that does not need attention,
/// or stopped with no command to send again, is refused and nothing is sent. A redrive
/// names the version it read, so one sent twice, or after the saga moved, does nothing.
pub(crate) async fn redrive(args: &Args) -> Result<String, CliError> {
    let (id, queue, state) = operated_saga(args).await?;
    let Some(halted) = state.halted() else {
        let why = if state.status() == SagaStatus::NeedsAttention {
            "it stopped with no command to send again (an input too large to store, or a release that did not keep the command)"
        } else {
            "only a saga that needs attention can be redriven"
        };
        return Err(CliError::Failed(format!(
            "saga {id} is {}: {why}; nothing sent",
            state.status().as_str()
        )));
    };
    let reason = args
        .reason
        .as_deref()
        .unwrap_or("redriven with lift redrive");
    let envelope = lift_events::relay::redrive_envelope("lift-cli", id, state.version(), reason)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    send(&queue, envelope).await?;
    let step = step_name(&state, halted.step as usize);
    let mut out = format!(
        "redrive of saga {id} (version {}, stopped on {step}) sent to {queue}; `lift saga {id}` shows what it did\n",
        state.version()
    );
    let first_sent = state.history().iter().find_map(|entry| match entry.event {
        HistoryEvent::CommandSent { step, phase, .. }
            if step == halted.step && phase == halted.phase =>
        {
            Some(entry.at_ms)
        }
        _ => None,
    });
    let age = first_sent.map(|at| now_ms().saturating_sub(at));
    if halted.resend() && age.is_some_and(|age| age > DAY_MS) {
        out.push_str(&format!(
            "note: it goes under the id it was first sent with, {} ago: a participant that remembers command ids for 24 hours (the default) runs it again, and only an effect conditional on the step's id stops a second effect\n",
            span(age.unwrap_or(0))
        ));
    }
    Ok(out)
}

/// A day, in ms: how long `consume::Participant` remembers a command id by default.
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The saga id, the orchestrator's queue (`--queue`, else `LIFT_ORCHESTRATOR_QUEUE`) and
/// the saga as stored, for a command that sends to that queue.
async fn operated_saga(args: &Args) -> Result<(&str, String, SagaState), CliError> {
    let id = args
        .target
        .as_deref()
        .ok_or_else(|| CliError::Usage(format!("{} needs a saga ID", args.command)))?;
    let queue = match &args.queue {
        Some(queue) => queue.clone(),
        None => std::env::var("LIFT_ORCHESTRATOR_QUEUE").map_err(|_| {
            CliError::Usage(
                "no queue: pass --queue or set LIFT_ORCHESTRATOR_QUEUE (the orchestrator's)"
                    .to_owned(),
            )
        })?,
    };
    let (table, store) = saga_store(args).await?;
    let state = store
        .load(id)
        .await
        .map_err(|e| read_failed(&table, &e))?
        .ok_or_else(|| CliError::Failed(format!("no saga {id} in table {table}; nothing sent")))?;
    Ok((id, queue, state))
}

/// Sends `envelope` to the orchestrator's `queue`.
async fn send(queue: &str, envelope: lift_events::Envelope) -> Result<(), CliError> {
    let client = aws_sdk_sqs::Client::new(lift_core::aws::sdk_config().await);
    let publisher =
        lift_events::publish::SqsPublisher::new(client, queue, PublishConfig::default());
    publisher
        .send(&[SqsMessage::new(envelope)])
        .await
        .map_err(|e| CliError::Failed(format!("sending to {queue} failed: {e}")))?;
    Ok(())
}

/// Runs `lift sagas` or `lift saga ID` against the saga table.
pub(crate) async fn run(args: &Args) -> Result<String, CliError> {
    let (table, store) = saga_store(args).await?;
    let failed = |e: lift_events::store::StoreError| read_failed(&table, &e);
    if args.command == "saga" {
        let id = args
            .target
            .as_deref()
            .ok_or_else(|| CliError::Usage("saga needs an ID".to_owned()))?;
        return match store.load(id).await.map_err(failed)? {
            Some(state) => Ok(show(&state)),
            None => Err(CliError::Failed(format!("no saga {id} in table {table}"))),
        };
    }
    if args.target.is_some() {
        return Err(CliError::Usage(
            "sagas takes no ID (lift saga ID shows one)".to_owned(),
        ));
    }
    let statuses = match &args.state {
        Some(name) => vec![status(name)?],
        None => ALL.to_vec(),
    };
    let limit = args.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 {
        return Err(CliError::Usage("--limit is at least 1".to_owned()));
    }
    let mut found = Vec::new();
    let mut cut = false;
    for s in statuses {
        let of_state = store.list(s, limit).await.map_err(failed)?;
        cut |= of_state.len() >= limit;
        found.extend(of_state);
    }
    let mut out = list(&found);
    if cut {
        out.push_str(&format!(
            "(at most {limit} a state, least recently moved first: more may exist; see --limit)\n"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lift_events::saga::{
        Outcome, Reply, RetryPolicy, Saga, SagaInput, StartMeta, Step, StepError, Timer, TimerKind,
        remote, start, transition,
    };
    use serde_json::json;

    use super::*;

    const T0: u64 = 1_764_504_000_000; // 2025-11-30T12:00:00Z

    fn saga() -> Saga {
        let step = |name: &str| {
            Step::new(
                name,
                remote("p", &format!("Do{name}")),
                Some(remote("p", &format!("Undo{name}"))),
            )
            .timeout(Duration::from_secs(30))
            .retry(RetryPolicy::new(2, Duration::from_secs(1), Duration::from_secs(1)).unwrap())
        };
        Saga::named("trip", 3)
            .step(step("reserve"))
            .step(step("charge"))
            .build()
            .unwrap()
    }

    fn reply(state: &SagaState, outcome: Result<serde_json::Value, StepError>) -> SagaInput {
        let command = state.commands().next().unwrap().clone();
        SagaInput::Reply(Reply::to(&command, outcome))
    }

    fn apply(saga: &Saga, state: &SagaState, input: &SagaInput, now: u64) -> SagaState {
        match transition(saga, state, input, now) {
            Outcome::Applied(t) => t.into_state(),
            other => panic!("{other:?}"),
        }
    }

    /// A trip whose charge times out once, then is refused; the reservation is undone.
    fn compensated() -> SagaState {
        let saga = saga();
        let s1 = start(
            &saga,
            "trip-42",
            json!({"to": "Lyon"}),
            StartMeta::default(),
            T0,
        )
        .into_state();
        let s2 = apply(&saga, &s1, &reply(&s1, Ok(json!({"room": 12}))), T0 + 120);
        let timer = SagaInput::Timer(Timer {
            saga_id: "trip-42".into(),
            kind: TimerKind::Timeout,
            step: 1,
            phase: Phase::Action,
            attempt: 1,
            due_ms: T0 + 30_120,
        });
        let s3 = apply(&saga, &s2, &timer, T0 + 30_120);
        let retry = SagaInput::Timer(Timer {
            saga_id: "trip-42".into(),
            kind: TimerKind::Retry,
            step: 1,
            phase: Phase::Action,
            attempt: 2,
            due_ms: T0 + 31_120,
        });
        let s4 = apply(&saga, &s3, &retry, T0 + 31_120);
        let s5 = apply(
            &saga,
            &s4,
            &reply(&s4, Err(StepError::Rejected("card declined".into()))),
            T0 + 31_500,
        );
        apply(&saga, &s5, &reply(&s5, Ok(json!(null))), T0 + 32_000)
    }

    #[test]
    fn a_saga_shows_its_steps_and_its_timeline() {
        let state = compensated();
        let shown = show(&state);
        let expected = "\
saga     trip-42 (trip v3)
state    compensated: card declined
started  2025-11-30T12:00:00.000Z
moved    2025-11-30T12:00:32.000Z (+32.0s), 6 transitions
steps    reserve compensated, charge refused
";
        assert!(shown.starts_with(expected), "{shown}");
        for line in [
            "v1   +0ms      started (definition 3)",
            "v1   +0ms      sent reserve (action, attempt 1)",
            "v2   +120ms    reserve action answered ok (attempt 1)",
            "v3   +30120ms  charge action timed out (attempt 1)",
            "v3   +30120ms  retry charge action as attempt 2 at +31120ms",
            "v4   +31120ms  sent charge (action, attempt 2)",
            "v5   +31500ms  charge action failed (attempt 2): card declined",
            "v5   +31500ms  compensating: card declined",
            "v5   +31500ms  sent reserve (compensation, attempt 1)",
            "v6   +32000ms  reserve compensation answered ok (attempt 1)",
            "v6   +32000ms  ended compensated: card declined",
        ] {
            assert!(shown.contains(line), "missing {line:?} in\n{shown}");
        }
        assert!(
            !shown.contains("waiting"),
            "an ended saga waits for nothing"
        );
    }

    /// A saga that needs attention shows the command a redrive sends again, and how: a
    /// refused one under a new id, one out of attempts under its own; a redrive shows in
    /// the timeline.
    #[test]
    fn a_saga_that_needs_attention_shows_what_a_redrive_sends() {
        let saga = saga();
        let s1 = start(&saga, "trip-7", json!({}), StartMeta::default(), T0).into_state();
        let s2 = apply(&saga, &s1, &reply(&s1, Ok(json!(1))), T0 + 100);
        let s3 = apply(
            &saga,
            &s2,
            &reply(&s2, Err(StepError::Rejected("no".into()))),
            T0 + 200,
        );
        let refused = apply(
            &saga,
            &s3,
            &reply(&s3, Err(StepError::Rejected("closed".into()))),
            T0 + 300,
        );
        let shown = show(&refused);
        assert!(
            shown.contains("stopped  on reserve compensation (refused): `lift redrive trip-7` sends it again under a new command id\n"),
            "{shown}"
        );
        let redrive = SagaInput::Redrive(lift_events::saga::Redrive {
            saga_id: "trip-7".into(),
            version: refused.version(),
            reason: "reopened".into(),
        });
        let redriven = apply(&saga, &refused, &redrive, T0 + 400);
        let shown = show(&redriven);
        assert!(!shown.contains("stopped"), "{shown}");
        assert!(
            shown.contains("v5   +400ms    redriven: reserve compensation again: reopened"),
            "{shown}"
        );
        // Out of attempts: the compensation may have acted.
        let mut stuck = redriven;
        let mut now = T0 + 500;
        while stuck.status() != SagaStatus::NeedsAttention {
            now += 1_000;
            let input = match stuck.cursor().map(|c| (c.waiting, c.attempt)) {
                Some((Waiting::Retry { due_ms }, attempt)) => {
                    now = due_ms;
                    SagaInput::Timer(Timer {
                        saga_id: "trip-7".into(),
                        kind: TimerKind::Retry,
                        step: 0,
                        phase: Phase::Compensation,
                        attempt,
                        due_ms,
                    })
                }
                _ => reply(&stuck, Err(StepError::Failed("down".into()))),
            };
            stuck = apply(&saga, &stuck, &input, now);
        }
        assert_eq!(stuck.status(), SagaStatus::NeedsAttention);
        let shown = show(&stuck);
        assert!(
            shown.contains("stopped  on reserve compensation (out of attempts, may have taken effect): `lift redrive trip-7` sends it again under its own command id (answered from the participant's record while it remembers the id)\n"),
            "{shown}"
        );
    }

    #[test]
    fn a_running_saga_shows_what_it_waits_for() {
        let saga = saga();
        let s1 = start(&saga, "trip-7", json!({}), StartMeta::default(), T0).into_state();
        let shown = show(&s1);
        assert!(
            shown.contains(
                "waiting  reserve action, attempt 1: a reply, until 2025-11-30T12:00:30.000Z (+30.0s)"
            ),
            "{shown}"
        );
        assert!(shown.contains("steps    reserve running, charge pending"));
    }

    #[test]
    fn sagas_are_listed_one_a_line_with_their_reason() {
        let done = compensated();
        let running = start(&saga(), "trip-7", json!({}), StartMeta::default(), T0).into_state();
        let listed = list(&[SagaSummary::of(&running), SagaSummary::of(&done)]);
        let lines: Vec<&str> = listed.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("STATE"));
        assert!(lines[1].starts_with("running          trip             trip-7"));
        assert!(
            lines[1].ends_with("2025-11-30T12:00:00.000Z  -"),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("compensated"));
        assert!(lines[2].ends_with("card declined"));
        assert_eq!(list(&[]).lines().nth(1), Some("(none)"));
    }

    #[test]
    fn states_are_named_with_dashes_or_underscores() {
        assert_eq!(
            status("needs-attention").unwrap(),
            SagaStatus::NeedsAttention
        );
        assert_eq!(
            status("needs_attention").unwrap(),
            SagaStatus::NeedsAttention
        );
        assert_eq!(status("completed").unwrap(), SagaStatus::Completed);
        assert!(matches!(status("done"), Err(CliError::Usage(_))));
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(span(850), "850ms");
        assert_eq!(span(12_400), "12.4s");
        assert_eq!(span(185_000), "3m05s");
        assert_eq!(span(8_040_000), "2h14m");
    }
}
