//! The service client: discover → pick → call → decode, by service name.
//!
//! Each call discovers the service's instances from the cache (no registry read on the warm
//! path), applies the service's [`TrafficPolicy`] and the load-balancing strategy, and sends
//! through lift-middleware's circuit breaker (one per instance) and timeout (bounded by the
//! caller's deadline, which bounds discovery too). A caller with less time left than an
//! attempt needs ([`ServiceClientBuilder::min_attempt_time`]) gets no attempt, so that its
//! lack of time is not counted against an instance.
//!
//! A retryable failure fails over to another instance, at most `max_attempts` in all,
//! within the callee's retry budget (one per service called, so a service failing
//! everywhere does not stop the failover of calls to others); consecutive failures eject an
//! instance locally until the next refresh. What is retryable: a call that ran nothing (an
//! open circuit, a throttled Lambda invocation, one Lambda did not run
//! ([`TransportError::NotInvoked`]: its alias missing, its keys or network unusable) or
//! refused to the caller ([`TransportError::Unauthorized`]: no permission to invoke it,
//! expired credentials), a 429 or 503 the callee's layers answered before its handler,
//! marked [`lift_core::REFUSED_HEADER`]), for any request; any other 5xx or 429 answer or a
//! transport failure (a timeout, a function error) only for an idempotent one
//! ([`ServiceRequest::idempotent`]), since the instance may have done the work. A throttle
//! and a refusal to the caller count against the instance's ejection, not in its breaker.
//! A request that could not be made here ([`TransportError::NotSent`]: a path that is no
//! valid URI, say) is final, and blames no instance.
//!
//! The call carries the tenant (`x-tenant-id`), the X-Ray trace header, the correlation id
//! and the caller's service identity (`x-lift-caller`, and a signed `x-lift-service-token`
//! for lift-middleware's `service_auth` when a signer is set). A call for tenant A to an
//! instance scoped to tenant B is refused before it is sent.
//!
//! Topology: with a request made from a handler's context
//! ([`ServiceRequest::from_context`]), every call adds to the invocation's EMF metrics —
//! `ServiceCall.<callee>.<outcome>` (a count) and `ServiceCallLatency.<callee>` — flushed with
//! the invocation's one EMF line; the caller is the function that logs them. No write per
//! call. A callee the registry does not know (or a name no service can have) counts in
//! `ServiceCallUnknown` alone, so names a caller made up do not each become a metric.
//!
//! ```no_run
//! use std::sync::Arc;
//! use lift_services::client::ServiceClient;
//! use lift_services::discovery::Discovery;
//! use lift_services::transport::{LambdaTransport, ServiceRequest};
//! use lift_services::DynamoRegistry;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let sdk = lift_core::aws::sdk_config().await;
//! let registry = DynamoRegistry::new(aws_sdk_dynamodb::Client::new(sdk), "registry");
//! let client = ServiceClient::builder(
//!     Discovery::new(Arc::new(registry)),
//!     Arc::new(LambdaTransport::new(aws_sdk_lambda::Client::new(sdk))),
//! )
//! .caller("orders")
//! .build()?;
//! let quote: serde_json::Value = client
//!     .call("pricing", ServiceRequest::post("/quotes").json(&serde_json::json!({"sku": "a"}))?)
//!     .await?
//!     .json()?;
//! # let _ = quote;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use lift_core::BoxError;
use lift_middleware::circuit_breaker::CircuitBreaker;
use lift_middleware::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, StateChange};
use lift_middleware::classify::{Classifier, DefaultClassifier};
use lift_middleware::service_auth::ServiceTokenSigner;
use lift_middleware::timeout::Timeout;
use lift_middleware::timeout::TimeoutLayer;
use tower::{Layer, Service, ServiceExt};

use crate::balance::{PowerOfTwoChoices, Rng, Strategy};
use crate::config::ConfigError;
use crate::discovery::{
    Discovered, Discovery, DiscoveryError, HealthFilter, InFlight, Query, report_entry,
};
use crate::health::HealthSignals;
use crate::model::Instance;
use crate::policy::{CallInfo, TrafficPolicy};
use crate::transport::{Outbound, ServiceRequest, ServiceResponse, Transport, TransportError};

