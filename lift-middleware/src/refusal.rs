//! The future of a layer that may answer before calling its inner service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use lift_core::{BoxError, Response};
use pin_project_lite::pin_project;

pin_project! {
    /// Resolves to a refusal the layer decided before calling its inner service, or to the
    /// inner service's result (its error boxed).
    pub struct RefusedOr<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Refused { error: Option<BoxError> },
        Inner { #[pin] inner: F },
    }
}

impl<F> RefusedOr<F> {
    /// The inner service's future.
    pub(crate) fn inner(inner: F) -> Self {
        RefusedOr {
            state: State::Inner { inner },
        }
    }

    /// A refusal: the inner service is not called.
    pub(crate) fn refused(error: BoxError) -> Self {
        RefusedOr {
            state: State::Refused { error: Some(error) },
        }
    }
}

impl<F> std::fmt::Debug for RefusedOr<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefusedOr").finish_non_exhaustive()
    }
}

impl<F, E> Future for RefusedOr<F>
where
    F: Future<Output = Result<Response, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "RefusedOr polled after completion".into()))),
            StateProj::Inner { inner } => inner.poll(cx).map_err(Into::into),
        }
    }
}
