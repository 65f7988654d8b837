//! Self-registration: one line on the [`App`], off the first response's path.
//!
//! [`RegisterExt::register`] adds a background task (see [`lift_core::lifecycle`]) that
//! waits until the environment's first invocation has been answered (its invoked ARN names
//! the alias or version callers reached and the region), registers the instance, then
//! renews this environment's lease and reports its health at most once per interval
//! (jittered), only while it serves invocations. On shutdown it releases the environment's
//! lease — when the App opts in to Lambda's SIGTERM with
//! [`App::shutdown_extension(true)`](lift_core::App::shutdown_extension); otherwise the
//! lease simply runs out (see [`lift_core::shutdown`] for why that is the default). Every
//! write is retried with exponential backoff and full jitter; a failure is
//! logged (target `lift::registry`) and never fails an invocation.
//!
//! ```no_run
//! use lift_core::{App, Context, Result};
//! use lift_services::{RegisterExt, ServiceConfig};
//!
//! async fn charge(_ctx: Context) -> Result<&'static str> {
//!     Ok("charged")
//! }
//!
//! # async fn run() -> Result<()> {
//! App::new()
//!     .register(ServiceConfig::new("payments"))
//!     .post("/charges", charge)
//!     .run()
//!     .await
//! # }
//! ```
//!
//! # Cost
//! One write when an environment starts serving, then at most one per renewal interval
//! while it serves invocations (5 minutes by default, shortened by up to a fifth at random:
//! 12 to 15 writes an hour per busy environment, 14 counted over an hour in the tests; a
//! frozen or idle environment writes nothing), and one on graceful shutdown when it is on.
//!
//! Each write is billed by the size of the instance's whole item, which holds a lease entry
//! per environment (about 55 bytes, plus about 10 per service it calls): with N busy
//! environments a renewal costs about N/18 write units, and one item's limits bound an
//! instance to a few thousand environments (400 KB at about 7,000; its 1,000 write units a
//! second at about 2,000 busy ones). Beyond several hundred concurrent environments, spread
//! a service over several aliases (instances). Entries of environments that ended are
//! pruned by later renewals, up to 16 at a time.

use std::sync::Arc;
use std::time::Duration;

use lift_core::App;
use lift_core::lifecycle::{FirstInvocation, Lifecycle};

use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, ServiceConfig};
use crate::health::{HealthLayer, HealthSignals};
use crate::model::{EnvReport, Instance, is_known_region, is_version, parse_function_arn};
use crate::registry::{DynamoRegistry, EnvLease, Registry, RegistryError};

/// How long registration waits after the first invocation was answered, for the runtime to
/// post the response before the registration's own work starts.
const AFTER_FIRST_ANSWER: Duration = Duration::from_millis(20);

/// How long a tombstone or an abandoned item stays before DynamoDB may collect it.
const GARBAGE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Registration on an [`App`]; see the module docs.
pub trait RegisterExt: Sized {
    /// Registers the function as an instance of `config`'s service, in the DynamoDB table
    /// `config` names (or `LIFT_REGISTRY_TABLE`). An invalid configuration is logged at
    /// ERROR and nothing is written; use [`RegisterExt::try_register`] to refuse it instead.
    fn register(self, config: ServiceConfig) -> App;

    /// As [`RegisterExt::register`], refusing an invalid configuration.
    ///
    /// # Errors
    /// The [`ConfigError`] naming what is wrong, before anything is written.
    fn try_register(self, config: ServiceConfig) -> Result<App, ConfigError>;

    /// Registers through `registration` (a registry, a clock and the health signals of
    /// your choice).
    fn register_with(self, registration: Registration) -> App;
}

impl RegisterExt for App {
    fn register(self, config: ServiceConfig) -> App {
        match Registration::new(config) {
            Ok(registration) => self.register_with(registration),
            Err(error) => {
                tracing::error!(target: "lift::registry", error = %error, "registration refused: invalid configuration");
                self
            }
        }
    }

    fn try_register(self, config: ServiceConfig) -> Result<App, ConfigError> {
        Ok(self.register_with(Registration::new(config)?))
    }

    fn register_with(self, registration: Registration) -> App {
        let layer = HealthLayer::new(registration.signals.clone());
        self.layer(layer)
            .background(move |lifecycle| registration.run(lifecycle))
    }
}

