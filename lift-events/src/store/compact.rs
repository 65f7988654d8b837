//! The saga item's compact parts: its history one line per entry, and its outbox without
//! the data and outputs the state already holds. A saga's item is billed 1 write unit per
//! KB on every transition; written as JSON objects its history made most of it.
//!
//! A history line is `<version> <ms since the start> <what>`, where what is one of
//!
//! ```text
//! S <definition version>                          started
//! C <step> <a|c> <attempt>                        command sent (action or compensation)
//! R <step> <a|c> <attempt> <1|0> [<reason>]        replied, ok or not
//! T <step> <a|c> <attempt>                        timed out
//! Y <step> <a|c> <attempt> <due, ms since start>  retry scheduled
//! U <step>                                        out of attempts: uncertain
//! K <reason>                                      compensation started
//! X <reason>                                      cancelled
//! D <step> <a|c> <reason>                         redriven
//! F <status> [<reason>]                           finished
//! ```
//!
//! and a reason is a JSON string (so it holds no line break).

use crate::saga::{HistoryEntry, HistoryEvent, Message, Phase, SagaState, SagaStatus};

fn phase(p: Phase) -> &'static str {
    match p {
        Phase::Action => "a",
        Phase::Compensation => "c",
    }
}

fn reason(r: &str) -> String {
    serde_json::to_string(r).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The history as lines (see the module docs).
pub(crate) fn history_lines(created_ms: u64, history: &[HistoryEntry]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(history.len() * 24);
    for (i, entry) in history.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = write!(
            out,
            "{} {} ",
            entry.version,
            entry.at_ms.saturating_sub(created_ms)
        );
        let _ = match &entry.event {
            HistoryEvent::Started { definition_version } => write!(out, "S {definition_version}"),
            HistoryEvent::CommandSent {
                step,
                phase: p,
                attempt,
            } => write!(out, "C {step} {} {attempt}", phase(*p)),
            HistoryEvent::Replied {
                step,
                phase: p,
                attempt,
                ok,
                reason: r,
            } => {
                let _ = write!(out, "R {step} {} {attempt} {}", phase(*p), u8::from(*ok));
                match r {
                    Some(r) => write!(out, " {}", reason(r)),
                    None => Ok(()),
                }
            }
            HistoryEvent::TimedOut {
                step,
                phase: p,
                attempt,
            } => write!(out, "T {step} {} {attempt}", phase(*p)),
            HistoryEvent::RetryScheduled {
                step,
                phase: p,
                attempt,
                due_ms,
            } => write!(
                out,
                "Y {step} {} {attempt} {}",
                phase(*p),
                due_ms.saturating_sub(created_ms)
            ),
            HistoryEvent::StepUncertain { step } => write!(out, "U {step}"),
            HistoryEvent::CompensationStarted { reason: r } => write!(out, "K {}", reason(r)),
            HistoryEvent::Cancelled { reason: r } => write!(out, "X {}", reason(r)),
            HistoryEvent::Redriven {
                step,
                phase: p,
                reason: r,
            } => write!(out, "D {step} {} {}", phase(*p), reason(r)),
            HistoryEvent::Finished { status, reason: r } => {
                let _ = write!(out, "F {}", status.as_str());
                match r {
                    Some(r) => write!(out, " {}", reason(r)),
                    None => Ok(()),
                }
            }
        };
    }
    out
}

fn status(s: &str) -> Option<SagaStatus> {
    [
        SagaStatus::Running,
        SagaStatus::Compensating,
        SagaStatus::Completed,
        SagaStatus::Compensated,
        SagaStatus::NeedsAttention,
    ]
    .into_iter()
    .find(|status| status.as_str() == s)
}

/// The history in `lines` (see the module docs).
pub(crate) fn parse_history(created_ms: u64, lines: &str) -> Result<Vec<HistoryEntry>, String> {
    if lines.is_empty() {
        return Ok(Vec::new());
    }
    lines
        .split('\n')
        .map(|line| parse_line(created_ms, line).ok_or_else(|| format!("history line `{line}`")))
        .collect()
}

fn parse_line(created_ms: u64, line: &str) -> Option<HistoryEntry> {
    let mut head = line.splitn(4, ' ');
    let version = head.next()?.parse().ok()?;
    let at_ms = created_ms.checked_add(head.next()?.parse().ok()?)?;
    let code = head.next()?;
    let rest = head.next().unwrap_or("");
    let num = |s: Option<&str>| s?.parse::<u32>().ok();
    let phase = |s: Option<&str>| match s? {
        "a" => Some(Phase::Action),
        "c" => Some(Phase::Compensation),
        _ => None,
    };
    let text = |s: &str| serde_json::from_str::<String>(s).ok();
    let mut f = rest.splitn(5, ' ');
    let event = match code {
        "S" => HistoryEvent::Started {
            definition_version: num(Some(rest))?,
        },
        "C" | "T" | "Y" | "R" => {
            let (step, p, attempt) = (num(f.next())?, phase(f.next())?, num(f.next())?);
            match code {
                "C" => HistoryEvent::CommandSent {
                    step,
                    phase: p,
                    attempt,
                },
                "T" => HistoryEvent::TimedOut {
                    step,
                    phase: p,
                    attempt,
                },
                "Y" => HistoryEvent::RetryScheduled {
                    step,
                    phase: p,
                    attempt,
                    due_ms: created_ms.checked_add(f.next()?.parse().ok()?)?,
                },
                _ => HistoryEvent::Replied {
                    step,
                    phase: p,
                    attempt,
                    ok: f.next()? == "1",
                    reason: match f.next() {
                        Some(r) => Some(text(r)?),
                        None => None,
                    },
                },
            }
        }
        "U" => HistoryEvent::StepUncertain {
            step: num(Some(rest))?,
        },
        "K" => HistoryEvent::CompensationStarted {
            reason: text(rest)?,
        },
        "X" => HistoryEvent::Cancelled {
            reason: text(rest)?,
        },
        "D" => {
            let mut f = rest.splitn(3, ' ');
            HistoryEvent::Redriven {
                step: num(f.next())?,
                phase: phase(f.next())?,
                reason: text(f.next()?)?,
            }
        }
        "F" => {
            let (s, r) = rest.split_once(' ').unwrap_or((rest, ""));
            HistoryEvent::Finished {
                status: status(s)?,
                reason: if r.is_empty() { None } else { Some(text(r)?) },
            }
        }
        _ => return None,
    };
    Some(HistoryEntry {
        version,
        at_ms,
        event,
    })
}

