//! What counts as a failure, and what a request tells middleware about itself.

use std::time::{Duration, SystemTime};

use lift_core::{BoxError, Context, Error};

/// What middleware reads of a response: its status, and when it says to retry.
pub trait ResponseStatus {
    /// The HTTP status code, if the response has one.
    fn status_code(&self) -> Option<u16>;
    /// The `Retry-After` the response asks for, if any (in seconds).
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

impl<B> ResponseStatus for http::Response<B> {
    fn status_code(&self) -> Option<u16> {
        Some(self.status().as_u16())
    }
    fn retry_after(&self) -> Option<Duration> {
        self.headers()
            .get(http::header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    }
}

/// Decides whether a call's result is a failure (for breakers) or worth retrying.
pub trait Classifier<Res>: Send + Sync + 'static {
    /// Whether `result` is a failure.
    fn is_failure(&self, result: &Result<Res, BoxError>) -> bool;
}

impl<Res, F> Classifier<Res> for F
where
    F: Fn(&Result<Res, BoxError>) -> bool + Send + Sync + 'static,
{
    fn is_failure(&self, result: &Result<Res, BoxError>) -> bool {
        self(result)
    }
}

/// The default failure classifier: errors (timeouts and transport errors included) and 5xx
/// responses are failures; client errors (4xx, or a Lift error with a 4xx status) are not.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl<Res: ResponseStatus> Classifier<Res> for DefaultClassifier {
    fn is_failure(&self, result: &Result<Res, BoxError>) -> bool {
        match result {
            Ok(response) => response.status_code().is_some_and(|s| s >= 500),
            Err(error) => !is_client_error(error),
        }
    }
}

/// Whether a boxed error is the request's own fault rather than the dependency's: a Lift
/// error with a 4xx status, or (with the `dynamodb` feature) a DynamoDB condition that did
/// not hold or a request DynamoDB refused as invalid, found anywhere in its chain. A
/// breaker counting them would open on a healthy table whenever writers race.
pub fn is_client_error(error: &BoxError) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
    while let Some(current) = next {
        if let Some(lift) = current.downcast_ref::<Error>() {
            return lift.is_client_error();
        }
        #[cfg(feature = "dynamodb")]
        if let Some(dynamo) = current.downcast_ref::<crate::dynamo::DynamoError>() {
            return matches!(
                dynamo,
                crate::dynamo::DynamoError::ConditionFailed { .. }
                    | crate::dynamo::DynamoError::Validation { .. }
            );
        }
        next = current.source();
    }
    false
}

/// What middleware may ask of a request: its deadline, whether replaying it is safe, and
/// its priority. A Lift [`Context`] answers from the invocation; implement it for your own
/// request types (every method has a default).
pub trait RequestInfo {
    /// When the caller stops waiting (the Lambda deadline), if known.
    fn deadline(&self) -> Option<SystemTime> {
        None
    }
    /// Whether sending the request twice has the effect of sending it once (the retry
    /// layer retries only these). By default, no: a request type says so for itself.
    fn is_idempotent(&self) -> bool {
        false
    }
    /// The request's priority, for bulkheads and load shedding.
    fn priority(&self) -> Priority {
        Priority::Normal
    }
}

/// How much a request matters when capacity is short: low is shed first, high may use a
/// reserved share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[non_exhaustive]
pub enum Priority {
    /// Shed first, never waits.
    Low,
    /// The default.
    #[default]
    Normal,
    /// May use capacity reserved for it.
    High,
}

impl Priority {
    /// Reads a priority from a header value (`low`, `normal`, `high`).
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        [
            ("low", Priority::Low),
            ("normal", Priority::Normal),
            ("high", Priority::High),
        ]
        .into_iter()
        .find_map(|(name, priority)| value.eq_ignore_ascii_case(name).then_some(priority))
    }
}

/// The header a request's priority is read from, parsed once: a lookup by `&str` would
/// check and lower-case the name on every call, and the load shedder and the bulkhead
/// both ask.
const PRIORITY_HEADER: http::HeaderName = http::HeaderName::from_static("x-priority");

