//! SQS, DynamoDB Streams, SNS and EventBridge behaviour of an App, driven in-process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lift_core::testing::{TestApp, batch_failures, events};
use lift_core::{App, Context, Error, Json, Result, Source};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize, garde::Validate)]
struct Charge {
    #[garde(range(min = 1))]
    cents: u64,
}

async fn charge(_ctx: Context, charge: Charge) -> Result<()> {
    if charge.cents == 13 {
        panic!("unlucky");
    }
    if charge.cents == 99 {
        return Err(Error::internal("card processor unavailable"));
    }
    Ok(())
}

#[tokio::test]
async fn sqs_reports_only_the_failed_records() {
    let app = TestApp::new(App::new().sqs(charge)).expect("app");
    let response = app
        .invoke(&events::sqs([
            r#"{"cents": 100}"#,
            r#"{"cents": 99}"#,
            r#"not json"#,
            r#"{"cents": 13}"#,
            r#"{"cents": 0}"#,
            r#"{"cents": 5}"#,
        ]))
        .await
        .expect("batch response");
    assert_eq!(batch_failures(&response), ["m1", "m2", "m3", "m4"]);
}

#[tokio::test]
async fn sqs_fifo_fails_the_rest_of_a_group_after_a_failure() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let app = TestApp::new(App::new().sqs(move |ctx: Context| {
        let seen = seen.clone();
        async move {
            let body = String::from_utf8_lossy(ctx.body()).into_owned();
            seen.lock().expect("lock").push(body.clone());
            if body == "a2" {
                return Err(Error::internal("a2 failed"));
            }
            Ok(())
        }
    }))
    .expect("app");
    let response = app
        .invoke(&events::sqs_fifo([
            ("a", "a1"),
            ("b", "b1"),
            ("a", "a2"),
            ("b", "b2"),
            ("a", "a3"),
        ]))
        .await
        .expect("batch response");
    assert_eq!(batch_failures(&response), ["m2", "m4"]);
    assert_eq!(*calls.lock().expect("lock"), ["a1", "b1", "a2", "b2"]);
}

#[tokio::test]
async fn sqs_concurrency_runs_records_together_and_keeps_reports_exact() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let app = TestApp::new(
        App::new()
            .sqs(move |ctx: Context| {
                let (r, p) = (r.clone(), p.clone());
                async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    r.fetch_sub(1, Ordering::SeqCst);
                    if ctx.body() == b"bad" {
                        return Err(Error::internal("bad"));
                    }
                    Ok(())
                }
            })
            .sqs_concurrency(std::num::NonZeroUsize::new(4).expect("non-zero")),
    )
    .expect("app");
    let response = app
        .invoke(&events::sqs(["ok", "bad", "ok", "ok", "bad", "ok"]))
        .await
        .expect("batch response");
    assert_eq!(batch_failures(&response), ["m1", "m4"]);
    assert!(peak.load(Ordering::SeqCst) > 1, "records ran one at a time");
}

