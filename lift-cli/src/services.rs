//! The service registry commands:
//!
//! ```text
//! lift services [--table T]                 services, with live and healthy instances
//! lift instances SERVICE [--table T]        a service's instances, with health and leases
//! lift map [--table T] [--svg FILE]         the dependency map as Mermaid (and an SVG file)
//! lift register SERVICE --arn ARN [--hours H] [--table T]
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
    DynamoRegistry, EnvLease, EnvReport, Health, Instance, Registration, Registry, ServiceConfig,
};

use crate::Args;

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

/// Registers the function alias `--arn` as an instance of SERVICE, with a lease of
/// `--hours` held by [`DEPLOY_LEASE`]. A function registers itself on its first
/// invocation; until then no caller can find it, so a deployment that others call by name
/// registers it once deployed. The instance is the one the function's environments
/// register (`function:alias@region`), so their leases join this one.
async fn register(registry: &DynamoRegistry, args: &Args) -> Result<String, String> {
    let service = args.target.clone().ok_or("register needs a SERVICE")?;
    let arn = args.arn.clone().ok_or("register needs --arn")?;
    let hours = args.hours.unwrap_or(168);
    let lease = std::time::Duration::from_secs(hours * 3600);
    let registration = Registration::new(ServiceConfig::new(service.clone()).lease(lease))
        .map_err(|e| e.to_string())?;
    let function = arn.split(':').nth(6).unwrap_or_default().to_owned();
    let instance = registration
        .instance(&FirstInvocation::new(arn.clone(), function, ""))
        .map_err(|e| format!("{arn}: {e}"))?;
    let now = now_ms();
    let expires = now + lease.as_millis() as u64;
    let report = EnvReport::new(expires, now, 0.0, 0);
    let ttl_s = expires / 1000 + 7 * 24 * 3600;
    let stored = registry
        .register(&instance, &EnvLease::new(DEPLOY_LEASE, now, report, ttl_s))
        .await
        .map_err(|e| format!("registering {} failed: {e}", instance.id))?;
    Ok(format!(
        "registered {} as an instance of {service} for {hours} h (revision {})\n",
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

/// Runs registry command `command` (`services`, `instances`, `map`).
pub(crate) async fn run(args: &Args) -> Result<String, String> {
    let table = match args.table.clone() {
        Some(table) => table,
        None => std::env::var("LIFT_REGISTRY_TABLE")
            .map_err(|_| "no table: pass --table or set LIFT_REGISTRY_TABLE".to_owned())?,
    };
    let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
    let registry = DynamoRegistry::new(client, table);
    if args.command == "register" {
        return register(&registry, args).await;
    }
    let all = registry
        .scan()
        .await
        .map_err(|e| format!("reading the registry failed: {e}"))?;
    match args.command.as_str() {
        "services" => Ok(services(&all)),
        "instances" => {
            let service = args.target.clone().ok_or("instances needs a SERVICE")?;
            Ok(instances(&all, &service))
        }
        "map" => {
            let map = Topology::from_instances(&all);
            if let Some(file) = &args.svg {
                std::fs::write(file, map.svg()).map_err(|e| format!("writing {file}: {e}"))?;
            }
            Ok(map.mermaid())
        }
        other => Err(format!("unknown command {other}")),
    }
}
