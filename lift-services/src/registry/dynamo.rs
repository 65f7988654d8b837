//! The registry in a DynamoDB table.
//!
//! # Table
//! String partition key `pk` (`svc#<service>`) and string sort key `sk` (`i#<instance>`):
//! one item per instance, so a service's instances are one `Query`. A TTL attribute `ttl`
//! (Unix seconds) lets DynamoDB garbage-collect abandoned items; liveness is decided in code
//! from the leases, never from TTL.
//!
//! # Item
//! `service`, `instance`, `version`, `alias`, `region`, `arn`, `function_url`, `http_url`,
//! `weight`, `tenant`, `tags` (string set), `metadata` (map), `status` (`up` or
//! `deregistered`), `deregistered_at`, `health_override`, `registered_at`, `heartbeat_at`,
//! `rev` (incremented by every write), `ttl`, and `envs`: one map entry per execution
//! environment, `{exp, at, err, brk}` (lease end, report time, error rate, open breakers).
//!
//! # Writes
//! Every write is one conditional `UpdateItem` (a first registration is a `PutItem` with
//! `attribute_not_exists`): registration may not resurrect a tombstone written after the
//! environment started; a renewal needs the status `up`; a release or deregistration needs
//! the item.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use futures_util::future::BoxFuture;

use lift_middleware::dynamo;

use super::error::{Failure, classify, limited};
use super::{EnvLease, Registry, RegistryError};
use crate::model::{EnvReport, Health, Instance};

type Item = HashMap<String, AttributeValue>;

/// The registry in a DynamoDB table; see the module docs for the table's layout.
#[derive(Debug, Clone)]
pub struct DynamoRegistry {
    client: Client,
    table: String,
}

impl DynamoRegistry {
    /// A registry in `table`, through `client` (built once, at init).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoRegistry {
            client,
            table: table.into(),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the registry table `table` (on demand, keys `pk` and `sk`, TTL on `ttl`)
    /// and waits until it is active, then returns a registry in it. For tests and local
    /// tools: deploy the table with the application's template elsewhere (the workspace's
    /// `template.yaml` has one).
    ///
    /// # Errors
    /// The DynamoDB error of the creation (a table that exists already included), or a
    /// timeout when it is not active within 30 seconds.
    pub async fn create_table(
        client: Client,
        table: impl Into<String>,
    ) -> Result<Self, RegistryError> {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
            TableStatus, TimeToLiveSpecification,
        };
        let table = table.into();
        let codec = |e: aws_sdk_dynamodb::error::BuildError| RegistryError::Codec {
            what: e.to_string(),
        };
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(codec)
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(codec)
        };
        client
            .create_table()
            .table_name(&table)
            .attribute_definitions(attribute("pk")?)
            .attribute_definitions(attribute("sk")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(|e| RegistryError::Dynamo(dynamo::classify("CreateTable", e)))?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let described = client
                .describe_table()
                .table_name(&table)
                .send()
                .await
                .map_err(|e| RegistryError::Dynamo(dynamo::classify("DescribeTable", e)))?;
            let status = described.table().and_then(|t| t.table_status());
            if status == Some(&TableStatus::Active) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RegistryError::Dynamo(dynamo::DynamoError::Timeout {
                    operation: "CreateTable",
                    after: std::time::Duration::from_secs(30),
                }));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        client
            .update_time_to_live()
            .table_name(&table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name("ttl")
                    .enabled(true)
                    .build()
                    .map_err(codec)?,
            )
            .send()
            .await
            .map_err(|e| RegistryError::Dynamo(dynamo::classify("UpdateTimeToLive", e)))?;
        Ok(DynamoRegistry::new(client, table))
    }
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn pk(service: &str) -> AttributeValue {
    s(format!("svc#{service}"))
}

fn sk(id: &str) -> AttributeValue {
    s(format!("i#{id}"))
}

