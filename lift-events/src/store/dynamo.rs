//! [`SagaStore`] on DynamoDB: one item per saga.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
    StreamSpecification, StreamViewType,
};

use super::{SagaStore, SagaSummary, StoreError, compact};
use crate::saga::{Message, SagaState, SagaStatus};
use lift_middleware::dynamo::{self, DynamoError};

/// The time limit of one DynamoDB call, on top of the SDK's own.
const CALL_LIMIT: Duration = Duration::from_secs(3);
/// DynamoDB's item size limit.
const MAX_ITEM_BYTES: usize = 400 * 1024;
/// The sparse index of finished sagas, by status and time.
const FINISHED_INDEX: &str = "finished";

/// Sagas in a DynamoDB table, one item each:
///
/// | attribute | |
/// |---|---|
/// | `pk` (S, key) | the saga id |
/// | `v` (N) | the state version: each write is conditional on it |
/// | `status` (S), `name` (S), `updated` (N), `reason` (S) | for listing |
/// | `fin` (S) | the status once final: the key of the sparse `finished` index |
/// | `state` (S) | the state, as JSON |
/// | `h` (S) | its whole history, one line per entry (about 12 bytes each) |
/// | `outbox` (S) | the messages the last transition decided, as JSON (the commands without the data and outputs `state` holds) |
/// | `out` (N) | 1 when the outbox holds something to publish (not only local steps): the stream mapping filters on it |
///
/// The history is kept in the item rather than as items of its own: a transition is then
/// one `PutItem` (1 write unit per KB of item) where a `TransactWriteItems` of the state and
/// a history item would cost 2 units per item, 4 or more per transition. Written as JSON
/// objects it made most of the item (about 100 bytes an entry); as lines a 5-step saga's
/// item stays about 1 KB, one write unit.
///
/// The table needs a DynamoDB Stream (new images) for the outbox relay; see
/// [`create_table`](Self::create_table) for the whole schema.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// Sagas in `table` through `client` (built once, at init).
    pub fn new(client: Client, table: &str) -> Self {
        DynamoStore {
            client,
            table: table.to_owned(),
        }
    }

    /// Creates `table` with the schema this store expects: key `pk`, the sparse
    /// `finished` index (`fin`, `updated`), on-demand billing and a stream of new images.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when DynamoDB refuses.
    pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
        let attribute = |name: &str, kind: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(kind)
                .build()
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };
        let build = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Refused {
            operation: "CreateTable",
            source: Box::new(e),
        };
        let index = GlobalSecondaryIndex::builder()
            .index_name(FINISHED_INDEX)
            .key_schema(key("fin", KeyType::Hash).map_err(build)?)
            .key_schema(key("updated", KeyType::Range).map_err(build)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::Include)
                    .non_key_attributes("name")
                    .non_key_attributes("reason")
                    .non_key_attributes("status")
                    .build(),
            )
            .build()
            .map_err(build)?;
        client
            .create_table()
            .table_name(table)
            .attribute_definitions(attribute("pk", ScalarAttributeType::S).map_err(build)?)
            .attribute_definitions(attribute("fin", ScalarAttributeType::S).map_err(build)?)
            .attribute_definitions(attribute("updated", ScalarAttributeType::N).map_err(build)?)
            .key_schema(key("pk", KeyType::Hash).map_err(build)?)
            .global_secondary_indexes(index)
            .billing_mode(BillingMode::PayPerRequest)
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewImage)
                    .build()
                    .map_err(build)?,
            )
            .send()
            .await
            .map_err(|e| store_error(table, dynamo::classify("CreateTable", e)))?;
        Ok(())
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }
}

