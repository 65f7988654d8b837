//! Shared test doubles: a dependency whose failures the test switches at runtime, a request
//! type with every `RequestInfo` knob, a wall clock that follows tokio's paused time, one
//! the test moves by hand, and a stand-in for tenancy middleware.
//!
//! Each test module uses a part of this one.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lift_core::{BoxError, Context, Error, TenantId};
use lift_middleware::classify::{Priority, RequestInfo, WallClock};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::Service;

/// The response type of the [`Dependency`].
pub(crate) type Response = http::Response<String>;

/// What the dependency does with its next call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// Answers 200 with body `ok`.
    Ok,
    /// Answers a response with this status (e.g. 503 or 400).
    Status(u16),
    /// Answers this status with a `Retry-After: secs` header (429 or 503).
    RetryAfter(u16, u64),
    /// Fails with a transport error: a boxed error that is not a Lift error.
    Transport,
    /// Fails with a 4xx Lift error (`Error::bad_request`).
    ClientError,
    /// Sleeps (tokio time) this long, then answers 200.
    Delay(Duration),
    /// Hangs until [`Dependency::release`], then behaves as the release says.
    Hang,
}

struct Inner {
    default: Behaviour,
    script: VecDeque<Behaviour>,
    per_tenant: HashMap<String, Behaviour>,
    released_as: Behaviour,
    call_times: Vec<Instant>,
    tenants: Vec<Option<String>>,
}

/// A controllable dependency: a `tower::Service<TestRequest>` that counts its calls and
/// answers as the test says.
#[derive(Clone)]
pub(crate) struct Dependency {
    inner: Arc<Mutex<Inner>>,
    calls: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    release: Arc<watch::Sender<u64>>,
}

impl Dependency {
    /// A dependency that behaves as `default` unless scripted otherwise.
    pub(crate) fn new(default: Behaviour) -> Self {
        Dependency {
            inner: Arc::new(Mutex::new(Inner {
                default,
                script: VecDeque::new(),
                per_tenant: HashMap::new(),
                released_as: Behaviour::Ok,
                call_times: Vec::new(),
                tenants: Vec::new(),
            })),
            calls: Arc::new(AtomicUsize::new(0)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            release: Arc::new(watch::channel(0).0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the default behaviour (and drops any script).
    pub(crate) fn set(&self, behaviour: Behaviour) {
        let mut inner = self.lock();
        inner.default = behaviour;
        inner.script.clear();
    }

    /// The next calls behave as `script`, in order; then the default applies again.
    pub(crate) fn script(&self, script: impl IntoIterator<Item = Behaviour>) {
        self.lock().script = script.into_iter().collect();
    }

    /// Calls for `tenant` behave as `behaviour` (before any script or default).
    pub(crate) fn set_for(&self, tenant: &str, behaviour: Behaviour) {
        self.lock().per_tenant.insert(tenant.to_owned(), behaviour);
    }

    /// Releases every call hanging now; each then behaves as `behaviour`.
    pub(crate) fn release(&self, behaviour: Behaviour) {
        self.lock().released_as = behaviour;
        self.release.send_modify(|generation| *generation += 1);
    }

    /// Calls received so far.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls received and not finished (nor dropped).
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// When each call arrived (tokio time).
    pub(crate) fn call_times(&self) -> Vec<Instant> {
        self.lock().call_times.clone()
    }

    /// The gaps between consecutive calls.
    pub(crate) fn gaps(&self) -> Vec<Duration> {
        self.call_times()
            .windows(2)
            .map(|w| w[1].duration_since(w[0]))
            .collect()
    }

    /// Calls received for `tenant`.
    pub(crate) fn calls_for(&self, tenant: Option<&str>) -> usize {
        self.lock()
            .tenants
            .iter()
            .filter(|t| t.as_deref() == tenant)
            .count()
    }
}

fn respond(behaviour: &Behaviour) -> Result<Response, BoxError> {
    let response = |status: u16, retry_after: Option<u64>| {
        let mut builder = http::Response::builder().status(status);
        if let Some(secs) = retry_after {
            builder = builder.header(http::header::RETRY_AFTER, secs.to_string());
        }
        builder
            .body(if status == 200 { "ok" } else { "failed" }.to_owned())
            .map_err(|e| Box::new(e) as BoxError)
    };
    match behaviour {
        Behaviour::Ok | Behaviour::Delay(_) | Behaviour::Hang => response(200, None),
        Behaviour::Status(status) => response(*status, None),
        Behaviour::RetryAfter(status, secs) => response(*status, Some(*secs)),
        Behaviour::Transport => Err("connection reset by peer".into()),
        Behaviour::ClientError => Err(Box::new(Error::bad_request("no such order"))),
    }
}

/// Decrements the in-flight count when the call finishes or is dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Service<TestRequest> for Dependency {
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: TestRequest) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self.in_flight.clone());
        let behaviour = {
            let mut inner = self.lock();
            inner.call_times.push(Instant::now());
            inner.tenants.push(request.tenant.clone());
            let per_tenant = request
                .tenant
                .as_ref()
                .and_then(|t| inner.per_tenant.get(t).cloned());
            match per_tenant {
                Some(b) => b,
                None => match inner.script.pop_front() {
                    Some(b) => b,
                    None => inner.default.clone(),
                },
            }
        };
        let mut released = self.release.subscribe();
        let this = self.clone();
        Box::pin(async move {
            let _guard = guard;
            match behaviour {
                Behaviour::Delay(d) => {
                    tokio::time::sleep(d).await;
                    respond(&Behaviour::Ok)
                }
                Behaviour::Hang => {
                    // Sender lives in `this`, so `changed` only resolves on a release.
                    let _ = released.changed().await;
                    let after = this.lock().released_as.clone();
                    respond(&after)
                }
                other => respond(&other),
            }
        })
    }
}

