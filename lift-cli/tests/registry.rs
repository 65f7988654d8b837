//! `lift services`, `lift instances` and `lift map` against a registry on the local
//! emulator.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use lift_cli::{CliError, run};
use lift_services::{DynamoRegistry, Endpoints, EnvLease, EnvReport, Instance, Registry};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn registry() -> (DynamoRegistry, String) {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
    );
    let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
    // Tests run at once: the time alone can name two tables the same.
    let table = format!("registry-{}-{:08x}", now_ms(), fastrand::u32(..));
    let registry = DynamoRegistry::create_table(client, table.clone())
        .await
        .unwrap();
    (registry, table)
}

async fn try_lift(args: &[&str], table: &str) -> Result<String, lift_cli::CliError> {
    run(args
        .iter()
        .map(|a| (*a).to_owned())
        .chain(["--table".to_owned(), table.to_owned()]))
    .await
}

async fn lift(args: &[&str], table: &str) -> String {
    try_lift(args, table).await.unwrap()
}

#[tokio::test]
async fn lists_services_and_instances_and_draws_the_map() {
    let (registry, table) = registry().await;
    let now = now_ms();
    for (service, calls) in [("alpha", vec![("beta", 3)]), ("beta", vec![])] {
        let instance = Instance::new(
            service,
            format!("{service}-fn:live@us-east-1"),
            "us-east-1",
            Endpoints::lambda(format!(
                "arn:aws:lambda:us-east-1:123456789012:function:{service}-fn:live"
            )),
        );
        let mut report = EnvReport::new(now + 60_000, now, 0.0, 0);
        report.calls = calls
            .into_iter()
            .map(|(to, n)| (to.to_owned(), n))
            .collect::<BTreeMap<_, _>>();
        let lease = EnvLease::new("env-1", now, report, now / 1000 + 86_400);
        registry.register(&instance, &lease).await.unwrap();
    }

    let services = lift(&["services"], &table).await;
    assert!(services.starts_with("SERVICE"), "{services}");
    assert!(
        services.lines().any(|l| l.starts_with("alpha ")),
        "{services}"
    );
    assert!(
        services.lines().any(|l| l.starts_with("beta ")),
        "{services}"
    );
    let instances = lift(&["instances", "beta"], &table).await;
    assert!(
        instances.contains("beta-fn:live@us-east-1") && instances.contains("healthy"),
        "{instances}"
    );
    assert!(!instances.contains("alpha-fn"), "{instances}");
    let svg = std::env::temp_dir().join(format!("lift-map-{now}.svg"));
    let mermaid = lift(&["map", "--svg", svg.to_str().unwrap()], &table).await;
    assert!(mermaid.contains("alpha --> |3| beta"), "{mermaid}");
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg") && picture.contains(">alpha<"));
    let _ = std::fs::remove_file(svg);
}

#[tokio::test]
async fn registers_a_function_alias_before_its_first_invocation() {
    let (registry, table) = registry().await;
    let arn = "arn:aws:lambda:us-east-1:123456789012:function:inventory-fn:live";
    let out = lift(
        &["register", "inventory", "--arn", arn, "--hours", "2"],
        &table,
    )
    .await;
    assert!(
        out.contains("registered inventory-fn:live@us-east-1")
            && out.contains("shared by every tenant"),
        "{out}"
    );
    let instances = registry.instances("inventory").await.unwrap();
    assert_eq!(instances.len(), 1);
    let instance = &instances[0];
    // The id the function's own environments register, so their leases join this one.
    assert_eq!(&*instance.id, "inventory-fn:live@us-east-1");
    assert_eq!(instance.alias.as_deref(), Some("live"));
    assert_eq!(instance.endpoints.lambda_arn.as_deref(), Some(arn));
    let now = now_ms();
    assert!(instance.is_live(now));
    let lease_end = instance.environments["deploy"].expires_at_ms;
    assert!(
        lease_end > now + 7_000_000 && lease_end <= now + 7_200_000,
        "{lease_end}"
    );

    // Running it again renews the same lease instead of adding one.
    lift(&["register", "inventory", "--arn", arn], &table).await;
    let instances = registry.instances("inventory").await.unwrap();
    assert_eq!(instances[0].environments.len(), 1);
    assert!(instances[0].environments["deploy"].expires_at_ms > now + 100 * 3_600_000);

    // Wrong input is refused before anything is written.
    assert!(try_lift(&["register", "inventory"], &table).await.is_err());
    assert!(
        try_lift(&["register", "inventory", "--arn", "not-an-arn"], &table)
            .await
            .is_err()
    );
    assert!(
        try_lift(&["register", "", "--arn", arn], &table)
            .await
            .is_err()
    );
    assert!(
        try_lift(
            &["register", "inventory", "--arn", arn, "--hours", "x"],
            &table
        )
        .await
        .is_err()
    );
    for refused in [
        // An unqualified ARN would register `$LATEST`, not the alias callers reach.
        vec![
            "--arn",
            "arn:aws:lambda:us-east-1:123456789012:function:inventory-fn",
        ],
        vec!["--arn", arn, "--hours", "0"],
        // One hour past the registry's longest lease: the CLI's own range message.
        vec!["--arn", arn, "--hours", "8761"],
        vec!["--arn", arn, "--hours", "18446744073709551615"],
    ] {
        let mut line = vec!["register", "inventory"];
        line.extend(refused);
        assert!(
            matches!(try_lift(&line, &table).await, Err(CliError::Usage(_))),
            "{line:?}"
        );
    }
    let unknown = try_lift(&["instances", "invntory"], &table).await;
    assert!(
        matches!(&unknown, Err(CliError::Failed(m)) if m.contains("no instances of invntory")),
        "{unknown:?}"
    );
}

/// A tenant's dedicated instance, registered by its environments, stays that tenant's when
/// a deployment runs `lift register` for it: only the deploy lease is written.
#[tokio::test]
async fn registering_a_running_instance_keeps_its_tenant_and_settings() {
    let (registry, table) = registry().await;
    let arn = "arn:aws:lambda:us-east-1:123456789012:function:payments-acme:live";
    let now = now_ms();
    let mut instance = Instance::new(
        "payments",
        "payments-acme:live@us-east-1",
        "us-east-1",
        Endpoints::lambda(arn),
    );
    instance.tenant = Some("acme".to_owned());
    instance.weight = 40;
    let report = EnvReport::new(now + 60_000, now, 0.0, 0);
    registry
        .register(
            &instance,
            &EnvLease::new("env-1", now, report, now / 1000 + 86_400),
        )
        .await
        .unwrap();
    let out = lift(&["register", "payments", "--arn", arn], &table).await;
    assert!(
        out.contains("renewed the deploy lease") && out.contains("tenant acme"),
        "{out}"
    );
    let stored = registry.instances("payments").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].tenant.as_deref(), Some("acme"));
    assert_eq!(stored[0].weight, 40);
    let mut envs: Vec<&str> = stored[0].environments.keys().map(String::as_str).collect();
    envs.sort_unstable();
    assert_eq!(envs, ["deploy", "env-1"]);

    // A new tenant's function registered ahead of its first invocation is that tenant's.
    let arn = "arn:aws:lambda:us-east-1:123456789012:function:payments-globex:live";
    let out = lift(
        &["register", "payments", "--arn", arn, "--tenant", "globex"],
        &table,
    )
    .await;
    assert!(out.contains("tenant globex"), "{out}");
    let globex = registry
        .instances("payments")
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.endpoints.lambda_arn.as_deref() == Some(arn))
        .unwrap();
    assert_eq!(globex.tenant.as_deref(), Some("globex"));
}
