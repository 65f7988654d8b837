//! The response and value cache with its in-memory store: hits and misses, expiry on an
//! injected clock, tenant isolation, `Cache-Control`, single flight, invalidation and
//! metrics.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lift_core::IntoResponse as _;

use futures_util::future::join_all;
use lift_core::metrics::{MetricsConfig, MetricsSink};
use lift_core::testing::{HttpResponse, TestApp, events};
use lift_core::{App, Context, Error};
use lift_middleware::cache::{Cache, CacheLayer, CacheRule, HttpGetPolicy};
use serde_json::{Value, json};
use tower::ServiceBuilder;
use tower::util::MapRequestLayer;

use crate::support;

use support::{ManualClock, tenant_from_header};

struct Fixture {
    app: TestApp,
    cache: Cache,
    calls: Arc<AtomicU32>,
    clock: ManualClock,
}

/// An app whose `/items/{id}` answers with a counter, so a cached answer is recognisable.
fn fixture_with(ttl: Duration, configure: impl FnOnce(App, Arc<AtomicU32>) -> App) -> Fixture {
    let clock = ManualClock::default();
    let cache = Cache::builder("test")
        .memory(1000)
        .clock(clock.clone())
        .build()
        .expect("cache");
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let item = move |ctx: Context| {
        let counter = counter.clone();
        async move {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            // Long enough (in paused time) for concurrent requests to overlap.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut response = lift_core::Json(json!({
                "id": ctx.path_param("id")?,
                "tenant": ctx.tenant(),
                "run": n,
            }))
            .into_response();
            if let Some(cc) = ctx.query("respond_cc") {
                response
                    .headers_mut()
                    .insert("cache-control", cc.parse().map_err(Error::internal)?);
            }
            if ctx.query("fail").is_some() && n == 1 {
                return Err(Error::internal("the database is down"));
            }
            Ok::<_, Error>(response)
        }
    };
    let app = configure(App::new().get("/items/{id}", item), calls.clone()).layer(
        ServiceBuilder::new()
            .layer(MapRequestLayer::new(tenant_from_header))
            .layer(CacheLayer::new(cache.clone(), HttpGetPolicy::new(ttl))),
    );
    Fixture {
        app: TestApp::new(app).expect("app"),
        cache,
        calls,
        clock,
    }
}

fn fixture(ttl: Duration) -> Fixture {
    fixture_with(ttl, |app, _| app)
}

/// A GET event for `target`, whose query string becomes query parameters.
fn request(method: &str, target: &str) -> events::HttpEvent {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut event = events::http(method, path);
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        event = event.query(&name, &value);
    }
    event
}

async fn get(f: &Fixture, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut event = request("GET", path);
    for (name, value) in headers {
        event = event.header(name, value);
    }
    f.app.http(event.v2()).await.expect("invoke")
}

fn run(response: &HttpResponse) -> u64 {
    response.json::<Value>().expect("json")["run"]
        .as_u64()
        .expect("run")
}

#[tokio::test(start_paused = true)]
async fn a_repeat_is_served_from_the_cache_until_it_expires() {
    let f = fixture(Duration::from_secs(60));
    let first = get(&f, "/items/1", &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache"), Some("miss"));
    f.clock.advance(Duration::from_secs(5));
    let second = get(&f, "/items/1", &[]).await;
    assert_eq!(second.header("x-cache"), Some("hit"));
    assert_eq!(second.header("age"), Some("5"));
    assert_eq!(second.header("content-type"), first.header("content-type"));
    assert_eq!(run(&second), 1);
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);

    // Another path, another query order: the query is part of the key, sorted.
    get(&f, "/items/1?b=2&a=1", &[]).await;
    let reordered = get(&f, "/items/1?a=1&b=2", &[]).await;
    assert_eq!(reordered.header("x-cache"), Some("hit"));
    assert_eq!(f.calls.load(Ordering::SeqCst), 2);

    f.clock.advance(Duration::from_secs(56));
    let expired = get(&f, "/items/1", &[]).await;
    assert_eq!(expired.header("x-cache"), Some("miss"));
    assert_eq!(run(&expired), 3);
    let stats = f.cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.stores), (2, 3, 3));
}

