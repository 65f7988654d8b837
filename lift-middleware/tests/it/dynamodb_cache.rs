//! The cache's DynamoDB store on the local emulator: answers shared between execution
//! environments, the item layout, expiry checked in code, invalidation by key and prefix
//! seen by every environment, a computation that straddles an invalidation, the memory
//! in front, and a failing table that never fails a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use lift_core::testing::{HttpResponse, TestApp, events};
use lift_core::{App, Context, Error};
use lift_middleware::cache::{Cache, CacheLayer, HttpGetPolicy};
use serde_json::{Value, json};
use tower::ServiceBuilder;
use tower::util::MapRequestLayer;

use crate::aws;
use crate::support;

use support::{ManualClock, tenant_from_header};

/// One execution environment: its own App and Cache handle over the shared table.
struct Environment {
    app: TestApp,
    cache: Cache,
    calls: Arc<AtomicU32>,
}

fn environment(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    clock: &ManualClock,
    memory: u64,
    gate: Option<Arc<tokio::sync::Notify>>,
) -> Environment {
    let mut builder = Cache::builder("catalog")
        .dynamodb(client.clone(), table)
        .clock(clock.clone());
    if memory > 0 {
        builder = builder.memory(memory);
    }
    let cache = builder.build().expect("cache");
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let item = move |ctx: Context| {
        let counter = counter.clone();
        let gate = gate.clone();
        async move {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(gate) = gate {
                gate.notified().await;
            }
            Ok::<_, Error>(lift_core::Json(json!({
                "id": ctx.path_param("id")?,
                "tenant": ctx.tenant(),
                "run": n,
            })))
        }
    };
    let app = App::new().get("/items/{id}", item).layer(
        ServiceBuilder::new()
            .layer(MapRequestLayer::new(tenant_from_header))
            .layer(CacheLayer::new(
                cache.clone(),
                HttpGetPolicy::new(Duration::from_secs(60)),
            )),
    );
    Environment {
        app: TestApp::new(app).expect("app"),
        cache,
        calls,
    }
}

async fn get(env: &Environment, path: &str, tenant: Option<&str>) -> HttpResponse {
    let mut event = events::http("GET", path);
    if let Some(tenant) = tenant {
        event = event.header("x-tenant-id", tenant);
    }
    env.app.http(event.v2()).await.expect("invoke")
}

/// The raw item of `pk`/`sk`, if any.
async fn item(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    sk: &str,
) -> Option<std::collections::HashMap<String, AttributeValue>> {
    client
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(pk.into()))
        .key("sk", AttributeValue::S(sk.into()))
        .send()
        .await
        .unwrap()
        .item
}

fn cache_header(response: &HttpResponse) -> Option<&str> {
    response.header("x-cache")
}

#[tokio::test]
async fn answers_are_shared_between_environments_in_the_documented_layout() {
    let client = aws::client().await;
    let table = aws::table_with_sort_key(&client, "lift-cache").await;
    let clock = ManualClock::default();
    let a = environment(&client, &table, &clock, 0, None);
    let b = environment(&client, &table, &clock, 0, None);

    let first = get(&a, "/items/1", Some("acme")).await;
    assert_eq!(cache_header(&first), Some("miss"));
    clock.advance(Duration::from_secs(3));
    let shared = get(&b, "/items/1", Some("acme")).await;
    assert_eq!(cache_header(&shared), Some("hit"));
    assert_eq!(shared.header("age"), Some("3"));
    assert_eq!(shared.header("content-type"), first.header("content-type"));
    assert_eq!(shared.body, first.body);
    assert_eq!(b.calls.load(Ordering::SeqCst), 0);

    let item = item(&client, &table, "catalog#t#acme", "GET /items/1")
        .await
        .expect("the item");
    let n = |name: &str| item[name].as_n().unwrap().parse::<u64>().unwrap();
    let stored = 1_800_000_000_000u64;
    assert_eq!(n("stored_at"), stored);
    assert_eq!(n("expires_ms"), stored + 60_000);
    assert_eq!(
        n("expires_at"),
        1_800_000_060,
        "TTL attribute in epoch seconds"
    );
    assert_eq!(n("status"), 200);
    let body: Value = serde_json::from_str(item["body"].as_s().unwrap()).unwrap();
    assert_eq!(body["tenant"], "acme");

    // Another tenant's request never sees it.
    let other = get(&b, "/items/1", Some("globex")).await;
    assert_eq!(cache_header(&other), Some("miss"));
    assert_eq!(other.json::<Value>().unwrap()["tenant"], "globex");
}

