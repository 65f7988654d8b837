//! A DynamoDB table handle that only ever touches one tenant's items.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use lift_core::http::StatusCode;
use lift_core::{Context, Error};

use super::is_valid_tenant;

/// An item, as the DynamoDB SDK represents it.
pub type Item = HashMap<String, AttributeValue>;

/// One tenant's view of a table whose partition key (`key_attr`, a string) holds
/// `{tenant}#{key}`: every read and write is prefixed with the tenant, and any key outside
/// it is refused (403 `cross_tenant`), never served.
///
/// ```no_run
/// # async fn example(ctx: lift_core::Context) -> lift_core::Result<()> {
/// let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
/// let orders = lift_middleware::tenancy::TenantTable::for_context(&client, "orders", "pk", &ctx)?;
/// let order = orders.get("order-1").await?;
/// # let _ = order;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TenantTable {
    client: Client,
    table: Arc<str>,
    key_attr: Arc<str>,
    prefix: Arc<str>,
}

/// A conditional write's outcome: a failed condition is `refused()`, any other failure an
/// internal error.
fn conditional<E>(
    result: Result<(), aws_sdk_dynamodb::error::SdkError<PutItemError, E>>,
    refused: impl FnOnce() -> Error,
) -> Result<(), Error>
where
    E: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(()) => Ok(()),
        Err(error) => match error.into_service_error() {
            PutItemError::ConditionalCheckFailedException(_) => Err(refused()),
            other => Err(Error::internal(other)),
        },
    }
}

fn cross_tenant() -> Error {
    Error::forbidden("cross_tenant", "that item belongs to another tenant")
}

impl TenantTable {
    /// The table seen by `tenant`.
    ///
    /// # Errors
    /// 400 `invalid_tenant` for a malformed tenant id.
    pub fn new(client: &Client, table: &str, key_attr: &str, tenant: &str) -> Result<Self, Error> {
        if !is_valid_tenant(tenant) {
            return Err(Error::bad_request("the tenant id is malformed"));
        }
        Ok(TenantTable {
            client: client.clone(),
            table: Arc::from(table),
            key_attr: Arc::from(key_attr),
            prefix: Arc::from(format!("{tenant}#")),
        })
    }

    /// The table seen by the request's tenant.
    ///
    /// # Errors
    /// 403 `tenant_required` when no tenant was resolved.
    pub fn for_context(
        client: &Client,
        table: &str,
        key_attr: &str,
        ctx: &Context,
    ) -> Result<Self, Error> {
        let tenant = ctx.tenant().ok_or_else(|| {
            Error::forbidden("tenant_required", "tenant-scoped data needs a tenant")
        })?;
        Self::new(client, table, key_attr, tenant)
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
    /// An internal error when DynamoDB fails.
    pub async fn get(&self, key: &str) -> Result<Option<Item>, Error> {
        self.get_physical(&self.physical_key(key)).await
    }

    /// Reads an item by its stored partition key, which must be this tenant's.
    ///
    /// # Errors
    /// 403 `cross_tenant` for another tenant's key; an internal error when DynamoDB fails.
    pub async fn get_physical(&self, physical: &str) -> Result<Option<Item>, Error> {
        self.checked(physical)?;
        let output = self
            .client
            .get_item()
            .table_name(&*self.table)
            .key(&*self.key_attr, AttributeValue::S(physical.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(Error::internal)?;
        Ok(output.item)
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
        self.client
            .put_item()
            .table_name(&*self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(Error::internal)?;
        Ok(())
    }

    /// Writes `item` under logical key `key` only if no item has that key yet (one
    /// conditional put).
    ///
    /// # Errors
    /// 409 `item_exists` when one does; 403 `cross_tenant` when the item names another key;
    /// an internal error when DynamoDB fails.
    pub async fn insert(&self, key: &str, item: Item) -> Result<(), Error> {
        let item = self.keyed(key, item)?;
        let result = self
            .client
            .put_item()
            .table_name(&*self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#key)")
            .expression_attribute_names("#key", &*self.key_attr)
            .send()
            .await;
        conditional(result.map(drop), || {
            Error::new(
                StatusCode::CONFLICT,
                "item_exists",
                "an item with this key already exists",
            )
        })
    }

    /// Optimistic concurrency: writes `item` under logical key `key` only if the stored
    /// item's number attribute `version_attr` is still `expected` (`None`: only if there is
    /// no item yet), and stores it with version `expected + 1` (1 for a new item), which it
    /// returns. Of two writers that read the same version, exactly one wins.
    ///
    /// # Errors
    /// 409 `version_conflict` when the stored version moved on (read again and retry);
    /// 403 `cross_tenant` when the item names another key; an internal error when DynamoDB
    /// fails.
    pub async fn replace_versioned(
        &self,
        key: &str,
        item: Item,
        version_attr: &str,
        expected: Option<u64>,
    ) -> Result<u64, Error> {
        let mut item = self.keyed(key, item)?;
        let next = expected.map_or(1, |v| v.saturating_add(1));
        item.insert(version_attr.to_owned(), AttributeValue::N(next.to_string()));
        let put = self
            .client
            .put_item()
            .table_name(&*self.table)
            .set_item(Some(item));
        let put = match expected {
            None => put
                .condition_expression("attribute_not_exists(#key)")
                .expression_attribute_names("#key", &*self.key_attr),
            Some(version) => put
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", version_attr)
                .expression_attribute_values(":expected", AttributeValue::N(version.to_string())),
        };
        conditional(put.send().await.map(drop), || {
            Error::new(
                StatusCode::CONFLICT,
                "version_conflict",
                "the item changed since it was read; read it again and retry",
            )
        })?;
        Ok(next)
    }

    /// `item` with this tenant's partition key; refused when it names another.
    fn keyed(&self, key: &str, mut item: Item) -> Result<Item, Error> {
        let physical = self.physical_key(key);
        if let Some(named) = item.get(&*self.key_attr) {
            match named.as_s() {
                Ok(s) if *s == physical => {}
                _ => return Err(cross_tenant()),
            }
        }
        item.insert(self.key_attr.to_string(), AttributeValue::S(physical));
        Ok(item)
    }

    /// Deletes the item with logical key `key`.
    ///
    /// # Errors
    /// An internal error when DynamoDB fails.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        self.client
            .delete_item()
            .table_name(&*self.table)
            .key(&*self.key_attr, AttributeValue::S(self.physical_key(key)))
            .send()
            .await
            .map_err(Error::internal)?;
        Ok(())
    }

    /// Every item of the partition with logical key `key` (tables with a sort key).
    ///
    /// # Errors
    /// An internal error when DynamoDB fails.
    pub async fn query(&self, key: &str) -> Result<Vec<Item>, Error> {
        let output = self
            .client
            .query()
            .table_name(&*self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", &*self.key_attr)
            .expression_attribute_values(":pk", AttributeValue::S(self.physical_key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(Error::internal)?;
        Ok(output.items.unwrap_or_default())
    }
}
