//! What a function registers: [`ServiceConfig`], validated before any write.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::{Endpoints, is_known_region};

/// A configuration refused before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The service name is empty.
    #[error("the service name is empty")]
    EmptyName,
    /// The service name has characters or a length the registry does not accept.
    #[error("the service name `{name}` is invalid: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The weight is outside 1 to 1000.
    #[error("the weight {weight} is out of range: it must be 1 to 1000")]
    Weight {
        /// The weight given.
        weight: u32,
    },
    /// The region is not a known AWS region.
    #[error("`{region}` is not a known AWS region")]
    UnknownRegion {
        /// The region given.
        region: String,
    },
    /// A duration that must be positive, or shorter than another, is not.
    #[error("`{field}` is out of range: {reason}")]
    Duration {
        /// The field.
        field: &'static str,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A label (tag, metadata key, tenant, version, alias) is empty or too long.
    #[error("`{field}` has an empty or over-long value")]
    Label {
        /// The field.
        field: &'static str,
    },
    /// An instance registered from outside Lambda names no endpoint.
    #[error("the instance has no endpoint to reach it by")]
    NoEndpoint,
    /// A setting outside the values it takes.
    #[error("`{field}` must be {expected}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// What it takes.
        expected: &'static str,
    },
}

/// Checks a service name: 1 to 64 characters, lower-case ASCII letters, digits, `-`, `_`
/// or `.`, starting with a letter.
///
/// # Errors
/// [`ConfigError::EmptyName`] or [`ConfigError::InvalidName`].
pub fn validate_name(name: &str) -> Result<(), ConfigError> {
    let invalid = |reason| {
        Err(ConfigError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return Err(ConfigError::EmptyName);
    }
    if name.len() > 64 {
        return invalid("longer than 64 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return invalid("it must start with a lower-case letter");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
    {
        return invalid("only lower-case letters, digits, `-`, `_` and `.` are allowed");
    }
    Ok(())
}

fn label(field: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 256 {
        Err(ConfigError::Label { field })
    } else {
        Ok(())
    }
}

/// How a function registers itself as an instance of a service.
///
/// For a Lambda function, the region, version, alias and qualified ARN come from the first
/// invocation; set them here only to override, or for an instance outside Lambda.
///
/// ```
/// use std::time::Duration;
/// use lift_services::ServiceConfig;
///
/// let config = ServiceConfig::new("payments")
///     .weight(50)
///     .tag("pci")
///     .metadata("team", "billing")
///     .lease(Duration::from_secs(1800));
/// config.validate()?;
/// # Ok::<(), lift_services::ConfigError>(())
/// ```
///
/// # Default
/// Weight 100; no tenant scope; a lease of 30 minutes renewed at most every 5 minutes
/// (jittered by up to a fifth) by an environment that is serving invocations; health
/// reported with each renewal.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub(crate) name: String,
    pub(crate) version: Option<String>,
    pub(crate) alias: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) endpoints: Endpoints,
    pub(crate) instance_id: Option<String>,
    pub(crate) weight: u32,
    pub(crate) tenant: Option<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) lease: Duration,
    pub(crate) renew_every: Duration,
    pub(crate) table: Option<String>,
    pub(crate) lookup_function_url: bool,
}

impl ServiceConfig {
    /// A registration of the service `name`, with the defaults above.
    pub fn new(name: impl Into<String>) -> Self {
        ServiceConfig {
            name: name.into(),
            version: None,
            alias: None,
            region: None,
            endpoints: Endpoints::default(),
            instance_id: None,
            weight: 100,
            tenant: None,
            tags: Vec::new(),
            metadata: BTreeMap::new(),
            lease: Duration::from_secs(30 * 60),
            renew_every: Duration::from_secs(5 * 60),
            table: None,
            lookup_function_url: false,
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version label (default: the Lambda function version). It names the code: a
    /// deregistration keeps every environment of the version it names out of discovery,
    /// so a label that does not change between deployments keeps the next one out too
    /// (see [`crate::registry`]).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// The alias (default: the invoked ARN's qualifier when it is an alias).
    pub fn alias(mut self, alias: impl Into<String>) -> Self {
        self.alias = Some(alias.into());
        self
    }

    /// The region (default: the invoked ARN's).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Endpoints to register (a Function URL beside the ARN, or the HTTP URL of an instance
    /// outside Lambda).
    pub fn endpoints(mut self, endpoints: Endpoints) -> Self {
        self.endpoints = endpoints;
        self
    }

    /// The instance id, for an instance outside Lambda (default for a Lambda function:
    /// `function-name:qualifier@region`).
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// The share of traffic relative to the service's other instances, 1 to 1000.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Scopes the instance to one tenant: discovery for another tenant never returns it,
    /// and the client refuses to send another tenant's call to it.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Adds a tag (once: a tag given again is kept once).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        let tag = tag.into();
        if !self.tags.contains(&tag) {
            self.tags.push(tag);
        }
        self
    }

    /// Adds a metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// How long an environment's lease lasts without renewal. An instance none of whose
    /// environments renewed within it leaves discovery: make it longer than the longest
    /// quiet spell the service has, since a frozen environment renews nothing. From one
    /// second to a year.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often, at most, an environment renews its lease and reports its health.
    pub fn renew_every(mut self, interval: Duration) -> Self {
        self.renew_every = interval;
        self
    }

    /// The registry table (default: the `LIFT_REGISTRY_TABLE` environment variable, read
    /// once when the registration starts).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = Some(table.into());
        self
    }