fn lease_value(report: &EnvReport) -> AttributeValue {
    let mut value = HashMap::from([
        ("exp".to_owned(), n(report.expires_at_ms)),
        ("at".to_owned(), n(report.reported_at_ms)),
        ("err".to_owned(), n(report.error_rate)),
        ("brk".to_owned(), n(report.open_breakers)),
    ]);
    if !report.calls.is_empty() {
        value.insert(
            "calls".to_owned(),
            AttributeValue::M(
                report
                    .calls
                    .iter()
                    .map(|(callee, count)| (callee.clone(), n(count)))
                    .collect(),
            ),
        );
    }
    AttributeValue::M(value)
}

/// The optional attributes of an instance, by attribute name.
fn optional_attributes(instance: &Instance) -> Vec<(&'static str, Option<AttributeValue>)> {
    let text = |v: &Option<String>| v.as_ref().map(|v| s(v.clone()));
    vec![
        ("version", text(&instance.version)),
        ("alias", text(&instance.alias)),
        ("arn", text(&instance.endpoints.lambda_arn)),
        ("function_url", text(&instance.endpoints.function_url)),
        ("http_url", text(&instance.endpoints.http_url)),
        ("tenant", text(&instance.tenant)),
        (
            "tags",
            (!instance.tags.is_empty())
                .then(|| AttributeValue::Ss(crate::model::unique_tags(&instance.tags))),
        ),
        (
            "metadata",
            (!instance.metadata.is_empty()).then(|| {
                AttributeValue::M(
                    instance
                        .metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), s(v.clone())))
                        .collect(),
                )
            }),
        ),
    ]
}

fn text(item: &Item, name: &str) -> Option<String> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(ToOwned::to_owned)
}

fn number<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// The item a failed condition returned (with `ALL_OLD`), if there was one.
fn old_item(error: &aws_sdk_dynamodb::operation::update_item::UpdateItemError) -> Option<Item> {
    match error {
        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
            e,
        ) => e.item().cloned(),
        _ => None,
    }
}

fn codec(what: impl Into<String>) -> RegistryError {
    RegistryError::Codec { what: what.into() }
}

/// The end of the lease an environment entry holds.
fn lease_end(value: &AttributeValue) -> Option<u64> {
    match value {
        AttributeValue::M(lease) => number(lease, "exp"),
        _ => None,
    }
}

/// Reads an item back into an [`Instance`].
fn instance_from(item: &Item) -> Result<Instance, RegistryError> {
    let service = text(item, "service").ok_or_else(|| codec("no `service`"))?;
    let id = text(item, "instance").ok_or_else(|| codec("no `instance`"))?;
    let mut environments = std::collections::BTreeMap::new();
    if let Some(AttributeValue::M(envs)) = item.get("envs") {
        for (env, value) in envs {
            // An environment entry without a lease end (written by hand, or by another
            // version) counts as ended, so that the instance's other environments still
            // serve it and the next renewal prunes it; it does not hide the instance.
            let (AttributeValue::M(lease), Some(expires_at_ms)) = (value, lease_end(value)) else {
                tracing::warn!(target: "lift::registry", service = service.as_str(), instance = id.as_str(), env = env.as_str(), "an environment entry without a lease end; counted as ended");
                environments.insert(env.clone(), EnvReport::new(0, 0, 0.0, 0));
                continue;
            };
            let mut report = EnvReport::new(
                expires_at_ms,
                number(lease, "at").unwrap_or(0),
                number(lease, "err").unwrap_or(0.0),
                number(lease, "brk").unwrap_or(0),
            );
            if let Some(AttributeValue::M(calls)) = lease.get("calls") {
                report.calls = calls
                    .iter()
                    .filter_map(|(callee, count)| {
                        Some((callee.clone(), count.as_n().ok()?.parse().ok()?))
                    })
                    .collect();
            }
            environments.insert(env.clone(), report);
        }
    }
    Ok(Instance {
        service: service.into(),
        id: id.into(),
        version: text(item, "version"),
        alias: text(item, "alias"),
        region: text(item, "region").unwrap_or_default(),
        endpoints: crate::model::Endpoints {
            lambda_arn: text(item, "arn"),
            function_url: text(item, "function_url"),
            http_url: text(item, "http_url"),
        },
        weight: number(item, "weight").unwrap_or(100),
        tenant: text(item, "tenant"),
        tags: item
            .get("tags")
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default(),
        metadata: match item.get("metadata") {
            Some(AttributeValue::M(map)) => map
                .iter()
                .filter_map(|(k, v)| v.as_s().ok().map(|v| (k.clone(), v.clone())))
                .collect(),
            _ => Default::default(),
        },
        health_override: text(item, "health_override").map(|h| Health::parse(&h)),
        deregistered: text(item, "status").as_deref() == Some("deregistered"),
        environments,
        revision: number(item, "rev").unwrap_or(0),
    })
}

