//! Consuming: duplicate deliveries recognised by event id ([`Inbox`]), participants made
//! idempotent by command id and answering with a reply ([`Participant`]), and the two
//! handlers of a saga orchestrator's function ([`orchestrator_message`], [`relay_image`]).
//!
//! ```no_run
//! use lift_core::{App, Context, Json};
//! use lift_events::consume::{OutboxImage, Participant, orchestrator_message, relay_image};
//! use lift_events::publish::{AwsTransport, EventBridgePublisher, PublishConfig, SqsPublisher};
//! use lift_events::relay::Relay;
//! use lift_events::saga::{Orchestrator, Registry};
//! use lift_events::store::DynamoStore;
//!
//! # async fn example(registry: Registry) -> Result<(), Box<dyn std::error::Error>> {
//! let config = lift_core::aws::sdk_config().await;
//! let bus = EventBridgePublisher::new(aws_sdk_eventbridge::Client::new(config), "bus", PublishConfig::default());
//! let timers = SqsPublisher::new(aws_sdk_sqs::Client::new(config), "https://sqs/orchestrator", PublishConfig::default());
//! let transport = AwsTransport::new(bus, timers);
//! let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(config), "sagas");
//! let orchestrator = Orchestrator::new(registry, store);
//! let relay = Relay::new(transport.clone());
//! App::new()
//!     // Replies and timers, from the orchestrator's queue.
//!     .sqs(move |ctx: Context| {
//!         let (o, t) = (orchestrator.clone(), transport.clone());
//!         async move { orchestrator_message(&o, &t, &ctx).await }
//!     })
//!     // The saga table's stream: publish each stored outbox.
//!     .dynamodb(move |_ctx: Context, Json(image): Json<OutboxImage>| {
//!         let relay = relay.clone();
//!         async move { relay_image(&relay, &image).await }
//!     })
//!     .run()
//!     .await?;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lift_core::{App, Context, Error};
use lift_middleware::idempotency::{IdempotencyConfig, Idempotent, IdempotentError};
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::envelope::Envelope;
use crate::error::ConfigError;
use crate::publish::{Direct, EventBridgePublisher, LambdaInvoker, SqsPublisher};
use crate::relay::{
    Relay, Transport, TransportError, reply_envelope, saga_input, timer_delay, timer_envelope,
};
use crate::saga::{Command, Handled, Orchestrator, Reply, SagaInput, StepError};
use crate::store::{SagaStore, StoreError};

/// The shortest duplicate window: EventBridge retries a delivery for up to 24 hours.
pub const MIN_WINDOW: Duration = Duration::from_secs(24 * 3600);

fn idempotent(
    client: aws_sdk_dynamodb::Client,
    table: &str,
    key: &str,
    window: Duration,
) -> Result<Idempotent, ConfigError> {
    if table.is_empty() {
        return Err(ConfigError::invalid("table", "must name a table"));
    }
    // A year at most: the idempotency records' own longest expiry.
    if window < MIN_WINDOW || window > Duration::from_secs(365 * 24 * 3600) {
        return Err(ConfigError::invalid(
            "window",
            "must be between 24 hours and 365 days",
        ));
    }
    let config = IdempotencyConfig::builder(table)
        .key_fields(&[key])
        .expires_after(window)
        .build()
        .map_err(|_| ConfigError::invalid("table", "refused by the idempotency settings"))?;
    Ok(Idempotent::new(client, config))
}

/// Recognises duplicate deliveries by event id: the first delivery of an id runs, later
/// ones within the window get the first one's answer without running. The record is one
/// conditional `PutItem` in a DynamoDB table (partition key `id`, a string; the item
/// layout of lift-middleware's idempotency), kept for the window (24 h at least: the
/// EventBridge retry horizon). A failed run releases its id, so a redelivery runs again.
#[derive(Debug, Clone)]
pub struct Inbox {
    idempotent: Idempotent,
}

