//! The trip example's tests: the orchestrator driven in-process (an in-memory store, the
//! participants' work called directly), and the three functions deployed from
//! `template.yaml` onto the local AWS emulator.
//!
//! One test binary per crate: each binary links the whole dependency tree, so one binary
//! instead of one per file keeps builds fast and small.

mod app;
mod deployed;

use lift_events::saga::{HistoryEvent, Phase, SagaState};

/// A saga's history as one short line per entry (`send 1 compensation`, `reply 2 failed`,
/// ...), in the order it was written.
pub(crate) fn timeline(state: &SagaState) -> Vec<String> {
    let phase = |p: &Phase| match p {
        Phase::Action => "action",
        Phase::Compensation => "compensation",
    };
    state
        .history()
        .iter()
        .map(|entry| match &entry.event {
            HistoryEvent::Started { .. } => "started".to_owned(),
            HistoryEvent::CommandSent { step, phase: p, .. } => {
                format!("send {step} {}", phase(p))
            }
            HistoryEvent::Replied {
                step, phase: p, ok, ..
            } => format!(
                "reply {step} {} {}",
                phase(p),
                if *ok { "ok" } else { "failed" }
            ),
            HistoryEvent::CompensationStarted { .. } => "compensating".to_owned(),
            HistoryEvent::Finished { status, .. } => format!("end {}", status.as_str()),
            other => format!("{other:?}"),
        })
        .collect()
}

/// The steps whose compensation was sent, in the order it was.
pub(crate) fn compensations(state: &SagaState) -> Vec<u32> {
    state
        .history()
        .iter()
        .filter_map(|entry| match &entry.event {
            HistoryEvent::CommandSent {
                step,
                phase: Phase::Compensation,
                ..
            } => Some(*step),
            _ => None,
        })
        .collect()
}

pub(crate) const COMPLETED: [&str; 8] = [
    "started",
    "send 0 action",
    "reply 0 action ok",
    "send 1 action",
    "reply 1 action ok",
    "send 2 action",
    "reply 2 action ok",
    "end completed",
];

pub(crate) const REFUSED_LAST: [&str; 13] = [
    "started",
    "send 0 action",
    "reply 0 action ok",
    "send 1 action",
    "reply 1 action ok",
    "send 2 action",
    "reply 2 action failed",
    "compensating",
    "send 1 compensation",
    "reply 1 compensation ok",
    "send 0 compensation",
    "reply 0 compensation ok",
    "end compensated",
];
