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
/// Room a saga's item keeps free while the saga runs, below DynamoDB's item limit: the
/// write that ends it for attention when an input would make it too large adds the reason
/// (a sentence naming the size) three times over (the `reason` attribute, the history and
/// the `Finished` event) and the saga's ids once, and must always fit.
pub(crate) const PARK_ROOM: usize = 8 * 1024;
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

/// What a saga item says of its saga, its outbox aside: the text of its `state`, `h`,
/// `status`, `name`, `reason` and `updated` attributes. A transition applied to a
/// handed-back snapshot is written only over an item that says the same
/// ([`SagaStore::save_over`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Content<'a> {
    /// `state`: the state as JSON, without what the other attributes hold.
    body: String,
    /// `h`: the history, one line per entry (the attribute is absent when empty).
    history: String,
    status: &'static str,
    name: &'a str,
    reason: Option<&'a str>,
    updated_ms: u64,
}

/// The JSON of `state` that `state` stores: the state without its history and outbox
/// (stored compact), nor what the item's own attributes hold (the id, version, status,
/// name, reason and time of the last move), nor a correlation id that is the saga's id.
/// Its keys are sorted, as they have been since the first stored sagas.
#[derive(serde::Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    created_ms: u64,
    /// A `Value`, for its sorted keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<serde_json::Value>,
    data: &'a serde_json::Value,
    definition_version: u32,
    /// A `Value`, for its sorted keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    halted: Option<serde_json::Value>,
    outputs: &'a std::collections::BTreeMap<String, serde_json::Value>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    step_names: &'a [String],
    steps: &'a [crate::saga::StepStatus],
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wake_ms: Option<u64>,
}

impl<'a> Content<'a> {
    /// What the item of `state` says of it.
    pub(crate) fn of(state: &'a SagaState) -> Result<Self, StoreError> {
        // Every field named, so that a field added to the state is stored or left out here
        // on purpose: the item's `pk` and `v`, and the outbox, have attributes of their own.
        let SagaState {
            id,
            name,
            definition_version,
            status,
            reason,
            cursor,
            halted,
            steps,
            step_names,
            data,
            outputs,
            correlation_id,
            tenant,
            version: _,
            wake_ms,
            created_ms,
            updated_ms,
            history,
            outbox: _,
        } = state;
        let codec = |e: serde_json::Error| StoreError::Codec {
            id: id.clone(),
            reason: e.to_string(),
        };
        let body = Body {
            correlation_id: Some(correlation_id.as_str()).filter(|c| c != id),
            created_ms: *created_ms,
            cursor: cursor
                .as_ref()
                .map(serde_json::to_value)
                .transpose()
                .map_err(codec)?,
            data,
            definition_version: *definition_version,
            halted: halted
                .as_ref()
                .map(serde_json::to_value)
                .transpose()
                .map_err(codec)?,
            outputs,
            step_names,
            steps,
            tenant: tenant.as_deref(),
            wake_ms: *wake_ms,
        };
        Ok(Content {
            body: serde_json::to_string(&body).map_err(codec)?,
            history: compact::history_lines(*created_ms, history),
            status: status.as_str(),
            name,
            reason: reason.as_deref(),
            updated_ms: *updated_ms,
        })
    }
}

/// Whether the items of `a` and `b` say the same of their sagas (see [`Content`]). States
/// equal field by field (their outboxes aside, and numbers to the bit: `0.0` and `-0.0`
/// are equal numbers written differently) are, without encoding either.
pub(crate) fn same_content(a: &SagaState, b: &SagaState) -> Result<bool, StoreError> {
    let SagaState {
        id,
        name,
        definition_version,
        status,
        reason,
        cursor,
        halted,
        steps,
        step_names,
        data,
        outputs,
        correlation_id,
        tenant,
        version,
        wake_ms,
        created_ms,
        updated_ms,
        history,
        outbox: _,
    } = a;
    let equal = *id == b.id
        && *name == b.name
        && *definition_version == b.definition_version
        && *status == b.status
        && *reason == b.reason
        && *cursor == b.cursor
        && *halted == b.halted
        && *steps == b.steps
        && *step_names == b.step_names
        && identical(data, &b.data)
        && outputs.len() == b.outputs.len()
        && outputs
            .iter()
            .zip(&b.outputs)
            .all(|((ka, va), (kb, vb))| ka == kb && identical(va, vb))
        && *correlation_id == b.correlation_id
        && *tenant == b.tenant
        && *version == b.version
        && *wake_ms == b.wake_ms
        && *created_ms == b.created_ms
        && *updated_ms == b.updated_ms
        && *history == b.history;
    Ok(equal || Content::of(a)? == Content::of(b)?)
}

