//! An in-memory [`SagaStore`], for tests and benchmarks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{SagaStore, SagaSummary, StoreError};
use crate::saga::{SagaState, SagaStatus};

/// Sagas in a map behind a lock, with the same conditional-write contract and item size
/// limit as [`DynamoStore`](super::DynamoStore): each write encodes the item DynamoDB would
/// store, to measure it. Clones share the map.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    sagas: Arc<Mutex<HashMap<String, SagaState>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// How many sagas it holds.
    pub fn len(&self) -> usize {
        self.sagas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SagaStore for MemoryStore {
    async fn save(&self, state: &SagaState) -> Result<(), StoreError> {
        // The item DynamoDB would store, for its size: the same saga is refused by both.
        super::dynamo::encode(state)?;
        let mut sagas = self.sagas.lock().unwrap_or_else(PoisonError::into_inner);
        let stored = sagas.get(state.id()).map(SagaState::version);
        let expected = state.version().checked_sub(1).filter(|v| *v > 0);
        if stored != expected {
            return Err(StoreError::Conflict {
                id: state.id().to_owned(),
                current: sagas.get(state.id()).cloned().map(Box::new),
            });
        }
        sagas.insert(state.id().to_owned(), state.clone());
        Ok(())
    }

    async fn save_over(&self, state: &SagaState, base: &SagaState) -> Result<(), StoreError> {
        {
            let sagas = self.sagas.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(stored) = sagas.get(state.id())
                && !super::same_content(stored, base)?
            {
                return Err(StoreError::Conflict {
                    id: state.id().to_owned(),
                    current: Some(Box::new(stored.clone())),
                });
            }
        }
        // The version check, and the write, under the lock again: nothing can have moved
        // the saga past `base` unseen, since a write needs the next version.
        self.save(state).await
    }

    async fn load(&self, id: &str) -> Result<Option<SagaState>, StoreError> {
        let sagas = self.sagas.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(sagas.get(id).cloned())
    }

    async fn list(&self, status: SagaStatus, limit: usize) -> Result<Vec<SagaSummary>, StoreError> {
        let sagas = self.sagas.lock().unwrap_or_else(PoisonError::into_inner);
        let mut found: Vec<SagaSummary> = sagas
            .values()
            .filter(|s| s.status() == status)
            .map(SagaSummary::of)
            .collect();
        found.sort_by(|a, b| a.updated_ms.cmp(&b.updated_ms).then(a.id.cmp(&b.id)));
        found.truncate(limit);
        Ok(found)
    }
}
