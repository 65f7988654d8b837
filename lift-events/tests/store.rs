//! One contract for every `SagaStore`: the in-memory store and DynamoDB on the emulator
//! (through the real SDK client) must behave the same.

#[path = "support/contract.rs"]
mod contract;

use contract::{contract, first_command, unique};
use lift_events::saga::{Saga, StartMeta, Step, remote, start};
use lift_events::store::{DynamoStore, MemoryStore, SagaStore, StoreError};
use serde_json::json;

fn saga() -> Saga {
    Saga::named("contract", 1)
        .step(Step::new("a", remote("p", "A"), Some(remote("p", "UndoA"))))
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    contract(MemoryStore::new()).await;
}

/// A store on a fresh table of the emulator.
async fn emulator_store() -> DynamoStore {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
    );
    let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
    let table = unique("sagas");
    DynamoStore::create_table(&client, &table).await.unwrap();
    DynamoStore::new(client, &table)
}

#[tokio::test]
async fn the_dynamodb_store_keeps_the_contract() {
    contract(emulator_store().await).await;
}

#[tokio::test]
async fn the_dynamodb_store_refuses_an_item_above_400_kb_before_sending() {
    // No emulator needed: the size is checked before any call.
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .build();
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(config), "t");
    let big = start(
        &saga(),
        "big",
        json!({"blob": "x".repeat(420 * 1024)}),
        StartMeta::default(),
        1,
    )
    .into_state();
    assert!(matches!(
        store.save(&big).await,
        Err(StoreError::TooLarge { .. })
    ));
}

/// A reply whose output would make the saga too large to store ends the saga in
/// `NeedsAttention`, with a reason naming the limit, and is acknowledged: delivered again,
/// it could never be stored (it was an error, redelivered until the dead-letter queue while
/// the step's timer retried the step, which succeeded, until it counted as failed).
async fn a_reply_too_large_to_store_ends_the_saga_for_attention<S: SagaStore + Clone + 'static>(
    store: S,
    started_with: usize,
    reply_with: usize,
) {
    use lift_events::saga::{Orchestrator, Registry, Reply, SagaInput};
    let orchestrator = Orchestrator::new(Registry::new().with(saga()), store.clone());
    let id = unique("large");
    let started = orchestrator
        .start(
            "contract",
            &id,
            &json!({"blob": "x".repeat(started_with)}),
            StartMeta::default(),
        )
        .await
        .unwrap();
    let reply = Reply::to(
        &first_command(&started),
        Ok(json!({"blob": "y".repeat(reply_with)})),
    );
    let handled = orchestrator
        .handle(&SagaInput::Reply(reply))
        .await
        .expect("acknowledged");
    let stored = parked(&store, handled, &started).await;
    assert!(stored.outputs().is_empty(), "the output was not applied");
}

/// The saga `handled` parked, as stored: ended for attention by the write after `before`,
/// with a reason naming the item limit.
async fn parked<S: SagaStore>(
    store: &S,
    handled: lift_events::saga::Handled,
    before: &lift_events::saga::SagaState,
) -> lift_events::saga::SagaState {
    use lift_events::saga::{Handled, SagaStatus};
    let Handled::Applied(parked) = handled else {
        panic!("{handled:?}")
    };
    assert_eq!(parked.status(), SagaStatus::NeedsAttention);
    assert!(
        parked.reason().unwrap().contains("item limit"),
        "{parked:?}"
    );
    let stored = store.load(before.id()).await.unwrap().unwrap();
    assert_eq!(stored.status(), SagaStatus::NeedsAttention);
    assert_eq!(stored.version(), before.version() + 1);
    stored
}

#[tokio::test]
async fn a_reply_too_large_to_store_ends_the_saga_for_attention_in_memory() {
    a_reply_too_large_to_store_ends_the_saga_for_attention(
        MemoryStore::new(),
        150 * 1024,
        260 * 1024,
    )
    .await;
}

#[tokio::test]
async fn a_reply_too_large_to_store_ends_the_saga_for_attention_in_dynamodb() {
    a_reply_too_large_to_store_ends_the_saga_for_attention(
        emulator_store().await,
        150 * 1024,
        260 * 1024,
    )
    .await;
}

/// Two remote steps: a reply to the first leaves the saga running.
fn two_steps() -> Saga {
    Saga::named("two", 1)
        .step(Step::new("a", remote("p", "A"), Some(remote("p", "UndoA"))))
        .step(Step::new("b", remote("p", "B"), None))
        .build()
        .unwrap()
}

/// A saga of `two_steps()` just started, stored in `store` at the largest size a running
/// saga may have: with a byte more in its data, the store refuses it as too large. (Stored
/// directly: the orchestrator would refuse a first command of this size for SQS.)
async fn stored_at_the_running_limit<S: SagaStore>(store: &S) -> lift_events::saga::SagaState {
    let started = |len: usize| {
        start(
            &two_steps(),
            &unique("full"),
            json!({"blob": "x".repeat(len)}),
            StartMeta::default(),
            1,
        )
        .into_state()
    };
    let Err(StoreError::TooLarge { bytes, limit, .. }) = store.save(&started(400 * 1024)).await
    else {
        panic!("a 400 KB start is refused as too large")
    };
    let len = 400 * 1024 - (bytes - limit);
    assert!(matches!(
        store.save(&started(len + 1)).await,
        Err(StoreError::TooLarge { .. })
    ));
    let state = started(len);
    store.save(&state).await.expect("fits");
    state
}