/// Whether `a` and `b` are the same JSON, numbers compared as written: `Value`'s own
/// equality holds `0.0` and `-0.0` equal.
fn identical(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.is_f64() && y.is_f64(), x.as_f64()) {
            (true, Some(fx)) => y.as_f64().is_some_and(|fy| fx.to_bits() == fy.to_bits()),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| identical(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && identical(vx, vy))
        }
        _ => a == b,
    }
}

/// The item of `state`.
pub(crate) fn encode(state: &SagaState) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let Content {
        body,
        history,
        status,
        name,
        reason,
        updated_ms,
    } = Content::of(state)?;
    let outbox =
        serde_json::to_string(&compact::strip(state.outbox())).map_err(|e| StoreError::Codec {
            id: state.id().to_owned(),
            reason: e.to_string(),
        })?;
    let mut item = HashMap::from([
        ("pk".to_owned(), AttributeValue::S(state.id().to_owned())),
        (
            "v".to_owned(),
            AttributeValue::N(state.version().to_string()),
        ),
        ("status".to_owned(), AttributeValue::S(status.to_owned())),
        ("name".to_owned(), AttributeValue::S(name.to_owned())),
        (
            "updated".to_owned(),
            AttributeValue::N(updated_ms.to_string()),
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
    if let Some(reason) = reason {
        item.insert("reason".to_owned(), AttributeValue::S(reason.to_owned()));
    }
    if state.status().is_final() {
        item.insert("fin".to_owned(), AttributeValue::S(status.to_owned()));
    }
    // Counted as DynamoDB counts it, names and all: a write it would refuse for its size is
    // a validation error, which the orchestrator could not tell from any other, where
    // `TooLarge` ends the saga for attention.
    let bytes = dynamo::item_size(&item);
    let limit = size_limit(state.status());
    if bytes > limit {
        return Err(StoreError::TooLarge {
            id: state.id().to_owned(),
            bytes,
            limit,
        });
    }
    Ok(item)
}

/// The largest item a saga in `status` may have: DynamoDB's limit once it has ended, and
/// [`PARK_ROOM`] below it while it runs.
pub(crate) fn size_limit(status: SagaStatus) -> usize {
    if status.is_final() {
        dynamo::MAX_ITEM_BYTES
    } else {
        dynamo::MAX_ITEM_BYTES - PARK_ROOM
    }
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

/// `put` on the version before (`:expected`), and only over an item that says what
/// `content` says: each attribute compared with its text, so the item stores nothing more
/// for the check (and write units are billed by the item's size, not the request's).
fn same_content_condition(
    put: aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder,
    content: &Content<'_>,
) -> aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder {
    let mut condition = String::from(
        "v = :expected AND #state = :state AND #status = :status AND #name = :name \
         AND #updated = :updated",
    );
    let mut put = put
        .expression_attribute_names("#state", "state")
        .expression_attribute_names("#status", "status")
        .expression_attribute_names("#name", "name")
        .expression_attribute_names("#updated", "updated")
        .expression_attribute_names("#reason", "reason")
        .expression_attribute_values(":state", AttributeValue::S(content.body.clone()))
        .expression_attribute_values(":status", AttributeValue::S(content.status.to_owned()))
        .expression_attribute_values(":name", AttributeValue::S(content.name.to_owned()))
        .expression_attribute_values(
            ":updated",
            AttributeValue::N(content.updated_ms.to_string()),
        );
    if content.history.is_empty() {
        condition.push_str(" AND attribute_not_exists(h)");
    } else {
        condition.push_str(" AND h = :h");
        put = put.expression_attribute_values(":h", AttributeValue::S(content.history.clone()));
    }
    match content.reason {
        Some(reason) => {
            condition.push_str(" AND #reason = :reason");
            put = put.expression_attribute_values(":reason", AttributeValue::S(reason.to_owned()));
        }
        None => condition.push_str(" AND attribute_not_exists(#reason)"),
    }
    put.condition_expression(condition)
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
                Some(base) => same_content_condition(put, &Content::of(base)?),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::{Saga, StartMeta, Step, remote, start};
    use serde_json::json;

    /// The `state` text of the first stored sagas: the whole state as a JSON value, less
    /// what the other attributes hold.
    fn first_body(state: &SagaState) -> String {
        let mut body = serde_json::to_value(state).unwrap();
        let map = body.as_object_mut().unwrap();
        for key in [
            "outbox",
            "history",
            "id",
            "version",
            "status",
            "name",
            "reason",
            "updated_ms",
        ] {
            map.remove(key);
        }
        if state.correlation_id() == state.id() {
            map.remove("correlation_id");
        }
        serde_json::to_string(&body).unwrap()
    }

    fn states() -> Vec<SagaState> {
        let saga = Saga::named("trip", 1)
            .step(Step::new("a", remote("p", "A"), Some(remote("p", "UndoA"))))
            .step(Step::new("b", remote("p", "B"), None))
            .build()
            .unwrap();
        let data = json!({"z": 1, "zero": 0.0, "a": [1.5, {"y": null, "b": "x"}]});
        let started = start(&saga, "s-1", data.clone(), StartMeta::default(), 7).into_state();
        let mut all = vec![started.clone()];
        let mut other = start(
            &saga,
            "s-2",
            data,
            StartMeta {
                correlation_id: "c-9".to_owned(),
                tenant: Some("t-1".to_owned()),
            },
            7,
        )
        .into_state();
        other.reason = Some("refused \"b\"".to_owned());
        other.wake_ms = Some(99);
        other.cursor = None;
        other
            .outputs
            .insert("a".to_owned(), json!({"ref": "r-1", "n": 2}));
        all.push(other);
        all
    }

    /// An item's `state` reads as the first stored sagas' did, so a write over a saga
    /// stored by an earlier release compares equal text.
    #[test]
    fn the_state_text_is_the_first_releases() {
        for state in states() {
            assert!(state.cursor.is_some() || state.tenant.is_some());
            assert_eq!(Content::of(&state).unwrap().body, first_body(&state));
        }
    }

    /// `same_content` answers as comparing the items' text does: an outbox or a version
    /// apart is the same content, any stored part apart is not, a number written
    /// differently included (`-0.0` for `0.0`, `1.0` for `1`).
    #[test]
    fn same_content_is_the_items_text_compared() {
        for state in states() {
            let alterations: [fn(&mut SagaState); 12] = [
                |s| s.outbox.clear(),
                |s| s.version += 1,
                |s| s.data = json!({"z": 2}),
                |s| s.steps[0] = crate::saga::StepStatus::Done,
                |s| s.history.clear(),
                |s| s.updated_ms += 1,
                |s| s.tenant = Some("t-other".to_owned()),
                |s| s.reason = None,
                |s| s.correlation_id.push('x'),
                |s| s.data["a"][0] = json!(-1.5),
                |s| s.data["zero"] = json!(-0.0),
                |s| s.data["z"] = json!(1.0),
            ];
            for (i, alter) in alterations.iter().enumerate() {
                let mut altered = state.clone();
                alter(&mut altered);
                let text = Content::of(&state).unwrap() == Content::of(&altered).unwrap();
                assert_eq!(same_content(&state, &altered).unwrap(), text, "{i}");
                assert_eq!(text, i < 2 || (i == 7 && state.reason.is_none()), "{i}");
            }
        }
    }
}
