//! The local emulator's DynamoDB for the tests that need it, and instances to register.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use lift_services::{DynamoRegistry, Endpoints, EnvLease, EnvReport, Instance};

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
