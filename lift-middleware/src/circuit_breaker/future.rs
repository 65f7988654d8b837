//! The circuit breaker's response future: it settles the call's outcome in the breaker.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use lift_core::BoxError;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::state::{Breaker, Permit};
use crate::classify::Classifier;

/// Settles a call in its breaker: with an outcome when it finishes, as cancelled (a probe
/// gives its place back) when it is dropped first.
pub(crate) struct Guard<C> {
    breaker: Arc<Breaker>,
    classifier: Arc<C>,
    permit: Permit,
    started: Instant,
    settled: bool,
}

impl<C> Guard<C> {
    pub(crate) fn new(
        breaker: Arc<Breaker>,
        classifier: Arc<C>,
        permit: Permit,
        started: Instant,
    ) -> Self {
        Guard {
            breaker,
            classifier,
            permit,
            started,
            settled: false,
        }
    }

    fn settle<T>(&mut self, result: &Result<T, BoxError>)
    where
        C: Classifier<T>,
    {
        let now = Instant::now();
        let failed = self.classifier.is_failure(result);
        self.breaker.record(
            &self.permit,
            failed,
            now.saturating_duration_since(self.started),
            now,
        );
        self.settled = true;
    }
}

impl<C> Drop for Guard<C> {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.release(&self.permit);
        }
    }
}

pin_project! {
    /// Resolves to the inner result (recorded in the breaker), or at once to the refusal or
    /// the fallback.
    pub struct ResponseFuture<F, C, T> {
        #[pin]
        inner: Option<F>,
        guard: Option<Guard<C>>,
        refused: Option<Result<T, BoxError>>,
        _output: PhantomData<fn() -> T>,
    }
}

impl<F, C, T> ResponseFuture<F, C, T> {
    pub(crate) fn called(inner: F, guard: Guard<C>) -> Self {
        ResponseFuture {
            inner: Some(inner),
            guard: Some(guard),
            refused: None,
            _output: PhantomData,
        }
    }

    pub(crate) fn rejected(result: Result<T, BoxError>) -> Self {
        ResponseFuture {
            inner: None,
            guard: None,
            refused: Some(result),
            _output: PhantomData,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classifier<T>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            Some(inner) => match inner.poll(cx) {
                Poll::Ready(result) => {
                    let result = result.map_err(Into::into);
                    if let Some(guard) = this.guard.as_mut() {
                        guard.settle(&result);
                    }
                    Poll::Ready(result)
                }
                Poll::Pending => Poll::Pending,
            },
            None => {
                Poll::Ready(this.refused.take().unwrap_or_else(|| {
                    Err("circuit breaker future polled after completion".into())
                }))
            }
        }
    }
}