impl DynamoRegistry {
    /// Raises the item's `ttl` when another lease outlives the one just written: each write
    /// sets `ttl` from the writer's lease, and an environment with a short lease must not
    /// let DynamoDB delete an item another lease still holds (a deployment's month-long
    /// lease beside half-hour ones). Leases of a like length end well within each other's
    /// garbage-collection margin, so a fleet of them never pays this write.
    async fn keep_ttl(&self, stored: &Instance, lease: &EnvLease) -> Result<(), RegistryError> {
        let longest_s = stored
            .environments
            .values()
            .map(|env| env.expires_at_ms / 1000)
            .max()
            .unwrap_or(0);
        if longest_s < lease.ttl_s {
            return Ok(());
        }
        let margin = lease
            .ttl_s
            .saturating_sub(lease.report.expires_at_ms / 1000);
        let needed = longest_s.saturating_add(margin);
        let result = limited(
            "UpdateItem",
            self.client
                .update_item()
                .table_name(&self.table)
                .key("pk", pk(&stored.service))
                .key("sk", sk(&stored.id))
                .update_expression("SET #ttl = :ttl, #rev = #rev + :one")
                .condition_expression("attribute_exists(pk) AND #ttl < :ttl")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_names("#rev", "rev")
                .expression_attribute_values(":ttl", n(needed))
                .expression_attribute_values(":one", n(1))
                .send(),
        )
        .await?;
        match result {
            Ok(_) => Ok(()),
            Err(error) => match classify("UpdateItem", error) {
                // Already as long, or gone: nothing to raise.
                Failure::ConditionFailed => Ok(()),
                Failure::Error(error) => Err(error),
            },
        }
    }

    fn failed(&self, service: &str, id: &str, old: Option<&Item>) -> RegistryError {
        match old {
            Some(old) if !old.is_empty() => RegistryError::Deregistered {
                service: service.to_owned(),
                id: id.to_owned(),
            },
            _ => RegistryError::NotFound {
                service: service.to_owned(),
                id: id.to_owned(),
            },
        }
    }

