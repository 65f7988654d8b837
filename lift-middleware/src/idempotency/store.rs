//! Idempotency records in DynamoDB, in Powertools for AWS Lambda's item layout.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use lift_core::{Body, Response};

use crate::dynamo::{self, DynamoError};
use serde::{Deserialize, Serialize};

const IN_PROGRESS: &str = "INPROGRESS";
const COMPLETED: &str = "COMPLETED";
/// The attribute naming which call holds an in-progress record. Powertools ignores it.
const CLAIM: &str = "lift_claim";
/// Only the call that holds the in-progress record may complete or release it.
const HELD: &str = "#status = :in_progress AND lift_claim = :claim";

/// A stored idempotency record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The idempotency key (`id`).
    pub id: String,
    /// Whether the handler finished (`COMPLETED`) or is running (`INPROGRESS`).
    pub completed: bool,
    /// When the record stops counting, in epoch seconds (`expiration`).
    pub expiration: u64,
    /// When an in-progress lock lapses, in epoch milliseconds (`in_progress_expiration`).
    pub in_progress_expiration: Option<u64>,
    /// The stored response (`data`), as JSON.
    pub data: Option<String>,
    /// The payload hash (`validation`).
    pub validation: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredResponse {
    #[serde(rename = "statusCode")]
    status: u16,
    headers: HashMap<String, String>,
    /// Every value of a header sent more than once (`Set-Cookie`, `Link`), in API
    /// Gateway's shape; `headers` holds the last.
    #[serde(
        rename = "multiValueHeaders",
        default,
        skip_serializing_if = "HashMap::is_empty"
    )]
    multi: HashMap<String, Vec<String>>,
    body: String,
    #[serde(rename = "isBase64Encoded")]
    base64: bool,
    /// The body was too large to keep: the record holds the status and headers only.
    #[serde(
        rename = "bodyNotKept",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    body_not_kept: bool,
}

/// The most a record's `data` may hold: DynamoDB items end at 400 KB, and the record's
/// other attributes need room.
const MAX_DATA_BYTES: usize = 350 * 1024;

/// The header a replayed answer whose body was too large to keep carries.
pub(crate) const BODY_NOT_KEPT_HEADER: &str = "x-lift-idempotency";

impl Record {
    /// Whether the record no longer counts at `now` (since the epoch).
    pub fn expired(&self, now: Duration) -> bool {
        now.as_secs() >= self.expiration
    }

    pub(crate) fn completed(
        id: &str,
        response: &Response,
        validation: &str,
        now: Duration,
        ttl: Duration,
    ) -> Result<Record, serde_json::Error> {
        let (body, base64) = super::body_text(response.body());
        let headers = response.headers();
        let mut stored = StoredResponse {
            status: response.status().as_u16(),
            headers: headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
            multi: headers
                .keys()
                .filter(|name| headers.get_all(*name).iter().count() > 1)
                .map(|name| {
                    let values = headers
                        .get_all(name)
                        .iter()
                        .filter_map(|v| v.to_str().ok().map(str::to_owned))
                        .collect();
                    (name.as_str().to_owned(), values)
                })
                .collect(),
            body,
            base64,
            body_not_kept: false,
        };
        let mut data = serde_json::to_string(&stored)?;
        if data.len() > MAX_DATA_BYTES {
            // Kept without its body rather than not at all: a repeat must not run the call
            // again, and an item over DynamoDB's limit could never be written.
            tracing::warn!(target: "lift::idempotency", key = %id, bytes = data.len(), "the answer is too large to keep: its status and headers are, a repeat gets them without the body");
            stored.body.clear();
            stored.base64 = false;
            stored.body_not_kept = true;
            data = serde_json::to_string(&stored)?;
        }
        Ok(Record {
            id: id.to_owned(),
            completed: true,
            expiration: (now + ttl).as_secs(),
            in_progress_expiration: None,
            data: Some(data),
            validation: Some(validation.to_owned()),
        })
    }

