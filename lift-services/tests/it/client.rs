//! The service client against in-process Lift Apps standing in for services, reached
//! through the real discovery path: decode, propagation, failover and ejection, errors
//! naming their step, tenant scope, topology metrics.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::Method;
use lift_core::metrics::{MetricsConfig, MetricsSink};
use lift_core::testing::{TestApp, events};
use lift_core::{App, Context, Error, Json, LiftService};
use lift_middleware::circuit_breaker::CircuitBreakerConfig;
use lift_middleware::service_auth::{ServiceAuthConfig, ServiceAuthLayer, ServiceTokenSigner};
use lift_services::balance::RoundRobin;
use lift_services::client::{CallError, ServiceClient};
use lift_services::clock::SystemClock;
use lift_services::discovery::{Discovery, DiscoveryConfig, DiscoveryError};
use lift_services::health::HealthSignals;
use lift_services::transport::{InProcessTransport, ServiceRequest};
use lift_services::{Endpoints, Instance, MemoryRegistry, Registry};
use serde_json::{Value, json};

use crate::support::lease;

const T0: u64 = 1_800_000_000_000;

fn arn(id: &str) -> String {
    format!("arn:aws:lambda:eu-west-1:123456789012:function:payments-{id}:live")
}

/// A fake `payments` instance: echoes what it received, counting calls.
fn payments(name: &'static str, calls: Arc<AtomicUsize>) -> LiftService {
    let charge = move |ctx: Context| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let header = |n: &str| ctx.header(n).map(str::to_owned);
            Ok::<_, Error>(Json(json!({
                "instance": name,
                "tenant": header("x-tenant-id"),
                "correlation": header("x-correlation-id"),
                "trace": header("x-amzn-trace-id"),
                "caller": header("x-lift-caller"),
                "body": String::from_utf8_lossy(ctx.body()),
            })))
        }
    };
    App::new()
        .post("/charges", charge.clone())
        .get("/charges", charge)
        .into_service()
        .expect("app")
}

/// A fake instance answering every call with `status`.
fn failing(status: u16, calls: Arc<AtomicUsize>) -> LiftService {
    let fail = move |_ctx: Context| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<String, _>(Error::new(
                http::StatusCode::from_u16(status).expect("status"),
                "down",
                "the instance is down",
            ))
        }
    };
    App::new()
        .post("/charges", fail.clone())
        .get("/charges", fail)
        .into_service()
        .expect("app")
}

async fn registry_with(instances: &[(&str, Option<&str>)]) -> Arc<MemoryRegistry> {
    let registry = Arc::new(MemoryRegistry::new());
    for (id, tenant) in instances {
        let mut instance = Instance::new("payments", *id, "eu-west-1", Endpoints::lambda(arn(id)));
        instance.tenant = tenant.map(str::to_owned);
        registry
            .register(&instance, &lease("env", T0, u64::MAX / 2))
            .await
            .expect("register");
    }
    registry
}

fn client(registry: Arc<MemoryRegistry>, transport: InProcessTransport) -> ServiceClient {
    ServiceClient::builder(Discovery::new(registry), Arc::new(transport))
        .caller("orders")
        .strategy(Arc::new(RoundRobin::new()))
        .build()
        .expect("client")
}

#[tokio::test]
async fn a_call_goes_through_discovery_to_the_fake_and_decodes() {
    let calls = Arc::new(AtomicUsize::new(0));
    let registry = registry_with(&[("a", None)]).await;
    let transport = InProcessTransport::new().serve(arn("a"), payments("a", calls.clone()));
    let client = client(registry, transport);
    let request = ServiceRequest::post("/charges")
        .json(&json!({"amount": 42}))
        .expect("json")
        .tenant("acme");
    let reply = client.call("payments", request).await.expect("reply");
    assert_eq!(reply.instance.as_ref(), "a");
    let body: Value = reply.json().expect("decoded");
    assert_eq!(body["instance"], "a");
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["caller"], "orders");
    assert_eq!(body["body"], r#"{"amount":42}"#);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Errors name their step.
    let decode = reply.json::<Vec<u32>>().expect_err("not a list");
    assert_eq!(decode.step(), "decode");
    let unknown = client
        .call("nobody", ServiceRequest::get("/x"))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.step(), "discovery");
    assert!(matches!(
        unknown,
        CallError::Discovery {
            source: DiscoveryError::UnknownService { .. },
            ..
        }
    ));
    let missing = client
        .call("payments", ServiceRequest::get("/missing"))
        .await
        .expect_err("404");
    assert!(
        matches!(missing, CallError::Status { status: 404, .. }),
        "{missing:?}"
    );
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

impl MetricsSink for Captured {
    fn write(&self, document: &str) {
        self.0.lock().expect("lock").push(document.to_owned());
    }
}