    /// The update of an existing instance; `None` when the condition failed, with the old
    /// item (absent when there was none).
    async fn update_registration(
        &self,
        instance: &Instance,
        lease: &EnvLease,
    ) -> Result<Result<Instance, Option<Item>>, RegistryError> {
        let mut set = vec![
            "#region = :region",
            "#weight = :weight",
            "#status = :up",
            "#rev = if_not_exists(#rev, :zero) + :one",
            "#ttl = :ttl",
            "#hb = :now",
            "#envs.#env = :lease",
            "#registered = if_not_exists(#registered, :now)",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        let mut remove = vec!["#deregistered_at".to_owned()];
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", pk(&instance.service))
            .key("sk", sk(&instance.id))
            .expression_attribute_names("#region", "region")
            .expression_attribute_names("#weight", "weight")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#rev", "rev")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_names("#hb", "heartbeat_at")
            .expression_attribute_names("#envs", "envs")
            .expression_attribute_names("#env", &lease.env_id)
            .expression_attribute_names("#registered", "registered_at")
            .expression_attribute_names("#deregistered_at", "deregistered_at")
            .expression_attribute_values(":region", s(instance.region.clone()))
            .expression_attribute_values(":weight", n(instance.weight))
            .expression_attribute_values(":up", s("up"))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ttl", n(lease.ttl_s))
            .expression_attribute_values(":now", n(lease.report.reported_at_ms))
            .expression_attribute_values(":lease", lease_value(&lease.report))
            .expression_attribute_values(":started", n(lease.started_at_ms));
        // A tombstone keeps out every environment of the version it was written for.
        let mut other_version = String::new();
        for (i, (name, value)) in optional_attributes(instance).into_iter().enumerate() {
            let placeholder = format!("#o{i}");
            if name == "version" && instance.code_version().is_some() {
                other_version = format!(" AND NOT {placeholder} = :o{i}");
            }
            request = request.expression_attribute_names(&placeholder, name);
            match value {
                Some(value) => {
                    let value_placeholder = format!(":o{i}");
                    set.push(format!("{placeholder} = {value_placeholder}"));
                    request = request.expression_attribute_values(value_placeholder, value);
                }
                None => remove.push(placeholder),
            }
        }
        let result = limited(
            "UpdateItem",
            request
                .update_expression(format!(
                    "SET {} REMOVE {}",
                    set.join(", "),
                    remove.join(", ")
                ))
                .condition_expression(format!(
                    "attribute_exists(pk) AND (#status = :up OR (#deregistered_at < :started{other_version}))"
                ))
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send(),
        )
        .await?;
        match result {
            Ok(output) => {
                Ok(Ok(instance_from(output.attributes().ok_or_else(
                    || codec("UpdateItem returned no attributes"),
                )?)?))
            }
            Err(error) => {
                let old = error.as_service_error().and_then(old_item);
                match classify("UpdateItem", error) {
                    Failure::ConditionFailed => Ok(Err(old)),
                    Failure::Error(error) => Err(error),
                }
            }
        }
    }

    /// The first registration of an instance; `false` when it already exists.
    async fn create(&self, instance: &Instance, lease: &EnvLease) -> Result<bool, RegistryError> {
        let mut item: Item = HashMap::from([
            ("pk".to_owned(), pk(&instance.service)),
            ("sk".to_owned(), sk(&instance.id)),
            ("service".to_owned(), s(instance.service.to_string())),
            ("instance".to_owned(), s(instance.id.to_string())),
            ("region".to_owned(), s(instance.region.clone())),
            ("weight".to_owned(), n(instance.weight)),
            ("status".to_owned(), s("up")),
            ("rev".to_owned(), n(1)),
            ("ttl".to_owned(), n(lease.ttl_s)),
            ("heartbeat_at".to_owned(), n(lease.report.reported_at_ms)),
            ("registered_at".to_owned(), n(lease.report.reported_at_ms)),
            (
                "envs".to_owned(),
                AttributeValue::M(HashMap::from([(
                    lease.env_id.clone(),
                    lease_value(&lease.report),
                )])),
            ),
        ]);
        for (name, value) in optional_attributes(instance) {
            if let Some(value) = value {
                item.insert(name.to_owned(), value);
            }
        }
        let result = limited(
            "PutItem",
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .send(),
        )
        .await?;
        match result {
            Ok(_) => Ok(true),
            Err(error) => match classify("PutItem", error) {
                Failure::ConditionFailed => Ok(false),
                Failure::Error(error) => Err(error),
            },
        }
    }
}

impl Registry for DynamoRegistry {
    fn register<'a>(
        &'a self,
        instance: &'a Instance,
        lease: &'a EnvLease,
    ) -> BoxFuture<'a, Result<Instance, RegistryError>> {
        Box::pin(async move {
            // Update, else create, else (another environment created it meanwhile) update.
            for _ in 0..2 {
                match self.update_registration(instance, lease).await? {
                    Ok(stored) => {
                        self.keep_ttl(&stored, lease).await?;
                        return Ok(stored);
                    }
                    Err(Some(old)) if !old.is_empty() => {
                        return Err(self.failed(&instance.service, &instance.id, Some(&old)));
                    }
                    Err(_) => {}
                }
                if self.create(instance, lease).await? {
                    let mut stored = instance.clone();
                    stored.deregistered = false;
                    stored.environments = [(lease.env_id.clone(), lease.report.clone())].into();
                    stored.revision = 1;
                    return Ok(stored);
                }
            }
            Err(RegistryError::Deregistered {
                service: instance.service.to_string(),
                id: instance.id.to_string(),
            })
        })
    }

    fn renew<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
        lease: &'a EnvLease,
        prune: &'a [String],
    ) -> BoxFuture<'a, Result<Instance, RegistryError>> {
        Box::pin(async move {
            let mut request = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", pk(service))
                .key("sk", sk(id))
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#rev", "rev")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_names("#hb", "heartbeat_at")
                .expression_attribute_names("#envs", "envs")
                .expression_attribute_names("#env", &lease.env_id)
                .expression_attribute_values(":up", s("up"))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":ttl", n(lease.ttl_s))
                .expression_attribute_values(":now", n(lease.report.reported_at_ms))
                .expression_attribute_values(":lease", lease_value(&lease.report));
            let mut remove = Vec::new();
            // An environment is pruned only if its lease has ended by this renewal's time:
            // one that renewed since the renewer last looked keeps its lease.
            let mut condition = "#status = :up".to_owned();
            for (i, env) in prune
                .iter()
                .filter(|e| **e != lease.env_id)
                .take(16)
                .enumerate()
            {
                request = request.expression_attribute_names(format!("#p{i}"), env);
                remove.push(format!("#envs.#p{i}"));
                // A lease without an end (written by hand or another version) has ended.
                condition.push_str(&format!(
                    " AND (attribute_not_exists(#envs.#p{i}.#exp) OR #envs.#p{i}.#exp <= :now)"
                ));
            }
            if !remove.is_empty() {
                request = request.expression_attribute_names("#exp", "exp");
            }
            let mut expression =
                "SET #envs.#env = :lease, #hb = :now, #ttl = :ttl, #rev = #rev + :one".to_owned();
            if !remove.is_empty() {
                expression.push_str(" REMOVE ");
                expression.push_str(&remove.join(", "));
            }
            let result = limited(
                "UpdateItem",
                request
                    .update_expression(expression)
                    .condition_expression(condition)
                    .return_values(ReturnValue::AllNew)
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .send(),
            )
            .await?;
            match result {
                Ok(output) => {
                    let stored = instance_from(
                        output
                            .attributes()
                            .ok_or_else(|| codec("UpdateItem returned no attributes"))?,
                    )?;
                    self.keep_ttl(&stored, lease).await?;
                    Ok(stored)
                }
                Err(error) => {
                    let old = error.as_service_error().and_then(old_item);
                    match classify("UpdateItem", error) {
                        // Still up: an environment to prune renewed meanwhile. Renew alone.
                        Failure::ConditionFailed
                            if !remove.is_empty()
                                && old.as_ref().is_some_and(|item| {
                                    item.get("status").and_then(|v| v.as_s().ok())
                                        == Some(&"up".to_owned())
                                }) =>
                        {
                            self.renew(service, id, lease, &[]).await
                        }
                        Failure::ConditionFailed => Err(self.failed(service, id, old.as_ref())),
                        Failure::Error(error) => Err(error),
                    }
                }
            }
        })
    }

    fn release<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
        env_id: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let result = limited(
                "UpdateItem",
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .key("pk", pk(service))
                    .key("sk", sk(id))
                    .update_expression("REMOVE #envs.#env SET #rev = #rev + :one")
                    .condition_expression("attribute_exists(#envs)")
                    .expression_attribute_names("#envs", "envs")
                    .expression_attribute_names("#env", env_id)
                    .expression_attribute_names("#rev", "rev")
                    .expression_attribute_values(":one", n(1))
                    .send(),
            )
            .await?;
            match result {
                Ok(_) => Ok(()),
                Err(error) => match classify("UpdateItem", error) {
                    Failure::ConditionFailed => Err(self.failed(service, id, None)),
                    Failure::Error(error) => Err(error),
                },
            }
        })
    }

    fn deregister<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
        at_ms: u64,
        ttl_s: u64,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let result = limited("UpdateItem", self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", pk(service))
                .key("sk", sk(id))
                .update_expression(
                    "SET #status = :down, #at = :at, #envs = :empty, #ttl = :ttl, #rev = #rev + :one",
                )
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#at", "deregistered_at")
                .expression_attribute_names("#envs", "envs")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_names("#rev", "rev")
                .expression_attribute_values(":down", s("deregistered"))
                .expression_attribute_values(":at", n(at_ms))
                .expression_attribute_values(":empty", AttributeValue::M(HashMap::new()))
                .expression_attribute_values(":ttl", n(ttl_s))
                .expression_attribute_values(":one", n(1))
                .send()).await?;
            match result {
                Ok(_) => Ok(()),
                Err(error) => match classify("UpdateItem", error) {
                    Failure::ConditionFailed => Err(self.failed(service, id, None)),
                    Failure::Error(error) => Err(error),
                },
            }
        })
    }

    fn set_health<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
        health: Option<Health>,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let request = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", pk(service))
                .key("sk", sk(id))
                .condition_expression("#status = :up")
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#health", "health_override")
                .expression_attribute_names("#rev", "rev")
                .expression_attribute_values(":up", s("up"))
                .expression_attribute_values(":one", n(1))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            let request = match health {
                Some(health) => request
                    .update_expression("SET #health = :health, #rev = #rev + :one")
                    .expression_attribute_values(":health", s(health.as_str())),
                None => request.update_expression("REMOVE #health SET #rev = #rev + :one"),
            };
            match limited("UpdateItem", request.send()).await? {
                Ok(_) => Ok(()),
                Err(error) => {
                    let old = error.as_service_error().and_then(old_item);
                    match classify("UpdateItem", error) {
                        Failure::ConditionFailed => Err(self.failed(service, id, old.as_ref())),
                        Failure::Error(error) => Err(error),
                    }
                }
            }
        })
    }

    fn scan(&self) -> BoxFuture<'_, Result<Vec<Instance>, RegistryError>> {
        Box::pin(all_pages("Scan", move |start| async move {
            let output = limited(
                "Scan",
                self.client
                    .scan()
                    .table_name(&self.table)
                    .set_exclusive_start_key(start)
                    .send(),
            )
            .await?;
            Ok(output.map(|o| (o.items, o.last_evaluated_key)))
        }))
    }

    fn instances<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Instance>, RegistryError>> {
        Box::pin(all_pages("Query", move |start| async move {
            let output = limited(
                "Query",
                self.client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", pk(service))
                    .set_exclusive_start_key(start)
                    .send(),
            )
            .await?;
            Ok(output.map(|o| (o.items, o.last_evaluated_key)))
        }))
    }
}