    /// Also registers the Function URL of the alias (or version) callers reached, looked up
    /// with Lambda `GetFunctionUrlConfig` when the environment registers (off the response
    /// path; the function needs `lambda:GetFunctionUrlConfig` on itself). A function cannot
    /// be given its own URL in its template (the URL depends on the function), so it asks.
    /// When the lookup fails (throttled, say) the instance registers with the URL the
    /// registry has for it, read once (none when that read fails too, or finds none), and
    /// the error is logged; Lambda's answer that there is no URL registers none.
    pub fn function_url(mut self) -> Self {
        self.lookup_function_url = true;
        self
    }

    /// The lease duration.
    pub fn lease_duration(&self) -> Duration {
        self.lease
    }

    /// The renewal interval.
    pub fn renewal_interval(&self) -> Duration {
        self.renew_every
    }

    /// Checks everything that can be checked before the first invocation.
    ///
    /// # Errors
    /// The first problem found, as a [`ConfigError`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_name(&self.name)?;
        if !(1..=1000).contains(&self.weight) {
            return Err(ConfigError::Weight {
                weight: self.weight,
            });
        }
        if let Some(region) = &self.region
            && !is_known_region(region)
        {
            return Err(ConfigError::UnknownRegion {
                region: region.clone(),
            });
        }
        if self.lease < Duration::from_secs(1) || self.lease > MAX_LEASE {
            return Err(ConfigError::Duration {
                field: "lease",
                reason: "at least one second and at most a year",
            });
        }
        if self.renew_every.is_zero()
            || self
                .renew_every
                .checked_mul(2)
                .is_none_or(|twice| twice > self.lease)
        {
            return Err(ConfigError::Duration {
                field: "renew_every",
                reason: "positive and at most half the lease",
            });
        }
        for (field, value) in [
            ("version", &self.version),
            ("alias", &self.alias),
            ("tenant", &self.tenant),
            ("instance_id", &self.instance_id),
            ("table", &self.table),
        ] {
            if let Some(value) = value {
                label(field, value)?;
            }
        }
        for tag in &self.tags {
            label("tags", tag)?;
        }
        for key in self.metadata.keys() {
            label("metadata", key)?;
        }
        Ok(())
    }
}

/// The longest lease [`ServiceConfig::lease`] takes: 365 days, so that a lease end in
/// milliseconds since the epoch never overflows, nor does its garbage-collection time.
pub const MAX_LEASE: Duration = Duration::from_secs(365 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_given_twice_is_kept_once() {
        let config = ServiceConfig::new("p").tag("pci").tag("gpu").tag("pci");
        assert_eq!(config.tags, ["pci", "gpu"]);
    }

    #[test]
    fn bad_configurations_are_refused_with_the_field() {
        assert_eq!(
            ServiceConfig::new("").validate(),
            Err(ConfigError::EmptyName)
        );
        assert!(matches!(
            ServiceConfig::new("Payments").validate(),
            Err(ConfigError::InvalidName { .. })
        ));
        assert!(matches!(
            ServiceConfig::new("pay ments").validate(),
            Err(ConfigError::InvalidName { .. })
        ));
        assert!(matches!(
            ServiceConfig::new("x".repeat(65)).validate(),
            Err(ConfigError::InvalidName { .. })
        ));
        assert_eq!(
            ServiceConfig::new("payments").weight(0).validate(),
            Err(ConfigError::Weight { weight: 0 })
        );
        assert_eq!(
            ServiceConfig::new("payments").weight(1001).validate(),
            Err(ConfigError::Weight { weight: 1001 })
        );
        assert_eq!(
            ServiceConfig::new("payments").region("moon-1").validate(),
            Err(ConfigError::UnknownRegion {
                region: "moon-1".into()
            })
        );
        assert!(matches!(
            ServiceConfig::new("payments")
                .lease(Duration::from_secs(60))
                .renew_every(Duration::from_secs(31))
                .validate(),
            Err(ConfigError::Duration {
                field: "renew_every",
                ..
            })
        ));
        for (lease, renew) in [
            (Duration::MAX, Duration::from_secs(60)),
            (
                Duration::from_secs(366 * 24 * 3600),
                Duration::from_secs(60),
            ),
        ] {
            assert!(matches!(
                ServiceConfig::new("payments")
                    .lease(lease)
                    .renew_every(renew)
                    .validate(),
                Err(ConfigError::Duration { field: "lease", .. })
            ));
        }
        assert!(matches!(
            ServiceConfig::new("payments")
                .renew_every(Duration::MAX)
                .validate(),
            Err(ConfigError::Duration {
                field: "renew_every",
                ..
            })
        ));
        assert_eq!(
            ServiceConfig::new("payments").tag("").validate(),
            Err(ConfigError::Label { field: "tags" })
        );
        ServiceConfig::new("payments.v2_eu-1")
            .region("eu-west-1")
            .weight(1000)
            .validate()
            .expect("valid");
    }
}
