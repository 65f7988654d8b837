//! What a cache keeps for one key: a response's status, headers and body, and when it was
//! stored and expires.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use lift_core::{Body, Response};

/// A cached answer. Times are wall-clock milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Body,
    pub(crate) stored_at: u64,
    pub(crate) expires_at: u64,
}

/// What a computation hands to the cache to keep: the entry without its timestamps.
#[derive(Debug, Clone)]
pub(crate) struct Payload {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Body,
    pub(crate) ttl: Duration,
}

/// Headers that describe one exchange, not the stored representation.
const HOP_HEADERS: [&str; 3] = ["age", "x-cache", "date"];

impl Payload {
    /// The parts of `response` worth keeping, for `ttl`.
    pub(crate) fn of_response(response: &Response, ttl: Duration) -> Payload {
        let mut headers = response.headers().clone();
        for name in HOP_HEADERS {
            headers.remove(name);
        }
        Payload {
            status: response.status(),
            headers,
            body: response.body().clone(),
            ttl,
        }
    }

    /// Stamps the payload as stored at `stored_at`.
    pub(crate) fn stamp(self, stored_at: u64) -> Entry {
        Entry {
            status: self.status,
            headers: self.headers,
            body: self.body,
            stored_at,
            expires_at: stored_at.saturating_add(millis(self.ttl)),
        }
    }
}

impl Entry {
    /// Whether the entry still counts at `now`, and is no older than `max_age` when given.
    pub(crate) fn usable(&self, now: u64, max_age: Option<Duration>) -> bool {
        now < self.expires_at
            && max_age.is_none_or(|max| now.saturating_sub(self.stored_at) <= millis(max))
    }

    /// The entry as a response at `now`, with its `Age` and `x-cache` headers.
    pub(crate) fn to_response(&self, now: u64, outcome: &'static str) -> Response {
        let mut response = Response::new(self.body.clone());
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        let age = now.saturating_sub(self.stored_at) / 1000;
        response
            .headers_mut()
            .insert(http::header::AGE, HeaderValue::from(age));
        response
            .headers_mut()
            .insert("x-cache", HeaderValue::from_static(outcome));
        response
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
