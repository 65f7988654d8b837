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
    AwsTransport, EventBridgePublisher, PublishConfig, SqsMessage, SqsPublisher,
};
use lift_events::relay::{REPLY_TYPE, Relay, TransportError};
use lift_events::saga::{
    HistoryEvent, Orchestrator, Phase, Registry, Saga, SagaStatus, StartMeta, Step, StepError,
    remote,
};
use lift_events::store::{DynamoStore, SagaStore};
use lift_events::{Envelope, Event};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

struct Aws {
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    eventbridge: aws_sdk_eventbridge::Client,
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
    let small = PublishConfig::new(
        600,
        Duration::from_secs(2),
        Duration::from_millis(10),
        Duration::from_millis(50),
    )
    .unwrap();
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
