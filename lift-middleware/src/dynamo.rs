//! One DynamoDB groundwork for every store Lift keeps in a table (idempotency, cache,
//! shared circuit breaker, rate limit, tenant table, and the stores built on them): a typed
//! error that keeps throttling, a failed condition, a cancelled transaction, an invalid
//! request and the rest apart; item encoding with `serde_dynamo`; and a per-call time limit.
//!
//! Every SDK error of a DynamoDB operation becomes a [`DynamoError`] through
//! [`classify`]. A caller then decides on the variant, never on message text: a
//! [`DynamoError::ConditionFailed`] is an answer (someone else wrote first), a
//! [`DynamoError::Throttled`] is worth another attempt after a pause, a
//! [`DynamoError::Validation`] never is. [`DynamoError::is_retryable`] says which is which,
//! and `retry::dynamodb::DynamoDbPolicy` uses it.
//!
//! ```no_run
//! use aws_sdk_dynamodb::types::AttributeValue;
//! use lift_middleware::dynamo::{self, DynamoError};
//! use std::time::Duration;
//!
//! # async fn example(client: aws_sdk_dynamodb::Client) -> Result<(), DynamoError> {
//! let put = client
//!     .put_item()
//!     .table_name("orders")
//!     .item("pk", AttributeValue::S("o-1".into()))
//!     .condition_expression("attribute_not_exists(pk)")
//!     .send();
//! match dynamo::within("PutItem", Duration::from_millis(300), put).await {
//!     Ok(_) => println!("inserted"),
//!     Err(DynamoError::ConditionFailed { .. }) => println!("already there"),
//!     Err(error) if error.is_retryable() => println!("try again later: {error}"),
//!     Err(error) => return Err(error),
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use lift_core::BoxError;
use lift_core::http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An item, as the DynamoDB SDK represents it.
pub type Item = HashMap<String, AttributeValue>;

/// What went wrong in a DynamoDB call, in the terms a store decides on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DynamoError {
    /// DynamoDB refused the call for capacity (`ProvisionedThroughputExceededException`,
    /// `ThrottlingException`, `RequestLimitExceeded`). Retry after a pause.
    #[error("DynamoDB {operation} was throttled ({code})")]
    Throttled {
        /// The operation, e.g. `PutItem`.
        operation: &'static str,
        /// The error code DynamoDB answered with.
        code: String,
    },
    /// The write's condition expression did not hold: another writer got there first, or
    /// the item is not in the state the write expected. Never retried as is.
    #[error("DynamoDB {operation}: the condition failed")]
    ConditionFailed {
        /// The operation, e.g. `UpdateItem`.
        operation: &'static str,
        /// The item as stored, when the call asked for it with
        /// `ReturnValuesOnConditionCheckFailure::AllOld`.
        item: Option<Box<Item>>,
    },
    /// A `TransactWriteItems` was cancelled; `reasons` has one code per action, in order
    /// (`None` for the actions that were not the cause).
    #[error(
        "DynamoDB {operation}: the transaction was cancelled ({})",
        Reasons(reasons)
    )]
    TransactionCanceled {
        /// The operation, `TransactWriteItems` or `TransactGetItems`.
        operation: &'static str,
        /// Each action's cancellation code (`ConditionalCheckFailed`, `ThrottlingError`,
        /// `TransactionConflict`, ...), or `None`.
        reasons: Vec<Option<String>>,
    },
    /// Another transaction was writing the same item (`TransactionConflictException`,
    /// `ReplicatedWriteConflictException`). Retry.
    #[error("DynamoDB {operation}: a concurrent transaction conflicted")]
    Conflict {
        /// The operation.
        operation: &'static str,
    },
    /// The request is malformed for this table (`ValidationException`: a wrong key, an
    /// expression that does not parse, an item over 400 KB). Never retried.
    #[error("DynamoDB {operation} refused the request: {message}")]
    Validation {
        /// The operation.
        operation: &'static str,
        /// DynamoDB's explanation.
        message: String,
    },
    /// The table or index does not exist (or is not `ACTIVE` yet).
    #[error("DynamoDB {operation}: the table or index was not found: {message}")]
    ResourceNotFound {
        /// The operation.
        operation: &'static str,
        /// DynamoDB's explanation.
        message: String,
    },
    /// No answer within the call's own time limit ([`within`]).
    #[error("DynamoDB {operation} got no answer within {after:?}")]
    Timeout {
        /// The operation.
        operation: &'static str,
        /// The limit that passed.
        after: Duration,
    },
    /// The request got no answer from DynamoDB: a connection or I/O failure, the SDK's own
    /// timeout, an unreadable response. Retry.
    #[error("DynamoDB {operation} got no answer")]
    Transport {
        /// The operation.
        operation: &'static str,
        /// The SDK's error.
        #[source]
        source: BoxError,
    },
    /// An item that does not decode into the expected type, or a value that does not
    /// encode as an item.
    #[error("a DynamoDB item does not match its type")]
    Codec(#[source] serde_dynamo::Error),
    /// Any other answer (`InternalServerError`, an access error, ...), with its code.
    #[error("DynamoDB {operation} failed ({})", code.as_deref().unwrap_or("no code"))]
    Service {
        /// The operation.
        operation: &'static str,
        /// The error code, when DynamoDB gave one.
        code: Option<String>,
        /// The SDK's error.
        #[source]
        source: BoxError,
    },
}