/// The instances on every page of a `Scan` or `Query`: `page` sends one request from the
/// given start key and answers its items and last evaluated key.
async fn all_pages<E, R, F, Fut>(
    operation: &'static str,
    mut page: F,
) -> Result<Vec<Instance>, RegistryError>
where
    F: FnMut(Option<Item>) -> Fut,
    Fut: std::future::Future<
            Output = Result<
                Result<(Option<Vec<Item>>, Option<Item>), SdkError<E, R>>,
                RegistryError,
            >,
        >,
    aws_sdk_dynamodb::Error: From<E>,
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let mut instances = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let (items, last) = match page(start.take()).await? {
            Ok(output) => output,
            Err(error) => {
                return Err(match classify(operation, error) {
                    Failure::Error(error) => error,
                    Failure::ConditionFailed => codec("a read cannot fail a condition"),
                });
            }
        };
        for item in items.unwrap_or_default() {
            // One item that does not decode (written by hand, or by another version) is
            // left out, not the service's whole discovery.
            match instance_from(&item) {
                Ok(instance) => instances.push(instance),
                Err(error) => {
                    let key = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
                    tracing::warn!(target: "lift::registry", pk = ?key("pk"), sk = ?key("sk"), %error, "a registry item does not decode; left out");
                }
            }
        }
        match last {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(instances),
        }
    }
}
