//! The middleware stack with its type erased.

use std::any::Any;
use std::future::Future;
use std::task::{Context as TaskContext, Poll};

use tower::Service;

use crate::context::Context;
use crate::error::BoxError;
use crate::handler::BoxFuture;
use crate::response::Response;

/// A middleware stack (or one level of it) with its type erased: what every layer added
/// with [`App::layer`](crate::App::layer) wraps. Each level boxes its future once per
/// call, except a service whose future is a [`BoxFuture`] already, which hands that box
/// on: the innermost level, whose future is the handler's own box ([`crate::Dispatch`]).
pub struct BoxService(Box<dyn Erased>);

impl BoxService {
    /// Erases `service`'s type.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Context, Response = Response, Error = BoxError> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        BoxService(Box::new(service))
    }
}

impl Clone for BoxService {
    fn clone(&self) -> Self {
        BoxService(self.0.clone_box())
    }
}

impl std::fmt::Debug for BoxService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoxService")
    }
}

impl Service<Context> for BoxService {
    type Response = Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, ctx: Context) -> Self::Future {
        self.0.call(ctx)
    }
}

trait Erased: Send + Sync {
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>>;
    fn call(&mut self, ctx: Context) -> BoxFuture<Result<Response, BoxError>>;
    fn clone_box(&self) -> Box<dyn Erased>;
}

impl<S> Erased for S
where
    S: Service<Context, Response = Response, Error = BoxError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        Service::poll_ready(self, cx)
    }

    fn call(&mut self, ctx: Context) -> BoxFuture<Result<Response, BoxError>> {
        boxed(Service::call(self, ctx))
    }

    fn clone_box(&self) -> Box<dyn Erased> {
        Box::new(self.clone())
    }
}

/// `future` in a box: itself when it is one already, so that a level whose future is a
/// box (the handler's) allocates nothing more.
pub(crate) fn boxed<F>(future: F) -> BoxFuture<F::Output>
where
    F: Future + Send + 'static,
    F::Output: 'static,
{
    let mut slot = Some(future);
    let already = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<BoxFuture<F::Output>>>()
        .and_then(Option::take);
    match (already, slot) {
        (Some(boxed), _) => boxed,
        (None, Some(future)) => Box::pin(future),
        (None, None) => unreachable!("the future is taken only when it is a box already"),
    }
}

#[cfg(test)]
mod tests {
    use std::future::ready;

    use super::*;

    #[tokio::test]
    async fn a_box_is_handed_on_and_any_other_future_is_boxed() {
        let future: BoxFuture<u8> = Box::pin(ready(7));
        let at = std::ptr::from_ref(&*future).cast::<()>();
        let handed_on = boxed(future);
        assert_eq!(std::ptr::from_ref(&*handed_on).cast::<()>(), at);
        assert_eq!(handed_on.await, 7);
        assert_eq!(boxed(ready(8)).await, 8);
        assert_eq!(boxed(async { 9 }).await, 9);
    }
}
