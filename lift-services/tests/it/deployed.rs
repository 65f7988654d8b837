//! End to end on the local emulator: two deployed functions (`alpha` and `beta`, the
//! `lift-services-test-function` binary behind an alias `live`) register themselves on their
//! first invocation, their records carry name, version, alias and endpoint, and `alpha`
//! discovers and calls `beta` by name through Lambda `Invoke`; `beta` is also called over
//! HTTP at its Function URL, signed with SigV4.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{Environment, FunctionCode, FunctionUrlAuthType, Runtime};
use lift_services::client::ServiceClient;
use lift_services::discovery::Discovery;
use lift_services::topology::Topology;
use lift_services::transport::{
    HttpTransport, LambdaTransport, Outbound, ServiceRequest, Transport,
};
use lift_services::{Endpoints, Instance, MemoryRegistry, Registry};
use serde_json::Value;

use crate::support::{dynamo_registry, lease};

/// A zip archive holding `bytes` as an executable `bootstrap` (deflated).
fn bootstrap_zip(bytes: &[u8]) -> Vec<u8> {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    let crc = crc.sum();
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("deflate");
    let deflated = encoder.finish().expect("deflate");
    let name = b"bootstrap";
    let size = u32::try_from(bytes.len()).expect("under 4 GB");
    let packed = u32::try_from(deflated.len()).expect("under 4 GB");
    let mut zip = Vec::with_capacity(deflated.len() + 200);
    // Local file header.
    zip.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    zip.extend_from_slice(&20u16.to_le_bytes()); // version needed
    zip.extend_from_slice(&0u16.to_le_bytes()); // flags
    zip.extend_from_slice(&8u16.to_le_bytes()); // deflate
    zip.extend_from_slice(&0u32.to_le_bytes()); // time, date
    zip.extend_from_slice(&crc.to_le_bytes());
    zip.extend_from_slice(&packed.to_le_bytes());
    zip.extend_from_slice(&size.to_le_bytes());
    zip.extend_from_slice(&(name.len() as u16).to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes()); // extra
    zip.extend_from_slice(name);
    zip.extend_from_slice(&deflated);
    let central = zip.len() as u32;
    // Central directory entry: made by Unix (3), mode 0755.
    zip.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    zip.extend_from_slice(&0x031Eu16.to_le_bytes());
    zip.extend_from_slice(&20u16.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip.extend_from_slice(&8u16.to_le_bytes());
    zip.extend_from_slice(&0u32.to_le_bytes());
    zip.extend_from_slice(&crc.to_le_bytes());
    zip.extend_from_slice(&packed.to_le_bytes());
    zip.extend_from_slice(&size.to_le_bytes());
    zip.extend_from_slice(&(name.len() as u16).to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes()); // extra
    zip.extend_from_slice(&0u16.to_le_bytes()); // comment
    zip.extend_from_slice(&0u16.to_le_bytes()); // disk
    zip.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
    zip.extend_from_slice(&((0o100_755u32) << 16).to_le_bytes());
    zip.extend_from_slice(&0u32.to_le_bytes()); // local header offset
    zip.extend_from_slice(name);
    let central_size = zip.len() as u32 - central;
    // End of central directory.
    zip.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip.extend_from_slice(&1u16.to_le_bytes());
    zip.extend_from_slice(&1u16.to_le_bytes());
    zip.extend_from_slice(&central_size.to_le_bytes());
    zip.extend_from_slice(&central.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip
}

/// Deploys the test function as `name`, published, behind the alias `live`; returns the
/// alias's ARN.
async fn deploy(
    lambda: &aws_sdk_lambda::Client,
    zip: &[u8],
    name: &str,
    service: &str,
    table: &str,
) -> String {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("endpoint");
    let environment = Environment::builder()
        .variables("AWS_ENDPOINT_URL", endpoint)
        .variables("AWS_ACCESS_KEY_ID", "test")
        .variables("AWS_SECRET_ACCESS_KEY", "test")
        .variables("LIFT_SERVICE_NAME", service)
        .variables("LIFT_REGISTRY_TABLE", table)
        .variables("LIFT_RENEW_SECONDS", "1")
        .build();
    lambda
        .create_function()
        .function_name(name)
        .runtime(Runtime::Providedal2023)
        .role("arn:aws:iam::000000000000:role/lift-test")
        .handler("bootstrap")
        .timeout(30)
        .environment(environment)
        .code(
            FunctionCode::builder()
                .zip_file(Blob::new(zip.to_vec()))
                .build(),
        )
        .send()
        .await
        .expect("create function");
    let version = lambda
        .publish_version()
        .function_name(name)
        .send()
        .await
        .expect("publish")
        .version
        .expect("version");
    lambda
        .create_alias()
        .function_name(name)
        .name("live")
        .function_version(version)
        .send()
        .await
        .expect("alias")
        .alias_arn
        .expect("alias arn")
}

async fn get(transport: &LambdaTransport, arn: &str, path: &str) -> Value {
    let instance = Instance::new("x", "x", "us-east-1", Endpoints::lambda(arn));
    let response = transport
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
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    serde_json::from_slice(&response.body).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployed_functions_register_and_call_each_other_by_name() {
    let registry = dynamo_registry().await;
    let sdk = lift_core::aws::sdk_config().await;
    let lambda = aws_sdk_lambda::Client::new(sdk);
    let binary = std::fs::read(env!("CARGO_BIN_EXE_lift-services-test-function")).expect("binary");
    let zip = bootstrap_zip(&binary);
    let suffix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_millis();
    let alpha_fn = format!("alpha-{suffix}");
    let beta_fn = format!("beta-{suffix}");
    let alpha = deploy(&lambda, &zip, &alpha_fn, "alpha", registry.table()).await;
    let beta = deploy(&lambda, &zip, &beta_fn, "beta", registry.table()).await;
    let transport = LambdaTransport::new(lambda.clone());

    // The first invocations: each function registers itself in the background.
    assert_eq!(get(&transport, &alpha, "/whoami").await["service"], "alpha");
    assert_eq!(get(&transport, &beta, "/whoami").await["service"], "beta");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (alpha_record, beta_record) = loop {
        let a = registry.instances("alpha").await.expect("query");
        let b = registry.instances("beta").await.expect("query");
        if a.len() == 1 && b.len() == 1 {
            break (a[0].clone(), b[0].clone());
        }
        assert!(Instant::now() < deadline, "the functions never registered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (record, function) in [(&alpha_record, &alpha_fn), (&beta_record, &beta_fn)] {
        assert_eq!(
            record.id.as_ref(),
            format!("{function}:live@us-east-1"),
            "{record:?}"
        );
        assert_eq!(record.alias.as_deref(), Some("live"));
        assert_eq!(record.version.as_deref(), Some("1"));
        assert_eq!(record.region, "us-east-1");
        assert!(
            record.is_live(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("time")
                    .as_millis() as u64
            )
        );
    }
    assert_eq!(
        alpha_record.endpoints.lambda_arn.as_deref(),
        Some(alpha.as_str())
    );
    assert_eq!(
        beta_record.endpoints.lambda_arn.as_deref(),
        Some(beta.as_str())
    );

    // alpha calls beta by name, and beta calls alpha.
    let answer = get(&transport, &alpha, "/call/beta").await;
    assert_eq!(answer["instance"], beta_record.id.as_ref());
    assert_eq!(answer["answer"]["service"], "beta");
    assert_eq!(answer["answer"]["caller"], "alpha");
    let back = get(&transport, &beta, "/call/alpha").await;
    assert_eq!(back["answer"]["service"], "alpha");
    assert_eq!(back["answer"]["caller"], "beta");

    // alpha's next lease renewal reports the call: the dependency map shows the edge.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        get(&transport, &alpha, "/whoami").await;
        let map = Topology::from_instances(&registry.scan().await.expect("scan"));
        if map.edges().any(|edge| edge == ("alpha", "beta", 1)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edge was never reported: {map:?}"
        );
    }
    // The `lift` command's registry views are tested in lift-cli (tests/registry.rs).

    // The second transport: HTTP to beta's Function URL (the emulator serves it by path),
    // signed with SigV4, through a client whose registry lists that URL.
    let url = lambda
        .create_function_url_config()
        .function_name(&beta_fn)
        .qualifier("live")
        .auth_type(FunctionUrlAuthType::None)
        .send()
        .await
        .expect("function URL")
        .function_url;
    let id = url
        .trim_start_matches("https://")
        .split('.')
        .next()
        .expect("url id")
        .to_owned();
    let local_url = format!(
        "{}/_aws/lambda-url/{id}/",
        std::env::var("AWS_ENDPOINT_URL").expect("endpoint")
    );
    let listed = Arc::new(MemoryRegistry::new());
    let mut by_url = Instance::new(
        "beta",
        format!("{beta_fn}:url@us-east-1"),
        "us-east-1",
        Endpoints::default().with_function_url(local_url),
    );
    by_url.alias = Some("live".to_owned());
    listed
        .register(&by_url, &lease("env", 0, u64::MAX / 2))
        .await
        .expect("list");
    let credentials = sdk.credentials_provider().expect("credentials");
    let http = HttpTransport::new().expect("transport").signed(credentials);
    let client = ServiceClient::builder(Discovery::new(listed), Arc::new(http))
        .caller("tests")
        .build()
        .expect("client");
    let reply = client
        .call("beta", ServiceRequest::get("/whoami"))
        .await
        .expect("HTTP call");
    let answer: Value = reply.json().expect("json");
    assert_eq!(answer["service"], "beta");
    assert_eq!(answer["caller"], "tests");

    for function in [&alpha_fn, &beta_fn] {
        let _ = lambda
            .delete_function()
            .function_name(function)
            .send()
            .await;
    }
}
