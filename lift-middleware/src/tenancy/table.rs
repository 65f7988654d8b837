//! A DynamoDB table handle that only ever touches one tenant's items.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeyType, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
};
use base64::Engine;
use lift_core::http::StatusCode;
use lift_core::{Context, Error};
use tokio::sync::OnceCell;

use super::is_valid_tenant;
use crate::dynamo::{self, DynamoError};

pub use crate::dynamo::Item;

/// A table whose partition key (`key_attr`, a string) holds `{tenant}#{key}`, shared by
/// every tenant: build it once at init, then take one tenant's view of it per request
/// ([`TenantTables::for_context`]).
///
/// Before its first read or write it checks, once, that `key_attr` is the table's
/// partition key of type string (`DescribeTable`): were it any other attribute, an item
/// could carry the real key of another tenant's item and overwrite it. A table whose key
/// is not `key_attr` is refused with a configuration error on every call.
///
/// ```no_run
/// use lift_middleware::tenancy::TenantTables;
///
/// # async fn example() -> lift_core::Result<()> {
/// let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
/// let orders = TenantTables::new(&client, "orders", "pk"); // once, at init
/// # let ctx: lift_core::Context = todo!();
/// let order = orders.for_context(&ctx)?.get("order-1").await?; // per request
/// # let _ = order;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TenantTables {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    client: Client,
    table: Box<str>,
    key_attr: Box<str>,
    /// The outcome of the key-schema check: `Err` names what is wrong. A check that could
    /// not reach DynamoDB is not remembered and runs again on the next call.
    checked: OnceCell<Result<(), String>>,
}

impl TenantTables {
    /// The table `table`, whose partition key is the string attribute `key_attr`.
    pub fn new(client: &Client, table: &str, key_attr: &str) -> Self {
        TenantTables {
            shared: Arc::new(Shared {
                client: client.clone(),
                table: Box::from(table),
                key_attr: Box::from(key_attr),
                checked: OnceCell::new(),
            }),
        }
    }

    /// The table seen by `tenant`.
    ///
    /// # Errors
    /// 400 `bad_request` for a malformed tenant id.
    pub fn for_tenant(&self, tenant: &str) -> Result<TenantTable, Error> {
        if !is_valid_tenant(tenant) {
            return Err(Error::bad_request("the tenant id is malformed"));
        }
        Ok(TenantTable {
            shared: self.shared.clone(),
            prefix: Arc::from(format!("{tenant}#")),
        })
    }

    /// The table seen by the request's tenant.
    ///
    /// # Errors
    /// 403 `tenant_required` when no tenant was resolved.
    pub fn for_context(&self, ctx: &Context) -> Result<TenantTable, Error> {
        let tenant = ctx.tenant().ok_or_else(|| {
            Error::forbidden("tenant_required", "tenant-scoped data needs a tenant")
        })?;
        self.for_tenant(tenant)
    }
}

/// One tenant's view of a [`TenantTables`]: every read and write is prefixed with the
/// tenant, and any key outside it is refused (403 `cross_tenant`), never served.
///
/// Store failures are internal errors whose source is the [`DynamoError`] (so
/// `retry::dynamodb::DynamoDbPolicy` recognises throttling in them); failed conditions are
/// the 409s each method names.
#[derive(Debug, Clone)]
pub struct TenantTable {
    shared: Arc<Shared>,
    prefix: Arc<str>,
}

/// One page of a [`TenantTable::query_page`]: its items and, when there are more, the
/// cursor of the next page.
#[derive(Debug, Clone)]
pub struct Page {
    /// The page's items.
    pub items: Vec<Item>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// Where a query's next page starts: opaque text, safe to hand to a client and take back
/// (a cursor naming another tenant's key is refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(String);

impl Cursor {
    /// The cursor as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A cursor a client sent back.
    pub fn from_text(text: &str) -> Cursor {
        Cursor(text.to_owned())
    }

