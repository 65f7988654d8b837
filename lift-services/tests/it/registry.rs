//! The registry contract, run against DynamoDB on the emulator and against the in-memory
//! registry: the same assertions for both.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;

use lift_services::{Health, MemoryRegistry, Registry, RegistryError};

use crate::support::{dynamo_registry, instance, lease};

const T0: u64 = 1_800_000_000_000;

async fn one(registry: &dyn Registry, service: &str) -> lift_services::Instance {
    let mut all = registry.instances(service).await.expect("query");
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

async fn registers_renews_and_releases(registry: &dyn Registry) {
    let payments = instance("payments", "payments:live@eu-west-1");
    let stored = registry
        .register(&payments, &lease("env-a", T0, T0 + 60_000))
        .await
        .expect("register");
    assert_eq!(stored.environments.len(), 1);
    assert_eq!(stored.revision, 1);

    registry
        .register(&payments, &lease("env-b", T0 + 5, T0 + 70_000))
        .await
        .expect("a second environment");
    let read = one(registry, "payments").await;
    assert_eq!(read.id.as_ref(), "payments:live@eu-west-1");
    assert_eq!(read.version.as_deref(), Some("3"));
    assert_eq!(read.alias.as_deref(), Some("live"));
    assert_eq!(read.region, "eu-west-1");
    assert_eq!(
        read.endpoints.lambda_arn.as_deref(),
        Some("arn:aws:lambda:eu-west-1:123456789012:function:payments:live@eu-west-1")
    );
    assert_eq!(read.tags, vec!["pci".to_owned()]);
    assert_eq!(
        read.metadata.get("team").map(String::as_str),
        Some("billing")
    );
    assert_eq!(read.expires_at_ms(), T0 + 70_000);
    assert_eq!(read.revision, 2);
    assert!(read.is_live(T0 + 65_000));
    assert!(!read.is_live(T0 + 70_000), "expiry is read in code");

    // A renewal reports health, and prunes an environment seen expired.
    let mut renewal = lease("env-a", T0, T0 + 120_000);
    renewal.report.reported_at_ms = T0 + 80_000;
    renewal.report.error_rate = 0.9;
    let renewed = registry
        .renew("payments", &payments.id, &renewal, &["env-b".to_owned()])
        .await
        .expect("renew");
    assert_eq!(renewed.revision, 3);
    assert_eq!(renewed.environments.len(), 1);
    assert_eq!(renewed.health(T0 + 1), Health::Unhealthy);

    // An environment the renewer saw expired, but which renewed since, keeps its lease.
    registry
        .register(&payments, &lease("env-c", T0 + 90_000, T0 + 500_000))
        .await
        .expect("env-c");
    let mut stale_view = lease("env-a", T0, T0 + 130_000);
    stale_view.report.reported_at_ms = T0 + 100_000;
    let renewed = registry
        .renew("payments", &payments.id, &stale_view, &["env-c".to_owned()])
        .await
        .expect("renew");
    assert!(renewed.environments.contains_key("env-c"), "{renewed:?}");
    registry
        .release("payments", &payments.id, "env-c")
        .await
        .expect("release env-c");

    registry
        .release("payments", &payments.id, "env-a")
        .await
        .expect("release");
    let read = one(registry, "payments").await;
    assert!(read.environments.is_empty());
    assert!(!read.is_live(T0), "no lease left");
    assert_eq!(read.revision, 7);
    assert!(
        registry
            .instances("orders")
            .await
            .expect("query")
            .is_empty(),
        "another service's query"
    );
}

async fn a_renewal_never_creates(registry: &dyn Registry) {
    let result = registry
        .renew("payments", "ghost", &lease("env-a", T0, T0 + 1), &[])
        .await;
    assert!(
        matches!(result, Err(RegistryError::NotFound { .. })),
        "{result:?}"
    );
    assert!(
        registry
            .instances("payments")
            .await
            .expect("query")
            .is_empty()
    );
}

async fn a_deregistered_instance_stays_gone(registry: &dyn Registry) {
    let payments = instance("payments", "payments:1@eu-west-1");
    registry
        .register(&payments, &lease("env-a", T0, T0 + 60_000))
        .await
        .expect("register");
    registry
        .deregister("payments", &payments.id, T0 + 10, T0 / 1000 + 86_400)
        .await
        .expect("deregister");
    let read = one(registry, "payments").await;
    assert!(read.deregistered && !read.is_live(T0 + 11));

    // The environment that was running keeps trying: neither renewal nor registration
    // brings the instance back.
    let renewal = registry
        .renew(
            "payments",
            &payments.id,
            &lease("env-a", T0, T0 + 90_000),
            &[],
        )
        .await;
    assert!(
        matches!(renewal, Err(RegistryError::Deregistered { .. })),
        "{renewal:?}"
    );
    let again = registry
        .register(&payments, &lease("env-c", T0 + 5, T0 + 90_000))
        .await;
    assert!(
        matches!(again, Err(RegistryError::Deregistered { .. })),
        "{again:?}"
    );
    let health = registry
        .set_health("payments", &payments.id, Some(Health::Healthy))
        .await;
    assert!(
        matches!(health, Err(RegistryError::Deregistered { .. })),
        "{health:?}"
    );
    let read = one(registry, "payments").await;
    assert!(read.deregistered && read.environments.is_empty());

    // A new deployment (another version, in an environment started after the
    // deregistration) registers anew.
    let mut deployed = payments.clone();
    deployed.version = Some("4".to_owned());
    registry
        .register(&deployed, &lease("env-new", T0 + 20, T0 + 90_000))
        .await
        .expect("a newer environment registers again");
    let read = one(registry, "payments").await;
    assert!(!read.deregistered && read.is_live(T0 + 30));
    assert_eq!(read.environments.keys().collect::<Vec<_>>(), ["env-new"]);
}

/// A deregistered version stays out, whenever its environments start; the next
/// deployment (another version) registers anew, and so does an instance that names no
/// version, for which only the start time can tell.
async fn a_deregistered_version_stays_out_of_later_environments(registry: &dyn Registry) {
    let mut v1 = instance("payments", "payments:live@eu-west-1");
    v1.version = Some("1".to_owned());
    registry
        .register(&v1, &lease("env-a", T0, T0 + 60_000))
        .await
        .expect("register");
    registry
        .deregister("payments", &v1.id, T0 + 10, T0 / 1000 + 86_400)
        .await
        .expect("deregister");
    // Lambda starts another environment of version 1 (scaling out, replacing one).
    let again = registry
        .register(&v1, &lease("env-b", T0 + 20, T0 + 90_000))
        .await;
    assert!(
        matches!(again, Err(RegistryError::Deregistered { .. })),
        "{again:?}"
    );
    assert!(one(registry, "payments").await.deregistered);

    let mut v2 = v1.clone();
    v2.version = Some("2".to_owned());
    registry
        .register(&v2, &lease("env-c", T0 + 30, T0 + 90_000))
        .await
        .expect("the next deployment registers");
    let read = one(registry, "payments").await;
    assert!(!read.deregistered && read.is_live(T0 + 40));
    assert_eq!(read.version.as_deref(), Some("2"));

    registry
        .deregister("payments", &v2.id, T0 + 50, T0 / 1000 + 86_400)
        .await
        .expect("deregister");
    let mut unversioned = v1.clone();
    unversioned.version = None;
    registry
        .register(&unversioned, &lease("env-d", T0 + 60, T0 + 90_000))
        .await
        .expect("no version: a later environment registers");
    assert!(!one(registry, "payments").await.deregistered);

    // `$LATEST` is every deployment of an unpublished function: only the start time tells.
    let mut latest = v1.clone();
    latest.version = Some("$LATEST".to_owned());
    registry
        .register(&latest, &lease("env-e", T0 + 70, T0 + 90_000))
        .await
        .expect("register");
    registry
        .deregister("payments", &latest.id, T0 + 80, T0 / 1000 + 86_400)
        .await
        .expect("deregister");
    let before = registry
        .register(&latest, &lease("env-f", T0 + 75, T0 + 90_000))
        .await;
    assert!(
        matches!(before, Err(RegistryError::Deregistered { .. })),
        "{before:?}"
    );
    registry
        .register(&latest, &lease("env-g", T0 + 90, T0 + 90_000))
        .await
        .expect("$LATEST: a later environment (a redeploy) registers");
    assert!(!one(registry, "payments").await.deregistered);
}

async fn an_operator_marks_an_instance_unhealthy(registry: &dyn Registry) {
    let payments = instance("payments", "payments:2@eu-west-1");
    registry
        .register(&payments, &lease("env-a", T0, T0 + 60_000))
        .await
        .expect("register");
    registry
        .set_health("payments", &payments.id, Some(Health::Unhealthy))
        .await
        .expect("set");
    assert_eq!(
        one(registry, "payments").await.health(T0),
        Health::Unhealthy
    );
    // A re-registration does not clear an operator's verdict.
    registry
        .register(&payments, &lease("env-b", T0, T0 + 60_000))
        .await
        .expect("register");
    assert_eq!(
        one(registry, "payments").await.health(T0),
        Health::Unhealthy
    );
    registry
        .set_health("payments", &payments.id, None)
        .await
        .expect("clear");
    assert_eq!(one(registry, "payments").await.health(T0), Health::Healthy);
}

async fn concurrent_registrations_are_all_kept(registry: Arc<dyn Registry>) {
    let mut tasks = Vec::new();
    for n in 0..64 {
        let registry = registry.clone();
        tasks.push(tokio::spawn(async move {
            // Half register their own instance, half add an environment to a shared one;
            // everyone also reads.
            let id = if n % 2 == 0 {
                format!("payments:{n}@eu-west-1")
            } else {
                "payments:shared@eu-west-1".to_owned()
            };
            registry
                .register(
                    &instance("payments", &id),
                    &lease(&format!("env-{n}"), T0, T0 + 60_000),
                )
                .await
                .expect("register");
            registry.instances("payments").await.expect("query");
        }));
    }
    for task in tasks {
        task.await.expect("no panic");
    }
    let all = registry.instances("payments").await.expect("query");
    assert_eq!(all.len(), 33, "32 own instances and the shared one");
    let shared = all
        .iter()
        .find(|i| i.id.as_ref() == "payments:shared@eu-west-1")
        .expect("shared");
    assert_eq!(shared.environments.len(), 32, "no lost environment");
}

/// A tag given twice is stored once: DynamoDB refuses a string set that repeats a value,
/// which made every registration write of such an instance fail.
async fn a_repeated_tag_is_stored_once(registry: &dyn Registry) {
    let mut payments = instance("payments", "payments:live@eu-west-1");
    payments.tags = vec!["pci".to_owned(), "gpu".to_owned(), "pci".to_owned()];
    registry
        .register(&payments, &lease("env-a", T0, T0 + 60_000))
        .await
        .expect("register");
    let mut tags = one(registry, "payments").await.tags;
    tags.sort();
    assert_eq!(tags, ["gpu", "pci"]);
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&MemoryRegistry::new()).await;
                }
            )*
        }
        mod dynamodb {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&dynamo_registry().await).await;
                }
            )*
        }
    };
}

