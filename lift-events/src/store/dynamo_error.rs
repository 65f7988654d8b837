//! DynamoDB SDK errors mapped to [`StoreError`], in one place.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

use super::StoreError;

/// Maps a DynamoDB error of `operation` on saga `id`.
pub(super) fn classify<E, R>(operation: &'static str, id: &str, error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match error.code() {
        Some("ConditionalCheckFailedException") => StoreError::Conflict { id: id.to_owned() },
        Some(
            "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded",
        ) => StoreError::Throttled,
        _ => StoreError::Unavailable {
            operation,
            source: Box::new(error),
        },
    }
}