/// The item of `state`.
pub(crate) fn encode(state: &SagaState) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let codec = |e: serde_json::Error| StoreError::Codec {
        id: state.id().to_owned(),
        reason: e.to_string(),
    };
    // The state without its history and outbox, which are stored compact.
    let mut body = serde_json::to_value(state).map_err(codec)?;
    if let Some(map) = body.as_object_mut() {
        map.remove("outbox");
        map.remove("history");
        // What the item's own attributes hold is not repeated: the id (`pk`), version
        // (`v`), status, name, reason and time of the last move (`updated`); nor a
        // correlation id that is the saga's id (the default).
        for key in ["id", "version", "status", "name", "reason", "updated_ms"] {
            map.remove(key);
        }
        if state.correlation_id() == state.id() {
            map.remove("correlation_id");
        }
    }
    let body = serde_json::to_string(&body).map_err(codec)?;
    let history = compact::history_lines(state.created_ms(), state.history());
    let outbox = serde_json::to_string(&compact::strip(state.outbox())).map_err(codec)?;
    let bytes = body.len() + history.len() + outbox.len() + state.id().len() + 64;
    if bytes > MAX_ITEM_BYTES {
        return Err(StoreError::TooLarge {
            id: state.id().to_owned(),
            bytes,
        });
    }
    let mut item = HashMap::from([
        ("pk".to_owned(), AttributeValue::S(state.id().to_owned())),
        (
            "v".to_owned(),
            AttributeValue::N(state.version().to_string()),
        ),
        (
            "status".to_owned(),
            AttributeValue::S(state.status().as_str().to_owned()),
        ),
        (
            "name".to_owned(),
            AttributeValue::S(state.name().to_owned()),
        ),
        (
            "updated".to_owned(),
            AttributeValue::N(state.updated_ms().to_string()),
        ),
        ("state".to_owned(), AttributeValue::S(body)),
        ("outbox".to_owned(), AttributeValue::S(outbox)),
    ]);
    if !history.is_empty() {
        item.insert("h".to_owned(), AttributeValue::S(history));
    }
    // Marks a transition the relay has something to publish for: the stream mapping's
    // filter leaves the others out, at no charge (local steps' transitions, mostly).
    let publishes = state
        .outbox()
        .iter()
        .any(|m| !matches!(m, Message::Command(c) if c.target == crate::saga::Target::Local));
    if publishes {
        item.insert("out".to_owned(), AttributeValue::N("1".to_owned()));
    }
    if let Some(reason) = state.reason() {
        item.insert("reason".to_owned(), AttributeValue::S(reason.to_owned()));
    }
    if state.status().is_final() {
        item.insert(
            "fin".to_owned(),
            AttributeValue::S(state.status().as_str().to_owned()),
        );
    }
    let digest = content_digest(&item);
    item.insert("d".to_owned(), AttributeValue::S(digest));
    Ok(item)
}

/// The digest of what a saga item says of its saga, its outbox aside: `state`, `h`,
/// `status`, `name`, `reason` and `updated`, each length-prefixed. Stored as `d`, it lets a
/// write applied to a handed-back snapshot require that the stored saga is that snapshot.
pub(crate) fn content_digest(item: &HashMap<String, AttributeValue>) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for name in ["state", "h", "status", "name", "reason", "updated"] {
        let text = match item.get(name) {
            Some(AttributeValue::S(s) | AttributeValue::N(s)) => s.as_str(),
            _ => "",
        };
        hash.update((name.len() as u64).to_be_bytes());
        hash.update(name.as_bytes());
        hash.update((text.len() as u64).to_be_bytes());
        hash.update(text.as_bytes());
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest [`encode`] would store for `state`.
pub(crate) fn state_digest(state: &SagaState) -> Result<String, StoreError> {
    encode(state).map(|item| content_digest(&item))
}

/// The state in `item`.
pub(crate) fn decode(
    id: &str,
    item: &HashMap<String, AttributeValue>,
) -> Result<SagaState, StoreError> {
    let codec = |reason: String| StoreError::Codec {
        id: id.to_owned(),
        reason,
    };
    let history = match item.get("h") {
        Some(AttributeValue::S(h)) => Some(h.as_str()),
        None => None,
        Some(_) => return Err(codec("attribute `h` is not a string".to_owned())),
    };
    let number = |name: &str| match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    };
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s.as_str()),
        _ => None,
    };
    let columns = Columns {
        version: number("v"),
        status: text("status"),
        name: text("name"),
        reason: text("reason"),
        updated_ms: number("updated"),
    };
    from_parts(
        id,
        text("state")
            .ok_or_else(|| codec("attribute `state` is missing or not a string".to_owned()))?,
        history,
        decode_outbox(id, item)?,
        &columns,
    )
}