struct Reasons<'a>(&'a [Option<String>]);

impl fmt::Display for Reasons<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, reason) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(reason.as_deref().unwrap_or("None"))?;
        }
        Ok(())
    }
}

impl DynamoError {
    /// Whether another attempt of the same call may succeed: throttling, a transaction
    /// conflict, no answer, a timeout, a server-side error, or a transaction cancelled only
    /// for those reasons. A failed condition, a validation error or a missing table never
    /// succeed on a retry.
    pub fn is_retryable(&self) -> bool {
        match self {
            DynamoError::Throttled { .. }
            | DynamoError::Conflict { .. }
            | DynamoError::Timeout { .. }
            | DynamoError::Transport { .. } => true,
            DynamoError::TransactionCanceled { reasons, .. } => {
                let mut causes = reasons.iter().flatten().filter(|code| *code != "None");
                let mut any = false;
                let transient = causes.all(|code| {
                    any = true;
                    matches!(
                        code.as_str(),
                        "ThrottlingError" | "ProvisionedThroughputExceeded" | "TransactionConflict"
                    )
                });
                any && transient
            }
            DynamoError::Service { code, .. } => matches!(
                code.as_deref(),
                Some("InternalServerError" | "InternalFailure" | "ServiceUnavailable")
            ),
            DynamoError::ConditionFailed { .. }
            | DynamoError::Validation { .. }
            | DynamoError::ResourceNotFound { .. }
            | DynamoError::Codec(_) => false,
        }
    }

    /// Whether DynamoDB refused the call for capacity (directly, or as the reason a
    /// transaction was cancelled).
    pub fn is_throttled(&self) -> bool {
        match self {
            DynamoError::Throttled { .. } => true,
            DynamoError::TransactionCanceled { reasons, .. } => {
                reasons.iter().flatten().any(|code| {
                    matches!(
                        code.as_str(),
                        "ThrottlingError" | "ProvisionedThroughputExceeded"
                    )
                })
            }
            _ => false,
        }
    }

    /// Whether a condition expression failed (directly, or as the reason a transaction was
    /// cancelled).
    pub fn is_condition_failed(&self) -> bool {
        match self {
            DynamoError::ConditionFailed { .. } => true,
            DynamoError::TransactionCanceled { reasons, .. } => reasons
                .iter()
                .flatten()
                .any(|code| code == "ConditionalCheckFailed"),
            _ => false,
        }
    }

