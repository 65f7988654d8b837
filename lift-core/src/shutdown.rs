//! Graceful shutdown: SIGTERM, through an internal extension, ends the background tasks.
//!
//! Lambda sends the runtime a SIGTERM before it shuts an execution environment down only
//! when an extension is registered; with internal extensions alone the process then has
//! about 500 ms. With [`App::shutdown_extension(true)`](crate::App::shutdown_extension) and
//! background tasks (see [`crate::lifecycle`]), [`App::run`] registers one internal
//! extension that subscribes to no event, so that the signal comes, and on SIGTERM signals
//! the tasks and waits up to [`GRACE`] for them (a service registration releases its lease
//! there) before the process exits.
//!
//! It is off by default because it is paid in every cold start: the registration must be
//! done before the runtime's first `next` (registration closes with init), so one Runtime
//! API round trip sits on the path to the first response — it is started first and
//! overlapped with building the service, but nothing else is left to overlap it with. What
//! it buys is small for Lambda endpoints: an alias or version stays invocable after its
//! environments end, so a lease released at shutdown protects no caller from a dead
//! endpoint; it only ends the instance's liveness sooner than the lease would. Turn it on
//! where background work must not be cut short (a final flush, an accurate count of live
//! environments).
//!
//! `lambda_runtime` offers the same with its `graceful-shutdown` feature, but that helper
//! panics when the Extensions API refuses the registration (as local runtimes that serve
//! only the Runtime API do) and pulls in the `lambda-extension` crate. Here a refused
//! registration is logged and the function serves on: only the SIGTERM is lost.
//!
//! [`App::run`]: crate::App::run

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use lambda_runtime_api_client::body::Body;
use lambda_runtime_api_client::{PooledClient, build_request};

use crate::app::LiftService;
use crate::handler::BoxFuture;

/// How long the background tasks get after SIGTERM: under the 500 ms Lambda allows a
/// function with internal extensions only, leaving time for the logs to flush.
pub const GRACE: Duration = Duration::from_millis(400);

/// The extension's name (any name is accepted for an internal extension).
const EXTENSION_NAME: &str = "lift-graceful-shutdown";

/// A registration of the shutdown extension, under way or done.
pub(crate) type Pending = tokio::task::JoinHandle<Registered>;

type Registered = Result<(PooledClient, String), lambda_runtime_api_client::BoxError>;

/// The shutdown path as function pointers, taken only by
/// [`App::shutdown_extension`](crate::App::shutdown_extension)`(true)`. [`App::run`] calls
/// through them, so a binary that never turns the extension on has no path to the
/// registration client, the SIGTERM listener and tokio's signal driver, and the linker
/// leaves them out (about 100 KB of a release build, every byte of it resident at cold
/// start).
///
/// [`App::run`]: crate::App::run
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hooks {
    pub(crate) start: fn(String) -> Pending,
    pub(crate) install: fn(LiftService, Pending) -> BoxFuture<()>,
}

impl Hooks {
    /// The hooks of this module: taking them is what links the extension in.
    pub(crate) fn new() -> Self {
        Hooks {
            start,
            install: |service, pending| Box::pin(install(service, pending)),
        }
    }
}

/// Starts registering the internal extension with the Extensions API at `runtime_api` (the
/// `AWS_LAMBDA_RUNTIME_API` address). [`App::run`](crate::App::run) starts it first and
/// builds the service meanwhile; [`install`] must see it done before the runtime's first
/// `next`, since registration closes with init.
fn start(runtime_api: String) -> Pending {
    tokio::spawn(async move { register(&runtime_api).await })
}

/// Waits for the registration, then spawns the task that tells Lambda the extension is
/// ready (a `next` that never returns, since it subscribes to no event) and the SIGTERM
/// listener.
async fn install(service: LiftService, pending: Pending) {
    let registered = match pending.await {
        Ok(registered) => registered,
        Err(error) => Err(error.into()),
    };
    match registered {
        Ok((client, id)) => {
            tokio::spawn(async move {
                // Blocks for the life of the environment; an error means no SIGTERM comes,
                // which the listener below survives.
                if let Err(error) = next(&client, &id).await {
                    tracing::warn!(target: "lift::shutdown", error = %error, "the shutdown extension stopped waiting");
                }
            });
        }
        Err(error) => {
            tracing::warn!(target: "lift::shutdown", error = %error, "no shutdown extension: background tasks will not see SIGTERM from Lambda");
        }
    }
    listen(service);
}

#[cfg(unix)]
fn listen(service: LiftService) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(target: "lift::shutdown", error = %error, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::spawn(async move {
        if term.recv().await.is_some() {
            tracing::info!(target: "lift::shutdown", "SIGTERM: ending background tasks");
            let finished = service.shut_down(GRACE).await;
            if !finished {
                tracing::warn!(target: "lift::shutdown", grace_ms = GRACE.as_millis() as u64, "background tasks still running at the end of the grace period");
            }
            std::process::exit(0);
        }
    });
}

#[cfg(not(unix))]
fn listen(_service: LiftService) {}

async fn register(runtime_api: &str) -> Registered {
    let base = format!("http://{runtime_api}").parse()?;
    let client = PooledClient::builder().with_endpoint(base).build();
    let request = build_request()
        .method("POST")
        .uri("/2020-01-01/extension/register")
        .header("Lambda-Extension-Name", EXTENSION_NAME)
        .header("Content-Type", "application/json")
        .body(Body::from(r#"{"events":[]}"#))?;
    let response = client.call(request).await?;
    let status = response.status();
    let id = response
        .headers()
        .get("Lambda-Extension-Identifier")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body: Bytes = response.into_body().collect().await?.to_bytes();
    match id {
        Some(id) if status.is_success() => Ok((client, id)),
        _ => Err(format!(
            "extension registration answered {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into()),
    }
}

async fn next(client: &PooledClient, id: &str) -> Result<(), lambda_runtime_api_client::BoxError> {
    loop {
        let request = build_request()
            .method("GET")
            .uri("/2020-01-01/extension/event/next")
            .header("Lambda-Extension-Identifier", id)
            .body(Body::empty())?;
        let response = client.call(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(format!(
                "extension next answered {status}: {}",
                String::from_utf8_lossy(&body)
            )
            .into());
        }
        // An event we did not subscribe to (a SHUTDOWN is only sent to external
        // extensions): ask again.
    }
}
