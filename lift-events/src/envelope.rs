//! The event envelope every Lift event and command travels in, and typed events.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A typed event (or command): its serde payload names its type and schema version.
///
/// ```
/// use lift_events::{Envelope, Event};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct OrderPlaced { order_id: String }
///
/// impl Event for OrderPlaced {
///     const TYPE: &'static str = "OrderPlaced";
/// }
///
/// let envelope = Envelope::new("orders", OrderPlaced { order_id: "o-1".into() });
/// assert_eq!(envelope.kind, "OrderPlaced");
/// ```
pub trait Event: Serialize + DeserializeOwned + Send + 'static {
    /// The event type (EventBridge's `detail-type`).
    const TYPE: &'static str;
    /// The payload's schema version.
    const SCHEMA_VERSION: u32 = 1;
}

/// An event with its metadata. On EventBridge it is the `detail`; on SQS the message body.
/// Fields this version does not know are kept in [`extra`](Self::extra) and written back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T = Value> {
    /// Unique per event; consumers deduplicate by it.
    pub id: String,
    /// The event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Who published it (EventBridge's `source`).
    pub source: String,
    /// When it was created (RFC 3339).
    pub time: String,
    /// The tenant it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The id shared by everything one request caused.
    pub correlation_id: String,
    /// The id of the event (or command) that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The X-Ray trace header to continue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_header: Option<String>,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The saga it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saga_id: Option<String>,
    /// The saga step it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saga_step: Option<String>,
    /// The event itself.
    pub payload: T,
    /// Fields this version does not know, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why an envelope could not be read as a typed event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The envelope carries another event type.
    #[error("expected an event of type `{expected}`, got `{found}`")]
    WrongType {
        /// The type asked for.
        expected: &'static str,
        /// The envelope's type.
        found: String,
    },
    /// The envelope's schema version is newer than this code knows.
    #[error("`{kind}` schema version {found} is newer than {known}")]
    NewerSchema {
        /// The event type.
        kind: String,
        /// The envelope's version.
        found: u32,
        /// The newest version this code reads.
        known: u32,
    },
    /// The JSON is not an envelope or the payload does not decode.
    #[error("the envelope does not decode: {0}")]
    Decode(#[from] serde_json::Error),
}

/// A new random id (128 bits, hex).
pub(crate) fn new_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

impl<T: Event> Envelope<T> {
    /// A new envelope around `payload` from `source`: a fresh id, now, its own id as the
    /// correlation id.
    pub fn new(source: &str, payload: T) -> Self {
        let id = new_id();
        Envelope {
            correlation_id: id.clone(),
            id,
            kind: T::TYPE.to_owned(),
            source: source.to_owned(),
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            tenant: None,
            causation_id: None,
            trace_header: None,
            schema_version: T::SCHEMA_VERSION,
            saga_id: None,
            saga_step: None,
            payload,
            extra: Map::new(),
        }
    }
}

impl<T> Envelope<T> {
    /// Continues `cause`: its correlation id, tenant and trace header, and its id as the
    /// causation id.
    pub fn caused_by<U>(mut self, cause: &Envelope<U>) -> Self {
        self.correlation_id.clone_from(&cause.correlation_id);
        self.causation_id = Some(cause.id.clone());
        self.tenant.clone_from(&cause.tenant);
        self.trace_header.clone_from(&cause.trace_header);
        self
    }

    /// Continues the invocation in `ctx`: its correlation id, tenant and trace header.
    pub fn in_context(mut self, ctx: &lift_core::Context) -> Self {
        ctx.correlation_id().clone_into(&mut self.correlation_id);
        self.tenant = ctx.tenant().map(str::to_owned);
        self.trace_header = ctx.trace_id().map(str::to_owned);
        self
    }

    /// The same envelope with an untyped payload.
    ///
    /// # Errors
    /// When the payload does not serialize.
    pub fn into_untyped(self) -> Result<Envelope, serde_json::Error>
    where
        T: Serialize,
    {
        Ok(Envelope {
            payload: serde_json::to_value(self.payload)?,
            id: self.id,
            kind: self.kind,
            source: self.source,
            time: self.time,
            tenant: self.tenant,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            trace_header: self.trace_header,
            schema_version: self.schema_version,
            saga_id: self.saga_id,
            saga_step: self.saga_step,
            extra: self.extra,
        })
    }
}