    /// The last evaluated key, each attribute with its type (`S`, `N` as its exact text,
    /// `B` in base64), so that binary keys and numbers past a float's precision come back
    /// as they were.
    fn encode(key: Item) -> Result<Cursor, Error> {
        let mut typed = serde_json::Map::new();
        for (name, value) in key {
            let (kind, text) = match value {
                AttributeValue::S(text) => ("S", text),
                AttributeValue::N(number) => ("N", number),
                AttributeValue::B(bytes) => (
                    "B",
                    base64::engine::general_purpose::STANDARD.encode(bytes.as_ref()),
                ),
                _ => return Err(Error::internal("a key attribute that is not S, N or B")),
            };
            typed.insert(name, serde_json::json!({ kind: text }));
        }
        let json = serde_json::to_vec(&typed).map_err(Error::internal)?;
        Ok(Cursor(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json),
        ))
    }

    fn decode(&self) -> Result<Item, Error> {
        let malformed = || Error::bad_request("the page cursor is malformed");
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&self.0)
            .map_err(|_| malformed())?;
        let typed: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&json).map_err(|_| malformed())?;
        let mut key = Item::new();
        for (name, value) in typed {
            let object = value
                .as_object()
                .filter(|o| o.len() == 1)
                .ok_or_else(malformed)?;
            let attribute = match object.iter().next() {
                Some((kind, serde_json::Value::String(text))) => match kind.as_str() {
                    "S" => AttributeValue::S(text.clone()),
                    "N" => AttributeValue::N(text.clone()),
                    "B" => AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(
                        base64::engine::general_purpose::STANDARD
                            .decode(text)
                            .map_err(|_| malformed())?,
                    )),
                    _ => return Err(malformed()),
                },
                _ => return Err(malformed()),
            };
            key.insert(name, attribute);
        }
        if key.is_empty() {
            return Err(malformed());
        }
        Ok(key)
    }
}

/// A store error of a table call: an internal error carrying the [`DynamoError`].
fn store(error: DynamoError) -> Error {
    Error::internal(error)
}

/// The attribute in which [`TenantTable::insert`] and [`TenantTable::replace_versioned`]
/// store a random token of the write. A put that DynamoDB applied but whose answer was
/// lost is sent again by the SDK and fails its own condition; finding its own token in
/// the stored item, it is the call's success. Reads leave the attribute out.
pub const WRITE_TOKEN_ATTR: &str = "_lift_write";

/// Sends `put` with `item` and a fresh write token: `refused` when its condition failed
/// on an item this put did not write. When an earlier attempt ended without an answer
/// and the retry then failed on another writer's item, the write may have been applied
/// and replaced since: neither a success nor a conflict to retry as is.
async fn put_once(
    put: aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder,
    mut item: Item,
    refused: impl FnOnce() -> Error,
) -> Result<(), Error> {
    let token = dynamo::write_token();
    item.insert(
        WRITE_TOKEN_ATTR.to_owned(),
        AttributeValue::S(token.clone()),
    );
    let attempts = Attempts::default();
    let put = put
        .set_item(Some(item))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .customize()
        .interceptor(attempts.clone())
        .send();
    match dynamo::send("PutItem", put).await {
        Ok(_) => Ok(()),
        Err(DynamoError::ConditionFailed { item, .. }) => {
            if dynamo::holds_token(item.as_deref(), WRITE_TOKEN_ATTR, &token) {
                Ok(())
            } else if attempts.an_earlier_one_was_unanswered() {
                // A 409, as a conflict is: a retry layer re-running the handler on a 5xx
                // would apply the change again.
                Err(Error::new(
                    StatusCode::CONFLICT,
                    "write_outcome_unknown",
                    "the write may have been applied and then replaced by another writer; \
                     read the item before writing again",
                ))
            } else {
                Err(refused())
            }
        }
        Err(other) => Err(store(other)),
    }
}

/// Watches the attempts of one call: whether an attempt other than the last ended without
/// a definite answer, so that what it carried may have been applied. An answer is a
/// decoded output, or an operation error (a failed condition, throttling) under 500; a
/// server error, a timeout, a lost connection or a body that could not be read are not.
#[derive(Debug, Clone, Default)]
struct Attempts(Arc<AttemptsSeen>);

