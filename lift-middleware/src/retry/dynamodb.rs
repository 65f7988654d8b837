//! A retry policy for DynamoDB calls: throttling, internal errors and transaction conflicts
//! are retried; a failed condition (or a transaction cancelled by one) never is, since
//! another attempt would fail the same way or, worse, overwrite what the condition
//! protected.
//!
//! Errors are recognised by type: map the SDK's per-operation errors into
//! `aws_sdk_dynamodb::Error` (`.map_err(aws_sdk_dynamodb::Error::from)`) in the service you
//! wrap.
//!
//! ```
//! use lift_middleware::retry::{RetryConfig, RetryLayer, dynamodb::DynamoDbPolicy};
//!
//! let layer = RetryLayer::new(RetryConfig::database()).policy(DynamoDbPolicy);
//! # let _ = layer;
//! ```

use aws_sdk_dynamodb::Error as DynamoDbError;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use lift_core::BoxError;

use super::{Decision, RetryPolicy};

/// Retries DynamoDB's transient errors and nothing else; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct DynamoDbPolicy;

/// Whether a DynamoDB error is transient.
pub fn is_transient(error: &DynamoDbError) -> bool {
    match error {
        DynamoDbError::ProvisionedThroughputExceededException(_)
        | DynamoDbError::RequestLimitExceeded(_)
        | DynamoDbError::ThrottlingException(_)
        | DynamoDbError::InternalServerError(_)
        | DynamoDbError::TransactionConflictException(_)
        | DynamoDbError::ReplicatedWriteConflictException(_) => true,
        DynamoDbError::ConditionalCheckFailedException(_)
        | DynamoDbError::TransactionCanceledException(_) => false,
        // An error without a modelled variant: decide on its code; none at all means the
        // request got no answer (timeout, connection), which is worth another attempt.
        other => match other.code() {
            None => true,
            Some(code) => matches!(
                code,
                "ServiceUnavailable" | "ThrottlingException" | "InternalFailure"
            ),
        },
    }
}

impl<Res> RetryPolicy<Res> for DynamoDbPolicy {
    fn decide(&self, result: &Result<Res, BoxError>) -> Decision {
        match result {
            Ok(_) => Decision::Stop,
            Err(error) => match error.downcast_ref::<DynamoDbError>() {
                Some(dynamodb) if is_transient(dynamodb) => Decision::Retry { after: None },
                Some(_) => Decision::Stop,
                None => match error.downcast_ref::<lift_core::Error>() {
                    Some(lift_core::Error::Timeout { .. }) => Decision::Retry { after: None },
                    _ => Decision::Stop,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::error::{
        ConditionalCheckFailedException, ProvisionedThroughputExceededException,
        TransactionConflictException,
    };

    fn decide(error: DynamoDbError) -> Decision {
        RetryPolicy::<()>::decide(&DynamoDbPolicy, &Err(Box::new(error)))
    }

    #[test]
    fn throttling_is_retried_and_conditions_are_not() {
        let throttled = ProvisionedThroughputExceededException::builder()
            .message("slow down")
            .build();
        assert_eq!(
            decide(DynamoDbError::ProvisionedThroughputExceededException(
                throttled
            )),
            Decision::Retry { after: None }
        );
        let conflict = TransactionConflictException::builder().build();
        assert_eq!(
            decide(DynamoDbError::TransactionConflictException(conflict)),
            Decision::Retry { after: None }
        );
        let condition = ConditionalCheckFailedException::builder()
            .message("the condition failed")
            .build();
        assert_eq!(
            decide(DynamoDbError::ConditionalCheckFailedException(condition)),
            Decision::Stop
        );
        assert_eq!(
            RetryPolicy::<()>::decide(&DynamoDbPolicy, &Ok(())),
            Decision::Stop
        );
    }
}