/// What an attempt keeps of the caller's deadline: it ends this much before it, and none
/// starts with less left.
const DEADLINE_MARGIN: Duration = Duration::from_millis(50);

/// [`ServiceClientBuilder::min_attempt_time`]'s default: a warm Lambda invocation and a
/// short handler fit.
const DEFAULT_MIN_ATTEMPT: Duration = Duration::from_millis(250);

/// A failed call, naming the step that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No instance to call.
    #[error("discovery of `{service}` failed")]
    Discovery {
        /// The service.
        service: String,
        /// Why.
        #[source]
        source: DiscoveryError,
    },
    /// The picked instance serves another tenant; nothing was sent.
    #[error(
        "instance `{instance}` of `{service}` serves tenant `{scope}`, not {tenant:?}; the call was not sent"
    )]
    TenantRefused {
        /// The service.
        service: String,
        /// The instance.
        instance: String,
        /// The instance's tenant.
        scope: String,
        /// The call's tenant.
        tenant: Option<String>,
    },
    /// No answer (connection, invoke error, timeout, open circuit), after failover.
    #[error("calling `{service}` (instance `{instance}`) failed in transport")]
    Transport {
        /// The service.
        service: String,
        /// The last instance tried.
        instance: String,
        /// The last error.
        #[source]
        source: BoxError,
    },
    /// The request's deadline left too little time for an attempt (less than
    /// [`ServiceClientBuilder::min_attempt_time`] after the timeout's 50 ms margin), or
    /// passed while the service was being discovered; nothing more was sent, and no
    /// instance is blamed for it.
    #[error("calling `{service}`: the caller's deadline left no time for an attempt")]
    Deadline {
        /// The service.
        service: String,
    },
    /// An answer with an error status.
    #[error("`{service}` (instance `{instance}`) answered {status}")]
    Status {
        /// The service.
        service: String,
        /// The instance.
        instance: String,
        /// The status code.
        status: u16,
        /// The answer's headers: `Retry-After` when the callee sent one, and
        /// [`lift_core::REFUSED_HEADER`] (`before-handler`) when a Lift layer refused the
        /// call before its handler ran, so that sending it again later is safe even if it
        /// is not idempotent. Boxed: the error stays small on the `Result` path.
        headers: Box<http::HeaderMap>,
        /// The body.
        body: Bytes,
    },
    /// The answer's body is not the expected type.
    #[error("the answer of `{service}` cannot be decoded")]
    Decode {
        /// The service.
        service: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl CallError {
    /// The step that failed: `discovery`, `tenant`, `transport`, `status` or `decode`.
    pub fn step(&self) -> &'static str {
        match self {
            CallError::Discovery { .. } => "discovery",
            CallError::TenantRefused { .. } => "tenant",
            CallError::Transport { .. } => "transport",
            CallError::Deadline { .. } => "deadline",
            CallError::Status { .. } => "status",
            CallError::Decode { .. } => "decode",
        }
    }
}

/// A service's answer, with the service and instance that gave it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The service.
    pub service: Arc<str>,
    /// The instance that answered.
    pub instance: Arc<str>,
    /// The answer.
    pub response: ServiceResponse,
}

impl Reply {
    /// The body decoded from JSON.
    ///
    /// # Errors
    /// [`CallError::Decode`].
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, CallError> {
        serde_json::from_slice(&self.response.body).map_err(|source| CallError::Decode {
            service: self.service.to_string(),
            source,
        })
    }
}

/// One instance's key for its circuit breaker.
/// The middleware stack an attempt goes through: the instance's own breaker around the
/// timeout around the transport. Concrete, so a call clones `Arc`s only.
type Stack = CircuitBreaker<Timeout<TransportService>, InstanceClassifier>;

