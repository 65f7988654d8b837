//! The trip saga deployed on the emulator: the orchestrator and the two participants are
//! three functions from `template.yaml`, talking over its bus, rules and queues, with the
//! saga table's stream feeding the relay. A trip starts with an event on the bus (or, to
//! see the answer of a start, a direct invocation of the orchestrator) and is read back
//! from the saga table.
//!
//! `scripts/test.sh` starts the emulator, builds and deploys the functions and points
//! `LIFT_STACK_FILE` at the deployment's outputs before the tests run. Without it these
//! tests fail loudly: they never pretend to pass.

use std::time::{Duration, Instant};

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_lambda::primitives::Blob;
use lift_core::testing::events;
use lift_events::saga::{SagaState, SagaStatus};
use lift_events::store::{DynamoStore, SagaStore};
use lift_events::{Envelope, Event};
use serde_json::Value;
use trip::{Started, TripRequested};

/// How long a saga may take to end on the emulator (it takes about a second).
const WAIT: Duration = Duration::from_secs(60);

struct Deployed {
    orchestrator: String,
    bus: String,
    store: DynamoStore,
    lambda: aws_sdk_lambda::Client,
    eventbridge: aws_sdk_eventbridge::Client,
}

async fn deployed() -> Deployed {
    let output = |name: &str| {
        lift_core::testing::stack_output(name).unwrap_or_else(|e| {
            panic!("no deployment to test ({e}): run scripts/test.sh, which deploys the examples onto the emulator")
        })
    };
    let config = lift_core::aws::sdk_config().await;
    Deployed {
        orchestrator: output("TripOrchestratorFunctionName"),
        bus: output("TripBusName"),
        store: DynamoStore::new(
            aws_sdk_dynamodb::Client::new(config),
            &output("TripSagaTableName"),
        ),
        lambda: aws_sdk_lambda::Client::new(config),
        eventbridge: aws_sdk_eventbridge::Client::new(config),
    }
}

/// A trip id no other test run has used.
fn trip_id(test: &str) -> String {
    format!("{test}-{:016x}", fastrand::u64(..))
}

fn request(trip: &str, amount: u64, fail_last: bool) -> Envelope<TripRequested> {
    Envelope::new(
        trip::SOURCE,
        TripRequested {
            trip: trip.to_owned(),
            amount,
            fail_last,
        },
    )
}

impl Deployed {
    /// Puts trip requests on the bus.
    async fn publish(&self, requests: &[Envelope<TripRequested>]) {
        let entries = requests.iter().map(|request| {
            PutEventsRequestEntry::builder()
                .event_bus_name(&self.bus)
                .source(trip::SOURCE)
                .detail_type(TripRequested::TYPE)
                .detail(serde_json::to_string(request).expect("envelope"))
                .build()
        });
        let output = self
            .eventbridge
            .put_events()
            .set_entries(Some(entries.collect()))
            .send()
            .await
            .expect("PutEvents");
        assert_eq!(output.failed_entry_count(), 0, "{output:?}");
    }

    /// Invokes the orchestrator with a trip request, as EventBridge would, and waits for
    /// its answer.
    async fn start_directly(&self, request: &Envelope<TripRequested>) -> Started {
        match self.try_start_directly(request).await {
            Ok(started) => started,
            Err(error) => panic!("function error: {error}"),
        }
    }

    /// As [`start_directly`](Self::start_directly), answering the function's error
    /// document when it fails.
    async fn try_start_directly(
        &self,
        request: &Envelope<TripRequested>,
    ) -> Result<Started, Value> {
        let event = events::eventbridge(
            trip::SOURCE,
            TripRequested::TYPE,
            serde_json::to_value(request).expect("envelope"),
        );
        let output = self
            .lambda
            .invoke()
            .function_name(&self.orchestrator)
            .payload(Blob::new(serde_json::to_vec(&event).expect("event")))
            .send()
            .await
            .expect("the Invoke call itself succeeds");
        let payload: Value = serde_json::from_slice(output.payload().expect("payload").as_ref())
            .expect("payload is JSON");
        if output.function_error().is_some() {
            return Err(payload);
        }
        Ok(serde_json::from_value(payload).expect("a Started answer"))
    }

    /// The saga, read back from its table (strongly consistent).
    async fn saga(&self, trip: &str) -> Option<SagaState> {
        self.store.load(trip).await.expect("read the saga table")
    }