/// A running saga's item stays 8 KB below DynamoDB's limit, so the write that ends it for
/// attention (its reason three times, a `Finished` event) always fits: a reply of 1 KB to a
/// saga at that limit parks it. On the emulator, which counts items as DynamoDB does and
/// refuses one above 400 KB, the park is stored. A store that counted less than DynamoDB
/// (attribute names, the status, the reason) let a saga reach a write DynamoDB refused as
/// invalid, which it could neither store nor park: every input was redelivered until the
/// dead-letter queue, and the saga never ended.
async fn a_saga_at_its_running_limit_is_parked_by_the_next_input<S: SagaStore + Clone + 'static>(
    store: S,
) {
    use lift_events::saga::{Orchestrator, Registry, Reply, SagaInput};
    let full = stored_at_the_running_limit(&store).await;
    let orchestrator = Orchestrator::new(Registry::new().with(two_steps()), store.clone());
    let reply = Reply::to(&first_command(&full), Ok(json!({"blob": "y".repeat(1024)})));
    let handled = orchestrator
        .handle(&SagaInput::Reply(reply))
        .await
        .expect("acknowledged");
    parked(&store, handled, &full).await;
}

/// The park's worst case: a saga whose last transition sent nothing (a retry waiting for
/// the timer already in flight, so its outbox is empty) gains the park's reason and
/// `Finished` event without losing an outbox. Stored at the running limit, it is parked
/// by its retry timer, whose command would take it past the limit; with no room kept
/// below DynamoDB's limit, the park itself would be too large, and the saga stuck.
async fn a_saga_waiting_to_retry_at_its_running_limit_is_parked<S: SagaStore + Clone + 'static>(
    store: S,
) {
    use lift_events::saga::{
        Message, Orchestrator, Outcome, Registry, Reply, RetryPolicy, SagaInput, StepError,
        transition,
    };
    use std::time::Duration;
    let slow_retry = RetryPolicy::new(3, Duration::from_secs(10), Duration::from_secs(10)).unwrap();
    let saga = Saga::named("retrying", 1)
        .step(
            Step::new("a", remote("p", "A"), None)
                .timeout(Duration::from_secs(1))
                .retry(slow_retry),
        )
        .step(Step::new("b", remote("p", "B"), None))
        .build()
        .unwrap();
    let id = unique("retrying");
    // Started at 1 ms, the first attempt fails at 2 ms with a long reason: its retry is due
    // at 10,002 ms, after the step's timeout timer (1,001 ms), which will serve it.
    let states = |len: usize| {
        let started = start(
            &saga,
            &id,
            json!({"blob": "x".repeat(len)}),
            StartMeta::default(),
            1,
        )
        .into_state();
        let failed = Reply::to(
            &first_command(&started),
            Err(StepError::Failed("f".repeat(1000))),
        );
        let Outcome::Applied(waiting) = transition(&saga, &started, &SagaInput::Reply(failed), 2)
        else {
            panic!("the failure is applied")
        };
        (started, waiting.into_state())
    };
    let Err(StoreError::TooLarge { bytes, limit, .. }) = store.save(&states(400 * 1024).1).await
    else {
        panic!("a 400 KB saga is refused as too large")
    };
    let (started, waiting) = states(400 * 1024 - (bytes - limit));
    assert!(waiting.outbox().is_empty(), "{:?}", waiting.outbox());
    store.save(&started).await.expect("the start fits");
    store.save(&waiting).await.expect("the retry wait fits");

    let Some(Message::Timer(timer)) = started
        .outbox()
        .iter()
        .find(|m| matches!(m, Message::Timer(_)))
    else {
        panic!("the start sends a timer")
    };
    let mut retry_due = timer.clone();
    retry_due.due_ms = 10_002;
    let orchestrator =
        Orchestrator::new(Registry::new().with(saga.clone()), store.clone()).with_clock(|| 10_002);
    let handled = orchestrator
        .handle(&SagaInput::Timer(retry_due))
        .await
        .expect("acknowledged");
    parked(&store, handled, &waiting).await;
}

#[tokio::test]
async fn a_saga_waiting_to_retry_at_its_running_limit_is_parked_in_memory() {
    a_saga_waiting_to_retry_at_its_running_limit_is_parked(MemoryStore::new()).await;
}

#[tokio::test]
async fn a_saga_waiting_to_retry_at_its_running_limit_is_parked_in_dynamodb() {
    a_saga_waiting_to_retry_at_its_running_limit_is_parked(emulator_store().await).await;
}

#[tokio::test]
async fn a_saga_at_its_running_limit_is_parked_by_the_next_input_in_memory() {
    a_saga_at_its_running_limit_is_parked_by_the_next_input(MemoryStore::new()).await;
}

#[tokio::test]
async fn a_saga_at_its_running_limit_is_parked_by_the_next_input_in_dynamodb() {
    a_saga_at_its_running_limit_is_parked_by_the_next_input(emulator_store().await).await;
}

