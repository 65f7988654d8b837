//! Graceful shutdown over the real Runtime and Extensions API protocols: the `mesh` binary
//! runs as a child process against a Runtime API this test plays on loopback, with the
//! emulator's DynamoDB as its registry. Asked to (`MESH_SHUTDOWN_EXTENSION=on`), it
//! registers an internal extension before its first `next` (so that Lambda would send it
//! SIGTERM), serves one invocation, registers itself, and on SIGTERM releases its
//! environment's lease and exits; by default it registers no extension.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lift_services::{DynamoRegistry, Registry};

/// What the fake API saw, in order: `register`, `extension-next`, `runtime-next`,
/// `response <body>`.
#[derive(Default)]
struct Seen {
    calls: Mutex<Vec<String>>,
    changed: Condvar,
    invocations: Mutex<VecDeque<Vec<u8>>>,
}

impl Seen {
    fn record(&self, call: String) {
        self.calls.lock().expect("lock").push(call);
        self.changed.notify_all();
    }

    /// Waits until a call starting with `prefix` was seen; returns it.
    fn wait_for(&self, prefix: &str) -> String {
        let calls = self.calls.lock().expect("lock");
        let (calls, timeout) = self
            .changed
            .wait_timeout_while(calls, Duration::from_secs(60), |calls| {
                !calls.iter().any(|c| c.starts_with(prefix))
            })
            .expect("lock");
        assert!(!timeout.timed_out(), "never saw {prefix}: {calls:?}");
        calls
            .iter()
            .find(|c| c.starts_with(prefix))
            .cloned()
            .expect("found")
    }
}

fn answer(stream: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

/// Serves one connection's requests until it closes; a `next` with nothing to hand out
/// never answers (an idle environment).
fn connection(stream: TcpStream, seen: Arc<Seen>, arn: String) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let mut words = line.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        match (method, path) {
            ("POST", "/2020-01-01/extension/register") => {
                seen.record(format!("register {}", String::from_utf8_lossy(&body)));
                answer(
                    &mut writer,
                    "200 OK",
                    &[("Lambda-Extension-Identifier", "ext-1")],
                    br#"{"functionName":"mesh","functionVersion":"1","handler":"bootstrap"}"#,
                );
            }
            ("GET", "/2020-01-01/extension/event/next") => {
                seen.record("extension-next".to_owned());
                thread::park(); // no event is ever sent
            }
            ("GET", "/2018-06-01/runtime/invocation/next") => {
                seen.record("runtime-next".to_owned());
                let next = seen.invocations.lock().expect("lock").pop_front();
                let Some(event) = next else {
                    thread::park();
                    continue;
                };
                let deadline = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("time")
                    .as_millis()
                    + 60_000;
                answer(
                    &mut writer,
                    "200 OK",
                    &[
                        ("Content-Type", "application/json"),
                        ("Lambda-Runtime-Aws-Request-Id", "request-1"),
                        ("Lambda-Runtime-Deadline-Ms", &deadline.to_string()),
                        ("Lambda-Runtime-Invoked-Function-Arn", &arn),
                    ],
                    &event,
                );
            }
            ("POST", path) if path.ends_with("/response") => {
                seen.record(format!("response {}", String::from_utf8_lossy(&body)));
                answer(&mut writer, "202 Accepted", &[], b"{\"status\":\"OK\"}");
            }
            _ => answer(&mut writer, "404 Not Found", &[], b""),
        }
    }
}

/// Kills the child if the test fails before it exits.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `mesh` environment serving one `GET /whoami` as the service `gamma` against the
/// Runtime API this test plays, with a registry table of its own on the emulator; asks for
/// SIGTERM (`MESH_SHUTDOWN_EXTENSION=on`) when `extension` is set.
struct Environment {
    seen: Arc<Seen>,
    registry: DynamoRegistry,
    function: String,
    child: Reaped,
}