/// One environment's registration: the configuration, the registry, a clock and the
/// health signals it reports.
pub struct Registration {
    config: ServiceConfig,
    registry: Option<Arc<dyn Registry>>,
    clock: Arc<dyn Clock>,
    signals: HealthSignals,
    env_id: String,
    seed: u64,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("service", &self.config.name)
            .field("env_id", &self.env_id)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// A registration of `config`, validated now.
    ///
    /// # Errors
    /// The [`ConfigError`] naming what is wrong.
    pub fn new(config: ServiceConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let seed = fastrand::u64(..);
        Ok(Registration {
            config,
            registry: None,
            clock: Arc::new(SystemClock),
            signals: HealthSignals::new(),
            env_id: format!("{seed:016x}"),
            seed,
        })
    }

    /// Writes to `registry` instead of the DynamoDB table.
    pub fn registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Reads time from `clock`.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Reports `signals` (share them with your breakers' listeners).
    pub fn signals(mut self, signals: HealthSignals) -> Self {
        self.signals = signals;
        self
    }

    /// The environment's id and the jitter's seed.
    pub fn env_id(mut self, env_id: impl Into<String>, seed: u64) -> Self {
        self.env_id = env_id.into();
        self.seed = seed;
        self
    }

    /// The health signals this registration reports.
    pub fn health_signals(&self) -> &HealthSignals {
        &self.signals
    }

    /// The instance this environment registers, from its first invocation.
    ///
    /// # Errors
    /// [`ConfigError::UnknownRegion`] when no known region can be found, and
    /// [`ConfigError::NoEndpoint`] when the invocation names no function ARN and the
    /// configuration no endpoint.
    pub fn instance(&self, first: &FirstInvocation) -> Result<Instance, ConfigError> {
        let config = &self.config;
        let arn = parse_function_arn(&first.invoked_function_arn);
        let region = config
            .region
            .clone()
            .or_else(|| arn.as_ref().map(|a| a.region.to_owned()))
            .unwrap_or_default();
        if !is_known_region(&region) {
            return Err(ConfigError::UnknownRegion { region });
        }
        let mut endpoints = config.endpoints.clone();
        if arn.is_some() && endpoints.lambda_arn.is_none() {
            endpoints.lambda_arn = Some(first.invoked_function_arn.clone());
        }
        if endpoints.is_empty() {
            return Err(ConfigError::NoEndpoint);
        }
        let qualifier = arn.as_ref().and_then(|a| a.qualifier).unwrap_or("$LATEST");
        let id = match (&config.instance_id, &arn) {
            (Some(id), _) => id.clone(),
            (None, Some(arn)) => format!("{}:{qualifier}@{region}", arn.function),
            (None, None) => format!("{}@{region}", config.name),
        };
        let mut instance = Instance::new(config.name.as_str(), id, region, endpoints);
        instance.version = config.version.clone().or_else(|| {
            (!first.function_version.is_empty()).then(|| first.function_version.clone())
        });
        instance.alias = config
            .alias
            .clone()
            .or_else(|| (!is_version(qualifier)).then(|| qualifier.to_owned()));
        instance.weight = config.weight;
        instance.tenant = config.tenant.clone();
        instance.tags = config.tags.clone();
        instance.metadata = config.metadata.clone();
        Ok(instance)
    }

    fn lease(&self, started_at_ms: u64) -> EnvLease {
        let now = self.clock.now_ms();
        let observed = self.signals.take();
        // The lease is at most a year (validated), so neither sum overflows.
        let expires = now.saturating_add(self.config.lease.as_millis() as u64);
        let mut report =
            EnvReport::new(expires, now, observed.error_rate(), observed.open_breakers);
        report.calls = self.signals.calls();
        EnvLease::new(
            self.env_id.clone(),
            started_at_ms,
            report,
            (expires + GARBAGE_AFTER.as_millis() as u64) / 1000,
        )
    }

    async fn open_registry(&self) -> Result<Arc<dyn Registry>, &'static str> {
        if let Some(registry) = &self.registry {
            return Ok(registry.clone());
        }
        let table = match &self.config.table {
            Some(table) => table.clone(),
            None => std::env::var("LIFT_REGISTRY_TABLE").map_err(
                |_| "no registry table: set ServiceConfig::table or LIFT_REGISTRY_TABLE",
            )?,
        };
        let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
        Ok(Arc::new(DynamoRegistry::new(client, table)))
    }