#[derive(Debug, Default)]
struct AttemptsSeen {
    /// The latest attempt ended without a definite answer.
    last_unanswered: AtomicBool,
    /// An attempt that did was followed by another.
    earlier_unanswered: AtomicBool,
}

impl Attempts {
    fn an_earlier_one_was_unanswered(&self) -> bool {
        self.0.earlier_unanswered.load(Ordering::SeqCst)
    }
}

impl aws_sdk_dynamodb::config::Intercept for Attempts {
    fn name(&self) -> &'static str {
        "LiftTenantTableAttempts"
    }

    fn read_after_attempt(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::FinalizerInterceptorContextRef<'_>,
        _: &aws_sdk_dynamodb::config::RuntimeComponents,
        _: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let answered = match context.output_or_error() {
            Some(Ok(_)) => true,
            Some(Err(error)) => {
                error.is_operation_error()
                    && context
                        .response()
                        .is_some_and(|response| !response.status().is_server_error())
            }
            None => false,
        };
        let unanswered = !answered;
        if self.0.last_unanswered.swap(unanswered, Ordering::SeqCst) {
            self.0.earlier_unanswered.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// An item as read: without the write token.
fn read(mut item: Item) -> Item {
    item.remove(WRITE_TOKEN_ATTR);
    item
}

fn cross_tenant() -> Error {
    Error::forbidden("cross_tenant", "that item belongs to another tenant")
}

impl TenantTable {
    /// The table seen by `tenant`, through a handle of its own: its key schema is checked
    /// on its first call. Where a handle is made per request, build a [`TenantTables`] once
    /// instead, so that the check runs once.
    ///
    /// # Errors
    /// 400 `bad_request` for a malformed tenant id.
    pub fn new(client: &Client, table: &str, key_attr: &str, tenant: &str) -> Result<Self, Error> {
        TenantTables::new(client, table, key_attr).for_tenant(tenant)
    }

    fn client(&self) -> &Client {
        &self.shared.client
    }

    fn table(&self) -> &str {
        &self.shared.table
    }

    fn key_attr(&self) -> &str {
        &self.shared.key_attr
    }

    /// Checks once that `key_attr` is the table's partition key, of type string.
    async fn ready(&self) -> Result<(), Error> {
        let shared = &self.shared;
        let outcome = shared
            .checked
            .get_or_try_init(|| async {
                let describe = shared
                    .client
                    .describe_table()
                    .table_name(&*shared.table)
                    .send();
                let output = dynamo::send("DescribeTable", describe).await?;
                let table = output.table();
                let hash = table
                    .map(|t| t.key_schema())
                    .unwrap_or_default()
                    .iter()
                    .find(|key| key.key_type() == &KeyType::Hash)
                    .map(|key| key.attribute_name().to_owned());
                let hash_type = table
                    .map(|t| t.attribute_definitions())
                    .unwrap_or_default()
                    .iter()
                    .find(|a| Some(a.attribute_name()) == hash.as_deref())
                    .map(|a| a.attribute_type().clone());
                Ok::<_, DynamoError>(match (hash, hash_type) {
                    (Some(hash), Some(ScalarAttributeType::S)) if *hash == *shared.key_attr => {
                        Ok(())
                    }
                    (Some(hash), _) if *hash != *shared.key_attr => Err(format!(
                        "the partition key of table `{}` is `{hash}`, not `{}`",
                        shared.table, shared.key_attr
                    )),
                    _ => Err(format!(
                        "the partition key `{}` of table `{}` must be a string",
                        shared.key_attr, shared.table
                    )),
                })
            })
            .await
            .map_err(store)?;
        match outcome {
            Ok(()) => Ok(()),
            Err(reason) => {
                tracing::error!(target: "lift::tenancy", table = %shared.table, %reason, "tenant table refused");
                Err(Error::Config(reason.clone()))
            }
        }
    }

    /// The stored partition key of the logical `key`.
    pub fn physical_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The logical key of a stored partition key of this tenant's.
    pub fn logical_key<'a>(&self, physical: &'a str) -> Option<&'a str> {
        physical.strip_prefix(&*self.prefix)
    }

    fn checked(&self, physical: &str) -> Result<(), Error> {
        if physical.starts_with(&*self.prefix) {
            Ok(())
        } else {
            tracing::warn!(target: "lift::tenancy", prefix = %self.prefix, "cross-tenant access refused");
            Err(cross_tenant())
        }
    }

    /// Reads the item with logical key `key`.
    ///
    /// # Errors
    /// An internal error when DynamoDB fails or the table's key is not `key_attr`.
    pub async fn get(&self, key: &str) -> Result<Option<Item>, Error> {
        self.get_physical(&self.physical_key(key)).await
    }

    /// Reads an item by its stored partition key, which must be this tenant's.
    ///
    /// # Errors
    /// 403 `cross_tenant` for another tenant's key; an internal error when DynamoDB fails.
    pub async fn get_physical(&self, physical: &str) -> Result<Option<Item>, Error> {
        self.checked(physical)?;
        self.ready().await?;
        let get = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(self.key_attr(), AttributeValue::S(physical.to_owned()))
            .consistent_read(true)
            .send();
        let output = dynamo::send("GetItem", get).await.map_err(store)?;
        Ok(output.item.map(read))
    }

    /// Writes `item` under logical key `key`, replacing whatever was there: the last
    /// writer wins. Where writers can race, use [`TenantTable::insert`] or
    /// [`TenantTable::replace_versioned`]. An item that already names a partition key must
    /// name this one.
    ///
    /// # Errors
    /// 403 `cross_tenant` when the item names another key; an internal error when DynamoDB
    /// fails.
    pub async fn put(&self, key: &str, item: Item) -> Result<(), Error> {
        let item = self.keyed(key, item)?;
        self.ready().await?;
        let put = self
            .client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(item))
            .send();
        dynamo::send("PutItem", put).await.map_err(store)?;
        Ok(())
    }

    /// Writes `item` under logical key `key` only if no item has that key yet (one
    /// conditional put). The item carries a token of this write ([`WRITE_TOKEN_ATTR`]), so
    /// that a put the table applied but whose answer was lost, which the SDK sends again,
    /// is this call's success and not a conflict with itself.
    ///
    /// # Errors
    /// 409 `item_exists` when one does; 403 `cross_tenant` when the item names another key;
    /// 409 `write_outcome_unknown` when an attempt went unanswered and the SDK's retry then
    /// found another writer's item (this write may have been applied and replaced: read the
    /// item before writing again); an internal error when DynamoDB fails.
    pub async fn insert(&self, key: &str, item: Item) -> Result<(), Error> {
        let item = self.keyed(key, item)?;
        self.ready().await?;
        let put = self
            .client()
            .put_item()
            .table_name(self.table())
            .condition_expression("attribute_not_exists(#key)")
            .expression_attribute_names("#key", self.key_attr());
        put_once(put, item, || {
            Error::new(
                StatusCode::CONFLICT,
                "item_exists",
                "an item with this key already exists",
            )
        })
        .await
    }

    /// Optimistic concurrency: writes `item` under logical key `key` only if the stored
    /// item's number attribute `version_attr` is still `expected` (`None`: only if there is
    /// no item yet), and stores it with version `expected + 1` (1 for a new item), which it
    /// returns. Of two writers that read the same version, exactly one wins; a write whose
    /// answer was lost is recognised by its token, as for [`TenantTable::insert`].
    ///
    /// # Errors
    /// 409 `version_conflict` when the stored version moved on (read again and retry);
    /// 403 `cross_tenant` when the item names another key; 409 `write_outcome_unknown` as
    /// for [`TenantTable::insert`] (read the item to see whether it holds this change); an
    /// internal error when DynamoDB fails.
    pub async fn replace_versioned(
        &self,
        key: &str,
        item: Item,
        version_attr: &str,
        expected: Option<u64>,
    ) -> Result<u64, Error> {
        let mut item = self.keyed(key, item)?;
        self.ready().await?;
        let next = expected.map_or(1, |v| v.saturating_add(1));
        item.insert(version_attr.to_owned(), AttributeValue::N(next.to_string()));
        let put = self.client().put_item().table_name(self.table());
        let put = match expected {
            None => put
                .condition_expression("attribute_not_exists(#key)")
                .expression_attribute_names("#key", self.key_attr()),
            Some(version) => put
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", version_attr)
                .expression_attribute_values(":expected", AttributeValue::N(version.to_string())),
        };
        put_once(put, item, || {
            Error::new(
                StatusCode::CONFLICT,
                "version_conflict",
                "the item changed since it was read; read it again and retry",
            )
        })
        .await?;
        Ok(next)
    }

    /// `item` with this tenant's partition key; refused when it names another.
    fn keyed(&self, key: &str, mut item: Item) -> Result<Item, Error> {
        let physical = self.physical_key(key);
        if let Some(named) = item.get(self.key_attr()) {
            match named.as_s() {
                Ok(s) if *s == physical => {}
                _ => return Err(cross_tenant()),
            }
        }
        item.insert(self.key_attr().to_owned(), AttributeValue::S(physical));
        Ok(item)
    }

    /// Deletes the item with logical key `key`.
    ///
    /// # Errors
    /// An internal error when DynamoDB fails.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        self.ready().await?;
        let delete = self
            .client()
            .delete_item()
            .table_name(self.table())
            .key(self.key_attr(), AttributeValue::S(self.physical_key(key)))
            .send();
        dynamo::send("DeleteItem", delete).await.map_err(store)?;
        Ok(())
    }

    /// Every item of the partition with logical key `key` (tables with a sort key), in
    /// sort-key order, reading page after page until the last.
    ///
    /// # Errors
    /// An internal error when DynamoDB fails.
    pub async fn query(&self, key: &str) -> Result<Vec<Item>, Error> {
        let mut items = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.query_page(key, cursor.as_ref(), None).await?;
            items.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(items),
            }
        }
    }

    /// One page of the partition with logical key `key`: at most `limit` items (or
    /// DynamoDB's 1 MB page), from `cursor` (`None`: the first page).
    ///
    /// # Errors
    /// 400 `bad_request` for a malformed cursor; 403 `cross_tenant` for a cursor of
    /// another tenant's or another partition's; an internal error when DynamoDB fails.
    pub async fn query_page(
        &self,
        key: &str,
        cursor: Option<&Cursor>,
        limit: Option<u32>,
    ) -> Result<Page, Error> {
        let physical = self.physical_key(key);
        let start = match cursor {
            Some(cursor) => {
                let start = cursor.decode()?;
                match start.get(self.key_attr()).and_then(|v| v.as_s().ok()) {
                    Some(named) if *named == physical => Some(start),
                    _ => return Err(cross_tenant()),
                }
            }
            None => None,
        };
        self.ready().await?;
        let query = self
            .client()
            .query()
            .table_name(self.table())
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", self.key_attr())
            .expression_attribute_values(":pk", AttributeValue::S(physical))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .set_limit(limit.map(|n| n.clamp(1, i32::MAX as u32) as i32))
            .send();
        let output = dynamo::send("Query", query).await.map_err(store)?;
        let next = match output.last_evaluated_key {
            Some(last) if !last.is_empty() => Some(Cursor::encode(last)?),
            _ => None,
        };
        Ok(Page {
            items: output
                .items
                .unwrap_or_default()
                .into_iter()
                .map(read)
                .collect(),
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page cursor gives back the key it was made of: a binary sort key, and a number
    /// past a float's precision, exactly; anything else a client sends is malformed.
    #[test]
    fn a_cursor_keeps_binary_keys_and_exact_numbers() {
        let key = Item::from([
            ("pk".to_owned(), AttributeValue::S("t#acme".to_owned())),
            (
                "sk".to_owned(),
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![0, 159, 255])),
            ),
            (
                "n".to_owned(),
                AttributeValue::N("12345678901234567.5".to_owned()),
            ),
        ]);
        let cursor = Cursor::encode(key.clone()).expect("encoded");
        assert_eq!(
            Cursor::from_text(cursor.as_str())
                .decode()
                .expect("decoded"),
            key
        );
        for text in ["", "not base64!", "e30", "eyJwayI6MX0"] {
            assert!(Cursor::from_text(text).decode().is_err(), "{text}");
        }
    }
}
