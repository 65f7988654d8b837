//! The registry's model: a service instance is one reachable endpoint of a service.

use std::collections::BTreeMap;
use std::sync::Arc;

/// How an instance is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Endpoints {
    /// A qualified Lambda function ARN (alias or version), invoked directly.
    pub lambda_arn: Option<String>,
    /// A Lambda Function URL.
    pub function_url: Option<String>,
    /// Any other HTTP base URL (an API, a container service, a partner API).
    pub http_url: Option<String>,
}

impl Endpoints {
    /// A qualified Lambda ARN.
    pub fn lambda(arn: impl Into<String>) -> Self {
        Endpoints {
            lambda_arn: Some(arn.into()),
            ..Endpoints::default()
        }
    }

    /// An HTTP base URL.
    pub fn http(url: impl Into<String>) -> Self {
        Endpoints {
            http_url: Some(url.into()),
            ..Endpoints::default()
        }
    }

    /// Adds a Function URL.
    pub fn with_function_url(mut self, url: impl Into<String>) -> Self {
        self.function_url = Some(url.into());
        self
    }

    /// Whether no endpoint is set.
    pub fn is_empty(&self) -> bool {
        self.lambda_arn.is_none() && self.function_url.is_none() && self.http_url.is_none()
    }
}

/// An instance's health as discovery sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Health {
    /// Serving normally.
    Healthy,
    /// Serving, but its environments see failures downstream (open breakers, a raised error
    /// rate): kept in discovery, picked with half its weight.
    Degraded,
    /// Failing, or taken out by an operator: left out of healthy-only discovery.
    Unhealthy,
}

impl Health {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
        }
    }

    /// The health a stored name stands for (unknown names read as unhealthy).
    pub fn parse(name: &str) -> Health {
        match name {
            "healthy" => Health::Healthy,
            "degraded" => Health::Degraded,
            _ => Health::Unhealthy,
        }
    }
}

/// What one execution environment last reported: its lease and what it sees.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EnvReport {
    /// When its lease ends (Unix milliseconds).
    pub expires_at_ms: u64,
    /// When it reported (Unix milliseconds).
    pub reported_at_ms: u64,
    /// Its share of failed invocations since its previous report, 0.0 to 1.0.
    pub error_rate: f64,
    /// How many of its circuit breakers are open.
    pub open_breakers: u32,
    /// The services it has called, with how many calls (since it started): the edges of
    /// the dependency map ([`crate::topology`]).
    pub calls: BTreeMap<String, u64>,
}

impl EnvReport {
    /// A report.
    pub fn new(
        expires_at_ms: u64,
        reported_at_ms: u64,
        error_rate: f64,
        open_breakers: u32,
    ) -> Self {
        EnvReport {
            expires_at_ms,
            reported_at_ms,
            error_rate,
            open_breakers,
            calls: BTreeMap::new(),
        }
    }
}

/// The error rate at or above which an environment counts as failing.
pub const FAILING_ERROR_RATE: f64 = 0.5;
/// The error rate at or above which an environment counts as degraded.
pub const DEGRADED_ERROR_RATE: f64 = 0.2;

/// One registered instance of a service, as read from the registry.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Instance {
    /// The service's name.
    pub service: Arc<str>,
    /// The instance's id, unique within the service (for a Lambda function:
    /// `function-name:qualifier@region`).
    pub id: Arc<str>,
    /// The deployed version (a Lambda version number, or any label).
    pub version: Option<String>,
    /// The Lambda alias callers reach it by, if any.
    pub alias: Option<String>,
    /// The AWS region it runs in.
    pub region: String,
    /// How to reach it.
    pub endpoints: Endpoints,
    /// Its share of traffic relative to the service's other instances (1 to 1000).
    pub weight: u32,
    /// The only tenant it serves, when it is tenant-scoped.
    pub tenant: Option<String>,
    /// Free-form labels discovery can filter on (`zone-a`, `gpu`, ...).
    pub tags: Vec<String>,
    /// Free-form data for callers.
    pub metadata: BTreeMap<String, String>,
    /// An operator's verdict, when one was set ([`crate::Registry::set_health`]).
    pub health_override: Option<Health>,
    /// Whether it was deregistered (a tombstone, kept until garbage collection).
    pub deregistered: bool,
    /// The leases and reports of its execution environments, by environment id.
    pub environments: BTreeMap<String, EnvReport>,
    /// The write counter, incremented by every write.
    pub revision: u64,
}