fn method_is_idempotent(method: &http::Method) -> bool {
    !matches!(*method, http::Method::POST | http::Method::PATCH)
}

impl RequestInfo for Context {
    fn deadline(&self) -> Option<SystemTime> {
        Context::deadline(self)
    }
    /// An HTTP request by its method (all but POST and PATCH); a record of a queue, stream,
    /// topic, bus or schedule, which its source delivers again after a failure anyway, so
    /// its handler already takes repeats; never a WebSocket message, which nothing
    /// delivers again (a handler that broadcasts would broadcast twice).
    fn is_idempotent(&self) -> bool {
        match self.http() {
            Some(request) => method_is_idempotent(request.method()),
            None => self.source() != lift_core::Source::WebSocket,
        }
    }
    /// A [`Priority`] a layer put in the Context's extensions (one that knows the caller:
    /// [`crate::service_auth`] for verified services, or your own, by plan or role), else
    /// the `x-priority` header's `low` or `normal`, else normal. The header is the client's
    /// own word: it may lower a request, never raise it (`high` reads as normal), or any
    /// client would skip the load shedder and take the bulkhead's reserved slots.
    fn priority(&self) -> Priority {
        if let Some(priority) = self.extensions().get::<Priority>() {
            return *priority;
        }
        untrusted(self.header(&PRIORITY_HEADER))
    }
}

/// A priority a client chose for itself: at most normal.
fn untrusted(header: Option<&str>) -> Priority {
    header
        .and_then(Priority::parse)
        .unwrap_or_default()
        .min(Priority::Normal)
}

/// Reads the `x-priority` header as sent by a caller whose identity was verified.
#[cfg(feature = "jwt")]
pub(crate) fn header_priority(ctx: &Context) -> Option<Priority> {
    ctx.header(&PRIORITY_HEADER).and_then(Priority::parse)
}

impl<B> RequestInfo for http::Request<B> {
    fn deadline(&self) -> Option<SystemTime> {
        self.extensions().get::<Deadline>().map(|d| d.0)
    }
    fn is_idempotent(&self) -> bool {
        method_is_idempotent(self.method())
    }
    /// As for a [`Context`]: the [`Priority`] extension, else the header's `low` or
    /// `normal`.
    fn priority(&self) -> Priority {
        if let Some(priority) = self.extensions().get::<Priority>() {
            return *priority;
        }
        untrusted(
            self.headers()
                .get(&PRIORITY_HEADER)
                .and_then(|v| v.to_str().ok()),
        )
    }
}

/// Picks the compartment (breaker, bulkhead, limiter) a request goes through, for keyed
/// layers: by tenant, by operation, by anything the request carries.
pub trait KeyOf<Req>: Send + Sync + 'static {
    /// The key, or `None` for the compartment shared by unkeyed requests.
    fn key_of(&self, request: &Req) -> Option<String>;
}

/// The longest idle time a keyed layer keeps a key's compartment: a year. A longer one
/// (`Duration::MAX` for "never") is taken as this; the key cache refuses more than 1,000
/// years.
pub(crate) const MAX_IDLE: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// How long a keyed layer whose map is full waits before it looks again for entries that
/// may go (a sweep reads every entry): a millisecond after a sweep that freed room,
/// doubling up to a second while sweeps free nothing, so a flood of new keys costs at most
/// one scan a second once sweeps find nothing.
pub(crate) fn next_sweep_wait(last: std::time::Duration, freed_room: bool) -> std::time::Duration {
    const AFTER_ROOM: std::time::Duration = std::time::Duration::from_millis(1);
    const AT_MOST: std::time::Duration = std::time::Duration::from_secs(1);
    if freed_room {
        AFTER_ROOM
    } else {
        (last * 2).clamp(AFTER_ROOM, AT_MOST)
    }
}

/// How often a keyed layer logs, at most, that keys without room share one entry.
pub(crate) const OVERFLOW_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// One compartment for every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unkeyed;

impl<Req> KeyOf<Req> for Unkeyed {
    fn key_of(&self, _: &Req) -> Option<String> {
        None
    }
}