#[tokio::test]
async fn a_handler_call_propagates_trace_and_correlation_and_records_the_edge() {
    let registry = registry_with(&[("a", None)]).await;
    let transport =
        InProcessTransport::new().serve(arn("a"), payments("a", Arc::new(AtomicUsize::new(0))));
    let client = client(registry, transport);
    let unknown = client.clone();
    let ghost = move |ctx: Context| {
        let client = unknown.clone();
        async move {
            client
                .call(
                    "ghost",
                    ServiceRequest::from_context(&ctx, Method::POST, "/charges"),
                )
                .await
                .map_err(Error::internal)?;
            Ok::<_, Error>(Json(Value::Null))
        }
    };
    let place = move |ctx: Context| {
        let client = client.clone();
        async move {
            let reply = client
                .call(
                    "payments",
                    ServiceRequest::from_context(&ctx, Method::POST, "/charges"),
                )
                .await
                .map_err(Error::internal)?;
            Ok::<_, Error>(Json(reply.json::<Value>().map_err(Error::internal)?))
        }
    };
    let sink = Captured::default();
    let orders = TestApp::new(
        App::new()
            .post("/orders", place)
            .post("/ghost", ghost)
            .metrics(MetricsConfig::new("Shop").sink(sink.clone())),
    )
    .expect("app");
    let response = orders
        .http(
            events::http("POST", "/orders")
                .header("x-correlation-id", "corr-7")
                .v2(),
        )
        .await
        .expect("invoke");
    assert_eq!(response.status, 200, "{}", response.text());
    let body: Value = response.json().expect("json");
    assert_eq!(body["correlation"], "corr-7");
    assert_eq!(
        body["trace"],
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    );
    assert_eq!(body["caller"], "orders");
    let documents = sink.0.lock().expect("lock").join("\n");
    assert!(
        documents.contains("ServiceCall.payments.ok")
            && documents.contains("ServiceCallLatency.payments"),
        "{documents}"
    );

    // A callee no instance has counts in one metric, not one of its own per name.
    let response = orders
        .http(events::http("POST", "/ghost").v2())
        .await
        .expect("invoke");
    assert_eq!(response.status, 500, "{}", response.text());
    let documents = sink.0.lock().expect("lock").join("\n");
    assert!(documents.contains("ServiceCallUnknown"), "{documents}");
    assert!(!documents.contains("ServiceCall.ghost"), "{documents}");
    assert!(
        !documents.contains("ServiceCallLatency.ghost"),
        "{documents}"
    );
}

#[tokio::test]
async fn a_failing_instance_is_failed_over_and_ejected() {
    let good_calls = Arc::new(AtomicUsize::new(0));
    let bad_calls = Arc::new(AtomicUsize::new(0));
    let registry = registry_with(&[("good", None), ("bad", None), ("gone", None)]).await;
    // `gone` is registered but nothing serves it: the call never leaves.
    let transport = InProcessTransport::new()
        .serve(arn("good"), payments("good", good_calls.clone()))
        .serve(arn("bad"), failing(503, bad_calls.clone()));
    let client = client(registry, transport);
    for n in 0..30 {
        let reply = client
            .call("payments", ServiceRequest::get("/charges"))
            .await
            .unwrap_or_else(|e| panic!("call {n} failed over: {e:?}"));
        assert_eq!(reply.instance.as_ref(), "good");
    }
    assert_eq!(good_calls.load(Ordering::SeqCst), 30);
    assert_eq!(
        bad_calls.load(Ordering::SeqCst),
        3,
        "ejected after three consecutive failures"
    );
}

