//! The event bus and a saga on the local emulator, through the real SDK clients:
//! publishers, the duplicate inbox, a participant, the orchestrator's handlers and the
//! relay, each invoked as its Lambda function would be.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use lift_core::testing::{TestApp, events};
use lift_core::{App, Context, Json};
use lift_events::consume::{Inbox, OutboxImage, Participant, orchestrator_message, relay_image};
use lift_events::publish::{
    AwsTransport, EventBridgePublisher, LambdaInvoker, PublishConfig, SqsMessage, SqsPublisher,
};
use lift_events::relay::{REPLY_TYPE, Relay, SAGA_SOURCE, TransportError};
use lift_events::saga::{
    HistoryEvent, Orchestrator, Phase, Registry, Saga, SagaState, SagaStatus, StartMeta, Step,
    StepError, local, remote,
};
use lift_events::store::{DynamoStore, SagaStore};
use lift_events::{Envelope, Event};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

struct Aws {
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    eventbridge: aws_sdk_eventbridge::Client,
    lambda: aws_sdk_lambda::Client,
}

async fn aws() -> Aws {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
    );
    let config = lift_core::aws::sdk_config().await;
    Aws {
        dynamodb: aws_sdk_dynamodb::Client::new(config),
        sqs: aws_sdk_sqs::Client::new(config),
        eventbridge: aws_sdk_eventbridge::Client::new(config),
        lambda: aws_sdk_lambda::Client::new(config),
    }
}

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{nanos}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Publisher settings with a 600-byte entry limit and a short deadline: an envelope padded
/// past 600 bytes is refused before any call.
fn small_entries() -> PublishConfig {
    PublishConfig::new(
        600,
        Duration::from_secs(2),
        Duration::from_millis(10),
        Duration::from_millis(50),
    )
    .unwrap()
}

async fn queue(aws: &Aws, name: &str) -> (String, String) {
    let mut create = aws.sqs.create_queue().queue_name(name);
    if name.ends_with(".fifo") {
        create = create.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
    }
    let url = create.send().await.unwrap().queue_url.unwrap();
    let arn = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
        .remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .unwrap();
    (url, arn)
}

async fn bus(aws: &Aws) -> String {
    let name = unique("bus");
    aws.eventbridge
        .create_event_bus()
        .name(&name)
        .send()
        .await
        .unwrap();
    name
}