    /// The operation that failed (`None` for a codec error).
    pub fn operation(&self) -> Option<&'static str> {
        match self {
            DynamoError::Throttled { operation, .. }
            | DynamoError::ConditionFailed { operation, .. }
            | DynamoError::TransactionCanceled { operation, .. }
            | DynamoError::Conflict { operation }
            | DynamoError::Validation { operation, .. }
            | DynamoError::ResourceNotFound { operation, .. }
            | DynamoError::Timeout { operation, .. }
            | DynamoError::Transport { operation, .. }
            | DynamoError::Service { operation, .. } => Some(operation),
            DynamoError::Codec(_) => None,
        }
    }
}

/// A handler's `?` on a store call: a failed condition is a 409 `conflict` (an answer:
/// the item changed or already exists); anything else an internal error (500, whose body
/// says nothing of the cause) that keeps the [`DynamoError`] as its source, so that the
/// log shows it and `retry::dynamodb::DynamoDbPolicy` still recognises throttling in it.
impl From<DynamoError> for lift_core::Error {
    fn from(error: DynamoError) -> Self {
        match error {
            DynamoError::ConditionFailed { .. } => lift_core::Error::new(
                StatusCode::CONFLICT,
                "conflict",
                "the item changed or already exists",
            ),
            other => lift_core::Error::internal(other),
        }
    }
}

/// Maps an SDK error of `operation` (e.g. `"PutItem"`) to a [`DynamoError`]: the error
/// of any DynamoDB operation (`PutItemError`, `QueryError`, `TransactWriteItemsError`, ...).
pub fn classify<E, R>(operation: &'static str, error: SdkError<E, R>) -> DynamoError
where
    aws_sdk_dynamodb::Error: From<E>,
    R: fmt::Debug + Send + Sync + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    match error {
        SdkError::ServiceError(context) => {
            classify_service(operation, aws_sdk_dynamodb::Error::from(context.into_err()))
        }
        SdkError::ConstructionFailure(_) => DynamoError::Validation {
            operation,
            message: "the request could not be built".to_owned(),
        },
        other => DynamoError::Transport {
            operation,
            source: Box::new(other),
        },
    }
}

fn classify_service(operation: &'static str, error: aws_sdk_dynamodb::Error) -> DynamoError {
    use aws_sdk_dynamodb::Error as E;
    let message = |error: &E| error.message().unwrap_or_default().to_owned();
    match error {
        E::ConditionalCheckFailedException(e) => DynamoError::ConditionFailed {
            operation,
            item: e.item.map(Box::new),
        },
        E::TransactionCanceledException(e) => DynamoError::TransactionCanceled {
            operation,
            reasons: e
                .cancellation_reasons()
                .iter()
                .map(|reason| reason.code().map(str::to_owned))
                .collect(),
        },
        E::ProvisionedThroughputExceededException(_) => DynamoError::Throttled {
            operation,
            code: "ProvisionedThroughputExceededException".to_owned(),
        },
        E::ThrottlingException(_) => DynamoError::Throttled {
            operation,
            code: "ThrottlingException".to_owned(),
        },
        E::RequestLimitExceeded(_) => DynamoError::Throttled {
            operation,
            code: "RequestLimitExceeded".to_owned(),
        },
        E::TransactionConflictException(_) | E::ReplicatedWriteConflictException(_) => {
            DynamoError::Conflict { operation }
        }
        E::ResourceNotFoundException(_) => DynamoError::ResourceNotFound {
            message: message(&error),
            operation,
        },
        other => match other.code() {
            // Not a modelled variant of every operation: recognised by its code.
            Some("ValidationException") => DynamoError::Validation {
                message: message(&other),
                operation,
            },
            Some(code @ ("ThrottlingException" | "ProvisionedThroughputExceededException")) => {
                DynamoError::Throttled {
                    operation,
                    code: code.to_owned(),
                }
            }
            code => DynamoError::Service {
                operation,
                code: code.map(str::to_owned),
                source: Box::new(other),
            },
        },
    }
}