/// What an instance's breaker counts as a failure: what lift-middleware's default does,
/// except a request that could not be made here ([`TransportError::NotSent`]), the
/// caller's to fix, and a throttled invocation ([`TransportError::Throttled`]) or one Lambda
/// refused to the caller ([`TransportError::Unauthorized`]), which count as a 429 answer
/// does: against the instance's ejection only.
#[derive(Debug, Clone, Copy, Default)]
struct InstanceClassifier;

impl Classifier<ServiceResponse> for InstanceClassifier {
    fn is_failure(&self, result: &Result<ServiceResponse, BoxError>) -> bool {
        match result {
            Err(error) if TransportError::is_not_sent(error) => false,
            // Lambda throttled the invocation, or refused the caller: counted as a 429
            // answer is, against the instance's ejection but not in its breaker, which would
            // otherwise stay open (a lone alias failing fast) for its whole open time after
            // a burst passed, or open everywhere for a caller missing a permission.
            Err(error)
                if matches!(
                    error.downcast_ref::<TransportError>(),
                    Some(TransportError::Throttled { .. } | TransportError::Unauthorized { .. })
                ) =>
            {
                false
            }
            result => DefaultClassifier.is_failure(result),
        }
    }
}

/// A breaker listener shared by every instance's breaker.
type Listener = Arc<dyn Fn(&StateChange) + Send + Sync>;

/// At most this many instances keep a breaker; past it the map starts afresh (breakers
/// of instances long gone are dropped with the rest).
const MAX_BREAKERS: usize = 10_000;

/// One breaker per instance, each a lift-middleware [`CircuitBreaker`] of its own, found
/// by the instance's service and id without allocating (a keyed breaker would build a
/// `String` key and search a cache on every call). Ids are unique within a service only:
/// two services' `primary` instances have a breaker each.
struct Breakers {
    config: CircuitBreakerConfig,
    listener: Option<Listener>,
    timeout: Timeout<TransportService>,
    by_instance: std::sync::RwLock<HashMap<BreakerKey, Stack, foldhash::fast::RandomState>>,
}

/// An instance's service and id.
type BreakerKey = (Arc<str>, Arc<str>);

impl Breakers {
    /// The instance's stack.
    ///
    /// # Errors
    /// Its breaker's configuration refused; not expected, since an unkeyed breaker's
    /// builder refuses nothing.
    fn stack(&self, instance: &Instance) -> Result<Stack, lift_middleware::ConfigError> {
        let key = (instance.service.clone(), instance.id.clone());
        if let Ok(map) = self.by_instance.read()
            && let Some(stack) = map.get(&key)
        {
            return Ok(stack.clone());
        }
        let mut map = match self.by_instance.write() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        if map.len() >= MAX_BREAKERS && !map.contains_key(&key) {
            map.clear();
        }
        if let Some(stack) = map.get(&key) {
            return Ok(stack.clone());
        }
        let config = self.config.renamed(&format!(
            "{}:{}/{}",
            self.config.name(),
            instance.service,
            instance.id
        ));
        let mut builder = CircuitBreakerLayer::builder(config).classifier(InstanceClassifier);
        if let Some(listener) = &self.listener {
            let listener = listener.clone();
            builder = builder.on_state_change(move |change| listener(change));
        }
        let stack = builder.build()?.layer(self.timeout.clone());
        map.insert(key, stack.clone());
        Ok(stack)
    }
}

/// The most attempts a call makes.
const MAX_ATTEMPTS: u32 = 8;

/// Builds a [`ServiceClient`].
pub struct ServiceClientBuilder {
    discovery: Discovery,
    transport: Arc<dyn Transport>,
    strategy: Arc<dyn Strategy>,
    policies: HashMap<String, TrafficPolicy>,
    caller: Option<String>,
    signer: Option<ServiceTokenSigner>,
    timeout: Duration,
    max_attempts: u32,
    min_attempt: Duration,
    breaker: Option<CircuitBreakerConfig>,
    health: HealthFilter,
    signals: Option<HealthSignals>,
    seed: Option<u64>,
}

impl ServiceClientBuilder {
    /// Picks with `strategy` (default: power of two choices).
    pub fn strategy(mut self, strategy: Arc<dyn Strategy>) -> Self {
        self.strategy = strategy;
        self
    }

