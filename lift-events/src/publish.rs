//! Publishing: EventBridge `PutEvents` and SQS `SendMessageBatch`, batched at their limits,
//! failed entries resent with backoff until a deadline, then reported — never dropped in
//! silence; an entry above the size limit is refused before anything is sent.

use std::future::Future;
use std::time::{Duration, SystemTime};

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::envelope::Envelope;
use crate::error::ConfigError;
use crate::relay::{PUT_EVENTS_BATCH, Transport, TransportError};

/// Settings shared by both publishers.
///
/// # Default
/// Entries up to 256 KiB; failed entries resent for up to 10 s (and never past the
/// invocation's deadline, less half a second), waiting 100 ms, then twice as long each
/// time, up to 2 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishConfig {
    max_entry_bytes: usize,
    deadline: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            max_entry_bytes: 256 * 1024,
            deadline: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl PublishConfig {
    /// Checks and builds the settings.
    ///
    /// # Errors
    /// [`ConfigError`] naming `max_entry_bytes` (0, or above 1 MiB), `deadline` (zero, or
    /// above 15 minutes),
    /// `initial_backoff` (zero) or `max_backoff` (below `initial_backoff`).
    pub fn new(
        max_entry_bytes: usize,
        deadline: Duration,
        initial_backoff: Duration,
        max_backoff: Duration,
    ) -> Result<Self, ConfigError> {
        if max_entry_bytes == 0 || max_entry_bytes > 1024 * 1024 {
            return Err(ConfigError::invalid(
                "max_entry_bytes",
                "must be between 1 byte and 1 MiB",
            ));
        }
        // No invocation lasts longer; a longer one (`Duration::MAX`) overflowed the clock.
        if deadline.is_zero() || deadline > Duration::from_secs(15 * 60) {
            return Err(ConfigError::invalid(
                "deadline",
                "must be above zero and at most 15 minutes",
            ));
        }
        // Zero would resend failed entries in a tight loop until the deadline.
        if initial_backoff.is_zero() {
            return Err(ConfigError::invalid(
                "initial_backoff",
                "must be above zero",
            ));
        }
        if max_backoff < initial_backoff {
            return Err(ConfigError::invalid(
                "max_backoff",
                "must not be below initial_backoff",
            ));
        }
        Ok(PublishConfig {
            max_entry_bytes,
            deadline,
            initial_backoff,
            max_backoff,
        })
    }
}

/// What a publish did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishReport {
    /// Entries delivered.
    pub entries: usize,
    /// Calls made (first sends and resends).
    pub calls: usize,
    /// Entries resent after a failure.
    pub resent: usize,
}

/// Time kept back from the invocation's deadline by a resend loop or a local step: to
/// report what was not done, and answer.
pub(crate) const INVOCATION_MARGIN: Duration = Duration::from_millis(500);

/// Time kept back from the invocation's deadline by a call in flight.
const CALL_MARGIN: Duration = Duration::from_millis(100);
/// Marks the error code of an entry the service refused for what it holds (an SQS sender
/// fault, EventBridge's `InvalidArgument` or `MalformedDetail`): sending it again cannot
/// succeed, so it is not resent.
const REFUSED: &str = "refused: ";

/// The time left before the invocation's deadline, when the runtime gave one.
pub(crate) fn invocation_time_left() -> Option<Duration> {
    lift_core::invocation_deadline().map(|end| {
        end.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    })
}