impl Inbox {
    /// Records in `table` through `client`, kept for `window`.
    ///
    /// # Errors
    /// [`ConfigError`] naming `table` (empty) or `window` (under 24 hours or over 365
    /// days).
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: &str,
        window: Duration,
    ) -> Result<Self, ConfigError> {
        Ok(Inbox {
            idempotent: idempotent(client, table, "/id", window)?,
        })
    }

    /// Runs `handle` unless event `envelope.id` was handled already, in which case its
    /// stored answer is returned.
    ///
    /// # Errors
    /// `handle`'s error (the id is released); a 409 while another delivery of the id is
    /// running; a 500 when the table fails.
    pub async fn once<P, T, F, Fut>(
        &self,
        ctx: &Context,
        envelope: &Envelope<P>,
        handle: F,
    ) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        self.idempotent
            .run(ctx, &envelope.kind, &json!({ "id": envelope.id }), handle)
            .await
            .map_err(Error::from)
    }
}

/// Makes a participant idempotent by command id and answers the orchestrator.
///
/// Every attempt of a step (and every redelivery of a command) carries the same command
/// id (a redrive sends a refused command again under a new one); the first to finish
/// records its outcome and later ones get the same outcome
/// without running, so the step takes effect once. A success and a refusal are recorded;
/// a technical failure is not (its id is released, and the orchestrator retries).
///
/// What the work itself must do: between its effect and the record of the command id lies
/// a window where a crash makes the work run again (after the record's in-progress lock
/// expires). Make the effect conditional on the command id (a conditional write keyed by
/// it, or one transaction with the effect), and make a compensation of a command that
/// never took effect record that, so the late action is refused (by a condition of the
/// effect's own write, not a read before it: see the crate docs, rule 4).
///
/// The record is kept by command id within the delivery path (the queue, or the event's
/// source and type, and the function name): a command delivered through another path (the
/// participant moved from a queue to invocations while commands were in flight, a
/// dead-letter queue redriven through another queue) is run again, and only the effect's
/// own condition on the command id stops a second effect.
#[derive(Debug, Clone)]
pub struct Participant {
    name: String,
    idempotent: Idempotent,
    publisher: EventBridgePublisher,
    /// Where replies go when not on the bus.
    replies: Option<Direct>,
}

/// A technical failure, as the idempotency layer sees it (it releases the key).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Technical(String);

impl Participant {
    /// Participant `name`, recording command ids in `table` through `client` for 24 hours,
    /// replying through `publisher`.
    ///
    /// # Errors
    /// [`ConfigError`] naming `table` when it is empty.
    pub fn new(
        name: &str,
        client: aws_sdk_dynamodb::Client,
        table: &str,
        publisher: EventBridgePublisher,
    ) -> Result<Self, ConfigError> {
        Self::with_window(name, client, table, publisher, MIN_WINDOW)
    }

    /// [`Participant::new`], remembering command ids for `window` (at least 24 hours): for
    /// the sagas whose steps may retry for longer (give their definitions the same
    /// [`duplicate_window`](crate::saga::SagaBuilder::duplicate_window)).
    ///
    /// # Errors
    /// [`ConfigError`] naming `table` when it is empty, `window` when it is under 24 hours or
    /// over 365 days.
    pub fn with_window(
        name: &str,
        client: aws_sdk_dynamodb::Client,
        table: &str,
        publisher: EventBridgePublisher,
        window: Duration,
    ) -> Result<Self, ConfigError> {
        Ok(Participant {
            name: name.to_owned(),
            idempotent: idempotent(client, table, "/command_id", window)?,
            publisher,
            replies: None,
        })
    }

    /// Replies straight to the orchestrator's queue through `queue` instead of on the
    /// bus: one SQS request instead of a bus entry ($1 per million) and the SQS request
    /// of the rule that would route it there.
    pub fn reply_to_queue(mut self, queue: SqsPublisher) -> Self {
        self.replies = Some(Direct::Queue(queue));
        self
    }

