//! Self-registration from an App: off the response path, renewed only while serving, health
//! reported, lease released on shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lift_core::testing::{TestApp, events, lambda_context};
use lift_core::{App, Context, Error, Result};
use lift_services::clock::TokioClock;
use lift_services::{
    ConfigError, Health, Instance, MemoryRegistry, RegisterExt, Registration, Registry,
    ServiceConfig,
};

const T0: u64 = 1_800_000_000_000;
const ARN: &str = "arn:aws:lambda:eu-west-1:123456789012:function:payments-fn:live";

async fn charge(ctx: Context) -> Result<&'static str> {
    if ctx.header("x-fail").is_some() {
        return Err(Error::internal("card network down"));
    }
    Ok("charged")
}

/// Waits (in tokio time) until `registry` holds what `check` accepts.
async fn until(registry: &dyn Registry, check: impl Fn(&[Instance]) -> bool) -> Vec<Instance> {
    for _ in 0..20_000 {
        let instances = registry.instances("payments").await.expect("query");
        if check(&instances) {
            return instances;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the registry never reached the expected state");
}

fn invocation(request_id: &str) -> lift_core::lambda_runtime::Context {
    let mut context = lambda_context(request_id);
    context.invoked_function_arn = ARN.to_owned();
    context
}

fn app(registry: Arc<dyn Registry>, config: ServiceConfig) -> TestApp {
    let registration = Registration::new(config)
        .expect("valid")
        .registry(registry)
        .clock(Arc::new(TokioClock::starting_at(T0)))
        .env_id("env-1", 7);
    TestApp::new(
        App::new()
            .post("/charges", charge)
            .register_with(registration),
    )
    .expect("app")
}

#[tokio::test(start_paused = true)]
async fn registers_on_the_first_invocation_and_renews_only_while_serving() {
    let registry = Arc::new(MemoryRegistry::new());
    let config = ServiceConfig::new("payments")
        .tag("pci")
        .lease(Duration::from_secs(600))
        .renew_every(Duration::from_secs(60));
    let app = app(registry.clone(), config);
    app.service().start_background();

    // Nothing is written before the first invocation says which alias callers reach.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(
        registry
            .instances("payments")
            .await
            .expect("query")
            .is_empty()
    );

    let event = events::http("POST", "/charges").v2();
    let response = app
        .invoke_with(&event, invocation("r1"))
        .await
        .expect("invoke");
    assert_eq!(response["statusCode"], 200);
    let instances = until(registry.as_ref(), |i| i.len() == 1).await;
    let instance = &instances[0];
    assert_eq!(instance.id.as_ref(), "payments-fn:live@eu-west-1");
    assert_eq!(instance.alias.as_deref(), Some("live"));
    assert_eq!(instance.version.as_deref(), Some("$LATEST"));
    assert_eq!(instance.region, "eu-west-1");
    assert_eq!(instance.endpoints.lambda_arn.as_deref(), Some(ARN));
    assert_eq!(instance.tags, ["pci"]);
    assert_eq!(instance.revision, 1);

    // Idle for ten intervals: no renewal.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let idle = registry.instances("payments").await.expect("query");
    assert_eq!(idle[0].revision, 1, "an idle environment writes nothing");

    // Serving again, with failures: the next renewal (at most one per interval) reports them.
    for n in 0..4 {
        let failing = events::http("POST", "/charges").header("x-fail", "1").v2();
        app.invoke_with(&failing, invocation(&format!("f{n}")))
            .await
            .expect("invoke");
    }
    let renewed = until(registry.as_ref(), |i| i[0].revision == 2).await;
    let now = T0 + 800_000;
    assert_eq!(renewed[0].health(now), Health::Unhealthy);
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(
        registry.instances("payments").await.expect("query")[0].revision,
        2,
        "no second write within the interval"
    );

    // Shutdown releases this environment's lease.
    app.service().lifecycle().shut_down();
    let released = until(registry.as_ref(), |i| i[0].environments.is_empty()).await;
    assert!(!released[0].is_live(now));
}

#[tokio::test]
async fn an_invalid_configuration_is_refused_before_any_write() {
    let refused = App::new().try_register(ServiceConfig::new("payments").weight(0));
    assert_eq!(refused.err(), Some(ConfigError::Weight { weight: 0 }));
    assert!(matches!(
        Registration::new(ServiceConfig::new("")),
        Err(ConfigError::EmptyName)
    ));
    // `register` logs and serves anyway, without a background task.
    let app = TestApp::new(
        App::new()
            .post("/charges", charge)
            .register(ServiceConfig::new("payments").region("moon-1")),
    )
    .expect("app");
    assert_eq!(app.service().start_background(), 0);
    let response = app
        .http(events::http("POST", "/charges").v2())
        .await
        .expect("invoke");
    assert_eq!(response.status, 200);
}

/// A running environment told its instance was deregistered stops registering it: the
/// instance stays gone, and the environment writes no more (the in-memory registry alone
/// would refuse its writes, so the writes are counted).
#[tokio::test(start_paused = true)]
async fn a_deregistered_instance_is_not_brought_back_by_a_running_environment() {
    let registry = Arc::new(crate::support::Counting::new(MemoryRegistry::new()));
    let config = ServiceConfig::new("payments")
        .lease(Duration::from_secs(2))
        .renew_every(Duration::from_secs(1));
    let app = app(registry.clone(), config);
    app.service().start_background();
    let event = events::http("POST", "/charges").v2();
    app.invoke_with(&event, invocation("r1"))
        .await
        .expect("invoke");
    let instances = until(registry.as_ref(), |i| i.len() == 1).await;
    registry
        .deregister("payments", &instances[0].id, u64::MAX / 2, 0)
        .await
        .expect("deregister");
    let before = registry.writes.load(Ordering::SeqCst);
    for n in 0..3 {
        app.invoke_with(&event, invocation(&format!("r{n}")))
            .await
            .expect("invoke");
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let read = registry.instances("payments").await.expect("query");
    assert!(read[0].deregistered && read[0].environments.is_empty());
    assert_eq!(
        registry.writes.load(Ordering::SeqCst),
        before + 1,
        "one refused renewal, then none"
    );
}

#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<String>>>);

impl lift_core::metrics::MetricsSink for Captured {
    fn write(&self, document: &str) {
        self.0.lock().expect("lock").push(document.to_owned());
    }
}

#[tokio::test(start_paused = true)]
async fn registry_writes_count_in_the_next_invocations_metrics() {
    let registry = Arc::new(MemoryRegistry::new());
    let registration = Registration::new(ServiceConfig::new("payments"))
        .expect("valid")
        .registry(registry.clone())
        .clock(Arc::new(TokioClock::starting_at(T0)))
        .env_id("env-1", 7);
    let sink = Captured::default();
    let app = TestApp::new(
        App::new()
            .post("/charges", charge)
            .metrics(lift_core::metrics::MetricsConfig::new("Shop").sink(sink.clone()))
            .register_with(registration),
    )
    .expect("app");
    app.service().start_background();
    let event = events::http("POST", "/charges").v2();
    app.invoke_with(&event, invocation("r1"))
        .await
        .expect("invoke");
    until(registry.as_ref(), |i| i.len() == 1).await;
    assert!(
        !sink
            .0
            .lock()
            .expect("lock")
            .join("\n")
            .contains("RegistryWrites"),
        "the first invocation flushed before the write"
    );
    app.invoke_with(&event, invocation("r2"))
        .await
        .expect("invoke");
    let documents = sink.0.lock().expect("lock").join("\n");
    assert!(documents.contains("\"RegistryWrites\""), "{documents}");
}

#[tokio::test(start_paused = true)]
async fn a_busy_environment_writes_at_most_sixteen_times_an_hour_at_the_defaults() {
    // The default interval is 5 minutes, jittered down by up to a fifth: one registration,
    // then between 12 and 15 renewals in an hour of invocations every 10 seconds.
    let registry = Arc::new(MemoryRegistry::new());
    let app = app(registry.clone(), ServiceConfig::new("payments"));
    app.service().start_background();
    let event = events::http("POST", "/charges").v2();
    for n in 0..360 {
        app.invoke_with(&event, invocation(&format!("r{n}")))
            .await
            .expect("invoke");
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let writes = registry.instances("payments").await.expect("query")[0].revision;
    eprintln!("registry writes in an hour of a busy environment at the defaults: {writes}");
    assert!((12..=16).contains(&writes), "{writes} writes");
}

/// A registry that has never heard of the instance, whatever it is asked to register.
struct NeverFound(std::sync::atomic::AtomicU32);

impl Registry for NeverFound {
    fn register<'a>(
        &'a self,
        instance: &'a Instance,
        _: &'a lift_services::EnvLease,
    ) -> futures_util::future::BoxFuture<'a, Result<Instance, lift_services::RegistryError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let error = lift_services::RegistryError::NotFound {
            service: instance.service.to_string(),
            id: instance.id.to_string(),
        };
        Box::pin(async move { Err(error) })
    }

    fn renew<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
        _: &'a lift_services::EnvLease,
        _: &'a [String],
    ) -> futures_util::future::BoxFuture<'a, Result<Instance, lift_services::RegistryError>> {
        let error = lift_services::RegistryError::NotFound {
            service: service.to_owned(),
            id: id.to_owned(),
        };
        Box::pin(async move { Err(error) })
    }

    fn release<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<(), lift_services::RegistryError>> {
        Box::pin(async { Ok(()) })
    }

    fn deregister<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: u64,
        _: u64,
    ) -> futures_util::future::BoxFuture<'a, Result<(), lift_services::RegistryError>> {
        Box::pin(async { Ok(()) })
    }

    fn set_health<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: Option<Health>,
    ) -> futures_util::future::BoxFuture<'a, Result<(), lift_services::RegistryError>> {
        Box::pin(async { Ok(()) })
    }

    fn instances<'a>(
        &'a self,
        _: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<Vec<Instance>, lift_services::RegistryError>>
    {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn scan(
        &self,
    ) -> futures_util::future::BoxFuture<'_, Result<Vec<Instance>, lift_services::RegistryError>>
    {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// A registry whose `register` answers NotFound (any implementation of the public trait
/// may) gets one write per interval like any failed write, not a loop writing again at
/// once. (It looped: a busy task writing without end.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_that_answers_not_found_waits_the_interval() {
    let registry = Arc::new(NeverFound(std::sync::atomic::AtomicU32::new(0)));
    let config = ServiceConfig::new("payments").renew_every(Duration::from_secs(60));
    let app = app(registry.clone(), config);
    app.service().start_background();
    let event = events::http("POST", "/charges").v2();
    app.invoke_with(&event, invocation("r1"))
        .await
        .expect("answer");
    // Real time, on another worker than the registration's: a looping task writes
    // thousands of times in it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writes = registry.0.load(Ordering::SeqCst);
    assert!((1..=4).contains(&writes), "{writes} registry writes");
}