/// Sends every entry of `entries` in batches of at most `batch` entries and at most
/// `config.max_entry_bytes` in all (by `size`: `PutEvents` and `SendMessageBatch` limit a
/// call's total as they limit one entry), resending failed ones with backoff until
/// `config.deadline`. `send` makes one call and returns the indexes that failed, with an
/// error code; one marked [`REFUSED`] is not resent, and once the others are delivered the
/// result is [`TransportError::Rejected`] naming it.
pub(crate) async fn send_all<T, F, Fut>(
    entries: &[T],
    batch: usize,
    config: &PublishConfig,
    id: impl Fn(&T) -> String,
    size: impl Fn(&T) -> usize,
    mut send: F,
) -> Result<PublishReport, TransportError>
where
    T: Clone,
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = Result<Vec<(usize, String)>, TransportError>>,
{
    // The configured time, and never past the invocation's deadline (less a margin to
    // answer in): a resend loop the function's timeout cut short answered nothing.
    let mut allowed = config.deadline;
    let started = tokio::time::Instant::now();
    // Each call, too, ends before the invocation does (its own SDK retries included).
    let mut call_end = None;
    if let Some(left) = invocation_time_left() {
        allowed = allowed.min(left.saturating_sub(INVOCATION_MARGIN));
        call_end = Some(started + left.saturating_sub(CALL_MARGIN));
    }
    let deadline = started + allowed;
    let mut report = PublishReport::default();
    let mut refused: Vec<(String, String)> = Vec::new();
    let mut pending: Vec<T> = entries.to_vec();
    let mut backoff = config.initial_backoff;
    let mut last_reason = String::new();
    while !pending.is_empty() {
        let mut failed = Vec::new();
        let chunks: Vec<&[T]> = batches(&pending, batch, config.max_entry_bytes, &size).collect();
        for (n, chunk) in chunks.iter().enumerate() {
            report.calls += 1;
            let sent = match call_end {
                Some(end) => tokio::time::timeout_at(end, send(chunk.to_vec())).await,
                None => Ok(send(chunk.to_vec()).await),
            };
            let Ok(sent) = sent else {
                // Not known to be delivered: this call's entries (which may have gone: ids
                // let a consumer tell), the ones not sent yet, and the failed ones.
                let ids = failed
                    .iter()
                    .chain(chunks[n..].iter().flat_map(|c| c.iter()))
                    .map(&id)
                    .collect();
                tracing::warn!(target: "lift::events", "a publish call got no answer before the invocation's deadline");
                return Err(TransportError::Undelivered {
                    ids,
                    reason: "no answer before the invocation's deadline".to_owned(),
                });
            };
            let outcome = match sent {
                Ok(failures) => failures,
                Err(TransportError::Throttled) => (0..chunk.len())
                    .map(|i| (i, "Throttled".to_owned()))
                    .collect(),
                Err(e) => return Err(e),
            };
            report.entries += chunk.len() - outcome.len();
            for (i, reason) in outcome {
                if let Some(entry) = chunk.get(i) {
                    match reason.strip_prefix(REFUSED) {
                        Some(code) => refused.push((id(entry), code.to_owned())),
                        None => {
                            failed.push(entry.clone());
                            last_reason = reason;
                        }
                    }
                }
            }
        }
        if failed.is_empty() {
            break;
        }
        let now = tokio::time::Instant::now();
        if now + backoff > deadline {
            tracing::warn!(target: "lift::events", undelivered = failed.len(), reason = %last_reason, "publish deadline passed");
            return Err(TransportError::Undelivered {
                ids: failed.iter().map(&id).collect(),
                reason: last_reason,
            });
        }
        tracing::debug!(target: "lift::events", failed = failed.len(), ?backoff, "resending failed entries");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(config.max_backoff);
        report.resent += failed.len();
        pending = failed;
    }
    if let Some((_, code)) = refused.first() {
        tracing::warn!(target: "lift::events", refused = refused.len(), %code, "entries refused for good; the others delivered");
        let reason = code.clone();
        return Err(TransportError::Rejected {
            ids: refused.into_iter().map(|(id, _)| id).collect(),
            reason,
        });
    }
    Ok(report)
}

/// `entries` cut in order into runs of at most `count` entries whose sizes add up to at
/// most `bytes` (an entry larger than `bytes` alone goes alone: the callers refuse those
/// before sending).
fn batches<T>(
    entries: &[T],
    count: usize,
    bytes: usize,
    size: impl Fn(&T) -> usize,
) -> impl Iterator<Item = &[T]> {
    let mut rest = entries;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut taken = 0;
        let mut total = 0usize;
        for entry in rest.iter().take(count.max(1)) {
            let next = total.saturating_add(size(entry));
            if taken > 0 && next > bytes {
                break;
            }
            total = next;
            taken += 1;
        }
        let (run, tail) = rest.split_at(taken);
        rest = tail;
        Some(run)
    })
}

/// The size EventBridge counts for an entry: source, detail type and detail (UTF-8 bytes).
pub fn entry_size(envelope: &Envelope) -> Result<usize, serde_json::Error> {
    Ok(envelope.source.len() + envelope.kind.len() + serde_json::to_string(envelope)?.len())
}

/// Publishes envelopes to an EventBridge bus: `source` is the envelope's source,
/// `detail-type` its type, `detail` the whole envelope, and the trace header rides along.
///
/// ```no_run
/// use lift_events::publish::{EventBridgePublisher, PublishConfig};
///
/// # async fn example(events: Vec<lift_events::Envelope>) -> Result<(), Box<dyn std::error::Error>> {
/// let client = aws_sdk_eventbridge::Client::new(lift_core::aws::sdk_config().await);
/// let publisher = EventBridgePublisher::new(client, "orders-bus", PublishConfig::default());
/// let report = publisher.publish(&events).await?;
/// println!("{} events in {} calls", report.entries, report.calls);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct EventBridgePublisher {
    client: aws_sdk_eventbridge::Client,
    bus: String,
    config: PublishConfig,
}

impl EventBridgePublisher {
    /// Publishes to `bus` through `client` (built once, at init).
    pub fn new(client: aws_sdk_eventbridge::Client, bus: &str, config: PublishConfig) -> Self {
        EventBridgePublisher {
            client,
            bus: bus.to_owned(),
            config,
        }
    }

