//! Single flight: while one caller computes a key, the others with the same key wait for
//! its result instead of computing it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::entry::Entry;

/// The leader's result: `Some(entry)` to share, `None` when it was not cacheable.
type Outcome = Option<Arc<Entry>>;

#[derive(Default)]
pub(crate) struct Flights {
    running: Mutex<HashMap<String, watch::Receiver<Option<Outcome>>>>,
}

/// What a caller does for a key.
pub(crate) enum Join {
    /// Compute it, then [`Leader::finish`].
    Leader(Leader),
    /// Wait for the leader.
    Follower(watch::Receiver<Option<Outcome>>),
}

/// How a wait for the leader ended.
pub(crate) enum Waited {
    /// The leader shared this entry.
    Shared(Arc<Entry>),
    /// The leader's answer was not cacheable: compute your own.
    NotShared,
    /// The leader gave up (an error or a cancelled call): try to lead.
    Abandoned,
}

impl Flights {
    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Join {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(receiver) = running.get(key) {
            return Join::Follower(receiver.clone());
        }
        let (sender, receiver) = watch::channel(None);
        running.insert(key.to_owned(), receiver);
        Join::Leader(Leader {
            flights: self.clone(),
            key: key.to_owned(),
            sender,
            released: false,
        })
    }

    /// How many keys are being computed now.
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

pub(crate) async fn wait(mut receiver: watch::Receiver<Option<Outcome>>) -> Waited {
    match receiver.wait_for(Option::is_some).await {
        Ok(outcome) => match outcome.as_ref() {
            Some(Some(entry)) => Waited::Shared(entry.clone()),
            _ => Waited::NotShared,
        },
        Err(_) => Waited::Abandoned,
    }
}

/// The one caller computing a key. Dropping it without [`Leader::finish`] releases the
/// key, and its followers try again.
pub(crate) struct Leader {
    flights: Arc<Flights>,
    key: String,
    sender: watch::Sender<Option<Outcome>>,
    released: bool,
}

impl Leader {
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.release();
        self.sender.send_replace(Some(outcome));
    }

    /// Takes the key off the running list, once: a later leader of the same key must
    /// keep its own place.
    fn release(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        self.flights
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, StatusCode};
    use lift_core::Body;

    fn entry() -> Arc<Entry> {
        Arc::new(Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Body::Text("x".into()),
            stored_at: 0,
            expires_at: 10,
        })
    }

    #[tokio::test]
    async fn followers_get_the_leaders_entry() {
        let flights = Arc::new(Flights::default());
        let Join::Leader(leader) = flights.join("k") else {
            panic!("the first caller leads")
        };
        let Join::Follower(follower) = flights.join("k") else {
            panic!("the second caller follows")
        };
        let waiting = tokio::spawn(wait(follower));
        leader.finish(Some(entry()));
        assert!(
            matches!(waiting.await.unwrap(), Waited::Shared(e) if e.body == Body::Text("x".into()))
        );
        assert_eq!(flights.running(), 0);
    }

    #[tokio::test]
    async fn a_dropped_leader_lets_a_follower_lead() {
        let flights = Arc::new(Flights::default());
        let Join::Leader(leader) = flights.join("k") else {
            panic!("the first caller leads")
        };
        let Join::Follower(follower) = flights.join("k") else {
            panic!("the second caller follows")
        };
        drop(leader);
        assert!(matches!(wait(follower).await, Waited::Abandoned));
        assert!(matches!(flights.join("k"), Join::Leader(_)));
    }

    #[tokio::test]
    async fn an_uncacheable_answer_is_not_shared() {
        let flights = Arc::new(Flights::default());
        let Join::Leader(leader) = flights.join("k") else {
            panic!("the first caller leads")
        };
        let Join::Follower(follower) = flights.join("k") else {
            panic!("the second caller follows")
        };
        leader.finish(None);
        assert!(matches!(wait(follower).await, Waited::NotShared));
    }
}
