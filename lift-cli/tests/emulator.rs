//! `lift sagas` and `lift saga` against sagas stored on the local emulator.

use std::time::{SystemTime, UNIX_EPOCH};

use lift_cli::{CliError, run};
use lift_events::saga::{
    Handled, Message, Orchestrator, Registry, Reply, Saga, SagaInput, SagaStatus, Step, StepError,
    local, remote,
};
use lift_events::store::{DynamoStore, SagaStore};
use serde_json::json;

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{nanos}")
}

async fn lift(line: &str) -> Result<String, CliError> {
    run(line.split_whitespace().map(str::to_owned)).await
}

#[tokio::test]
async fn lists_sagas_by_state_and_shows_one_as_a_timeline() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
    );
    let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
    let table = unique("sagas");
    DynamoStore::create_table(&client, &table).await.unwrap();
    // Local steps: the book step refuses trips to Mars, the undo of hold refuses for
    // VIP trips (so the saga needs attention).
    let saga = Saga::named("trip", 1)
        .step(Step::new(
            "hold",
            local(|_| async { Ok(json!({"seat": "4A"})) }),
            Some(local(|call| async move {
                if call.data["vip"] == json!(true) {
                    Err(StepError::Rejected("the hold is locked".into()))
                } else {
                    Ok(json!(null))
                }
            })),
        ))
        .step(Step::new(
            "book",
            local(|call| async move {
                if call.data["to"] == json!("Mars") {
                    Err(StepError::Rejected("no flights to Mars".into()))
                } else {
                    Ok(json!({"ref": "B-1"}))
                }
            }),
            None,
        ))
        .build()
        .unwrap();
    let orchestrator = Orchestrator::new(
        Registry::new().with(saga),
        DynamoStore::new(client.clone(), &table),
    );
    let ok = unique("trip-ok");
    let mars = unique("trip-mars");
    let stuck = unique("trip-stuck");
    for (id, data) in [
        (&ok, json!({"to": "Lyon"})),
        (&mars, json!({"to": "Mars"})),
        (&stuck, json!({"to": "Mars", "vip": true})),
    ] {
        orchestrator
            .start("trip", id, &data, Default::default())
            .await
            .unwrap();
    }

    let attention = lift(&format!("sagas --state needs-attention --table {table}"))
        .await
        .unwrap();
    assert!(attention.contains(&stuck), "{attention}");
    assert!(attention.contains("the hold is locked"), "{attention}");
    assert!(!attention.contains(&ok) && !attention.contains(&mars));
    let completed = lift(&format!("sagas --state completed --table {table}"))
        .await
        .unwrap();
    assert!(completed.contains(&ok) && !completed.contains(&mars));
    let all = lift(&format!("sagas --table {table}")).await.unwrap();
    for id in [&ok, &mars, &stuck] {
        assert_eq!(all.matches(id.as_str()).count(), 1, "{all}");
    }

    let shown = lift(&format!("saga {mars} --table {table}")).await.unwrap();
    assert!(
        shown.contains(&format!("state    {}", SagaStatus::Compensated.as_str())),
        "{shown}"
    );
    assert!(
        shown.contains("steps    hold compensated, book refused"),
        "{shown}"
    );
    let timeline: Vec<&str> = shown
        .lines()
        .skip_while(|l| *l != "timeline")
        .skip(1)
        .map(|l| l.split_once("ms ").map_or(l, |(_, what)| what.trim()))
        .collect();
    assert_eq!(
        timeline,
        [
            "started (definition 1)",
            "sent hold (action, attempt 1)",
            "hold action answered ok (attempt 1)",
            "sent book (action, attempt 1)",
            "book action failed (attempt 1): no flights to Mars",
            "compensating: no flights to Mars",
            "sent hold (compensation, attempt 1)",
            "hold compensation answered ok (attempt 1)",
            "ended compensated: no flights to Mars",
        ],
        "{shown}"
    );

    let missing = lift(&format!("saga nope --table {table}")).await;
    assert!(matches!(missing, Err(CliError::Failed(m)) if m.contains("no saga nope")));
    let bad = lift(&format!("sagas --state finished --table {table}")).await;
    assert!(matches!(bad, Err(CliError::Usage(_))));
    let none = lift(&format!("sagas --limit 0 --table {table}")).await;
    assert!(matches!(none, Err(CliError::Usage(_))), "{none:?}");
    // A list cut at its limit says so.
    let one = lift(&format!(
        "sagas --state completed --limit 1 --table {table}"
    ))
    .await
    .unwrap();
    assert!(one.contains("more may exist"), "{one}");
    assert!(!completed.contains("more may exist"), "{completed}");
}

