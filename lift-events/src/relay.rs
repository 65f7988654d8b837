//! Publish after commit: the relay turns the outbox stored with a transition into events
//! on the bus and timers on the orchestrator's queue.
//!
//! The relay reads the saga table's DynamoDB Stream (new images): each record carries the
//! outbox of exactly one stored transition, so an event is published only for a write that
//! happened, and, since the stream redelivers a record until it is processed, never lost
//! between the write and the publish. A record may be relayed more than once (a crash
//! after publishing, before the checkpoint): every envelope's id is derived from the saga,
//! the state version and the message's place in the outbox, so a relayed twice event has
//! the same id and consumers drop the copy.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use crate::envelope::Envelope;
use crate::saga::{
    Cancel, Command, Message, Redrive, Reply, SagaInput, SagaState, Snapshot, Target, Timer,
};

/// The `type` of a reply envelope (participant → orchestrator).
pub const REPLY_TYPE: &str = "lift.saga.Reply";
/// The `type` of a timer envelope (orchestrator → itself, through an SQS delay).
pub const TIMER_TYPE: &str = "lift.saga.Timer";
/// The `type` of a cancel envelope (an operator or a function → the orchestrator, on its
/// queue): applied as [`Orchestrator::cancel`](crate::saga::Orchestrator::cancel) does.
pub const CANCEL_TYPE: &str = "lift.saga.Cancel";
/// The `type` of a redrive envelope (an operator or a function → the orchestrator, on its
/// queue): applied as [`Orchestrator::redrive`](crate::saga::Orchestrator::redrive) does.
pub const REDRIVE_TYPE: &str = "lift.saga.Redrive";
/// The `type` of the event published when a saga ends (again, for a saga that needed
/// attention and was redriven).
pub const FINISHED_TYPE: &str = "lift.saga.Finished";
/// The `source` of the events the orchestrator publishes (commands included).
pub const SAGA_SOURCE: &str = "lift.saga";
/// The longest SQS delivery delay; a timer due later is re-sent when it arrives early.
pub const MAX_TIMER_DELAY: Duration = Duration::from_secs(900);
/// Entries per `PutEvents` call.
pub const PUT_EVENTS_BATCH: usize = 10;
/// The largest saga (as JSON) a command carries as its [`Command::snapshot`]: a command
/// then stays within one 64 KB billing chunk of EventBridge and SQS. A larger saga's
/// replies are applied after a read.
pub const MAX_SNAPSHOT_BYTES: usize = 32 * 1024;

/// EventBridge's limit for one entry, which bounds the commands the relay sends (as
/// EventBridge counts an entry: source, type and the envelope), less 1 KiB left for what a
/// transport wraps around them. A command carries the saga's data and the outputs of its
/// completed steps; a larger one is never sent (see [`Relay::relay_states`]): retrying it
/// would hold up every later record of its stream shard, and its saga is moved on by its
/// timer instead.
pub const MAX_COMMAND_BYTES: usize = 256 * 1024;

/// Room left under [`MAX_COMMAND_BYTES`] for what a transport wraps around a command: an
/// asynchronous invocation carries it as an EventBridge-shaped event (about 200 bytes and
/// the id more than the entry EventBridge counts).
const WRAPPING_BYTES: usize = 1024;

fn fits(bytes: usize) -> bool {
    bytes + WRAPPING_BYTES <= MAX_COMMAND_BYTES
}

/// The size of `command` as the relay would send it (without a snapshot), when it is above
/// [`MAX_COMMAND_BYTES`].
pub(crate) fn too_large(command: &Command) -> Result<Option<usize>, serde_json::Error> {
    // Most commands are far below the limit, which their own JSON and a bound on what the
    // envelope adds tell without building the envelope (a copy of the command as a value,
    // then its text). Each string field counts 6 bytes a byte, JSON's longest escape.
    let mut command_bytes = ByteCount(0);
    serde_json::to_writer(&mut command_bytes, command)?;
    let strings = [
        Some(command_kind(command)),
        Some(SAGA_SOURCE),
        Some(command.correlation_id.as_str()),
        command.tenant.as_deref(),
        Some(command.saga_id.as_str()),
        Some(command.step_name.as_str()),
    ]
    .into_iter()
    .flatten()
    .map(str::len)
    .sum::<usize>();
    // The field names, the time, the schema version and the entry's own source and type.
    const ENVELOPE_BOUND: usize = 512;
    if fits(command_bytes.0 + 7 * strings + ENVELOPE_BOUND) {
        return Ok(None);
    }
    let bytes = crate::publish::entry_size(&command_envelope(String::new(), command)?)?;
    Ok((!fits(bytes)).then_some(bytes))
}