/// A value that spells the separators of a key (decoded `&` and `=`, a decoded `?` in the
/// path) does not reach the answer cached for another request.
#[tokio::test(start_paused = true)]
async fn no_query_or_path_value_spells_the_key_of_another_request() {
    let f = fixture(Duration::from_secs(60));
    // One parameter `a` whose value is `x&b=y`, then two parameters `a` and `b`.
    let one = request("GET", "/items/1").query("a", "x&b=y");
    assert_eq!(
        f.app
            .http(one.v2())
            .await
            .expect("invoke")
            .header("x-cache"),
        Some("miss")
    );
    let two = get(&f, "/items/1?a=x&b=y", &[]).await;
    assert_eq!(two.header("x-cache"), Some("miss"), "another request");
    assert_eq!(run(&two), 2);
    // A REST API passes the path decoded: `/items/1%3Fc=` arrives as `/items/1?c=`, the
    // item `1?c=`, which is not the item `1` asked for with an empty `c`.
    let odd = f
        .app
        .http(events::http("GET", "/items/1?c=").v1())
        .await
        .expect("invoke");
    assert_eq!(odd.json::<Value>().expect("json")["id"], "1?c=");
    let item = f
        .app
        .http(events::http("GET", "/items/1").query("c", "").v1())
        .await
        .expect("invoke");
    assert_eq!(item.header("x-cache"), Some("miss"), "another request");
    assert_eq!(item.json::<Value>().expect("json")["id"], "1");
}

/// A request with a cookie (or any credentials) may get the caller's own answer: it is
/// kept only when the response says it may be shared.
#[tokio::test(start_paused = true)]
async fn an_answer_to_a_request_with_credentials_is_not_shared_unless_public() {
    let f = fixture(Duration::from_secs(60));
    let alice = get(&f, "/items/1", &[("cookie", "session=alice")]).await;
    assert_eq!(alice.header("x-cache"), Some("miss"));
    let bob = get(&f, "/items/1", &[("cookie", "session=bob")]).await;
    assert_eq!(
        bob.header("x-cache"),
        Some("miss"),
        "alice's answer not kept"
    );
    assert_eq!(run(&bob), 2);
    let token = get(&f, "/items/2", &[("x-lift-service-token", "t")]).await;
    assert_eq!(token.header("x-cache"), Some("miss"));
    assert_eq!(
        get(&f, "/items/2", &[]).await.header("x-cache"),
        Some("miss")
    );
    // `public`: kept, whoever asked.
    get(
        &f,
        "/items/3?respond_cc=public",
        &[("cookie", "session=alice")],
    )
    .await;
    let shared = get(
        &f,
        "/items/3?respond_cc=public",
        &[("cookie", "session=bob")],
    )
    .await;
    assert_eq!(shared.header("x-cache"), Some("hit"));
}

/// A caller API Gateway authenticated (a Lambda authorizer on an API key header, a JWT or
/// IAM authorizer) has credentials too, whatever header carried them: its answer is not
/// shared with the next caller.
#[tokio::test(start_paused = true)]
async fn an_answer_behind_an_api_gateway_authorizer_is_not_shared() {
    let f = fixture(Duration::from_secs(60));
    let behind_authorizer = |customer: &str, v1: bool| {
        let event = request("GET", "/items/9").header("x-api-key", customer);
        if v1 {
            let mut event = event.v1();
            event["requestContext"]["authorizer"] =
                json!({"principalId": customer, "customer": customer});
            event
        } else {
            let mut event = event.v2();
            event["requestContext"]["authorizer"] = json!({"lambda": {"customer": customer}});
            event
        }
    };
    for v1 in [false, true] {
        let alice = f
            .app
            .http(behind_authorizer("alice", v1))
            .await
            .expect("invoke");
        assert_eq!(alice.header("x-cache"), Some("miss"));
        let bob = f
            .app
            .http(behind_authorizer("bob", v1))
            .await
            .expect("invoke");
        assert_eq!(
            bob.header("x-cache"),
            Some("miss"),
            "alice's answer is not bob's (v1: {v1})"
        );
    }
    // Without an authorizer the same request is shared, as before.
    get(&f, "/items/10", &[]).await;
    assert_eq!(
        get(&f, "/items/10", &[]).await.header("x-cache"),
        Some("hit")
    );
}