    /// Applies `policy` to calls to `service`.
    pub fn policy(mut self, service: impl Into<String>, policy: TrafficPolicy) -> Self {
        self.policies.insert(service.into(), policy);
        self
    }

    /// The calling service's name, sent as `x-lift-caller`.
    pub fn caller(mut self, service: impl Into<String>) -> Self {
        self.caller = Some(service.into());
        self
    }

    /// Signs a short-lived `x-lift-service-token` per call for lift-middleware's
    /// `service_auth` (needs [`ServiceClientBuilder::caller`]), for the service called
    /// (`sign_for`), which a callee configured with its `audience` requires.
    pub fn signer(mut self, signer: ServiceTokenSigner) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Per-attempt timeout, bounded by the request's deadline (default 3 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Attempts per call, failovers included (default 3, at most 8).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The least time an attempt starts with, before the request's deadline (less its 50
    /// ms margin); default 250 ms. With less left, no attempt is sent: the call ends with
    /// [`CallError::Deadline`], or, after an attempt that failed, with that attempt's error.
    /// Such an attempt could only time out, and count as the instance's failure. An attempt that started with this much and
    /// timed out counts, so a hung instance opens its breaker even when every caller's
    /// deadline comes before the client's timeout. Set it to about the time the callee
    /// needs to answer.
    pub fn min_attempt_time(mut self, time: Duration) -> Self {
        self.min_attempt = time;
        self
    }

    /// The per-instance circuit breaker (default: opens after 5 consecutive failures, for
    /// 30 s).
    pub fn breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// Which health states discovery accepts (default: healthy and degraded instances, or
    /// every live one when none is: [`HealthFilter::HealthyElseAll`]). An instance reports
    /// its health when it renews its lease, and it renews only when invoked: with
    /// [`HealthFilter::HealthyOnly`], a service whose instances all reported failing gets
    /// no call, so no renewal, and stays unreachable after it recovers.
    pub fn health(mut self, health: HealthFilter) -> Self {
        self.health = health;
        self
    }

    /// Counts open breakers and calls by callee into `signals` (the registration's), so
    /// the instance's health reports the breakers and its renewals the dependency map's
    /// edges.
    pub fn signals(mut self, signals: HealthSignals) -> Self {
        self.signals = Some(signals);
        self
    }

    /// Seeds the traffic policies' randomness (tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The client.
    ///
    /// # Errors
    /// [`ConfigError::Duration`] for a zero timeout, [`ConfigError::OutOfRange`] for zero
    /// or more than 8 attempts, or a signer without a caller or with one a token cannot
    /// name (`A-Z a-z 0-9 _ -`, at most 128 bytes).
    pub fn build(self) -> Result<ServiceClient, ConfigError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::Duration {
                field: "timeout",
                reason: "positive",
            });
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            return Err(ConfigError::OutOfRange {
                field: "max_attempts",
                expected: "1 to 8",
            });
        }
        // A signer needs a caller whose name a token can carry.
        if let Some(signer) = &self.signer
            && self
                .caller
                .as_deref()
                .is_none_or(|caller| signer.sign(caller, SystemTime::now()).is_err())
        {
            return Err(ConfigError::OutOfRange {
                field: "caller",
                expected: "set with a signer, and a name a token can carry (1 to 128 of A-Z a-z 0-9 _ -)",
            });
        }
        let breaker = match self.breaker {
            Some(config) => config,
            None => CircuitBreakerConfig::builder("service-client")
                .consecutive_failures(5)
                .open_for(Duration::from_secs(30))
                .build()
                .map_err(|_| ConfigError::Duration {
                    field: "breaker",
                    reason: "a valid circuit breaker configuration",
                })?,
        };
        let signals = self.signals.clone();
        let listener: Option<Listener> = self
            .signals
            .as_ref()
            .map(|signals| Arc::new(signals.breaker_listener()) as Listener);
        let transport = TransportService(self.transport);
        let timeout = TimeoutLayer::deadline_aware(self.timeout, DEADLINE_MARGIN)
            .map_err(|_| ConfigError::Duration {
                field: "timeout",
                reason: "a valid timeout",
            })?
            .layer(transport);
        let breakers = Breakers {
            config: breaker,
            listener,
            timeout,
            by_instance: std::sync::RwLock::new(HashMap::default()),
        };
        Ok(ServiceClient {
            inner: Arc::new(Inner {
                discovery: self.discovery,
                breakers,
                strategy: self.strategy,
                policies: self.policies,
                caller: self
                    .caller
                    .as_deref()
                    .and_then(|c| HeaderValue::from_str(c).ok())
                    .map(Arc::new),
                caller_name: self.caller,
                signer: self.signer,
                max_attempts: self.max_attempts,
                min_attempt: self.min_attempt,
                health: self.health,
                rng: self.seed.map(Rng::with_seed).unwrap_or_default(),
                default_policy: TrafficPolicy::new(),
                signals,
            }),
        })
    }
}