    /// Publishes `events`, 10 a call; resends failed entries until the deadline.
    ///
    /// # Errors
    /// [`TransportError::Refused`] before any call when an entry is above the size limit
    /// (or does not serialize); [`TransportError::Rejected`] with the ids EventBridge
    /// refused for what they hold (`InvalidArgument`, `MalformedDetail`: not resent), once
    /// the others are delivered; [`TransportError::Undelivered`] with the ids still failing
    /// at the deadline; [`TransportError::Failed`] when a call fails as a whole.
    pub async fn publish(&self, events: &[Envelope]) -> Result<PublishReport, TransportError> {
        let entries = self.entries(events)?;
        send_all(
            &entries,
            PUT_EVENTS_BATCH,
            &self.config,
            |(id, _)| id.clone(),
            |(_, entry)| {
                [entry.source(), entry.detail_type(), entry.detail()]
                    .into_iter()
                    .map(|part| part.map_or(0, str::len))
                    .sum()
            },
            |chunk| self.put(chunk),
        )
        .await
    }

    fn entries(
        &self,
        events: &[Envelope],
    ) -> Result<Vec<(String, PutEventsRequestEntry)>, TransportError> {
        events
            .iter()
            .map(|e| {
                let detail = serde_json::to_string(e)
                    .map_err(|err| TransportError::Refused(err.to_string()))?;
                let size = e.source.len() + e.kind.len() + detail.len();
                if size > self.config.max_entry_bytes {
                    return Err(TransportError::Refused(format!(
                        "event `{}` is {size} bytes, above the {} byte limit",
                        e.id, self.config.max_entry_bytes
                    )));
                }
                let entry = PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus)
                    .source(&e.source)
                    .detail_type(&e.kind)
                    .detail(detail)
                    .set_trace_header(e.trace_header.clone())
                    .build();
                Ok((e.id.clone(), entry))
            })
            .collect()
    }

    async fn put(
        &self,
        chunk: Vec<(String, PutEventsRequestEntry)>,
    ) -> Result<Vec<(usize, String)>, TransportError> {
        let output = self
            .client
            .put_events()
            .set_entries(Some(chunk.into_iter().map(|(_, e)| e).collect()))
            .send()
            .await
            .map_err(|e| {
                use aws_sdk_eventbridge::error::ProvideErrorMetadata;
                if e.code() == Some("ThrottlingException") {
                    TransportError::Throttled
                } else {
                    TransportError::Failed(Box::new(e))
                }
            })?;
        Ok(output
            .entries()
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.error_code().map(|code| (i, eventbridge_failure(code))))
            .collect())
    }
}

/// An entry's failure as EventBridge gave it: [`REFUSED`] for what the entry holds
/// (`InvalidArgument`, `MalformedDetail`), which sending again cannot cure. A missing
/// permission may be granted meanwhile: it is resent like throttling.
fn eventbridge_failure(code: &str) -> String {
    match code {
        "InvalidArgument" | "MalformedDetail" => format!("{REFUSED}{code}"),
        _ => code.to_owned(),
    }
}

/// An entry's failure as SQS gave it: [`REFUSED`] for a sender fault (the message's own
/// contents, size or delay), which sending again cannot cure.
fn sqs_failure(code: &str, sender_fault: bool) -> String {
    if sender_fault {
        format!("{REFUSED}{code}")
    } else {
        code.to_owned()
    }
}

/// `json` with the two characters SQS refuses that JSON writes as they are (U+FFFE and
/// U+FFFF, which can only stand in a string) written as escapes: the same JSON, a message
/// SQS takes. The others SQS refuses (controls, lone surrogates) JSON escapes already.
fn sqs_text(json: String) -> String {
    if json.contains(['\u{FFFE}', '\u{FFFF}']) {
        json.replace('\u{FFFE}', "\\ufffe")
            .replace('\u{FFFF}', "\\uffff")
    } else {
        json
    }
}

/// One message for [`SqsPublisher::send`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SqsMessage {
    /// The envelope (the message body).
    pub envelope: Envelope,
    /// Delivery delay (standard queues; at most 15 minutes).
    pub delay: Duration,
    /// The FIFO message group (required on a FIFO queue).
    pub group_id: Option<String>,
    /// The FIFO deduplication id (the envelope id when absent).
    pub deduplication_id: Option<String>,
}

impl SqsMessage {
    /// A message carrying `envelope`, no delay.
    pub fn new(envelope: Envelope) -> Self {
        SqsMessage {
            envelope,
            delay: Duration::ZERO,
            group_id: None,
            deduplication_id: None,
        }
    }

    /// Delivered after `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// In FIFO group `group`.
    pub fn group(mut self, group: &str) -> Self {
        self.group_id = Some(group.to_owned());
        self
    }

    /// With FIFO deduplication id `id`.
    pub fn deduplication_id(mut self, id: &str) -> Self {
        self.deduplication_id = Some(id.to_owned());
        self
    }
}

