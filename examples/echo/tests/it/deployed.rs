//! The examples deployed from `template.yaml` onto the local AWS emulator, invoked for real:
//! through the Lambda Invoke API (the AWS SDK) and through their Function URLs (HTTP).
//!
//! `scripts/test.sh` starts the emulator, builds and deploys the functions and points
//! `LIFT_STACK_FILE` at the deployment's outputs before the tests run. Without it these
//! tests fail loudly: they never pretend to pass.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_lambda::primitives::Blob;
use lift_core::testing::{HttpResponse, TestApp, events, fixture};
use serde_json::{Value, json};

struct Function {
    name: String,
    local_url: String,
}

fn stack() -> Value {
    lift_core::testing::deployed_stack().unwrap_or_else(|e| {
        panic!("no deployment to test ({e}): run scripts/test.sh, which deploys the examples onto the emulator")
    })
}

fn function(name: &str) -> Function {
    let stack = stack();
    let entry = &stack["functions"][name];
    Function {
        name: entry["name"].as_str().expect("function name").to_owned(),
        local_url: entry["local_url"].as_str().expect("local url").to_owned(),
    }
}

async fn lambda() -> aws_sdk_lambda::Client {
    aws_sdk_lambda::Client::new(lift_core::aws::sdk_config().await)
}

/// Invokes `function` with `event`; `Err` carries the function error's payload.
async fn invoke(
    client: &aws_sdk_lambda::Client,
    function: &str,
    event: &Value,
) -> Result<Value, Value> {
    let output = client
        .invoke()
        .function_name(function)
        .payload(Blob::new(serde_json::to_vec(event).expect("event")))
        .send()
        .await
        .expect("the Invoke call itself succeeds");
    let payload: Value = output
        .payload()
        .map(|blob| serde_json::from_slice(blob.as_ref()).expect("payload is JSON"))
        .unwrap_or(Value::Null);
    match output.function_error() {
        Some(_) => Err(payload),
        None => Ok(payload),
    }
}

/// One HTTP/1.1 request over a plain socket to the emulator's Function URL endpoint.
fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("plain http url");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = TcpStream::connect(host).expect("connect to the emulator");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let body = body.unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, payload) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(payload)
        } else {
            payload.to_owned()
        },
    )
}

fn dechunk(mut payload: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = payload.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        payload = rest[size..].trim_start_matches("\r\n");
    }
    out
}

#[tokio::test]
async fn hello_answers_through_its_function_url() {
    let hello = function("hello");
    let (status, body) = http("GET", &format!("{}hello/world", hello.local_url), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!({"message": "Hello, world!"})
    );

    let (status, body) = http(
        "POST",
        &format!("{}greetings", hello.local_url),
        Some(r#"{"name": "Ada"}"#),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["message"],
        "Hello, Ada!"
    );

    let (status, body) = http(
        "POST",
        &format!("{}greetings", hello.local_url),
        Some(r#"{"name": ""}"#),
    );
    assert_eq!(status, 422, "{body}");
    let error: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(error["error"]["code"], "validation_failed");
    assert_eq!(error["error"]["fields"][0]["pointer"], "/name");

    let (status, body) = http("GET", &format!("{}nowhere", hello.local_url), None);
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn hello_answers_through_the_invoke_api() {
    let client = lambda().await;
    let hello = function("hello");
    let response = invoke(
        &client,
        &hello.name,
        &events::http("GET", "/hello/lift").v2(),
    )
    .await
    .expect("no function error");
    let response = HttpResponse::from_value(&response).expect("HTTP response");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json::<Value>().expect("json"),
        json!({"message": "Hello, lift!"})
    );

    let malformed = events::http("POST", "/greetings")
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .v1();
    let response = invoke(&client, &hello.name, &malformed)
        .await
        .expect("no function error");
    let response = HttpResponse::from_value(&response).expect("HTTP response");
    assert_eq!(response.status, 400);
    let body: Value = response.json().expect("json");
    assert_eq!(body["error"]["code"], "malformed_json");
    assert!(
        body["error"]["requestId"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{body}"
    );
}

/// The deployed echo binary answers every fixture exactly as the in-process App does.
#[tokio::test]
async fn deployed_echo_matches_in_process_echo_for_every_fixture() {
    let client = lambda().await;
    let echo_fn = function("echo");
    let local = TestApp::new(echo::app()).expect("echo app");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/events");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures folder") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let event = fixture(&path).expect("fixture");
        let deployed = invoke(&client, &echo_fn.name, &event)
            .await
            .unwrap_or_else(|e| panic!("{}: function error {e}", path.display()));
        let expected = local.invoke(&event).await.expect("in-process");
        assert_eq!(deployed, expected, "{}", path.display());
        checked += 1;
    }
    assert!(checked >= 11, "only {checked} fixtures");
}

#[tokio::test]
async fn deployed_echo_reports_batch_failures_and_unknown_events() {
    let client = lambda().await;
    let echo_fn = function("echo");
    let response = invoke(
        &client,
        &echo_fn.name,
        &events::sqs(["ok", "this one should fail", "fine", "fail again"]),
    )
    .await
    .expect("no function error");
    assert_eq!(lift_core::testing::batch_failures(&response), ["m1", "m3"]);

    let error = invoke(&client, &echo_fn.name, &json!({"what": "is this"}))
        .await
        .expect_err("an unknown event is a function error");
    assert_eq!(error["errorType"], "Lift.no_handler", "{error}");
    assert!(
        error["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("what")),
        "{error}"
    );
}