impl<Req, F> KeyOf<Req> for F
where
    F: Fn(&Req) -> Option<String> + Send + Sync + 'static,
{
    fn key_of(&self, request: &Req) -> Option<String> {
        self(request)
    }
}

/// A deadline attached to an outbound `http::Request` as an extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub SystemTime);

/// Reads the wall clock; injected so that deadline logic can be tested without waiting.
pub trait WallClock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_classifier_spares_client_errors() {
        let ok = http::Response::builder()
            .status(200)
            .body(())
            .expect("response");
        let server = http::Response::builder()
            .status(503)
            .body(())
            .expect("response");
        let client = http::Response::builder()
            .status(404)
            .body(())
            .expect("response");
        let c = DefaultClassifier;
        assert!(!c.is_failure(&Ok(ok)));
        assert!(c.is_failure(&Ok(server)));
        assert!(!c.is_failure(&Ok(client)));
        let validation: BoxError = Box::new(Error::Validation(Vec::new()));
        assert!(!Classifier::<http::Response<()>>::is_failure(
            &c,
            &Err(validation)
        ));
        let transport: BoxError = "connection reset".into();
        assert!(Classifier::<http::Response<()>>::is_failure(
            &c,
            &Err(transport)
        ));
    }

    /// The client's header may lower its priority, never raise it; a layer that knows the
    /// caller sets it in the extensions, and that wins.
    #[tokio::test]
    async fn priority_is_raised_only_by_a_layer_the_header_may_lower_it() {
        use lift_core::testing::{TestApp, events};
        use lift_core::{App, Json};
        let trusted = tower::layer::layer_fn(|inner: lift_core::BoxService| {
            tower::util::MapRequest::new(inner, |mut ctx: Context| {
                if ctx.header("x-plan") == Some("premium") {
                    ctx.extensions_mut().insert(Priority::High);
                }
                ctx
            })
        });
        let app = TestApp::new(
            App::new()
                .get("/", |ctx: Context| async move {
                    Ok::<_, Error>(Json(format!("{:?}", ctx.priority())))
                })
                .layer(trusted),
        )
        .expect("app");
        assert_eq!(Priority::parse(" High "), Some(Priority::High));
        assert_eq!(Priority::parse("LOW"), Some(Priority::Low));
        assert_eq!(Priority::parse("urgent"), None);
        let premium = app
            .http(events::http("GET", "/").header("x-plan", "premium").v2())
            .await
            .expect("response")
            .json::<String>()
            .expect("json");
        assert_eq!(premium, "High");
        for (header, expected) in [
            (Some("low"), Priority::Low),
            (Some(" HIGH"), Priority::Normal),
            (Some("urgent"), Priority::Normal),
            (None, Priority::Normal),
        ] {
            let mut event = events::http("GET", "/");
            if let Some(value) = header {
                event = event.header("X-Priority", value);
            }
            let answer: String = app
                .http(event.v2())
                .await
                .expect("response")
                .json()
                .expect("json");
            assert_eq!(answer, format!("{expected:?}"), "{header:?}");
            let mut request = http::Request::new(());
            if let Some(value) = header {
                request
                    .headers_mut()
                    .insert("x-priority", value.parse().expect("value"));
            }
            assert_eq!(request.priority(), expected, "{header:?}");
        }
        let mut request = http::Request::new(());
        request.extensions_mut().insert(Priority::High);
        assert_eq!(request.priority(), Priority::High);
    }

    /// A condition that did not hold is the writer's race, not the table's health: a
    /// breaker does not count it; throttling it does.
    #[cfg(feature = "dynamodb")]
    #[test]
    fn a_failed_dynamodb_condition_is_not_a_failure() {
        use crate::dynamo::DynamoError;
        let classify = |error: DynamoError| {
            Classifier::<http::Response<()>>::is_failure(&DefaultClassifier, &Err(Box::new(error)))
        };
        assert!(!classify(DynamoError::ConditionFailed {
            operation: "PutItem",
            item: None,
        }));
        assert!(classify(DynamoError::Throttled {
            operation: "PutItem",
            code: "ThrottlingException".to_owned(),
        }));
    }
}
