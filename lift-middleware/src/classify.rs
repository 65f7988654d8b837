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

/// Whether a boxed error is a Lift error with a 4xx status.
pub fn is_client_error(error: &BoxError) -> bool {
    error
        .downcast_ref::<Error>()
        .is_some_and(Error::is_client_error)
}

/// What middleware may ask of a request: its deadline, whether replaying it is safe, and
/// its priority. A Lift [`Context`] answers from the invocation; implement it for your own
/// request types (every method has a default).
pub trait RequestInfo {
    /// When the caller stops waiting (the Lambda deadline), if known.
    fn deadline(&self) -> Option<SystemTime> {
        None
    }
    /// Whether sending the request twice has the effect of sending it once.
    fn is_idempotent(&self) -> bool {
        true
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
    fn is_idempotent(&self) -> bool {
        self.http()
            .is_none_or(|request| method_is_idempotent(request.method()))
    }
    /// From the `x-priority` header (`low`, `normal`, `high`), else normal.
    fn priority(&self) -> Priority {
        self.header(&PRIORITY_HEADER)
            .and_then(Priority::parse)
            .unwrap_or_default()
    }
}

impl<B> RequestInfo for http::Request<B> {
    fn deadline(&self) -> Option<SystemTime> {
        self.extensions().get::<Deadline>().map(|d| d.0)
    }
    fn is_idempotent(&self) -> bool {
        method_is_idempotent(self.method())
    }
    fn priority(&self) -> Priority {
        self.headers()
            .get(&PRIORITY_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(Priority::parse)
            .unwrap_or_default()
    }
}

/// Picks the compartment (breaker, bulkhead, limiter) a request goes through, for keyed
/// layers: by tenant, by operation, by anything the request carries.
pub trait KeyOf<Req>: Send + Sync + 'static {
    /// The key, or `None` for the compartment shared by unkeyed requests.
    fn key_of(&self, request: &Req) -> Option<String>;
}

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

    #[tokio::test]
    async fn priority_comes_from_the_header_in_any_case_else_normal() {
        use lift_core::testing::{TestApp, events};
        use lift_core::{App, Json};
        let app = TestApp::new(App::new().get("/", |ctx: Context| async move {
            Ok::<_, Error>(Json(format!("{:?}", ctx.priority())))
        }))
        .expect("app");
        assert_eq!(Priority::parse(" High "), Some(Priority::High));
        assert_eq!(Priority::parse("LOW"), Some(Priority::Low));
        assert_eq!(Priority::parse("urgent"), None);
        for (header, expected) in [
            (Some("low"), Priority::Low),
            (Some(" HIGH"), Priority::High),
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
    }
}
