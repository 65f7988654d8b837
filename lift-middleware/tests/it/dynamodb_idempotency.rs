//! Idempotency against DynamoDB on the local emulator: concurrent duplicates run the
//! handler once, failures release the key, payloads are validated, records take
//! Powertools' layout, and expiry is checked in code.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use lift_core::testing::{HttpResponse, TestApp, batch_failures, events};
use lift_core::{App, Context, Created, Error, Json};
use lift_middleware::idempotency::{IdempotencyConfig, IdempotencyLayer};
use serde_json::{Value, json};

use crate::aws;
use crate::support::ManualClock;

struct Fixture {
    app: TestApp,
    calls: Arc<AtomicU32>,
    /// Releases a call whose body says `"hold": true`.
    gate: Arc<tokio::sync::Notify>,
    client: aws_sdk_dynamodb::Client,
    table: String,
}

async fn fixture(
    configure: impl FnOnce(
        lift_middleware::idempotency::IdempotencyConfigBuilder,
    ) -> lift_middleware::idempotency::IdempotencyConfigBuilder,
) -> Fixture {
    let client = aws::client().await;
    let table = aws::table_keyed(&client, "lift-idempotency", "id").await;
    let calls = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let counter = calls.clone();
    let held = gate.clone();
    let place = move |ctx: Context| {
        let (counter, held) = (counter.clone(), held.clone());
        async move {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let body: Value = serde_json::from_slice(ctx.body()).map_err(Error::internal)?;
            if body["fail_first"] == true && n == 1 {
                return Err(Error::internal("the payment provider timed out"));
            }
            if body["hold"] == true {
                held.notified().await;
            }
            // Long enough for concurrent duplicates to find the key in progress.
            let pause = body["slow_ms"].as_u64().unwrap_or(150);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            Ok::<_, Error>(Created(json!({"order": body["orderId"], "run": n})))
        }
    };
    let charge = {
        let counter = calls.clone();
        move |ctx: Context| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                if ctx.body() == b"\"fail\"" {
                    return Err(Error::internal("declined"));
                }
                Ok::<_, Error>(Json(json!({"charged": true})))
            }
        }
    };
    let config = configure(IdempotencyConfig::builder(&table))
        .build()
        .expect("config");
    let app = TestApp::new(
        App::new()
            .post("/orders", place)
            .sqs(charge)
            .layer(IdempotencyLayer::new(client.clone(), config)),
    )
    .expect("app");
    Fixture {
        app,
        calls,
        gate,
        client,
        table,
    }
}