#[derive(Clone)]
struct TransportService(Arc<dyn Transport>);

impl Service<Outbound> for TransportService {
    type Response = ServiceResponse;
    type Error = BoxError;
    type Future = futures_util::future::BoxFuture<'static, Result<ServiceResponse, BoxError>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Outbound) -> Self::Future {
        self.0.send(call)
    }
}

struct Inner {
    discovery: Discovery,
    breakers: Breakers,
    strategy: Arc<dyn Strategy>,
    policies: HashMap<String, TrafficPolicy>,
    caller: Option<Arc<HeaderValue>>,
    caller_name: Option<String>,
    signer: Option<ServiceTokenSigner>,
    max_attempts: u32,
    /// The least time left (the deadline's margin taken off) an attempt starts with.
    min_attempt: Duration,
    health: HealthFilter,
    rng: Rng,
    default_policy: TrafficPolicy,
    signals: Option<HealthSignals>,
}

/// Calls services by name; cheap to clone. See the module docs.
#[derive(Clone)]
pub struct ServiceClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("caller", &self.inner.caller_name)
            .finish_non_exhaustive()
    }
}

/// What an attempt's result means for the call.
enum Verdict {
    Done(ServiceResponse),
    Final(CallError),
    Failover(CallError),
}

impl Verdict {
    /// Whether the attempt shows the instance working, for its ejection: an answer below
    /// 500 (a 429 aside) does; a 5xx, a 429 or no answer does not, whether or not the call
    /// may fail over (a timed-out POST is final, and still the instance's failure).
    fn instance_works(&self) -> bool {
        match self {
            Verdict::Done(_) => true,
            Verdict::Final(CallError::Status { status, .. })
            | Verdict::Failover(CallError::Status { status, .. }) => {
                *status < 500 && *status != 429
            }
            Verdict::Final(_) | Verdict::Failover(_) => false,
        }
    }

    /// Whether the attempt was never sent, for a reason of the caller's: it tells nothing
    /// of the instance.
    fn not_sent(&self) -> bool {
        matches!(self, Verdict::Final(CallError::Transport { source, .. })
            if TransportError::is_not_sent(source))
    }
}

impl ServiceClient {
    /// A client over `discovery`, sending through `transport`.
    pub fn builder(discovery: Discovery, transport: Arc<dyn Transport>) -> ServiceClientBuilder {
        ServiceClientBuilder {
            discovery,
            transport,
            strategy: Arc::new(PowerOfTwoChoices::new()),
            policies: HashMap::new(),
            caller: None,
            signer: None,
            timeout: Duration::from_secs(3),
            max_attempts: 3,
            min_attempt: DEFAULT_MIN_ATTEMPT,
            breaker: None,
            health: HealthFilter::HealthyElseAll,
            signals: None,
            seed: None,
        }
    }

    /// The discovery this client uses.
    pub fn discovery(&self) -> &Discovery {
        &self.inner.discovery
    }