    /// The background task: register, renew while serving, release on shutdown.
    pub async fn run(self, lifecycle: Lifecycle) {
        let started_at_ms = self.clock.now_ms();
        let service = self.config.name.clone();
        // Only once the first response is out: the registry, the SDK's configuration and
        // TLS setup would otherwise compete with it for the environment's CPU. The runtime
        // posts the response after the handler returns, hence the short wait; when Lambda
        // freezes the environment first, the registration runs on the next invocation.
        let first = tokio::select! {
            first = async {
                let first = lifecycle.first_invocation().await;
                lifecycle.first_answered().await;
                tokio::time::sleep(AFTER_FIRST_ANSWER).await;
                first
            } => first,
            () = lifecycle.shutdown() => return,
        };
        let instance = match self.instance(&first) {
            Ok(instance) => instance,
            Err(error) => {
                tracing::error!(target: "lift::registry", service = %service, error = %error, "registration refused");
                return;
            }
        };
        let registry = match self.open_registry().await {
            Ok(registry) => registry,
            Err(error) => {
                tracing::error!(target: "lift::registry", service = %service, error, "registration impossible");
                return;
            }
        };
        let instance = if self.config.lookup_function_url {
            let lambda = aws_sdk_lambda::Client::new(lift_core::aws::sdk_config().await);
            with_function_url(instance, &lambda, registry.as_ref()).await
        } else {
            instance
        };
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let mut registered: Option<Instance> = None;
        let mut served = 0;
        loop {
            if lifecycle.is_shutting_down() {
                break;
            }
            let invocations = lifecycle.invocations();
            if registered.is_none() || invocations > served {
                served = invocations;
                let lease = self.lease(started_at_ms);
                let outcome = match &registered {
                    None => {
                        with_retries(&mut rng, "register", || {
                            registry.register(&instance, &lease)
                        })
                        .await
                    }
                    Some(stored) => {
                        let now = self.clock.now_ms();
                        let prune: Vec<String> = stored
                            .environments
                            .iter()
                            .filter(|(env, r)| **env != self.env_id && r.expires_at_ms <= now)
                            .map(|(env, _)| env.clone())
                            .collect();
                        with_retries(&mut rng, "renew", || {
                            registry.renew(&instance.service, &instance.id, &lease, &prune)
                        })
                        .await
                    }
                };
                match outcome {
                    Ok(stored) => {
                        self.signals.registered();
                        tracing::debug!(target: "lift::registry", service = %service, instance = %instance.id, revision = stored.revision, "lease written");
                        registered = Some(stored);
                    }
                    Err(RegistryError::Deregistered { .. }) => {
                        tracing::warn!(target: "lift::registry", service = %service, instance = %instance.id, "instance deregistered: this environment stops registering it");
                        return;
                    }
                    // Gone while renewing: register again at once. A registry whose
                    // `register` itself answers NotFound waits the interval like any
                    // failed write, rather than writing again in a loop.
                    Err(RegistryError::NotFound { .. }) if registered.is_some() => {
                        tracing::warn!(target: "lift::registry", service = %service, instance = %instance.id, "instance gone: registering again");
                        registered = None;
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(target: "lift::registry", service = %service, instance = %instance.id, error = %error, "registry write failed; trying again next interval");
                    }
                }
            }
            let interval = jittered(self.config.renew_every, &mut rng);
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = lifecycle.shutdown() => break,
            }
        }
        if registered.is_some() {
            match registry
                .release(&instance.service, &instance.id, &self.env_id)
                .await
            {
                Ok(()) => {
                    tracing::info!(target: "lift::registry", service = %service, instance = %instance.id, "lease released")
                }
                Err(error) => {
                    tracing::warn!(target: "lift::registry", service = %service, error = %error, "lease release failed")
                }
            }
        }
    }
}

/// `instance` with the Function URL of its Lambda endpoint's qualifier, when it has one.
///
/// A lookup that fails (throttled: `GetFunctionUrlConfig` is a control-plane call, and a
/// scale-out makes many at once) tells nothing of the URL: the instance keeps the one the
/// registry has for it, since registering none would take it from every caller. Only
/// Lambda's answer that there is no URL registers none.
async fn with_function_url(
    mut instance: Instance,
    lambda: &aws_sdk_lambda::Client,
    registry: &dyn Registry,
) -> Instance {
    let Some(arn) = instance.endpoints.lambda_arn.clone() else {
        return instance;
    };
    let Some(parsed) = parse_function_arn(&arn) else {
        return instance;
    };
    let mut request = lambda
        .get_function_url_config()
        .function_name(parsed.function);
    if let Some(qualifier) = parsed.qualifier {
        request = request.qualifier(qualifier);
    }
    match request.send().await {
        Ok(config) => {
            instance.endpoints.function_url = Some(config.function_url);
        }
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            instance.endpoints.function_url = None;
        }
        Err(error) => {
            let error = aws_sdk_lambda::error::DisplayErrorContext(error);
            let stored = registry
                .instances(&instance.service)
                .await
                .ok()
                .and_then(|all| all.into_iter().find(|i| i.id == instance.id))
                .and_then(|stored| stored.endpoints.function_url);
            tracing::warn!(target: "lift::registry", instance = %instance.id, error = %error, kept = stored.is_some(), "the Function URL lookup failed: registering the URL the registry has");
            instance.endpoints.function_url = stored;
        }
    }
    instance
}