/// The outbox as stored: commands without the saga's data and outputs, the saga's end
/// without its reason and correlation id (the state holds them all; [`refill`] puts them
/// back).
pub(crate) fn strip(outbox: &[Message]) -> Vec<Message> {
    outbox
        .iter()
        .map(|m| match m {
            Message::Command(c) => {
                let mut c = c.clone();
                c.data = serde_json::Value::Null;
                c.outputs.clear();
                Message::Command(c)
            }
            Message::Finished(f) => {
                let mut f = f.clone();
                f.reason = None;
                f.correlation_id.clear();
                f.saga_id.clear();
                f.saga.clear();
                f.tenant = None;
                Message::Finished(f)
            }
            other => other.clone(),
        })
        .collect()
}

/// Puts back what [`strip`] left out, from the state.
pub(crate) fn refill(state: &mut SagaState) {
    let (data, outputs) = (state.data.clone(), state.outputs.clone());
    let (reason, correlation_id) = (state.reason.clone(), state.correlation_id.clone());
    let (id, name) = (state.id.clone(), state.name.clone());
    let tenant = state.tenant.clone();
    for m in &mut state.outbox {
        match m {
            Message::Command(c) if c.data.is_null() && c.outputs.is_empty() => {
                c.data.clone_from(&data);
                c.outputs.clone_from(&outputs);
            }
            Message::Finished(f) if f.correlation_id.is_empty() => {
                f.reason.clone_from(&reason);
                f.correlation_id.clone_from(&correlation_id);
                f.saga_id.clone_from(&id);
                f.saga.clone_from(&name);
                f.tenant.clone_from(&tenant);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_history_event_reads_back_as_written() {
        let created = 1_700_000_000_000;
        let at = |v: u64, dt: u64, event| HistoryEntry {
            version: v,
            at_ms: created + dt,
            event,
        };
        let history = vec![
            at(
                1,
                0,
                HistoryEvent::Started {
                    definition_version: 3,
                },
            ),
            at(
                1,
                0,
                HistoryEvent::CommandSent {
                    step: 0,
                    phase: Phase::Action,
                    attempt: 1,
                },
            ),
            at(
                2,
                12,
                HistoryEvent::Replied {
                    step: 0,
                    phase: Phase::Action,
                    attempt: 1,
                    ok: true,
                    reason: None,
                },
            ),
            at(
                3,
                40,
                HistoryEvent::TimedOut {
                    step: 1,
                    phase: Phase::Action,
                    attempt: 1,
                },
            ),
            at(
                3,
                40,
                HistoryEvent::RetryScheduled {
                    step: 1,
                    phase: Phase::Action,
                    attempt: 2,
                    due_ms: created + 1040,
                },
            ),
            at(
                4,
                1040,
                HistoryEvent::Replied {
                    step: 1,
                    phase: Phase::Action,
                    attempt: 2,
                    ok: false,
                    reason: Some("line\nbreak \"quoted\" é".into()),
                },
            ),
            at(4, 1040, HistoryEvent::StepUncertain { step: 1 }),
            at(
                4,
                1040,
                HistoryEvent::Cancelled {
                    reason: "the customer \"changed\" their mind\né".into(),
                },
            ),
            at(
                4,
                1040,
                HistoryEvent::CompensationStarted {
                    reason: "step `b` failed 2 times: down".into(),
                },
            ),
            at(
                5,
                2000,
                HistoryEvent::Replied {
                    step: 0,
                    phase: Phase::Compensation,
                    attempt: 1,
                    ok: false,
                    reason: Some(String::new()),
                },
            ),
            at(
                5,
                2000,
                HistoryEvent::Finished {
                    status: SagaStatus::NeedsAttention,
                    reason: Some("a b".into()),
                },
            ),
            at(
                6,
                2001,
                HistoryEvent::Redriven {
                    step: 0,
                    phase: Phase::Compensation,
                    reason: "fixed the \"refund\" service\né".into(),
                },
            ),
            at(
                7,
                2002,
                HistoryEvent::Finished {
                    status: SagaStatus::Completed,
                    reason: None,
                },
            ),
        ];
        let lines = history_lines(created, &history);
        assert_eq!(lines.lines().count(), history.len(), "{lines}");
        assert!(
            lines.starts_with("1 0 S 3\n1 0 C 0 a 1\n2 12 R 0 a 1 1\n"),
            "{lines}"
        );
        assert_eq!(parse_history(created, &lines).unwrap(), history);
        assert!(lines.len() < 400, "{} bytes", lines.len());
        assert_eq!(parse_history(created, "").unwrap(), []);
        assert!(parse_history(created, "1 0 Q 1").is_err());
        assert!(parse_history(created, "1 0 C 0 x 1").is_err());
        assert!(parse_history(created, "1 0 D 0 c").is_err());
    }
}
