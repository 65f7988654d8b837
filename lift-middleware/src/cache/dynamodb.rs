//! The DynamoDB store: one item per cached key, in a table with a string partition key
//! `pk` (the namespace and tenant) and a string sort key `sk` (the key), so a prefix of
//! keys is one `Query`.
//!
//! Item attributes: `stored_at` (epoch milliseconds), `expires_at` (epoch seconds, for
//! DynamoDB's TTL), `expires_ms` (epoch milliseconds, checked in code since TTL deletes
//! late), `status`, `headers` (a list of `[name, value]` pairs), `body` (string) or
//! `body_bin` (binary), and `gone` on a tombstone left by an invalidation.
//!
//! Every write is conditional on `stored_at`: the write whose time is later wins. A fill
//! carries the time its computation *started*, so a computation that began before an
//! invalidation cannot put back what the invalidation removed.
//!
//! A prefix invalidation also leaves a marker, an item under the partition key
//! `{pk}\u{0}prefixes` with the prefix as its sort key and its time as `stored_at`,
//! before it tombstones the keys it finds; a fill, after its write, looks for a marker
//! newer than its start that covers its key, and tombstones its own write if there is
//! one. Whichever of the two writes first, the other sees it: a computation of a key the
//! table did not hold when the prefix was invalidated cannot store its answer either.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use futures_util::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use lift_core::Body;

use super::CacheError;
use super::entry::{Entry, millis};
use crate::dynamo::{self, DynamoError};

/// How long a tombstone outlives its invalidation: longer than any invocation (15 min),
/// so no computation that started before it can still be running.
const TOMBSTONE_TTL: Duration = Duration::from_secs(16 * 60);

/// At most this many tombstones are written at once by a prefix invalidation.
const PARALLEL_WRITES: usize = 8;

/// The partition of `scope`'s prefix-invalidation markers.
fn markers(scope: &str) -> String {
    format!("{scope}\u{0}prefixes")
}

/// A tombstone's attributes (or a marker's), left at `now`: it outlives any computation
/// that started before it.
fn tombstone(now: u64) -> HashMap<String, AttributeValue> {
    let expires = now.saturating_add(millis(TOMBSTONE_TTL));
    HashMap::from([
        ("gone".to_owned(), AttributeValue::Bool(true)),
        ("expires_at".to_owned(), n(expires.div_ceil(1000))),
        ("expires_ms".to_owned(), n(expires)),
    ])
}

/// The time limit of each cache read and write: a store slower than this is a miss (or an
/// answer not kept), never a slow request.
const STORE_TIMEOUT: Duration = Duration::from_millis(500);

pub(crate) struct DynamoDbStore {
    client: Client,
    table: String,
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn decode(item: &HashMap<String, AttributeValue>) -> Option<Entry> {
    if item.contains_key("gone") {
        return None;
    }
    let status = u16::try_from(number(item, "status")?).ok()?;
    let mut headers = HeaderMap::new();
    if let Some(AttributeValue::L(pairs)) = item.get("headers") {
        for pair in pairs {
            let Ok([name, value]) = pair.as_l().map(Vec::as_slice) else {
                continue;
            };
            if let (Ok(name), Ok(value)) = (name.as_s(), value.as_s())
                && let (Ok(name), Ok(value)) = (
                    HeaderName::try_from(name.as_str()),
                    HeaderValue::try_from(value.as_str()),
                )
            {
                headers.append(name, value);
            }
        }
    }
    let body = match (item.get("body"), item.get("body_bin")) {
        (Some(AttributeValue::S(text)), _) => Body::Text(text.clone()),
        (_, Some(AttributeValue::B(bytes))) => Body::Binary(bytes.clone().into_inner()),
        _ => Body::Empty,
    };
    Some(Entry {
        status: StatusCode::from_u16(status).ok()?,
        headers,
        body,
        stored_at: number(item, "stored_at")?,
        expires_at: number(item, "expires_ms")?,
    })
}

/// Where the cache's table is: set by `CacheBuilder::dynamodb`.
pub(crate) struct RemoteConfig {
    pub(crate) client: Client,
    pub(crate) table: String,
}

impl RemoteConfig {
    pub(crate) fn table(&self) -> &str {
        &self.table
    }
}

impl DynamoDbStore {
    pub(crate) fn new(config: RemoteConfig) -> DynamoDbStore {
        DynamoDbStore {
            client: config.client,
            table: config.table,
        }
    }