/// Sends envelopes to an SQS queue with `SendMessageBatch`, 10 a call; FIFO queues (a
/// URL ending in `.fifo`) get group and deduplication ids. The correlation id, tenant and
/// event type ride as message attributes (`correlationId`, `tenant`, `eventType`).
#[derive(Debug, Clone)]
pub struct SqsPublisher {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    fifo: bool,
    config: PublishConfig,
}

impl SqsPublisher {
    /// Sends to `queue_url` through `client` (built once, at init).
    pub fn new(client: aws_sdk_sqs::Client, queue_url: &str, config: PublishConfig) -> Self {
        SqsPublisher {
            client,
            queue_url: queue_url.to_owned(),
            fifo: queue_url.ends_with(".fifo"),
            config,
        }
    }

    /// Sends `messages`; resends failed entries until the deadline.
    ///
    /// # Errors
    /// [`TransportError::Refused`] before any call for a message above the size limit, a
    /// delay above 15 minutes, or a FIFO message without a group; otherwise as
    /// [`EventBridgePublisher::publish`] (refused for what they hold: SQS sender faults).
    pub async fn send(&self, messages: &[SqsMessage]) -> Result<PublishReport, TransportError> {
        let entries = messages
            .iter()
            .enumerate()
            .map(|(i, m)| self.entry(i, m))
            .collect::<Result<Vec<_>, _>>()?;
        send_all(
            &entries,
            10,
            &self.config,
            |(id, _)| id.clone(),
            |(_, entry)| entry.message_body().len(),
            |chunk| self.batch(chunk),
        )
        .await
    }

    fn entry(
        &self,
        index: usize,
        m: &SqsMessage,
    ) -> Result<(String, SendMessageBatchRequestEntry), TransportError> {
        let body = sqs_text(
            serde_json::to_string(&m.envelope)
                .map_err(|e| TransportError::Refused(e.to_string()))?,
        );
        if body.len() > self.config.max_entry_bytes {
            return Err(TransportError::Refused(format!(
                "message `{}` is {} bytes, above the {} byte limit",
                m.envelope.id,
                body.len(),
                self.config.max_entry_bytes
            )));
        }
        if m.delay > crate::relay::MAX_TIMER_DELAY {
            return Err(TransportError::Refused(format!(
                "message `{}` has a delay above 15 minutes",
                m.envelope.id
            )));
        }
        if self.fifo && m.group_id.is_none() {
            return Err(TransportError::Refused(format!(
                "message `{}` needs a group id on a FIFO queue",
                m.envelope.id
            )));
        }
        let attribute = |value: &str| {
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| TransportError::Refused(e.to_string()))
        };
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(format!("m{index}"))
            .message_body(body)
            .message_attributes("correlationId", attribute(&m.envelope.correlation_id)?)
            .message_attributes("eventType", attribute(&m.envelope.kind)?);
        if let Some(tenant) = &m.envelope.tenant {
            entry = entry.message_attributes("tenant", attribute(tenant)?);
        }
        if self.fifo {
            entry = entry
                .set_message_group_id(m.group_id.clone())
                .message_deduplication_id(
                    m.deduplication_id
                        .clone()
                        .unwrap_or_else(|| m.envelope.id.clone()),
                );
        } else if !m.delay.is_zero() {
            // SQS counts whole seconds: round up, so a timer never arrives early.
            let seconds = m.delay.as_secs() + u64::from(m.delay.subsec_nanos() > 0);
            entry = entry.delay_seconds(i32::try_from(seconds.min(900)).unwrap_or(900));
        }
        let entry = entry
            .build()
            .map_err(|e| TransportError::Refused(e.to_string()))?;
        Ok((m.envelope.id.clone(), entry))
    }

    async fn batch(
        &self,
        chunk: Vec<(String, SendMessageBatchRequestEntry)>,
    ) -> Result<Vec<(usize, String)>, TransportError> {
        let ids: Vec<String> = chunk.iter().map(|(_, e)| e.id().to_owned()).collect();
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(chunk.into_iter().map(|(_, e)| e).collect()))
            .send()
            .await
            .map_err(|e| TransportError::Failed(Box::new(e)))?;
        Ok(output
            .failed()
            .iter()
            .filter_map(|f| {
                let i = ids.iter().position(|id| id == f.id())?;
                Some((i, sqs_failure(f.code(), f.sender_fault())))
            })
            .collect())
    }
}

