//! The orchestrator's function in-process: an in-memory saga store and a transport that
//! records what the relay publishes. Each command the relay publishes is run by
//! `trip::work` and its reply delivered to the function as an SQS message, as the bus and
//! the participants' functions do when deployed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lift_core::testing::{TestApp, batch_failures, events};
use lift_events::relay::{Transport, TransportError, reply_envelope};
use lift_events::saga::{Command, Orchestrator, Reply, SagaState, SagaStatus, Target};
use lift_events::store::{MemoryStore, SagaStore};
use lift_events::{Envelope, Event};
use serde_json::{Value, json};
use trip::{Started, TripRequested};

/// What the relay published: events on the bus, delayed messages to the orchestrator.
#[derive(Debug, Clone, Default)]
struct Recorded {
    events: Arc<Mutex<Vec<Envelope>>>,
    timers: Arc<Mutex<Vec<(Envelope, Duration)>>>,
}

impl Transport for Recorded {
    async fn put_events(&self, entries: &[Envelope]) -> Result<Vec<usize>, TransportError> {
        self.events.lock().unwrap().extend_from_slice(entries);
        Ok(Vec::new())
    }

    async fn send_delayed(
        &self,
        message: &Envelope,
        delay: Duration,
    ) -> Result<(), TransportError> {
        self.timers.lock().unwrap().push((message.clone(), delay));
        Ok(())
    }
}

struct Harness {
    app: TestApp,
    orchestrator: Orchestrator<MemoryStore>,
    sent: Recorded,
    /// How many recorded events were run already.
    seen: usize,
}

fn harness() -> Harness {
    let orchestrator = trip::orchestrator(MemoryStore::new()).unwrap();
    let sent = Recorded::default();
    Harness {
        app: TestApp::new(trip::orchestrator_app(orchestrator.clone(), sent.clone())).unwrap(),
        orchestrator,
        sent,
        seen: 0,
    }
}

fn request(trip: &str, amount: u64, fail_last: bool) -> Value {
    let envelope = Envelope::new(
        trip::SOURCE,
        TripRequested {
            trip: trip.to_owned(),
            amount,
            fail_last,
        },
    );
    events::eventbridge(
        trip::SOURCE,
        TripRequested::TYPE,
        serde_json::to_value(envelope).unwrap(),
    )
}

impl Harness {
    async fn start(&self, trip: &str, amount: u64, fail_last: bool) -> Started {
        let out = self
            .app
            .invoke(&request(trip, amount, fail_last))
            .await
            .unwrap();
        serde_json::from_value(out).unwrap()
    }

    async fn state(&self, trip: &str) -> SagaState {
        self.orchestrator.store().load(trip).await.unwrap().unwrap()
    }

    /// The table's stream: the new image of the saga's item, as the relay reads it.
    async fn relay(&self, trip: &str) {
        let state = self.state(trip).await;
        let image = json!({
            "pk": {"S": trip},
            "v": {"N": state.version().to_string()},
            "outbox": {"S": serde_json::to_string(state.outbox()).unwrap()},
        });
        let out = self
            .app
            .invoke(&events::dynamodb([("MODIFY", image, json!({}))]))
            .await
            .unwrap();
        assert!(batch_failures(&out).is_empty(), "{out}");
    }

    /// Relays each new version of the saga and runs each command it publishes through
    /// its participant, delivering the reply twice (invoked, then from the queue), until the
    /// saga ends; returns it then.
    async fn run(&mut self, trip: &str) -> SagaState {
        let mut relayed = 0;
        for _ in 0..20 {
            let state = self.state(trip).await;
            if state.version() == relayed {
                assert!(state.status().is_final(), "saga {trip} is stuck: {state:?}");
                return state;
            }
            self.relay(trip).await;
            relayed = state.version();
            let fresh: Vec<Envelope> = self.sent.events.lock().unwrap()[self.seen..].to_vec();
            self.seen += fresh.len();
            for event in fresh.iter().filter(|e| e.kind != "lift.saga.Finished") {
                let command: Command = serde_json::from_value(event.payload.clone()).unwrap();
                let Target::Remote { participant, .. } = &command.target else {
                    panic!("the trip saga has no local steps: {command:?}");
                };
                let outcome = trip::work(participant, command.clone()).await;
                let reply =
                    reply_envelope(participant, &command, &Reply::to(&command, outcome)).unwrap();
                // As the participant's invocation delivers it, then again from a queue.
                let invoked = events::eventbridge(
                    participant,
                    &reply.kind,
                    serde_json::to_value(&reply).unwrap(),
                );
                self.app.invoke(&invoked).await.unwrap();
                let body = serde_json::to_string(&reply).unwrap();
                let out = self.app.invoke(&events::sqs([&*body])).await.unwrap();
                assert!(batch_failures(&out).is_empty(), "{out}");
            }
        }
        panic!("saga {trip} did not end: {:?}", self.state(trip).await);
    }

