//! The registry's errors, and the one place DynamoDB SDK errors are mapped to them.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use lift_core::BoxError;

/// A registry operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The instance was deregistered; the write was refused.
    #[error("instance `{id}` of `{service}` was deregistered")]
    Deregistered {
        /// The service.
        service: String,
        /// The instance.
        id: String,
    },
    /// The instance does not exist.
    #[error("instance `{id}` of `{service}` does not exist")]
    NotFound {
        /// The service.
        service: String,
        /// The instance.
        id: String,
    },
    /// The table throttled the request.
    #[error("`{operation}` was throttled")]
    Throttled {
        /// The DynamoDB operation.
        operation: &'static str,
    },
    /// No answer in time.
    #[error("`{operation}` timed out")]
    Timeout {
        /// The DynamoDB operation.
        operation: &'static str,
    },
    /// The request did not get through (connection, DNS, dispatch).
    #[error("`{operation}` failed in transport")]
    Transport {
        /// The DynamoDB operation.
        operation: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A stored item does not have the registry's shape.
    #[error("a registry item cannot be read: {what}")]
    Codec {
        /// What is wrong.
        what: String,
    },
    /// Any other failure (validation, missing table, access denied).
    #[error("`{operation}` failed")]
    Other {
        /// The DynamoDB operation.
        operation: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

impl RegistryError {
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RegistryError::Throttled { .. }
                | RegistryError::Timeout { .. }
                | RegistryError::Transport { .. }
        )
    }
}

/// What a failed DynamoDB call was.
pub(crate) enum Failure {
    ConditionFailed,
    Error(RegistryError),
}

/// Maps a DynamoDB SDK error; a failed condition is left to the caller, who knows what it
/// means.
pub(crate) fn classify<E>(operation: &'static str, error: SdkError<E>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &error {
        SdkError::TimeoutError(_) => {
            return Failure::Error(RegistryError::Timeout { operation });
        }
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            return Failure::Error(RegistryError::Transport {
                operation,
                source: Box::new(error),
            });
        }
        _ => {}
    }
    match error.code() {
        Some("ConditionalCheckFailedException") => Failure::ConditionFailed,
        Some(
            "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded",
        ) => Failure::Error(RegistryError::Throttled { operation }),
        Some("InternalServerError" | "ServiceUnavailable" | "InternalFailure") => {
            Failure::Error(RegistryError::Transport {
                operation,
                source: Box::new(error),
            })
        }
        _ => Failure::Error(RegistryError::Other {
            operation,
            source: Box::new(error),
        }),
    }
}
