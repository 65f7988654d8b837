//! A DynamoDB table handle that only ever touches one tenant's items.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
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

    /// Writes `item` under logical key `key`. An item that already names a partition key
    /// must name this one.
    ///
    /// # Errors
    /// 403 `cross_tenant` when the item names another key; an internal error when DynamoDB
    /// fails.
    pub async fn put(&self, key: &str, mut item: Item) -> Result<(), Error> {
        let physical = self.physical_key(key);
        if let Some(named) = item.get(&*self.key_attr) {
            match named.as_s() {
                Ok(s) if *s == physical => {}
                _ => return Err(cross_tenant()),
            }
        }
        item.insert(self.key_attr.to_string(), AttributeValue::S(physical));
        self.client
            .put_item()
            .table_name(&*self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(Error::internal)?;
        Ok(())
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