/// The saga item's attributes that `state` leaves out.
#[derive(Debug, Default)]
pub(crate) struct Columns<'a> {
    /// `v`.
    pub(crate) version: Option<u64>,
    /// `status`.
    pub(crate) status: Option<&'a str>,
    /// `name`.
    pub(crate) name: Option<&'a str>,
    /// `reason`.
    pub(crate) reason: Option<&'a str>,
    /// `updated`.
    pub(crate) updated_ms: Option<u64>,
}

/// The state stored as `state` (JSON), `h` (its history, compact; absent when the JSON
/// holds it) and `outbox`.
pub(crate) fn from_parts(
    id: &str,
    state: &str,
    history: Option<&str>,
    outbox: Vec<Message>,
    columns: &Columns<'_>,
) -> Result<SagaState, StoreError> {
    let codec = |reason: String| StoreError::Codec {
        id: id.to_owned(),
        reason,
    };
    let mut json: serde_json::Value =
        serde_json::from_str(state).map_err(|e| codec(e.to_string()))?;
    if let Some(map) = json.as_object_mut() {
        use serde_json::Value;
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                map.entry(key.to_owned()).or_insert(value);
            }
        };
        put("id", Some(Value::from(id)));
        put("correlation_id", Some(Value::from(id)));
        put("version", columns.version.map(Value::from));
        put("status", columns.status.map(Value::from));
        put("name", columns.name.map(Value::from));
        put("reason", columns.reason.map(Value::from));
        put("updated_ms", columns.updated_ms.map(Value::from));
    }
    let mut state: SagaState = serde_json::from_value(json).map_err(|e| codec(e.to_string()))?;
    if let Some(lines) = history {
        state.history = compact::parse_history(state.created_ms(), lines).map_err(codec)?;
    }
    state.outbox = outbox;
    compact::refill(&mut state);
    Ok(state)
}

/// The outbox in `item` (a stream record's new image).
pub(crate) fn decode_outbox(
    id: &str,
    item: &HashMap<String, AttributeValue>,
) -> Result<Vec<Message>, StoreError> {
    match item.get("outbox") {
        Some(AttributeValue::S(s)) => serde_json::from_str(s).map_err(|e| StoreError::Codec {
            id: id.to_owned(),
            reason: e.to_string(),
        }),
        None => Ok(Vec::new()),
        Some(_) => Err(StoreError::Codec {
            id: id.to_owned(),
            reason: "attribute `outbox` is not a string".to_owned(),
        }),
    }
}

fn summary(item: &HashMap<String, AttributeValue>) -> Option<SagaSummary> {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    };
    let status = match text("status")?.as_str() {
        "running" => SagaStatus::Running,
        "compensating" => SagaStatus::Compensating,
        "completed" => SagaStatus::Completed,
        "compensated" => SagaStatus::Compensated,
        "needs_attention" => SagaStatus::NeedsAttention,
        _ => return None,
    };
    let updated_ms = match item.get("updated") {
        Some(AttributeValue::N(n)) => n.parse().ok()?,
        _ => return None,
    };
    Some(SagaSummary {
        id: text("pk")?,
        name: text("name")?,
        status,
        reason: text("reason"),
        updated_ms,
    })
}

impl DynamoStore {
    /// Writes `state` on the version before it (for version 1: if no saga has its id), and
    /// when `base` is given, only over a stored saga with `base`'s content too. On a
    /// conflict DynamoDB hands back the stored item with the failure: the orchestrator
    /// applies its input again without reading.
    async fn put(&self, state: &SagaState, base: Option<&SagaState>) -> Result<(), StoreError> {
        let item = encode(state)?;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let put = if state.version() <= 1 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            let put = put.expression_attribute_values(
                ":expected",
                AttributeValue::N((state.version() - 1).to_string()),
            );
            match base {
                Some(base) => put
                    .condition_expression("v = :expected AND d = :base")
                    .expression_attribute_values(":base", AttributeValue::S(state_digest(base)?)),
                None => put.condition_expression("v = :expected"),
            }
        };
        dynamo::within("PutItem", CALL_LIMIT, put.send())
            .await
            .map_err(|e| store_error(state.id(), e))?;
        Ok(())
    }
}