    /// Replies to the orchestrator's function as asynchronous invocations through
    /// `function` instead of on the bus: no bus entry and no SQS request, only the
    /// orchestrator's invocation, which it pays for a reply whatever delivers it. The
    /// orchestrator takes them with [`orchestrator_inputs`] (or [`orchestrator_message`] on
    /// an EventBridge route of its own).
    pub fn reply_by_invoke(mut self, function: LambdaInvoker) -> Self {
        self.replies = Some(Direct::Function(function));
        self
    }

    /// Reads the command in `ctx` (an SQS message, or an EventBridge event from a rule or
    /// an asynchronous invocation), runs `work` at most once per command id, and publishes
    /// the reply.
    ///
    /// # Errors
    /// A 422 for a message that is not a saga command; a 409 while another delivery of the
    /// command runs; a 500 when the table or the bus fails (the message is then delivered
    /// again, and the stored outcome answered).
    pub async fn handle<F, Fut>(&self, ctx: &Context, work: F) -> Result<(), Error>
    where
        F: FnOnce(Command) -> Fut,
        Fut: Future<Output = Result<Value, StepError>>,
    {
        let invalid = |message: String| {
            Error::Validation(vec![lift_core::FieldError {
                pointer: String::new(),
                message,
            }])
        };
        let envelope = Envelope::from_body(ctx.body()).map_err(|e| invalid(e.to_string()))?;
        let command: Command =
            serde_json::from_value(envelope.payload).map_err(|e| invalid(e.to_string()))?;
        let run = self
            .idempotent
            .run(ctx, "saga-command", &command, || {
                let command = command.clone();
                async move {
                    match work(command).await {
                        Ok(value) => Ok(Ok(value)),
                        Err(StepError::Rejected(reason)) => Ok(Err(reason)),
                        Err(StepError::Failed(reason)) => Err(Technical(reason)),
                    }
                }
            })
            .await;
        let outcome = match run {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(reason)) => Err(StepError::Rejected(reason)),
            Err(IdempotentError::Failed(Technical(reason))) => Err(StepError::Failed(reason)),
            Err(other) => return Err(other.into()),
        };
        let mut reply = Reply::to(&command, outcome);
        let sent = self.send_reply(&command, &reply).await;
        let sent = match sent {
            // The snapshot only spares the orchestrator a read: a reply too large with it
            // goes without it rather than not at all.
            Err(TransportError::Refused(_) | TransportError::Rejected { .. })
                if reply.snapshot.is_some() =>
            {
                reply.snapshot = None;
                self.send_reply(&command, &reply).await
            }
            other => other,
        };
        sent.map_err(|e| Error::internal(format!("the reply was not published: {e}")))
    }

    async fn send_reply(&self, command: &Command, reply: &Reply) -> Result<(), TransportError> {
        let event = reply_envelope(&self.name, command, reply)
            .map_err(|e| TransportError::Refused(e.to_string()))?;
        match &self.replies {
            Some(direct) => direct.send(&[event]).await.map(|_| ()),
            None => self.publisher.publish(&[event]).await.map(|_| ()),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The orchestrator's input handler: applies the reply, timer, cancel
/// ([`crate::relay::cancel_envelope`]) or redrive ([`crate::relay::redrive_envelope`]) in
/// the message (an SQS message, or an EventBridge
/// event from a rule or an asynchronous invocation) to its saga and re-sends a timer that
/// came early. A cancel that cannot be applied (the saga ended, compensates already, or
/// is at or past its pivot) is logged and done. A cancel for a saga that is not stored
/// fails like any input for an unknown saga, so the queue delivers it again (its start
/// may land after it) until its redrive limit sends it to the dead-letter queue: `lift
/// cancel` checks the saga first. A redrive that cannot be applied is logged and done, as
/// a cancel is, and so is one refused because the saga is too large to go on running
/// (logged at ERROR). Any other message is refused (422).
///
/// # Errors
/// A 422 for a message that is not a saga input (it goes to the dead-letter queue after
/// its retries); a 500 when the store or the transport failed, so the message is delivered
/// again (and applied once: see [`OrchestratorError`](crate::saga::OrchestratorError)).
pub async fn orchestrator_message<S: SagaStore, T: Transport>(
    orchestrator: &Orchestrator<S>,
    transport: &T,
    ctx: &Context,
) -> Result<(), Error> {
    let invalid = |message: String| {
        Error::Validation(vec![lift_core::FieldError {
            pointer: String::new(),
            message,
        }])
    };
    let envelope = Envelope::from_body(ctx.body()).map_err(|e| invalid(e.to_string()))?;
    let input = saga_input(&envelope)
        .ok_or_else(|| {
            invalid(format!(
                "`{}` is not a saga reply, timer, cancel or redrive",
                envelope.kind
            ))
        })?
        .map_err(|e| invalid(e.to_string()))?;
    match orchestrator.handle(&input).await {
        Ok(Handled::Rearm(timer)) => {
            let message = timer_envelope(rearm_id(&envelope.id), &timer)
                .map_err(|e| Error::internal(e.to_string()))?;
            transport
                .send_delayed(&message, timer_delay(timer.due_ms, now_ms()))
                .await
                .map_err(|e| Error::internal(format!("the timer was not re-sent: {e}")))
        }
        Ok(Handled::Ignored(why)) if matches!(input, SagaInput::Cancel(_)) => {
            // Done: sent again, it would be refused again. Whoever sent it reads the saga.
            tracing::info!(target: "lift::saga", saga_id = %input.saga_id(), ?why, "cancel not applied: the saga ended, compensates already (a cancel delivered again, say), or is at or past its pivot");
            Ok(())
        }
        Ok(Handled::Ignored(why)) if matches!(input, SagaInput::Redrive(_)) => {
            tracing::info!(target: "lift::saga", saga_id = %input.saga_id(), ?why, "redrive not applied: the saga does not need attention at the version it names (a redrive delivered again, say), or has no command to send again");
            Ok(())
        }
        Err(crate::saga::OrchestratorError::Store(StoreError::TooLarge {
            bytes, limit, ..
        })) if matches!(input, SagaInput::Redrive(_)) => {
            // Delivered again it would be refused again: nothing was written.
            tracing::error!(target: "lift::saga", saga_id = %input.saga_id(), bytes, limit, "redrive refused: the saga is too large to go on running");
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(crate::saga::OrchestratorError::Store(StoreError::Codec { id, reason })) => Err(
            Error::internal(format!("saga `{id}` does not decode: {reason}")),
        ),
        Err(e) => Err(Error::internal(e.to_string())),
    }
}

/// The id of a timer sent again for the `hops`-th time, from the id it arrived with:
/// `{id}:rearm{n}`, so that a long timeout's hops (every 15 minutes) keep ids of a bounded
/// length, each its own.
fn rearm_id(id: &str) -> String {
    let (base, hops) = match id.rsplit_once(":rearm") {
        Some((base, n)) if n.bytes().all(|b| b.is_ascii_digit()) => {
            (base, n.parse::<u64>().unwrap_or(0))
        }
        _ => (id, 0),
    };
    format!("{base}:rearm{}", hops.saturating_add(1))
}

/// Adds an orchestrator's inputs to `app`: replies, timers, cancels and redrives from its
/// queue, replies
/// invoked asynchronously ([`Participant::reply_by_invoke`]: EventBridge events no other
/// route of `app` takes, so this claims [`App::event_fallback`]), both through
/// [`orchestrator_message`]; and the saga table's stream records, whose outbox it relays
/// through `transport` ([`relay_image`]). What starts a saga (an event, an HTTP route) is
/// the application's own handler, calling [`Orchestrator::start`].
pub fn orchestrator_inputs<S, T>(app: App, orchestrator: Orchestrator<S>, transport: T) -> App
where
    S: SagaStore + Clone + 'static,
    T: Transport + Clone + 'static,
{
    let relay = Relay::new(transport.clone());
    let input = move |ctx: Context| {
        let (orchestrator, transport) = (orchestrator.clone(), transport.clone());
        async move { orchestrator_message(&orchestrator, &transport, &ctx).await }
    };
    app.sqs(input.clone()).event_fallback(input).dynamodb(
        move |ctx: Context, lift_core::Json(image): lift_core::Json<OutboxImage>| {
            let relay = relay.clone();
            // A removed saga item (a TTL, a hand delete) has nothing to relay: without the
            // stream mapping's filter its record would otherwise fail, and be retried, for
            // want of an image.
            let removed = ctx
                .dynamodb_record()
                .is_some_and(|record| record.event_name == "REMOVE");
            async move {
                if removed {
                    return Ok(());
                }
                relay_image(&relay, &image).await
            }
        },
    )
}

/// What the relay reads of a saga item's new image in the table's stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct OutboxImage {
    /// The saga id (empty in a record without an image: a removed item's).
    #[serde(default)]
    pub pk: String,
    /// The state version.
    #[serde(default)]
    pub v: u64,
    /// The outbox, as JSON.
    #[serde(default)]
    pub outbox: Option<String>,
    /// The saga (without its history and outbox), as JSON.
    #[serde(default)]
    pub state: Option<String>,
    /// The saga's history, compact.
    #[serde(default)]
    pub h: Option<String>,
    /// The saga's status.
    #[serde(default)]
    pub status: Option<String>,
    /// The saga's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Why it compensated or needs attention.
    #[serde(default)]
    pub reason: Option<String>,
    /// When it last moved (ms since the epoch).
    #[serde(default)]
    pub updated: Option<u64>,
}

/// The stream handler: publishes the outbox of one stored transition.
///
/// # Errors
/// A 500 when the outbox does not decode or was not wholly published; the record is then
/// retried (relaying it again is safe: event ids are derived from the saga, the version
/// and the message's place).
pub async fn relay_image<T: Transport>(relay: &Relay<T>, image: &OutboxImage) -> Result<(), Error> {
    let Some(outbox) = &image.outbox else {
        return Ok(());
    };
    let messages: Vec<crate::saga::Message> = serde_json::from_str(outbox)
        .map_err(|e| Error::internal(format!("saga `{}` outbox does not decode: {e}", image.pk)))?;
    // The saga store's commands leave out the data and outputs its state holds: with the
    // state in the image, they are put back (and the saga rides along with them to their
    // replies); an image without one is published as it stands.
    let Some(state) = image.state.as_deref() else {
        return relay
            .relay(&image.pk, image.v, &messages, now_ms())
            .await
            .map(|_| ())
            .map_err(|e| Error::internal(format!("saga `{}` outbox not relayed: {e}", image.pk)));
    };
    let columns = crate::store::Columns {
        version: Some(image.v),
        status: image.status.as_deref(),
        name: image.name.as_deref(),
        reason: image.reason.as_deref(),
        updated_ms: image.updated,
    };
    let state = crate::store::from_parts(&image.pk, state, image.h.as_deref(), messages, &columns)
        .map_err(|e| Error::internal(e.to_string()))?;
    let relayed = if state.id() == image.pk && state.version() == image.v {
        relay.relay_states(&[&state], now_ms()).await
    } else {
        // Not the image's saga: publish the outbox, without the saga.
        relay
            .relay(&image.pk, image.v, state.outbox(), now_ms())
            .await
    };
    relayed
        .map(|_| ())
        .map_err(|e| Error::internal(format!("saga `{}` outbox not relayed: {e}", image.pk)))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::saga::Registry;
    use crate::store::MemoryStore;

    /// Records what the relay puts on the bus.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl Transport for Recorder {
        async fn put_events(&self, entries: &[Envelope]) -> Result<Vec<usize>, TransportError> {
            let mut sent = self.0.lock().unwrap();
            sent.extend(entries.iter().map(|e| e.id.clone()));
            Ok(Vec::new())
        }

        async fn send_delayed(
            &self,
            message: &Envelope,
            _: Duration,
        ) -> Result<(), TransportError> {
            self.0.lock().unwrap().push(message.id.clone());
            Ok(())
        }

        async fn send_commands(&self, _: &str, _: &[Envelope]) -> Result<bool, TransportError> {
            Ok(false)
        }
    }

    /// A removed saga item's stream record (a TTL, a hand delete) relays nothing and does
    /// not fail: without an image it did not decode, and with an old image its outbox,
    /// relayed long before, went out again.
    #[tokio::test]
    async fn a_removed_saga_item_is_not_relayed() {
        use lift_core::testing::{TestApp, batch_failures, events};
        let recorder = Recorder::default();
        let orchestrator = Orchestrator::new(Registry::new(), MemoryStore::new());
        let app = TestApp::new(orchestrator_inputs(
            App::new(),
            orchestrator,
            recorder.clone(),
        ))
        .unwrap();
        let finished = r#"[{"message":"finished","saga_id":"s-1","saga":"s","status":"completed","correlation_id":"s-1"}]"#;
        let old_image = json!({
            "pk": {"S": "s-1"},
            "v": {"N": "3"},
            "out": {"N": "1"},
            "outbox": {"S": finished},
        });
        // The same image as an update relays its outbox: the test can see a relay.
        let out = app
            .invoke(&events::dynamodb([(
                "MODIFY",
                old_image.clone(),
                json!({}),
            )]))
            .await
            .unwrap();
        assert!(batch_failures(&out).is_empty(), "{out}");
        assert_eq!(recorder.0.lock().unwrap().len(), 1);
        let out = app
            .invoke(&events::dynamodb([
                ("REMOVE", json!({}), old_image),
                ("REMOVE", json!({}), json!({})),
            ]))
            .await
            .unwrap();
        assert!(batch_failures(&out).is_empty(), "{out}");
        assert_eq!(recorder.0.lock().unwrap().len(), 1, "nothing more relayed");
    }

    /// A cancel that reaches the orchestrator's function as an invocation (an EventBridge
    /// event, through the App's event fallback) is applied as one from its queue; the same
    /// cancel again is done and changes nothing.
    #[tokio::test]
    async fn a_cancel_invoked_as_an_event_is_applied() {
        use crate::saga::{Saga, SagaStatus, StartMeta, Step, remote};
        use lift_core::testing::{TestApp, events};
        let saga = Saga::named("s", 1)
            .step(Step::new("a", remote("p", "A"), Some(remote("p", "UndoA"))))
            .build()
            .unwrap();
        let store = MemoryStore::new();
        let orchestrator = Orchestrator::new(Registry::new().with(saga), store.clone());
        let started = orchestrator
            .start("s", "s-1", &json!({}), StartMeta::default())
            .await
            .unwrap();
        let app = TestApp::new(orchestrator_inputs(
            App::new(),
            orchestrator,
            Recorder::default(),
        ))
        .unwrap();
        let cancel = crate::relay::cancel_envelope("ops", "s-1", "stop").unwrap();
        let event = events::eventbridge(
            "ops",
            crate::relay::CANCEL_TYPE,
            serde_json::to_value(&cancel).unwrap(),
        );
        app.invoke(&event).await.unwrap();
        let cancelled = store.load("s-1").await.unwrap().unwrap();
        assert_eq!(cancelled.status(), SagaStatus::Compensating);
        assert_eq!(cancelled.version(), started.version() + 1);
        app.invoke(&event).await.unwrap();
        assert_eq!(store.load("s-1").await.unwrap().unwrap(), cancelled);
    }

    /// A redrive on the orchestrator's queue is applied once: the same message delivered
    /// again, and a redrive of a version the saga has moved past, are acknowledged (no
    /// batch item failure) and change nothing. One for a saga that is not stored fails,
    /// so the queue delivers it again and, in the end, to its dead-letter queue.
    #[tokio::test]
    async fn a_redrive_from_the_queue_is_applied_once_and_a_stale_one_is_acknowledged() {
        use crate::saga::{
            Handled, Saga, SagaInput, SagaStatus, StartMeta, Step, StepError, remote,
        };
        use lift_core::testing::{TestApp, batch_failures, events};
        let saga = Saga::named("s", 1)
            .step(Step::new("a", remote("p", "A"), Some(remote("p", "UndoA"))))
            .step(Step::new("b", remote("p", "B"), None))
            .build()
            .unwrap();
        let store = MemoryStore::new();
        let orchestrator = Orchestrator::new(Registry::new().with(saga), store.clone());
        let mut state = orchestrator
            .start("s", "s-1", &json!({}), StartMeta::default())
            .await
            .unwrap();
        for outcome in [Ok(json!(1)), Err("no"), Err("cannot undo")] {
            let command = state.commands().next().unwrap().clone();
            let reply = Reply::to(&command, outcome.map_err(|r| StepError::Rejected(r.into())));
            state = match orchestrator.handle(&SagaInput::Reply(reply)).await.unwrap() {
                Handled::Applied(state) => state,
                other => panic!("{other:?}"),
            };
        }
        assert_eq!(state.status(), SagaStatus::NeedsAttention);
        let app = TestApp::new(orchestrator_inputs(
            App::new(),
            orchestrator,
            Recorder::default(),
        ))
        .unwrap();
        let body = |version| {
            let redrive = crate::relay::redrive_envelope("ops", "s-1", version, "fixed").unwrap();
            serde_json::to_string(&redrive).unwrap()
        };
        let (current, stale) = (body(state.version()), body(state.version() - 1));
        let out = app.invoke(&events::sqs([stale.as_str()])).await.unwrap();
        assert!(batch_failures(&out).is_empty(), "{out}");
        assert_eq!(store.load("s-1").await.unwrap().unwrap(), state);
        let out = app.invoke(&events::sqs([current.as_str()])).await.unwrap();
        assert!(batch_failures(&out).is_empty(), "{out}");
        let redriven = store.load("s-1").await.unwrap().unwrap();
        assert_eq!(redriven.status(), SagaStatus::Compensating);
        assert_eq!(redriven.version(), state.version() + 1);
        let out = app.invoke(&events::sqs([current.as_str()])).await.unwrap();
        assert!(batch_failures(&out).is_empty(), "{out}");
        assert_eq!(store.load("s-1").await.unwrap().unwrap(), redriven);
        let unknown = serde_json::to_string(
            &crate::relay::redrive_envelope("ops", "s-2", 3, "fixed").unwrap(),
        )
        .unwrap();
        let out = app.invoke(&events::sqs([unknown.as_str()])).await.unwrap();
        assert_eq!(batch_failures(&out).len(), 1, "{out}");
    }

    /// A timer re-sent on every hop of a week-long timeout (672 hops of 15 minutes) keeps
    /// an id of bounded length, a new one each hop.
    #[test]
    fn a_rearmed_timer_id_stays_short_and_new() {
        let mut id = "saga-1:7:2".to_owned();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..672 {
            id = rearm_id(&id);
            assert!(seen.insert(id.clone()), "{id} repeated");
        }
        assert_eq!(id, "saga-1:7:2:rearm672");
        assert_eq!(rearm_id("saga-1:7:2:rearm"), "saga-1:7:2:rearm1");
    }
}
