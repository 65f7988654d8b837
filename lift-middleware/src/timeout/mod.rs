//! Timeout: a call that does not finish in time is dropped and answered with
//! [`lift_core::Error::Timeout`] (504 for HTTP).
//!
//! Deadline-aware: the effective timeout is the smaller of the configured one and the
//! invocation's remaining time minus a margin, so a handler answers before Lambda kills it.
//!
//! ```
//! use std::time::Duration;
//! use lift_middleware::timeout::TimeoutLayer;
//!
//! # fn main() -> Result<(), lift_middleware::ConfigError> {
//! let layer = TimeoutLayer::deadline_aware(Duration::from_secs(3), Duration::from_millis(200))?;
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```
//!
//! # Default
//! No margin: [`TimeoutLayer::new`] applies the configured duration alone.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use lift_core::{BoxError, Error};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::classify::{RequestInfo, SystemClock, WallClock};
use crate::error::{ConfigError, check};

/// Applies [`Timeout`] to a service.
#[derive(Clone)]
pub struct TimeoutLayer {
    timeout: Duration,
    margin: Option<Duration>,
    clock: Arc<dyn WallClock>,
}

impl std::fmt::Debug for TimeoutLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeoutLayer")
            .field("timeout", &self.timeout)
            .field("margin", &self.margin)
            .finish()
    }
}

impl TimeoutLayer {
    /// Times calls out after `timeout`.
    ///
    /// # Errors
    /// [`ConfigError`] for a zero `timeout`, which would time every call out.
    pub fn new(timeout: Duration) -> Result<Self, ConfigError> {
        check(!timeout.is_zero(), "timeout", "must be longer than zero")?;
        Ok(TimeoutLayer {
            timeout,
            margin: None,
            clock: Arc::new(SystemClock),
        })
    }

    /// Times calls out after `timeout`, or earlier: when the request's deadline minus
    /// `margin` comes first.
    ///
    /// # Errors
    /// [`ConfigError`] for a zero `timeout`.
    pub fn deadline_aware(timeout: Duration, margin: Duration) -> Result<Self, ConfigError> {
        Ok(TimeoutLayer {
            margin: Some(margin),
            ..Self::new(timeout)?
        })
    }

    /// Uses `clock` to read the wall time against request deadlines.
    pub fn with_clock(mut self, clock: impl WallClock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            layer: self.clone(),
        }
    }
}

/// Cancels calls that run past their timeout.
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    layer: TimeoutLayer,
}

crate::inner_accessors!(Timeout<S>);

/// The timeout that applies to a request with `deadline` at `now`.
pub(crate) fn effective(
    timeout: Duration,
    margin: Option<Duration>,
    deadline: Option<std::time::SystemTime>,
    now: std::time::SystemTime,
) -> Duration {
    match (margin, deadline) {
        (Some(margin), Some(deadline)) => {
            let left = deadline
                .duration_since(now)
                .unwrap_or(Duration::ZERO)
                .saturating_sub(margin);
            timeout.min(left)
        }
        _ => timeout,
    }
}

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: RequestInfo,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // The deadline and the wall clock are read only by a deadline-aware timeout.
        let after = match self.layer.margin {
            Some(margin) => effective(
                self.layer.timeout,
                Some(margin),
                request.deadline(),
                self.layer.clock.now(),
            ),
            None => self.layer.timeout,
        };
        ResponseFuture {
            inner: self.inner.call(request),
            sleep: tokio::time::sleep(after),
            after,
        }
    }
}

pin_project! {
    /// Resolves to the inner response, or to [`Error::Timeout`] when the sleep wins.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: tokio::time::Sleep,
        after: Duration,
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => {
                tracing::debug!(target: "lift::timeout", after = ?this.after, "call timed out");
                Poll::Ready(Err(Box::new(Error::Timeout { after: *this.after })))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn the_deadline_shortens_the_timeout() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let deadline = Some(now + Duration::from_secs(2));
        let margin = Some(Duration::from_millis(500));
        let three = Duration::from_secs(3);
        assert_eq!(
            effective(three, margin, deadline, now),
            Duration::from_millis(1500)
        );
        assert_eq!(effective(three, None, deadline, now), three);
        assert_eq!(
            effective(Duration::from_secs(1), margin, deadline, now),
            Duration::from_secs(1)
        );
        let past: Option<SystemTime> = Some(now - Duration::from_secs(1));
        assert_eq!(effective(three, margin, past, now), Duration::ZERO);
    }
}