    /// Calls `service` with `request`; a 2xx or 3xx answer is a success.
    ///
    /// # Errors
    /// A [`CallError`] naming the step that failed.
    pub async fn call(&self, service: &str, request: ServiceRequest) -> Result<Reply, CallError> {
        let started = Instant::now();
        let metrics = request.metrics.clone();
        let result = self.attempts(service, request).await;
        if let Some(metrics) = metrics {
            let outcome = match &result {
                Ok(_) => "ok",
                Err(error) => error.step(),
            };
            let unknown = matches!(
                &result,
                Err(CallError::Discovery {
                    source: DiscoveryError::UnknownService { .. }
                        | DiscoveryError::InvalidName { .. },
                    ..
                })
            );
            if unknown {
                // One metric for every name no instance has (or can have): a metric per
                // name a caller made up would be a CloudWatch metric each, billed by the
                // month.
                let _ = metrics.count("ServiceCallUnknown", 1.0);
            } else {
                let _ = metrics.count(&format!("ServiceCall.{service}.{outcome}"), 1.0);
                let _ = metrics.timing(&format!("ServiceCallLatency.{service}"), started.elapsed());
            }
        }
        result
    }

    async fn attempts(
        &self,
        service: &str,
        mut request: ServiceRequest,
    ) -> Result<Reply, CallError> {
        let inner = &self.inner;
        // A name no service can have is refused first, whatever the time left: it must be
        // counted as such, never become a metric of its own.
        crate::validate_name(service).map_err(|source| CallError::Discovery {
            service: service.to_owned(),
            source: DiscoveryError::InvalidName {
                service: service.to_owned(),
                source,
            },
        })?;
        let query = Query::new(service)
            .tenant_opt(request.tenant.as_deref())
            .health(inner.health);
        let out_of_time = || CallError::Deadline {
            service: service.to_owned(),
        };
        // Discovery may query the registry in line (nothing cached yet, or a snapshot past
        // its stale limit): the caller's deadline bounds that wait too. A timer only when
        // it does not answer at once from its cache.
        // Read once for discovery and the first attempt, unless discovery had to wait.
        let mut left = time_left(&request);
        let found = {
            let mut discovering = std::pin::pin!(inner.discovery.discover(&query));
            match left {
                None => discovering.await,
                Some(time) if time.is_zero() => return Err(out_of_time()),
                Some(time) => match std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(std::future::Future::poll(discovering.as_mut(), cx))
                })
                .await
                {
                    std::task::Poll::Ready(found) => found,
                    std::task::Poll::Pending => {
                        let found = tokio::time::timeout(time, discovering)
                            .await
                            .map_err(|_| out_of_time())?;
                        left = time_left(&request);
                        found
                    }
                },
            }
        }
        .map_err(|source| CallError::Discovery {
            service: service.to_owned(),
            source,
        })?;
        // An edge of the dependency map once the callee is known to exist.
        if let Some(signals) = &inner.signals {
            signals.record_call(service);
        }
        self.identify(service, &mut request);
        let request = Arc::new(request);
        let policy = inner.policies.get(service).unwrap_or(&inner.default_policy);
        let mut tried = [0u32; MAX_ATTEMPTS as usize];
        let mut last: Option<CallError> = None;
        for attempt in 0..inner.max_attempts as usize {
            // A caller with less time left than an attempt needs gets none: it could only
            // time out, and count as the instance's failure (its breaker, its ejection).
            // An attempt that had that much and timed out at the deadline is the
            // instance's: a hung instance must open its breaker, whatever the deadlines.
            if attempt > 0 {
                left = time_left(&request);
            }
            if left.is_some_and(|left| left < inner.min_attempt) {
                return Err(last.unwrap_or_else(out_of_time));
            }
            let Some(index) = pick(&found, policy, &request, &tried[..attempt], inner) else {
                break;
            };
            let entry = found_entry(&found, index);
            // A retry is paid for only when there is an instance to retry on.
            if attempt > 0 && !found.budget().withdraw(false) {
                break;
            }
            tried[attempt] = index;
            let instance = entry.instance.clone();
            if let Some(scope) = &instance.tenant
                && request.tenant.as_deref() != Some(scope.as_str())
            {
                return Err(CallError::TenantRefused {
                    service: service.to_owned(),
                    instance: instance.id.to_string(),
                    scope: scope.clone(),
                    tenant: request.tenant.clone(),
                });
            }
            // Counted until the attempt ends, also when the caller drops the call mid-way.
            let in_flight = InFlight::count(entry);
            let stack = inner.breakers.stack(&instance);
            let attempt = async {
                let mut stack = stack?;
                match stack.ready().await {
                    Ok(ready) => {
                        ready
                            .call(Outbound {
                                instance: instance.clone(),
                                request: request.clone(),
                                caller: inner.caller.clone(),
                            })
                            .await
                    }
                    Err(error) => Err(error),
                }
            };
            let outcome = attempt.await;
            drop(in_flight);
            let verdict = judge(service, &instance.id, request.idempotent, outcome);
            if !verdict.not_sent() {
                report_entry(
                    found.ejections(),
                    entry,
                    verdict.instance_works(),
                    inner.discovery.eject_after(),
                );
            }
            match verdict {
                Verdict::Done(response) => {
                    found.budget().deposit();
                    return Ok(Reply {
                        service: instance.service.clone(),
                        instance: instance.id.clone(),
                        response,
                    });
                }
                Verdict::Final(error) => return Err(error),
                Verdict::Failover(error) => {
                    tracing::debug!(target: "lift::service_client", service, instance = %instance.id, error = %error, "attempt failed; failing over");
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or_else(|| CallError::Discovery {
            service: service.to_owned(),
            source: DiscoveryError::NoHealthyInstance {
                service: service.to_owned(),
                registered: found.len(),
            },
        }))
    }

    /// Signs the caller's token for `service`, the one called, so that it is good there
    /// alone.
    fn identify(&self, service: &str, request: &mut ServiceRequest) {
        let inner = &self.inner;
        let expires_at = SystemTime::now() + Duration::from_secs(60);
        // A service whose name a token cannot carry cannot require one for it either.
        if let (Some(signer), Some(caller)) = (&inner.signer, &inner.caller_name)
            && let Ok(token) = signer
                .sign_for(caller, service, expires_at)
                .or_else(|_| signer.sign(caller, expires_at))
            && let Ok(value) = HeaderValue::from_str(&token)
        {
            request.headers.insert("x-lift-service-token", value);
        }
    }
}

