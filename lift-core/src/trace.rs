//! A span for each middleware: every layer added with [`crate::App::layer`] or
//! [`crate::with_layer`] runs in a `middleware` span (target `lift::middleware`, level
//! DEBUG) named after the layer's type, which records `elapsedUs` and `status` when the
//! layer's call ends and logs a `middleware finished` line with them. At the default INFO
//! level the span is disabled and costs one level check per call.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use futures_util::future::Either;
use tower::Service;
use tracing::Instrument;

use crate::context::Context;
use crate::error::BoxError;
use crate::handler::BoxFuture;
use crate::response::Response;

/// The display name of a layer type: its type name without module paths
/// (`Stack<TimeoutLayer, CircuitBreakerLayer>` for a `ServiceBuilder` stack).
pub(crate) fn layer_name<L>() -> Arc<str> {
    let full = std::any::type_name::<L>();
    let mut name = String::with_capacity(full.len());
    let mut word = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            name.push_str(word.rsplit("::").next().unwrap_or(&word));
            word.clear();
            name.push(c);
        }
    }
    name.push_str(word.rsplit("::").next().unwrap_or(&word));
    name.into()
}

/// Runs `inner` in a timed `middleware` span.
#[derive(Clone)]
pub(crate) struct Timed<S> {
    pub(crate) inner: S,
    pub(crate) name: Arc<str>,
}

impl<S> Service<Context> for Timed<S>
where
    S: Service<Context, Response = Response, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = BoxError;
    type Future = Either<S::Future, BoxFuture<Result<Response, BoxError>>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ctx: Context) -> Self::Future {
        let span = tracing::debug_span!(
            target: "lift::middleware",
            parent: ctx.span(),
            "middleware",
            middleware = %self.name,
            elapsedUs = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        if span.is_disabled() {
            return Either::Left(self.inner.call(ctx));
        }
        let future = self.inner.call(ctx);
        Either::Right(Box::pin(async move {
            let started = Instant::now();
            let result = future.instrument(span.clone()).await;
            let elapsed = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let status = match &result {
                Ok(response) => response.status().as_u16(),
                Err(error) => error
                    .downcast_ref::<crate::error::Error>()
                    .map_or(500, |e| e.status().as_u16()),
            };
            span.record("elapsedUs", elapsed);
            span.record("status", status);
            tracing::debug!(target: "lift::middleware", parent: &span, "middleware finished");
            result
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::layer_name;

    struct Plain;
    struct Generic<A, B>(A, B);

    #[test]
    fn names_drop_module_paths() {
        assert_eq!(&*layer_name::<Plain>(), "Plain");
        assert_eq!(
            &*layer_name::<Generic<Plain, Generic<u8, Plain>>>(),
            "Generic<Plain, Generic<u8, Plain>>"
        );
    }
}
