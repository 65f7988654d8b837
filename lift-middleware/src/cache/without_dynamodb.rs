//! The cache's DynamoDB store when the `dynamodb` feature is off: types that cannot be
//! built, so the cache code is the same with the feature on or off and every remote path
//! is provably unreachable.

use super::CacheError;
use super::entry::Entry;

/// No table can be configured without the `dynamodb` feature.
pub(crate) enum RemoteConfig {}

impl RemoteConfig {
    pub(crate) fn table(&self) -> &str {
        match *self {}
    }
}

/// No DynamoDB store exists without the `dynamodb` feature.
pub(crate) enum DynamoDbStore {}

impl DynamoDbStore {
    pub(crate) fn new(config: RemoteConfig) -> DynamoDbStore {
        match config {}
    }

    pub(crate) async fn get(&self, _: &str, _: &str) -> Result<Option<Entry>, CacheError> {
        match *self {}
    }

    pub(crate) async fn put(&self, _: &str, _: &str, _: &Entry) -> Result<bool, CacheError> {
        match *self {}
    }

    pub(crate) async fn invalidate(&self, _: &str, _: &str, _: u64) -> Result<(), CacheError> {
        match *self {}
    }

    pub(crate) async fn invalidate_prefix(
        &self,
        _: &str,
        _: &str,
        _: u64,
    ) -> Result<usize, CacheError> {
        match *self {}
    }
}