/// Waits (up to 10 s) until a record in `table` has `status`, and returns it.
pub(crate) async fn wait_for_status(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    status: &str,
) -> std::collections::HashMap<String, AttributeValue> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let items = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .send()
            .await
            .expect("scan")
            .items
            .unwrap_or_default();
        if let Some(item) = items.into_iter().find(|item| {
            item.get("status")
                .and_then(|s| s.as_s().ok())
                .is_some_and(|s| s == status)
        }) {
            return item;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no record reached {status}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl Fixture {
    /// Waits until a record in the fixture's table has `status`.
    async fn wait_for_status(
        &self,
        status: &str,
    ) -> std::collections::HashMap<String, AttributeValue> {
        wait_for_status(&self.client, &self.table, status).await
    }

    /// Every record in the table.
    async fn items(&self) -> Vec<std::collections::HashMap<String, AttributeValue>> {
        self.client
            .scan()
            .table_name(&self.table)
            .send()
            .await
            .expect("scan")
            .items
            .unwrap_or_default()
    }
}

fn order(body: &Value) -> Value {
    events::http("POST", "/orders").json(body).v2()
}

async fn send(app: &TestApp, body: &Value) -> HttpResponse {
    app.http(order(body)).await.expect("response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_run_once_and_all_get_the_same_answer() {
    let f = fixture(|c| c.wait_for_in_progress(Duration::from_secs(5))).await;
    let body = json!({"orderId": "o-1", "total": 10});
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (app, body) = (f.app.clone(), body.clone());
        tasks.push(tokio::spawn(async move { send(&app, &body).await }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    assert_eq!(f.calls.load(Ordering::SeqCst), 1, "the handler ran once");
    for answer in &answers {
        assert_eq!(answer.status, 201, "{}", answer.text());
        assert_eq!(answer.body, answers[0].body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_waiting_a_duplicate_in_progress_is_a_409() {
    let f = fixture(|c| c).await;
    let body = json!({"orderId": "o-2"});
    let first = {
        let (app, body) = (f.app.clone(), body.clone());
        tokio::spawn(async move { send(&app, &body).await })
    };
    // Wait until the first call holds the key (its record is in progress), however long
    // the store takes to answer, then send the duplicate.
    f.wait_for_status("INPROGRESS").await;
    let duplicate = send(&f.app, &body).await;
    assert_eq!(duplicate.status, 409, "{}", duplicate.text());
    assert_eq!(
        duplicate.json::<Value>().expect("json")["error"]["code"],
        "idempotency_in_progress"
    );
    assert_eq!(first.await.expect("task").status, 201);
    let later = send(&f.app, &body).await;
    assert_eq!(later.status, 201, "completed: the stored answer");
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
}

/// A record's expiry shorter than the handler's run does not free a key still in
/// progress: the claim's `expiration` covers its lock, so the claim condition's
/// `expiration < :now` cannot hand the key to a duplicate while the first call runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_shorter_than_the_run_does_not_free_a_key_in_progress() {
    let clock = ManualClock::default();
    let f = {
        let clock = clock.clone();
        fixture(move |c| c.expires_after(Duration::from_secs(1)).clock(clock)).await
    };
    let body = json!({"orderId": "o-long", "hold": true});
    let first = {
        let (app, body) = (f.app.clone(), body.clone());
        tokio::spawn(async move { send(&app, &body).await })
    };
    let item = f.wait_for_status("INPROGRESS").await;
    let number = |name: &str| -> u64 {
        item[name]
            .as_n()
            .expect("a number")
            .parse()
            .expect("an integer")
    };
    assert!(
        number("expiration") * 1000 >= number("in_progress_expiration"),
        "the record expires before its lock: {item:?}"
    );
    // Past the one-second expiry the claim would have had, with the first call running.
    clock.advance(Duration::from_millis(2100));
    let duplicate = send(&f.app, &body).await;
    assert_eq!(duplicate.status, 409, "{}", duplicate.text());
    f.gate.notify_one();
    assert_eq!(first.await.expect("task").status, 201);
    assert_eq!(f.calls.load(Ordering::SeqCst), 1, "the handler ran once");
}

#[tokio::test]
async fn a_failure_releases_the_key_for_a_retry() {
    let f = fixture(|c| c).await;
    let body = json!({"orderId": "o-3", "fail_first": true});
    assert_eq!(send(&f.app, &body).await.status, 500);
    let retry = send(&f.app, &body).await;
    assert_eq!(retry.status, 201, "{}", retry.text());
    assert_eq!(retry.json::<Value>().expect("json")["run"], 2);
    assert_eq!(send(&f.app, &body).await.body, retry.body, "now remembered");
    assert_eq!(f.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_same_key_with_another_payload_is_refused() {
    let f = fixture(|c| c.key_fields(&["/orderId"]).validate_payload(true)).await;
    assert_eq!(
        send(&f.app, &json!({"orderId": "o-4", "total": 10}))
            .await
            .status,
        201
    );
    let reused = send(&f.app, &json!({"orderId": "o-4", "total": 99})).await;
    assert_eq!(reused.status, 422);
    assert_eq!(
        reused.json::<Value>().expect("json")["error"]["code"],
        "idempotency_key_reused"
    );
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn records_take_powertools_layout_and_expiry_is_checked_in_code() {
    let f = fixture(|c| c.expires_after(Duration::from_secs(600))).await;
    let body = json!({"orderId": "o-5"});
    assert_eq!(send(&f.app, &body).await.status, 201);
    let items = f.items().await;
    assert_eq!(items.len(), 1);
    let item = &items[0];
    let id = item["id"].as_s().expect("id").clone();
    assert!(id.starts_with("lift-test.POST /orders#"), "{id}");
    assert_eq!(item["status"].as_s().expect("status"), "COMPLETED");
    let expiration: u64 = item["expiration"].as_n().expect("n").parse().expect("secs");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    assert!(
        (now + 590..=now + 610).contains(&expiration),
        "{expiration} vs {now}"
    );
    let data: Value = serde_json::from_str(item["data"].as_s().expect("data")).expect("json");
    assert_eq!(data["statusCode"], 201);
    assert!(item.contains_key("validation"));

    // An expired record still in the table (TTL deletes late) does not count.
    f.client
        .update_item()
        .table_name(&f.table)
        .key("id", AttributeValue::S(id))
        .update_expression("SET expiration = :past")
        .expression_attribute_values(":past", AttributeValue::N((now - 10).to_string()))
        .send()
        .await
        .expect("age the record");
    let again = send(&f.app, &body).await;
    assert_eq!(again.json::<Value>().expect("json")["run"], 2);
}

#[tokio::test]
async fn a_stale_in_progress_lock_does_not_block_forever() {
    let f = fixture(|c| c).await;
    let body = json!({"orderId": "o-6"});
    // A crashed invocation left this lock; its time is up.
    let key = {
        assert_eq!(send(&f.app, &body).await.status, 201);
        let items = f.items().await;
        items[0]["id"].as_s().expect("id").clone()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time");
    f.client
        .put_item()
        .table_name(&f.table)
        .item("id", AttributeValue::S(key))
        .item("status", AttributeValue::S("INPROGRESS".to_owned()))
        .item(
            "expiration",
            AttributeValue::N((now.as_secs() + 3600).to_string()),
        )
        .item(
            "in_progress_expiration",
            AttributeValue::N((now.as_millis() as u64 - 1000).to_string()),
        )
        .send()
        .await
        .expect("plant a stale lock");
    let response = send(&f.app, &body).await;
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(f.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn each_batch_record_is_its_own_key() {
    let f = fixture(|c| c).await;
    let batch = events::sqs([r#""a""#, r#""a""#, r#""fail""#, r#""b""#]);
    let response = f.app.invoke(&batch).await.expect("batch");
    assert_eq!(batch_failures(&response), ["m2"]);
    assert_eq!(
        f.calls.load(Ordering::SeqCst),
        3,
        "a, fail, b: the second a was a repeat"
    );
    // Redelivery: only the failed record runs again.
    let response = f.app.invoke(&batch).await.expect("batch");
    assert_eq!(batch_failures(&response), ["m2"]);
    assert_eq!(f.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_streamed_response_is_not_stored_and_releases_its_key() {
    let client = aws::client().await;
    let table = aws::table_keyed(&client, "lift-idempotency", "id").await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let export = move |_ctx: Context| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let rows = (0..2).map(move |i| Ok::<_, Error>(json!({"run": n, "row": i})));
            Ok::<_, Error>(lift_core::stream::StreamBody::ndjson(
                futures_util::stream::iter(rows),
            ))
        }
    };
    let config = IdempotencyConfig::builder(&table).build().expect("config");
    let app = TestApp::new(
        App::new()
            .post("/exports", export)
            .layer(IdempotencyLayer::new(client.clone(), config)),
    )
    .expect("app");
    let event = events::http("POST", "/exports")
        .json(&json!({"month": "2026-10"}))
        .v2();
    for run in 1..=2 {
        let response = app.http(event.clone()).await.expect("response");
        assert_eq!(response.status, 200);
        assert!(
            response.text().contains(&format!("\"run\":{run}")),
            "{}",
            response.text()
        );
        assert_eq!(response.text().lines().count(), 2);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "nothing empty was replayed"
    );
    let items = client.scan().table_name(&table).send().await.expect("scan");
    assert_eq!(items.count(), 0, "the key was released");
}

#[tokio::test]
async fn the_local_cache_answers_repeats_without_dynamodb() {
    let f = fixture(|c| {
        c.local_cache(10)
            .key_fields(&["/orderId"])
            .validate_payload(true)
    })
    .await;
    let body = json!({"orderId": "o-local", "total": 3});
    let first = send(&f.app, &body).await;
    assert_eq!(first.status, 201);
    // Empty the table: only the local cache still knows the key.
    for item in f.items().await {
        f.client
            .delete_item()
            .table_name(&f.table)
            .key("id", item["id"].clone())
            .send()
            .await
            .expect("delete");
    }
    let repeat = send(&f.app, &body).await;
    assert_eq!(repeat.status, 201);
    assert_eq!(repeat.body, first.body);
    assert_eq!(repeat.header("content-type"), first.header("content-type"));
    assert_eq!(f.calls.load(Ordering::SeqCst), 1, "answered from memory");
    let reused = send(&f.app, &json!({"orderId": "o-local", "total": 4})).await;
    assert_eq!(reused.status, 422, "{}", reused.text());
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
}

/// A call whose handler outlives its lock (here 1 s: the invocation has half a second
/// left) loses the key to the next call. Its late answer must not replace that call's
/// record, or later repeats would get an answer from a call that no longer held the key.
#[tokio::test]
async fn a_call_that_outlives_its_lock_leaves_the_next_claim_alone() {
    let client = aws::client().await;
    let table = aws::table_keyed(&client, "lift-idempotency", "id").await;
    let calls = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let clock = ManualClock::default();
    let counter = calls.clone();
    let held = gate.clone();
    let place = move |ctx: Context| {
        let (counter, held) = (counter.clone(), held.clone());
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let body: Value = serde_json::from_slice(ctx.body()).map_err(Error::internal)?;
            if body["slow"] == true {
                held.notified().await;
            }
            Ok::<_, Error>(Created(json!({"answeredBy": body["who"]})))
        }
    };
    let config = IdempotencyConfig::builder(&table)
        .key_fields(&["/orderId"])
        .clock(clock.clone())
        .build()
        .expect("config");
    let app = Arc::new(
        TestApp::new(
            App::new()
                .post("/orders", place)
                .layer(IdempotencyLayer::new(client.clone(), config)),
        )
        .expect("app"),
    );

    let first = {
        let app = app.clone();
        let event = events::http("POST", "/orders")
            .json(&json!({"orderId": "o-9", "who": "first", "slow": true}))
            .v2();
        let mut lambda = lift_core::testing::lambda_context("first");
        lambda.deadline = (std::time::SystemTime::now() + Duration::from_millis(500))
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_millis() as u64;
        tokio::spawn(async move { app.invoke_with(&event, lambda).await })
    };
    // Wait until the first call holds the key, then let its 1 s lock lapse; it is still
    // running.
    wait_for_status(&client, &table, "INPROGRESS").await;
    clock.advance(Duration::from_millis(1050));
    let second = send(&app, &json!({"orderId": "o-9", "who": "second"})).await;
    assert_eq!(second.status, 201, "{}", second.text());
    assert_eq!(
        second.json::<Value>().expect("json")["answeredBy"],
        "second"
    );

    gate.notify_one();
    let first = first.await.expect("task").expect("first answered");
    let first = lift_core::testing::HttpResponse::from_value(&first).expect("http");
    assert_eq!(first.json::<Value>().expect("json")["answeredBy"], "first");

    let third = send(&app, &json!({"orderId": "o-9", "who": "third"})).await;
    assert_eq!(
        third.json::<Value>().expect("json")["answeredBy"],
        "second",
        "the record is the second call's, which held the key when it finished"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

mod computations {
    //! `Idempotent`: a computation inside a handler, keyed by a value the handler passes,
    //! driven through a real App.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use futures_util::future::join_all;
    use lift_core::testing::{HttpResponse, TestApp, events};
    use lift_core::{App, Context, Error, Json};
    use lift_middleware::idempotency::{
        IdempotencyConfig, IdempotencyConfigBuilder, Idempotent, IdempotentError,
    };
    use serde::{Deserialize, Serialize};
    use serde_json::{Value, json};

    use crate::aws;

    /// What `POST /charge` receives: the charge, and how the test wants it to behave.
    #[derive(Serialize, Deserialize)]
    struct Charge {
        order: String,
        cents: u64,
        #[serde(skip_serializing)]
        pause_ms: u64,
        #[serde(skip_serializing)]
        fail: bool,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Receipt {
        order: String,
        run: u32,
    }

    struct Fixture {
        app: TestApp,
        client: aws_sdk_dynamodb::Client,
        table: String,
        runs: Arc<AtomicU32>,
    }

    /// `POST /charge` charges once per charge (`pause_ms` and `fail` are not part of the
    /// payload); `POST /bytes` runs a computation of the same name with another value type.
    async fn fixture(
        configure: impl FnOnce(IdempotencyConfigBuilder) -> IdempotencyConfigBuilder,
    ) -> Fixture {
        let client = aws::client().await;
        let table = aws::table_keyed(&client, "lift-idempotent", "id").await;
        let config = configure(IdempotencyConfig::builder(&table))
            .build()
            .expect("config");
        let idempotent = Idempotent::new(client.clone(), config);
        let runs = Arc::new(AtomicU32::new(0));
        let charge = {
            let (idempotent, runs) = (idempotent.clone(), runs.clone());
            move |ctx: Context, Json(charge): Json<Charge>| {
                let (idempotent, runs) = (idempotent.clone(), runs.clone());
                async move {
                    let receipt = idempotent
                        .run(&ctx, "charge", &charge, || async {
                            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                            tokio::time::sleep(Duration::from_millis(charge.pause_ms)).await;
                            if charge.fail {
                                return Err(Error::internal("the card processor timed out"));
                            }
                            Ok(Receipt {
                                order: charge.order.clone(),
                                run,
                            })
                        })
                        .await?;
                    Ok::<_, Error>(Json(receipt))
                }
            }
        };
        let bytes = move |ctx: Context, Json(charge): Json<Charge>| {
            let idempotent = idempotent.clone();
            async move {
                let result: Result<Vec<u8>, IdempotentError<Error>> = idempotent
                    .run(&ctx, "charge", &charge, || async { Ok(vec![1, 2, 3]) })
                    .await;
                match result {
                    Err(IdempotentError::Store(_)) => Ok(Json(json!({"store_error": true}))),
                    other => Err(Error::internal(format!(
                        "expected a store error: {other:?}"
                    ))),
                }
            }
        };
        let app =
            TestApp::new(App::new().post("/charge", charge).post("/bytes", bytes)).expect("app");
        Fixture {
            app,
            client,
            table,
            runs,
        }
    }

    fn charge(order: &str, cents: u64, pause_ms: u64, fail: bool) -> Value {
        json!({"order": order, "cents": cents, "pause_ms": pause_ms, "fail": fail})
    }

    async fn post(app: &TestApp, path: &str, body: &Value) -> HttpResponse {
        app.http(events::http("POST", path).json(body).v2())
            .await
            .expect("response")
    }

    #[tokio::test]
    async fn concurrent_calls_compute_once_and_share_the_value() {
        let f = fixture(|c| c.wait_for_in_progress(Duration::from_secs(5))).await;
        let body = charge("o-1", 1250, 200, false);
        let responses = join_all((0..8).map(|_| post(&f.app, "/charge", &body))).await;
        for response in responses {
            assert_eq!(response.status, 200, "{}", response.text());
            assert_eq!(
                response.json::<Receipt>().expect("receipt"),
                Receipt {
                    order: "o-1".to_owned(),
                    run: 1
                }
            );
        }
        assert_eq!(f.runs.load(Ordering::SeqCst), 1);

        let items = f
            .client
            .scan()
            .table_name(&f.table)
            .send()
            .await
            .expect("scan");
        let [item] = items.items() else {
            panic!("one record: {items:?}");
        };
        let id = item["id"].as_s().expect("id");
        assert!(id.starts_with("lift-test.charge#"), "{id}");
        assert_eq!(item["status"].as_s().expect("status"), "COMPLETED");
        let data: Value = serde_json::from_str(item["data"].as_s().expect("data")).expect("json");
        assert_eq!(data, json!({"order": "o-1", "run": 1}));
    }

    #[tokio::test]
    async fn a_duplicate_in_progress_is_a_409_without_waiting() {
        let f = fixture(|c| c).await;
        let first = charge("o-2", 100, 500, false);
        let (slow, duplicate) = tokio::join!(post(&f.app, "/charge", &first), async {
            // Once the first call holds the key, however long the store took.
            super::wait_for_status(&f.client, &f.table, "INPROGRESS").await;
            post(&f.app, "/charge", &charge("o-2", 100, 0, false)).await
        });
        assert_eq!(slow.json::<Receipt>().expect("receipt").run, 1);
        assert_eq!(duplicate.status, 409, "{}", duplicate.text());
        assert_eq!(
            duplicate.json::<Value>().expect("json")["error"]["code"],
            "idempotency_in_progress"
        );
    }

    #[tokio::test]
    async fn a_failure_releases_the_key_and_a_retry_computes() {
        let f = fixture(|c| c).await;
        let failed = post(&f.app, "/charge", &charge("o-3", 100, 0, true)).await;
        assert_eq!(failed.status, 500);
        let retried = post(&f.app, "/charge", &charge("o-3", 100, 0, false)).await;
        assert_eq!(retried.json::<Receipt>().expect("receipt").run, 2);
        let repeat = post(&f.app, "/charge", &charge("o-3", 100, 0, false)).await;
        assert_eq!(repeat.json::<Receipt>().expect("receipt").run, 2);
        assert_eq!(f.runs.load(Ordering::SeqCst), 2);
    }

    /// A computation cut short, by a timeout around its handler or a panic in it, releases
    /// its key: the retry computes, rather than finding the key in progress until its lock
    /// lapses (the 30 s the test invocation has left).
    #[tokio::test]
    async fn a_computation_cut_short_releases_its_key() {
        let client = aws::client().await;
        for first in ["stall", "panic"] {
            let table = aws::table_keyed(&client, "lift-idempotent", "id").await;
            let config = IdempotencyConfig::builder(&table).build().expect("config");
            let idempotent = Idempotent::new(client.clone(), config);
            let runs = Arc::new(AtomicU32::new(0));
            let counted = runs.clone();
            let handler = move |ctx: Context, Json(charge): Json<Charge>| {
                let (idempotent, runs) = (idempotent.clone(), counted.clone());
                async move {
                    let receipt = idempotent
                        .run(&ctx, "charge", &charge, || async {
                            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                            if run == 1 && first == "stall" {
                                tokio::time::sleep(Duration::from_secs(60)).await;
                            }
                            if run == 1 && first == "panic" {
                                panic!("the computation's first run panics");
                            }
                            Ok::<_, Error>(Receipt {
                                order: charge.order.clone(),
                                run,
                            })
                        })
                        .await?;
                    Ok::<_, Error>(Json(receipt))
                }
            };
            let app = TestApp::new(
                App::new().post("/charge", handler).layer(
                    lift_middleware::timeout::TimeoutLayer::new(Duration::from_millis(300))
                        .expect("timeout"),
                ),
            )
            .expect("app");
            let body = charge("o-cut", 100, 0, false);
            let cut = post(&app, "/charge", &body).await;
            assert!(cut.status >= 500, "{first}: {}", cut.text());
            let waited = tokio::time::Instant::now();
            let retry = loop {
                let retry = post(&app, "/charge", &body).await;
                if retry.status != 409 || waited.elapsed() > Duration::from_secs(10) {
                    break retry;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(retry.status, 200, "{first}: {}", retry.text());
            assert_eq!(retry.json::<Receipt>().expect("receipt").run, 2, "{first}");
        }
    }

    #[tokio::test]
    async fn a_key_reused_with_another_payload_is_a_422() {
        let f = fixture(|c| c.key_fields(&["/order"]).validate_payload(true)).await;
        let first = post(&f.app, "/charge", &charge("o-4", 100, 0, false)).await;
        assert_eq!(first.json::<Receipt>().expect("receipt").run, 1);
        let reused = post(&f.app, "/charge", &charge("o-4", 999, 0, false)).await;
        assert_eq!(reused.status, 422, "{}", reused.text());
        assert_eq!(
            reused.json::<Value>().expect("json")["error"]["code"],
            "idempotency_key_reused"
        );
        assert_eq!(f.runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_local_cache_keeps_completed_values() {
        let f = fixture(|c| c.local_cache(16)).await;
        let body = charge("o-6", 100, 0, false);
        assert_eq!(post(&f.app, "/charge", &body).await.status, 200);
        let items = f
            .client
            .scan()
            .table_name(&f.table)
            .send()
            .await
            .expect("scan");
        for item in items.items() {
            f.client
                .delete_item()
                .table_name(&f.table)
                .key("id", item["id"].clone())
                .send()
                .await
                .expect("delete");
        }
        let repeat = post(&f.app, "/charge", &body).await;
        assert_eq!(repeat.json::<Receipt>().expect("receipt").run, 1);
        assert_eq!(f.runs.load(Ordering::SeqCst), 1, "answered from memory");
    }

    #[tokio::test]
    async fn a_stored_value_of_another_type_is_a_store_error() {
        let f = fixture(|c| c).await;
        let body = charge("o-5", 100, 0, false);
        assert_eq!(post(&f.app, "/charge", &body).await.status, 200);
        let other = post(&f.app, "/bytes", &body).await;
        assert_eq!(other.status, 200, "{}", other.text());
        assert_eq!(other.json::<Value>().expect("json")["store_error"], true);
        assert_eq!(f.runs.load(Ordering::SeqCst), 1);
    }
}

/// Two tenants that send the same `Idempotency-Key` and body get two executions, each its
/// own answer; a repeat within a tenant gets that tenant's answer.
#[tokio::test]
async fn the_same_key_and_body_from_two_tenants_are_two_executions() {
    use lift_middleware::tenancy::{TenantConfig, TenantLayer, TenantSource};

    let client = aws::client().await;
    let table = aws::table_keyed(&client, "lift-idempotency-tenants", "id").await;
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    let charge = move |ctx: Context| {
        let counter = counter.clone();
        async move {
            let run = counter.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, Error>(Created(json!({"charged_tenant": ctx.tenant(), "run": run})))
        }
    };
    let config = IdempotencyConfig::builder(&table)
        .key_header("Idempotency-Key")
        .validate_payload(true)
        .build()
        .expect("config");
    let tenants = TenantConfig::builder()
        .source(TenantSource::Header("x-tenant-id".into()))
        .trust_headers(true)
        .build()
        .expect("tenancy");
    // Tenancy outside idempotency: the key is derived once the tenant is known.
    let app = TestApp::new(
        App::new()
            .post("/charges", charge)
            .layer(IdempotencyLayer::new(client.clone(), config))
            .layer(TenantLayer::new(tenants)),
    )
    .expect("app");
    let from = |tenant: &str| {
        events::http("POST", "/charges")
            .header("idempotency-key", "charge-1")
            .header("x-tenant-id", tenant)
            .json(&json!({"amount": 10}))
            .v2()
    };
    let t1 = app.http(from("t1")).await.expect("t1");
    let t2 = app.http(from("t2")).await.expect("t2");
    assert_eq!(
        (t1.status, t2.status),
        (201, 201),
        "{} {}",
        t1.text(),
        t2.text()
    );
    let t1_body: Value = t1.json().expect("json");
    let t2_body: Value = t2.json().expect("json");
    assert_eq!(t1_body["charged_tenant"], "t1");
    assert_eq!(
        t2_body["charged_tenant"], "t2",
        "t2 must not get t1's answer"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2, "two executions");

    // Repeats get their own tenant's stored answer, without running again.
    let again = app.http(from("t1")).await.expect("t1 again");
    assert_eq!(again.body, t1.body);
    let again = app.http(from("t2")).await.expect("t2 again");
    assert_eq!(again.body, t2.body);
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // Two records, and neither id shows a tenant in clear.
    let items = client
        .scan()
        .table_name(&table)
        .send()
        .await
        .expect("scan")
        .items
        .unwrap_or_default();
    assert_eq!(items.len(), 2);
    for item in &items {
        let id = item["id"].as_s().expect("id");
        assert!(id.starts_with("lift-test.POST /charges#"), "{id}");
        assert!(!id.contains("t1") && !id.contains("t2"), "{id}");
    }
}

/// An App whose handler fails while `fail` says so, behind idempotency on `client`.
fn failing_app(client: aws_sdk_dynamodb::Client, table: &str, runs: Arc<AtomicU32>) -> TestApp {
    let handler = move |_ctx: Context| {
        let runs = runs.clone();
        async move {
            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
            if run == 1 {
                return Err(Error::internal("the first run fails"));
            }
            Ok::<_, Error>(Created(json!({"run": run})))
        }
    };
    let config = IdempotencyConfig::builder(table).build().expect("config");
    TestApp::new(
        App::new()
            .post("/orders", handler)
            .layer(IdempotencyLayer::new(client, config)),
    )
    .expect("app")
}

/// A claim the store applied but whose answer was lost is met again by the SDK's retry as
/// a failed condition: the record it finds is this call's own claim, so the call runs (it
/// was a 409 "in progress" against itself, the key locked until the lock lapsed).
#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_still_this_calls() {
    let setup = aws::client().await;
    let table = aws::table_keyed(&setup, "lift-idempotency-lost", "id").await;
    let (client, puts) = aws::answer_losing_client("PutItem", 1).await;
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    let handler = move |_ctx: Context| {
        let counter = counter.clone();
        async move {
            let run = counter.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, Error>(Created(json!({"run": run})))
        }
    };
    let config = IdempotencyConfig::builder(&table).build().expect("config");
    let app = TestApp::new(
        App::new()
            .post("/orders", handler)
            .layer(IdempotencyLayer::new(client, config)),
    )
    .expect("app");
    let event = events::http("POST", "/orders")
        .json(&json!({"orderId": "o-lost"}))
        .v2();
    let first = app.http(event.clone()).await.expect("first");
    assert_eq!(first.status, 201, "{}", first.text());
    assert!(
        puts.attempts() >= 2,
        "the claim was sent again: {}",
        puts.attempts()
    );
    let repeat = app.http(event).await.expect("repeat");
    assert_eq!(repeat.status, 201, "{}", repeat.text());
    assert_eq!(
        repeat.json::<Value>().expect("json")["run"],
        1,
        "the stored answer"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Releasing a failed call's key is retried when the store fails for a moment: the key is
/// free for the client's retry, which runs.
#[tokio::test]
async fn a_release_that_fails_for_a_moment_is_retried() {
    let setup = aws::client().await;
    let table = aws::table_keyed(&setup, "lift-idempotency-release", "id").await;
    let (client, deletes) = aws::failing_client("DeleteItem", 2).await;
    let runs = Arc::new(AtomicU32::new(0));
    let app = failing_app(client, &table, runs.clone());
    let body = json!({"orderId": "o-release"});
    let event = events::http("POST", "/orders").json(&body).v2();
    assert_eq!(app.http(event.clone()).await.expect("first").status, 500);
    assert!(deletes.attempts() >= 3, "{} attempts", deletes.attempts());
    let retry = app.http(event).await.expect("retry");
    assert_eq!(retry.status, 201, "the key was released: {}", retry.text());
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// A release that keeps failing stops before the invocation's deadline (and is logged at
/// ERROR); the key stays locked until its lock lapses, so a repeat at once is a 409.
#[tokio::test]
async fn a_release_that_keeps_failing_gives_up_within_the_invocation() {
    let setup = aws::client().await;
    let table = aws::table_keyed(&setup, "lift-idempotency-release", "id").await;
    let (client, deletes) = aws::failing_client("DeleteItem", u32::MAX).await;
    let runs = Arc::new(AtomicU32::new(0));
    let app = failing_app(client, &table, runs.clone());
    let event = events::http("POST", "/orders")
        .json(&json!({"orderId": "o-stuck"}))
        .v2();
    let mut short = lift_core::testing::lambda_context("short");
    short.deadline = (std::time::SystemTime::now() + Duration::from_secs(2))
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64;
    let answer = app.invoke_with(&event, short).await.expect("invoke");
    assert_eq!(answer["statusCode"], 500);
    assert!(deletes.attempts() >= 2, "{} attempts", deletes.attempts());
    let repeat = app.http(event).await.expect("repeat");
    assert_eq!(repeat.status, 409, "{}", repeat.text());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// An answer too large for a record (DynamoDB items end at 400 KB) is still the caller's,
/// once: the record keeps its status and headers, so a repeat is answered (without the
/// body, saying so) instead of running the call again or failing; repeated headers (two
/// cookies) come back as they were sent.
#[tokio::test]
async fn an_answer_too_large_to_keep_runs_once_and_a_repeat_keeps_its_headers() {
    let client = aws::client().await;
    let table = aws::table_keyed(&client, "lift-idempotency", "id").await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let export = move |ctx: Context| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let kb: usize =
                serde_json::from_slice::<Value>(ctx.body()).map_err(Error::internal)?["kb"]
                    .as_u64()
                    .unwrap_or(1) as usize;
            let mut response =
                lift_core::Response::new(lift_core::Body::Text("x".repeat(kb * 1024)));
            for cookie in ["a=1; Path=/", "b=2; Path=/"] {
                response.headers_mut().append(
                    http::header::SET_COOKIE,
                    http::HeaderValue::from_static(cookie),
                );
            }
            Ok::<_, Error>(response)
        }
    };
    let config = IdempotencyConfig::builder(&table)
        .key_header("Idempotency-Key")
        .build()
        .expect("config");
    let app = TestApp::new(
        App::new()
            .post("/exports", export)
            .layer(IdempotencyLayer::new(client.clone(), config)),
    )
    .expect("app");
    let call = |kb: u64, key: &str| {
        events::http("POST", "/exports")
            .header("Idempotency-Key", key)
            .json(&json!({"kb": kb}))
            .v2()
    };
    let first = app.http(call(450, "big")).await.expect("response");
    assert_eq!(first.status, 200, "{}", first.text().len());
    assert_eq!(first.text().len(), 450 * 1024);
    let again = app.http(call(450, "big")).await.expect("response");
    assert_eq!(again.status, 200);
    assert_eq!(
        again.header("x-lift-idempotency"),
        Some("body-too-large-to-keep")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the call ran once");

    let small = app.http(call(1, "small")).await.expect("response");
    assert_eq!(small.status, 200);
    let repeat = app.http(call(1, "small")).await.expect("response");
    assert_eq!(repeat.text(), small.text());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        repeat.headers["set-cookie"],
        ["a=1; Path=/", "b=2; Path=/"],
        "both cookies replayed"
    );
}

/// An App whose `POST /orders` stalls past the 300 ms timeout around its idempotency layer,
/// or panics, on its first run when the body's `first` says so, counting runs in `runs`.
fn cut_short_app(client: aws_sdk_dynamodb::Client, table: &str, runs: Arc<AtomicU32>) -> TestApp {
    let config = IdempotencyConfig::builder(table).build().expect("config");
    TestApp::new(
        App::new()
            .post("/orders", move |ctx: Context| {
                let runs = runs.clone();
                async move {
                    let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                    let body: Value =
                        serde_json::from_slice(ctx.body()).map_err(Error::internal)?;
                    if n == 1 && body["first"] == "stall" {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    if n == 1 && body["first"] == "panic" {
                        panic!("the handler's first run panics");
                    }
                    Ok::<_, Error>(Created(json!({"run": n})))
                }
            })
            .layer(IdempotencyLayer::new(client, config))
            .layer(
                lift_middleware::timeout::TimeoutLayer::new(Duration::from_millis(300))
                    .expect("timeout"),
            ),
    )
    .expect("app")
}

/// A call cut short inside the idempotency layer, by a timeout around it (which drops its
/// future) or a panic in its handler, releases its key: the retry runs, rather than finding
/// the key in progress until its lock lapses (the 30 s the test invocation has left).
#[tokio::test]
async fn a_call_cut_short_by_a_timeout_or_a_panic_releases_its_key() {
    let client = aws::client().await;
    for (first, status) in [("stall", 504), ("panic", 500)] {
        let table = aws::table_keyed(&client, "lift-idempotency", "id").await;
        let runs = Arc::new(AtomicU32::new(0));
        let app = cut_short_app(client.clone(), &table, runs.clone());
        let body = json!({"orderId": "o-cut", "first": first});
        assert_eq!(send(&app, &body).await.status, status, "{first}");
        // The release runs in a task of its own: wait for it rather than for a fixed time.
        let waited = tokio::time::Instant::now();
        let retry = loop {
            let retry = send(&app, &body).await;
            if retry.status != 409 || waited.elapsed() > Duration::from_secs(10) {
                break retry;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(retry.status, 201, "{first}: {}", retry.text());
        assert_eq!(retry.json::<Value>().expect("json")["run"], 2, "{first}");
        assert_eq!(runs.load(Ordering::SeqCst), 2, "{first}");
    }
}
