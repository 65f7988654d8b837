//! Handlers: plain async functions of a [`Context`] (and optionally a typed input).

use std::future::{Future, ready};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::Method;

use crate::boxed::BoxService;
use crate::context::Context;
use crate::error::{BoxError, Error};
use crate::input::Input;
use crate::response::{IntoResponse, Response};

/// A boxed, `Send` future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// An async function Lift can call for a request or a record.
///
/// Implemented for `async fn(Context) -> Result<T, E>`, `async fn(Context, I) -> Result<T, E>`
/// (with `I:` [`Input`]) and `async fn() -> Result<T, E>`, where `T:` [`IntoResponse`] and
/// `E: Into<BoxError>`. A handler error that is a Lift [`Error`] keeps its status; any other
/// error is an internal error (500, or a failed record). `Args` only tells the impls apart.
pub trait Handler<Args>: Clone + Send + Sync + 'static {
    /// Runs the handler for one request or record.
    fn call(&self, ctx: Context) -> BoxFuture<Result<Response, BoxError>>;
}

fn finish<T: IntoResponse, E: Into<BoxError>>(result: Result<T, E>) -> Result<Response, BoxError> {
    match result {
        Ok(output) => Ok(output.into_response()),
        Err(error) => Err(error.into()),
    }
}

impl<F, Fut, T, E> Handler<()> for F
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: IntoResponse,
    E: Into<BoxError>,
{
    fn call(&self, _ctx: Context) -> BoxFuture<Result<Response, BoxError>> {
        let fut = self();
        Box::pin(async move { finish(fut.await) })
    }
}

impl<F, Fut, T, E> Handler<(Context,)> for F
where
    F: Fn(Context) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: IntoResponse,
    E: Into<BoxError>,
{
    fn call(&self, ctx: Context) -> BoxFuture<Result<Response, BoxError>> {
        let fut = self(ctx);
        Box::pin(async move { finish(fut.await) })
    }
}

impl<F, Fut, I, T, E> Handler<(Context, I)> for F
where
    F: Fn(Context, I) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    I: Input,
    T: IntoResponse,
    E: Into<BoxError>,
{
    fn call(&self, ctx: Context) -> BoxFuture<Result<Response, BoxError>> {
        match I::from_context(&ctx) {
            Ok(input) => {
                let fut = self(ctx, input);
                Box::pin(async move { finish(fut.await) })
            }
            Err(error) => Box::pin(ready(Err(Box::new(error) as BoxError))),
        }
    }
}

/// A handler with its argument types erased, so the App can store any mix of them.
pub(crate) trait ErasedHandler: Send + Sync + 'static {
    fn call(&self, ctx: Context) -> BoxFuture<Result<Response, BoxError>>;
}

struct Erased<H, Args> {
    handler: H,
    _args: PhantomData<fn() -> Args>,
}

impl<H: Handler<Args>, Args: 'static> ErasedHandler for Erased<H, Args> {
    fn call(&self, ctx: Context) -> BoxFuture<Result<Response, BoxError>> {
        self.handler.call(ctx)
    }
}

/// What a request or record is dispatched to, resolved before middleware runs so that
/// middleware sees the route.
#[derive(Clone)]
pub(crate) enum Endpoint {
    Handler(Arc<dyn ErasedHandler>),
    NotFound,
    MethodNotAllowed(Arc<[Method]>),
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Handler(_) => f.write_str("Handler"),
            Endpoint::NotFound => f.write_str("NotFound"),
            Endpoint::MethodNotAllowed(allow) => write!(f, "MethodNotAllowed({allow:?})"),
        }
    }
}

impl Endpoint {
    pub(crate) fn new<H: Handler<Args>, Args: 'static>(handler: H) -> Self {
        Endpoint::Handler(Arc::new(Erased {
            handler,
            _args: PhantomData,
        }))
    }
}

/// The innermost service of every middleware stack: calls the endpoint the context was
/// routed to. Its future is the handler's own box, which the stack's innermost
/// type-erased level ([`crate::BoxService`]) hands on without boxing it again.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dispatch;

impl tower::Service<Context> for Dispatch {
    type Response = Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ctx: Context) -> Self::Future {
        match ctx.endpoint.clone() {
            Endpoint::Handler(handler) => {
                ctx.metrics.handler_called();
                handler.call(ctx)
            }
            Endpoint::NotFound => Box::pin(ready(Err(Box::new(Error::NotFound {
                path: ctx.http().map(|r| r.path.clone()).unwrap_or_default(),
            }) as BoxError))),
            Endpoint::MethodNotAllowed(allow) => {
                let (method, path) = ctx
                    .http()
                    .map(|r| (r.method.clone(), r.path.clone()))
                    .unwrap_or_default();
                Box::pin(ready(Err(Box::new(Error::MethodNotAllowed {
                    method,
                    path,
                    allow: allow.to_vec(),
                }) as BoxError)))
            }
        }
    }
}

/// A handler wrapped in its own middleware, for one route: see [`with_layer`].
pub struct Layered {
    service: BoxService,
}

impl Clone for Layered {
    fn clone(&self) -> Self {
        Layered {
            service: self.service.clone(),
        }
    }
}

impl std::fmt::Debug for Layered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Layered")
    }
}

/// Marks [`Layered`]'s `Handler` impl apart from the function impls.
#[derive(Debug)]
pub struct LayeredArgs;

/// Calls a handler as a `tower::Service`, the innermost service of a route's own stack.
struct HandlerService<H, Args> {
    handler: H,
    _args: PhantomData<fn() -> Args>,
}

impl<H: Clone, Args> Clone for HandlerService<H, Args> {
    fn clone(&self) -> Self {
        HandlerService {
            handler: self.handler.clone(),
            _args: PhantomData,
        }
    }
}

impl<H: Handler<Args>, Args: 'static> tower::Service<Context> for HandlerService<H, Args> {
    type Response = Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ctx: Context) -> Self::Future {
        self.handler.call(ctx)
    }
}

/// Wraps one handler in `layer`, for a route that needs its own timeout, breaker or limit:
/// `App::new().get("/report", with_layer(report, TimeoutLayer::new(..)))`. The App's own
/// layers (from [`crate::App::layer`]) still run outside it.
pub fn with_layer<H, Args, L, E>(handler: H, layer: L) -> Layered
where
    H: Handler<Args>,
    Args: 'static,
    L: tower::Layer<BoxService>,
    L::Service:
        tower::Service<Context, Response = Response, Error = E> + Clone + Send + Sync + 'static,
    <L::Service as tower::Service<Context>>::Future: Send + 'static,
    E: Into<BoxError> + 'static,
{
    use tower::ServiceExt;
    let inner = BoxService::new(HandlerService {
        handler,
        _args: PhantomData,
    });
    Layered {
        service: BoxService::new(crate::trace::Timed {
            inner: layer.layer(inner).map_err(Into::into),
            name: crate::trace::layer_name::<L>(),
        }),
    }
}

impl Handler<LayeredArgs> for Layered {
    fn call(&self, ctx: Context) -> BoxFuture<Result<Response, BoxError>> {
        use tower::ServiceExt;
        Box::pin(self.service.clone().oneshot(ctx))
    }
}