/// The instance's own circuit breaker opens after consecutive failures: later calls fail
/// fast without reaching it, name the transport step, and the open breaker shows in the
/// health the registration reports. Other instances' breakers stay closed.
#[tokio::test]
async fn an_instance_breaker_opens_and_calls_fail_fast() {
    let bad_calls = Arc::new(AtomicUsize::new(0));
    let good_calls = Arc::new(AtomicUsize::new(0));
    let refunds_calls = Arc::new(AtomicUsize::new(0));
    let refunds_arn = "arn:aws:lambda:eu-west-1:123456789012:function:refunds:live";
    let registry = registry_with(&[("bad", None)]).await;
    let signals = HealthSignals::new();
    let transport = InProcessTransport::new()
        .serve(arn("bad"), failing(503, bad_calls.clone()))
        .serve(arn("good"), payments("good", good_calls.clone()))
        .serve(refunds_arn, payments("refunds", refunds_calls.clone()));
    let discovery = Discovery::with_config(
        registry.clone(),
        DiscoveryConfig::default().eject_after(100),
        Arc::new(SystemClock),
    );
    let client = ServiceClient::builder(discovery, Arc::new(transport))
        .caller("orders")
        .max_attempts(1)
        .signals(signals.clone())
        .breaker(
            CircuitBreakerConfig::builder("payments")
                .consecutive_failures(2)
                .open_for(std::time::Duration::from_secs(60))
                .build()
                .expect("config"),
        )
        .build()
        .expect("client");
    for _ in 0..2 {
        let error = client
            .call("payments", ServiceRequest::get("/charges"))
            .await
            .expect_err("503");
        assert!(
            matches!(error, CallError::Status { status: 503, .. }),
            "{error:?}"
        );
    }
    for _ in 0..5 {
        let error = client
            .call("payments", ServiceRequest::get("/charges"))
            .await
            .expect_err("open");
        assert_eq!(error.step(), "transport", "{error:?}");
        assert!(
            matches!(
                &error,
                CallError::Transport { instance, source, .. }
                    if instance == "bad"
                        && matches!(source.downcast_ref::<Error>(), Some(Error::CircuitOpen { .. }))
            ),
            "{error:?}"
        );
    }
    assert_eq!(
        bad_calls.load(Ordering::SeqCst),
        2,
        "nothing sent while open"
    );
    assert_eq!(signals.take().open_breakers, 1);

    // Another instance of the service has a breaker of its own, closed.
    let mut good = Instance::new(
        "payments",
        "good",
        "eu-west-1",
        Endpoints::lambda(arn("good")),
    );
    good.weight = 1000;
    registry
        .register(&good, &lease("env", T0, u64::MAX / 2))
        .await
        .expect("register");
    client
        .discovery()
        .refresh("payments")
        .await
        .expect("refresh");
    let mut reached = false;
    for _ in 0..20 {
        if let Ok(reply) = client
            .call("payments", ServiceRequest::get("/charges"))
            .await
        {
            assert_eq!(reply.instance.as_ref(), "good");
            reached = true;
        }
    }
    assert!(reached, "the closed instance takes calls");
    assert_eq!(bad_calls.load(Ordering::SeqCst), 2);

    // Another service's instance with the same id has a breaker of its own, closed: ids
    // are unique within a service only.
    registry
        .register(
            &Instance::new(
                "refunds",
                "bad",
                "eu-west-1",
                Endpoints::lambda(refunds_arn),
            ),
            &lease("env", T0, u64::MAX / 2),
        )
        .await
        .expect("register");
    let reply = client
        .call("refunds", ServiceRequest::get("/charges"))
        .await
        .expect("refunds' own breaker is closed");
    assert_eq!(reply.instance.as_ref(), "bad");
    assert_eq!(refunds_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_non_idempotent_call_is_not_replayed_after_a_server_error() {
    let calls = Arc::new(AtomicUsize::new(0));
    let other = Arc::new(AtomicUsize::new(0));
    let registry = registry_with(&[("a", None), ("b", None)]).await;
    let transport = InProcessTransport::new()
        .serve(arn("a"), failing(500, calls.clone()))
        .serve(arn("b"), failing(500, other.clone()));
    let client = client(registry, transport);
    let error = client
        .call("payments", ServiceRequest::post("/charges"))
        .await
        .expect_err("500");
    assert!(
        matches!(error, CallError::Status { status: 500, .. }),
        "{error:?}"
    );
    assert_eq!(error.step(), "status");
    assert_eq!(
        calls.load(Ordering::SeqCst) + other.load(Ordering::SeqCst),
        1,
        "sent once"
    );
}

/// A 502 or 504 may come after the handler ran (a crash, a timeout), and so may a 503 the
/// handler returned (an open circuit of its own outbound call, after it wrote something): a
/// request that is not idempotent is not sent to a second instance. A 503 a layer answered
/// before the handler (the callee's refusal header says so) still fails over.
#[tokio::test]
async fn a_non_idempotent_call_is_not_replayed_after_the_handler_may_have_run() {
    for status in [502, 504, 503] {
        let calls = Arc::new(AtomicUsize::new(0));
        let other = Arc::new(AtomicUsize::new(0));
        let registry = registry_with(&[("a", None), ("b", None)]).await;
        let transport = InProcessTransport::new()
            .serve(arn("a"), failing(status, calls.clone()))
            .serve(arn("b"), failing(status, other.clone()));
        let error = client(registry, transport)
            .call("payments", ServiceRequest::post("/charges"))
            .await
            .expect_err("gateway error");
        assert!(
            matches!(error, CallError::Status { status: s, .. } if s == status),
            "{error:?}"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst) + other.load(Ordering::SeqCst),
            1,
            "{status}: sent once"
        );
    }
    let refused = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let good = Arc::new(AtomicUsize::new(0));
    let registry = registry_with(&[("a", None), ("b", None)]).await;
    let transport = InProcessTransport::new()
        .serve(arn("a"), refusing(refused.clone(), ran.clone()))
        .serve(arn("b"), payments("b", good.clone()));
    let client = client(registry, transport);
    for _ in 0..2 {
        let reply = client
            .call("payments", ServiceRequest::post("/charges"))
            .await
            .expect("a refusal fails over");
        assert_eq!(reply.instance.as_ref(), "b");
    }
    assert!(refused.load(Ordering::SeqCst) >= 1);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(good.load(Ordering::SeqCst), 2);
}

/// A refusal that cannot fail over (one instance) comes back with its headers: the
/// caller sees that the handler never ran, so a request that is not idempotent may be
/// sent again later.
#[tokio::test]
async fn a_status_error_keeps_the_answers_headers() {
    let refused = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let registry = registry_with(&[("a", None)]).await;
    let transport =
        InProcessTransport::new().serve(arn("a"), refusing(refused.clone(), ran.clone()));
    let error = client(registry, transport)
        .call("payments", ServiceRequest::post("/charges"))
        .await
        .expect_err("refused");
    let CallError::Status {
        status, headers, ..
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!(*status, 503);
    assert_eq!(
        headers
            .get(lift_core::REFUSED_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some("before-handler")
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

/// A fake instance whose layer refuses every call with a full bulkhead (503) before its
/// handler: `refused` counts the refusals, `ran` the handler's runs.
fn refusing(refused: Arc<AtomicUsize>, ran: Arc<AtomicUsize>) -> LiftService {
    let handler = move |_ctx: Context| {
        let ran = ran.clone();
        async move {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Error>("charged")
        }
    };
    let layer = tower::layer::layer_fn(move |_inner: lift_core::BoxService| {
        let refused = refused.clone();
        tower::service_fn(move |_ctx: Context| {
            refused.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<lift_core::Response, lift_core::BoxError>(Box::new(Error::BulkheadFull {
                    name: "charges".into(),
                }))
            }
        })
    });
    App::new()
        .post("/charges", handler)
        .layer(layer)
        .into_service()
        .expect("app")
}

/// A call the caller stops waiting for (a timeout around it, a `select!`) no longer counts
/// as in flight: the load-aware balancers would otherwise avoid that instance for good.
#[tokio::test]
async fn a_dropped_call_is_no_longer_counted_in_flight() {
    let slow = move |_ctx: Context| async move {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        Ok::<_, Error>("late")
    };
    let registry = registry_with(&[("a", None)]).await;
    let transport = InProcessTransport::new().serve(
        arn("a"),
        App::new()
            .get("/charges", slow)
            .into_service()
            .expect("app"),
    );
    let client = client(registry, transport);
    let abandoned = tokio::time::timeout(
        std::time::Duration::from_millis(20),
        client.call("payments", ServiceRequest::get("/charges")),
    )
    .await;
    assert!(abandoned.is_err(), "the caller gave up first");
    let found = client
        .discovery()
        .discover(&lift_services::discovery::Query::new("payments"))
        .await
        .expect("discover");
    let candidates = found.candidates();
    assert_eq!(candidates.len(), 1);
    assert_eq!(candidates.outstanding(0), 0, "nothing left in flight");
}

/// A call whose deadline has passed is not sent, and counts against no instance: calls
/// made out of time do not eject healthy instances for the calls that have time.
#[tokio::test]
async fn a_call_out_of_time_sends_nothing_and_blames_no_instance() {
    let calls = Arc::new(AtomicUsize::new(0));
    let registry = registry_with(&[("a", None), ("b", None), ("c", None)]).await;
    let transport = ["a", "b", "c"]
        .into_iter()
        .fold(InProcessTransport::new(), |t, id| {
            t.serve(arn(id), payments("any", calls.clone()))
        });
    let client = client(registry, transport);
    for _ in 0..10 {
        let error = client
            .call(
                "payments",
                ServiceRequest::get("/charges").deadline(std::time::SystemTime::now()),
            )
            .await
            .expect_err("out of time");
        assert!(matches!(error, CallError::Deadline { .. }), "{error:?}");
        assert_eq!(error.step(), "deadline");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing sent");
    let found = client
        .discovery()
        .discover(&lift_services::discovery::Query::new("payments"))
        .await
        .expect("no instance ejected");
    assert_eq!(found.len(), 3);
    let in_time = ServiceRequest::get("/charges")
        .deadline(std::time::SystemTime::now() + std::time::Duration::from_secs(5));
    client
        .call("payments", in_time)
        .await
        .expect("a call with time");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A fake instance that answers after `delay`.
fn slow(delay: std::time::Duration, calls: Arc<AtomicUsize>) -> LiftService {
    let answer = move |_ctx: Context| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            Ok::<_, Error>("done")
        }
    };
    App::new()
        .get("/charges", answer)
        .into_service()
        .expect("app")
}

/// A caller with less time left than an attempt needs sends nothing, and blames no
/// instance: calls reaching a healthy 100 ms instance with 80 ms left end with `Deadline`,
/// and neither eject it nor open its breaker, so the calls that have time still reach it.
/// (Each timed out there, and counted as its failure: ejected after 3, breaker open for
/// 30 s.)
#[tokio::test(start_paused = true)]
async fn a_caller_short_of_time_sends_nothing_and_blames_no_instance() {
    use std::time::{Duration, SystemTime};
    let slow_calls = Arc::new(AtomicUsize::new(0));
    let registry = registry_with(&[("a", None), ("b", None)]).await;
    let transport = InProcessTransport::new()
        .serve(
            arn("a"),
            slow(Duration::from_millis(100), slow_calls.clone()),
        )
        .serve(arn("b"), payments("b", Arc::new(AtomicUsize::new(0))));
    let client = client(registry, transport);
    for _ in 0..8 {
        let short = ServiceRequest::get("/charges")
            .deadline(SystemTime::now() + Duration::from_millis(130));
        let error = client
            .call("payments", short)
            .await
            .expect_err("too little time");
        assert!(matches!(error, CallError::Deadline { .. }), "{error:?}");
    }
    assert_eq!(slow_calls.load(Ordering::SeqCst), 0, "nothing sent");
    let found = client
        .discovery()
        .discover(&lift_services::discovery::Query::new("payments"))
        .await
        .expect("discover");
    assert_eq!(found.candidates().len(), 2, "no instance ejected");
    for _ in 0..2 {
        let in_time =
            ServiceRequest::get("/charges").deadline(SystemTime::now() + Duration::from_secs(5));
        client.call("payments", in_time).await.expect("in time");
    }
    assert_eq!(
        slow_calls.load(Ordering::SeqCst),
        1,
        "a call with time reaches the slow instance: its breaker is closed"
    );
}

/// An attempt that had time and timed out at its caller's deadline is the instance's
/// failure: a hung instance is ejected, and later calls go to the one that answers, even
/// though every caller's deadline comes before the client's own 3 s timeout (as with a
/// Lambda timeout of 3 s). Real time: the attempts time out at their deadline.
#[tokio::test]
async fn a_hung_instance_is_ejected_though_deadlines_cut_its_attempts() {
    use std::time::{Duration, SystemTime};
    let hung_calls = Arc::new(AtomicUsize::new(0));
    let registry = registry_with(&[("h", None), ("b", None)]).await;
    let transport = InProcessTransport::new()
        .serve(arn("h"), slow(Duration::from_secs(5), hung_calls.clone()))
        .serve(arn("b"), payments("b", Arc::new(AtomicUsize::new(0))));
    let client = client(registry, transport);
    let call = || {
        client.call(
            "payments",
            ServiceRequest::get("/charges")
                .deadline(SystemTime::now() + Duration::from_millis(400)),
        )
    };
    for _ in 0..8 {
        let _ = call().await;
    }
    let hung = hung_calls.load(Ordering::SeqCst);
    assert!((1..=3).contains(&hung), "ejected after 3 failures: {hung}");
    for _ in 0..3 {
        let reply = call().await.expect("the instance that answers");
        assert_eq!(reply.instance.as_ref(), "b");
    }
    assert_eq!(hung_calls.load(Ordering::SeqCst), hung);
}

/// The deadline bounds discovery as well: with nothing cached and a registry that does
/// not answer, a call ends at its deadline, not after the registry's own time limits.
#[tokio::test(start_paused = true)]
async fn a_call_waits_for_discovery_no_longer_than_its_deadline() {
    use std::time::{Duration, SystemTime};
    let registry = Arc::new(crate::support::Counting::new(MemoryRegistry::new()));
    let instance = Instance::new("payments", "a", "eu-west-1", Endpoints::lambda(arn("a")));
    registry
        .register(&instance, &lease("env", T0, u64::MAX / 2))
        .await
        .expect("register");
    registry.stalled.store(true, Ordering::SeqCst);
    let calls = Arc::new(AtomicUsize::new(0));
    let transport = InProcessTransport::new().serve(arn("a"), payments("a", calls.clone()));
    let client = ServiceClient::builder(Discovery::new(registry.clone()), Arc::new(transport))
        .build()
        .expect("client");
    let started = tokio::time::Instant::now();
    let request =
        ServiceRequest::get("/charges").deadline(SystemTime::now() + Duration::from_millis(300));
    let error = client
        .call("payments", request)
        .await
        .expect_err("out of time");
    assert!(matches!(error, CallError::Deadline { .. }), "{error:?}");
    // The deadline less its margin; the real clock read in between may take a little off.
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(240)..=Duration::from_millis(250)).contains(&waited),
        "{waited:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // The query the caller stopped waiting for goes on: once it answers, its snapshot
    // serves the next call, which makes no query of its own.
    tokio::time::sleep(Duration::from_secs(10)).await;
    client
        .call("payments", ServiceRequest::get("/charges"))
        .await
        .expect("served from the snapshot the first query brought");
    assert_eq!(registry.queries.load(Ordering::SeqCst), 1);
}

/// A request that cannot be made (here a path with a space, no valid URI) is the caller's
/// to fix: it is not sent, not failed over (every instance would refuse it alike), and
/// counts against no instance. Five of them to one instance (a sticky key) used to count as
/// its failures, eject it and open its breaker, refusing every valid call for 30 s.
#[tokio::test]
async fn a_request_that_cannot_be_made_blames_no_instance() {
    use lift_services::transport::{HttpTransport, TransportError};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let served = Arc::new(AtomicUsize::new(0));
    let counted = served.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut buffer = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buffer[..n]),
                }
            }
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
            let _ = socket.write_all(answer).await;
        }
    });
    let registry = Arc::new(MemoryRegistry::new());
    for id in ["a", "b"] {
        let instance = Instance::new(
            "users",
            id,
            "eu-west-1",
            Endpoints::http(format!("http://{address}")),
        );
        registry
            .register(&instance, &lease("env", T0, u64::MAX / 2))
            .await
            .expect("register");
    }
    /// Counts the attempts handed to the transport.
    struct Attempts(HttpTransport, AtomicUsize);
    impl lift_services::transport::Transport for Attempts {
        fn send(
            &self,
            call: lift_services::transport::Outbound,
        ) -> futures_util::future::BoxFuture<
            'static,
            Result<lift_services::transport::ServiceResponse, lift_core::BoxError>,
        > {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.send(call)
        }
    }
    let transport = Arc::new(Attempts(
        HttpTransport::new().expect("transport"),
        AtomicUsize::new(0),
    ));
    let client = ServiceClient::builder(Discovery::new(registry), transport.clone())
        .policy(
            "users",
            lift_services::policy::TrafficPolicy::new().sticky_header("x-user"),
        )
        .build()
        .expect("client");
    let request = |path: &str| {
        ServiceRequest::get(path).header(
            http::HeaderName::from_static("x-user"),
            http::HeaderValue::from_static("u1"),
        )
    };
    let first = client
        .call("users", request("/users/jose"))
        .await
        .expect("a valid call");
    for _ in 0..5 {
        let error = client
            .call("users", request("/users/José Díaz"))
            .await
            .expect_err("not a URI");
        let CallError::Transport { source, .. } = &error else {
            panic!("{error:?}")
        };
        assert!(
            matches!(
                source.downcast_ref::<TransportError>(),
                Some(TransportError::NotSent { .. })
            ),
            "{error:?}"
        );
    }
    assert_eq!(served.load(Ordering::SeqCst), 1, "nothing more was sent");
    assert_eq!(
        transport.1.load(Ordering::SeqCst),
        6,
        "one attempt each: not failed over"
    );
    let again = client
        .call("users", request("/users/jose"))
        .await
        .expect("a valid call goes through");
    assert_eq!(
        again.instance, first.instance,
        "the same instance: neither ejected nor its breaker open"
    );
}