#[tokio::test]
async fn expiry_is_checked_in_code() {
    let client = aws::client().await;
    let table = aws::table_with_sort_key(&client, "lift-cache").await;
    let clock = ManualClock::default();
    let a = environment(&client, &table, &clock, 0, None);
    get(&a, "/items/1", None).await;
    clock.advance(Duration::from_secs(59));
    assert_eq!(cache_header(&get(&a, "/items/1", None).await), Some("hit"));
    clock.advance(Duration::from_secs(2));
    // DynamoDB still holds the item (its TTL deletes late, and never here).
    let expired = get(&a, "/items/1", None).await;
    assert_eq!(cache_header(&expired), Some("miss"));
    assert_eq!(expired.json::<Value>().unwrap()["run"], 2);
}

#[tokio::test]
async fn invalidations_reach_every_environment() {
    let client = aws::client().await;
    let table = aws::table_with_sort_key(&client, "lift-cache").await;
    let clock = ManualClock::default();
    let a = environment(&client, &table, &clock, 0, None);
    let b = environment(&client, &table, &clock, 0, None);
    for path in ["/items/1", "/items/2", "/items/3"] {
        get(&a, path, Some("acme")).await;
        get(&a, path, Some("globex")).await;
    }
    clock.advance(Duration::from_millis(10));

    a.cache
        .invalidate(Some("acme"), "GET /items/1")
        .await
        .unwrap();
    // A computation that starts in the invalidation's millisecond would not be kept.
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        cache_header(&get(&b, "/items/1", Some("acme")).await),
        Some("miss")
    );
    assert_eq!(
        cache_header(&get(&b, "/items/2", Some("acme")).await),
        Some("hit")
    );
    let tombstone = item(&client, &table, "catalog#t#acme", "GET /items/1")
        .await
        .expect("an item");
    // b's recomputation replaced the tombstone; it was written after the invalidation.
    assert!(!tombstone.contains_key("gone"));
    clock.advance(Duration::from_millis(10));

    let found = a
        .cache
        .invalidate_prefix(Some("acme"), "GET /items/")
        .await
        .unwrap();
    assert_eq!(found, 3);
    for path in ["/items/2", "/items/3"] {
        assert_eq!(
            cache_header(&get(&b, path, Some("acme")).await),
            Some("miss"),
            "{path}"
        );
        assert_eq!(
            cache_header(&get(&b, path, Some("globex")).await),
            Some("hit"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_computation_that_started_before_an_invalidation_cannot_store_its_answer() {
    let client = aws::client().await;
    let table = aws::table_with_sort_key(&client, "lift-cache").await;
    let clock = ManualClock::default();
    let gate = Arc::new(tokio::sync::Notify::new());
    // a computes slowly; b invalidates meanwhile (another process: a's local epoch does
    // not see it, only the conditional write protects the table).
    let a = environment(&client, &table, &clock, 0, Some(gate.clone()));
    let b = environment(&client, &table, &clock, 0, None);
    let (answer, ()) = tokio::join!(get(&a, "/items/1", None), async {
        while a.calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        clock.advance(Duration::from_millis(5));
        b.cache.invalidate(None, "GET /items/1").await.unwrap();
        gate.notify_one();
    });
    assert_eq!(answer.status, 200);
    assert_eq!(a.cache.stats().stores, 1, "the write was attempted");
    let item = item(&client, &table, "catalog#-", "GET /items/1")
        .await
        .expect("the tombstone");
    assert_eq!(item.get("gone"), Some(&AttributeValue::Bool(true)));
    assert_eq!(cache_header(&get(&b, "/items/1", None).await), Some("miss"));
}

/// A prefix invalidation from another environment while `a` computes a key, with the
/// table holding nothing for that key (`prior` none) or an older tombstone (`prior` some):
/// `a`'s answer does not stand, in the table nor in `a`'s memory.
async fn a_prefix_invalidation_stops_a_computation_in_flight(prior_tombstone: bool, memory: u64) {
    let client = aws::client().await;
    let table = aws::table_with_sort_key(&client, "lift-cache").await;
    let clock = ManualClock::default();
    let gate = Arc::new(tokio::sync::Notify::new());
    let a = environment(&client, &table, &clock, memory, Some(gate.clone()));
    let b = environment(&client, &table, &clock, 0, None);
    if prior_tombstone {
        b.cache.invalidate(None, "GET /items/1").await.unwrap();
        clock.advance(Duration::from_millis(5));
    }
    let (answer, ()) = tokio::join!(get(&a, "/items/1", None), async {
        while a.calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        clock.advance(Duration::from_millis(5));
        b.cache
            .invalidate_prefix(None, "GET /items/")
            .await
            .unwrap();
        clock.advance(Duration::from_millis(5));
        gate.notify_one();
    });
    assert_eq!(answer.status, 200);
    assert_eq!(a.cache.stats().stores, 1, "the write was attempted");
    let stored = item(&client, &table, "catalog#-", "GET /items/1")
        .await
        .expect("an item");
    assert_eq!(
        stored.get("gone"),
        Some(&AttributeValue::Bool(true)),
        "{stored:?}"
    );
    assert_eq!(cache_header(&get(&b, "/items/1", None).await), Some("miss"));
    if memory > 0 {
        assert_eq!(a.cache.memory_entries(), 0, "not kept in memory either");
    }
}

#[tokio::test]
async fn a_prefix_invalidation_stops_a_computation_of_a_key_the_table_did_not_hold() {
    a_prefix_invalidation_stops_a_computation_in_flight(false, 0).await;
}

#[tokio::test]
async fn a_prefix_invalidation_stops_a_computation_of_a_tombstoned_key() {
    a_prefix_invalidation_stops_a_computation_in_flight(true, 0).await;
}

#[tokio::test]
async fn an_answer_the_table_refused_is_not_kept_in_memory() {
    a_prefix_invalidation_stops_a_computation_in_flight(false, 100).await;
    // The same with an invalidation by key, another environment's: the table refuses the
    // write, and a's memory does not keep what the table refused.
    let client = aws::client().await;
    let table = aws::table_with_sort_key(&client, "lift-cache").await;
    let clock = ManualClock::default();
    let gate = Arc::new(tokio::sync::Notify::new());
    let a = environment(&client, &table, &clock, 100, Some(gate.clone()));
    let b = environment(&client, &table, &clock, 0, None);
    let (_, ()) = tokio::join!(get(&a, "/items/1", None), async {
        while a.calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        clock.advance(Duration::from_millis(5));
        b.cache.invalidate(None, "GET /items/1").await.unwrap();
        gate.notify_one();
    });
    assert_eq!(a.cache.memory_entries(), 0);
}

#[tokio::test]
async fn memory_in_front_answers_without_dynamodb() {
    let client = aws::client().await;
    let table = aws::table_with_sort_key(&client, "lift-cache").await;
    let clock = ManualClock::default();
    let a = environment(&client, &table, &clock, 100, None);
    let b = environment(&client, &table, &clock, 100, None);
    get(&a, "/items/1", None).await;
    // b fills its memory from DynamoDB on its first hit.
    assert_eq!(cache_header(&get(&b, "/items/1", None).await), Some("hit"));
    client
        .delete_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("catalog#-".into()))
        .key("sk", AttributeValue::S("GET /items/1".into()))
        .send()
        .await
        .unwrap();
    for env in [&a, &b] {
        assert_eq!(cache_header(&get(env, "/items/1", None).await), Some("hit"));
        assert_eq!(env.cache.memory_entries(), 1);
    }
}

/// With memory in front, another environment keeps serving its own copy after an
/// invalidation, but never longer than the memory bound (10 s by default): then it reads
/// the table, finds the tombstone and computes again.
#[tokio::test]
async fn an_invalidation_reaches_other_environments_memory_within_the_bound() {
    let client = aws::client().await;
    let table = aws::table_with_sort_key(&client, "lift-cache").await;
    let clock = ManualClock::default();
    let a = environment(&client, &table, &clock, 100, None);
    let b = environment(&client, &table, &clock, 100, None);
    assert_eq!(cache_header(&get(&a, "/items/1", None).await), Some("miss"));
    assert_eq!(cache_header(&get(&b, "/items/1", None).await), Some("hit"));
    clock.advance(Duration::from_millis(10));

    a.cache.invalidate(None, "GET /items/1").await.unwrap();
    clock.advance(Duration::from_millis(1));
    assert_eq!(cache_header(&get(&a, "/items/1", None).await), Some("miss"));
    let stale = get(&b, "/items/1", None).await;
    assert_eq!(
        cache_header(&stale),
        Some("hit"),
        "b's memory still holds its copy"
    );
    assert_eq!(stale.json::<Value>().unwrap()["run"], 1);

    clock.advance(lift_middleware::cache::DEFAULT_MEMORY_TTL);
    let after = get(&b, "/items/1", None).await;
    assert_eq!(
        cache_header(&after),
        Some("hit"),
        "a's recomputation, from the table"
    );
    assert_eq!(after.json::<Value>().unwrap()["run"], 2);
    assert_eq!(b.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_failing_table_never_fails_a_request() {
    let client = aws::client().await;
    let clock = ManualClock::default();
    let a = environment(&client, "lift-cache-missing-table", &clock, 0, None);
    for run in 1..=2 {
        let response = get(&a, "/items/1", None).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.json::<Value>().unwrap()["run"], run);
    }
    let stats = a.cache.stats();
    assert_eq!((stats.hits, stats.stores), (0, 0));
    assert_eq!(stats.errors, 4, "two failed reads and two failed writes");
    let error = a.cache.invalidate(None, "GET /items/1").await.unwrap_err();
    assert!(error.to_string().contains("cache store error"), "{error}");
}

/// A fill whose look for prefix invalidations fails cannot tell whether one covers its key:
/// its write is taken back rather than left for every environment to serve (an invalidated
/// answer, for the entry's whole TTL, had the look missed one).
#[tokio::test]
async fn a_fill_that_cannot_check_for_invalidations_is_not_left_in_the_table() {
    let setup = aws::client().await;
    let table = aws::table_with_sort_key(&setup, "lift-cache").await;
    let clock = ManualClock::default();
    let (failing, queries) = aws::failing_client("Query", 1).await;
    let a = environment(&failing, &table, &clock, 0, None);
    let b = environment(&setup, &table, &clock, 0, None);
    let first = get(&a, "/items/1", None).await;
    assert_eq!(first.status, 200, "a store failure never fails the request");
    assert_eq!(
        queries.attempts(),
        1,
        "the invalidation check was tried once"
    );
    let second = get(&b, "/items/1", None).await;
    assert_eq!(cache_header(&second), Some("miss"));
    assert_eq!(b.calls.load(Ordering::SeqCst), 1);
}

/// A fill the table applied but whose answer was lost meets itself when the SDK sends it
/// again: it stands (and is checked for invalidations as any fill), so memory keeps it too.
/// (It was taken for a newer item, so its invalidation check was skipped.)
#[tokio::test]
async fn a_fill_whose_answer_was_lost_still_stands() {
    let setup = aws::client().await;
    let table = aws::table_with_sort_key(&setup, "lift-cache").await;
    let clock = ManualClock::default();
    let (losing, puts) = aws::answer_losing_client("PutItem", 1).await;
    let a = environment(&losing, &table, &clock, 100, None);
    assert_eq!(get(&a, "/items/1", None).await.status, 200);
    assert!(puts.attempts() >= 2, "sent again: {}", puts.attempts());
    assert_eq!(a.cache.memory_entries(), 1);
    assert_eq!(cache_header(&get(&a, "/items/1", None).await), Some("hit"));
}

/// A fill whose write the table applied but which ended in an error (no answer within the
/// store's time limit, or a server error) is taken back: unchecked for invalidations, it
/// was left for every environment to serve.
#[tokio::test]
async fn a_fill_applied_but_answered_with_an_error_is_not_left_in_the_table() {
    let setup = aws::client().await;
    let table = aws::table_with_sort_key(&setup, "lift-cache").await;
    let clock = ManualClock::default();
    let (losing, puts) = aws::answer_losing_client_without_retry("PutItem", 1).await;
    let a = environment(&losing, &table, &clock, 0, None);
    let b = environment(&setup, &table, &clock, 0, None);
    assert_eq!(get(&a, "/items/1", None).await.status, 200);
    assert_eq!(
        puts.attempts(),
        1,
        "one attempt, applied, its answer an error"
    );
    let second = get(&b, "/items/1", None).await;
    assert_eq!(cache_header(&second), Some("miss"));
}