/// `tags` without repeats, in their order: a registry stores them as a set (DynamoDB
/// refuses a string set that repeats a value).
pub(crate) fn unique_tags(tags: &[String]) -> Vec<String> {
    let mut unique: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        if !unique.contains(tag) {
            unique.push(tag.clone());
        }
    }
    unique
}

impl Instance {
    /// An instance of `service` with the id `id` in `region`, reached by `endpoints`: weight
    /// 100, no tenant, tags or metadata, no environment yet. Registration builds it from a
    /// [`crate::ServiceConfig`]; build one directly for an instance outside Lambda or a test.
    pub fn new(
        service: impl Into<Arc<str>>,
        id: impl Into<Arc<str>>,
        region: impl Into<String>,
        endpoints: Endpoints,
    ) -> Self {
        Instance {
            service: service.into(),
            id: id.into(),
            version: None,
            alias: None,
            region: region.into(),
            endpoints,
            weight: 100,
            tenant: None,
            tags: Vec::new(),
            metadata: BTreeMap::new(),
            health_override: None,
            deregistered: false,
            environments: BTreeMap::new(),
            revision: 0,
        }
    }

    /// The end of the latest lease (Unix milliseconds), 0 when no environment holds one.
    pub fn expires_at_ms(&self) -> u64 {
        self.environments
            .values()
            .map(|e| e.expires_at_ms)
            .max()
            .unwrap_or(0)
    }

    /// The latest report (Unix milliseconds), 0 when none.
    pub fn heartbeat_at_ms(&self) -> u64 {
        self.environments
            .values()
            .map(|e| e.reported_at_ms)
            .max()
            .unwrap_or(0)
    }

    /// The version that names its code, for a tombstone to keep out: `None` without a
    /// version and for `$LATEST`, which every unpublished deployment reports.
    pub(crate) fn code_version(&self) -> Option<&str> {
        self.version.as_deref().filter(|v| *v != "$LATEST")
    }

    /// Whether some environment's lease is still running at `now_ms`, and it is not a
    /// tombstone. Expiry is decided here, in code, never by DynamoDB's TTL.
    pub fn is_live(&self, now_ms: u64) -> bool {
        !self.deregistered && self.expires_at_ms() > now_ms
    }

    /// Its health at `now_ms`, from the live environments' reports (the last known ones
    /// when none is live) and an operator's override: unhealthy when overridden so or when
    /// most live environments fail; degraded when any sees open breakers or a raised error
    /// rate.
    ///
    /// A live environment's failing report older than half its lease counts as degraded,
    /// not failing: an environment renews (and reports again) only after it serves a call,
    /// so an instance that callers avoid for its report would otherwise never get the calls
    /// that show it recovered. The environment renews at least twice a lease while it is
    /// called, so a report that old means it was not. (The last reports of environments
    /// whose leases ended keep their verdict.)
    pub fn health(&self, now_ms: u64) -> Health {
        if let Some(Health::Unhealthy) = self.health_override {
            return Health::Unhealthy;
        }
        // The live environments' reports; when none is live, the last ones known.
        let any_live = self.environments.values().any(|e| e.expires_at_ms > now_ms);
        let reports = self
            .environments
            .values()
            .filter(|e| !any_live || e.expires_at_ms > now_ms);
        let (mut total, mut failing, mut degraded) = (0u32, 0u32, false);
        for env in reports {
            total += 1;
            let lease = env.expires_at_ms.saturating_sub(env.reported_at_ms);
            let stale =
                env.expires_at_ms > now_ms && now_ms.saturating_sub(env.reported_at_ms) > lease / 2;
            if env.error_rate >= FAILING_ERROR_RATE && !stale {
                failing += 1;
            }
            degraded |= env.open_breakers > 0 || env.error_rate >= DEGRADED_ERROR_RATE;
        }
        if total > 0 && failing * 2 > total {
            Health::Unhealthy
        } else if degraded || self.health_override == Some(Health::Degraded) {
            Health::Degraded
        } else {
            Health::Healthy
        }
    }