/// A name its caller chose (a path parameter, say) leaves nothing behind unless it is a
/// service's: an invalid one is refused before discovery, an unknown one is not an edge of
/// the dependency map; only a call that found its service counts.
#[tokio::test]
async fn only_calls_to_a_found_service_are_edges() {
    let calls = Arc::new(AtomicUsize::new(0));
    let registry = registry_with(&[("a", None)]).await;
    let signals = HealthSignals::new();
    let transport = InProcessTransport::new().serve(arn("a"), payments("a", calls.clone()));
    let client = ServiceClient::builder(Discovery::new(registry), Arc::new(transport))
        .signals(signals.clone())
        .build()
        .expect("client");
    for name in ["Payments", "../admin", &"p".repeat(65)] {
        // Out of time or not, an invalid name is refused as such.
        let late = ServiceRequest::get("/charges").deadline(std::time::SystemTime::now());
        for request in [ServiceRequest::get("/charges"), late] {
            let error = client.call(name, request).await.expect_err("invalid");
            assert!(
                matches!(
                    &error,
                    CallError::Discovery {
                        source: DiscoveryError::InvalidName { .. },
                        ..
                    }
                ),
                "{name}: {error:?}"
            );
        }
    }
    let error = client
        .call("ghost", ServiceRequest::get("/charges"))
        .await
        .expect_err("unknown");
    assert!(
        matches!(
            &error,
            CallError::Discovery {
                source: DiscoveryError::UnknownService { .. },
                ..
            }
        ),
        "{error:?}"
    );
    assert!(signals.calls().is_empty(), "{:?}", signals.calls());
    client
        .call("payments", ServiceRequest::get("/charges"))
        .await
        .expect("found");
    assert_eq!(
        signals.calls(),
        std::collections::BTreeMap::from([("payments".to_owned(), 1)])
    );
}

