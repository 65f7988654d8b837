//! The registry's errors, over lift-middleware's DynamoDB groundwork
//! ([`lift_middleware::dynamo`]).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use lift_middleware::dynamo::{self, DynamoError};

/// How long one registry call may take, on top of the SDK's own limits: a registry that
/// does not answer costs a renewal or a refresh this much. An invocation waits for one
/// only to discover a service it has nothing cached for (or nothing younger than the stale
/// limit), and never past its call's deadline when it has one (a request made from a
/// handler's context has the invocation's).
const CALL_LIMIT: Duration = Duration::from_secs(2);

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
    /// A stored item does not have the registry's shape.
    #[error("a registry item cannot be read: {what}")]
    Codec {
        /// What is wrong.
        what: String,
    },
    /// DynamoDB failed: throttled, timed out, unreachable, or refused the request.
    #[error(transparent)]
    Dynamo(#[from] DynamoError),
}

impl RegistryError {
    /// Whether another attempt may succeed (throttling, a timeout, no answer).
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Dynamo(error) => error.is_retryable(),
            _ => false,
        }
    }
}

/// What a failed DynamoDB call was.
pub(crate) enum Failure {
    ConditionFailed,
    Error(RegistryError),
}

/// Maps a DynamoDB SDK error; a failed condition is left to the caller, who knows what it
/// means.
pub(crate) fn classify<E, R>(operation: &'static str, error: SdkError<E, R>) -> Failure
where
    aws_sdk_dynamodb::Error: From<E>,
    E: std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    match dynamo::classify(operation, error) {
        DynamoError::ConditionFailed { .. } => Failure::ConditionFailed,
        other => Failure::Error(RegistryError::Dynamo(other)),
    }
}

/// Runs a DynamoDB call within [`CALL_LIMIT`]; the call's own result (with its SDK error,
/// for the caller to read a failed condition's item from) when it answers in time.
pub(crate) async fn limited<T, E, R>(
    operation: &'static str,
    call: impl Future<Output = Result<T, SdkError<E, R>>>,
) -> Result<Result<T, SdkError<E, R>>, RegistryError> {
    tokio::time::timeout(CALL_LIMIT, call).await.map_err(|_| {
        RegistryError::Dynamo(DynamoError::Timeout {
            operation,
            after: CALL_LIMIT,
        })
    })
}