#[tokio::test(start_paused = true)]
async fn tenants_never_share_answers() {
    let f = fixture(Duration::from_secs(60));
    let a = get(&f, "/items/1", &[("x-tenant-id", "acme")]).await;
    let b = get(&f, "/items/1", &[("x-tenant-id", "globex")]).await;
    let none = get(&f, "/items/1", &[]).await;
    assert_eq!(f.calls.load(Ordering::SeqCst), 3);
    assert_eq!(a.json::<Value>().unwrap()["tenant"], "acme");
    assert_eq!(b.json::<Value>().unwrap()["tenant"], "globex");
    assert_eq!(none.json::<Value>().unwrap()["tenant"], Value::Null);
    let again = get(&f, "/items/1", &[("x-tenant-id", "globex")]).await;
    assert_eq!(again.header("x-cache"), Some("hit"));
    assert_eq!(again.json::<Value>().unwrap()["tenant"], "globex");
}

#[tokio::test(start_paused = true)]
async fn request_cache_control_is_honoured() {
    let f = fixture(Duration::from_secs(60));
    get(&f, "/items/1", &[]).await;

    // no-store: straight through, untouched, and nothing replaced.
    let bypass = get(&f, "/items/1", &[("cache-control", "no-store")]).await;
    assert_eq!(bypass.header("x-cache"), None);
    assert_eq!(run(&bypass), 2);
    assert_eq!(run(&get(&f, "/items/1", &[]).await), 1);

    // no-cache: computed afresh, and the fresh answer replaces the stored one.
    let refreshed = get(&f, "/items/1", &[("cache-control", "no-cache")]).await;
    assert_eq!(refreshed.header("x-cache"), Some("miss"));
    assert_eq!(run(&refreshed), 3);
    assert_eq!(run(&get(&f, "/items/1", &[]).await), 3);

    // max-age: an answer older than that is not accepted.
    f.clock.advance(Duration::from_secs(20));
    let young = get(&f, "/items/1", &[("cache-control", "max-age=10")]).await;
    assert_eq!((young.header("x-cache"), run(&young)), (Some("miss"), 4));
    let old_enough = get(&f, "/items/1", &[("cache-control", "max-age=30")]).await;
    assert_eq!(old_enough.header("x-cache"), Some("hit"));
}

#[tokio::test(start_paused = true)]
async fn response_cache_control_decides_what_is_kept() {
    let f = fixture(Duration::from_secs(60));
    for cc in ["no-store", "private", "no-cache"] {
        let path = format!("/items/{cc}?respond_cc={cc}");
        get(&f, &path, &[]).await;
        let again = get(&f, &path, &[]).await;
        assert_eq!(again.header("x-cache"), Some("miss"), "{cc}");
    }
    assert_eq!(f.calls.load(Ordering::SeqCst), 6);

    // max-age shortens the time to live.
    let path = "/items/short?respond_cc=max-age%3D2";
    get(&f, path, &[]).await;
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(get(&f, path, &[]).await.header("x-cache"), Some("hit"));
    f.clock.advance(Duration::from_secs(2));
    assert_eq!(get(&f, path, &[]).await.header("x-cache"), Some("miss"));

    // A request with credentials is kept only when the response is public.
    let auth = [("authorization", "Bearer x")];
    get(&f, "/items/private", &auth).await;
    assert_eq!(
        get(&f, "/items/private", &auth).await.header("x-cache"),
        Some("miss")
    );
    get(&f, "/items/public?respond_cc=public", &auth).await;
    assert_eq!(
        get(&f, "/items/public?respond_cc=public", &auth)
            .await
            .header("x-cache"),
        Some("hit")
    );
}