/// `interval` shortened by up to a fifth, at random: environments started together spread
/// their renewals.
fn jittered(interval: Duration, rng: &mut fastrand::Rng) -> Duration {
    interval.mul_f64(1.0 - rng.f64() * 0.2)
}

/// Attempts a registry write up to four times, retrying what is retryable after an
/// exponential backoff (100 ms doubling, capped at 2 s) with full jitter.
pub(crate) async fn with_retries<'a, T, F>(
    rng: &mut fastrand::Rng,
    operation: &'static str,
    mut attempt: F,
) -> Result<T, RegistryError>
where
    F: FnMut() -> futures_util::future::BoxFuture<'a, Result<T, RegistryError>>,
{
    let mut tries = 0u32;
    loop {
        match attempt().await {
            Err(error) if error.is_retryable() && tries < 3 => {
                let cap = Duration::from_millis(100 * (1 << tries)).min(Duration::from_secs(2));
                let delay = cap.mul_f64(rng.f64());
                tracing::debug!(target: "lift::registry", operation, attempt = tries + 1, error = %error, delay_ms = delay.as_millis() as u64, "retrying");
                tokio::time::sleep(delay).await;
                tries += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{EnvLease, MemoryRegistry};
    use crate::{Endpoints, EnvReport};

    const ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:beta:live";

    /// A Lambda client whose every call fails before an answer (nothing listens there).
    fn unreachable_lambda() -> aws_sdk_lambda::Client {
        let config = aws_sdk_lambda::Config::builder()
            .behavior_version(aws_sdk_lambda::config::BehaviorVersion::latest())
            .region(aws_sdk_lambda::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_lambda::config::Credentials::for_tests())
            .endpoint_url("http://127.0.0.1:9")
            .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_lambda::Client::from_conf(config)
    }

    /// An environment whose lookup fails registers the URL another environment stored,
    /// not none: one throttled lookup in a scale-out used to remove the URL for every
    /// caller until another environment registered with a lookup that worked.
    #[tokio::test]
    async fn a_failed_lookup_keeps_the_stored_function_url() {
        let registry = MemoryRegistry::new();
        let url = "https://abc.lambda-url.us-east-1.on.aws/";
        let stored = Instance::new(
            "beta",
            "live",
            "us-east-1",
            Endpoints::lambda(ARN).with_function_url(url),
        );
        let lease = EnvLease::new("env-a", 0, EnvReport::new(u64::MAX / 2, 0, 0.0, 0), 86_400);
        registry.register(&stored, &lease).await.expect("register");

        let fresh = Instance::new("beta", "live", "us-east-1", Endpoints::lambda(ARN));
        let looked_up = with_function_url(fresh.clone(), &unreachable_lambda(), &registry).await;
        assert_eq!(looked_up.endpoints.function_url.as_deref(), Some(url));

        // Nothing stored: nothing to keep.
        let empty = MemoryRegistry::new();
        let looked_up = with_function_url(fresh, &unreachable_lambda(), &empty).await;
        assert_eq!(looked_up.endpoints.function_url, None);
    }

    /// Lambda's own answer that there is no URL (on the emulator: a function that does not
    /// exist) registers none, whatever the registry has.
    #[tokio::test]
    async fn lambdas_answer_of_no_url_registers_none() {
        assert!(
            std::env::var_os("AWS_ENDPOINT_URL").is_some(),
            "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
        );
        let lambda = aws_sdk_lambda::Client::new(lift_core::aws::sdk_config().await);
        let arn = "arn:aws:lambda:us-east-1:000000000000:function:lift-no-such-function:live";
        let registry = MemoryRegistry::new();
        let stored = Instance::new(
            "gone",
            "live",
            "us-east-1",
            Endpoints::lambda(arn).with_function_url("https://old.lambda-url.us-east-1.on.aws/"),
        );
        let lease = EnvLease::new("env-a", 0, EnvReport::new(u64::MAX / 2, 0, 0.0, 0), 86_400);
        registry.register(&stored, &lease).await.expect("register");
        let fresh = Instance::new("gone", "live", "us-east-1", Endpoints::lambda(arn));
        let looked_up = with_function_url(fresh, &lambda, &registry).await;
        assert_eq!(looked_up.endpoints.function_url, None);
    }
}