/// A saga whose id, correlation id or tenant SQS could not carry as a message attribute
/// is refused at its start, with nothing stored: started, its timers would be refused for
/// good and it would wait forever. What SQS takes (tabs, line feeds, any other Unicode)
/// starts.
#[tokio::test]
async fn a_saga_its_messages_cannot_carry_is_refused_at_its_start() {
    use lift_events::saga::{MAX_ID_BYTES, Orchestrator, OrchestratorError, Registry};
    let store = MemoryStore::new();
    let orchestrator = Orchestrator::new(Registry::new().with(saga()), store.clone());
    let meta = |correlation: &str, tenant: Option<&str>| StartMeta {
        correlation_id: correlation.to_owned(),
        tenant: tenant.map(str::to_owned),
    };
    let long = "x".repeat(MAX_ID_BYTES + 1);
    let refused = [
        ("a\u{7}b", meta("", None), "id"),
        ("", meta("", None), "id"),
        (long.as_str(), meta("", None), "id"),
        ("ok-1", meta("c\u{0}", None), "correlation_id"),
        ("ok-2", meta("", Some("t\u{FFFF}")), "tenant"),
        ("ok-3", meta("", Some("")), "tenant"),
    ];
    for (id, meta, named) in refused {
        let error = orchestrator
            .start("contract", id, &json!({}), meta)
            .await
            .expect_err("refused");
        assert!(
            matches!(error, OrchestratorError::Unsendable { field, .. } if field == named),
            "{id:?}: {error:?}"
        );
        assert!(store.load(id).await.unwrap().is_none(), "nothing stored");
    }
    let fine = format!("tab\tline\nü-{}", "y".repeat(MAX_ID_BYTES - 20));
    orchestrator
        .start("contract", &fine, &json!({}), meta("c\r", Some("ténant")))
        .await
        .expect("SQS takes these");
}

/// Ids are unique across definitions: starting another definition's saga under a used id
/// is refused with a 409 for the handler, and does not answer the stored saga (it may be
/// another tenant's, and the caller would take it for its own).
#[tokio::test]
async fn a_start_under_another_definitions_id_is_refused() {
    use lift_events::saga::{Orchestrator, OrchestratorError, Registry};
    let other = Saga::named("other", 1)
        .step(Step::new("b", remote("p", "B"), None))
        .build()
        .unwrap();
    let store = MemoryStore::new();
    let orchestrator = Orchestrator::new(Registry::new().with(saga()).with(other), store.clone());
    let first = orchestrator
        .start("contract", "s-1", &json!({"n": 1}), StartMeta::default())
        .await
        .unwrap();
    let error = orchestrator
        .start("other", "s-1", &json!({"n": 1}), StartMeta::default())
        .await
        .expect_err("refused");
    assert!(
        matches!(&error, OrchestratorError::AlreadyExists(id) if id == "s-1"),
        "{error:?}"
    );
    let answer = lift_core::Error::from(error);
    assert_eq!(answer.status(), 409);
    assert_eq!(answer.code(), "saga_exists");
    assert_eq!(store.load("s-1").await.unwrap(), Some(first));
}

/// A saga may use the last 8 KB of its item once it has stopped, but not while it runs. One
/// stopped for attention in that room cannot be redriven: the redrive is refused as too
/// large with nothing written, not parked (which would drop the command it stopped on, and
/// any later redrive), and the refusal maps to a 500 with the store's reason. A saga with
/// room is redriven; a redrive of another version maps to a 409 `saga_not_redrivable`.
async fn a_saga_too_large_to_go_on_running_is_not_redriven<S: SagaStore + Clone + 'static>(
    store: S,
) {
    use lift_events::saga::{
        Handled, Orchestrator, OrchestratorError, Registry, Reply, SagaInput, SagaStatus, StepError,
    };
    let full = stored_at_the_running_limit(&store).await;
    let blob = full.data()["blob"].as_str().unwrap().len();
    let orchestrator = Orchestrator::new(Registry::new().with(two_steps()), store.clone());
    let refusal = "r".repeat(1000);
    // `a` done, `b` refused, `a`'s compensation refused with a long reason: with its data
    // this much under the running limit, the saga compensates, then stops for attention.
    let stopped_with = |margin: usize| {
        let (orchestrator, store, refusal) = (orchestrator.clone(), store.clone(), refusal.clone());
        async move {
            let mut state = start(
                &two_steps(),
                &unique("room"),
                json!({"blob": "x".repeat(blob - margin)}),
                StartMeta::default(),
                1,
            )
            .into_state();
            store.save(&state).await.unwrap();
            for outcome in [Ok(json!(1)), Err("no"), Err(refusal.as_str())] {
                let reply = Reply::to(
                    &first_command(&state),
                    outcome.map_err(|r| StepError::Rejected(r.into())),
                );
                match orchestrator.handle(&SagaInput::Reply(reply)).await.unwrap() {
                    Handled::Applied(next) => state = next,
                    other => panic!("{other:?}"),
                }
                if state.status() == SagaStatus::NeedsAttention {
                    break;
                }
            }
            state
        }
    };
    let mut margin = 0;
    let stopped = loop {
        let state = stopped_with(margin).await;
        if state.halted().is_some() {
            break state;
        }
        // Parked on the way: too close to the limit to compensate.
        margin += 256;
        assert!(margin < 8 * 1024, "no saga stopped with its command kept");
    };
    let refused = orchestrator
        .redrive(stopped.id(), stopped.version(), "fixed")
        .await
        .expect_err("too large to go on running");
    assert!(
        matches!(
            &refused,
            OrchestratorError::Store(StoreError::TooLarge { .. })
        ),
        "{refused:?}"
    );
    assert_eq!(lift_core::Error::from(refused).status(), 500);
    assert_eq!(
        store.load(stopped.id()).await.unwrap().as_ref(),
        Some(&stopped),
        "nothing written: the saga can still be redriven once it is smaller"
    );

    let roomy = stopped_with(margin + 8 * 1024).await;
    assert!(roomy.halted().is_some());
    let stale = orchestrator
        .redrive(roomy.id(), roomy.version() - 1, "old")
        .await
        .expect_err("another version");
    let answer = lift_core::Error::from(stale);
    assert_eq!(answer.status(), 409);
    assert_eq!(answer.code(), "saga_not_redrivable");
    let redriven = orchestrator
        .redrive(roomy.id(), roomy.version(), "fixed")
        .await
        .unwrap();
    assert_eq!(redriven.status(), SagaStatus::Compensating);
}

