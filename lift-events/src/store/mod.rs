//! Where saga state lives: the [`SagaStore`] trait, a DynamoDB implementation
//! ([`DynamoStore`]) and an in-memory one ([`MemoryStore`]) for tests and benchmarks. One
//! contract test suite runs against both.
//!
//! A saga is one item (one entry) holding its state, its version, its whole history and
//! the outbox of its last transition. Each transition is one conditional write of that
//! item on the version it read, so two orchestrators racing on one saga cannot both win,
//! and the outbox is stored exactly when the state change is.

mod compact;
mod dynamo;
mod memory;

use std::future::Future;

pub use dynamo::DynamoStore;
pub(crate) use dynamo::{Columns, from_parts, same_content};
pub use memory::MemoryStore;

use crate::saga::{SagaState, SagaStatus};

/// Saga state storage.
pub trait SagaStore: Send + Sync {
    /// Writes `state` if the stored saga is at `state.version() - 1` (for version 1: if
    /// no saga with that id exists).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when another write got there first (or the id is taken),
    /// with the saga as stored (DynamoDB hands it back with the failed write, so no read
    /// is needed to apply the input again); other [`StoreError`]s when the store failed.
    fn save(&self, state: &SagaState) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// [`save`](Self::save) for a transition applied to `base`, a state handed back by a
    /// participant with its reply (a [`Command::snapshot`](crate::saga::Command::snapshot))
    /// rather than read: writes only if the stored saga is `base` in content as well as in
    /// version (its outbox aside), so that a snapshot altered on its way (by a participant
    /// that dropped fields it does not know, or rounded numbers) is never written back. A
    /// mismatch is a [`StoreError::Conflict`] with the saga as stored, as a lost race is.
    ///
    /// The default checks the version only; [`DynamoStore`] and [`MemoryStore`] check the
    /// content too.
    ///
    /// # Errors
    /// As [`save`](Self::save).
    fn save_over(
        &self,
        state: &SagaState,
        base: &SagaState,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = base;
        self.save(state)
    }

    /// The saga `id`, if it exists (a strongly consistent read).
    ///
    /// # Errors
    /// [`StoreError`] when the store failed or the item does not decode.
    fn load(&self, id: &str) -> impl Future<Output = Result<Option<SagaState>, StoreError>> + Send;

    /// Up to `limit` sagas with `status`, least recently moved first.
    ///
    /// # Errors
    /// [`StoreError`] when the store failed.
    fn list(
        &self,
        status: SagaStatus,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<SagaSummary>, StoreError>> + Send;
}

/// One line of [`SagaStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SagaSummary {
    /// The saga instance.
    pub id: String,
    /// The saga's name.
    pub name: String,
    /// Its status.
    pub status: SagaStatus,
    /// Why it compensated or needs attention.
    pub reason: Option<String>,
    /// When it last moved (ms since the epoch).
    pub updated_ms: u64,
}

impl SagaSummary {
    /// The summary of `state`.
    pub fn of(state: &SagaState) -> Self {
        SagaSummary {
            id: state.id().to_owned(),
            name: state.name().to_owned(),
            status: state.status(),
            reason: state.reason().map(str::to_owned),
            updated_ms: state.updated_ms(),
        }
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The conditional write lost: the saga moved since it was read, or the id is taken.
    #[error("saga `{id}` changed since it was read")]
    Conflict {
        /// The saga.
        id: String,
        /// The saga as stored, when the store returned it with the failed write.
        current: Option<Box<SagaState>>,
    },
    /// The store throttled the call; retry later.
    #[error("the saga store throttled the call")]
    Throttled,
    /// The stored item does not decode (or the state does not encode).
    #[error("saga `{id}` does not decode: {reason}")]
    Codec {
        /// The saga.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The item would be above its limit: DynamoDB's 400 KB for a saga that has ended, 8 KB
    /// less for one that runs, so that the write ending it for attention always fits.
    #[error("saga `{id}` is too large to store ({bytes} bytes, above {limit})")]
    TooLarge {
        /// The saga.
        id: String,
        /// Its encoded size, as DynamoDB counts it.
        bytes: usize,
        /// The limit it is above.
        limit: usize,
    },
    /// A failure worth another attempt later (network, time limit, service error).
    #[error("the saga store failed in {operation}")]
    Unavailable {
        /// The store operation.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A failure another attempt will not cure (a missing table, an invalid request).
    #[error("the saga store refused {operation}")]
    Refused {
        /// The store operation.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. } | StoreError::Throttled | StoreError::Unavailable { .. }
        )
    }
}