/// Sends envelopes to a Lambda function as asynchronous invocations (`Invoke` with
/// `InvocationType=Event`), one call each, each resent with backoff until the deadline
/// when Lambda throttles it or fails inside.
///
/// The payload is the event an EventBridge rule would deliver for the envelope: `source`
/// and `detail-type` are the envelope's, `detail` the whole envelope, `id` its id. So the
/// function's [`App::event`](lift_core::App::event) route takes it whichever way it came,
/// and moving a participant from the bus to invocations changes none of its code.
///
/// Why: an asynchronous invocation costs the invoked function's request ($0.20 per
/// million), which it pays whatever delivers the message, and nothing else; a message
/// through SQS adds a send, a receive and a delete ($0.40 per million each), through the
/// bus an entry ($1 per million). Lambda keeps the event in its own queue, retries a
/// failed invocation twice, then hands it to the function's on-failure destination (give
/// it one: a dead-letter queue), and may deliver an event more than once: consumers stay
/// idempotent, as with any other path.
///
/// ```no_run
/// use lift_events::publish::{LambdaInvoker, PublishConfig};
///
/// # async fn example(commands: Vec<lift_events::Envelope>) -> Result<(), Box<dyn std::error::Error>> {
/// let client = aws_sdk_lambda::Client::new(lift_core::aws::sdk_config().await);
/// let payments = LambdaInvoker::new(client, "payments:live", PublishConfig::default());
/// payments.send(&commands).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LambdaInvoker {
    client: aws_sdk_lambda::Client,
    function: String,
    config: PublishConfig,
}

impl LambdaInvoker {
    /// Invokes `function` (a name, a qualified name or an ARN) through `client` (built
    /// once, at init). `config`'s entry limit applies to the whole payload: 256 KiB by
    /// default, Lambda's historical limit for an asynchronous invocation.
    pub fn new(client: aws_sdk_lambda::Client, function: &str, config: PublishConfig) -> Self {
        LambdaInvoker {
            client,
            function: function.to_owned(),
            config,
        }
    }

    /// Invokes the function once per envelope; resends a throttled or failed invocation
    /// until the deadline.
    ///
    /// # Errors
    /// [`TransportError::Refused`] before any call for a payload above the size limit;
    /// [`TransportError::Undelivered`] with the ids still throttled or failing at the
    /// deadline; [`TransportError::Failed`] for an error a resend cannot cure (no such
    /// function, access denied).
    pub async fn send(&self, envelopes: &[Envelope]) -> Result<PublishReport, TransportError> {
        let payloads = envelopes
            .iter()
            .map(|e| {
                let payload = invocation_payload(e)?;
                if payload.len() > self.config.max_entry_bytes {
                    return Err(TransportError::Refused(format!(
                        "event `{}` is {} bytes as an invocation, above the {} byte limit",
                        e.id,
                        payload.len(),
                        self.config.max_entry_bytes
                    )));
                }
                Ok((e.id.clone(), payload))
            })
            .collect::<Result<Vec<_>, _>>()?;
        send_all(
            &payloads,
            1,
            &self.config,
            |(id, _)| id.clone(),
            |(_, payload)| payload.len(),
            |chunk| self.invoke(chunk),
        )
        .await
    }

    async fn invoke(
        &self,
        chunk: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<(usize, String)>, TransportError> {
        use aws_sdk_lambda::error::ProvideErrorMetadata;
        let mut failed = Vec::new();
        for (i, (_, payload)) in chunk.into_iter().enumerate() {
            let sent = self
                .client
                .invoke()
                .function_name(&self.function)
                .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
                .payload(aws_sdk_lambda::primitives::Blob::new(payload))
                .send()
                .await;
            if let Err(e) = sent {
                let code = e.code().unwrap_or("").to_owned();
                let resend = matches!(
                    code.as_str(),
                    "TooManyRequestsException"
                        | "ServiceException"
                        | "ResourceNotReadyException"
                        | "EC2ThrottledException"
                ) || e
                    .raw_response()
                    .is_some_and(|r| r.status().is_server_error());
                if !resend {
                    return Err(TransportError::Failed(Box::new(e)));
                }
                failed.push((
                    i,
                    if code.is_empty() {
                        "5xx".to_owned()
                    } else {
                        code
                    },
                ));
            }
        }
        Ok(failed)
    }
}

/// The EventBridge-shaped event an asynchronous invocation carries for `envelope`.
pub(crate) fn invocation_payload(envelope: &Envelope) -> Result<Vec<u8>, TransportError> {
    #[derive(serde::Serialize)]
    struct Shaped<'a> {
        version: &'static str,
        id: &'a str,
        #[serde(rename = "detail-type")]
        detail_type: &'a str,
        source: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        time: Option<&'a str>,
        resources: [&'static str; 0],
        detail: &'a Envelope,
    }
    serde_json::to_vec(&Shaped {
        version: "0",
        id: &envelope.id,
        detail_type: &envelope.kind,
        source: &envelope.source,
        // EventBridge's `time` is a timestamp: left out when the envelope's is not one.
        time: chrono::DateTime::parse_from_rfc3339(&envelope.time)
            .is_ok()
            .then_some(envelope.time.as_str()),
        resources: [],
        detail: envelope,
    })
    .map_err(|e| TransportError::Refused(e.to_string()))
}

/// The relay's [`Transport`] on AWS: events to an EventBridge bus, timers to the
/// orchestrator's SQS queue with a delay, and commands to the participants given a queue
/// ([`with_participant_queue`](Self::with_participant_queue)) or a function
/// ([`with_participant_function`](Self::with_participant_function)), else on the bus.
#[derive(Debug, Clone)]
pub struct AwsTransport {
    events: EventBridgePublisher,
    timers: SqsPublisher,
    participants: Vec<(String, Direct)>,
}

/// Where saga messages go when not on the bus: a participant's commands, a participant's
/// replies.
#[derive(Debug, Clone)]
pub(crate) enum Direct {
    /// Straight to a queue.
    Queue(SqsPublisher),
    /// As asynchronous invocations of a function.
    Function(LambdaInvoker),
}

impl Direct {
    /// Sends `envelopes` the way this says.
    pub(crate) async fn send(
        &self,
        envelopes: &[Envelope],
    ) -> Result<PublishReport, TransportError> {
        match self {
            Direct::Queue(queue) => {
                let messages: Vec<SqsMessage> =
                    envelopes.iter().cloned().map(SqsMessage::new).collect();
                queue.send(&messages).await
            }
            Direct::Function(function) => function.send(envelopes).await,
        }
    }
}

impl AwsTransport {
    /// Events through `events`, timers through `timers`.
    pub fn new(events: EventBridgePublisher, timers: SqsPublisher) -> Self {
        AwsTransport {
            events,
            timers,
            participants: Vec::new(),
        }
    }