/// An `io::Write` that keeps only the number of bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The event type of `command`'s envelope.
fn command_kind(command: &Command) -> &str {
    match &command.target {
        Target::Remote { command, .. } => command.as_str(),
        Target::Local => "lift.saga.Local",
    }
}

/// The calls the relay makes: events on the bus, delayed messages on the orchestrator's
/// queue. [`AwsTransport`](crate::publish::AwsTransport) is EventBridge and SQS.
pub trait Transport: Send + Sync {
    /// Puts up to 10 events on the bus; returns the indexes of the entries that failed.
    ///
    /// # Errors
    /// [`TransportError`] when the call as a whole failed.
    fn put_events(
        &self,
        entries: &[Envelope],
    ) -> impl Future<Output = Result<Vec<usize>, TransportError>> + Send;

    /// Sends `message` to the orchestrator's queue, delivered after `delay` (≤ 15 min).
    ///
    /// # Errors
    /// [`TransportError`] when the message was not sent.
    fn send_delayed(
        &self,
        message: &Envelope,
        delay: Duration,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Sends `commands` straight to `participant`'s queue, when the transport knows one:
    /// `Ok(true)` once all are sent, `Ok(false)` when it has no queue for `participant`
    /// (the relay then puts them on the bus). A queue saves the bus entry each command
    /// would cost. By default no participant has one.
    ///
    /// # Errors
    /// [`TransportError`] when some were not sent.
    fn send_commands(
        &self,
        participant: &str,
        commands: &[Envelope],
    ) -> impl Future<Output = Result<bool, TransportError>> + Send {
        let _ = (participant, commands);
        async { Ok(false) }
    }
}

/// Why a transport call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The service throttled the call.
    #[error("throttled")]
    Throttled,
    /// The entry is refused before sending (too large, malformed): nothing was sent.
    #[error("refused: {0}")]
    Refused(String),
    /// The service refused these entries for what they hold (EventBridge's
    /// `InvalidArgument` or `MalformedDetail`, an SQS sender fault): sending them again
    /// cannot succeed. The call's other entries were delivered.
    #[error("{} entries refused ({reason}): {}", ids.len(), ids.join(", "))]
    Rejected {
        /// The envelope ids refused.
        ids: Vec<String>,
        /// The service's error code.
        reason: String,
    },
    /// Some entries were still failing when the publisher's deadline passed.
    #[error("{} entries undelivered: {reason}", ids.len())]
    Undelivered {
        /// The envelope ids not delivered.
        ids: Vec<String>,
        /// The last error code seen.
        reason: String,
    },
    /// Any other failure.
    #[error("the call failed")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why an outbox was not (wholly) relayed; relay it again (leave the stream record
/// unacknowledged).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// A message does not serialize.
    #[error("an outbox message does not serialize: {0}")]
    Encode(#[from] serde_json::Error),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Some events were still refused after the relay's attempts.
    #[error("{0} events were not accepted by the bus")]
    Unaccepted(usize),
}

/// Publishes outboxes through a [`Transport`].
#[derive(Debug, Clone)]
pub struct Relay<T> {
    transport: T,
    attempts: u32,
}

fn envelope<P: Serialize>(
    id: String,
    kind: &str,
    source: &str,
    correlation_id: &str,
    tenant: Option<&str>,
    saga: (&str, Option<&str>),
    payload: &P,
) -> Result<Envelope, serde_json::Error> {
    Ok(Envelope {
        id,
        kind: kind.to_owned(),
        source: source.to_owned(),
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        tenant: tenant.map(str::to_owned),
        correlation_id: correlation_id.to_owned(),
        causation_id: None,
        trace_header: None,
        schema_version: 1,
        saga_id: Some(saga.0.to_owned()),
        saga_step: saga.1.map(str::to_owned),
        payload: serde_json::to_value(payload)?,
        extra: serde_json::Map::new(),
    })
}

/// The envelope of a command (its `type` is the step's command type).
///
/// # Errors
/// When the command does not serialize.
pub fn command_envelope(id: String, command: &Command) -> Result<Envelope, serde_json::Error> {
    envelope(
        id,
        command_kind(command),
        SAGA_SOURCE,
        &command.correlation_id,
        command.tenant.as_deref(),
        (&command.saga_id, Some(&command.step_name)),
        command,
    )
}

/// The envelope of a reply to `command`, published by `participant`, with a fresh id.
///
/// # Errors
/// When the reply does not serialize.
pub fn reply_envelope(
    participant: &str,
    command: &Command,
    reply: &Reply,
) -> Result<Envelope, serde_json::Error> {
    envelope(
        crate::envelope::new_id(),
        REPLY_TYPE,
        participant,
        &command.correlation_id,
        command.tenant.as_deref(),
        (&command.saga_id, Some(&command.step_name)),
        reply,
    )
}

/// The envelope of a timer.
///
/// # Errors
/// When the timer does not serialize.
pub fn timer_envelope(id: String, timer: &Timer) -> Result<Envelope, serde_json::Error> {
    envelope(
        id,
        TIMER_TYPE,
        SAGA_SOURCE,
        &timer.saga_id,
        None,
        (&timer.saga_id, None),
        timer,
    )
}

/// The envelope that cancels saga `saga_id` for `reason`, sent by `source` (who asks),
/// for the orchestrator's queue: a way to cancel for whoever may send to that queue but
/// has no code with the saga's definition (the `lift cancel` command, say).
///
/// # Errors
/// When the cancel does not serialize.
pub fn cancel_envelope(
    source: &str,
    saga_id: &str,
    reason: &str,
) -> Result<Envelope, serde_json::Error> {
    let cancel = Cancel {
        saga_id: saga_id.to_owned(),
        reason: reason.to_owned(),
    };
    operator_envelope(CANCEL_TYPE, source, saga_id, &cancel)
}

/// The envelope that redrives saga `saga_id`, which needs attention at `version`, for
/// `reason`, sent by `source` (who asks), for the orchestrator's queue: as
/// [`cancel_envelope`], for the `lift redrive` command.
///
/// # Errors
/// When the redrive does not serialize.
pub fn redrive_envelope(
    source: &str,
    saga_id: &str,
    version: u64,
    reason: &str,
) -> Result<Envelope, serde_json::Error> {
    let redrive = Redrive {
        saga_id: saga_id.to_owned(),
        version,
        reason: reason.to_owned(),
    };
    operator_envelope(REDRIVE_TYPE, source, saga_id, &redrive)
}

/// An envelope of type `kind` for saga `saga_id` from `source`, with a new id.
fn operator_envelope(
    kind: &str,
    source: &str,
    saga_id: &str,
    payload: &impl Serialize,
) -> Result<Envelope, serde_json::Error> {
    envelope(
        crate::envelope::new_id(),
        kind,
        source,
        saga_id,
        None,
        (saga_id, None),
        payload,
    )
}

/// The saga input an orchestrator queue message carries: a reply, a timer, a cancel or a
/// redrive; `None` for any other envelope.
///
/// # Errors
/// When the payload does not decode as its type says.
pub fn saga_input(envelope: &Envelope) -> Option<Result<SagaInput, serde_json::Error>> {
    match envelope.kind.as_str() {
        REPLY_TYPE => Some(serde_json::from_value(envelope.payload.clone()).map(SagaInput::Reply)),
        TIMER_TYPE => Some(serde_json::from_value(envelope.payload.clone()).map(SagaInput::Timer)),
        CANCEL_TYPE => {
            Some(serde_json::from_value(envelope.payload.clone()).map(SagaInput::Cancel))
        }
        REDRIVE_TYPE => {
            Some(serde_json::from_value(envelope.payload.clone()).map(SagaInput::Redrive))
        }
        _ => None,
    }
}

/// The delay to send a timer due at `due_ms` with, at `now_ms`: capped at 15 minutes.
pub fn timer_delay(due_ms: u64, now_ms: u64) -> Duration {
    Duration::from_millis(due_ms.saturating_sub(now_ms)).min(MAX_TIMER_DELAY)
}

impl<T: Transport> Relay<T> {
    /// A relay through `transport`; failed bus entries are resent up to 3 times before
    /// the outbox is reported unrelayed.
    pub fn new(transport: T) -> Self {
        Relay {
            transport,
            attempts: 3,
        }
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Publishes the outbox of version `version` of saga `saga_id`, at `now_ms`: commands
    /// to participants and the end of the saga on the bus (one `PutEvents` call for up to
    /// 10), timers to the orchestrator's queue with their delay. Local commands are left to
    /// the orchestrator, which runs them inline.
    ///
    /// # Errors
    /// [`RelayError`]; relaying the same outbox again is safe.
    pub async fn relay(
        &self,
        saga_id: &str,
        version: u64,
        outbox: &[Message],
        now_ms: u64,
    ) -> Result<usize, RelayError> {
        self.relay_all(&[(saga_id, version, outbox)], now_ms).await
    }

    /// Publishes several outboxes at once (a whole stream batch), their events packed 10
    /// to a `PutEvents` call: under load, calls carry full batches. (The stream wiring of
    /// [`crate::consume::orchestrator_inputs`] relays one record at a time, so that one
    /// record's failure is reported alone.)
    ///
    /// # Errors
    /// [`RelayError`]; relaying the same outboxes again is safe.
    pub async fn relay_all(
        &self,
        outboxes: &[(&str, u64, &[Message])],
        now_ms: u64,
    ) -> Result<usize, RelayError> {
        let mut events = Vec::new();
        let mut timers = Vec::new();
        for &(saga_id, version, outbox) in outboxes {
            collect(
                saga_id,
                version,
                outbox,
                None,
                now_ms,
                &mut events,
                &mut timers,
            )?;
        }
        self.send(events, timers).await
    }

    /// Publishes the outboxes of stored sagas (a stream batch's new images), each command
    /// carrying its saga as a [`Command::snapshot`] (when it is at most
    /// [`MAX_SNAPSHOT_BYTES`]), so the replies are applied without a read. A command above
    /// [`MAX_COMMAND_BYTES`] (less 1 KiB), or one its participant's transport refuses
    /// before sending, is not sent, logged at ERROR (target `lift::saga`): its step's
    /// timer fails the attempt, and the saga retries or compensates as for a step that
    /// does not answer.
    ///
    /// # Errors
    /// [`RelayError`]; relaying the same sagas again is safe.
    pub async fn relay_states(
        &self,
        states: &[&SagaState],
        now_ms: u64,
    ) -> Result<usize, RelayError> {
        let mut events = Vec::new();
        let mut timers = Vec::new();
        for state in states {
            collect(
                state.id(),
                state.version(),
                state.outbox(),
                Some(state),
                now_ms,
                &mut events,
                &mut timers,
            )?;
        }
        self.send(events, timers).await
    }

    async fn send(
        &self,
        events: Vec<(Option<String>, Envelope)>,
        timers: Vec<(Envelope, Duration)>,
    ) -> Result<usize, RelayError> {
        let mut sent = events.len() + timers.len();
        for (message, delay) in &timers {
            match self.transport.send_delayed(message, *delay).await {
                Ok(()) => {}
                // Refused for good (what it carries, not the queue's state): left out, or
                // the stream record would fail until it leaves the stream, holding up the
                // sagas behind it.
                Err(TransportError::Refused(reason) | TransportError::Rejected { reason, .. }) => {
                    sent -= 1;
                    tracing::error!(target: "lift::saga", timer = %message.id, %reason, "timer refused by its queue; not sent, the saga waits for its reply alone");
                }
                Err(error) => return Err(error.into()),
            }
        }
        // Commands to participants with a queue go there; the rest on the bus.
        let mut queued: Vec<(String, Vec<Envelope>)> = Vec::new();
        let mut bus = Vec::new();
        for (participant, envelope) in events {
            match participant {
                Some(p) => match queued.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, list)) => list.push(envelope),
                    None => queued.push((p, vec![envelope])),
                },
                None => bus.push(envelope),
            }
        }
        for (participant, commands) in queued {
            match self.transport.send_commands(&participant, &commands).await {
                Ok(true) => {}
                Ok(false) => bus.extend(commands),
                // Refused by the service, the others delivered: left out.
                Err(TransportError::Rejected { ids, reason }) => {
                    sent -= ids.len();
                    tracing::error!(target: "lift::saga", commands = ?ids, participant, %reason, "commands refused by the participant's transport; not sent, their steps will time out");
                }
                // Refused before anything was sent (one entry too large for this
                // transport, say): each goes alone, and one refused alone is left out as
                // a command too large is, or the stream record would fail for good.
                Err(TransportError::Refused(_)) => {
                    for command in commands {
                        let alone = std::slice::from_ref(&command);
                        match self.transport.send_commands(&participant, alone).await {
                            Ok(true) => {}
                            Ok(false) => bus.push(command),
                            Err(
                                TransportError::Refused(reason)
                                | TransportError::Rejected { reason, .. },
                            ) => {
                                sent -= 1;
                                tracing::error!(target: "lift::saga", command = %command.id, participant, %reason, "command refused by the participant's transport; not sent, the step will time out");
                            }
                            Err(error) => return Err(error.into()),
                        }
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
        let events = bus;
        for chunk in events.chunks(PUT_EVENTS_BATCH) {
            match self.put_chunk(chunk.to_vec()).await {
                Ok(()) => {}
                // Refused by the service, the others delivered: left out.
                Err(RelayError::Transport(TransportError::Rejected { ids, reason })) => {
                    sent -= ids.len();
                    tracing::error!(target: "lift::saga", events = ?ids, %reason, "events refused by the bus; not sent");
                }
                // Refused before sending: each goes alone, and one refused alone is left
                // out, as a command refused by its participant's transport is.
                Err(RelayError::Transport(TransportError::Refused(_))) => {
                    for event in chunk {
                        match self.put_chunk(vec![event.clone()]).await {
                            Ok(()) => {}
                            Err(RelayError::Transport(
                                TransportError::Refused(reason)
                                | TransportError::Rejected { reason, .. },
                            )) => {
                                sent -= 1;
                                tracing::error!(target: "lift::saga", event = %event.id, kind = %event.kind, %reason, "event refused by the bus; not sent");
                            }
                            Err(error) => return Err(error),
                        }
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Ok(sent)
    }

    /// Puts `pending` on the bus, sending the failed entries again up to the relay's
    /// attempts.
    async fn put_chunk(&self, mut pending: Vec<Envelope>) -> Result<(), RelayError> {
        for _ in 0..self.attempts {
            let failed = self.transport.put_events(&pending).await?;
            pending = failed
                .into_iter()
                .filter_map(|i| pending.get(i).cloned())
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
        }
        Err(RelayError::Unaccepted(pending.len()))
    }
}

/// The snapshot commands of `state` carry: the saga without its outbox, unless too large.
fn snapshot(state: &SagaState) -> Option<Snapshot> {
    let snapshot = Snapshot::of(state).ok()?;
    let mut bytes = ByteCount(0);
    serde_json::to_writer(&mut bytes, &snapshot).ok()?;
    (bytes.0 <= MAX_SNAPSHOT_BYTES).then_some(snapshot)
}

/// The envelopes of one outbox: bus events and delayed timers.
fn collect(
    saga_id: &str,
    version: u64,
    outbox: &[Message],
    state: Option<&SagaState>,
    now_ms: u64,
    events: &mut Vec<(Option<String>, Envelope)>,
    timers: &mut Vec<(Envelope, Duration)>,
) -> Result<(), RelayError> {
    let mut carried: Option<Option<Snapshot>> = None;
    for (i, message) in outbox.iter().enumerate() {
        let id = format!("{saga_id}:{version}:{i}");
        match message {
            Message::Command(c) if c.target == Target::Local => {}
            Message::Command(c) => {
                let participant = match &c.target {
                    Target::Remote { participant, .. } => Some(participant.clone()),
                    Target::Local => None,
                };
                let snapshot = carried
                    .get_or_insert_with(|| state.and_then(snapshot))
                    .clone();
                let envelope = if snapshot.is_some() {
                    let mut c = c.clone();
                    c.snapshot = snapshot;
                    command_envelope(id, &c)?
                } else {
                    command_envelope(id, c)?
                };
                let bytes = crate::publish::entry_size(&envelope)?;
                if !fits(bytes) {
                    // No transport takes it, now or on a retry: send the rest (the step's
                    // timer included), and let the timer fail the attempt.
                    tracing::error!(target: "lift::saga", saga_id, command = %envelope.id, step = %c.step_name, bytes, limit = MAX_COMMAND_BYTES, "command too large to relay (the saga's data and outputs); not sent, the step will time out");
                    continue;
                }
                events.push((participant, envelope));
            }
            Message::Finished(f) => events.push((
                None,
                envelope(
                    id,
                    FINISHED_TYPE,
                    SAGA_SOURCE,
                    &f.correlation_id,
                    f.tenant.as_deref(),
                    (&f.saga_id, None),
                    f,
                )?,
            )),
            Message::Timer(t) => {
                timers.push((timer_envelope(id, t)?, timer_delay(t.due_ms, now_ms)))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::saga::{Saga, StartMeta, Step, remote, start};

    /// Records the calls the relay makes; the first call fails its first entry.
    #[derive(Default)]
    struct Recorder {
        puts: Mutex<Vec<Vec<String>>>,
        timers: Mutex<Vec<(String, Duration)>>,
    }

    impl Transport for Recorder {
        async fn put_events(&self, entries: &[Envelope]) -> Result<Vec<usize>, TransportError> {
            let mut puts = self.puts.lock().unwrap();
            puts.push(entries.iter().map(|e| e.id.clone()).collect());
            Ok(if puts.len() == 1 { vec![0] } else { Vec::new() })
        }

        async fn send_delayed(
            &self,
            message: &Envelope,
            delay: Duration,
        ) -> Result<(), TransportError> {
            self.timers
                .lock()
                .unwrap()
                .push((message.id.clone(), delay));
            Ok(())
        }
    }

    #[tokio::test]
    async fn packs_a_batch_of_outboxes_ten_events_a_call_with_stable_ids() {
        let saga = Saga::named("s", 1)
            .step(Step::new("a", remote("p", "A"), None).timeout(Duration::from_secs(3600)))
            .build()
            .unwrap();
        let states: Vec<_> = (0..25)
            .map(|i| {
                start(&saga, &format!("s{i}"), json!({}), StartMeta::default(), 0).into_state()
            })
            .collect();
        let outboxes: Vec<(&str, u64, &[Message])> = states
            .iter()
            .map(|s| (s.id(), s.version(), s.outbox()))
            .collect();
        let relay = Relay::new(Recorder::default());
        let sent = relay.relay_all(&outboxes, 1_000).await.unwrap();
        assert_eq!(sent, 50, "25 commands and 25 timers");
        let puts = relay.transport().puts.lock().unwrap().clone();
        let sizes: Vec<usize> = puts.iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 1, 10, 5], "the failed entry is resent alone");
        assert_eq!(puts[1], [puts[0][0].clone()]);
        assert_eq!(puts[0][0], "s0:1:0", "ids from saga, version and place");
        let timers = relay.transport().timers.lock().unwrap().clone();
        assert_eq!(timers.len(), 25);
        assert!(
            timers.iter().all(|(_, d)| *d == MAX_TIMER_DELAY),
            "an hour is capped at 15 minutes"
        );
    }

    /// A cancel or a redrive travels as an envelope any sender can write and the
    /// orchestrator's queue handler reads back as what it was, through its JSON body.
    #[test]
    fn a_cancel_or_redrive_envelope_reads_back_as_what_it_carries() {
        let envelope = cancel_envelope("ops", "trip-1", "customer called").unwrap();
        assert_eq!(
            (envelope.kind.as_str(), envelope.saga_id.as_deref()),
            (CANCEL_TYPE, Some("trip-1"))
        );
        let body = serde_json::to_vec(&envelope).unwrap();
        let read = Envelope::from_body(&body).unwrap();
        match saga_input(&read) {
            Some(Ok(SagaInput::Cancel(cancel))) => {
                assert_eq!(cancel.saga_id, "trip-1");
                assert_eq!(cancel.reason, "customer called");
            }
            other => panic!("{other:?}"),
        }
        let redrive = redrive_envelope("ops", "trip-1", 7, "refunds fixed").unwrap();
        let body = serde_json::to_vec(&redrive).unwrap();
        match saga_input(&Envelope::from_body(&body).unwrap()) {
            Some(Ok(SagaInput::Redrive(redrive))) => {
                assert_eq!((redrive.saga_id.as_str(), redrive.version), ("trip-1", 7));
                assert_eq!(redrive.reason, "refunds fixed");
            }
            other => panic!("{other:?}"),
        }
    }

    /// A command the relay sends fits in an asynchronous invocation too, whose event shape
    /// wraps it in more than the entry EventBridge counts.
    #[test]
    fn a_command_that_fits_fits_as_an_invocation() {
        let saga = Saga::named("s", 1)
            .step(Step::new("a", remote("p", "A"), None))
            .build()
            .unwrap();
        let mut largest = 0;
        for pad in (250 * 1024..256 * 1024).step_by(97) {
            let state = start(
                &saga,
                "s-with-a-long-enough-id-for-the-invocation-event",
                json!({"blob": "x".repeat(pad)}),
                StartMeta::default(),
                0,
            )
            .into_state();
            let Message::Command(command) = &state.outbox()[0] else {
                panic!("a command first")
            };
            let envelope = command_envelope(format!("{}:1:0", state.id()), command).unwrap();
            let bytes = crate::publish::entry_size(&envelope).unwrap();
            if fits(bytes) {
                largest = largest.max(bytes);
                let invocation = crate::publish::invocation_payload(&envelope).unwrap();
                assert!(
                    invocation.len() <= MAX_COMMAND_BYTES,
                    "{bytes} → {}",
                    invocation.len()
                );
            }
        }
        assert!(
            largest > MAX_COMMAND_BYTES - 2 * WRAPPING_BYTES,
            "{largest}"
        );
    }

    /// The event of a saga's end carries its tenant, as its commands do, so consumers of
    /// the bus can tell tenants' sagas apart; the stored outbox leaves it out and the read
    /// puts it back.
    #[test]
    fn a_finished_saga_is_announced_with_its_tenant() {
        use crate::saga::{Outcome, Reply, SagaInput, transition};
        let saga = Saga::named("s", 1)
            .step(Step::new("a", remote("p", "A"), None))
            .build()
            .unwrap();
        let meta = StartMeta {
            tenant: Some("acme".to_owned()),
            ..StartMeta::default()
        };
        let started = start(&saga, "t-1", json!({}), meta, 0).into_state();
        let Message::Command(command) = &started.outbox()[0] else {
            panic!("a command first")
        };
        let reply = Reply::to(command, Ok(json!(null)));
        let Outcome::Applied(ended) = transition(&saga, &started, &SagaInput::Reply(reply), 1)
        else {
            panic!("applied")
        };
        let ended = ended.into_state();
        assert!(ended.status().is_final());
        let (mut events, mut timers) = (Vec::new(), Vec::new());
        collect(
            ended.id(),
            ended.version(),
            ended.outbox(),
            Some(&ended),
            2,
            &mut events,
            &mut timers,
        )
        .unwrap();
        let finished = events
            .iter()
            .map(|(_, e)| e)
            .find(|e| e.kind == FINISHED_TYPE)
            .expect("the end is announced");
        assert_eq!(finished.tenant.as_deref(), Some("acme"));
    }

    /// Refuses, before sending, any batch with a command of the saga `poison`; records the
    /// rest.
    #[derive(Default)]
    struct Refusing {
        commands: Mutex<Vec<String>>,
        timers: Mutex<Vec<String>>,
    }

    impl Transport for Refusing {
        async fn put_events(&self, _: &[Envelope]) -> Result<Vec<usize>, TransportError> {
            Ok(Vec::new())
        }

        async fn send_delayed(
            &self,
            message: &Envelope,
            _: Duration,
        ) -> Result<(), TransportError> {
            self.timers.lock().unwrap().push(message.id.clone());
            Ok(())
        }

        async fn send_commands(
            &self,
            _: &str,
            commands: &[Envelope],
        ) -> Result<bool, TransportError> {
            if commands.iter().any(|c| c.id.starts_with("poison:")) {
                return Err(TransportError::Refused("too large as an invocation".into()));
            }
            let mut sent = self.commands.lock().unwrap();
            sent.extend(commands.iter().map(|c| c.id.clone()));
            Ok(true)
        }
    }

    /// Three started sagas of one remote step: `poison`, `one` and `two`.
    fn poison_one_two() -> Vec<SagaState> {
        let saga = Saga::named("s", 1)
            .step(Step::new("a", remote("p", "A"), None))
            .build()
            .unwrap();
        ["poison", "one", "two"]
            .into_iter()
            .map(|id| start(&saga, id, json!({}), StartMeta::default(), 0).into_state())
            .collect()
    }

    /// Refuses, for good, the saga `poison`'s timers and any bus batch holding its
    /// command; records the rest.
    #[derive(Default)]
    struct RefusingBus {
        puts: Mutex<Vec<String>>,
        timers: Mutex<Vec<String>>,
    }

    impl Transport for RefusingBus {
        async fn put_events(&self, entries: &[Envelope]) -> Result<Vec<usize>, TransportError> {
            if entries.iter().any(|e| e.id.starts_with("poison:")) {
                return Err(TransportError::Refused("MalformedDetail".into()));
            }
            let mut puts = self.puts.lock().unwrap();
            puts.extend(entries.iter().map(|e| e.id.clone()));
            Ok(Vec::new())
        }

        async fn send_delayed(
            &self,
            message: &Envelope,
            _: Duration,
        ) -> Result<(), TransportError> {
            if message.id.starts_with("poison:") {
                return Err(TransportError::Refused("InvalidMessageContents".into()));
            }
            self.timers.lock().unwrap().push(message.id.clone());
            Ok(())
        }

        async fn send_commands(&self, _: &str, _: &[Envelope]) -> Result<bool, TransportError> {
            Ok(false)
        }
    }

    /// A saga whose messages the bus and the timers' queue refuse for good (a character
    /// SQS does not take, a number EventBridge does not) is left out alone: the other sagas'
    /// commands and timers go, and the stream record is done instead of failing until it
    /// leaves the stream.
    #[tokio::test]
    async fn messages_refused_for_good_do_not_hold_up_the_others() {
        let states = poison_one_two();
        let relay = Relay::new(RefusingBus::default());
        let sent = relay
            .relay_states(&states.iter().collect::<Vec<_>>(), 1_000)
            .await
            .expect("the record is done");
        assert_eq!(sent, 4, "two commands and two timers");
        let mut puts = relay.transport().puts.lock().unwrap().clone();
        puts.sort();
        assert_eq!(puts, ["one:1:0", "two:1:0"]);
        let timers = relay.transport().timers.lock().unwrap().clone();
        assert_eq!(timers.len(), 2);
        assert!(timers.iter().all(|t| !t.starts_with("poison:")));
    }

    /// A command the participant's transport refuses (larger as an invocation than as the
    /// entry the relay measured, or under a smaller configured limit) is left out alone:
    /// the others in its batch and every timer go, and the stream record is done.
    #[tokio::test]
    async fn a_command_its_transport_refuses_does_not_hold_up_the_others() {
        let states = poison_one_two();
        let relay = Relay::new(Refusing::default());
        let sent = relay
            .relay_states(&states.iter().collect::<Vec<_>>(), 1_000)
            .await
            .expect("the record is done");
        assert_eq!(sent, 5, "two commands and three timers");
        let mut commands = relay.transport().commands.lock().unwrap().clone();
        commands.sort();
        assert_eq!(commands, ["one:1:0", "two:1:0"]);
        assert_eq!(relay.transport().timers.lock().unwrap().len(), 3);
    }

    /// A command above what a transport takes (the saga's data is 300 KiB) is not sent and
    /// does not fail the relay: the other sagas' commands and its own timer go, so the
    /// stream record is done and the saga moves on by its timer.
    #[tokio::test]
    async fn a_command_too_large_for_any_transport_does_not_hold_up_the_others() {
        let saga = Saga::named("s", 1)
            .step(Step::new("a", remote("p", "A"), None))
            .build()
            .unwrap();
        let big = start(
            &saga,
            "big",
            json!({"blob": "x".repeat(300 * 1024)}),
            StartMeta::default(),
            0,
        )
        .into_state();
        let small = start(&saga, "small", json!({}), StartMeta::default(), 0).into_state();
        let relay = Relay::new(Recorder::default());
        let sent = relay.relay_states(&[&big, &small], 1_000).await.unwrap();
        assert_eq!(sent, 3, "the small saga's command and both timers");
        let puts = relay.transport().puts.lock().unwrap().clone();
        assert!(puts.iter().flatten().all(|id| id.starts_with("small:")));
        assert!(puts.iter().flatten().any(|id| id.starts_with("small:")));
        let timers = relay.transport().timers.lock().unwrap().clone();
        assert_eq!(timers.len(), 2);
    }

    /// `too_large` answers as the envelope's exact size does, at every size around the
    /// limit and with strings that escape to six bytes a byte: its bound never lets a
    /// command through that the exact size refuses.
    #[test]
    fn the_size_bound_agrees_with_the_exact_size_around_the_limit() {
        let saga = Saga::named("s", 1)
            .step(Step::new("a", remote("p", "A"), None))
            .build()
            .unwrap();
        let exact = |command: &Command| {
            let bytes =
                crate::publish::entry_size(&command_envelope(String::new(), command).unwrap())
                    .unwrap();
            (!fits(bytes)).then_some(bytes)
        };
        let mut seen = [0, 0];
        for correlation in ["", "\u{1}\u{2}\u{3}\u{4}"] {
            let meta = StartMeta {
                correlation_id: correlation.repeat(40),
                tenant: Some("\u{5}".repeat(60)),
            };
            let limit = MAX_COMMAND_BYTES - WRAPPING_BYTES;
            for blob in (limit - 3_000..limit + 100).step_by(61) {
                let state = start(
                    &saga,
                    "s-1",
                    json!({"blob": "x".repeat(blob)}),
                    meta.clone(),
                    0,
                )
                .into_state();
                let Some(Message::Command(command)) = state.outbox().first() else {
                    panic!("a command first");
                };
                let answer = too_large(command).unwrap();
                assert_eq!(answer, exact(command), "{blob}");
                seen[usize::from(answer.is_some())] += 1;
            }
        }
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
    }
}