contract!(
    registers_renews_and_releases,
    a_renewal_never_creates,
    a_deregistered_instance_stays_gone,
    a_deregistered_version_stays_out_of_later_environments,
    an_operator_marks_an_instance_unhealthy,
    a_repeated_tag_is_stored_once,
);

#[tokio::test]
async fn memory_concurrent_registrations_are_all_kept() {
    concurrent_registrations_are_all_kept(Arc::new(MemoryRegistry::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_concurrent_registrations_are_all_kept() {
    concurrent_registrations_are_all_kept(Arc::new(dynamo_registry().await)).await;
}

/// An item of the service that does not decode (written by hand, or by another version)
/// is left out; the service's other instances are still found.
#[tokio::test]
async fn a_malformed_item_does_not_hide_the_other_instances() {
    let registry = crate::support::dynamo_registry().await;
    let instance = crate::support::instance("payments", "good");
    registry
        .register(
            &instance,
            &crate::support::lease("env", 1_000, u64::MAX / 2),
        )
        .await
        .expect("register");
    crate::support::client()
        .await
        .put_item()
        .table_name(registry.table())
        .item("pk", AttributeValue::S("svc#payments".into()))
        .item("sk", AttributeValue::S("i#broken".into()))
        .item("status", AttributeValue::N("7".into()))
        .send()
        .await
        .expect("put");
    let found = registry.instances("payments").await.expect("instances");
    let ids: Vec<&str> = found.iter().map(|i| &*i.id).collect();
    assert_eq!(ids, ["good"]);
}

/// An environment entry without a lease end (written by hand, or by another version)
/// counts as ended: the instance is still found through its other environment, and that
/// environment's next renewal prunes the entry. (The whole instance was left out of
/// discovery, and no renewal could remove the entry.)
#[tokio::test]
async fn an_environment_entry_without_a_lease_end_is_pruned_not_fatal() {
    let registry = crate::support::dynamo_registry().await;
    let instance = crate::support::instance("payments", "good");
    registry
        .register(&instance, &crate::support::lease("env-a", T0, T0 + 600_000))
        .await
        .expect("register");
    for (env, value) in [
        (
            "no-end",
            AttributeValue::M([("at".to_owned(), AttributeValue::N("1".into()))].into()),
        ),
        ("not-a-map", AttributeValue::S("x".into())),
    ] {
        crate::support::client()
            .await
            .update_item()
            .table_name(registry.table())
            .key("pk", AttributeValue::S("svc#payments".into()))
            .key("sk", AttributeValue::S("i#good".into()))
            .update_expression("SET envs.#e = :v")
            .expression_attribute_names("#e", env)
            .expression_attribute_values(":v", value)
            .send()
            .await
            .expect("update");
    }
    let found = one(&registry, "payments").await;
    assert!(found.is_live(T0 + 1), "{found:?}");
    assert_eq!(found.environments.len(), 3);
    let mut renewal = crate::support::lease("env-a", T0, T0 + 700_000);
    renewal.report.reported_at_ms = T0 + 100_000;
    let renewed = registry
        .renew(
            "payments",
            &instance.id,
            &renewal,
            &["no-end".to_owned(), "not-a-map".to_owned()],
        )
        .await
        .expect("renew");
    assert_eq!(
        renewed.environments.keys().collect::<Vec<_>>(),
        ["env-a"],
        "{renewed:?}"
    );
}

/// The item's `ttl` covers its longest lease, whichever environment wrote last: a
/// half-hour lease renewed after a month-long one does not let DynamoDB delete the item
/// while the long lease runs.
#[tokio::test]
async fn the_item_ttl_covers_the_longest_lease() {
    let registry = crate::support::dynamo_registry().await;
    let client = crate::support::client().await;
    let instance = crate::support::instance("payments", "a");
    let now = 1_800_000_000_000u64;
    let month = crate::support::lease("deploy", now, now + 30 * 86_400_000);
    let half_hour = crate::support::lease("env-1", now, now + 1_800_000);
    registry.register(&instance, &month).await.expect("deploy");
    registry
        .register(&instance, &half_hour)
        .await
        .expect("env-1");
    let ttl = || async {
        client
            .get_item()
            .table_name(registry.table())
            .key("pk", AttributeValue::S("svc#payments".into()))
            .key("sk", AttributeValue::S("i#a".into()))
            .consistent_read(true)
            .send()
            .await
            .expect("get")
            .item
            .expect("item")["ttl"]
            .as_n()
            .expect("ttl")
            .parse::<u64>()
            .expect("number")
    };
    assert_eq!(ttl().await, month.ttl_s, "after a shorter registration");
    registry
        .renew("payments", "a", &half_hour, &[])
        .await
        .expect("renew");
    assert_eq!(ttl().await, month.ttl_s, "after a shorter renewal");
}