    /// Sends the commands of `participant` straight to its queue through `queue`: one
    /// SQS request instead of a bus entry ($1 per million) and the SQS request of the
    /// rule that would route it there. Business events stay on the bus.
    pub fn with_participant_queue(self, participant: &str, queue: SqsPublisher) -> Self {
        self.direct(participant, Direct::Queue(queue))
    }

    /// Sends the commands of `participant` to its function as asynchronous invocations
    /// through `function` ([`LambdaInvoker`]): no bus entry and no SQS request, only the
    /// participant's own invocation. Business events stay on the bus.
    pub fn with_participant_function(self, participant: &str, function: LambdaInvoker) -> Self {
        self.direct(participant, Direct::Function(function))
    }

    fn direct(mut self, participant: &str, to: Direct) -> Self {
        self.participants.retain(|(p, _)| p != participant);
        self.participants.push((participant.to_owned(), to));
        self
    }
}

impl Transport for AwsTransport {
    async fn put_events(&self, entries: &[Envelope]) -> Result<Vec<usize>, TransportError> {
        let envelopes = entries;
        let entries = self.events.entries(entries)?;
        let mut failed = Vec::new();
        for (i, code) in self.events.put(entries).await? {
            match code.strip_prefix(REFUSED) {
                // Refused for what it holds: left out, not failed again and again.
                Some(code) => {
                    let id = envelopes.get(i).map_or("", |e| e.id.as_str());
                    tracing::error!(target: "lift::events", event = id, code, "event refused by the bus; not sent");
                }
                None => failed.push(i),
            }
        }
        Ok(failed)
    }

    async fn send_delayed(
        &self,
        message: &Envelope,
        delay: Duration,
    ) -> Result<(), TransportError> {
        if self.timers.fifo {
            // A FIFO queue takes no per-message delay: a setup error, not the timer's, so
            // it fails the record loudly rather than being left out as a refused timer.
            return Err(TransportError::Failed(
                "the timers queue is a FIFO queue, which takes no per-message delay".into(),
            ));
        }
        self.timers
            .send(&[SqsMessage::new(message.clone()).delay(delay)])
            .await
            .map(|_| ())
    }