    /// Polls the saga table until the saga has ended, for at most [`WAIT`].
    async fn ended(&self, trip: &str) -> SagaState {
        let deadline = Instant::now() + WAIT;
        loop {
            let state = self.saga(trip).await;
            match state {
                Some(state) if state.status().is_final() => return state,
                _ if Instant::now() > deadline => {
                    panic!("saga {trip} did not end within {WAIT:?}; last seen: {state:#?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

#[tokio::test]
async fn a_trip_completes_across_the_three_functions() {
    let d = deployed().await;
    let trip = trip_id("trip-ok");
    d.publish(&[request(&trip, 120, false)]).await;

    let state = d.ended(&trip).await;
    assert_eq!(state.status(), SagaStatus::Completed, "{state:#?}");
    assert_eq!(state.reason(), None);
    // The history, read back in the order it was written.
    assert_eq!(crate::timeline(&state), crate::COMPLETED);
    let versions: Vec<u64> = state.history().iter().map(|h| h.version).collect();
    assert_eq!(versions, [1, 1, 2, 2, 3, 3, 4, 4]);
    assert!(state.history().windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    // Each step ran in the participant that owns it.
    for (step, participant) in [
        ("reserve", "inventory"),
        ("charge", "payments"),
        ("confirm", "inventory"),
    ] {
        assert_eq!(
            state.outputs()[step]["by"],
            participant,
            "{step}: {state:#?}"
        );
    }
}

#[tokio::test]
async fn a_trip_refused_at_its_last_step_compensates_in_reverse() {
    let d = deployed().await;
    let trip = trip_id("trip-full");
    d.publish(&[request(&trip, 120, true)]).await;

    let state = d.ended(&trip).await;
    assert_eq!(state.status(), SagaStatus::Compensated, "{state:#?}");
    assert!(
        state.reason().is_some_and(|r| r.contains("no seat left")),
        "{state:#?}"
    );
    // Refund (charge, step 1) before release (reserve, step 0).
    assert_eq!(crate::compensations(&state), [1, 0]);
    assert_eq!(crate::timeline(&state), crate::REFUSED_LAST);
    let versions: Vec<u64> = state.history().iter().map(|h| h.version).collect();
    assert_eq!(versions, [1, 1, 2, 2, 3, 3, 4, 4, 4, 5, 5, 6, 6]);
    // The ended saga is listed by the table's `finished` index.
    let listed = d
        .store
        .list(SagaStatus::Compensated, 1000)
        .await
        .expect("query the finished index");
    assert!(
        listed.iter().any(|s| s.id == trip && s.name == trip::SAGA),
        "{trip} not in {listed:?}"
    );
}

#[tokio::test]
async fn a_duplicate_start_places_nothing_new() {
    let d = deployed().await;
    let trip = trip_id("trip-twice");
    // The same trip requested twice at once (two events, as a client retry would send).
    d.publish(&[request(&trip, 120, false), request(&trip, 120, false)])
        .await;
    let ended = d.ended(&trip).await;
    assert_eq!(ended.status(), SagaStatus::Completed, "{ended:#?}");
    assert_eq!(
        crate::timeline(&ended),
        crate::COMPLETED,
        "each step ran once"
    );

    // Once more, directly: the answer is the stored saga, and nothing moved.
    let again = d.start_directly(&request(&trip, 120, false)).await;
    assert_eq!(
        again,
        Started {
            saga: trip.clone(),
            status: "completed".into(),
            version: ended.version(),
        }
    );
    // The same id with other data is another request, refused: nothing moved, and the
    // stored saga is not told.
    let refused = d
        .try_start_directly(&request(&trip, 120, true))
        .await
        .expect_err("another trip under a used id is refused");
    assert_eq!(refused["errorType"], "Lift.saga_exists", "{refused}");
    assert!(!refused.to_string().contains("completed"), "{refused}");
    assert_eq!(d.saga(&trip).await.as_ref(), Some(&ended));
}

#[tokio::test]
async fn a_request_without_a_trip_id_is_refused() {
    let d = deployed().await;
    let event = events::eventbridge(
        trip::SOURCE,
        TripRequested::TYPE,
        serde_json::to_value(request("", 10, false)).expect("envelope"),
    );
    let output = d
        .lambda
        .invoke()
        .function_name(&d.orchestrator)
        .payload(Blob::new(serde_json::to_vec(&event).expect("event")))
        .send()
        .await
        .expect("the Invoke call itself succeeds");
    let payload = String::from_utf8_lossy(output.payload().expect("payload").as_ref()).into_owned();
    assert!(output.function_error().is_some(), "{payload}");
    let error: Value = serde_json::from_str(&payload).expect("an error document");
    assert_eq!(error["errorType"], "Lift.validation_failed", "{payload}");
}