/// Sends a DynamoDB call with a time limit of its own, on top of the SDK's: `call` is the
/// SDK's `send()` future. An answer that takes longer is [`DynamoError::Timeout`], so a
/// store that does not answer costs a caller `limit`, not the SDK's retries.
///
/// # Errors
/// The call's error, classified ([`classify`]), or [`DynamoError::Timeout`].
pub async fn within<T, E, R>(
    operation: &'static str,
    limit: Duration,
    call: impl Future<Output = Result<T, SdkError<E, R>>>,
) -> Result<T, DynamoError>
where
    aws_sdk_dynamodb::Error: From<E>,
    E: std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(|error| classify(operation, error)),
        Err(_) => Err(DynamoError::Timeout {
            operation,
            after: limit,
        }),
    }
}

/// Sends a DynamoDB call without a time limit of Lift's own, classifying its error.
///
/// # Errors
/// The call's error, classified ([`classify`]).
pub async fn send<T, E, R>(
    operation: &'static str,
    call: impl Future<Output = Result<T, SdkError<E, R>>>,
) -> Result<T, DynamoError>
where
    aws_sdk_dynamodb::Error: From<E>,
    E: std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    call.await.map_err(|error| classify(operation, error))
}

/// Encodes `value` (a struct or map) as an item.
///
/// # Errors
/// [`DynamoError::Codec`] when `value` is not a map-like value.
pub fn to_item<T: Serialize + ?Sized>(value: &T) -> Result<Item, DynamoError> {
    serde_dynamo::to_item(value).map_err(DynamoError::Codec)
}

/// Decodes an item into `T`.
///
/// # Errors
/// [`DynamoError::Codec`] when the item does not match `T`.
pub fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, DynamoError> {
    serde_dynamo::from_item(item).map_err(DynamoError::Codec)
}

/// A string attribute of `item`, if it has one.
pub fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)?.as_s().ok().map(String::as_str)
}

/// A number attribute of `item` read as `u64`, if it has one that fits.
pub fn get_u64(item: &Item, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// DynamoDB's item size limit: 400 KB, attribute names included.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// The size DynamoDB counts for `item` against [`MAX_ITEM_BYTES`] (and bills capacity
/// by): each attribute's name and value, by the rules of the DynamoDB Developer Guide's
/// "Item sizes and formats". A number counts as it is stored: a byte per pair of digits
/// aligned on the decimal point, zero pairs at either end left out, one byte more, and one
/// more again when it is negative (the Guide's "about one byte per two significant digits,
/// plus one"); one in exponent notation counts one byte per character, plus two.
pub fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn value_size(value: &AttributeValue) -> usize {
    let number = |n: &String| number_size(n);
    let nested = |elements: usize| 3 + elements;
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Ss(set) => set.iter().map(String::len).sum(),
        AttributeValue::Ns(set) => set.iter().map(number).sum(),
        AttributeValue::Bs(set) => set.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(list) => nested(list.len()) + list.iter().map(value_size).sum::<usize>(),
        AttributeValue::M(map) => nested(map.len()) + item_size(map),
        // BOOL, NULL, and any kind a later SDK adds (counted as small as these).
        _ => 1,
    }
}

/// The size of the number `n` (see [`item_size`]).
fn number_size(n: &str) -> usize {
    let negative = n.starts_with('-');
    let unsigned = n.trim_start_matches(['-', '+']);
    if unsigned.contains(['e', 'E']) {
        return n.len() + 2;
    }
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    // The digits in pairs aligned on the decimal point: a zero before an odd integer part,
    // after an odd fraction.
    let digits: Vec<u8> = std::iter::repeat_n(b'0', int.len() % 2)
        .chain(int.bytes())
        .chain(frac.bytes())
        .chain(std::iter::repeat_n(b'0', frac.len() % 2))
        .collect();
    let pairs: Vec<&[u8]> = digits.chunks(2).collect();
    let significant = match (
        pairs.iter().position(|p| *p != b"00"),
        pairs.iter().rposition(|p| *p != b"00"),
    ) {
        (Some(first), Some(last)) => last - first + 1,
        _ => 1,
    };
    significant + 1 + usize::from(negative)
}

