//! Saga benchmarks on the in-memory store: one transition (read, transition, conditional
//! write), one read-free transition (the reply carries the saga, as a relayed command's
//! does: transition, conditional write) and a whole 5-step saga on its success path.
//!
//! `cargo bench -p lift-events --bench saga`; transitions per second = 1 / time of
//! `saga/transition`, and 6 / time of `saga/complete_5_step` (a start and five replies).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use lift_events::saga::{
    Handled, Message, Orchestrator, Registry, Reply, Saga, SagaInput, SagaState, Snapshot,
    StartMeta, Step, remote, start,
};
use lift_events::store::{MemoryStore, SagaStore};
use serde_json::json;

fn five_steps() -> Saga {
    let mut b = Saga::named("bench", 1);
    for name in ["reserve", "charge", "pack", "ship", "notify"] {
        b = b.step(Step::new(
            name,
            remote("svc", &format!("Do-{name}")),
            Some(remote("svc", &format!("Undo-{name}"))),
        ));
    }
    b.build().expect("definition")
}

fn reply_to(state: &SagaState) -> SagaInput {
    let command = state
        .outbox()
        .iter()
        .find_map(|m| match m {
            Message::Command(c) => Some(c),
            _ => None,
        })
        .expect("a command");
    SagaInput::Reply(Reply::to(command, Ok(json!({"ok": true}))))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let saga = five_steps();
    let registry = Registry::new().with(saga.clone());
    let data = json!({"order": "o-1", "amount": 4200, "customer": "c-9"});
    let first = start(&saga, "s-1", data.clone(), StartMeta::default(), 1).into_state();
    let input = reply_to(&first);

    let mut group = c.benchmark_group("saga");
    group.bench_function("transition", |b| {
        b.iter_batched(
            || {
                let store = MemoryStore::new();
                rt.block_on(store.save(&first)).expect("save");
                Orchestrator::new(registry.clone(), store).with_clock(|| 2)
            },
            |orchestrator| {
                let handled = rt.block_on(orchestrator.handle(black_box(&input)));
                black_box(matches!(handled, Ok(Handled::Applied(_))))
            },
            BatchSize::SmallInput,
        );
    });
    // The reply hands back the saga its command carried: no read.
    let carried = match &input {
        SagaInput::Reply(reply) => {
            let mut reply = reply.clone();
            reply.snapshot = Some(Snapshot::of(&first).expect("snapshot"));
            SagaInput::Reply(reply)
        }
        other => other.clone(),
    };
    group.bench_function("transition_read_free", |b| {
        b.iter_batched(
            || {
                let store = MemoryStore::new();
                rt.block_on(store.save(&first)).expect("save");
                Orchestrator::new(registry.clone(), store).with_clock(|| 2)
            },
            |orchestrator| {
                let handled = rt.block_on(orchestrator.handle(black_box(&carried)));
                black_box(matches!(handled, Ok(Handled::Applied(_))))
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("complete_5_step", |b| {
        b.iter_batched(
            || Orchestrator::new(registry.clone(), MemoryStore::new()).with_clock(|| 2),
            |orchestrator| {
                rt.block_on(async {
                    let mut state = orchestrator
                        .start("bench", "s-1", &data, StartMeta::default())
                        .await
                        .expect("start");
                    while !state.status().is_final() {
                        match orchestrator.handle(&reply_to(&state)).await {
                            Ok(Handled::Applied(next)) => state = next,
                            other => panic!("{other:?}"),
                        }
                    }
                    black_box(state.version())
                })
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