    async fn send_commands(
        &self,
        participant: &str,
        commands: &[Envelope],
    ) -> Result<bool, TransportError> {
        match self.participants.iter().find(|(p, _)| p == participant) {
            None => Ok(false),
            Some((_, direct)) => direct.send(commands).await.map(|_| true),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn config() -> PublishConfig {
        PublishConfig::new(
            1000,
            Duration::from_secs(5),
            Duration::from_millis(100),
            Duration::from_secs(1),
        )
        .unwrap()
    }

    /// An entry the service refused for what it holds is sent once, not again until the
    /// deadline; the others are delivered, and the answer names the refused one.
    #[tokio::test(start_paused = true)]
    async fn an_entry_refused_for_good_is_not_resent() {
        let entries: Vec<u32> = (0..5).collect();
        let calls = Mutex::new(Vec::new());
        let error = send_all(
            &entries,
            10,
            &config(),
            |e| format!("e{e}"),
            |_| 1,
            |chunk: Vec<u32>| {
                calls.lock().unwrap().push(chunk.clone());
                let first_time = calls.lock().unwrap().len() == 1;
                async move {
                    Ok(chunk
                        .iter()
                        .enumerate()
                        .filter_map(|(i, e)| match e {
                            3 => Some((i, format!("{REFUSED}InvalidMessageContents"))),
                            1 if first_time => Some((i, "InternalFailure".to_owned())),
                            _ => None,
                        })
                        .collect())
                }
            },
        )
        .await
        .expect_err("refused");
        let calls = calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            [vec![0, 1, 2, 3, 4], vec![1]],
            "only the failed one again"
        );
        match error {
            TransportError::Rejected { ids, reason } => {
                assert_eq!(reason, "InvalidMessageContents");
                assert_eq!(ids, ["e3"]);
            }
            other => panic!("{other:?}"),
        }
    }

    /// What the services say of an entry they refuse for what it holds is marked refused;
    /// throttling, internal failures and missing permissions are resent.
    #[test]
    fn failures_for_what_an_entry_holds_are_marked_refused() {
        for code in ["InvalidArgument", "MalformedDetail"] {
            assert_eq!(eventbridge_failure(code), format!("{REFUSED}{code}"));
        }
        for code in [
            "InternalFailure",
            "ThrottlingException",
            "NotAuthorizedForSourceException",
        ] {
            assert_eq!(eventbridge_failure(code), code);
        }
        assert_eq!(
            sqs_failure("InvalidMessageContents", true),
            format!("{REFUSED}InvalidMessageContents")
        );
        assert_eq!(sqs_failure("InternalError", false), "InternalError");
    }

    /// The characters SQS refuses and JSON writes as they are become escapes: the same
    /// JSON, only characters SQS takes.
    #[test]
    fn sqs_bodies_escape_what_sqs_refuses() {
        let envelope = serde_json::json!({"ship_to": "a\u{FFFF}b\u{FFFE}", "n": 1});
        let text = serde_json::to_string(&envelope).unwrap();
        assert!(text.contains('\u{FFFF}'));
        let body = sqs_text(text);
        let allowed = |c: char| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..);
        assert!(body.chars().all(allowed), "{body}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            envelope
        );
        let plain = r#"{"a":"b"}"#.to_owned();
        assert_eq!(sqs_text(plain.clone()), plain);
    }