/// A request with every knob middleware reads.
#[derive(Debug, Clone)]
pub(crate) struct TestRequest {
    pub(crate) priority: Priority,
    pub(crate) deadline: Option<SystemTime>,
    pub(crate) idempotent: bool,
    pub(crate) tenant: Option<String>,
}

impl Default for TestRequest {
    fn default() -> Self {
        TestRequest {
            priority: Priority::Normal,
            deadline: None,
            idempotent: true,
            tenant: None,
        }
    }
}

impl TestRequest {
    /// A normal-priority idempotent request without deadline or tenant.
    pub(crate) fn new() -> Self {
        Self::default()
    }
    /// With a priority.
    pub(crate) fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }
    /// With a deadline.
    pub(crate) fn with_deadline(mut self, deadline: SystemTime) -> Self {
        self.deadline = Some(deadline);
        self
    }
    /// Not idempotent (a POST).
    pub(crate) fn post(mut self) -> Self {
        self.idempotent = false;
        self
    }
    /// For a tenant.
    pub(crate) fn for_tenant(mut self, tenant: &str) -> Self {
        self.tenant = Some(tenant.to_owned());
        self
    }
}

impl RequestInfo for TestRequest {
    fn deadline(&self) -> Option<SystemTime> {
        self.deadline
    }
    fn is_idempotent(&self) -> bool {
        self.idempotent
    }
    fn priority(&self) -> Priority {
        self.priority
    }
}

/// The tenant key of a request, for keyed layers.
pub(crate) fn tenant_of(request: &TestRequest) -> Option<String> {
    request.tenant.clone()
}

/// A wall clock that follows tokio's (paused) time: a fixed base plus the tokio time elapsed
/// since the clock was made. Make it inside the runtime.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PausedClock {
    base: SystemTime,
    start: Instant,
}

impl PausedClock {
    pub(crate) fn new() -> Self {
        PausedClock {
            base: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            start: Instant::now(),
        }
    }
    /// The wall time `after` from now.
    pub(crate) fn in_(&self, after: Duration) -> SystemTime {
        self.now() + after
    }
}

impl WallClock for PausedClock {
    fn now(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }
}

/// The Lift error inside a boxed error; panics when it is something else.
pub(crate) fn lift_error(error: &BoxError) -> &Error {
    error
        .downcast_ref::<Error>()
        .unwrap_or_else(|| panic!("expected a lift_core::Error, got {error:?}"))
}

/// The Lift error of a failed result; panics on success or a foreign error.
pub(crate) fn expect_lift_err<T: std::fmt::Debug>(result: &Result<T, BoxError>) -> &Error {
    match result {
        Ok(response) => panic!("expected an error, got {response:?}"),
        Err(error) => lift_error(error),
    }
}

/// The status of a successful result; panics on error.
pub(crate) fn status(result: &Result<Response, BoxError>) -> u16 {
    match result {
        Ok(response) => response.status().as_u16(),
        Err(error) => panic!("expected a response, got error {error:?}"),
    }
}

/// Lets spawned tasks run until they block (without advancing paused time).
pub(crate) async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Sends one request through `service` once it is ready.
pub(crate) async fn call<S>(service: &mut S, request: TestRequest) -> Result<Response, BoxError>
where
    S: Service<TestRequest, Response = Response, Error = BoxError>,
{
    use tower::ServiceExt;
    service.ready().await?.call(request).await
}

/// A wall clock the test moves by hand; clones share the time.
#[derive(Clone, Default)]
pub(crate) struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub(crate) fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl WallClock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH
            + Duration::from_secs(1_800_000_000)
            + Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// Sets the tenant from `x-tenant-id`, as tenancy middleware would.
pub(crate) fn tenant_from_header(mut ctx: Context) -> Context {
    if let Some(tenant) = ctx.header("x-tenant-id").map(|t| TenantId(t.into())) {
        ctx.set_tenant(tenant);
    }
    ctx
}

/// Log output captured in memory (a `MakeWriter` for a test's subscriber).
#[derive(Clone, Default)]
pub(crate) struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    /// The JSON lines written so far.
    pub(crate) fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().expect("lock").clone();
        String::from_utf8(bytes)
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }
}

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}
