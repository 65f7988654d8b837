//! The local emulator's DynamoDB for the tests that need it, instances to register, and a
//! registry that counts its calls.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use futures_util::future::BoxFuture;
use lift_middleware::dynamo::DynamoError;
use lift_services::{
    DynamoRegistry, Endpoints, EnvLease, EnvReport, Health, Instance, Registry, RegistryError,
};

/// A client of the emulator; fails loudly when the emulator is not configured.
pub(crate) async fn client() -> Client {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
    );
    Client::new(lift_core::aws::sdk_config().await)
}

/// A fresh registry table (`pk`, `sk`) on the emulator.
pub(crate) async fn dynamo_registry() -> DynamoRegistry {
    let client = client().await;
    let name = format!(
        "registry-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("time")
            .as_nanos()
    );
    DynamoRegistry::create_table(client, name)
        .await
        .expect("create table")
}

/// An instance of `service` named `id`, reachable by a qualified ARN.
pub(crate) fn instance(service: &str, id: &str) -> Instance {
    let mut instance = Instance::new(
        service,
        id,
        "eu-west-1",
        Endpoints::lambda(format!(
            "arn:aws:lambda:eu-west-1:123456789012:function:{id}"
        )),
    );
    instance.version = Some("3".to_owned());
    instance.alias = Some("live".to_owned());
    instance.metadata = BTreeMap::from([("team".to_owned(), "billing".to_owned())]);
    instance.tags = vec!["pci".to_owned()];
    instance
}

/// A lease of `env` started at `started`, expiring at `expires`.
pub(crate) fn lease(env: &str, started: u64, expires: u64) -> EnvLease {
    EnvLease::new(
        env,
        started,
        EnvReport::new(expires, started, 0.0, 0),
        expires / 1000 + 86_400,
    )
}

/// A registry that counts its queries and writes, and whose queries can be made to fail
/// or slow.
pub(crate) struct Counting<R> {
    inner: R,
    /// `instances` calls.
    pub(crate) queries: AtomicU64,
    /// `register` and `renew` calls.
    pub(crate) writes: AtomicU64,
    /// `instances` fails (throttled).
    pub(crate) failing: AtomicBool,
    /// `instances` takes 50 ms.
    pub(crate) slow: AtomicBool,
    /// `instances` takes 10 s (a table that does not answer).
    pub(crate) stalled: AtomicBool,
}

impl<R> Counting<R> {
    pub(crate) fn new(inner: R) -> Self {
        Counting {
            inner,
            queries: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            slow: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
        }
    }
}

impl<R: Registry> Registry for Counting<R> {
    fn register<'a>(
        &'a self,
        i: &'a Instance,
        l: &'a EnvLease,
    ) -> BoxFuture<'a, Result<Instance, RegistryError>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.register(i, l)
    }
    fn renew<'a>(
        &'a self,
        s: &'a str,
        i: &'a str,
        l: &'a EnvLease,
        p: &'a [String],
    ) -> BoxFuture<'a, Result<Instance, RegistryError>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.renew(s, i, l, p)
    }
    fn release<'a>(
        &'a self,
        s: &'a str,
        i: &'a str,
        e: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        self.inner.release(s, i, e)
    }
    fn deregister<'a>(
        &'a self,
        s: &'a str,
        i: &'a str,
        at: u64,
        ttl: u64,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        self.inner.deregister(s, i, at, ttl)
    }
    fn set_health<'a>(
        &'a self,
        s: &'a str,
        i: &'a str,
        h: Option<Health>,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        self.inner.set_health(s, i, h)
    }
    fn scan(&self) -> BoxFuture<'_, Result<Vec<Instance>, RegistryError>> {
        self.inner.scan()
    }
    fn instances<'a>(&'a self, s: &'a str) -> BoxFuture<'a, Result<Vec<Instance>, RegistryError>> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let failing = self.failing.load(Ordering::SeqCst);
        let slow = self.slow.load(Ordering::SeqCst);
        let stalled = self.stalled.load(Ordering::SeqCst);
        Box::pin(async move {
            if slow {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if stalled {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            if failing {
                return Err(RegistryError::Dynamo(DynamoError::Throttled {
                    operation: "Query",
                    code: "ThrottlingException".to_owned(),
                }));
            }
            self.inner.instances(s).await
        })
    }
}