async fn environment(extension: bool) -> Environment {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
    );
    let suffix = format!("{:012x}", fastrand::u64(..) >> 16);
    let registry = DynamoRegistry::create_table(
        aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await),
        format!("registry-shutdown-{suffix}"),
    )
    .await
    .expect("table");
    let function = format!("mesh-shutdown-{suffix}");
    let arn = format!("arn:aws:lambda:us-east-1:000000000000:function:{function}:live");

    let seen = Arc::new(Seen::default());
    seen.invocations.lock().expect("lock").push_back(
        serde_json::to_vec(&serde_json::json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": "/whoami",
            "rawQueryString": "",
            "headers": {"x-lift-caller": "tests"},
            "requestContext": {
                "http": {"method": "GET", "path": "/whoami", "protocol": "HTTP/1.1",
                         "sourceIp": "127.0.0.1", "userAgent": "tests"},
                "requestId": "r-1", "routeKey": "$default", "stage": "$default",
                "timeEpoch": 0
            },
            "isBase64Encoded": false
        }))
        .expect("event"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    thread::spawn({
        let seen = seen.clone();
        let arn = arn.clone();
        move || {
            for stream in listener.incoming().flatten() {
                let (seen, arn) = (seen.clone(), arn.clone());
                thread::spawn(move || connection(stream, seen, arn));
            }
        }
    });

    let child = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .env("AWS_LAMBDA_RUNTIME_API", &address)
        .env("AWS_LAMBDA_FUNCTION_NAME", &function)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("LIFT_SERVICE_NAME", "gamma")
        .env("LIFT_REGISTRY_TABLE", registry.table())
        .env("LIFT_RENEW_SECONDS", "1")
        .env(
            "MESH_SHUTDOWN_EXTENSION",
            if extension { "on" } else { "(the default)" },
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the mesh binary starts");
    Environment {
        seen,
        registry,
        function,
        child: Reaped(child),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_no_extension_is_registered() {
    let env = environment(false).await;
    let response = env.seen.wait_for("response ");
    assert!(response.contains(r#"\"service\":\"gamma\""#), "{response}");
    // The registration itself goes on in the background, without an extension.
    let id = format!("{}:live@us-east-1", env.function);
    wait_registered(&env.registry, &id).await;
    let calls = env.seen.calls.lock().expect("lock").clone();
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("register ") || c == "extension-next"),
        "{calls:?}"
    );
}

/// Waits until instance `id` of `gamma` holds one live lease.
async fn wait_registered(registry: &DynamoRegistry, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let instances = registry.instances("gamma").await.expect("query");
        if let Some(instance) = instances.iter().find(|i| i.id.as_ref() == id)
            && instance.is_live(now_ms())
            && instance.environments.len() == 1
        {
            break;
        }
        assert!(Instant::now() < deadline, "never registered: {instances:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_environments_lease() {
    let Environment {
        seen,
        registry,
        function,
        mut child,
    } = environment(true).await;

    // The extension registers before the runtime's first `next`, as the Extensions API
    // requires (registration closes with init), and subscribes to nothing.
    let response = seen.wait_for("response ");
    assert!(response.contains(r#"\"service\":\"gamma\""#), "{response}");
    seen.wait_for("extension-next");
    let calls = seen.calls.lock().expect("lock").clone();
    let register = calls.iter().position(|c| c.starts_with("register "));
    let first_next = calls.iter().position(|c| c == "runtime-next");
    assert!(
        register.is_some() && register < first_next,
        "the extension must register before the runtime's first next: {calls:?}"
    );
    assert!(calls[register.expect("registered")].contains(r#""events":[]"#));

    // The environment registers its instance in the background.
    let id = format!("{function}:live@us-east-1");
    wait_registered(&registry, &id).await;

    // SIGTERM: the lease is released and the process exits cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let sent = Instant::now();
    let exit = loop {
        if let Some(exit) = child.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "the process did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let instances = registry.instances("gamma").await.expect("query");
    let instance = instances
        .iter()
        .find(|i| i.id.as_ref() == id)
        .expect("the instance item stays");
    assert!(
        instance.environments.is_empty() && !instance.is_live(now_ms()),
        "the lease was not released: {instance:?}"
    );
}