/// A random token naming one conditional write, stored in the item it writes: when the
/// SDK sends the write again after an answer that was lost, and the condition fails on
/// the item just written, the token tells the writer it was its own.
pub(crate) fn write_token() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// Whether `item` carries `token` in `attr`: the write that stored it was the caller's.
pub(crate) fn holds_token(item: Option<&Item>, attr: &str, token: &str) -> bool {
    item.and_then(|item| item.get(attr))
        .and_then(|value| value.as_s().ok())
        .is_some_and(|stored| stored == token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    use aws_sdk_dynamodb::types::CancellationReason;
    use aws_sdk_dynamodb::types::error::{
        ConditionalCheckFailedException, ProvisionedThroughputExceededException,
        TransactionCanceledException,
    };

    /// Sizes the local emulator gave each number (the largest padding it stored beside
    /// it), which follow DynamoDB's storage rule.
    #[test]
    fn numbers_count_as_stored() {
        for (number, size) in [
            ("5", 2),
            ("-5", 3),
            ("-1.5", 4),
            ("100.5", 4),
            ("-0.25", 3),
            ("1234567", 5),
            ("10", 2),
            ("1700000000123", 8),
            ("0.001", 2),
            ("100", 2),
        ] {
            assert_eq!(number_size(number), size, "{number}");
        }
    }

    #[test]
    fn an_item_counts_its_names_and_values_as_dynamodb_does() {
        use aws_sdk_dynamodb::primitives::Blob;
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let n = |v: &str| AttributeValue::N(v.to_owned());
        // Worked by hand from the Developer Guide's rules.
        let item = Item::from([
            ("pk".to_owned(), s("order-1")), // 2 + 7
            ("qty".to_owned(), n("12345")),  // 3 + (01 23 45) + 1
            ("neg".to_owned(), n("-1.5")),   // 3 + (01 . 50) + 1 + 1
            ("bin".to_owned(), AttributeValue::B(Blob::new(vec![0; 10]))), // 3 + 10
            ("ok".to_owned(), AttributeValue::Bool(true)), // 2 + 1
            ("none".to_owned(), AttributeValue::Null(true)), // 4 + 1
            (
                "tags".to_owned(),
                AttributeValue::Ss(vec!["ab".into(), "cde".into()]),
            ), // 4 + 5
            (
                "ns".to_owned(),
                AttributeValue::Ns(vec!["1".into(), "100".into()]),
            ), // 2 + 2 + (01 00, its zero pair left out) 2
            // 4 + 3 + 2 elements + ("xy" 2) + (number 2)
            ("list".to_owned(), AttributeValue::L(vec![s("xy"), n("7")])),
            // 1 + 3 + 1 element + (name 1 + value 3)
            (
                "m".to_owned(),
                AttributeValue::M(Item::from([("k".to_owned(), s("abc"))])),
            ),
            ("empty".to_owned(), AttributeValue::M(Item::new())), // 5 + 3
        ]);
        let expected = 9 + 7 + 7 + 13 + 3 + 5 + 9 + 6 + 13 + 9 + 8;
        assert_eq!(item_size(&item), expected);
        assert_eq!(item_size(&Item::new()), 0);
    }

    #[test]
    fn a_failed_condition_keeps_the_stored_item_and_is_not_retried() {
        let stored = Item::from([("pk".to_owned(), AttributeValue::S("a".into()))]);
        let error = PutItemError::ConditionalCheckFailedException(
            ConditionalCheckFailedException::builder()
                .message("no")
                .set_item(Some(stored.clone()))
                .build(),
        );
        let classified = classify_service("PutItem", error.into());
        assert!(classified.is_condition_failed());
        assert!(!classified.is_retryable());
        match classified {
            DynamoError::ConditionFailed { item, operation } => {
                assert_eq!(operation, "PutItem");
                assert_eq!(item.as_deref(), Some(&stored));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn throttling_is_retryable_and_says_so() {
        let error = PutItemError::ProvisionedThroughputExceededException(
            ProvisionedThroughputExceededException::builder()
                .message("slow down")
                .build(),
        );
        let classified = classify_service("PutItem", error.into());
        assert!(classified.is_throttled());
        assert!(classified.is_retryable());
        assert!(!classified.is_condition_failed());
        let lift: lift_core::Error = classified.into();
        assert_eq!(lift.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let source = std::error::Error::source(&lift).expect("the store error");
        assert!(
            source
                .downcast_ref::<DynamoError>()
                .is_some_and(DynamoError::is_throttled)
        );
    }

    fn cancelled(codes: &[&str]) -> DynamoError {
        let reasons = codes
            .iter()
            .map(|code| CancellationReason::builder().code(*code).build())
            .collect();
        let error = TransactWriteItemsError::TransactionCanceledException(
            TransactionCanceledException::builder()
                .set_cancellation_reasons(Some(reasons))
                .build(),
        );
        classify_service("TransactWriteItems", error.into())
    }

    #[test]
    fn a_cancelled_transaction_is_retried_only_for_transient_reasons() {
        let condition = cancelled(&["None", "ConditionalCheckFailed"]);
        assert!(condition.is_condition_failed());
        assert!(!condition.is_retryable());
        assert!(
            condition
                .to_string()
                .contains("None, ConditionalCheckFailed")
        );

        let throttled = cancelled(&["ThrottlingError", "None"]);
        assert!(throttled.is_throttled());
        assert!(throttled.is_retryable());

        let conflict = cancelled(&["TransactionConflict"]);
        assert!(conflict.is_retryable());
        assert!(!conflict.is_condition_failed());

        let mixed = cancelled(&["TransactionConflict", "ConditionalCheckFailed"]);
        assert!(!mixed.is_retryable());
    }

    #[test]
    fn a_condition_failure_is_a_conflict_for_a_handler() {
        let error = DynamoError::ConditionFailed {
            operation: "PutItem",
            item: None,
        };
        let lift: lift_core::Error = error.into();
        assert_eq!(lift.status(), StatusCode::CONFLICT);
        let validation = DynamoError::Validation {
            operation: "PutItem",
            message: "bad key".into(),
        };
        let lift: lift_core::Error = validation.into();
        assert_eq!(lift.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_does_not_answer_times_out() {
        let never = std::future::pending::<Result<(), SdkError<PutItemError, ()>>>();
        let error = within("PutItem", Duration::from_millis(250), never)
            .await
            .unwrap_err();
        assert!(matches!(
            error,
            DynamoError::Timeout { after, .. } if after == Duration::from_millis(250)
        ));
        assert!(error.is_retryable());
    }

    #[test]
    fn items_round_trip_through_serde() {
        #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
        struct Row {
            pk: String,
            n: u64,
        }
        let row = Row {
            pk: "a".into(),
            n: 7,
        };
        let item = to_item(&row).unwrap();
        assert_eq!(get_s(&item, "pk"), Some("a"));
        assert_eq!(get_u64(&item, "n"), Some(7));
        assert_eq!(from_item::<Row>(item).unwrap(), row);
        let bad = Item::from([("pk".to_owned(), AttributeValue::N("1".into()))]);
        assert!(matches!(from_item::<Row>(bad), Err(DynamoError::Codec(_))));
    }
}