#[tokio::test]
async fn a_saga_too_large_to_go_on_running_is_not_redriven_in_memory() {
    a_saga_too_large_to_go_on_running_is_not_redriven(MemoryStore::new()).await;
}

#[tokio::test]
async fn a_saga_too_large_to_go_on_running_is_not_redriven_in_dynamodb() {
    a_saga_too_large_to_go_on_running_is_not_redriven(emulator_store().await).await;
}

#[tokio::test]
async fn a_missing_table_is_refused_not_retried() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
    );
    let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
    let store = DynamoStore::new(client, &unique("no-such-table"));
    let error = store.load("s-1").await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Refused {
                operation: "GetItem",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}

/// A reply whose snapshot does not have the saga's shape (fewer steps than its definition)
/// or names another definition is applied to the stored saga instead, never indexed out of
/// bounds; a stored saga whose
/// definition changed without a new version is an error, not a panic.
#[tokio::test]
async fn a_snapshot_or_saga_that_does_not_fit_its_definition_is_not_applied() {
    use lift_events::saga::{Orchestrator, OrchestratorError, Registry, Reply, SagaInput};
    let two_steps = Saga::named("contract", 1)
        .step(Step::new("a", remote("p", "A"), Some(remote("p", "UndoA"))))
        .step(Step::new("b", remote("p", "B"), Some(remote("p", "UndoB"))))
        .build()
        .unwrap();
    let store = MemoryStore::new();
    let orchestrator = Orchestrator::new(Registry::new().with(two_steps), store.clone());
    let started = orchestrator
        .start("contract", "s-1", &json!({"n": 1}), StartMeta::default())
        .await
        .unwrap();
    let command = first_command(&started);
    let mut shape = serde_json::to_value(&started).unwrap();
    shape["steps"] = json!([]);
    let mut reply = Reply::to(&command, Ok(json!({"done": "a"})));
    reply.snapshot = Some(serde_json::from_value(shape).unwrap());
    orchestrator
        .handle(&SagaInput::Reply(reply))
        .await
        .expect("applied to the stored saga");
    let stored = store.load("s-1").await.unwrap().unwrap();
    assert_eq!(stored.version(), started.version() + 1);
    assert_eq!(stored.steps().len(), 2);

    // A snapshot that does not read as a saga (altered on its way: a status no release
    // writes), handed back by a participant that passed it on unread: the reply is
    // applied to the stored saga.
    let later = orchestrator
        .start(
            "contract",
            "s-later",
            &json!({"n": 1}),
            StartMeta::default(),
        )
        .await
        .unwrap();
    let mut unknown = serde_json::to_value(&later).unwrap();
    unknown["status"] = json!("paused");
    unknown["outbox"] = json!([]);
    let mut reply = Reply::to(&first_command(&later), Ok(json!({"done": "a"})));
    reply.snapshot = Some(serde_json::from_value(unknown).unwrap());
    assert!(reply.snapshot.as_ref().unwrap().state().is_err());
    orchestrator
        .handle(&SagaInput::Reply(reply))
        .await
        .expect("applied to the stored saga");
    let stored = store.load("s-later").await.unwrap().unwrap();
    assert_eq!(stored.version(), later.version() + 1);

    // A snapshot naming another saga, or a version of it no orchestrator runs: the reply
    // is applied to the stored saga too (it was an unknown definition, and the reply went
    // back to its queue until its dead-letter queue).
    for (key, value) in [("name", json!("other")), ("definition_version", json!(9))] {
        let id = format!("s-{key}");
        let before = orchestrator
            .start("contract", &id, &json!({"n": 1}), StartMeta::default())
            .await
            .unwrap();
        let command = first_command(&before);
        let mut renamed = serde_json::to_value(&before).unwrap();
        renamed[key] = value;
        let mut reply = Reply::to(&command, Ok(json!({"done": key})));
        reply.snapshot = Some(serde_json::from_value(renamed).unwrap());
        orchestrator
            .handle(&SagaInput::Reply(reply))
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let after = store.load(&id).await.unwrap().unwrap();
        assert_eq!(after.version(), before.version() + 1, "{key}");
        assert_eq!((after.name(), after.definition_version()), ("contract", 1));
    }

    // The same name and version, redefined with one step: the stored saga does not fit.
    let one_step = Saga::named("contract", 1)
        .step(Step::new("a", remote("p", "A"), Some(remote("p", "UndoA"))))
        .build()
        .unwrap();
    let redefined = Orchestrator::new(Registry::new().with(one_step), store.clone());
    let next = first_command(&stored);
    let error = redefined
        .handle(&SagaInput::Reply(Reply::to(&next, Ok(json!(null)))))
        .await
        .expect_err("does not fit");
    assert!(
        matches!(
            error,
            OrchestratorError::DefinitionMismatch {
                steps: 2,
                defined: 1,
                ..
            }
        ),
        "{error:?}"
    );
}