/// The emulator's DynamoDB and SQS clients, a new saga table and a new orchestrator queue
/// (its URL).
async fn saga_table_and_queue() -> (
    aws_sdk_dynamodb::Client,
    aws_sdk_sqs::Client,
    String,
    String,
) {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
    );
    let config = lift_core::aws::sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(config);
    let sqs = aws_sdk_sqs::Client::new(config);
    let table = unique("sagas");
    DynamoStore::create_table(&dynamodb, &table).await.unwrap();
    let url = sqs
        .create_queue()
        .queue_name(unique("orchestrator"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    (dynamodb, sqs, table, url)
}

/// The saga input in the one message on queue `url` (it fails when there are more).
async fn the_one_input(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> Option<Result<SagaInput, serde_json::Error>> {
    let got = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(5)
        .send()
        .await
        .unwrap();
    let [message] = got.messages() else {
        panic!("one message: {got:?}");
    };
    let envelope = lift_events::Envelope::from_body(message.body().unwrap().as_bytes()).unwrap();
    lift_events::relay::saga_input(&envelope)
}

/// `lift cancel` reads the saga, then puts a cancel on the orchestrator's queue, in the
/// envelope the orchestrator's function takes. It sends nothing for a saga that is not
/// stored or that completed, and without a saga id or a queue it says how to call it.
#[tokio::test]
async fn cancel_puts_a_cancel_on_the_orchestrators_queue() {
    let (dynamodb, sqs, table, url) = saga_table_and_queue().await;
    let saga = Saga::named("trip", 1)
        .step(Step::new("hold", remote("seats", "Hold"), None))
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
    let orchestrator = Orchestrator::new(
        Registry::new().with(saga).with(quick),
        DynamoStore::new(dynamodb.clone(), &table),
    );
    let running = unique("trip");
    orchestrator
        .start("trip", &running, &json!({}), Default::default())
        .await
        .unwrap();
    let completed = unique("quick");
    orchestrator
        .start("quick", &completed, &json!({}), Default::default())
        .await
        .unwrap();

    for (id, why) in [
        (completed.as_str(), "completed"),
        ("no-such-saga", "no saga"),
    ] {
        let refused = lift(&format!("cancel {id} --queue {url} --table {table}")).await;
        assert!(
            matches!(&refused, Err(CliError::Failed(m)) if m.contains(why)),
            "{refused:?}"
        );
    }
    let out = lift(&format!(
        "cancel {running} --queue {url} --table {table} --reason changed-plans"
    ))
    .await
    .unwrap();
    assert!(out.contains(&running), "{out}");
    match the_one_input(&sqs, &url).await {
        Some(Ok(SagaInput::Cancel(cancel))) => {
            assert_eq!(cancel.saga_id, running);
            assert_eq!(cancel.reason, "changed-plans");
        }
        other => panic!("not a cancel: {other:?}"),
    }
    assert!(matches!(lift("cancel").await, Err(CliError::Usage(_))));
    assert!(matches!(
        lift(&format!("cancel --queue {url} --table {table}")).await,
        Err(CliError::Usage(_))
    ));
}

/// `lift redrive` reads the saga and, for one that needs attention with a command to send
/// again, puts a redrive at the version read on the orchestrator's queue: applied, the
/// refused command goes out again under a new id, and the same message again does
/// nothing. A saga that does not need attention, or is not stored, is refused with nothing
/// sent; `lift saga` says what a redrive would send.
#[tokio::test]
async fn redrive_puts_a_redrive_of_the_version_read_on_the_orchestrators_queue() {
    let (dynamodb, sqs, table, url) = saga_table_and_queue().await;
    let saga = Saga::named("order", 1)
        .pivot(Step::new(
            "charge",
            local(|_| async { Ok(json!("charged")) }),
            None,
        ))
        .step(Step::new("ship", remote("shipping", "Ship"), None))
        .build()
        .unwrap();
    let orchestrator = Orchestrator::new(
        Registry::new().with(saga),
        DynamoStore::new(dynamodb.clone(), &table),
    );
    let id = unique("order");
    let shipping = orchestrator
        .start("order", &id, &json!({}), Default::default())
        .await
        .unwrap();
    let refused = lift(&format!("redrive {id} --queue {url} --table {table}")).await;
    assert!(
        matches!(&refused, Err(CliError::Failed(m)) if m.contains("running") && m.contains("nothing sent")),
        "{refused:?}"
    );
    let unknown = lift(&format!(
        "redrive no-such-saga --queue {url} --table {table}"
    ))
    .await;
    assert!(
        matches!(&unknown, Err(CliError::Failed(m)) if m.contains("no saga") && m.contains("nothing sent")),
        "{unknown:?}"
    );
    let ship = shipping.commands().next().unwrap().clone();
    let reply = Reply::to(&ship, Err(StepError::Rejected("no address".into())));
    let stuck = match orchestrator.handle(&SagaInput::Reply(reply)).await.unwrap() {
        Handled::Applied(state) => state,
        other => panic!("{other:?}"),
    };
    assert_eq!(stuck.status(), SagaStatus::NeedsAttention);
    let shown = lift(&format!("saga {id} --table {table}")).await.unwrap();
    assert!(
        shown.contains("stopped  on ship action (refused)") && shown.contains("new command id"),
        "{shown}"
    );

    let out = lift(&format!(
        "redrive {id} --queue {url} --table {table} --reason address-fixed"
    ))
    .await
    .unwrap();
    assert!(out.contains(&id) && out.contains("ship"), "{out}");
    let Some(Ok(input)) = the_one_input(&sqs, &url).await else {
        panic!("not a saga input");
    };
    let SagaInput::Redrive(redrive) = &input else {
        panic!("not a redrive: {input:?}");
    };
    assert_eq!(
        (redrive.version, redrive.reason.as_str()),
        (stuck.version(), "address-fixed")
    );
    let redriven = match orchestrator.handle(&input).await.unwrap() {
        Handled::Applied(state) => state,
        other => panic!("{other:?}"),
    };
    assert_eq!(redriven.status(), SagaStatus::Running);
    assert!(
        redriven.outbox().iter().any(|m| matches!(m,
            Message::Command(c) if c.command_id == format!("{id}:1:a:r1"))),
        "{:?}",
        redriven.outbox()
    );
    assert!(matches!(
        orchestrator.handle(&input).await.unwrap(),
        Handled::Ignored(_)
    ));
    assert_eq!(
        orchestrator.store().load(&id).await.unwrap().as_ref(),
        Some(&redriven)
    );
}