    /// The types of the events the relay published for `trip`, in order.
    fn published(&self, trip: &str) -> Vec<String> {
        self.sent
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.saga_id.as_deref() == Some(trip))
            .map(|e| e.kind.clone())
            .collect()
    }
}

#[tokio::test]
async fn a_trip_runs_its_three_steps_in_order() {
    let mut h = harness();
    let started = h.start("trip-ok", 120, false).await;
    assert_eq!(
        started,
        Started {
            saga: "trip-ok".into(),
            status: "running".into(),
            version: 1
        }
    );
    let state = h.run("trip-ok").await;
    assert_eq!(state.status(), SagaStatus::Completed);
    assert_eq!(crate::timeline(&state), crate::COMPLETED);
    assert_eq!(
        h.published("trip-ok"),
        ["Reserve", "Charge", "Confirm", "lift.saga.Finished"]
    );
    assert_eq!(state.outputs()["charge"]["by"], "payments");
    assert_eq!(state.outputs()["confirm"]["by"], "inventory");
    // One timer for the whole trip (answered in time, the steps share it), delayed by the
    // step's timeout.
    let timers = h.sent.timers.lock().unwrap().clone();
    assert_eq!(timers.len(), 1);
    assert!(timers.iter().all(|(_, delay)| *delay <= trip::STEP_TIMEOUT
        && *delay > trip::STEP_TIMEOUT - Duration::from_secs(5)));
}

#[tokio::test]
async fn a_trip_refused_at_its_last_step_is_undone_in_reverse() {
    let mut h = harness();
    h.start("trip-full", 120, true).await;
    let state = h.run("trip-full").await;
    assert_eq!(state.status(), SagaStatus::Compensated);
    assert!(
        state.reason().unwrap().contains("no seat left"),
        "{state:?}"
    );
    assert_eq!(crate::timeline(&state), crate::REFUSED_LAST);
    assert_eq!(crate::compensations(&state), [1, 0]);
    assert_eq!(
        h.published("trip-full"),
        [
            "Reserve",
            "Charge",
            "Confirm",
            "Refund",
            "Release",
            "lift.saga.Finished"
        ]
    );
}

#[tokio::test]
async fn a_declined_card_releases_the_seat_and_charges_nothing_back() {
    let mut h = harness();
    h.start("trip-dear", trip::CARD_LIMIT + 1, false).await;
    let state = h.run("trip-dear").await;
    assert_eq!(state.status(), SagaStatus::Compensated);
    assert!(
        state.reason().unwrap().contains("card declined"),
        "{state:?}"
    );
    // The refused charge took no effect: only the reservation is undone.
    assert_eq!(crate::compensations(&state), [0]);
    assert_eq!(
        h.published("trip-dear"),
        ["Reserve", "Charge", "Release", "lift.saga.Finished"]
    );
}

#[tokio::test]
async fn a_second_request_for_a_trip_changes_nothing() {
    let mut h = harness();
    h.start("trip-twice", 120, false).await;
    let before = h.state("trip-twice").await;
    let again = h.start("trip-twice", 120, false).await;
    assert_eq!((again.status.as_str(), again.version), ("running", 1));
    assert_eq!(h.state("trip-twice").await, before);
    // Other data under the same id is another trip: refused with a 409, nothing moved.
    let refused = h
        .app
        .invoke(&request("trip-twice", 999, true))
        .await
        .expect_err("another trip under a used id is refused");
    assert_eq!(refused.status(), 409, "{refused}");
    assert_eq!(h.state("trip-twice").await, before);
    let done = h.run("trip-twice").await;
    assert_eq!(
        done.status(),
        SagaStatus::Completed,
        "the first request's data wins"
    );
    let again = h.start("trip-twice", 120, false).await;
    assert_eq!(
        (again.status.as_str(), again.version),
        ("completed", done.version())
    );
    assert_eq!(h.state("trip-twice").await, done);
    assert_eq!(
        h.published("trip-twice"),
        ["Reserve", "Charge", "Confirm", "lift.saga.Finished"]
    );
}

#[tokio::test]
async fn a_request_without_a_trip_id_is_refused_and_starts_nothing() {
    let h = harness();
    for trip in [String::new(), "t".repeat(trip::MAX_TRIP_ID + 1)] {
        let err = h.app.invoke(&request(&trip, 10, false)).await.unwrap_err();
        assert!(
            matches!(err, lift_core::Error::Validation(ref fields) if fields[0].pointer == "/payload/trip"),
            "{err:?}"
        );
    }
    assert!(h.orchestrator.store().is_empty());
    assert!(h.sent.events.lock().unwrap().is_empty());
}