#[tokio::test(start_paused = true)]
async fn errors_and_other_methods_are_not_cached() {
    let f = fixture_with(Duration::from_secs(60), |app, calls| {
        app.post("/items/{id}", move |_ctx: Context| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>("posted")
            }
        })
    });
    let failed = get(&f, "/items/1?fail=1", &[]).await;
    assert_eq!(failed.status, 500);
    let retried = get(&f, "/items/1?fail=1", &[]).await;
    assert_eq!(
        (retried.status, retried.header("x-cache")),
        (200, Some("miss"))
    );

    let missing = get(&f, "/nope", &[]).await;
    assert_eq!(missing.status, 404);

    for _ in 0..2 {
        let posted = f
            .app
            .http(events::http("POST", "/items/1").v2())
            .await
            .unwrap();
        assert_eq!((posted.status, posted.header("x-cache")), (200, None));
    }
    assert_eq!(f.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_compute_once() {
    let f = fixture(Duration::from_secs(60));
    let responses = join_all((0..20).map(|_| get(&f, "/items/1", &[]))).await;
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
    assert!(responses.iter().all(|r| r.status == 200 && run(r) == 1));
    assert_eq!(
        responses
            .iter()
            .filter(|r| r.header("x-cache") == Some("miss"))
            .count(),
        1
    );
    assert_eq!(f.cache.stats().coalesced, 19);
}

#[tokio::test(start_paused = true)]
async fn a_failed_leader_hands_the_key_to_a_waiting_caller() {
    let f = fixture(Duration::from_secs(60));
    let responses = join_all((0..5).map(|_| get(&f, "/items/1?fail=1", &[]))).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 500).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(f.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn invalidation_by_key_and_prefix_stays_within_the_tenant() {
    let f = fixture(Duration::from_secs(60));
    let acme = [("x-tenant-id", "acme")];
    let globex = [("x-tenant-id", "globex")];
    for path in ["/items/1", "/items/2", "/items/3?x=1"] {
        get(&f, path, &acme).await;
        get(&f, path, &globex).await;
    }
    assert_eq!(f.calls.load(Ordering::SeqCst), 6);

    f.cache
        .invalidate(Some("acme"), "GET /items/1")
        .await
        .unwrap();
    assert_eq!(
        get(&f, "/items/1", &acme).await.header("x-cache"),
        Some("miss")
    );
    assert_eq!(
        get(&f, "/items/2", &acme).await.header("x-cache"),
        Some("hit")
    );
    assert_eq!(
        get(&f, "/items/1", &globex).await.header("x-cache"),
        Some("hit")
    );

    f.cache
        .invalidate_prefix(Some("acme"), "GET /items/")
        .await
        .unwrap();
    for path in ["/items/2", "/items/3?x=1"] {
        assert_eq!(
            get(&f, path, &acme).await.header("x-cache"),
            Some("miss"),
            "{path}"
        );
        assert_eq!(
            get(&f, path, &globex).await.header("x-cache"),
            Some("hit"),
            "{path}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_answer_computed_across_an_invalidation_is_not_kept() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let cache = Cache::builder("test").memory(100).build().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let (c, g, n) = (cache.clone(), gate.clone(), calls.clone());
    let price = move |ctx: Context| {
        let (cache, gate, calls) = (c.clone(), g.clone(), n.clone());
        async move {
            let value = cache
                .get_or_compute(&ctx, "price", Duration::from_secs(60), || async move {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    if n == 1 {
                        gate.notified().await;
                    }
                    Ok::<_, Error>(40 + n)
                })
                .await?;
            Ok::<_, Error>(value.to_string())
        }
    };
    let app = TestApp::new(App::new().get("/price", price)).unwrap();
    let (first, ()) = tokio::join!(app.http(events::http("GET", "/price").v2()), async {
        tokio::task::yield_now().await;
        cache.invalidate(None, "price").await.unwrap();
        gate.notify_one();
    });
    assert_eq!(first.unwrap().text(), "41");
    let second = app.http(events::http("GET", "/price").v2()).await.unwrap();
    assert_eq!(
        second.text(),
        "42",
        "the value computed before the invalidation was kept"
    );
    let third = app.http(events::http("GET", "/price").v2()).await.unwrap();
    assert_eq!(third.text(), "42");
}

#[tokio::test]
async fn values_are_cached_typed_and_errors_are_not() {
    let cache = Cache::builder("values").memory(100).build().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let ttl = Duration::from_secs(60);
    let (c, n) = (cache.clone(), calls.clone());
    let list = move |ctx: Context| {
        let (cache, calls) = (c.clone(), n.clone());
        async move {
            let value = cache
                .get_or_compute(&ctx, "shared", ttl, || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Error>(vec!["a".to_owned(), "b".to_owned()])
                })
                .await?;
            Ok::<_, Error>(value.join(","))
        }
    };
    let c = cache.clone();
    let number = move |ctx: Context| {
        let cache = c.clone();
        async move {
            let value = cache
                .get_or_compute(&ctx, "shared", ttl, || async { Ok::<_, Error>(7u32) })
                .await?;
            Ok::<_, Error>(value.to_string())
        }
    };
    let c = cache.clone();
    let flaky = move |ctx: Context| {
        let cache = c.clone();
        async move {
            let fail = ctx.query("fail").is_some();
            let value = cache
                .get_or_compute(&ctx, "flaky", ttl, || async move {
                    if fail {
                        Err(Error::internal("down"))
                    } else {
                        Ok(1u32)
                    }
                })
                .await?;
            Ok::<_, Error>(value.to_string())
        }
    };
    let app = App::new()
        .get("/list", list)
        .get("/number", number)
        .get("/flaky", flaky);
    let app = TestApp::new(app).unwrap();
    let call = |path: &'static str| app.http(request("GET", path).v2());
    assert_eq!(call("/list").await.unwrap().text(), "a,b");
    assert_eq!(call("/list").await.unwrap().text(), "a,b");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // A stored value of another type is a miss, not a failure.
    assert_eq!(call("/number").await.unwrap().text(), "7");
    assert_eq!(cache.stats().errors, 1);

    assert_eq!(call("/flaky?fail=1").await.unwrap().status, 500);
    assert_eq!(call("/flaky").await.unwrap().text(), "1");
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

impl MetricsSink for Captured {
    fn write(&self, document: &str) {
        self.0.lock().unwrap().push(document.to_owned());
    }
}

#[tokio::test]
async fn hits_and_misses_are_metrics() {
    let sink = Captured::default();
    let cache = Cache::builder("m")
        .memory(10)
        .emit_metrics(true)
        .build()
        .unwrap();
    let app = App::new()
        .get("/x", || async { Ok::<_, Error>("x") })
        .layer(CacheLayer::new(
            cache,
            HttpGetPolicy::new(Duration::from_secs(60)),
        ))
        .metrics(
            MetricsConfig::new("Lift")
                .route_metrics(false)
                .cold_start(false)
                .sink(sink.clone()),
        );
    let app = TestApp::new(app).unwrap();
    app.http(events::http("GET", "/x").v2()).await.unwrap();
    app.http(events::http("GET", "/x").v2()).await.unwrap();
    let documents = sink.0.lock().unwrap().clone();
    assert_eq!(documents.len(), 2, "{documents:?}");
    let first: Value = serde_json::from_str(&documents[0]).unwrap();
    let second: Value = serde_json::from_str(&documents[1]).unwrap();
    assert_eq!(first["CacheMiss"], 1.0);
    assert_eq!(second["CacheHit"], 1.0);
    assert!(second.get("CacheMiss").is_none());
}

#[tokio::test]
async fn a_custom_policy_caches_batch_records_by_body() {
    let cache = Cache::builder("records").memory(10).build().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let policy = |ctx: &Context| {
        let body = std::str::from_utf8(ctx.body()).ok()?;
        Some(CacheRule::new(
            format!("sqs:{body}"),
            Duration::from_secs(30),
        ))
    };
    let app = App::new()
        .sqs(move |_ctx: Context| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>(())
            }
        })
        .layer(CacheLayer::new(cache.clone(), policy));
    let app = TestApp::new(app).unwrap();
    app.invoke(&events::sqs(["a", "b", "a"])).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(cache.stats().hits, 1);
}

#[test]
fn configuration_is_validated() {
    let err = Cache::builder("x").build().unwrap_err();
    assert!(err.to_string().contains("stores"), "{err}");
    let err = Cache::builder("").memory(1).build().unwrap_err();
    assert!(err.to_string().contains("namespace"), "{err}");
    let err = Cache::builder("a#b").memory(1).build().unwrap_err();
    assert!(err.to_string().contains("namespace"), "{err}");
}

#[tokio::test]
async fn a_streamed_response_is_not_kept() {
    let cache = Cache::builder("streams").memory(10).build().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let feed = move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let items = (0..3).map(move |i| Ok::<_, Error>(json!({"run": n, "i": i})));
            Ok::<_, Error>(lift_core::stream::StreamBody::ndjson(
                futures_util::stream::iter(items),
            ))
        }
    };
    let app = App::new().get("/feed", feed).layer(CacheLayer::new(
        cache.clone(),
        HttpGetPolicy::new(Duration::from_secs(60)),
    ));
    let app = TestApp::new(app).unwrap();
    for run in 0..2 {
        let response = app.http(events::http("GET", "/feed").v2()).await.unwrap();
        assert_eq!(response.header("x-cache"), Some("miss"));
        assert_eq!(response.text().lines().count(), 3, "{}", response.text());
        assert!(response.text().contains(&format!("\"run\":{run}")));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(cache.stats().stores, 0);
}