#[tokio::test]
async fn a_failed_record_without_an_id_fails_the_whole_batch() {
    let app = TestApp::new(App::new().sqs(charge)).expect("app");
    let mut batch = events::sqs([r#"{"cents": 99}"#]);
    batch["Records"][0]["messageId"] = json!("");
    assert!(app.invoke(&batch).await.is_err());
}

#[tokio::test]
async fn sqs_without_a_handler_is_an_invocation_error() {
    let app = TestApp::new(App::new().get("/", || async { Ok::<_, Error>(()) })).expect("app");
    let error = app
        .invoke(&events::sqs(["x"]))
        .await
        .expect_err("no handler");
    assert!(matches!(error, Error::NoHandler(ref what) if what.contains("SQS")));
}

#[derive(Debug, Deserialize, garde::Validate)]
struct Item {
    #[garde(length(min = 1))]
    name: String,
}

#[tokio::test]
async fn dynamodb_reports_sequence_numbers_and_reads_images() {
    let names = Arc::new(Mutex::new(Vec::new()));
    let seen = names.clone();
    let app = TestApp::new(App::new().dynamodb(move |ctx: Context, item: Item| {
        let seen = seen.clone();
        async move {
            let record = ctx.dynamodb_record().expect("record");
            seen.lock()
                .expect("lock")
                .push(format!("{}:{}", record.event_name, item.name));
            if record.event_name == "REMOVE" {
                return Err(Error::internal("cannot remove"));
            }
            Ok(())
        }
    }))
    .expect("app");
    let response = app
        .invoke(&events::dynamodb([
            ("INSERT", json!({"name": {"S": "apple"}}), json!({})),
            (
                "MODIFY",
                json!({"name": {"S": "pear"}}),
                json!({"name": {"S": "apple"}}),
            ),
            ("REMOVE", json!({}), json!({"name": {"S": "pear"}})),
            ("INSERT", json!({"name": {"S": ""}}), json!({})),
        ]))
        .await
        .expect("batch response");
    assert_eq!(batch_failures(&response), ["102", "103"]);
    assert_eq!(
        *names.lock().expect("lock"),
        ["INSERT:apple", "MODIFY:pear", "REMOVE:pear"]
    );
}

/// After a change of an item fails, later changes of that item in the batch wait for it:
/// not run (a later change applied before the earlier one that failed, then both again),
/// reported with it. Another item's changes run.
#[tokio::test]
async fn a_failed_change_holds_back_the_later_changes_of_its_item_only() {
    let names = Arc::new(Mutex::new(Vec::new()));
    let seen = names.clone();
    let app = TestApp::new(App::new().dynamodb(move |_ctx: Context, item: Item| {
        let seen = seen.clone();
        async move {
            seen.lock().expect("lock").push(item.name.clone());
            if item.name == "v1" {
                return Err(Error::internal("cannot apply v1 yet"));
            }
            Ok(())
        }
    }))
    .expect("app");
    let image = |name: &str| json!({"name": {"S": name}});
    let mut batch = events::dynamodb([
        ("INSERT", image("v0"), json!({})),
        ("MODIFY", image("v1"), image("v0")),
        ("INSERT", image("other"), json!({})),
        ("MODIFY", image("v2"), image("v1")),
    ]);
    // Records 0, 1 and 3 are changes of one item; record 2 of another.
    for i in [0, 1, 3] {
        batch["Records"][i]["dynamodb"]["Keys"] = json!({"pk": {"S": "item-1"}});
    }
    let response = app.invoke(&batch).await.expect("batch response");
    assert_eq!(batch_failures(&response), ["101", "103"]);
    assert_eq!(*names.lock().expect("lock"), ["v0", "v1", "other"]);
}

#[tokio::test]
async fn sns_answers_with_the_handler_output_and_fails_loudly() {
    #[derive(Debug, Deserialize, garde::Validate)]
    struct Alert {
        #[garde(skip)]
        level: String,
    }
    let app = TestApp::new(App::new().sns(|ctx: Context, alert: Alert| async move {
        if alert.level == "panic" {
            return Err(Error::internal("refused"));
        }
        assert_eq!(ctx.source(), Source::Sns);
        Ok(Json(json!({"level": alert.level})))
    }))
    .expect("app");
    let ok = app
        .invoke(&events::sns(r#"{"level": "warn"}"#))
        .await
        .expect("ok");
    assert_eq!(ok, json!({"level": "warn"}));
    assert!(
        app.invoke(&events::sns(r#"{"level": "panic"}"#))
            .await
            .is_err()
    );
    assert!(app.invoke(&events::sns("not json")).await.is_err());
}

async fn named(name: &'static str, ctx: Context) -> Result<Json<Value>> {
    Ok(Json(json!({
        "handler": name,
        "source": ctx.source().as_str(),
        "detail": serde_json::from_slice::<Value>(ctx.body()).map_err(Error::internal)?,
    })))
}

#[tokio::test]
async fn eventbridge_routes_by_source_and_detail_type() {
    let app = TestApp::new(
        App::new()
            .event("orders", "OrderPlaced", |ctx| named("placed", ctx))
            .event_source("orders", |ctx| named("orders", ctx))
            .schedule(|ctx| named("schedule", ctx))
            .event_fallback(|ctx| named("fallback", ctx)),
    )
    .expect("app");
    let cases = [
        (
            events::eventbridge("orders", "OrderPlaced", json!({"id": 1})),
            "placed",
            "eventbridge",
        ),
        (
            events::eventbridge("orders", "OrderShipped", json!({"id": 2})),
            "orders",
            "eventbridge",
        ),
        (events::schedule(), "schedule", "schedule"),
        (
            events::eventbridge("billing", "Paid", json!({})),
            "fallback",
            "eventbridge",
        ),
    ];
    for (event, handler, source) in cases {
        let response = app.invoke(&event).await.expect("routed");
        assert_eq!(response["handler"], handler);
        assert_eq!(response["source"], source);
        assert_eq!(response["detail"], event["detail"]);
    }
}

#[tokio::test]
async fn eventbridge_takes_the_correlation_id_from_the_detail() {
    let app = TestApp::new(App::new().event_fallback(|ctx: Context| async move {
        Ok::<_, Error>(Json(json!({ "correlation": ctx.correlation_id() })))
    }))
    .expect("app");
    let carried = events::eventbridge("orders", "Placed", json!({"correlationId": "corr-7"}));
    let response = app.invoke(&carried).await.expect("handled");
    assert_eq!(response["correlation"], "corr-7");
    // Without one (or an empty one), the request id, as for other sources.
    for detail in [
        json!({"id": 1}),
        json!({"correlationId": ""}),
        json!([1, 2]),
    ] {
        let event = events::eventbridge("orders", "Placed", detail);
        let response = app.invoke(&event).await.expect("handled");
        assert_eq!(response["correlation"], "test-request-id");
    }
}

#[tokio::test]
async fn eventbridge_envelope_metadata_reaches_the_context() {
    let app = TestApp::new(App::new().event_fallback(|ctx: Context| async move {
        Ok::<_, Error>(Json(json!({
            "tenant": ctx.message_attribute("tenant"),
            "upstream": ctx.upstream_trace(),
        })))
    }))
    .expect("app");
    let trace = "Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8;Sampled=1";
    let event = events::eventbridge(
        "orders",
        "Placed",
        json!({"tenant": "acme", "traceHeader": trace, "payload": {"tenant": "not this"}}),
    );
    let response = app.invoke(&event).await.expect("handled");
    assert_eq!(response["tenant"], "acme");
    assert_eq!(response["upstream"], trace);
    // No such fields, a field that is not a string, a detail that is not an object.
    for detail in [json!({"id": 1}), json!({"tenant": 7}), json!([1, 2])] {
        let event = events::eventbridge("orders", "Placed", detail);
        let response = app.invoke(&event).await.expect("handled");
        assert_eq!(response, json!({"tenant": null, "upstream": null}));
    }
}

#[tokio::test]
async fn eventbridge_without_a_route_names_the_event() {
    let app = TestApp::new(App::new().event("orders", "OrderPlaced", |ctx| named("placed", ctx)))
        .expect("app");
    let error = app
        .invoke(&events::eventbridge("billing", "Paid", json!({})))
        .await
        .expect_err("no route");
    let message = error.to_string();
    assert!(
        message.contains("billing") && message.contains("Paid"),
        "{message}"
    );
}

#[tokio::test]
async fn unknown_events_name_what_arrived() {
    let app = TestApp::new(App::new()).expect("app");
    let error = app
        .invoke(&json!({"foo": 1, "bar": [2]}))
        .await
        .expect_err("unknown");
    let message = error.to_string();
    assert!(
        message.contains("foo") && message.contains("bar"),
        "{message}"
    );
    let kinesis = app
        .invoke(&json!({"Records": [{"eventSource": "aws:kinesis"}]}))
        .await
        .expect_err("unsupported");
    assert!(kinesis.to_string().contains("aws:kinesis"));
    assert!(app.invoke(&json!("just a string")).await.is_err());
}

/// One rule for every source whose units are not HTTP requests: a unit fails when its
/// handler errs, panics or answers with a 4xx or 5xx status; a 2xx or 3xx answer succeeds.
mod one_failure_rule {
    use super::*;
    use lift_core::http::StatusCode;

    /// Answers with the status the payload names (`"422"`), 200 for anything else.
    async fn answer(ctx: Context) -> Result<(StatusCode, Json<Value>)> {
        let text = String::from_utf8_lossy(ctx.body())
            .trim_matches('"')
            .to_owned();
        let status = text.parse().ok().and_then(|n| StatusCode::from_u16(n).ok());
        Ok((
            status.unwrap_or(StatusCode::OK),
            Json(json!({"answered": text})),
        ))
    }

    fn app() -> TestApp {
        TestApp::new(
            App::new()
                .sqs(answer)
                .sns(answer)
                .dynamodb(|_ctx: Context| async {
                    Ok::<_, Error>((StatusCode::UNPROCESSABLE_ENTITY, "refused"))
                })
                .event_fallback(answer),
        )
        .expect("app")
    }

    #[tokio::test]
    async fn an_error_status_fails_the_unit_whatever_the_source() {
        let app = app();
        // SQS: the 4xx and 5xx records are reported, the 2xx and 3xx ones are not.
        let answer = app
            .invoke(&events::sqs(["200", "422", "302", "503"]))
            .await
            .expect("batch");
        let failed = batch_failures(&answer);
        assert_eq!(failed.len(), 2, "{answer}");
        // SNS and EventBridge: an error status is an invocation error, so Lambda retries.
        assert!(app.invoke(&events::sns("200")).await.is_ok());
        let error = app
            .invoke(&events::sns("400"))
            .await
            .expect_err("a 400 fails");
        assert_eq!(error.code(), "record_failed");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert!(
            app.invoke(&events::eventbridge("shop", "Placed", json!("200")))
                .await
                .is_ok()
        );
        let error = app
            .invoke(&events::eventbridge("shop", "Placed", json!("500")))
            .await
            .expect_err("a 500 fails");
        assert_eq!(error.code(), "record_failed");
        // DynamoDB Streams: reported by sequence number.
        let answer = app
            .invoke(&events::dynamodb([(
                "INSERT",
                json!({"pk": {"S": "a"}}),
                json!({}),
            )]))
            .await
            .expect("batch");
        assert_eq!(batch_failures(&answer).len(), 1, "{answer}");
    }

    #[tokio::test]
    async fn an_authorizer_answering_401_or_403_refuses_and_any_other_error_status_fails() {
        let app = TestApp::new(App::new().authorizer(|ctx: Context| async move {
            let status = ctx
                .header("x-answer")
                .and_then(|s| s.parse().ok())
                .and_then(|n| StatusCode::from_u16(n).ok())
                .unwrap_or(StatusCode::OK);
            Ok::<_, Error>((status, "answered"))
        }))
        .expect("app");
        let ask = |status: &str| {
            events::authorizer("GET", "/orders")
                .header("x-answer", status)
                .request_v1()
        };
        // 401: the invocation error REST APIs answer 401 for.
        let error = app.invoke(&ask("401")).await.expect_err("401");
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
        // 403: a deny policy.
        let denied = app.invoke(&ask("403")).await.expect("a decision");
        assert_eq!(
            denied["policyDocument"]["Statement"][0]["Effect"], "Deny",
            "{denied}"
        );
        // Any other error status fails the invocation with that status.
        let error = app.invoke(&ask("503")).await.expect_err("503");
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code(), "record_failed");
    }
}

/// A Lambda context whose deadline is `in_ms` from now.
fn deadline_in(in_ms: u64) -> lambda_runtime::Context {
    let mut context = lift_core::testing::lambda_context("deadline-test");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64;
    context.deadline = now + in_ms;
    context
}

/// Records not started when the deadline is near are reported failed without running: only
/// they are delivered again, where a timeout would redeliver the whole batch, the records
/// already done included. The first record takes 800 ms; after it, less than the 1 s
/// margin is left of the 1.5 s.
#[tokio::test]
async fn records_not_started_before_the_deadline_are_reported_failed() {
    let ran = Arc::new(Mutex::new(Vec::new()));
    let seen = ran.clone();
    let slow = move |ctx: Context| {
        let seen = seen.clone();
        async move {
            let id = ctx
                .sqs_message()
                .and_then(|m| m.message_id.clone())
                .or_else(|| {
                    ctx.dynamodb_record()
                        .and_then(|r| r.change.sequence_number.clone())
                })
                .unwrap_or_default();
            seen.lock().expect("lock").push(id);
            tokio::time::sleep(std::time::Duration::from_millis(800)).await;
            Ok::<_, Error>(())
        }
    };
    let margin = std::time::Duration::from_secs(1);
    let sequential = TestApp::new(
        App::new()
            .sqs(slow.clone())
            .dynamodb(slow.clone())
            .batch_deadline_margin(margin),
    )
    .expect("app");
    let batch = events::sqs([r#"{}"#, r#"{}"#, r#"{}"#]);
    let response = sequential
        .invoke_with(&batch, deadline_in(1500))
        .await
        .expect("batch response");
    assert_eq!(batch_failures(&response), ["m1", "m2"]);
    assert_eq!(*ran.lock().expect("lock"), ["m0"]);

    ran.lock().expect("lock").clear();
    let stream = events::dynamodb([
        ("INSERT", json!({"name": {"S": "a"}}), json!({})),
        ("INSERT", json!({"name": {"S": "b"}}), json!({})),
    ]);
    let response = sequential
        .invoke_with(&stream, deadline_in(1500))
        .await
        .expect("batch response");
    assert_eq!(batch_failures(&response), ["101"]);
    assert_eq!(*ran.lock().expect("lock"), ["100"]);

    // Two at a time: the first two start, the third finds the deadline near.
    ran.lock().expect("lock").clear();
    let concurrent = TestApp::new(
        App::new()
            .sqs(slow)
            .sqs_concurrency(std::num::NonZeroUsize::new(2).expect("two"))
            .batch_deadline_margin(margin),
    )
    .expect("app");
    let response = concurrent
        .invoke_with(&batch, deadline_in(1500))
        .await
        .expect("batch response");
    assert_eq!(batch_failures(&response), ["m2"]);
    // No deadline at all (0): everything runs.
    ran.lock().expect("lock").clear();
    let mut endless = deadline_in(0);
    endless.deadline = 0;
    let response = concurrent
        .invoke_with(&batch, endless)
        .await
        .expect("batch response");
    assert!(batch_failures(&response).is_empty());
    assert_eq!(ran.lock().expect("lock").len(), 3);
}

/// An SNS attribute of type Binary has no string value (its value is base64 text), as an
/// SQS one has none: it is neither the record's correlation id nor its string attribute.
#[tokio::test]
async fn an_sns_binary_attribute_is_not_a_string_attribute() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = TestApp::new(App::new().sns(move |ctx: Context| {
        let record = record.clone();
        async move {
            record.lock().expect("lock").push((
                ctx.correlation_id().to_owned(),
                ctx.message_attribute("correlationId").map(str::to_owned),
            ));
            Ok::<_, Error>(())
        }
    }))
    .expect("app");
    let mut event = events::sns("{}");
    event["Records"][0]["Sns"]["MessageAttributes"] =
        json!({"correlationId": {"Type": "Binary", "Value": "Y29ycg=="}});
    app.invoke(&event).await.expect("handled");
    event["Records"][0]["Sns"]["MessageAttributes"] =
        json!({"correlationId": {"Type": "String", "Value": "corr-9"}});
    app.invoke(&event).await.expect("handled");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen[0], ("test-request-id".to_owned(), None));
    assert_eq!(seen[1], ("corr-9".to_owned(), Some("corr-9".to_owned())));
}

/// A schedule handler names the source and the detail type, so it comes before a route on
/// the source `aws.events` alone, which still takes that source's other events.
#[tokio::test]
async fn a_schedule_handler_comes_before_a_route_on_its_source() {
    let app = TestApp::new(
        App::new()
            .event_source("aws.events", |ctx| named("aws-events", ctx))
            .schedule(|ctx| named("schedule", ctx)),
    )
    .expect("app");
    let scheduled = app.invoke(&events::schedule()).await.expect("routed");
    assert_eq!(scheduled["handler"], "schedule");
    let other = app
        .invoke(&events::eventbridge(
            "aws.events",
            "Something Else",
            json!({}),
        ))
        .await
        .expect("routed");
    assert_eq!(other["handler"], "aws-events");
}

/// A second handler for one source (or one EventBridge route) is a configuration error, as
/// a second HTTP route is: one of the two would never run, silently.
#[tokio::test]
async fn a_source_registered_twice_is_a_configuration_error() {
    let first = || async { Ok::<_, Error>(()) };
    let second = || async { Ok::<_, Error>(()) };
    let twice: [(&str, App); 7] = [
        ("SQS", App::new().sqs(first).sqs(second)),
        ("SNS", App::new().sns(first).sns(second)),
        ("DynamoDB", App::new().dynamodb(first).dynamodb(second)),
        ("schedule", App::new().schedule(first).schedule(second)),
        (
            "fallback",
            App::new().event_fallback(first).event_fallback(second),
        ),
        (
            "OrderPlaced",
            App::new()
                .event("shop", "OrderPlaced", first)
                .event("shop", "OrderPlaced", second),
        ),
        (
            "source `shop`",
            App::new()
                .event_source("shop", first)
                .event_source("shop", second),
        ),
    ];
    for (what, app) in twice {
        assert!(
            matches!(app.into_service(), Err(Error::Config(ref m)) if m.contains(what)),
            "{what}"
        );
    }
    // One route per detail-type, and one for the rest of the source: no conflict.
    assert!(
        App::new()
            .event("shop", "OrderPlaced", first)
            .event("shop", "OrderShipped", second)
            .event_source("shop", first)
            .into_service()
            .is_ok()
    );
}

/// Inside an invocation, code without its Context reads the invocation's deadline; outside
/// one, or for a runtime that sent none, there is none.
#[tokio::test]
async fn the_invocation_deadline_is_readable_without_the_context() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = TestApp::new(App::new().sqs(move |ctx: Context| {
        let record = record.clone();
        async move {
            record
                .lock()
                .expect("lock")
                .push((lift_core::invocation_deadline(), ctx.deadline()));
            Ok::<_, Error>(())
        }
    }))
    .expect("app");
    let mut context = lift_core::testing::lambda_context("r");
    context.deadline = 1_900_000_000_000;
    app.invoke_with(&events::sqs(["x"]), context.clone())
        .await
        .expect("invoke");
    context.deadline = 0;
    app.invoke_with(&events::sqs(["y"]), context)
        .await
        .expect("invoke");
    let seen = seen.lock().expect("lock").clone();
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_900_000_000_000);
    assert_eq!(seen, [(Some(at), Some(at)), (None, None)]);
    assert_eq!(lift_core::invocation_deadline(), None);
}

/// A type implementing `Handler` itself, rather than a function, reads the deadline too:
/// in `call`, which makes the future, and in the future, after an await as before it.
#[tokio::test]
async fn a_handler_type_of_its_own_reads_the_invocation_deadline() {
    #[derive(Clone)]
    struct Own(Arc<Mutex<Vec<Option<std::time::SystemTime>>>>);
    impl lift_core::Handler<()> for Own {
        fn call(
            &self,
            _ctx: Context,
        ) -> lift_core::BoxFuture<std::result::Result<lift_core::Response, lift_core::BoxError>>
        {
            let seen = self.0.clone();
            seen.lock()
                .expect("lock")
                .push(lift_core::invocation_deadline());
            Box::pin(async move {
                seen.lock()
                    .expect("lock")
                    .push(lift_core::invocation_deadline());
                tokio::task::yield_now().await;
                seen.lock()
                    .expect("lock")
                    .push(lift_core::invocation_deadline());
                Ok(lift_core::IntoResponse::into_response(()))
            })
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = TestApp::new(App::new().sqs(Own(seen.clone()))).expect("app");
    let mut context = lift_core::testing::lambda_context("r");
    context.deadline = 1_900_000_000_000;
    app.invoke_with(&events::sqs(["x"]), context)
        .await
        .expect("invoke");
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_900_000_000_000);
    assert_eq!(*seen.lock().expect("lock"), [Some(at), Some(at), Some(at)]);
}

/// Behind `App::layer` (the stack's type-erased levels hand the handler's future on as it
/// is), the layer itself and the handler behind it read the deadline: in the layer's
/// `call`, in the handler, and after an await.
#[tokio::test]
async fn layers_and_the_handler_behind_them_read_the_invocation_deadline() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let in_layer = seen.clone();
    let layer = tower::layer::layer_fn(move |inner: lift_core::BoxService| {
        let seen = in_layer.clone();
        tower::service_fn(move |ctx: Context| {
            seen.lock()
                .expect("lock")
                .push(("layer", lift_core::invocation_deadline()));
            let mut inner = inner.clone();
            async move { tower::Service::call(&mut inner, ctx).await }
        })
    });
    let in_handler = seen.clone();
    let app = TestApp::new(
        App::new()
            .sqs(move |_ctx: Context| {
                let seen = in_handler.clone();
                async move {
                    seen.lock()
                        .expect("lock")
                        .push(("handler", lift_core::invocation_deadline()));
                    tokio::task::yield_now().await;
                    seen.lock()
                        .expect("lock")
                        .push(("after an await", lift_core::invocation_deadline()));
                    Ok::<_, Error>(())
                }
            })
            .layer(layer),
    )
    .expect("app");
    let mut context = lift_core::testing::lambda_context("r");
    context.deadline = 1_900_000_000_000;
    app.invoke_with(&events::sqs(["x"]), context)
        .await
        .expect("invoke");
    let at = Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_900_000_000_000));
    assert_eq!(
        *seen.lock().expect("lock"),
        [("layer", at), ("handler", at), ("after an await", at)]
    );
    assert_eq!(lift_core::invocation_deadline(), None);
}