/// Data too large for the first command to be relayed is refused at the start, with
/// nothing stored, instead of a saga whose command never leaves.
#[tokio::test]
async fn a_start_whose_first_command_cannot_be_relayed_is_refused() {
    use lift_events::saga::{Orchestrator, OrchestratorError, Registry};
    let store = MemoryStore::new();
    let orchestrator = Orchestrator::new(Registry::new().with(saga()), store.clone());
    let error = orchestrator
        .start(
            "contract",
            "too-big",
            &json!({"blob": "x".repeat(300 * 1024)}),
            StartMeta::default(),
        )
        .await
        .expect_err("too large");
    assert!(matches!(error, OrchestratorError::Data(_)), "{error:?}");
    assert!(store.load("too-big").await.unwrap().is_none());
    orchestrator
        .start(
            "contract",
            "fits",
            &json!({"blob": "x".repeat(100 * 1024)}),
            StartMeta::default(),
        )
        .await
        .expect("100 KiB fits");
}

/// Counts the conflicts a store reports.
#[derive(Clone)]
struct Conflicts<S> {
    store: S,
    seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl<S: SagaStore> Conflicts<S> {
    fn count<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if matches!(result, Err(StoreError::Conflict { .. })) {
            self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        result
    }
}

impl<S: SagaStore> SagaStore for Conflicts<S> {
    async fn save(&self, state: &lift_events::saga::SagaState) -> Result<(), StoreError> {
        self.count(self.store.save(state).await)
    }

    async fn save_over(
        &self,
        state: &lift_events::saga::SagaState,
        base: &lift_events::saga::SagaState,
    ) -> Result<(), StoreError> {
        self.count(self.store.save_over(state, base).await)
    }

    async fn load(&self, id: &str) -> Result<Option<lift_events::saga::SagaState>, StoreError> {
        self.store.load(id).await
    }

    async fn list(
        &self,
        status: lift_events::saga::SagaStatus,
        limit: usize,
    ) -> Result<Vec<lift_events::store::SagaSummary>, StoreError> {
        self.store.list(status, limit).await
    }
}

/// A reply's snapshot is written over only when it is the stored saga: the relay's own
/// snapshot applies without a read or a conflict, and one that `alter` changed on its way
/// is refused as a conflict and the reply applied to the stored saga instead, which keeps
/// its data and the part at `kept`.
async fn an_altered_snapshot_is_never_written_back<S: SagaStore + Clone + 'static>(
    store: S,
    alter: fn(&mut serde_json::Value),
    kept: Option<&str>,
) {
    use lift_events::saga::{Orchestrator, Registry, Reply, SagaInput};
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Conflicts {
        store: store.clone(),
        seen: seen.clone(),
    };
    let two_steps = Saga::named("contract", 1)
        .step(Step::new("a", remote("p", "A"), Some(remote("p", "UndoA"))))
        .step(Step::new("b", remote("p", "B"), Some(remote("p", "UndoB"))))
        .build()
        .unwrap();
    let orchestrator = Orchestrator::new(Registry::new().with(two_steps), counted);
    // As the relay hands it out: the stored saga, through JSON, without its outbox.
    let snapshot_of =
        |state: &lift_events::saga::SagaState| lift_events::saga::Snapshot::of(state).unwrap();
    let id = unique("snap");
    let started = orchestrator
        .start(
            "contract",
            &id,
            &json!({"amount": 10}),
            StartMeta::default(),
        )
        .await
        .unwrap();
    let stored = store.load(&id).await.unwrap().unwrap();
    let mut reply = Reply::to(&first_command(&started), Ok(json!({"done": "a"})));
    reply.snapshot = Some(snapshot_of(&stored));
    orchestrator.handle(&SagaInput::Reply(reply)).await.unwrap();
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the relay's snapshot applies as it is"
    );
    let after_a = store.load(&id).await.unwrap().unwrap();
    assert_eq!(after_a.version(), started.version() + 1);

    let mut altered = serde_json::to_value(snapshot_of(&after_a)).unwrap();
    alter(&mut altered);
    let mut reply = Reply::to(&first_command(&after_a), Ok(json!({"done": "b"})));
    reply.snapshot = Some(serde_json::from_value(altered).unwrap());
    orchestrator.handle(&SagaInput::Reply(reply)).await.unwrap();
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the altered snapshot conflicts"
    );
    let after_b = store.load(&id).await.unwrap().unwrap();
    assert_eq!(
        after_b.version(),
        after_a.version() + 1,
        "the reply applied to the stored saga"
    );
    let (before, after) = (
        serde_json::to_value(&after_a).unwrap(),
        serde_json::to_value(&after_b).unwrap(),
    );
    assert_eq!(after_b.data()["amount"], 10);
    if let Some(pointer) = kept {
        assert_eq!(after.pointer(pointer), before.pointer(pointer), "{pointer}");
    }
}

