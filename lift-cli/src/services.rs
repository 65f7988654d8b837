//! The service registry commands:
//!
//! ```text
//! lift services [--table T]                 services, with live and healthy instances
//! lift instances SERVICE [--table T]        a service's instances, with health and leases
//! lift map [--table T] [--svg FILE]         the dependency map as Mermaid (and an SVG file)
//! lift register SERVICE --arn ARN [--hours H] [--tenant T] [--table T]
//!                                           registers a deployed function's alias ahead of
//!                                           its first invocation, for H hours (default 168)
//! ```
//!
//! The table defaults to `LIFT_REGISTRY_TABLE`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use lift_core::lifecycle::FirstInvocation;
use lift_services::topology::Topology;
use lift_services::{
    DynamoRegistry, EnvLease, EnvReport, Health, Instance, Registration, Registry, RegistryError,
    ServiceConfig,
};

use crate::{Args, CliError};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn health(instance: &Instance, now: u64) -> &'static str {
    if instance.deregistered {
        "deregistered"
    } else if !instance.is_live(now) {
        "expired"
    } else {
        match instance.health(now) {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            _ => "unhealthy",
        }
    }
}

/// The environment id of a lease written by `lift register`: each run renews the same one.
pub(crate) const DEPLOY_LEASE: &str = "deploy";

/// The longest `--hours`: the longest lease the registry takes (365 days).
const MAX_HOURS: u64 = lift_services::MAX_LEASE.as_secs() / 3600;

/// Registers the function alias `--arn` as an instance of SERVICE, with a lease of
/// `--hours` held by [`DEPLOY_LEASE`]. A function registers itself on its first
/// invocation; until then no caller can find it, so a deployment that others call by name
/// registers it once deployed. The instance is the one the function's environments
/// register (`function:alias@region`), so their leases join this one.
///
/// An instance already in the registry keeps what its environments wrote (tenant, weight,
/// URLs, tags): only the deploy lease is written. A new one gets `--tenant` when given, so
/// that a tenant's dedicated function is not shared with every tenant until its first
/// invocation writes its own configuration.
async fn register(registry: &DynamoRegistry, args: &Args) -> Result<String, CliError> {
    let usage = |message: &str| CliError::Usage(message.to_owned());
    let service = args
        .target
        .clone()
        .ok_or_else(|| usage("register needs a SERVICE"))?;
    let arn = args
        .arn
        .clone()
        .ok_or_else(|| usage("register needs --arn"))?;
    // `arn:aws:lambda:region:account:function:name:alias`: the alias (or version) callers
    // reach, never `$LATEST` by omission.
    let parts: Vec<&str> = arn.split(':').collect();
    if parts.len() != 8 || parts[5] != "function" || parts[7].is_empty() {
        return Err(usage(
            "--arn is a qualified function ARN: arn:aws:lambda:REGION:ACCOUNT:function:NAME:ALIAS",
        ));
    }
    let hours = args.hours.unwrap_or(168);
    if hours == 0 || hours > MAX_HOURS {
        return Err(usage(&format!("--hours is 1 to {MAX_HOURS} (365 days)")));
    }
    let lease = std::time::Duration::from_secs(hours * 3600);
    let mut config = ServiceConfig::new(service.clone()).lease(lease);
    if let Some(tenant) = &args.tenant {
        config = config.tenant(tenant.clone());
    }
    let registration = Registration::new(config).map_err(|e| usage(&e.to_string()))?;
    let instance = registration
        .instance(&FirstInvocation::new(arn.clone(), parts[6].to_owned(), ""))
        .map_err(|e| usage(&format!("{arn}: {e}")))?;
    let now = now_ms();
    let expires = now + lease.as_millis() as u64;
    let report = EnvReport::new(expires, now, 0.0, 0);
    let ttl_s = expires / 1000 + 7 * 24 * 3600;
    let lease = EnvLease::new(DEPLOY_LEASE, now, report, ttl_s);
    let failed =
        |e: RegistryError| CliError::Failed(format!("registering {} failed: {e}", instance.id));
    let (stored, how) = match registry.renew(&service, &instance.id, &lease, &[]).await {
        Ok(stored) => (stored, "renewed the deploy lease of"),
        Err(RegistryError::NotFound { .. } | RegistryError::Deregistered { .. }) => (
            registry.register(&instance, &lease).await.map_err(failed)?,
            "registered",
        ),
        Err(error) => return Err(failed(error)),
    };
    let tenant = stored.tenant.as_deref().map_or_else(
        || "shared by every tenant".to_owned(),
        |t| format!("tenant {t}"),
    );
    Ok(format!(
        "{how} {} as an instance of {service} for {hours} h, {tenant} (revision {})\n",
        stored.id, stored.revision
    ))
}