/// A service whose only instance reported failing (its last renewal) still gets calls by
/// default: it renews only when invoked, so without them its report never changes and it
/// would stay unreachable after it recovered.
#[tokio::test]
async fn a_service_reported_failing_everywhere_still_gets_calls() {
    let calls = Arc::new(AtomicUsize::new(0));
    let registry = Arc::new(MemoryRegistry::new());
    let mut failing = lease("env", T0, u64::MAX / 2);
    failing.report.error_rate = 0.8;
    registry
        .register(
            &Instance::new("payments", "a", "eu-west-1", Endpoints::lambda(arn("a"))),
            &failing,
        )
        .await
        .expect("register");
    let transport = InProcessTransport::new().serve(arn("a"), payments("a", calls.clone()));
    let reply = client(registry.clone(), transport)
        .call("payments", ServiceRequest::get("/charges"))
        .await
        .expect("the recovered instance is called");
    assert_eq!(reply.instance.as_ref(), "a");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Healthy-only, as asked: refused before sending.
    let strict = ServiceClient::builder(
        Discovery::new(registry),
        Arc::new(InProcessTransport::new().serve(arn("a"), payments("a", calls.clone()))),
    )
    .health(lift_services::discovery::HealthFilter::HealthyOnly)
    .build()
    .expect("client");
    let error = strict
        .call("payments", ServiceRequest::get("/charges"))
        .await
        .expect_err("no healthy instance");
    assert!(
        matches!(
            error,
            CallError::Discovery {
                source: DiscoveryError::NoHealthyInstance { .. },
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A call that cannot fail over (a POST) still counts its timeout against the instance:
/// after three in a row it is ejected and the calls go to the other instance.
#[tokio::test(start_paused = true)]
async fn a_final_failure_still_counts_towards_ejection() {
    let slow_calls = Arc::new(AtomicUsize::new(0));
    let good_calls = Arc::new(AtomicUsize::new(0));
    let counter = slow_calls.clone();
    let slow = move |_ctx: Context| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            Ok::<_, Error>("late")
        }
    };
    let registry = registry_with(&[("slow", None), ("good", None)]).await;
    let transport = InProcessTransport::new()
        .serve(
            arn("slow"),
            App::new()
                .post("/charges", slow)
                .into_service()
                .expect("app"),
        )
        .serve(arn("good"), payments("good", good_calls.clone()));
    let client = ServiceClient::builder(Discovery::new(registry), Arc::new(transport))
        .strategy(Arc::new(RoundRobin::new()))
        .timeout(std::time::Duration::from_millis(100))
        .build()
        .expect("client");
    for _ in 0..12 {
        let _ = client
            .call("payments", ServiceRequest::post("/charges"))
            .await;
    }
    assert_eq!(
        slow_calls.load(Ordering::SeqCst),
        3,
        "ejected after three timeouts"
    );
    assert_eq!(good_calls.load(Ordering::SeqCst), 9);
}

#[tokio::test]
async fn no_call_crosses_tenants() {
    let a_calls = Arc::new(AtomicUsize::new(0));
    let b_calls = Arc::new(AtomicUsize::new(0));
    let registry = registry_with(&[("a", Some("tenant-a")), ("b", Some("tenant-b"))]).await;
    let transport = InProcessTransport::new()
        .serve(arn("a"), payments("a", a_calls.clone()))
        .serve(arn("b"), payments("b", b_calls.clone()));
    let client = client(registry, transport);
    let mut rng = fastrand::Rng::with_seed(9);
    for _ in 0..1000 {
        let (tenant, expected) = if rng.bool() {
            ("tenant-a", "a")
        } else {
            ("tenant-b", "b")
        };
        let reply = client
            .call("payments", ServiceRequest::get("/charges").tenant(tenant))
            .await
            .expect("reply");
        assert_eq!(reply.instance.as_ref(), expected);
        assert_eq!(reply.json::<Value>().expect("json")["tenant"], tenant);
    }
    let before = a_calls.load(Ordering::SeqCst) + b_calls.load(Ordering::SeqCst);
    assert_eq!(before, 1000);
    // Another tenant, and no tenant: nothing is sent.
    for request in [
        ServiceRequest::get("/charges").tenant("tenant-c"),
        ServiceRequest::get("/charges"),
    ] {
        let refused = client.call("payments", request).await.expect_err("refused");
        assert_eq!(refused.step(), "discovery");
    }
    assert_eq!(
        a_calls.load(Ordering::SeqCst) + b_calls.load(Ordering::SeqCst),
        before
    );
}

/// A signing client's token is for the service it calls: `payments`, which checks its
/// audience, takes it; the same token presented to `ledger` (same secret, its own audience)
/// is refused, so a callee cannot replay what it received.
#[tokio::test]
async fn a_signed_call_is_good_at_the_service_called_alone() {
    const SECRET: &[u8] = b"a-secret-orders-signs-with-32-b!";
    let guarded = |audience: &str, seen: Arc<Mutex<Vec<String>>>| {
        let config = ServiceAuthConfig::builder()
            .caller_secret("orders", SECRET)
            .iam(false)
            .audience(audience)
            .allow("/charges", ["orders"])
            .build()
            .expect("config");
        App::new()
            .post("/charges", move |ctx: Context| {
                let seen = seen.clone();
                async move {
                    let token = ctx.header("x-lift-service-token").unwrap_or_default();
                    seen.lock().expect("seen").push(token.to_owned());
                    Ok::<_, Error>("charged")
                }
            })
            .layer(ServiceAuthLayer::new(config))
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let registry = registry_with(&[("a", None)]).await;
    let transport = InProcessTransport::new().serve(
        arn("a"),
        guarded("payments", seen.clone())
            .into_service()
            .expect("app"),
    );
    let client = ServiceClient::builder(Discovery::new(registry), Arc::new(transport))
        .caller("orders")
        .signer(ServiceTokenSigner::new(SECRET).expect("signer"))
        .build()
        .expect("client");
    let reply = client
        .call("payments", ServiceRequest::post("/charges"))
        .await
        .expect("payments takes a token for it");
    assert_eq!(reply.response.status, 200);
    let token = seen.lock().expect("seen").pop().expect("a token was sent");
    let ledger = TestApp::new(guarded("ledger", Arc::new(Mutex::new(Vec::new())))).expect("app");
    let replayed = ledger
        .http(
            events::http("POST", "/charges")
                .header("x-lift-service-token", &token)
                .v2(),
        )
        .await
        .expect("response");
    assert_eq!(replayed.status, 401, "{}", replayed.text());
    // A signer whose caller a token cannot name is a configuration error, not a call that
    // goes out unsigned.
    let unnamed = ServiceClient::builder(
        Discovery::new(registry_with(&[]).await),
        Arc::new(InProcessTransport::new()),
    )
    .caller("orders.v2")
    .signer(ServiceTokenSigner::new(SECRET).expect("signer"))
    .build();
    let error = unnamed.expect_err("a name no token carries").to_string();
    assert!(error.contains("caller") && error.contains("A-Z"), "{error}");
    // Attempts out of range say what they take.
    for attempts in [0, 9] {
        let error = ServiceClient::builder(
            Discovery::new(registry_with(&[]).await),
            Arc::new(InProcessTransport::new()),
        )
        .max_attempts(attempts)
        .build()
        .expect_err("out of range")
        .to_string();
        assert!(error.contains("1 to 8"), "{error}");
    }
}

/// A lone instance whose failures ejected it is still served: its failures may be its
/// callers' own, and a service with one alias has no other instance to go to.
#[tokio::test]
async fn ejection_never_leaves_a_service_without_instances() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    // Fails its first three calls, then answers.
    let flaky = App::new()
        .get("/charges", move |_ctx: Context| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    Err(Error::new(
                        http::StatusCode::INTERNAL_SERVER_ERROR,
                        "down",
                        "not yet",
                    ))
                } else {
                    Ok("charged")
                }
            }
        })
        .into_service()
        .expect("app");
    let registry = registry_with(&[("a", None)]).await;
    let client = client(registry, InProcessTransport::new().serve(arn("a"), flaky));
    for _ in 0..3 {
        let failed = client
            .call("payments", ServiceRequest::get("/charges"))
            .await
            .expect_err("failing");
        assert_eq!(failed.step(), "status", "{failed:?}");
    }
    let reply = client
        .call("payments", ServiceRequest::get("/charges"))
        .await
        .expect("the ejected instance, the only one, is still called");
    assert_eq!(reply.instance.as_ref(), "a");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