/// Every part of the saga the stored item holds, altered in a handed-back snapshot, makes
/// its write a conflict: the data, a step's status, the history, the time of the last move,
/// the tenant, the reason and the correlation id.
async fn no_altered_snapshot_is_written_back<S: SagaStore + Clone + 'static>(store: S) {
    type Alteration = (
        &'static str,
        fn(&mut serde_json::Value),
        Option<&'static str>,
    );
    let alterations: [Alteration; 7] = [
        ("data", |v| v["data"]["amount"] = json!(1_000_000), None),
        (
            "a done step set back",
            |v| v["steps"][0] = json!("pending"),
            Some("/steps/0"),
        ),
        (
            "the history cut",
            |v| {
                v["history"].as_array_mut().unwrap().pop();
            },
            None,
        ),
        (
            "the time of the last move",
            |v| v["updated_ms"] = json!(v["updated_ms"].as_u64().unwrap() + 1),
            None,
        ),
        (
            "a tenant",
            |v| v["tenant"] = json!("t-other"),
            Some("/tenant"),
        ),
        (
            "a reason",
            |v| v["reason"] = json!("forged"),
            Some("/reason"),
        ),
        (
            "the correlation id",
            |v| v["correlation_id"] = json!("c-other"),
            Some("/correlation_id"),
        ),
    ];
    for (what, alter, kept) in alterations {
        eprintln!("altered: {what}");
        an_altered_snapshot_is_never_written_back(store.clone(), alter, kept).await;
    }
}

#[tokio::test]
async fn the_memory_store_never_writes_an_altered_snapshot_back() {
    no_altered_snapshot_is_written_back(MemoryStore::new()).await;
}

#[tokio::test]
async fn the_dynamodb_store_never_writes_an_altered_snapshot_back() {
    no_altered_snapshot_is_written_back(emulator_store().await).await;
}