    /// The stored response.
    ///
    /// # Errors
    /// When the record holds no response or one that does not decode.
    pub fn response(&self) -> Result<Response, String> {
        use base64::Engine;
        let data = self.data.as_deref().ok_or("the record holds no response")?;
        let stored: StoredResponse = serde_json::from_str(data).map_err(|e| e.to_string())?;
        let body = if stored.base64 {
            Body::Binary(
                base64::engine::general_purpose::STANDARD
                    .decode(&stored.body)
                    .map_err(|e| e.to_string())?,
            )
        } else if stored.body.is_empty() {
            Body::Empty
        } else {
            Body::Text(stored.body)
        };
        let mut response = Response::new(body);
        *response.status_mut() =
            http::StatusCode::from_u16(stored.status).map_err(|e| e.to_string())?;
        for (name, value) in stored.headers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::try_from(name),
                http::HeaderValue::try_from(value),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
        for (name, values) in stored.multi {
            let Ok(name) = http::HeaderName::try_from(name) else {
                continue;
            };
            response.headers_mut().remove(&name);
            for value in values {
                if let Ok(value) = http::HeaderValue::try_from(value) {
                    response.headers_mut().append(name.clone(), value);
                }
            }
        }
        if stored.body_not_kept {
            response.headers_mut().remove(http::header::CONTENT_LENGTH);
            response.headers_mut().insert(
                http::HeaderName::from_static(BODY_NOT_KEPT_HEADER),
                http::HeaderValue::from_static("body-too-large-to-keep"),
            );
        }
        Ok(response)
    }

    fn from_item(item: &HashMap<String, AttributeValue>) -> Option<Record> {
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let number = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<u64>().ok())
        };
        Some(Record {
            id: text("id")?,
            completed: text("status").as_deref() == Some(COMPLETED),
            expiration: number("expiration").unwrap_or(0),
            in_progress_expiration: number("in_progress_expiration"),
            data: text("data"),
            validation: text("validation"),
        })
    }

    fn to_item(&self) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::from([
            ("id".to_owned(), AttributeValue::S(self.id.clone())),
            (
                "status".to_owned(),
                AttributeValue::S(
                    if self.completed {
                        COMPLETED
                    } else {
                        IN_PROGRESS
                    }
                    .to_owned(),
                ),
            ),
            (
                "expiration".to_owned(),
                AttributeValue::N(self.expiration.to_string()),
            ),
        ]);
        if let Some(ms) = self.in_progress_expiration {
            item.insert(
                "in_progress_expiration".to_owned(),
                AttributeValue::N(ms.to_string()),
            );
        }
        if let Some(data) = &self.data {
            item.insert("data".to_owned(), AttributeValue::S(data.clone()));
        }
        if let Some(validation) = &self.validation {
            item.insert(
                "validation".to_owned(),
                AttributeValue::S(validation.clone()),
            );
        }
        item
    }
}

/// Identifies one call's claim on a key, so that a call whose lock lapsed cannot
/// overwrite or delete the record of the call that claimed the key after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimToken(String);

impl ClaimToken {
    /// A token no other claim has.
    pub(crate) fn fresh() -> Self {
        ClaimToken(dynamo::write_token())
    }
}

/// The outcome of trying to claim a key.
pub(crate) enum Claim {
    /// This call owns the key: run the handler, then complete or release with its token.
    Won,
    /// Another call finished with this key: here is its record.
    Completed(Record),
    /// Another call holds the key and has not finished.
    InProgress,
}

pub(crate) struct Store {
    client: Client,
    table: String,
}