/// A retry is paid for only when there is an instance to retry on: 150 failed calls to a
/// lone failing instance (5 tokens each would be 750 of the 500 its service's budget
/// holds) leave the budget whole, so once a working instance joins, calls that try the
/// failing one first still fail over to it.
#[tokio::test]
async fn a_call_with_nowhere_to_fail_over_spends_no_retry_budget() {
    let registry = registry_with(&[("a", None)]).await;
    let down = Arc::new(AtomicUsize::new(0));
    let transport = InProcessTransport::new()
        .serve(arn("a"), failing(503, down.clone()))
        .serve(arn("a3"), payments("a3", Arc::new(AtomicUsize::new(0))));
    let client = client(registry.clone(), transport);
    for _ in 0..150 {
        client
            .call("payments", ServiceRequest::get("/charges"))
            .await
            .expect_err("down");
    }
    let joined = Instance::new("payments", "a3", "eu-west-1", Endpoints::lambda(arn("a3")));
    registry
        .register(&joined, &lease("env", T0, u64::MAX / 2))
        .await
        .expect("register");
    client
        .discovery()
        .refresh("payments")
        .await
        .expect("refresh");
    // Round robin over the two picks `a` (its breaker open by now) first in two of these.
    for n in 0..4 {
        let reply = client
            .call("payments", ServiceRequest::get("/charges"))
            .await
            .unwrap_or_else(|e| panic!("call {n} did not fail over to a3: {e:?}"));
        assert_eq!(reply.instance.as_ref(), "a3");
    }
}