/// `save_over` writes only over the saga `base` is, part by part: a base that differs from
/// the stored saga in any part the item holds (each attribute the write's condition
/// compares, absent or present) is a conflict that hands back the stored saga; the stored
/// saga itself as the base writes.
async fn save_over_requires_every_stored_part<S: SagaStore>(store: S) {
    let id = unique("over");
    let mut stored = serde_json::to_value(
        start(&saga(), &id, json!({"amount": 10}), StartMeta::default(), 5).into_state(),
    )
    .unwrap();
    // A saga with a reason and a history, so that both can go missing from a base.
    stored["status"] = json!("compensating");
    stored["reason"] = json!("refused");
    assert!(!stored["history"].as_array().unwrap().is_empty());
    let state = |value: &serde_json::Value| -> lift_events::saga::SagaState {
        serde_json::from_value(value.clone()).unwrap()
    };
    store.save(&state(&stored)).await.unwrap();
    let mut next = stored.clone();
    next["version"] = json!(2);
    next["updated_ms"] = json!(9);
    let next = state(&next);
    let mut base = stored.clone();
    base["outbox"] = json!([]);

    type Alteration = (&'static str, fn(&mut serde_json::Value));
    let alterations: [Alteration; 11] = [
        ("status", |v| v["status"] = json!("running")),
        ("name", |v| v["name"] = json!("other")),
        ("history gone", |v| {
            v.as_object_mut().unwrap().remove("history");
        }),
        ("history cut", |v| {
            v["history"].as_array_mut().unwrap().pop();
        }),
        ("reason gone", |v| {
            v.as_object_mut().unwrap().remove("reason");
        }),
        ("reason changed", |v| v["reason"] = json!("forged")),
        ("data", |v| v["data"]["amount"] = json!(11)),
        ("updated", |v| v["updated_ms"] = json!(6)),
        ("a step", |v| v["steps"][0] = json!("done")),
        ("tenant", |v| v["tenant"] = json!("t-2")),
        ("correlation id", |v| v["correlation_id"] = json!("c-2")),
    ];
    for (what, alter) in alterations {
        let mut altered = base.clone();
        alter(&mut altered);
        match store.save_over(&next, &state(&altered)).await {
            Err(StoreError::Conflict {
                current: Some(current),
                ..
            }) => assert_eq!(*current, state(&stored), "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    assert_eq!(store.load(&id).await.unwrap().unwrap(), state(&stored));
    store.save_over(&next, &state(&base)).await.unwrap();
    assert_eq!(store.load(&id).await.unwrap().unwrap(), next);
}

#[tokio::test]
async fn the_memory_store_writes_over_the_stored_saga_only() {
    save_over_requires_every_stored_part(MemoryStore::new()).await;
}

#[tokio::test]
async fn the_dynamodb_store_writes_over_the_stored_saga_only() {
    save_over_requires_every_stored_part(emulator_store().await).await;
}

/// A store that fails chosen saves: `Throttled` for the `throttle`-th, and for the
/// `lost`-th a write that applies but answers a conflict with itself (an SDK retry of a
/// write whose first answer was lost).
#[derive(Clone)]
struct Faulty {
    store: MemoryStore,
    saves: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    throttle: usize,
    lost: usize,
}

impl SagaStore for Faulty {
    async fn save(&self, state: &lift_events::saga::SagaState) -> Result<(), StoreError> {
        let n = self.saves.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n == self.throttle {
            return Err(StoreError::Throttled);
        }
        self.store.save(state).await?;
        if n == self.lost {
            return Err(StoreError::Conflict {
                id: state.id().to_owned(),
                current: Some(Box::new(state.clone())),
            });
        }
        Ok(())
    }

    async fn load(&self, id: &str) -> Result<Option<lift_events::saga::SagaState>, StoreError> {
        self.store.load(id).await
    }

    async fn list(
        &self,
        status: lift_events::saga::SagaStatus,
        limit: usize,
    ) -> Result<Vec<lift_events::store::SagaSummary>, StoreError> {
        self.store.list(status, limit).await
    }
}

/// Once its first write is stored, a start succeeds: a local step whose result could not
/// be stored (throttled) is left to its timer rather than reported as a failed start, and a
/// first write that was applied though its answer said otherwise still runs its local step.
#[tokio::test]
async fn a_stored_start_succeeds_whatever_befalls_its_local_work() {
    use lift_events::saga::{Orchestrator, Registry, local};
    let saga = || {
        Saga::named("local", 1)
            .step(Step::new(
                "a",
                local(|_| async { Ok(json!({"a": 1})) }),
                None,
            ))
            .step(Step::new("b", remote("p", "B"), None))
            .build()
            .unwrap()
    };
    let faulty = |throttle, lost| Faulty {
        store: MemoryStore::new(),
        saves: Default::default(),
        throttle,
        lost,
    };
    let throttled = faulty(2, 0);
    let orchestrator = Orchestrator::new(Registry::new().with(saga()), throttled.clone());
    let started = orchestrator
        .start("local", "s-1", &json!({}), StartMeta::default())
        .await
        .expect("started, though its local step's result was not stored");
    assert_eq!(started.version(), 1);
    let stored = throttled.store.load("s-1").await.unwrap().unwrap();
    assert_eq!(stored.version(), 1);

    let lost = faulty(0, 1);
    let orchestrator = Orchestrator::new(Registry::new().with(saga()), lost.clone());
    let started = orchestrator
        .start("local", "s-2", &json!({}), StartMeta::default())
        .await
        .unwrap();
    assert_eq!(started.version(), 2, "the local step ran after all");
    assert_eq!(lost.store.load("s-2").await.unwrap().unwrap().version(), 2);
}

/// A start whose second local step's result could not be stored answers the saga as far as
/// it got stored: after its first local step, not as it started.
#[tokio::test]
async fn a_start_answers_its_local_work_as_far_as_it_got_stored() {
    use lift_events::saga::{Orchestrator, Registry, local};
    let saga = Saga::named("two-local", 1)
        .step(Step::new("a", local(|_| async { Ok(json!(1)) }), None))
        .step(Step::new("b", local(|_| async { Ok(json!(2)) }), None))
        .step(Step::new("c", remote("p", "C"), None))
        .build()
        .unwrap();
    // Save 1 is the start, save 2 step a's result, save 3 step b's (throttled).
    let throttled = Faulty {
        store: MemoryStore::new(),
        saves: Default::default(),
        throttle: 3,
        lost: 0,
    };
    let orchestrator = Orchestrator::new(Registry::new().with(saga), throttled.clone());
    let started = orchestrator
        .start("two-local", "s-1", &json!({}), StartMeta::default())
        .await
        .unwrap();
    let stored = throttled.store.load("s-1").await.unwrap().unwrap();
    assert_eq!(stored.version(), 2);
    assert_eq!(started, stored);
}

/// A local step's attempt that never ends is cut at the step's timeout: the start answers
/// (with the attempt left to the step's timer) instead of hanging until the function's
/// timeout takes its whole batch back to the queue.
#[tokio::test(start_paused = true)]
async fn a_local_step_that_hangs_is_cut_at_its_timeout() {
    use lift_events::saga::{Orchestrator, Registry, local};
    let saga = Saga::named("hangs", 1)
        .step(
            Step::new(
                "a",
                local(|_| std::future::pending::<lift_events::saga::StepResult>()),
                None,
            )
            .timeout(std::time::Duration::from_secs(5)),
        )
        .build()
        .unwrap();
    let store = MemoryStore::new();
    let orchestrator = Orchestrator::new(Registry::new().with(saga), store.clone());
    let started = tokio::time::Instant::now();
    let state = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        orchestrator.start("hangs", "s-1", &json!({}), StartMeta::default()),
    )
    .await
    .expect("the start answers")
    .unwrap();
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(5));
    assert_eq!(state.version(), 1, "started, the attempt left to its timer");
    assert_eq!(store.load("s-1").await.unwrap().unwrap(), state);
}

/// A reply's write that was applied though its answer said otherwise (an SDK retry meeting
/// its own write) is this orchestrator's transition: the local step it sent runs now. (It
/// was read back as stale and ignored; the local step waited for its timeout and spent an
/// attempt.)
#[tokio::test]
async fn a_reply_whose_write_answer_was_lost_still_runs_its_local_step() {
    use lift_events::saga::{Handled, Orchestrator, Registry, Reply, SagaInput, SagaStatus, local};
    let saga = Saga::named("mixed", 1)
        .step(Step::new("a", remote("p", "A"), None))
        .step(Step::new(
            "b",
            local(|_| async { Ok(json!({"b": 1})) }),
            None,
        ))
        .build()
        .unwrap();
    // Save 1 is the start, save 2 the reply's transition.
    let store = Faulty {
        store: MemoryStore::new(),
        saves: Default::default(),
        throttle: 0,
        lost: 2,
    };
    let orchestrator = Orchestrator::new(Registry::new().with(saga), store.clone());
    let started = orchestrator
        .start("mixed", "s-1", &json!({}), StartMeta::default())
        .await
        .unwrap();
    let reply = Reply::to(&first_command(&started), Ok(json!({"done": "a"})));
    let handled = orchestrator
        .handle(&SagaInput::Reply(reply))
        .await
        .expect("handled");
    assert!(matches!(handled, Handled::Applied(_)), "{handled:?}");
    let stored = store.store.load("s-1").await.unwrap().unwrap();
    assert_eq!(stored.status(), SagaStatus::Completed, "{stored:?}");
}

/// A cancel whose local compensation is refused leaves the saga needing attention: the
/// cancel was taken, so it answers that saga, and so does the same cancel sent again (a
/// client whose first answer was lost), rather than "not cancellable".
#[tokio::test]
async fn a_cancel_whose_local_compensation_is_refused_answers_the_saga_needing_attention() {
    use lift_events::saga::{
        Orchestrator, Registry, RetryPolicy, SagaStatus, StepError, Waiting, local,
    };
    use std::time::Duration;
    let saga = Saga::named("local-undo", 1)
        .step(
            Step::new(
                "a",
                local(|_| async { Err(StepError::Failed("down".into())) }),
                Some(local(|_| async {
                    Err(StepError::Rejected("cannot undo".into()))
                })),
            )
            .retry(RetryPolicy::new(3, Duration::from_secs(1), Duration::from_secs(4)).unwrap()),
        )
        .build()
        .unwrap();
    let orchestrator = Orchestrator::new(Registry::new().with(saga), MemoryStore::new());
    let started = orchestrator
        .start("local-undo", "s-1", &json!({}), StartMeta::default())
        .await
        .unwrap();
    assert!(
        matches!(
            started.cursor().map(|c| &c.waiting),
            Some(Waiting::Retry { .. })
        ),
        "{started:?}"
    );
    let cancelled = orchestrator.cancel("s-1", "stop").await.unwrap();
    assert_eq!(cancelled.status(), SagaStatus::NeedsAttention);
    assert_eq!(orchestrator.cancel("s-1", "stop").await.unwrap(), cancelled);
}

/// Two orchestrators, each with its own DynamoDB client, redrive one saga at the same
/// version at once: one conditional write wins, the saga is redriven once, and both
/// callers are answered with the stored saga.
#[tokio::test]
async fn two_redrives_racing_on_dynamodb_redrive_once() {
    use lift_events::saga::{Handled, Orchestrator, Registry, Reply, SagaInput, StepError};
    let store = emulator_store().await;
    let orchestrator = Orchestrator::new(Registry::new().with(two_steps()), store.clone());
    let id = unique("race");
    let mut state = orchestrator
        .start("two", &id, &json!({}), StartMeta::default())
        .await
        .unwrap();
    for outcome in [Ok(json!(1)), Err("no"), Err("closed")] {
        let reply = Reply::to(
            &first_command(&state),
            outcome.map_err(|r| StepError::Rejected(r.into())),
        );
        match orchestrator.handle(&SagaInput::Reply(reply)).await.unwrap() {
            Handled::Applied(next) => state = next,
            other => panic!("{other:?}"),
        }
    }
    let other = Orchestrator::new(
        Registry::new().with(two_steps()),
        emulator_store_on(&store).await,
    );
    let (a, b) = tokio::join!(
        orchestrator.redrive(&id, state.version(), "first"),
        other.redrive(&id, state.version(), "second"),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let stored = store.load(&id).await.unwrap().unwrap();
    assert_eq!(stored.redrives(), 1, "{:?}", stored.history());
    assert_eq!(stored.version(), state.version() + 1);
    assert_eq!((a, b), (stored.clone(), stored));
}

/// A second store on `store`'s table, through a client of its own.
async fn emulator_store_on(store: &DynamoStore) -> DynamoStore {
    let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
    DynamoStore::new(client, store.table())
}
