//! The contract every `SagaStore` keeps, shared by the store tests (in-memory and
//! DynamoDB on the emulator) and the simulation (its model of DynamoDB).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lift_events::saga::{
    Command, Handled, Message, Orchestrator, OrchestratorError, Outcome, Phase, Registry, Reply,
    Saga, SagaInput, SagaState, SagaStatus, StartMeta, Step, StepError, local, remote, start,
    transition,
};
use lift_events::store::{SagaStore, StoreError};
use serde_json::json;

fn saga() -> Saga {
    Saga::named("contract", 1)
        .step(Step::new("a", remote("p", "A"), Some(remote("p", "UndoA"))))
        .step(Step::new("b", remote("p", "B"), Some(remote("p", "UndoB"))))
        .build()
        .unwrap()
}

/// A name no other test uses.
pub(crate) fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{nanos}-{:x}", fastrand_id())
}

fn fastrand_id() -> u64 {
    // Unique enough across the tests of one run.
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The first command `state`'s transition sent.
pub(crate) fn first_command(state: &SagaState) -> Command {
    state
        .outbox()
        .iter()
        .find_map(|m| match m {
            Message::Command(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap()
}

fn next(saga: &Saga, state: &SagaState, ok: bool) -> SagaState {
    let command = first_command(state);
    let outcome = if ok {
        Ok(json!({"done": command.step}))
    } else {
        Err(StepError::Rejected("no".into()))
    };
    match transition(
        saga,
        state,
        &SagaInput::Reply(Reply::to(&command, outcome)),
        state.updated_ms() + 5,
    ) {
        Outcome::Applied(t) => t.into_state(),
        other => panic!("{other:?}"),
    }
}

/// Runs the whole contract against `store`.
pub(crate) async fn contract<S: SagaStore + Clone + 'static>(store: S) {
    let saga = saga();
    let id = unique("saga");
    let v1 = start(
        &saga,
        &id,
        json!({"order": 1, "text": "é ✓"}),
        StartMeta {
            correlation_id: "corr".into(),
            tenant: Some("t1".into()),
        },
        1_000,
    )
    .into_state();

    // Missing.
    assert!(store.load(&id).await.unwrap().is_none());
    // Create, once.
    store.save(&v1).await.unwrap();
    assert!(matches!(
        store.save(&v1).await,
        Err(StoreError::Conflict { .. })
    ));
    // Round trip: state, history and outbox.
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(loaded, v1);
    assert_eq!(loaded.outbox().len(), 2);

    // The next version only on top of the one read.
    let v2 = next(&saga, &v1, true);
    let v3 = next(&saga, &v2, false);
    assert!(
        matches!(store.save(&v3).await, Err(StoreError::Conflict { .. })),
        "a skipped version"
    );
    store.save(&v2).await.unwrap();
    // A lost write hands back the saga as stored (DynamoDB's
    // ReturnValuesOnConditionCheckFailure): the orchestrator applies its input to it
    // without a read.
    match store.save(&v2).await {
        Err(StoreError::Conflict {
            current: Some(current),
            ..
        }) => assert_eq!(*current, v2, "the stored saga comes back with a conflict"),
        other => panic!("a stale version: {other:?}"),
    }
    match store.save(&v1).await {
        Err(StoreError::Conflict {
            current: Some(current),
            ..
        }) => assert_eq!(current.version(), 2, "a create over an existing saga"),
        other => panic!("an existing id: {other:?}"),
    }
    store.save(&v3).await.unwrap();
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(loaded, v3);
    assert_eq!(loaded.status(), SagaStatus::Compensating);
    let versions: Vec<u64> = loaded.history().iter().map(|h| h.version).collect();
    assert_eq!(versions.first(), Some(&1));
    assert_eq!(versions.last(), Some(&3));
    assert!(
        versions.windows(2).all(|w| w[1] >= w[0]),
        "history in order"
    );

    // Racing writers of one version: exactly one wins.
    let v4 = next(&saga, &v3, true);
    let mut racers = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let v4 = v4.clone();
        racers.push(tokio::spawn(async move { store.save(&v4).await }));
    }
    let mut wins = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(()) => wins += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(
        store.load(&id).await.unwrap().unwrap().status(),
        SagaStatus::Compensated
    );

    // Listing by status (a secondary index may lag: wait for it, with a deadline).
    let running_id = unique("saga");
    let running = start(&saga, &running_id, json!({}), StartMeta::default(), 2_000).into_state();
    store.save(&running).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let compensated = store.list(SagaStatus::Compensated, 1000).await.unwrap();
        let running = store.list(SagaStatus::Running, 1000).await.unwrap();
        let found = compensated.iter().find(|s| s.id == id);
        if let Some(found) = found
            && running.iter().any(|s| s.id == running_id)
        {
            assert_eq!(found.name, "contract");
            assert!(found.reason.as_deref().unwrap().contains("no"));
            assert!(!running.iter().any(|s| s.id == id));
            assert!(!compensated.iter().any(|s| s.id == running_id));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the listing never showed both sagas"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The least recently moved first, whatever order the store reads them in: the oldest
    // running saga, saved last, is the one a limit of one gives.
    let oldest_id = unique("oldest");
    let oldest = start(&saga, &oldest_id, json!({}), StartMeta::default(), 1).into_state();
    store.save(&oldest).await.unwrap();
    let first = store.list(SagaStatus::Running, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].id, oldest_id, "{first:?}");
    assert!(
        store
            .list(SagaStatus::NeedsAttention, 1000)
            .await
            .unwrap()
            .iter()
            .all(|s| s.id != id)
    );

    // An orchestrator over the store: a saga of local steps runs to its end.
    let local_saga = Saga::named("local", 1)
        .step(Step::new(
            "one",
            local(|c| async move { Ok(json!(c.attempt)) }),
            Some(local(|_| async { Ok(json!(null)) })),
        ))
        .step(Step::new(
            "two",
            local(|_| async { Err(StepError::Rejected("full".into())) }),
            None,
        ))
        .build()
        .unwrap();
    let orchestrator = Orchestrator::new(Registry::new().with(local_saga), store.clone());
    let local_id = unique("local");
    let done = orchestrator
        .start("local", &local_id, &json!({"x": 1}), StartMeta::default())
        .await
        .unwrap();
    assert_eq!(done.status(), SagaStatus::Compensated);
    let stored = store.load(&local_id).await.unwrap().unwrap();
    assert_eq!(stored, done);
    // Starting the same id again changes nothing and answers the stored saga; with other
    // data, or for another tenant, it is refused.
    let again = orchestrator
        .start("local", &local_id, &json!({"x": 1}), StartMeta::default())
        .await
        .unwrap();
    assert_eq!(again, done);
    let other_data = orchestrator
        .start("local", &local_id, &json!({"x": 2}), StartMeta::default())
        .await;
    assert!(
        matches!(&other_data, Err(OrchestratorError::AlreadyExists(id)) if *id == local_id),
        "{other_data:?}"
    );
    let tenant = StartMeta {
        tenant: Some("t-other".into()),
        ..StartMeta::default()
    };
    let other_tenant = orchestrator
        .start("local", &local_id, &json!({"x": 1}), tenant)
        .await;
    assert!(
        matches!(other_tenant, Err(OrchestratorError::AlreadyExists(_))),
        "{other_tenant:?}"
    );
    assert_eq!(store.load(&local_id).await.unwrap().unwrap(), done);
    // Data read back from the store is the data sent, to the bit: a retried start with
    // floats in its data (a price times a rate) is recognised as the same start.
    let priced = unique("priced");
    let data = json!({"total": 100.0_f64 * 1.1, "rate": 9.899_999_999_999_999_f64});
    let first = orchestrator
        .start("local", &priced, &data, StartMeta::default())
        .await
        .unwrap();
    assert_eq!(store.load(&priced).await.unwrap().unwrap().data(), &data);
    let again = orchestrator
        .start("local", &priced, &data, StartMeta::default())
        .await;
    assert_eq!(again.unwrap(), first);

    cancel_contract(store.clone()).await;
    redrive_contract(store).await;
}

/// Redriving through the store: a saga that needs attention keeps the command it stopped
/// on, read back as written; the redrive is one stored transition, sent again it changes
/// nothing, and a stale or unknown one is refused with nothing changed.
async fn redrive_contract<S: SagaStore + Clone + 'static>(store: S) {
    let orchestrator = Orchestrator::new(Registry::new().with(saga()), store.clone());
    let id = unique("redrive");
    let mut state = orchestrator
        .start("contract", &id, &json!({"order": 4}), StartMeta::default())
        .await
        .unwrap();
    // `a` done, `b` refused, `a`'s compensation refused.
    for outcome in [Ok(json!("a")), Err("no stock"), Err("refunds closed")] {
        let command = first_command(&state);
        let reply = Reply::to(&command, outcome.map_err(|r| StepError::Rejected(r.into())));
        state = match orchestrator.handle(&SagaInput::Reply(reply)).await.unwrap() {
            Handled::Applied(state) => state,
            other => panic!("{other:?}"),
        };
    }
    assert_eq!(state.status(), SagaStatus::NeedsAttention);
    let stuck = store.load(&id).await.unwrap().unwrap();
    assert_eq!(stuck, state, "the stopped command is stored");
    assert!(stuck.halted().is_some_and(|h| h.refused && h.step == 0));
    let listed = |status| {
        let store = store.clone();
        let id = id.clone();
        async move {
            store
                .list(status, 1_000)
                .await
                .unwrap()
                .iter()
                .any(|s| s.id == id)
        }
    };
    assert!(listed(SagaStatus::NeedsAttention).await);

    let stale = orchestrator
        .redrive(&id, stuck.version() - 1, "old look")
        .await;
    assert!(
        matches!(
            &stale,
            Err(OrchestratorError::NotRedrivable { asked, version, status: SagaStatus::NeedsAttention, halted: true, .. })
                if *asked == stuck.version() - 1 && *version == stuck.version()
        ),
        "{stale:?}"
    );
    let redriven = orchestrator
        .redrive(&id, stuck.version(), "refunds open")
        .await
        .unwrap();
    assert_eq!(redriven.version(), stuck.version() + 1);
    assert_eq!(redriven.status(), SagaStatus::Compensating);
    let undo = first_command(&redriven);
    assert_eq!(
        (undo.step, undo.phase, undo.command_id.as_str()),
        (0, Phase::Compensation, format!("{id}:0:c:r1").as_str())
    );
    assert_eq!(store.load(&id).await.unwrap().as_ref(), Some(&redriven));
    assert!(
        !listed(SagaStatus::NeedsAttention).await,
        "a redriven saga needs attention no more"
    );
    let again = orchestrator
        .redrive(&id, stuck.version(), "twice")
        .await
        .unwrap();
    assert_eq!(again, redriven, "a redrive sent again changes nothing");
    let reply = SagaInput::Reply(Reply::to(&undo, Ok(json!(null))));
    let ended = match orchestrator.handle(&reply).await.unwrap() {
        Handled::Applied(state) => state,
        other => panic!("{other:?}"),
    };
    assert_eq!(ended.status(), SagaStatus::Compensated);
    assert_eq!(store.load(&id).await.unwrap().as_ref(), Some(&ended));
    let late = orchestrator.redrive(&id, ended.version(), "late").await;
    assert!(
        matches!(
            &late,
            Err(OrchestratorError::NotRedrivable {
                status: SagaStatus::Compensated,
                halted: false,
                ..
            })
        ),
        "{late:?}"
    );
    let unknown = orchestrator.redrive(&unique("never"), 3, "x").await;
    assert!(
        matches!(unknown, Err(OrchestratorError::UnknownSaga(_))),
        "{unknown:?}"
    );
}

/// Cancelling through the store: the cancel is one stored transition, a cancel sent again
/// changes nothing, an ended saga cannot be cancelled, an unknown one is said so.
async fn cancel_contract<S: SagaStore + Clone + 'static>(store: S) {
    let orchestrator = Orchestrator::new(Registry::new().with(saga()), store.clone());
    let id = unique("cancel");
    let started = orchestrator
        .start("contract", &id, &json!({"order": 3}), StartMeta::default())
        .await
        .unwrap();
    let cancelled = orchestrator.cancel(&id, "changed my mind").await.unwrap();
    assert_eq!(cancelled.version(), started.version() + 1);
    assert_eq!(cancelled.status(), SagaStatus::Compensating);
    assert_eq!(cancelled.reason(), Some("cancelled: changed my mind"));
    let undo = first_command(&cancelled);
    assert_eq!((undo.step, undo.phase), (0, Phase::Compensation));
    assert_eq!(store.load(&id).await.unwrap().as_ref(), Some(&cancelled));
    let again = orchestrator.cancel(&id, "twice").await.unwrap();
    assert_eq!(again, cancelled, "a cancel sent again changes nothing");
    let reply = SagaInput::Reply(Reply::to(&undo, Ok(json!(null))));
    let ended = match orchestrator.handle(&reply).await.unwrap() {
        Handled::Applied(state) => state,
        other => panic!("{other:?}"),
    };
    assert_eq!(ended.status(), SagaStatus::Compensated);
    assert_eq!(orchestrator.cancel(&id, "late").await.unwrap(), ended);

    let completed = unique("cancel-done");
    let mut state = orchestrator
        .start("contract", &completed, &json!({}), StartMeta::default())
        .await
        .unwrap();
    while !state.status().is_final() {
        let command = first_command(&state);
        let reply = SagaInput::Reply(Reply::to(&command, Ok(json!(null))));
        state = match orchestrator.handle(&reply).await.unwrap() {
            Handled::Applied(state) => state,
            other => panic!("{other:?}"),
        };
    }
    let refused = orchestrator.cancel(&completed, "too late").await;
    assert!(
        matches!(
            &refused,
            Err(OrchestratorError::NotCancellable {
                status: SagaStatus::Completed,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(store.load(&completed).await.unwrap(), Some(state));
    let unknown = orchestrator.cancel(&unique("never"), "x").await;
    assert!(
        matches!(unknown, Err(OrchestratorError::UnknownSaga(_))),
        "{unknown:?}"
    );
}