    #[tokio::test(start_paused = true)]
    async fn batches_by_ten_and_resends_failed_entries() {
        let entries: Vec<u32> = (0..25).collect();
        let calls = Mutex::new(Vec::new());
        let report = send_all(
            &entries,
            10,
            &config(),
            |e| e.to_string(),
            |_| 1,
            |chunk: Vec<u32>| {
                calls.lock().unwrap().push(chunk.clone());
                let first_time = calls.lock().unwrap().len() <= 3;
                async move {
                    // Entry 7 fails once.
                    Ok(chunk
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| **e == 7 && first_time)
                        .map(|(i, _)| (i, "InternalFailure".to_owned()))
                        .collect())
                }
            },
        )
        .await
        .unwrap();
        let sizes: Vec<usize> = calls.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5, 1]);
        assert_eq!(
            report,
            PublishReport {
                entries: 25,
                calls: 4,
                resent: 1
            }
        );
    }

    /// Runs `send_all` of one entry inside an invocation 2 s from its deadline, each call
    /// answered by `answer` after `takes`: the outcome, when it came (from the start) and
    /// the calls made.
    async fn within_two_seconds(
        takes: Duration,
    ) -> (Result<PublishReport, TransportError>, Duration, usize) {
        use lift_core::testing::{TestApp, events, lambda_context};
        type Seen = (Option<Result<PublishReport, TransportError>>, usize);
        let seen: std::sync::Arc<Mutex<Seen>> = std::sync::Arc::new(Mutex::new((None, 0)));
        let out = seen.clone();
        let app = TestApp::new(lift_core::App::new().sqs(move |_ctx: lift_core::Context| {
            let seen = out.clone();
            async move {
                let result = send_all(
                    &[1_u32],
                    10,
                    &config(),
                    |e| e.to_string(),
                    |_| 1,
                    |_chunk: Vec<u32>| {
                        seen.lock().unwrap().1 += 1;
                        async move {
                            tokio::time::sleep(takes).await;
                            Ok(vec![(0, "Throttled".to_owned())])
                        }
                    },
                )
                .await;
                seen.lock().unwrap().0 = Some(result);
                Ok::<_, lift_core::Error>(())
            }
        }))
        .unwrap();
        let mut context = lambda_context("r");
        context.deadline = (SystemTime::now() + Duration::from_secs(2))
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let started = tokio::time::Instant::now();
        app.invoke_with(&events::sqs(["x"]), context).await.unwrap();
        let took = started.elapsed();
        let (result, calls) = std::mem::take(&mut *seen.lock().unwrap());
        (result.expect("send_all ran"), took, calls)
    }

    /// Resending stops before the invocation's deadline, whatever the configured time: a
    /// function 2 s from its deadline gets its `Undelivered` (to answer with) within 1.5 s,
    /// not after the 5 s configured, by which time Lambda had ended it.
    #[tokio::test(start_paused = true)]
    async fn resending_stops_before_the_invocation_deadline() {
        let (result, took, calls) = within_two_seconds(Duration::ZERO).await;
        assert!(
            matches!(result, Err(TransportError::Undelivered { .. })),
            "{result:?}"
        );
        assert!(took <= Duration::from_millis(1500), "{took:?}");
        assert!(calls <= 4, "{calls} calls");
    }

    /// A call that does not answer (its own SDK retries under throttling) is cut at the
    /// invocation's deadline too: `Undelivered`, naming the entry, before Lambda ends it.
    #[tokio::test(start_paused = true)]
    async fn a_call_without_an_answer_ends_before_the_invocation() {
        let (result, took, calls) = within_two_seconds(Duration::from_secs(3)).await;
        match result {
            Err(TransportError::Undelivered { ids, .. }) => assert_eq!(ids, ["1"]),
            other => panic!("expected Undelivered, got {other:?}"),
        }
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(calls, 1);
    }

    /// Ten entries of 60 KiB do not go as one call over the 256 KiB a call may carry in
    /// all: four, four and two.
    #[tokio::test(start_paused = true)]
    async fn batches_stay_within_the_bytes_a_call_may_carry() {
        let entries: Vec<usize> = vec![60 * 1024; 10];
        let limit = PublishConfig::default().max_entry_bytes;
        let calls = Mutex::new(Vec::new());
        let report = send_all(
            &entries,
            10,
            &PublishConfig::default(),
            |e| e.to_string(),
            |e| *e,
            |chunk: Vec<usize>| {
                calls.lock().unwrap().push(chunk.len());
                let total: usize = chunk.iter().sum();
                async move {
                    if total > limit {
                        return Err(TransportError::Refused(format!("{total} bytes")));
                    }
                    Ok(Vec::new())
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(*calls.lock().unwrap(), [4, 4, 2]);
        assert_eq!(report.entries, 10);
    }

    #[test]
    fn a_zero_backoff_is_refused() {
        let config = PublishConfig::new(
            1000,
            Duration::from_secs(5),
            Duration::ZERO,
            Duration::from_secs(1),
        );
        assert!(config.is_err(), "{config:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn reports_entries_still_failing_at_the_deadline() {
        let began = tokio::time::Instant::now();
        let error = send_all(
            &[1u32, 2],
            10,
            &config(),
            |e| format!("e{e}"),
            |_| 1,
            |chunk: Vec<u32>| async move {
                Ok(chunk
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| **e == 2)
                    .map(|(i, _)| (i, "Throttling".to_owned()))
                    .collect())
            },
        )
        .await
        .unwrap_err();
        match error {
            TransportError::Undelivered { ids, reason } => {
                assert_eq!(ids, ["e2"]);
                assert_eq!(reason, "Throttling");
            }
            other => panic!("{other:?}"),
        }
        let waited = began.elapsed();
        assert!(
            waited <= Duration::from_secs(5) && waited >= Duration::from_secs(3),
            "{waited:?}"
        );
    }

    #[test]
    fn an_invocation_carries_the_event_a_rule_would_deliver() {
        let envelope = Envelope::from_body(
            br#"{"id":"e1","type":"ReserveStock","source":"lift.saga","time":"2026-11-30T10:00:00.000Z",
                "correlationId":"c1","schemaVersion":1,"payload":{"n":1},"future":true}"#,
        )
        .unwrap();
        let payload = invocation_payload(&envelope).unwrap();
        let event: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(event["source"], "lift.saga");
        assert_eq!(event["detail-type"], "ReserveStock");
        assert_eq!(event["id"], "e1");
        assert_eq!(event["time"], "2026-11-30T10:00:00.000Z");
        // What a consumer reads back is the envelope, unknown fields included.
        assert_eq!(Envelope::from_body(&payload).unwrap(), envelope);
        let mut untimed = envelope;
        untimed.time = "yesterday".into();
        let event: serde_json::Value =
            serde_json::from_slice(&invocation_payload(&untimed).unwrap()).unwrap();
        assert!(event.get("time").is_none(), "{event}");
    }

    #[test]
    fn settings_are_checked() {
        assert!(
            PublishConfig::new(0, Duration::from_secs(1), Duration::ZERO, Duration::ZERO).is_err()
        );
        assert!(PublishConfig::new(10, Duration::ZERO, Duration::ZERO, Duration::ZERO).is_err());
        let e = PublishConfig::new(
            10,
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.to_string().contains("max_backoff"));
        // "Forever" is refused, not an overflow at the first publish.
        let e = PublishConfig::new(
            10,
            Duration::MAX,
            Duration::from_millis(100),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.to_string().contains("deadline"));
    }
}