    /// Whether it has `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// The AWS regions Lift accepts in a [`crate::ServiceConfig`].
pub const REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-west-1",
    "us-west-2",
];

/// Whether `region` is a known AWS region.
pub fn is_known_region(region: &str) -> bool {
    REGIONS.contains(&region)
}

/// The parts of a Lambda function ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FunctionArn<'a> {
    pub(crate) region: &'a str,
    pub(crate) function: &'a str,
    pub(crate) qualifier: Option<&'a str>,
}

/// Splits `arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`.
pub(crate) fn parse_function_arn(arn: &str) -> Option<FunctionArn<'_>> {
    let mut parts = arn.split(':');
    let (Some("arn"), Some(_partition), Some("lambda"), Some(region), Some(_account)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let (Some("function"), Some(function)) = (parts.next(), parts.next()) else {
        return None;
    };
    let qualifier = parts.next();
    if parts.next().is_some() || function.is_empty() || qualifier == Some("") {
        return None;
    }
    Some(FunctionArn {
        region,
        function,
        qualifier,
    })
}

/// Whether a qualifier names a version (a number or `$LATEST`) rather than an alias.
pub(crate) fn is_version(qualifier: &str) -> bool {
    qualifier == "$LATEST" || qualifier.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(envs: &[(u64, f64, u32)]) -> Instance {
        Instance {
            service: "payments".into(),
            id: "payments:live@eu-west-1".into(),
            version: Some("3".into()),
            alias: Some("live".into()),
            region: "eu-west-1".into(),
            endpoints: Endpoints::lambda("arn:aws:lambda:eu-west-1:1:function:payments:live"),
            weight: 100,
            tenant: None,
            tags: vec![],
            metadata: BTreeMap::new(),
            health_override: None,
            deregistered: false,
            environments: envs
                .iter()
                .enumerate()
                .map(|(i, (exp, err, brk))| (format!("e{i}"), EnvReport::new(*exp, 0, *err, *brk)))
                .collect(),
            revision: 1,
        }
    }

    #[test]
    fn liveness_is_the_latest_lease_and_health_counts_live_environments_only() {
        let i = instance(&[(100, 0.0, 0), (400, 0.9, 0)]);
        assert!(i.is_live(150));
        assert!(!i.is_live(400));
        assert_eq!(i.expires_at_ms(), 400);
        // At 50 one of two fails: not a majority. At 150 only the failing one is live.
        assert_eq!(i.health(50), Health::Degraded);
        assert_eq!(i.health(150), Health::Unhealthy);
        // Reported at 0 with a lease to 400: past 200 the failing report is stale, and the
        // instance is degraded (it gets calls again), not unhealthy.
        assert_eq!(i.health(200), Health::Unhealthy);
        assert_eq!(i.health(201), Health::Degraded);
        let breakers = instance(&[(100, 0.0, 2)]);
        assert_eq!(breakers.health(0), Health::Degraded);
        let mut fine = instance(&[(100, 0.0, 0)]);
        assert_eq!(fine.health(0), Health::Healthy);
        fine.health_override = Some(Health::Unhealthy);
        assert_eq!(fine.health(0), Health::Unhealthy);
        let mut gone = instance(&[(100, 0.0, 0)]);
        gone.deregistered = true;
        assert!(!gone.is_live(0));
    }

    #[test]
    fn function_arns_split_into_region_name_and_qualifier() {
        let arn = parse_function_arn("arn:aws:lambda:eu-west-1:123456789012:function:pay:live")
            .expect("arn");
        assert_eq!(arn.region, "eu-west-1");
        assert_eq!(arn.function, "pay");
        assert_eq!(arn.qualifier, Some("live"));
        let bare = parse_function_arn("arn:aws:lambda:us-east-1:1:function:pay").expect("arn");
        assert_eq!(bare.qualifier, None);
        for bad in [
            "",
            "arn:aws:s3:::bucket",
            "arn:aws:lambda:us-east-1:1:layer:x",
            "arn:aws:lambda:us-east-1:1:function:",
            "arn:aws:lambda:us-east-1:1:function:f:a:b",
        ] {
            assert_eq!(parse_function_arn(bad), None, "{bad}");
        }
        assert!(is_version("$LATEST") && is_version("12") && !is_version("live"));
    }
}