/// A service failing on every instance spends its own failover budget, not the other
/// services': 150 GETs to two failing `payments` instances fail over each time (750
/// tokens of the 500 a budget holds), and `ledger`'s calls still fail over from a failing
/// instance to a working one. (One budget for every callee was empty by then.)
#[tokio::test]
async fn a_service_failing_everywhere_spends_its_own_budget() {
    let registry = registry_with(&[("a", None), ("a2", None)]).await;
    for id in ["b", "c"] {
        let instance = Instance::new("ledger", id, "eu-west-1", Endpoints::lambda(arn(id)));
        registry
            .register(&instance, &lease("env", T0, u64::MAX / 2))
            .await
            .expect("register");
    }
    let down = Arc::new(AtomicUsize::new(0));
    let ledger_down = Arc::new(AtomicUsize::new(0));
    let transport = InProcessTransport::new()
        .serve(arn("a"), failing(503, down.clone()))
        .serve(arn("a2"), failing(503, down.clone()))
        .serve(arn("b"), failing(503, ledger_down.clone()))
        .serve(arn("c"), payments("c", Arc::new(AtomicUsize::new(0))));
    let client = client(registry, transport);
    for _ in 0..150 {
        client
            .call("payments", ServiceRequest::get("/charges"))
            .await
            .expect_err("down");
    }
    for n in 0..4 {
        let reply = client
            .call("ledger", ServiceRequest::get("/charges"))
            .await
            .unwrap_or_else(|e| panic!("call {n} did not fail over to c: {e:?}"));
        assert_eq!(reply.instance.as_ref(), "c");
    }
    assert!(
        ledger_down.load(Ordering::SeqCst) > 0,
        "b was tried first at least once"
    );
}