/// The time the request's deadline leaves for an attempt (its margin taken off), if it
/// has one.
fn time_left(request: &ServiceRequest) -> Option<Duration> {
    request.deadline.map(|deadline| {
        deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .saturating_sub(DEADLINE_MARGIN)
    })
}

fn found_entry(found: &Discovered, index: u32) -> &crate::discovery::Entry {
    found.entry_at(index)
}

/// Picks an instance not tried yet; its index in the snapshot.
fn pick(
    found: &Discovered,
    policy: &TrafficPolicy,
    request: &ServiceRequest,
    tried: &[u32],
    inner: &Inner,
) -> Option<u32> {
    let all = found.candidates();
    let call = CallInfo {
        headers: Some(&request.headers),
        tenant: request.tenant.as_deref(),
    };
    if tried.is_empty() {
        let position = policy.pick(&all, call, inner.strategy.as_ref(), &inner.rng)?;
        return Some(all.snapshot_index(position));
    }
    let mut buffer = vec![0u32; all.len()];
    let rest = all.subset(&mut buffer, |i| !tried.contains(&all.snapshot_index(i)))?;
    let position = policy.pick(&rest, call, inner.strategy.as_ref(), &inner.rng)?;
    Some(rest.snapshot_index(position))
}

fn judge(
    service: &str,
    instance: &str,
    idempotent: bool,
    outcome: Result<ServiceResponse, BoxError>,
) -> Verdict {
    match outcome {
        Ok(response) if response.status < 400 => Verdict::Done(response),
        Ok(response) => {
            // A 429 or 503 a Lift layer answered before the handler says so; any other
            // (a handler's own, say an open circuit of the call it made after writing
            // something), and a 502 or 504 (a crash, a timeout), may come after the handler
            // ran: only an idempotent request goes again.
            let refused = response
                .headers
                .get(lift_core::REFUSED_HEADER)
                .is_some_and(|v| v.as_bytes() == b"before-handler");
            let retryable = (matches!(response.status, 429 | 503) && (refused || idempotent))
                || (response.status >= 500 && idempotent);
            let error = CallError::Status {
                service: service.to_owned(),
                instance: instance.to_owned(),
                status: response.status,
                headers: Box::new(response.headers),
                body: response.body,
            };
            if retryable {
                Verdict::Failover(error)
            } else {
                Verdict::Final(error)
            }
        }
        Err(source) => {
            // An open circuit, an instance without a usable endpoint and a throttled or
            // refused invocation ran nothing; other failures may have reached the instance.
            let unsent = matches!(
                source.downcast_ref::<lift_core::Error>(),
                Some(lift_core::Error::CircuitOpen { .. })
            ) || source
                .downcast_ref::<crate::transport::TransportError>()
                .is_some_and(|e| {
                    matches!(
                        e,
                        crate::transport::TransportError::NoEndpoint { .. }
                            | crate::transport::TransportError::Throttled { .. }
                            | crate::transport::TransportError::NotInvoked { .. }
                            | crate::transport::TransportError::Unauthorized { .. }
                    )
                });
            let error = CallError::Transport {
                service: service.to_owned(),
                instance: instance.to_owned(),
                source,
            };
            // A request that could not be made here would fail the same way everywhere.
            let local = matches!(&error, CallError::Transport { source, .. }
                if TransportError::is_not_sent(source));
            if (unsent || idempotent) && !local {
                Verdict::Failover(error)
            } else {
                Verdict::Final(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::TransportError;

    /// Lambda refusing the caller ran nothing: the call may go to another instance whatever
    /// the request (a policy may name some functions and not others), the breaker does not
    /// count it, and the instance's ejection does, as for a 429.
    #[test]
    fn a_caller_lambda_refused_fails_over_and_opens_no_breaker() {
        let denied = || -> BoxError {
            Box::new(TransportError::Unauthorized {
                instance: "a".into(),
                code: "AccessDeniedException".into(),
                message: String::new(),
            })
        };
        assert!(!InstanceClassifier.is_failure(&Err(denied())));
        let verdict = judge("s", "a", false, Err(denied()));
        assert!(matches!(verdict, Verdict::Failover(_)));
        assert!(!verdict.not_sent());
        assert!(!verdict.instance_works());
        // A function error still counts.
        let crashed: BoxError = Box::new(TransportError::FunctionError {
            kind: "Unhandled".into(),
            payload: String::new(),
        });
        assert!(InstanceClassifier.is_failure(&Err(crashed)));
    }

    /// A throttled invocation ran nothing: even a request that is not idempotent goes to
    /// another instance. A function error may have run: only an idempotent one does.
    #[test]
    fn a_throttled_invocation_fails_over_whatever_the_request() {
        let throttled = || -> BoxError {
            Box::new(TransportError::Throttled {
                instance: "a".into(),
            })
        };
        assert!(matches!(
            judge("s", "a", false, Err(throttled())),
            Verdict::Failover(_)
        ));
        // As a 429 answer: not in the breaker, against the instance's ejection.
        assert!(!InstanceClassifier.is_failure(&Err(throttled())));
        assert!(!judge("s", "a", false, Err(throttled())).instance_works());
        let crashed = || -> BoxError {
            Box::new(TransportError::FunctionError {
                kind: "Unhandled".into(),
                payload: String::new(),
            })
        };
        assert!(matches!(
            judge("s", "a", false, Err(crashed())),
            Verdict::Final(_)
        ));
        assert!(matches!(
            judge("s", "a", true, Err(crashed())),
            Verdict::Failover(_)
        ));
        let not_invoked: BoxError = Box::new(TransportError::NotInvoked {
            instance: "a".into(),
            reason: "ResourceNotFoundException".into(),
        });
        assert!(matches!(
            judge("s", "a", false, Err(not_invoked)),
            Verdict::Failover(_)
        ));
    }
}
