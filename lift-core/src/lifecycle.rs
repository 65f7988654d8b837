//! Background work that lives as long as the execution environment: started with
//! [`App::run`](crate::App::run), off the first response's path.
//!
//! A task added with [`App::background`](crate::App::background) is spawned when the runtime
//! starts, before the first poll for an invocation, and runs concurrently with it. It sees
//! the environment through a [`Lifecycle`]: the first invocation's details (its invoked
//! function ARN names the alias or version callers reached), a count of invocations, and a
//! shutdown signal.
//!
//! Lambda freezes an environment between invocations: a background task makes progress only
//! while an invocation runs, so work that does not finish during the first invocation
//! resumes on a later one. Nothing here ever delays a response: the runtime does not wait for
//! background tasks.
//!
//! Shutdown: [`LiftService::shut_down`](crate::LiftService::shut_down) signals the tasks
//! and waits a grace period for them. Under [`App::run`](crate::App::run), an App with
//! background tasks and [`App::shutdown_extension(true)`](crate::App::shutdown_extension)
//! registers an internal extension so that Lambda sends SIGTERM before it ends the
//! environment, and calls it then (see [`crate::shutdown`]). Without it, the environment
//! ends without warning and the tasks simply stop.
//!
//! ```no_run
//! use lift_core::{App, Context, Result};
//!
//! async fn hello(_ctx: Context) -> Result<String> {
//!     Ok("hello".to_owned())
//! }
//!
//! # async fn run() -> Result<()> {
//! App::new()
//!     .get("/hello", hello)
//!     .background(|lifecycle| async move {
//!         let first = lifecycle.first_invocation().await;
//!         tracing::info!(arn = %first.invoked_function_arn, "serving");
//!     })
//!     .run()
//!     .await
//! # }
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

use crate::handler::BoxFuture;

/// A task started with the App: see [`App::background`](crate::App::background).
pub(crate) type Task = Box<dyn FnOnce(Lifecycle) -> BoxFuture<()> + Send>;

pub(crate) fn task<F, Fut>(f: F) -> Task
where
    F: FnOnce(Lifecycle) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Box::new(move |lifecycle| Box::pin(f(lifecycle)))
}

/// What the first invocation of an environment tells about the function.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FirstInvocation {
    /// The ARN the caller invoked: qualified by an alias or a version, or unqualified
    /// (`$LATEST`).
    pub invoked_function_arn: String,
    /// The function's name, from the runtime's configuration.
    pub function_name: String,
    /// The function version this environment runs (`$LATEST` or a number).
    pub function_version: String,
}