impl Envelope {
    /// Reads the payload as `T`, checking the type and that the schema version is not
    /// newer than `T`'s.
    ///
    /// # Errors
    /// [`EnvelopeError`] naming what does not match.
    pub fn typed<T: Event>(self) -> Result<Envelope<T>, EnvelopeError> {
        if self.kind != T::TYPE {
            return Err(EnvelopeError::WrongType {
                expected: T::TYPE,
                found: self.kind,
            });
        }
        if self.schema_version > T::SCHEMA_VERSION {
            return Err(EnvelopeError::NewerSchema {
                kind: self.kind,
                found: self.schema_version,
                known: T::SCHEMA_VERSION,
            });
        }
        Ok(Envelope {
            payload: serde_json::from_value(self.payload)?,
            id: self.id,
            kind: self.kind,
            source: self.source,
            time: self.time,
            tenant: self.tenant,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            trace_header: self.trace_header,
            schema_version: self.schema_version,
            saga_id: self.saga_id,
            saga_step: self.saga_step,
            extra: self.extra,
        })
    }

    /// Reads an envelope from a message body: the envelope itself, or an EventBridge event
    /// (as a rule delivers it to an SQS queue) whose `detail` is the envelope.
    ///
    /// # Errors
    /// [`EnvelopeError::Decode`] when neither.
    pub fn from_body(body: &[u8]) -> Result<Envelope, EnvelopeError> {
        let mut value: Value = serde_json::from_slice(body)?;
        if value.get("detail-type").is_some()
            && let Some(detail) = value.get_mut("detail")
        {
            value = detail.take();
        }
        Ok(serde_json::from_value(value)?)
    }
}

/// A typed envelope is handler input: from an EventBridge event's `detail`, an SQS message
/// body (bare, or an EventBridge event a rule delivered), checked for its type.
impl<T: Event> lift_core::Input for Envelope<T> {
    fn from_context(ctx: &lift_core::Context) -> Result<Self, lift_core::Error> {
        let invalid = |message: String| {
            lift_core::Error::Validation(vec![lift_core::FieldError {
                pointer: String::new(),
                message,
            }])
        };
        Envelope::from_body(ctx.body())
            .and_then(Envelope::typed)
            .map_err(|e| invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Placed {
        order: u32,
    }
    impl Event for Placed {
        const TYPE: &'static str = "Placed";
        const SCHEMA_VERSION: u32 = 2;
    }

    #[test]
    fn round_trips_and_keeps_unknown_fields() {
        let body = json!({
            "id": "e1", "type": "Placed", "source": "orders", "time": "2026-01-01T00:00:00Z",
            "correlationId": "c1", "schemaVersion": 1, "payload": {"order": 3},
            "region": "eu", "tags": [1, 2]
        });
        let e = Envelope::from_body(body.to_string().as_bytes()).unwrap();
        assert_eq!(e.extra.get("region"), Some(&json!("eu")));
        let typed = e.typed::<Placed>().unwrap();
        assert_eq!(typed.payload, Placed { order: 3 });
        let back = serde_json::to_value(&typed).unwrap();
        assert_eq!(
            back, body,
            "written back unchanged, unknown fields included"
        );
    }

    #[test]
    fn reads_an_eventbridge_event_and_checks_type_and_version() {
        let inner = Envelope::new("orders", Placed { order: 1 })
            .into_untyped()
            .unwrap();
        let event =
            json!({"version": "0", "detail-type": "Placed", "source": "orders", "detail": inner});
        let e = Envelope::from_body(event.to_string().as_bytes()).unwrap();
        assert_eq!(e, inner);
        let mut wrong = inner.clone();
        wrong.kind = "Other".into();
        assert!(matches!(
            wrong.typed::<Placed>(),
            Err(EnvelopeError::WrongType { .. })
        ));
        let mut newer = inner;
        newer.schema_version = 3;
        assert!(matches!(
            newer.typed::<Placed>(),
            Err(EnvelopeError::NewerSchema { found: 3, .. })
        ));
        assert!(Envelope::from_body(b"{}").is_err());
    }

    #[test]
    fn a_caused_event_continues_the_correlation() {
        let mut first = Envelope::new("a", Placed { order: 1 });
        first.tenant = Some("t1".into());
        first.trace_header = Some("Root=1-abc".into());
        let second = Envelope::new("b", Placed { order: 2 }).caused_by(&first);
        assert_eq!(second.correlation_id, first.correlation_id);
        assert_eq!(second.causation_id.as_deref(), Some(first.id.as_str()));
        assert_eq!(second.tenant.as_deref(), Some("t1"));
        assert_eq!(second.trace_header.as_deref(), Some("Root=1-abc"));
        assert_ne!(second.id, first.id);
    }
}