async fn route(aws: &Aws, bus: &str, pattern: Value, queue_arn: &str) {
    let rule = unique("rule");
    aws.eventbridge
        .put_rule()
        .name(&rule)
        .event_bus_name(bus)
        .event_pattern(pattern.to_string())
        .send()
        .await
        .unwrap();
    aws.eventbridge
        .put_targets()
        .rule(&rule)
        .event_bus_name(bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("q")
                .arn(queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// Receives (and deletes) messages until `n` arrived or the deadline passed.
async fn receive(
    aws: &Aws,
    url: &str,
    n: usize,
    within: Duration,
) -> Vec<aws_sdk_sqs::types::Message> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        let out = aws
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        for m in out.messages.unwrap_or_default() {
            aws.sqs
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
            got.push(m);
        }
    }
    got
}

async fn idempotency_table(aws: &Aws) -> String {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let name = unique("inbox");
    aws.dynamodb
        .create_table()
        .table_name(&name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    name
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Pinged {
    n: u32,
}

impl Event for Pinged {
    const TYPE: &'static str = "Pinged";
}

#[tokio::test]
async fn the_eventbridge_publisher_sends_ten_a_call_and_refuses_oversize_entries() {
    let aws = aws().await;
    let bus = bus(&aws).await;
    let (url, arn) = queue(&aws, &unique("pings")).await;
    route(&aws, &bus, json!({"source": ["pinger"]}), &arn).await;
    let publisher =
        EventBridgePublisher::new(aws.eventbridge.clone(), &bus, PublishConfig::default());
    let events: Vec<Envelope> = (0..25)
        .map(|n| {
            Envelope::new("pinger", Pinged { n })
                .into_untyped()
                .unwrap()
        })
        .collect();
    let report = publisher.publish(&events).await.unwrap();
    assert_eq!(
        (report.entries, report.calls, report.resent),
        (25, 3, 0),
        "10 + 10 + 5"
    );
    let got = receive(&aws, &url, 25, Duration::from_secs(20)).await;
    let mut ns: Vec<u32> = got
        .iter()
        .map(|m| {
            let e = Envelope::from_body(m.body().unwrap().as_bytes()).unwrap();
            e.typed::<Pinged>().unwrap().payload.n
        })
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..25).collect::<Vec<_>>());

    // Under load every call is full: 1000 events, 100 calls.
    let burst: Vec<Envelope> = (0..1000)
        .map(|n| Envelope::new("burst", Pinged { n }).into_untyped().unwrap())
        .collect();
    let report = publisher.publish(&burst).await.unwrap();
    assert_eq!(
        (report.entries, report.calls),
        (1000, 100),
        "10 events a call"
    );

    // An entry above the limit: refused before any call, so its small neighbour is not
    // sent either.
    let small = small_entries();
    let strict = EventBridgePublisher::new(aws.eventbridge.clone(), &bus, small);
    let mut big = Envelope::new("pinger", Pinged { n: 100 })
        .into_untyped()
        .unwrap();
    big.extra.insert("padding".into(), json!("x".repeat(1000)));
    let neighbour = Envelope::new("pinger", Pinged { n: 101 })
        .into_untyped()
        .unwrap();
    assert!(matches!(
        strict.publish(&[neighbour, big]).await,
        Err(TransportError::Refused(_))
    ));
    let marker = Envelope::new("pinger", Pinged { n: 102 })
        .into_untyped()
        .unwrap();
    strict.publish(&[marker]).await.unwrap();
    let got = receive(&aws, &url, 1, Duration::from_secs(10)).await;
    let ns: Vec<u32> = got
        .iter()
        .map(|m| {
            Envelope::from_body(m.body().unwrap().as_bytes())
                .unwrap()
                .typed::<Pinged>()
                .unwrap()
                .payload
                .n
        })
        .collect();
    assert_eq!(ns, [102]);
}

/// An invocation reaches the function as the event a rule would deliver; a payload above
/// the limit is refused before any call, and an invocation that cannot succeed (no such
/// function) is an error at once, not resent until the deadline.
#[tokio::test]
async fn the_lambda_invoker_delivers_refuses_and_fails_clearly() {
    let aws = aws().await;
    let (function, dir) = mailbox(&aws, "invoked").await;
    let invoker = LambdaInvoker::new(aws.lambda.clone(), &function, PublishConfig::default());
    let sent = Envelope::new("pinger", Pinged { n: 5 })
        .into_untyped()
        .unwrap();
    let report = invoker.send(std::slice::from_ref(&sent)).await.unwrap();
    assert_eq!((report.entries, report.calls), (1, 1));
    let deadline = Instant::now() + Duration::from_secs(20);
    let event = loop {
        if let Some(event) = take_mail(&dir).pop() {
            break event;
        }
        assert!(Instant::now() < deadline, "the invocation never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(event["source"], "pinger");
    assert_eq!(event["detail-type"], sent.kind);
    let got = Envelope::from_body(event.to_string().as_bytes()).unwrap();
    assert_eq!(got, sent);

    let small = small_entries();
    let mut big = Envelope::new("pinger", Pinged { n: 6 })
        .into_untyped()
        .unwrap();
    big.extra.insert("padding".into(), json!("x".repeat(1000)));
    let strict = LambdaInvoker::new(aws.lambda.clone(), &function, small);
    assert!(matches!(
        strict.send(&[big]).await,
        Err(TransportError::Refused(_))
    ));

    // A function that does not exist: one Invoke, an error, no resending (counted, not
    // timed).
    let calls = Calls::default();
    let counted = counted(&calls).await;
    let missing = LambdaInvoker::new(counted.lambda.clone(), &unique("no-such-function"), small);
    let error = missing.send(&[sent]).await.unwrap_err();
    assert!(matches!(error, TransportError::Failed(_)), "{error:?}");
    let invokes: Vec<String> = calls.take().into_iter().map(|(op, _)| op).collect();
    assert_eq!(invokes, ["InvokeAsync"], "sent once, not resent");
    assert!(take_mail(&dir).is_empty(), "nothing else was delivered");
}

#[tokio::test]
async fn the_sqs_publisher_batches_delays_and_keeps_fifo_groups() {
    let aws = aws().await;
    let (url, _) = queue(&aws, &unique("plain")).await;
    let publisher = SqsPublisher::new(aws.sqs.clone(), &url, PublishConfig::default());
    let mut e = Envelope::new("pinger", Pinged { n: 0 });
    e.tenant = Some("t1".into());
    let messages: Vec<SqsMessage> = (0..12)
        .map(|n| {
            let mut e = e.clone();
            e.id = format!("e{n}");
            e.payload.n = n;
            SqsMessage::new(e.into_untyped().unwrap())
        })
        .collect();
    let report = publisher.send(&messages).await.unwrap();
    assert_eq!((report.entries, report.calls), (12, 2));
    let got = receive(&aws, &url, 12, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 12);
    let attrs = got[0].message_attributes().unwrap();
    assert_eq!(attrs["tenant"].string_value(), Some("t1"));
    assert_eq!(attrs["eventType"].string_value(), Some("Pinged"));

    // A delay: not there at once, there after it.
    let delayed = SqsMessage::new(
        Envelope::new("pinger", Pinged { n: 7 })
            .into_untyped()
            .unwrap(),
    )
    .delay(Duration::from_secs(2));
    let sent = Instant::now();
    publisher.send(&[delayed]).await.unwrap();
    let got = receive(&aws, &url, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert!(
        sent.elapsed() >= Duration::from_millis(1500),
        "delivered after {:?}",
        sent.elapsed()
    );
    let too_long = SqsMessage::new(
        Envelope::new("pinger", Pinged { n: 8 })
            .into_untyped()
            .unwrap(),
    )
    .delay(Duration::from_secs(901));
    assert!(matches!(
        publisher.send(&[too_long]).await,
        Err(TransportError::Refused(_))
    ));

    // FIFO: groups required, deduplication ids honoured.
    let (fifo_url, _) = queue(&aws, &format!("{}.fifo", unique("ordered"))).await;
    let fifo = SqsPublisher::new(aws.sqs.clone(), &fifo_url, PublishConfig::default());
    let env = |n| {
        Envelope::new("pinger", Pinged { n })
            .into_untyped()
            .unwrap()
    };
    assert!(matches!(
        fifo.send(&[SqsMessage::new(env(1))]).await,
        Err(TransportError::Refused(_))
    ));
    fifo.send(&[
        SqsMessage::new(env(1)).group("g").deduplication_id("d1"),
        SqsMessage::new(env(2)).group("g").deduplication_id("d1"),
        SqsMessage::new(env(3)).group("g").deduplication_id("d2"),
    ])
    .await
    .unwrap();
    let got = receive(&aws, &fifo_url, 3, Duration::from_secs(4)).await;
    let ns: Vec<u32> = got
        .iter()
        .map(|m| {
            Envelope::from_body(m.body().unwrap().as_bytes())
                .unwrap()
                .typed::<Pinged>()
                .unwrap()
                .payload
                .n
        })
        .collect();
    assert_eq!(ns, [1, 3], "in order, the duplicate dropped");
}

#[tokio::test]
async fn the_inbox_runs_each_event_once_and_again_after_a_failure() {
    let aws = aws().await;
    let table = idempotency_table(&aws).await;
    let inbox = Inbox::new(aws.dynamodb.clone(), &table, Duration::from_secs(24 * 3600)).unwrap();
    assert!(Inbox::new(aws.dynamodb.clone(), &table, Duration::from_secs(3600)).is_err());
    // Past the records' longest expiry: an error naming the window, not the table.
    let error = Inbox::new(
        aws.dynamodb.clone(),
        &table,
        Duration::from_secs(400 * 24 * 3600),
    )
    .expect_err("over a year")
    .to_string();
    assert!(error.contains("window"), "{error}");
    let runs = Arc::new(AtomicU32::new(0));
    let fail_first = Arc::new(AtomicU32::new(1));
    let (i, r, f) = (inbox.clone(), runs.clone(), fail_first.clone());
    let app = App::new().sqs(move |ctx: Context, e: Envelope<Pinged>| {
        let (inbox, runs, fail) = (i.clone(), r.clone(), f.clone());
        async move {
            inbox
                .once(&ctx, &e, || async move {
                    if e.payload.n == 9 && fail.fetch_sub(1, Ordering::SeqCst) == 1 {
                        return Err(lift_core::Error::internal("first try fails"));
                    }
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok(e.payload.n)
                })
                .await
                .map(|_| ())
        }
    });
    let app = TestApp::new(app).unwrap();
    let once = serde_json::to_string(&Envelope::new("pinger", Pinged { n: 1 })).unwrap();
    let out = app
        .invoke(&events::sqs([once.as_str(), once.as_str()]))
        .await
        .unwrap();
    assert!(lift_core::testing::batch_failures(&out).is_empty());
    // The same event again later: acknowledged, not run.
    app.invoke(&events::sqs([once.as_str()])).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // A failed run releases the id: the redelivery runs.
    let flaky = serde_json::to_string(&Envelope::new("pinger", Pinged { n: 9 })).unwrap();
    let out = app.invoke(&events::sqs([flaky.as_str()])).await.unwrap();
    assert_eq!(lift_core::testing::batch_failures(&out), ["m0"]);
    app.invoke(&events::sqs([flaky.as_str()])).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// A participant of its own idempotency table, replying to a queue of its own with
/// `replies`; and that queue's URL.
async fn replying_participant(aws: &Aws, replies: PublishConfig) -> (Participant, String) {
    let records = idempotency_table(aws).await;
    let (replies_url, _) = queue(aws, &unique("replies")).await;
    let bus = bus(aws).await;
    let participant = Participant::new(
        "participants",
        aws.dynamodb.clone(),
        &records,
        EventBridgePublisher::new(aws.eventbridge.clone(), &bus, PublishConfig::default()),
    )
    .unwrap()
    .reply_to_queue(SqsPublisher::new(aws.sqs.clone(), &replies_url, replies));
    (participant, replies_url)
}

/// A one-step saga `id` started with `data`, and the command its start sent.
fn one_step_saga(id: &str, data: Value) -> (SagaState, lift_events::saga::Command) {
    let saga = Saga::named("s", 1)
        .step(Step::new("a", remote("p", "A"), None))
        .build()
        .unwrap();
    let state = lift_events::saga::start(&saga, id, data, StartMeta::default(), 0).into_state();
    let lift_events::saga::Message::Command(command) = &state.outbox()[0] else {
        panic!("a command first");
    };
    let command = command.clone();
    (state, command)
}

/// A reply too large with the saga its command carried goes without it: the snapshot only
/// spares the orchestrator a read. (The reply was refused, and the step, which succeeded,
/// was redelivered until its attempts ran out and it was compensated.)
#[tokio::test]
async fn a_reply_too_large_with_its_snapshot_goes_without_it() {
    let aws = aws().await;
    // Replies of at most 1,500 bytes: the command's snapshot makes this one larger.
    let replies = PublishConfig::new(
        1500,
        Duration::from_secs(2),
        Duration::from_millis(10),
        Duration::from_millis(50),
    )
    .unwrap();
    let (participant, replies_url) = replying_participant(&aws, replies).await;
    let id = unique("snap");
    let (state, mut command) = one_step_saga(&id, json!({"pad": "x".repeat(1200)}));
    // The command as the relay sends it: with the saga, without its outbox.
    command.snapshot = Some(lift_events::saga::Snapshot::of(&state).unwrap());
    let envelope = lift_events::relay::command_envelope(format!("{id}:1:0"), &command).unwrap();
    let app = TestApp::new(App::new().sqs(move |ctx: Context| {
        let p = participant.clone();
        async move {
            p.handle(&ctx, |_command| async { Ok(json!({"ok": true})) })
                .await
        }
    }))
    .unwrap();
    let body = serde_json::to_string(&envelope).unwrap();
    let out = app.invoke(&events::sqs([body.as_str()])).await.unwrap();
    assert!(lift_core::testing::batch_failures(&out).is_empty(), "{out}");
    let got = receive(&aws, &replies_url, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    let reply: lift_events::saga::Reply = serde_json::from_value(
        Envelope::from_body(got[0].body().unwrap().as_bytes())
            .unwrap()
            .payload,
    )
    .unwrap();
    assert_eq!(reply.outcome.unwrap(), json!({"ok": true}));
    assert!(reply.snapshot.is_none());
}

/// A command whose snapshot a later release wrote (a status and a history entry this one
/// does not know) is run, and its reply hands the snapshot back as it came: a participant
/// does not read it. (It was refused as not a saga command, again on every delivery.)
#[tokio::test]
async fn a_participant_hands_back_a_snapshot_it_cannot_read() {
    let aws = aws().await;
    let (participant, replies_url) = replying_participant(&aws, PublishConfig::default()).await;
    let id = unique("later");
    let (state, command) = one_step_saga(&id, json!({"n": 1}));
    let envelope = lift_events::relay::command_envelope(format!("{id}:1:0"), &command).unwrap();
    let mut later = serde_json::to_value(&state).unwrap();
    later["outbox"] = json!([]);
    later["status"] = json!("paused");
    later["history"]
        .as_array_mut()
        .unwrap()
        .push(json!({"at_ms": 1, "event": "paused_by_operator", "by": "ops"}));
    let mut body = serde_json::to_value(&envelope).unwrap();
    body["payload"]["snapshot"] = later.clone();
    let ran = Arc::new(AtomicU32::new(0));
    let app = {
        let ran = ran.clone();
        TestApp::new(App::new().sqs(move |ctx: Context| {
            let (p, ran) = (participant.clone(), ran.clone());
            async move {
                p.handle(&ctx, |_command| async move {
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok(json!({"ok": true}))
                })
                .await
            }
        }))
        .unwrap()
    };
    let body = serde_json::to_string(&body).unwrap();
    let out = app.invoke(&events::sqs([body.as_str()])).await.unwrap();
    assert!(lift_core::testing::batch_failures(&out).is_empty(), "{out}");
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    let got = receive(&aws, &replies_url, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    let reply: Value = Envelope::from_body(got[0].body().unwrap().as_bytes())
        .unwrap()
        .payload;
    assert_eq!(reply["snapshot"], later, "handed back as it came");
}

/// The item's new image as DynamoDB JSON, the way the stream delivers it.
async fn stream_image(aws: &Aws, table: &str, id: &str) -> Value {
    let item = aws
        .dynamodb
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(id.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let mut image = serde_json::Map::new();
    for (k, v) in item {
        let v = match v {
            AttributeValue::S(s) => json!({ "S": s }),
            AttributeValue::N(n) => json!({ "N": n }),
            other => panic!("{other:?}"),
        };
        image.insert(k, v);
    }
    Value::Object(image)
}

/// A cancel sent to the orchestrator's queue (as `lift cancel` sends it) is applied by
/// the orchestrator's function: the saga compensates from the step in flight. Sent twice,
/// it is done both times, and the second changes nothing; one for a saga that completed
/// is done too (sent again, it would be refused again), and changes nothing.
#[tokio::test]
async fn a_cancel_on_the_orchestrators_queue_is_applied_once() {
    let aws = aws().await;
    let table = unique("sagas");
    DynamoStore::create_table(&aws.dynamodb, &table)
        .await
        .unwrap();
    let (url, _) = queue(&aws, &unique("orchestrator")).await;
    let saga = Saga::named("trip", 1)
        .step(Step::new(
            "reserve",
            remote("inventory", "Reserve"),
            Some(remote("inventory", "Release")),
        ))
        .step(Step::new("charge", remote("payments", "Charge"), None))
        .build()
        .unwrap();
    let quick = Saga::named("quick", 1)
        .step(Step::new(
            "only",
            local(|_| async { Ok(json!(null)) }),
            None,
        ))
        .build()
        .unwrap();
    let store = DynamoStore::new(aws.dynamodb.clone(), &table);
    let orchestrator = Orchestrator::new(Registry::new().with(saga).with(quick), store.clone());
    let queued = SqsPublisher::new(aws.sqs.clone(), &url, PublishConfig::default());
    let transport = AwsTransport::new(
        EventBridgePublisher::new(aws.eventbridge.clone(), "default", PublishConfig::default()),
        queued.clone(),
    );
    let (o, t) = (orchestrator.clone(), transport);
    let app = TestApp::new(App::new().sqs(move |ctx: Context| {
        let (o, t) = (o.clone(), t.clone());
        async move { orchestrator_message(&o, &t, &ctx).await }
    }))
    .unwrap();

    let id = unique("trip");
    let started = orchestrator
        .start("trip", &id, &json!({}), StartMeta::default())
        .await
        .unwrap();
    let done = unique("quick");
    let completed = orchestrator
        .start("quick", &done, &json!({}), StartMeta::default())
        .await
        .unwrap();
    assert_eq!(completed.status(), SagaStatus::Completed);
    let cancel = lift_events::relay::cancel_envelope("ops", &id, "the customer called").unwrap();
    let too_late = lift_events::relay::cancel_envelope("ops", &done, "too late").unwrap();
    queued
        .send(&[
            SqsMessage::new(cancel.clone()),
            SqsMessage::new(cancel),
            SqsMessage::new(too_late),
        ])
        .await
        .unwrap();
    let messages = receive(&aws, &url, 3, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 3);
    for m in &messages {
        let out = app.invoke(&events::sqs([m.body().unwrap()])).await.unwrap();
        assert!(lift_core::testing::batch_failures(&out).is_empty(), "{out}");
    }
    let cancelled = store.load(&id).await.unwrap().unwrap();
    assert_eq!(cancelled.version(), started.version() + 1, "applied once");
    assert_eq!(cancelled.status(), SagaStatus::Compensating);
    assert_eq!(cancelled.reason(), Some("cancelled: the customer called"));
    assert!(cancelled.outbox().iter().any(|m| matches!(m,
        lift_events::saga::Message::Command(c) if c.step == 0 && c.phase == Phase::Compensation)));
    assert_eq!(store.load(&done).await.unwrap(), Some(completed));
}

#[tokio::test]
async fn a_saga_completes_and_another_compensates_across_the_bus() {
    let aws = aws().await;
    let table = unique("sagas");
    DynamoStore::create_table(&aws.dynamodb, &table)
        .await
        .unwrap();
    let records = idempotency_table(&aws).await;
    let bus = bus(&aws).await;
    let (orchestrator_url, orchestrator_arn) = queue(&aws, &unique("orchestrator")).await;
    let (participant_url, participant_arn) = queue(&aws, &unique("participant")).await;
    route(
        &aws,
        &bus,
        json!({"detail-type": [REPLY_TYPE]}),
        &orchestrator_arn,
    )
    .await;
    route(
        &aws,
        &bus,
        json!({"detail-type": ["Reserve", "Release", "Charge"]}),
        &participant_arn,
    )
    .await;

    let saga = Saga::named("trip", 1)
        .step(
            Step::new(
                "reserve",
                remote("inventory", "Reserve"),
                Some(remote("inventory", "Release")),
            )
            .timeout(Duration::from_secs(300)),
        )
        .step(
            Step::new("charge", remote("payments", "Charge"), None)
                .timeout(Duration::from_secs(300)),
        )
        .build()
        .unwrap();
    let store = DynamoStore::new(aws.dynamodb.clone(), &table);
    let orchestrator = Orchestrator::new(Registry::new().with(saga), store.clone());
    let publisher =
        EventBridgePublisher::new(aws.eventbridge.clone(), &bus, PublishConfig::default());
    let timers = SqsPublisher::new(aws.sqs.clone(), &orchestrator_url, PublishConfig::default());
    let transport = AwsTransport::new(publisher.clone(), timers);
    let relay = Relay::new(transport.clone());

    // The three functions, as Apps.
    let (o, t) = (orchestrator.clone(), transport.clone());
    let orchestrator_app = TestApp::new(App::new().sqs(move |ctx: Context| {
        let (o, t) = (o.clone(), t.clone());
        async move { orchestrator_message(&o, &t, &ctx).await }
    }))
    .unwrap();
    let relay_app = TestApp::new(App::new().dynamodb(
        move |_ctx: Context, Json(image): Json<OutboxImage>| {
            let relay = relay.clone();
            async move { relay_image(&relay, &image).await }
        },
    ))
    .unwrap();
    let effects = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let participant =
        Participant::new("participants", aws.dynamodb.clone(), &records, publisher).unwrap();
    let (p, fx) = (participant.clone(), effects.clone());
    let participant_app = TestApp::new(App::new().sqs(move |ctx: Context| {
        let (p, fx) = (p.clone(), fx.clone());
        async move {
            p.handle(&ctx, |command| async move {
                let amount = command.data["amount"].as_u64().unwrap_or(0);
                if command.step_name == "charge" && amount > 100 {
                    return Err(StepError::Rejected("card declined".into()));
                }
                fx.lock().unwrap().push(format!(
                    "{}:{}:{:?}",
                    command.saga_id, command.step_name, command.phase
                ));
                Ok(json!({ "ref": command.command_id }))
            })
            .await
        }
    }))
    .unwrap();

    let ok_id = unique("trip-ok");
    let bad_id = unique("trip-bad");
    orchestrator
        .start("trip", &ok_id, &json!({"amount": 50}), StartMeta::default())
        .await
        .unwrap();
    orchestrator
        .start(
            "trip",
            &bad_id,
            &json!({"amount": 500}),
            StartMeta::default(),
        )
        .await
        .unwrap();
    let mut relayed = std::collections::HashMap::<String, u64>::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The stream: relay each new version (stands in for the table's stream mapping).
        let mut all_final = true;
        for id in [&ok_id, &bad_id] {
            let state = store.load(id).await.unwrap().unwrap();
            all_final &= state.status().is_final();
            if relayed.get(id.as_str()) != Some(&state.version()) {
                let image = stream_image(&aws, &table, id).await;
                let out = relay_app
                    .invoke(&events::dynamodb([("MODIFY", image, json!({}))]))
                    .await
                    .unwrap();
                assert!(lift_core::testing::batch_failures(&out).is_empty(), "{out}");
                relayed.insert(id.clone(), state.version());
            }
        }
        if all_final && relayed.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the sagas did not finish");
        for (url, app) in [
            (&participant_url, &participant_app),
            (&orchestrator_url, &orchestrator_app),
        ] {
            for m in receive(&aws, url, 10, Duration::from_millis(300)).await {
                let body = m.body().unwrap();
                // Delivered twice: the second is recognised.
                let out = app.invoke(&events::sqs([body, body])).await.unwrap();
                assert!(lift_core::testing::batch_failures(&out).is_empty(), "{out}");
            }
        }
    }

    let ok = store.load(&ok_id).await.unwrap().unwrap();
    assert_eq!(ok.status(), SagaStatus::Completed);
    let bad = store.load(&bad_id).await.unwrap().unwrap();
    assert_eq!(bad.status(), SagaStatus::Compensated);
    assert!(bad.reason().unwrap().contains("card declined"));
    // Each effect once, the refused charge none, the reservation released.
    let mut effects = effects.lock().unwrap().clone();
    effects.sort();
    let mut expected = vec![
        format!("{ok_id}:reserve:Action"),
        format!("{ok_id}:charge:Action"),
        format!("{bad_id}:reserve:Action"),
        format!("{bad_id}:reserve:Compensation"),
    ];
    expected.sort();
    assert_eq!(effects, expected);
    // The history reads back in order.
    let timeline: Vec<String> = bad
        .history()
        .iter()
        .map(|h| match &h.event {
            HistoryEvent::CommandSent { step, phase, .. } => format!(
                "send {step} {}",
                if *phase == Phase::Action { "a" } else { "c" }
            ),
            HistoryEvent::Replied { step, ok, .. } => format!("reply {step} {ok}"),
            HistoryEvent::CompensationStarted { .. } => "compensate".into(),
            HistoryEvent::Finished { status, .. } => format!("end {}", status.as_str()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        timeline,
        [
            "Started { definition_version: 1 }",
            "send 0 a",
            "reply 0 true",
            "send 1 a",
            "reply 1 false",
            "compensate",
            "send 0 c",
            "reply 0 true",
            "end compensated"
        ]
    );
    let versions: Vec<u64> = bad.history().iter().map(|h| h.version).collect();
    assert_eq!(versions, [1, 1, 2, 2, 3, 3, 3, 4, 4]);
    assert_eq!(
        store
            .list(SagaStatus::Compensated, 100)
            .await
            .unwrap()
            .iter()
            .filter(|s| s.id == bad_id)
            .count(),
        1
    );
}

// ---------------------------------------------------------------- AWS calls per transition

/// Records every SDK call a client makes (an interceptor on its config): the operation
/// (from the `x-amz-target` header every JSON-protocol call carries; Lambda's REST calls
/// by their path) and its body.
#[derive(Debug, Clone, Default)]
struct Calls(Arc<std::sync::Mutex<Vec<(String, Value)>>>);

impl aws_sdk_dynamodb::config::Intercept for Calls {
    fn name(&self) -> &'static str {
        "count-calls"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let request = context.request();
        let target = match request.headers().get("x-amz-target") {
            Some(t) => t.rsplit('.').next().unwrap_or(t).to_owned(),
            None if request.uri().ends_with("/invocations") => {
                match request.headers().get("x-amz-invocation-type") {
                    Some("Event") => "InvokeAsync".to_owned(),
                    _ => "Invoke".to_owned(),
                }
            }
            None => "?".to_owned(),
        };
        let body = request
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        self.0.lock().unwrap().push((target, body));
        Ok(())
    }
}

impl Calls {
    fn take(&self) -> Vec<(String, Value)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Clients whose every call is recorded in `calls`.
async fn counted(calls: &Calls) -> Aws {
    let config = lift_core::aws::sdk_config().await;
    Aws {
        dynamodb: aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(config)
                .interceptor(calls.clone())
                .build(),
        ),
        sqs: aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(config)
                .interceptor(calls.clone())
                .build(),
        ),
        eventbridge: aws_sdk_eventbridge::Client::from_conf(
            aws_sdk_eventbridge::config::Builder::from(config)
                .interceptor(calls.clone())
                .build(),
        ),
        lambda: aws_sdk_lambda::Client::from_conf(
            aws_sdk_lambda::config::Builder::from(config)
                .interceptor(calls.clone())
                .build(),
        ),
    }
}

/// The size of a DynamoDB item as DynamoDB bills it: attribute names plus values (a
/// string its UTF-8 bytes, a number about one byte per two digits plus one).
fn item_bytes(item: &Value) -> usize {
    let Some(item) = item.as_object() else {
        return 0;
    };
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match (value.get("S"), value.get("N")) {
                    (Some(Value::String(s)), _) => s.len(),
                    (_, Some(Value::String(n))) => n.trim_start_matches('-').len().div_ceil(2) + 1,
                    _ => value.to_string().len(),
                }
        })
        .sum()
}

/// What one saga cost, counted from the recorded calls.
#[derive(Debug, Default)]
struct Bill {
    transitions: u64,
    /// Every call by operation, and by role (`orchestrator`, `relay`, `participant`).
    ops: std::collections::BTreeMap<String, u64>,
    /// Write request units of the saga table's writes (1 per KB of item, rounded up).
    wru: u64,
    /// The largest saga item written, in bytes.
    largest_item: usize,
    /// `PutEvents` entries published by the relay and by the participants.
    relay_entries: u64,
    reply_entries: u64,
    /// SQS messages sent: timers, commands and replies (straight to the queues).
    timers: u64,
    commands: u64,
    replies: u64,
    /// Asynchronous invocations made: commands (by the relay) and replies (by the
    /// participant).
    invoked_commands: u64,
    invoked_replies: u64,
    /// Messages the orchestrator's and participants' queues delivered (each one a Lambda
    /// invocation, at a batch size of 1).
    orchestrator_messages: u64,
    participant_messages: u64,
    /// Asynchronous invocations of the orchestrator (replies) that reached it.
    orchestrator_invoked: u64,
    /// Stream records relayed (each one a relay invocation, at a batch size of 1).
    relayed: u64,
}

impl Bill {
    fn record(&mut self, role: &str, calls: Vec<(String, Value)>) {
        for (op, body) in calls {
            *self.ops.entry(format!("{role} {op}")).or_default() += 1;
            match op.as_str() {
                "PutItem" if role != "participant" => {
                    let bytes = item_bytes(&body["Item"]);
                    self.largest_item = self.largest_item.max(bytes);
                    self.wru += bytes.div_ceil(1024).max(1) as u64;
                }
                "PutEvents" => {
                    let n = body["Entries"].as_array().map_or(0, Vec::len) as u64;
                    if role == "participant" {
                        self.reply_entries += n;
                    } else {
                        self.relay_entries += n;
                    }
                }
                "InvokeAsync" if role == "participant" => self.invoked_replies += 1,
                "InvokeAsync" => self.invoked_commands += 1,
                "SendMessage" | "SendMessageBatch" => {
                    let bodies = match body["Entries"].as_array() {
                        Some(entries) => entries.iter().map(|e| e["MessageBody"].clone()).collect(),
                        None => vec![body["MessageBody"].clone()],
                    };
                    for message in bodies {
                        let message = message.as_str().unwrap_or_default();
                        if message.contains(lift_events::relay::TIMER_TYPE) {
                            self.timers += 1;
                        } else if message.contains(REPLY_TYPE) {
                            self.replies += 1;
                        } else {
                            self.commands += 1;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn count(&self, key: &str) -> u64 {
        self.ops.get(key).copied().unwrap_or(0)
    }

    /// US East prices, per call or unit (see the crate docs for the sources).
    /// Lambda on Arm at 128 MB for `ms` milliseconds per invocation.
    fn cost_per_million(&self, ms: f64) -> Vec<(&'static str, f64)> {
        const LAMBDA_REQUEST: f64 = 0.20e-6;
        const LAMBDA_GB_S: f64 = 0.000_013_333_4;
        const WRU: f64 = 0.625e-6;
        const RRU: f64 = 0.125e-6;
        const SQS_REQUEST: f64 = 0.40e-6;
        const EVENT: f64 = 1.0e-6;
        let invocation = LAMBDA_REQUEST + LAMBDA_GB_S * 0.125 * ms / 1000.0;
        let reads = self.count("orchestrator GetItem") as f64;
        let messages = (self.orchestrator_messages + self.participant_messages) as f64;
        let lines = [
            ("DynamoDB writes (WRU)", self.wru as f64 * WRU),
            ("DynamoDB reads (RRU)", reads * RRU),
            (
                "EventBridge entries",
                (self.relay_entries + self.reply_entries) as f64 * EVENT,
            ),
            // A message: the send (by EventBridge or the relay), a receive and a delete
            // by the Lambda poller (batches of 1: the worst case).
            ("SQS requests", messages * 3.0 * SQS_REQUEST),
            // The start (one invocation of whatever function starts the saga: a durable
            // function's start is one too), each message on the orchestrator's queue and
            // each reply invoking it. An asynchronous invocation costs its request and
            // nothing more; a participant's own invocations are left out, as for others.
            (
                "orchestrator invocations",
                (1 + self.orchestrator_messages + self.orchestrator_invoked) as f64 * invocation,
            ),
            ("relay invocations", self.relayed as f64 * invocation),
        ];
        lines.iter().map(|(k, v)| (*k, v * 1e6)).collect()
    }
}

/// The saga table's write units stay what the cost figures say: each item under 1 KB until
/// the history of the fifth step (7 units completed, 15 compensated). An attribute added
/// to every item, or a longer history line, shows here before it shows on the bill.
fn assert_write_units(bill: &Bill, compensated: bool) {
    let budget = if compensated { 15 } else { 7 };
    assert!(
        bill.wru <= budget,
        "{} write units, {budget} expected (largest item {} bytes)",
        bill.wru,
        bill.largest_item
    );
}

fn print_bill(label: &str, bill: &Bill) {
    let t = bill.transitions;
    eprintln!(
        "{label}: {t} transitions, largest item {} bytes",
        bill.largest_item
    );
    for (op, n) in &bill.ops {
        eprintln!(
            "  {op:<40} {n:>3}  ({:.2} per transition)",
            *n as f64 / t as f64
        );
    }
    eprintln!(
        "  sent: {} bus entries, {} commands and {} replies by SQS, {} and {} invoked, {} timers",
        bill.relay_entries + bill.reply_entries,
        bill.commands,
        bill.replies,
        bill.invoked_commands,
        bill.invoked_replies,
        bill.timers
    );
    eprintln!(
        "  queue messages: {} to the orchestrator, {} to participants; {} replies invoked; {} stream records; {} WRU",
        bill.orchestrator_messages,
        bill.participant_messages,
        bill.orchestrator_invoked,
        bill.relayed,
        bill.wru
    );
    let lines = bill.cost_per_million(20.0);
    let total: f64 = lines.iter().map(|(_, v)| v).sum();
    for (what, dollars) in &lines {
        eprintln!("  ${dollars:>6.2}  {what}");
    }
    eprintln!("  ${total:>6.2}  per million sagas (SQS at batches of 1, 20 ms invocations)");
}

/// A saga store that keeps every state it wrote: the table's stream, for the relay.
#[derive(Clone)]
struct Streamed {
    store: DynamoStore,
    records: Arc<std::sync::Mutex<Vec<SagaState>>>,
}

impl SagaStore for Streamed {
    async fn save(&self, state: &SagaState) -> Result<(), lift_events::store::StoreError> {
        self.store.save(state).await?;
        self.records.lock().unwrap().push(state.clone());
        Ok(())
    }

    async fn save_over(
        &self,
        state: &SagaState,
        base: &SagaState,
    ) -> Result<(), lift_events::store::StoreError> {
        self.store.save_over(state, base).await?;
        self.records.lock().unwrap().push(state.clone());
        Ok(())
    }

    async fn load(&self, id: &str) -> Result<Option<SagaState>, lift_events::store::StoreError> {
        self.store.load(id).await
    }

    async fn list(
        &self,
        status: SagaStatus,
        limit: usize,
    ) -> Result<Vec<lift_events::store::SagaSummary>, lift_events::store::StoreError> {
        self.store.list(status, limit).await
    }
}

/// A 5-step saga of local steps (the orchestrator calls each participant itself, as a
/// durable function's steps do): it runs whole in the start's invocation. Its stream
/// records are relayed, and its one timer handled after the end, on counted clients.
async fn five_local_steps(refuse_last: bool) -> Bill {
    let aws = aws().await;
    let (orchestrator_calls, relay_calls) = (Calls::default(), Calls::default());
    let (o_aws, r_aws) = (
        counted(&orchestrator_calls).await,
        counted(&relay_calls).await,
    );
    let table = unique("sagas");
    DynamoStore::create_table(&aws.dynamodb, &table)
        .await
        .unwrap();
    let bus = bus(&aws).await;
    let (orchestrator_url, _) = queue(&aws, &unique("orchestrator")).await;
    let mut definition = Saga::named("five", 1);
    for i in 0..5u32 {
        let refuse = refuse_last && i == 4;
        definition = definition.step(
            Step::new(
                &format!("s{i}"),
                local(move |call| async move {
                    if refuse {
                        Err(StepError::Rejected("no room".into()))
                    } else {
                        Ok(json!({ "ref": call.command_id }))
                    }
                }),
                Some(local(|_| async { Ok(Value::Null) })),
            )
            .timeout(Duration::from_secs(2)),
        );
    }
    let store = Streamed {
        store: DynamoStore::new(o_aws.dynamodb.clone(), &table),
        records: Arc::default(),
    };
    let orchestrator = Orchestrator::new(
        Registry::new().with(definition.build().unwrap()),
        store.clone(),
    );
    let relay = Relay::new(AwsTransport::new(
        EventBridgePublisher::new(r_aws.eventbridge.clone(), &bus, PublishConfig::default()),
        SqsPublisher::new(
            r_aws.sqs.clone(),
            &orchestrator_url,
            PublishConfig::default(),
        ),
    ));
    let rearm = AwsTransport::new(
        EventBridgePublisher::new(o_aws.eventbridge.clone(), &bus, PublishConfig::default()),
        SqsPublisher::new(
            o_aws.sqs.clone(),
            &orchestrator_url,
            PublishConfig::default(),
        ),
    );
    let (o, t) = (orchestrator.clone(), rearm);
    let orchestrator_app = TestApp::new(App::new().sqs(move |ctx: Context| {
        let (o, t) = (o.clone(), t.clone());
        async move { orchestrator_message(&o, &t, &ctx).await }
    }))
    .unwrap();

    let id = unique("five");
    let state = orchestrator
        .start(
            "five",
            &id,
            &json!({"trip": 7, "traveller": "Ada Lovelace"}),
            StartMeta::default(),
        )
        .await
        .unwrap();
    assert!(state.status().is_final(), "local steps run inline");
    let mut bill = Bill::default();
    // The stream: one record per write; the mapping's filter passes those with something
    // to publish (`out`), each one relay invocation.
    let records = store.records.lock().unwrap().clone();
    let publishing = |r: &SagaState| {
        r.outbox().iter().any(|m| {
            !matches!(m, lift_events::saga::Message::Command(c)
                if c.target == lift_events::saga::Target::Local)
        })
    };
    for record in records.iter().filter(|r| publishing(r)) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        relay.relay_states(&[record], now).await.unwrap();
        bill.relayed += 1;
    }
    // The one timer comes after the end, reads the saga and is dropped.
    let deadline = Instant::now() + Duration::from_secs(30);
    while bill.orchestrator_messages == 0 {
        assert!(Instant::now() < deadline, "the timer never came");
        for m in receive(&aws, &orchestrator_url, 1, Duration::from_millis(500)).await {
            bill.orchestrator_messages += 1;
            let out = orchestrator_app
                .invoke(&events::sqs([m.body().unwrap()]))
                .await
                .unwrap();
            assert!(lift_core::testing::batch_failures(&out).is_empty(), "{out}");
        }
    }
    bill.transitions = state.version();
    assert_eq!(
        state.status(),
        if refuse_last {
            SagaStatus::Compensated
        } else {
            SagaStatus::Completed
        }
    );
    bill.record("orchestrator", orchestrator_calls.take());
    bill.record("relay", relay_calls.take());
    bill
}

/// How commands and replies travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Straight to the queues (SQS).
    Queues,
    /// Asynchronous invocations of the functions.
    Invoke,
}

/// A function on the emulator that keeps each event it is invoked with as a file in a
/// directory of its own (`tests/support/mailbox.py`): the real `Invoke` and the emulator's
/// asynchronous queue, with the handler then run by the test on counted clients.
async fn mailbox(aws: &Aws, name: &str) -> (String, std::path::PathBuf) {
    let name = unique(name);
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let script = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/mailbox.py"
    ))
    .unwrap();
    aws.lambda
        .create_function()
        .function_name(&name)
        .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
        .role("arn:aws:iam::000000000000:role/lift-events-tests")
        .handler("bootstrap")
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(aws_sdk_lambda::primitives::Blob::new(stored_zip(
                    "bootstrap",
                    &script,
                )))
                .build(),
        )
        .environment(
            aws_sdk_lambda::types::Environment::builder()
                .variables("MAILBOX", dir.to_string_lossy())
                .build(),
        )
        .send()
        .await
        .unwrap();
    (name, dir)
}

/// The events a [`mailbox`] function received since the last call, oldest file first.
fn take_mail(dir: &std::path::Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    files
        .into_iter()
        .map(|p| {
            let event = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            std::fs::remove_file(&p).unwrap();
            event
        })
        .collect()
}

/// A zip archive holding one executable file, stored (not compressed).
fn stored_zip(name: &str, data: &[u8]) -> Vec<u8> {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    let (crc, size, name_len) = (crc.sum(), data.len() as u32, name.len() as u16);
    let mut zip = Vec::new();
    // Local file header, then the data.
    zip.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    for v in [20u16, 0, 0, 0, 0] {
        zip.extend_from_slice(&v.to_le_bytes());
    }
    for v in [crc, size, size] {
        zip.extend_from_slice(&v.to_le_bytes());
    }
    zip.extend_from_slice(&name_len.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip.extend_from_slice(name.as_bytes());
    zip.extend_from_slice(data);
    let central = zip.len() as u32;
    // Central directory entry: made on Unix (3), mode rwxr-xr-x in the external attributes.
    zip.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    for v in [0x0314u16, 20, 0, 0, 0, 0] {
        zip.extend_from_slice(&v.to_le_bytes());
    }
    for v in [crc, size, size] {
        zip.extend_from_slice(&v.to_le_bytes());
    }
    for v in [name_len, 0, 0, 0, 0] {
        zip.extend_from_slice(&v.to_le_bytes());
    }
    zip.extend_from_slice(&(0o100_755u32 << 16).to_le_bytes());
    zip.extend_from_slice(&0u32.to_le_bytes());
    zip.extend_from_slice(name.as_bytes());
    let central_size = zip.len() as u32 - central;
    // End of central directory.
    zip.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    for v in [0u16, 0, 1, 1] {
        zip.extend_from_slice(&v.to_le_bytes());
    }
    for v in [central_size, central] {
        zip.extend_from_slice(&v.to_le_bytes());
    }
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip
}

/// Runs one 5-step saga to its end on the emulator, with the real orchestrator, relay and
/// participant code on counted clients, and its one timer handled after the end; returns
/// what it cost. Commands and replies travel `via` queues or asynchronous invocations.
async fn five_steps(refuse_last: bool, via: Via) -> Bill {
    let aws = aws().await;
    let (orchestrator_calls, relay_calls, participant_calls) =
        (Calls::default(), Calls::default(), Calls::default());
    let (o_aws, r_aws, p_aws) = (
        counted(&orchestrator_calls).await,
        counted(&relay_calls).await,
        counted(&participant_calls).await,
    );
    let table = unique("sagas");
    DynamoStore::create_table(&aws.dynamodb, &table)
        .await
        .unwrap();
    let records = idempotency_table(&aws).await;
    let bus = bus(&aws).await;
    // Commands and replies go straight to the queues or invoke the functions; the bus
    // carries the saga's end, the orchestrator's queue its timer.
    let (orchestrator_url, _) = queue(&aws, &unique("orchestrator")).await;
    let (participant_url, _) = queue(&aws, &unique("participant")).await;
    let (participant_fn, participant_box) = mailbox(&aws, "participant").await;
    let (orchestrator_fn, orchestrator_box) = mailbox(&aws, "orchestrator").await;
    // Short timeouts: the saga's one timer comes within the test, after the end.
    let timeout = Duration::from_secs(4);
    let mut definition = Saga::named("five", 1);
    for i in 0..5 {
        definition = definition.step(
            Step::new(
                &format!("s{i}"),
                remote("p", &format!("Step{i}")),
                Some(remote("p", &format!("StepUndo{i}"))),
            )
            .timeout(timeout),
        );
    }
    let store = DynamoStore::new(o_aws.dynamodb.clone(), &table);
    let orchestrator = Orchestrator::new(Registry::new().with(definition.build().unwrap()), store);
    let transport = AwsTransport::new(
        EventBridgePublisher::new(r_aws.eventbridge.clone(), &bus, PublishConfig::default()),
        SqsPublisher::new(
            r_aws.sqs.clone(),
            &orchestrator_url,
            PublishConfig::default(),
        ),
    );
    let relay = Relay::new(match via {
        Via::Queues => transport.with_participant_queue(
            "p",
            SqsPublisher::new(
                r_aws.sqs.clone(),
                &participant_url,
                PublishConfig::default(),
            ),
        ),
        Via::Invoke => transport.with_participant_function(
            "p",
            LambdaInvoker::new(
                r_aws.lambda.clone(),
                &participant_fn,
                PublishConfig::default(),
            ),
        ),
    });
    let rearm = AwsTransport::new(
        EventBridgePublisher::new(o_aws.eventbridge.clone(), &bus, PublishConfig::default()),
        SqsPublisher::new(
            o_aws.sqs.clone(),
            &orchestrator_url,
            PublishConfig::default(),
        ),
    );
    let (o, t) = (orchestrator.clone(), rearm);
    let input = move |ctx: Context| {
        let (o, t) = (o.clone(), t.clone());
        async move { orchestrator_message(&o, &t, &ctx).await }
    };
    let orchestrator_app =
        TestApp::new(App::new().sqs(input.clone()).event_fallback(input)).unwrap();
    let relay_app = TestApp::new(App::new().dynamodb(
        move |_ctx: Context, Json(image): Json<OutboxImage>| {
            let relay = relay.clone();
            async move { relay_image(&relay, &image).await }
        },
    ))
    .unwrap();
    let participant = Participant::new(
        "participants",
        p_aws.dynamodb.clone(),
        &records,
        EventBridgePublisher::new(p_aws.eventbridge.clone(), &bus, PublishConfig::default()),
    )
    .unwrap();
    let participant = match via {
        Via::Queues => participant.reply_to_queue(SqsPublisher::new(
            p_aws.sqs.clone(),
            &orchestrator_url,
            PublishConfig::default(),
        )),
        Via::Invoke => participant.reply_by_invoke(LambdaInvoker::new(
            p_aws.lambda.clone(),
            &orchestrator_fn,
            PublishConfig::default(),
        )),
    };
    let handler = move |ctx: Context| {
        let p = participant.clone();
        async move {
            p.handle(&ctx, |command| async move {
                if refuse_last && command.step == 4 {
                    return Err(StepError::Rejected("no room".into()));
                }
                Ok(json!({ "ref": command.command_id }))
            })
            .await
        }
    };
    let participant_app = TestApp::new(
        App::new()
            .sqs(handler.clone())
            .event_source(SAGA_SOURCE, handler),
    )
    .unwrap();

    let id = unique("five");
    orchestrator
        .start(
            "five",
            &id,
            &json!({"trip": 7, "traveller": "Ada Lovelace"}),
            StartMeta::default(),
        )
        .await
        .unwrap();
    let mut bill = Bill::default();
    let mut relayed = 0;
    let mut timer_seen = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Stands in for the stream mapping (its read is the test's, not counted).
        let state = DynamoStore::new(aws.dynamodb.clone(), &table)
            .load(&id)
            .await
            .unwrap()
            .unwrap();
        if state.version() > relayed {
            let image = stream_image(&aws, &table, &id).await;
            let out = relay_app
                .invoke(&events::dynamodb([("MODIFY", image, json!({}))]))
                .await
                .unwrap();
            assert!(lift_core::testing::batch_failures(&out).is_empty(), "{out}");
            relayed = state.version();
            bill.relayed += 1;
        }
        if state.status().is_final() && timer_seen {
            bill.transitions = state.version();
            break;
        }
        assert!(Instant::now() < deadline, "the saga did not finish");
        for (url, app, orchestrator) in [
            (&participant_url, &participant_app, false),
            (&orchestrator_url, &orchestrator_app, true),
        ] {
            let out = aws
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            for m in out.messages.unwrap_or_default() {
                aws.sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
                let body = m.body().unwrap();
                if orchestrator {
                    bill.orchestrator_messages += 1;
                    timer_seen |= body.contains(lift_events::relay::TIMER_TYPE);
                } else {
                    bill.participant_messages += 1;
                }
                let out = app.invoke(&events::sqs([body])).await.unwrap();
                assert!(lift_core::testing::batch_failures(&out).is_empty(), "{out}");
            }
        }
        // What the functions were invoked with (the emulator's asynchronous queue).
        for event in take_mail(&participant_box) {
            participant_app.invoke(&event).await.unwrap();
        }
        for event in take_mail(&orchestrator_box) {
            bill.orchestrator_invoked += 1;
            orchestrator_app.invoke(&event).await.unwrap();
        }
    }
    let state = DynamoStore::new(aws.dynamodb.clone(), &table)
        .load(&id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.status(),
        if refuse_last {
            SagaStatus::Compensated
        } else {
            SagaStatus::Completed
        }
    );
    bill.record("orchestrator", orchestrator_calls.take());
    bill.record("relay", relay_calls.take());
    bill.record("participant", participant_calls.take());
    bill
}

/// AWS calls per transition of a 5-step saga on the emulator, success and compensation
/// paths, counted on the SDK clients of the real orchestrator, relay and participant
/// code, with commands and replies through queues and as asynchronous invocations; and
/// the cost per million sagas computed from them (the table in the crate docs).
#[tokio::test]
async fn aws_calls_per_transition_of_a_five_step_saga() {
    for (via, label) in [(Via::Queues, "queue"), (Via::Invoke, "invocation")] {
        for refuse_last in [false, true] {
            let bill = five_steps(refuse_last, via).await;
            let t = bill.transitions;
            let path = if refuse_last {
                "compensated"
            } else {
                "completed"
            };
            print_bill(&format!("5 remote steps by {label}, {path}"), &bill);
            assert_eq!(t, if refuse_last { 10 } else { 6 });
            // One conditional write per transition, no read before one.
            assert_eq!(
                bill.count("orchestrator PutItem"),
                t,
                "one write per transition"
            );
            assert_eq!(bill.count("orchestrator UpdateItem"), 0);
            assert_write_units(&bill, refuse_last);
            assert!(
                bill.count("orchestrator GetItem") <= 1,
                "only the timer reads, after the end"
            );
            // At most one bus entry per transition (here one in all: the saga's end;
            // commands and replies go straight to their consumers), one timer per saga.
            assert_eq!(bill.relay_entries, 1, "the end on the bus");
            assert_eq!(bill.reply_entries, 0);
            assert_eq!(bill.timers, 1, "one timer per saga");
            let (sent, invoked) = match via {
                Via::Queues => (t - 1, 0),
                Via::Invoke => (0, t - 1),
            };
            assert_eq!(bill.commands, sent, "commands through the queue");
            assert_eq!(bill.replies, sent, "replies through the queue");
            assert_eq!(bill.invoked_commands, invoked, "commands invoked");
            assert_eq!(bill.invoked_replies, invoked, "replies invoked");
            assert_eq!(
                bill.orchestrator_invoked, invoked,
                "every invoked reply came"
            );
        }
    }
}

/// The same 5-step saga of local steps (inline calls, as a durable function makes them):
/// one write per transition, no read but the timer's, one bus entry (the end), one timer.
#[tokio::test]
async fn aws_calls_per_transition_of_a_five_step_saga_of_local_steps() {
    for refuse_last in [false, true] {
        let bill = five_local_steps(refuse_last).await;
        let t = bill.transitions;
        let path = if refuse_last {
            "compensated"
        } else {
            "completed"
        };
        print_bill(&format!("5 local steps, {path}"), &bill);
        assert_eq!(t, if refuse_last { 10 } else { 6 });
        assert_eq!(
            bill.count("orchestrator PutItem"),
            t,
            "one write per transition"
        );
        assert_eq!(bill.count("orchestrator GetItem"), 1, "the timer's read");
        assert_write_units(&bill, refuse_last);
        assert_eq!(bill.relay_entries, 1, "the end on the bus");
        assert_eq!(bill.timers, 1, "one timer per saga");
        assert_eq!(
            bill.commands + bill.replies,
            0,
            "no messages for local steps"
        );
        assert_eq!(
            bill.relayed, 2,
            "the relay runs for the first and the last write"
        );
    }
}
