//! End to end on the local emulator: `alpha` and `beta` (the `mesh` binary deployed twice
//! by `template.yaml`, each behind the alias `live`) register themselves on their first
//! invocation in the stack's registry table, their records carry name, version, alias and
//! endpoints (beta's Function URL, which it looked up itself, included), and each calls
//! the other by name: through Lambda `Invoke`, and alpha calls beta over HTTP at its
//! IAM-authorized Function URL, signed with SigV4.
//!
//! `scripts/test.sh` deploys the stack and points `LIFT_STACK_FILE` at its outputs; without
//! it these tests fail loudly.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lift_services::topology::Topology;
use lift_services::transport::{LambdaTransport, Outbound, ServiceRequest, Transport};
use lift_services::{DynamoRegistry, Endpoints, Instance, Registry};
use serde_json::Value;

struct Deployed {
    alpha: String,
    beta: String,
    beta_url: String,
    registry: DynamoRegistry,
    lambda: aws_sdk_lambda::Client,
}

async fn deployed() -> Deployed {
    let output = |name: &str| {
        lift_core::testing::stack_output(name).unwrap_or_else(|e| {
            panic!("no deployment to test ({e}): run scripts/test.sh, which deploys the examples onto the emulator")
        })
    };
    let sdk = lift_core::aws::sdk_config().await;
    Deployed {
        alpha: output("MeshAlphaFunctionName"),
        beta: output("MeshBetaFunctionName"),
        beta_url: output("MeshBetaFunctionUrl"),
        registry: DynamoRegistry::new(
            aws_sdk_dynamodb::Client::new(sdk),
            output("ServiceRegistryTableName"),
        ),
        lambda: aws_sdk_lambda::Client::new(sdk),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64
}

impl Deployed {
    /// The ARN of `function`'s alias `live`.
    async fn live(&self, function: &str) -> String {
        self.lambda
            .get_alias()
            .function_name(function)
            .name("live")
            .send()
            .await
            .expect("the alias live")
            .alias_arn
            .expect("alias arn")
    }

    /// `GET path` on the function behind `arn`, through Lambda `Invoke`; the JSON answer.
    async fn get(&self, arn: &str, path: &str) -> Value {
        let instance = Instance::new("test", "test", "us-east-1", Endpoints::lambda(arn));
        let response = LambdaTransport::new(self.lambda.clone())
            .send(Outbound {
                instance: Arc::new(instance),
                request: Arc::new(ServiceRequest::get(path)),
                caller: None,
            })
            .await
            .expect("invoke");
        assert_eq!(
            response.status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&response.body)
        );
        serde_json::from_slice(&response.body).expect("json")
    }

    /// The live instance of `service`, once it has registered.
    async fn registered(&self, service: &str) -> Instance {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let instances = self.registry.instances(service).await.expect("query");
            if let Some(instance) = instances.iter().find(|i| i.is_live(now_ms())) {
                return instance.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{service} never registered: {instances:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployed_functions_register_and_call_each_other_by_name() {
    let d = deployed().await;
    let alpha = d.live(&d.alpha).await;
    let beta = d.live(&d.beta).await;

    // The first invocations: each function registers itself in the background.
    assert_eq!(d.get(&alpha, "/whoami").await["service"], "alpha");
    assert_eq!(d.get(&beta, "/whoami").await["service"], "beta");
    let alpha_record = d.registered("alpha").await;
    let beta_record = d.registered("beta").await;
    for (record, function, arn) in [
        (&alpha_record, &d.alpha, &alpha),
        (&beta_record, &d.beta, &beta),
    ] {
        assert_eq!(
            record.id.as_ref(),
            format!("{function}:live@us-east-1"),
            "{record:?}"
        );
        assert_eq!(record.alias.as_deref(), Some("live"));
        assert_eq!(record.version.as_deref(), Some("1"));
        assert_eq!(record.region, "us-east-1");
        assert_eq!(record.endpoints.lambda_arn.as_deref(), Some(arn.as_str()));
    }
    assert_eq!(alpha_record.endpoints.function_url, None);
    assert_eq!(
        beta_record.endpoints.function_url.as_deref(),
        Some(d.beta_url.as_str()),
        "beta registers the Function URL of its alias"
    );

    // alpha calls beta by name through Invoke, and beta calls alpha.
    let answer = d.get(&alpha, "/call/beta").await;
    assert_eq!(answer["via"], "invoke");
    assert_eq!(answer["instance"], beta_record.id.as_ref());
    assert_eq!(answer["answer"]["service"], "beta");
    assert_eq!(answer["answer"]["caller"], "alpha");
    assert_eq!(answer["answer"]["arn"], beta.as_str());
    let back = d.get(&beta, "/call/alpha").await;
    assert_eq!(back["answer"]["service"], "alpha");
    assert_eq!(back["answer"]["caller"], "beta");

    // alpha calls beta by name over HTTP: the Function URL from beta's record, signed.
    let answer = d.get(&alpha, "/call/beta?via=url").await;
    assert_eq!(answer["via"], "url");
    assert_eq!(answer["instance"], beta_record.id.as_ref());
    assert_eq!(answer["answer"]["service"], "beta");
    assert_eq!(answer["answer"]["caller"], "alpha");

    // A service nobody registered is a 404 naming it, not a hang nor a 500.
    let instance = Instance::new("test", "test", "us-east-1", Endpoints::lambda(&alpha));
    let missing = LambdaTransport::new(d.lambda.clone())
        .send(Outbound {
            instance: Arc::new(instance),
            request: Arc::new(ServiceRequest::get("/call/nobody")),
            caller: None,
        })
        .await
        .expect("invoke");
    assert_eq!(missing.status, 404, "{missing:?}");
    let error: Value = serde_json::from_slice(&missing.body).expect("an error body");
    assert_eq!(error["error"]["code"], "service_not_found", "{error}");

    // alpha's lease renewals (every 2 s on the emulator) report its calls: the dependency
    // map shows both edges.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        d.get(&alpha, "/whoami").await;
        d.get(&beta, "/whoami").await;
        let map = Topology::from_instances(&d.registry.scan().await.expect("scan"));
        let edges: Vec<_> = map.edges().collect();
        if edges
            .iter()
            .any(|&(from, to, n)| (from, to) == ("alpha", "beta") && n >= 2)
            && edges
                .iter()
                .any(|&(from, to, _)| (from, to) == ("beta", "alpha"))
        {
            let mermaid = map.mermaid();
            assert!(mermaid.contains("alpha -->"), "{mermaid}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the calls were never reported: {edges:?}"
        );
    }
}