impl SagaStore for DynamoStore {
    async fn save(&self, state: &SagaState) -> Result<(), StoreError> {
        self.put(state, None).await
    }

    async fn save_over(&self, state: &SagaState, base: &SagaState) -> Result<(), StoreError> {
        self.put(state, Some(base)).await
    }

    async fn load(&self, id: &str) -> Result<Option<SagaState>, StoreError> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(id.to_owned()))
            .consistent_read(true)
            .send();
        let output = dynamo::within("GetItem", CALL_LIMIT, get)
            .await
            .map_err(|e| store_error(id, e))?;
        output.item.map(|item| decode(id, &item)).transpose()
    }

    async fn list(&self, status: SagaStatus, limit: usize) -> Result<Vec<SagaSummary>, StoreError> {
        let mut found = Vec::new();
        let mut start = None;
        let limit_i32 = i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000);
        loop {
            let page = if status.is_final() {
                self.client
                    .query()
                    .table_name(&self.table)
                    .index_name(FINISHED_INDEX)
                    .key_condition_expression("fin = :s")
                    .expression_attribute_values(
                        ":s",
                        AttributeValue::S(status.as_str().to_owned()),
                    )
                    .limit(limit_i32)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| store_error(status.as_str(), dynamo::classify("Query", e)))
                    .map(|o| (o.items, o.last_evaluated_key))?
            } else {
                // Running sagas are not indexed (an index entry per transition would double
                // the write cost): a filtered scan.
                self.client
                    .scan()
                    .table_name(&self.table)
                    .filter_expression("#s = :s")
                    .expression_attribute_names("#s", "status")
                    .expression_attribute_values(
                        ":s",
                        AttributeValue::S(status.as_str().to_owned()),
                    )
                    .projection_expression("pk, #s, #n, updated, reason")
                    .expression_attribute_names("#n", "name")
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| store_error(status.as_str(), dynamo::classify("Scan", e)))
                    .map(|o| (o.items, o.last_evaluated_key))?
            };
            found.extend(page.0.unwrap_or_default().iter().filter_map(summary));
            // The index gives finished sagas in order, so its first `limit` are the answer;
            // a scan does not, so it reads to the end, keeping the `limit` least recently
            // moved (an operator's query for stuck sagas, not a request path's).
            if !status.is_final() && found.len() > limit {
                found.sort_by(|a, b| a.updated_ms.cmp(&b.updated_ms).then(a.id.cmp(&b.id)));
                found.truncate(limit);
            }
            match page.1 {
                Some(key) if !key.is_empty() && (!status.is_final() || found.len() < limit) => {
                    start = Some(key)
                }
                _ => break,
            }
        }
        found.sort_by(|a, b| a.updated_ms.cmp(&b.updated_ms).then(a.id.cmp(&b.id)));
        found.truncate(limit);
        Ok(found)
    }
}

/// Maps a DynamoDB error on saga (or table) `id`.
fn store_error(id: &str, error: DynamoError) -> StoreError {
    match error {
        DynamoError::ConditionFailed { item, .. } => StoreError::Conflict {
            id: id.to_owned(),
            // An item that does not decode is left to the read that follows.
            current: item.and_then(|item| decode(id, &item).ok()).map(Box::new),
        },
        e if e.is_throttled() => StoreError::Throttled,
        e => {
            let operation = e.operation().unwrap_or("DynamoDB");
            if e.is_retryable() || matches!(e, DynamoError::Timeout { .. }) {
                StoreError::Unavailable {
                    operation,
                    source: Box::new(e),
                }
            } else {
                StoreError::Refused {
                    operation,
                    source: Box::new(e),
                }
            }
        }
    }
}