impl FirstInvocation {
    /// The first invocation's details, for a test or a non-Lambda host.
    pub fn new(
        invoked_function_arn: impl Into<String>,
        function_name: impl Into<String>,
        function_version: impl Into<String>,
    ) -> Self {
        FirstInvocation {
            invoked_function_arn: invoked_function_arn.into(),
            function_name: function_name.into(),
            function_version: function_version.into(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    first: OnceLock<FirstInvocation>,
    arrived: Notify,
    answered: AtomicBool,
    answered_notify: Notify,
    invocations: AtomicU64,
    shutting_down: AtomicBool,
    shutdown: Notify,
}

/// The environment as a background task sees it. Cheap to clone.
///
/// The App's service updates it on every invocation with one atomic increment; the first
/// invocation also stores its [`FirstInvocation`].
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    state: Arc<State>,
}

impl Lifecycle {
    /// A lifecycle no runtime drives: tests call [`Lifecycle::invoked`] and
    /// [`Lifecycle::shut_down`] themselves.
    pub fn new() -> Self {
        Lifecycle::default()
    }

    /// Waits for the environment's first invocation, and returns its details.
    pub async fn first_invocation(&self) -> FirstInvocation {
        loop {
            let arrived = self.state.arrived.notified();
            if let Some(first) = self.state.first.get() {
                return first.clone();
            }
            arrived.await;
        }
    }

    /// Waits until the environment's first invocation has been answered (its response
    /// handed back to the runtime). Work that waits for this stays off the first
    /// response's path: on Lambda it runs in the moments before the environment is frozen,
    /// or during the next invocation.
    pub async fn first_answered(&self) {
        loop {
            let answered = self.state.answered_notify.notified();
            if self.state.answered.load(Ordering::Acquire) {
                return;
            }
            answered.await;
        }
    }

    /// Records that an invocation was answered. The App's service calls it after each
    /// invocation; tests may call it themselves.
    pub fn answered(&self) {
        // A plain load first: after the first answer, an invocation pays no locked write.
        if !self.state.answered.load(Ordering::Acquire)
            && !self.state.answered.swap(true, Ordering::AcqRel)
        {
            self.state.answered_notify.notify_waiters();
        }
    }

    /// The first invocation's details, once there was one.
    pub fn first(&self) -> Option<&FirstInvocation> {
        self.state.first.get()
    }

    /// How many invocations the environment has started.
    pub fn invocations(&self) -> u64 {
        self.state.invocations.load(Ordering::Relaxed)
    }

    /// Records an invocation; the first one's details are kept. The App's service calls it
    /// for each invocation.
    pub fn invoked(&self, first: impl FnOnce() -> FirstInvocation) {
        self.state.invocations.fetch_add(1, Ordering::Relaxed);
        if self.state.first.get().is_none() {
            let _ = self.state.first.set(first());
            self.state.arrived.notify_waiters();
        }
    }

    /// Whether shutdown was signalled.
    pub fn is_shutting_down(&self) -> bool {
        self.state.shutting_down.load(Ordering::Acquire)
    }

    /// Waits until shutdown is signalled ([`Lifecycle::shut_down`]).
    pub async fn shutdown(&self) {
        loop {
            let signalled = self.state.shutdown.notified();
            if self.is_shutting_down() {
                return;
            }
            signalled.await;
        }
    }

    /// Signals shutdown to every task waiting in [`Lifecycle::shutdown`]: call it from the
    /// runtime's SIGTERM handler (Lambda sends SIGTERM only to a runtime with a registered
    /// extension) or at the end of a test.
    pub fn shut_down(&self) {
        self.state.shutting_down.store(true, Ordering::Release);
        self.state.shutdown.notify_waiters();
    }

    pub(crate) fn observe(&self, lambda: &lambda_runtime::Context) {
        self.invoked(|| FirstInvocation {
            invoked_function_arn: lambda.invoked_function_arn.clone(),
            function_name: lambda.env_config.function_name.clone(),
            function_version: lambda.env_config.version.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_waiting_task_gets_the_first_invocation_only() {
        let lifecycle = Lifecycle::new();
        let waiter = tokio::spawn({
            let lifecycle = lifecycle.clone();
            async move { lifecycle.first_invocation().await }
        });
        tokio::task::yield_now().await;
        assert!(lifecycle.first().is_none());
        lifecycle.invoked(|| {
            FirstInvocation::new("arn:aws:lambda:eu-west-1:1:function:f:live", "f", "3")
        });
        lifecycle.invoked(|| FirstInvocation::new("arn:other", "f", "4"));
        let first = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(
            first.invoked_function_arn,
            "arn:aws:lambda:eu-west-1:1:function:f:live"
        );
        assert_eq!(first.function_version, "3");
        assert_eq!(lifecycle.invocations(), 2);
        // Asked after the fact, it answers at once.
        assert_eq!(lifecycle.first_invocation().await, first);
    }

    #[tokio::test]
    async fn first_answered_wakes_waiters_once_an_invocation_was_answered() {
        let lifecycle = Lifecycle::new();
        let waiter = tokio::spawn({
            let lifecycle = lifecycle.clone();
            async move { lifecycle.first_answered().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        lifecycle.answered();
        lifecycle.answered();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
        // Asked after the fact, it answers at once.
        tokio::time::timeout(Duration::from_secs(5), lifecycle.first_answered())
            .await
            .expect("at once");
    }

    #[tokio::test]
    async fn shutdown_wakes_waiters_and_later_callers() {
        let lifecycle = Lifecycle::new();
        let waiter = tokio::spawn({
            let lifecycle = lifecycle.clone();
            async move { lifecycle.shutdown().await }
        });
        tokio::task::yield_now().await;
        assert!(!lifecycle.is_shutting_down());
        lifecycle.shut_down();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
        lifecycle.shutdown().await;
        assert!(lifecycle.is_shutting_down());
    }
}