impl Store {
    pub(crate) fn new(client: Client, table: &str) -> Self {
        Store {
            client,
            table: table.to_owned(),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Record>, DynamoError> {
        Ok(self
            .get_item(key)
            .await?
            .as_ref()
            .and_then(Record::from_item))
    }

    async fn get_item(
        &self,
        key: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, DynamoError> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send();
        let output = dynamo::send("GetItem", get).await?;
        Ok(output.item)
    }

    /// One conditional put claims the key unless a live record holds it; when one does,
    /// the failed condition returns it, so finding out how costs no read.
    pub(crate) async fn claim(
        &self,
        key: &str,
        validation: &str,
        now: Duration,
        ttl: Duration,
        lock_for: Duration,
        token: &ClaimToken,
    ) -> Result<Claim, DynamoError> {
        let record = Record {
            id: key.to_owned(),
            completed: false,
            // Not before the lock ends: the condition below frees any record whose
            // `expiration` passed, and an expiry shorter than the handler's run would hand
            // the key to a duplicate while this call still runs.
            expiration: (now + ttl)
                .as_secs()
                .max((now + lock_for).as_millis().div_ceil(1000) as u64),
            in_progress_expiration: Some((now + lock_for).as_millis() as u64),
            data: None,
            validation: Some(validation.to_owned()),
        };
        let mut item = record.to_item();
        item.insert(CLAIM.to_owned(), AttributeValue::S(token.0.clone()));
        for _ in 0..3 {
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .condition_expression(
                    "attribute_not_exists(id) OR expiration < :now OR (#status = :in_progress AND in_progress_expiration < :now_ms)",
                )
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":now", AttributeValue::N(now.as_secs().to_string()))
                .expression_attribute_values(
                    ":now_ms",
                    AttributeValue::N((now.as_millis() as u64).to_string()),
                )
                .expression_attribute_values(":in_progress", AttributeValue::S(IN_PROGRESS.to_owned()))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send();
            let holder = match dynamo::send("PutItem", put).await {
                Ok(_) => return Ok(Claim::Won),
                Err(DynamoError::ConditionFailed {
                    item: Some(item), ..
                }) => Some(*item),
                // A store that does not return the item: read it.
                Err(DynamoError::ConditionFailed { item: None, .. }) => self.get_item(key).await?,
                Err(other) => return Err(other),
            };
            // This call's own put, applied under an answer that was lost and then sent
            // again by the SDK: the key is this call's.
            if dynamo::holds_token(holder.as_ref(), CLAIM, &token.0) {
                return Ok(Claim::Won);
            }
            let holder = holder.as_ref().and_then(Record::from_item);
            // Someone holds the key: see how (checked in code, whatever TTL did).
            match holder {
                Some(existing) if existing.completed && !existing.expired(now) => {
                    return Ok(Claim::Completed(existing));
                }
                Some(existing)
                    if !existing.completed
                        && existing
                            .in_progress_expiration
                            .is_some_and(|ms| ms > now.as_millis() as u64) =>
                {
                    return Ok(Claim::InProgress);
                }
                // Gone or lapsed since the put: try again.
                _ => {}
            }
        }
        Ok(Claim::InProgress)
    }

    /// Stores the completed record in place of this call's claim. `Ok(false)`: the claim
    /// is no longer this call's (its lock lapsed and another call claimed the key), so the
    /// record was left alone.
    pub(crate) async fn complete(
        &self,
        record: &Record,
        claim: &ClaimToken,
    ) -> Result<bool, DynamoError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(record.to_item()))
            .condition_expression(HELD)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":in_progress", AttributeValue::S(IN_PROGRESS.to_owned()))
            .expression_attribute_values(":claim", AttributeValue::S(claim.0.clone()))
            .send();
        match dynamo::send("PutItem", put).await {
            Ok(_) => Ok(true),
            Err(DynamoError::ConditionFailed { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Deletes this call's in-progress record (its handler failed); a record another call
    /// holds by now is left alone.
    pub(crate) async fn release(&self, key: &str, claim: &ClaimToken) -> Result<(), DynamoError> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(key.to_owned()))
            .condition_expression(HELD)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":in_progress", AttributeValue::S(IN_PROGRESS.to_owned()))
            .expression_attribute_values(":claim", AttributeValue::S(claim.0.clone()))
            .send();
        match dynamo::send("DeleteItem", delete).await {
            Ok(_) | Err(DynamoError::ConditionFailed { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Polls a key in progress for up to `max`; the completed record, or `None`.
    pub(crate) async fn wait_for(
        &self,
        key: &str,
        max: Duration,
    ) -> Result<Option<Record>, DynamoError> {
        let deadline = tokio::time::Instant::now() + max;
        let mut pause = Duration::from_millis(20);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())).await;
            match self.get(key).await? {
                Some(record) if record.completed => return Ok(Some(record)),
                Some(_) => {}
                None => return Ok(None),
            }
            pause = (pause * 2).min(Duration::from_millis(200));
        }
        Ok(None)
    }
}
