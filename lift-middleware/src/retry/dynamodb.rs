//! A retry policy for DynamoDB calls: throttling, internal errors and transaction conflicts
//! are retried; a failed condition (or a transaction cancelled by one) never is, since
//! another attempt would fail the same way or, worse, overwrite what the condition
//! protected.
//!
//! Errors are recognised by type: a [`DynamoError`] (what Lift's stores and
//! [`crate::dynamo::classify`] return), or the SDK's per-operation errors mapped into
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

use crate::dynamo::DynamoError;

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
            Err(error) => {
                let transient = if let Some(typed) = dynamo_error(error.as_ref()) {
                    typed.is_retryable()
                } else if let Some(dynamodb) = error.downcast_ref::<DynamoDbError>() {
                    is_transient(dynamodb)
                } else {
                    matches!(
                        error.downcast_ref::<lift_core::Error>(),
                        Some(lift_core::Error::Timeout { .. })
                    )
                };
                if transient {
                    Decision::Retry { after: None }
                } else {
                    Decision::Stop
                }
            }
        }
    }
}

/// A [`DynamoError`] carried by `error`: the error itself, or the source of a Lift
/// internal error.
fn dynamo_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a DynamoError> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(typed) = error.downcast_ref::<DynamoError>() {
            return Some(typed);
        }
        current = error.source();
    }
    None
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

    #[test]
    fn typed_store_errors_are_recognised_even_inside_an_internal_error() {
        let throttled = || DynamoError::Throttled {
            operation: "PutItem",
            code: "ThrottlingException".into(),
        };
        let decide_boxed =
            |error: BoxError| RetryPolicy::<()>::decide(&DynamoDbPolicy, &Err(error));
        assert_eq!(
            decide_boxed(Box::new(throttled())),
            Decision::Retry { after: None }
        );
        assert_eq!(
            decide_boxed(Box::new(lift_core::Error::internal(throttled()))),
            Decision::Retry { after: None }
        );
        let condition = DynamoError::ConditionFailed {
            operation: "PutItem",
            item: None,
        };
        assert_eq!(decide_boxed(Box::new(condition)), Decision::Stop);
    }
}