fn services(instances: &[Instance]) -> String {
    let now = now_ms();
    let mut by_service: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for instance in instances.iter().filter(|i| !i.deregistered) {
        let row = by_service.entry(&instance.service).or_default();
        row.0 += 1;
        if instance.is_live(now) {
            row.1 += 1;
            if instance.health(now) != Health::Unhealthy {
                row.2 += 1;
            }
        }
    }
    let mut out = format!(
        "{:<32} {:>9} {:>6} {:>8}\n",
        "SERVICE", "INSTANCES", "LIVE", "HEALTHY"
    );
    for (service, (all, live, healthy)) in by_service {
        out.push_str(&format!("{service:<32} {all:>9} {live:>6} {healthy:>8}\n"));
    }
    out
}

fn instances(instances: &[Instance], service: &str) -> String {
    let now = now_ms();
    let mut out = format!(
        "{:<40} {:<8} {:<10} {:<12} {:<13} {:>6} {:>4}  {}\n",
        "INSTANCE", "VERSION", "ALIAS", "REGION", "HEALTH", "WEIGHT", "ENVS", "ENDPOINT"
    );
    for i in instances.iter().filter(|i| i.service.as_ref() == service) {
        let endpoint = i
            .endpoints
            .lambda_arn
            .as_deref()
            .or(i.endpoints.function_url.as_deref())
            .or(i.endpoints.http_url.as_deref())
            .unwrap_or("-");
        out.push_str(&format!(
            "{:<40} {:<8} {:<10} {:<12} {:<13} {:>6} {:>4}  {}\n",
            i.id,
            i.version.as_deref().unwrap_or("-"),
            i.alias.as_deref().unwrap_or("-"),
            i.region,
            health(i, now),
            i.weight,
            i.environments
                .values()
                .filter(|e| e.expires_at_ms > now)
                .count(),
            endpoint
        ));
    }
    out
}

/// Runs registry command `command` (`services`, `instances`, `map`, `register`).
pub(crate) async fn run(args: &Args) -> Result<String, CliError> {
    let failed = CliError::Failed;
    let table = match args.table.clone() {
        Some(table) => table,
        None => std::env::var("LIFT_REGISTRY_TABLE").map_err(|_| {
            CliError::Usage("no table: pass --table or set LIFT_REGISTRY_TABLE".to_owned())
        })?,
    };
    if args.command == "instances" && args.target.is_none() {
        return Err(CliError::Usage("instances needs a SERVICE".to_owned()));
    }
    let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
    let registry = DynamoRegistry::new(client, table);
    if args.command == "register" {
        return register(&registry, args).await;
    }
    let all = registry
        .scan()
        .await
        .map_err(|e| failed(format!("reading the registry failed: {e}")))?;
    match (args.command.as_str(), args.target.as_deref()) {
        ("services", _) => Ok(services(&all)),
        ("instances", Some(service)) => {
            if all.iter().any(|i| i.service.as_ref() == service) {
                Ok(instances(&all, service))
            } else {
                Err(failed(format!("no instances of {service} in the registry")))
            }
        }
        ("map", _) => {
            let map = Topology::from_instances(&all);
            if let Some(file) = &args.svg {
                std::fs::write(file, map.svg())
                    .map_err(|e| failed(format!("writing {file}: {e}")))?;
            }
            Ok(map.mermaid())
        }
        (other, _) => Err(CliError::Usage(format!("unknown command {other}"))),
    }
}