    /// The live entry under `scope`/`key`, if any (tombstones and unreadable items are
    /// misses). Reads are strongly consistent, so an invalidation is seen at once.
    pub(crate) async fn get(&self, scope: &str, key: &str) -> Result<Option<Entry>, CacheError> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(scope))
            .key("sk", s(key))
            .consistent_read(true)
            .send();
        let output = dynamo::within("GetItem", STORE_TIMEOUT, get).await?;
        Ok(output.item().and_then(decode))
    }

    /// Writes `item` for `scope`/`key` unless an item written later is there; whether it
    /// was written. A lost race is not an error: the newer item stands.
    async fn put_newer(
        &self,
        scope: &str,
        key: &str,
        stored_at: u64,
        mut item: HashMap<String, AttributeValue>,
    ) -> Result<bool, CacheError> {
        item.insert("pk".into(), s(scope));
        item.insert("sk".into(), s(key));
        item.insert("stored_at".into(), n(stored_at));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(pk) OR stored_at < :t")
            .expression_attribute_values(":t", n(stored_at))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send();
        match dynamo::within("PutItem", STORE_TIMEOUT, result).await {
            Ok(_) => Ok(true),
            // This write itself, applied by an attempt whose answer was lost and refused
            // when the SDK sent it again: it stands, and is checked as any other.
            Err(DynamoError::ConditionFailed {
                item: Some(stored), ..
            }) if *stored == item => Ok(true),
            Err(DynamoError::ConditionFailed { .. }) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Stores `entry` for `scope`/`key`; whether it stands (`false`: a newer item was
    /// there, or a prefix invalidation newer than the entry covers the key).
    pub(crate) async fn put(
        &self,
        scope: &str,
        key: &str,
        entry: &Entry,
    ) -> Result<bool, CacheError> {
        let mut item = HashMap::new();
        item.insert("expires_at".into(), n(entry.expires_at.div_ceil(1000)));
        item.insert("expires_ms".into(), n(entry.expires_at));
        item.insert("status".into(), n(u64::from(entry.status.as_u16())));
        let headers = entry
            .headers
            .iter()
            .filter_map(|(name, value)| {
                Some(AttributeValue::L(vec![
                    s(name.as_str()),
                    s(value.to_str().ok()?),
                ]))
            })
            .collect();
        item.insert("headers".into(), AttributeValue::L(headers));
        match &entry.body {
            Body::Text(text) => {
                item.insert("body".into(), s(text.as_str()));
            }
            Body::Binary(bytes) => {
                item.insert(
                    "body_bin".into(),
                    AttributeValue::B(Blob::new(bytes.clone())),
                );
            }
            _ => {}
        }
        match self.put_newer(scope, key, entry.stored_at, item).await {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            // No answer, or a server error: the write may stand, unchecked for
            // invalidations; take it back (best effort, the error is what is reported).
            Err(
                error @ CacheError::Store(
                    DynamoError::Timeout { .. }
                    | DynamoError::Transport { .. }
                    | DynamoError::Service { .. },
                ),
            ) => {
                let _ = self.withdraw(scope, key, entry.stored_at).await;
                return Err(error);
            }
            Err(error) => return Err(error),
        }
        match self.invalidated_since(scope, key, entry.stored_at).await {
            Ok(Some(at)) => {
                self.invalidate(scope, key, at).await?;
                Ok(false)
            }
            Ok(None) => Ok(true),
            // Not knowing whether an invalidation covers the key, take the write back
            // rather than leave what may be an invalidated answer to every environment.
            Err(error) => {
                self.withdraw(scope, key, entry.stored_at).await?;
                Err(error)
            }
        }
    }

    /// Deletes the item of `scope`/`key` if it is still the one stored at `stored_at`.
    async fn withdraw(&self, scope: &str, key: &str, stored_at: u64) -> Result<(), CacheError> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(scope))
            .key("sk", s(key))
            // A tombstone of the same millisecond is not this fill's: it stays.
            .condition_expression("stored_at = :t AND attribute_not_exists(gone)")
            .expression_attribute_values(":t", n(stored_at))
            .send();
        match dynamo::within("DeleteItem", STORE_TIMEOUT, delete).await {
            Ok(_) | Err(DynamoError::ConditionFailed { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// The latest prefix invalidation after `since` whose prefix covers `key` (a few
    /// markers at most: they live 16 minutes), each page within the store's time limit.
    async fn invalidated_since(
        &self,
        scope: &str,
        key: &str,
        since: u64,
    ) -> Result<Option<u64>, CacheError> {
        let mut latest = None;
        let mut start = None;
        loop {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .filter_expression("stored_at > :t")
                .expression_attribute_values(":pk", s(markers(scope)))
                .expression_attribute_values(":t", n(since))
                .projection_expression("sk, stored_at")
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send();
            let page = dynamo::within("Query", STORE_TIMEOUT, query).await?;
            for item in page.items() {
                if let (Some(prefix), Some(at)) = (
                    item.get("sk").and_then(|v| v.as_s().ok()),
                    number(item, "stored_at"),
                ) && key.starts_with(prefix.as_str())
                {
                    latest = latest.max(Some(at));
                }
            }
            match page.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok(latest),
            }
        }
    }

    /// Leaves a tombstone for `scope`/`key` at `now`.
    pub(crate) async fn invalidate(
        &self,
        scope: &str,
        key: &str,
        now: u64,
    ) -> Result<(), CacheError> {
        self.put_newer(scope, key, now, tombstone(now)).await?;
        Ok(())
    }

    /// Leaves a tombstone on every key under `scope` that starts with `prefix`; returns
    /// how many keys it found.
    pub(crate) async fn invalidate_prefix(
        &self,
        scope: &str,
        prefix: &str,
        now: u64,
    ) -> Result<usize, CacheError> {
        // The marker first: a fill that writes after the query below sees it.
        self.put_newer(&markers(scope), prefix, now, tombstone(now))
            .await?;
        // Tombstones included: one older than a computation still running would not stop
        // that computation's write.
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(scope))
            .expression_attribute_values(":prefix", s(prefix))
            .projection_expression("sk")
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut keys = Vec::new();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|error| dynamo::classify("Query", error))?;
            if let Some(key) = item.get("sk").and_then(|v| v.as_s().ok()) {
                keys.push(key.clone());
            }
        }
        let found = keys.len();
        futures_util::stream::iter(keys)
            .map(|key| async move { self.invalidate(scope, &key, now).await })
            .buffer_unordered(PARALLEL_WRITES)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(found)
    }
}
