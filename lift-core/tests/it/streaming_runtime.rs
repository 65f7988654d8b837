//! A streamed response over the real Lambda Runtime API protocol.
//!
//! A loopback HTTP server plays the Runtime API: `/2018-06-01/runtime/invocation/next`
//! hands out one Function URL event, then `/response` is read chunk by chunk, exactly as
//! the runtime framed it. The function is the real `App::run` (with `lambda_runtime`'s
//! `run_concurrent` inside), started in a child process of this test binary because the
//! runtime reads its endpoint from the process-wide environment (`AWS_LAMBDA_RUNTIME_API`).
//! The second `/next` is hung up on, which ends the child's `App::run` with an error.
//!
//! The handler waits, before producing its second chunk, until the server has received the
//! first one: the test proves that chunks leave while the producer is still running, with
//! no timing involved.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lift_core::stream::StreamBody;
use lift_core::testing::events;
use lift_core::{App, Context, Error, Result};
use serde_json::{Value, json};

/// Set in the child's environment: the address of the fake Runtime API, for the handler's
/// acknowledgement calls.
const CHILD: &str = "LIFT_TEST_STREAMING_RUNTIME";
const STREAMED: &str = "5f3c1e6a-streamed";
const FAILING: &str = "5f3c1e6a-failing";

// ---------------------------------------------------------------------------------------
// The child: a Lift function served by `App::run`.
// ---------------------------------------------------------------------------------------

/// Blocks until the fake Runtime API has received `chunks` body chunks of the response to
/// `request_id`.
fn wait_until_received(server: &str, request_id: &str, chunks: usize) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(server)?;
    write!(
        stream,
        "GET /test/received/{request_id}/{chunks} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if answer.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(answer))
    }
}

async fn lines(ctx: Context) -> Result<StreamBody> {
    let server = std::env::var(CHILD).map_err(Error::internal)?;
    let request_id = ctx.request_id().to_owned();
    let (tx, body) = StreamBody::ndjson_channel(1);
    tokio::spawn(async move {
        for n in 1..=3 {
            if tx.send_json(&json!({ "n": n })).await.is_err() {
                return;
            }
            // Chunk n is on its way: wait until the Runtime API has it before the next.
            let (server, request_id) = (server.clone(), request_id.clone());
            let received =
                tokio::task::spawn_blocking(move || wait_until_received(&server, &request_id, n));
            if !matches!(received.await, Ok(Ok(()))) {
                tx.fail("the Runtime API never received the chunk").await;
                return;
            }
        }
    });
    let mut body = body.with_header(
        http::header::HeaderName::from_static("x-stream"),
        http::HeaderValue::from_static("yes"),
    );
    body.headers_mut().append(
        http::header::SET_COOKIE,
        http::HeaderValue::from_static("session=abc; HttpOnly"),
    );
    Ok(body)
}

/// Fails after its first line.
async fn fails(_ctx: Context) -> Result<StreamBody> {
    let (tx, body) = StreamBody::ndjson_channel(1);
    tokio::spawn(async move {
        if tx.send_json(&json!({ "n": 1 })).await.is_ok() {
            tx.fail(std::io::Error::other("secret connection string"))
                .await;
        }
    });
    Ok(body)
}

#[tokio::test]
#[ignore = "the child process of `streams_over_the_lambda_runtime_api`"]
async fn child_serves_one_streamed_invocation() {
    if std::env::var_os(CHILD).is_none() {
        return; // run on its own, outside the parent test: nothing to serve
    }
    let result = App::new()
        .get("/lines", lines)
        .get("/fails", fails)
        .response_streaming()
        .run()
        .await;
    // The fake Runtime API ends the loop by hanging up on the second `/next`.
    assert!(matches!(result, Err(Error::Internal(_))), "{result:?}");
}

// ---------------------------------------------------------------------------------------
// The parent: a fake Runtime API and the assertions.
// ---------------------------------------------------------------------------------------

/// What the fake Runtime API saw of the `/response` request.
#[derive(Debug, Default)]
struct Recorded {
    request_line: String,
    headers: BTreeMap<String, Vec<String>>,
    chunks: Vec<Vec<u8>>,
    trailers: Vec<String>,
    finished: bool,
}

/// The invocations to hand out, in order, and what came back for each request id.
#[derive(Default)]
struct State {
    invocations: Vec<(&'static str, Vec<u8>)>,
    next_calls: Mutex<usize>,
    responses: Mutex<BTreeMap<String, Recorded>>,
    changed: Condvar,
}

struct Request {
    line: String,
    headers: BTreeMap<String, Vec<String>>,
}

fn read_head(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers
                .entry(name.trim().to_ascii_lowercase())
                .or_default()
                .push(value.trim().to_owned());
        }
    }
    Ok(Some(Request {
        line: line.trim_end().to_owned(),
        headers,
    }))
}

/// Reads a chunked body, recording each chunk as it arrives.
fn read_chunked(
    reader: &mut BufReader<TcpStream>,
    state: &State,
    request_id: &str,
) -> std::io::Result<()> {
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size_text = size_line.trim_end().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size {size_line:?}")))?;
        if size == 0 {
            let mut trailers = Vec::new();
            loop {
                let mut trailer = String::new();
                reader.read_line(&mut trailer)?;
                if trailer.trim_end().is_empty() {
                    break;
                }
                trailers.push(trailer.trim_end().to_owned());
            }
            let mut responses = state.responses.lock().expect("lock");
            let recorded = responses.entry(request_id.to_owned()).or_default();
            recorded.trailers = trailers;
            recorded.finished = true;
            state.changed.notify_all();
            return Ok(());
        }
        let mut chunk = vec![0; size];
        reader.read_exact(&mut chunk)?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
        state
            .responses
            .lock()
            .expect("lock")
            .entry(request_id.to_owned())
            .or_default()
            .chunks
            .push(chunk);
        state.changed.notify_all();
    }
}

fn answer(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

fn connection(stream: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_head(&mut reader)? {
        let path = request
            .line
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        if path == "/2018-06-01/runtime/invocation/next" {
            let call = {
                let mut calls = state.next_calls.lock().expect("lock");
                *calls += 1;
                *calls
            };
            if let Some((request_id, event)) = state.invocations.get(call - 1) {
                let deadline = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("clock")
                    .as_millis()
                    + 60_000;
                answer(
                    &mut writer,
                    "200 OK",
                    &[
                        ("Content-Type", "application/json".to_owned()),
                        ("Lambda-Runtime-Aws-Request-Id", (*request_id).to_owned()),
                        ("Lambda-Runtime-Deadline-Ms", deadline.to_string()),
                        (
                            "Lambda-Runtime-Invoked-Function-Arn",
                            "arn:aws:lambda:us-east-1:123456789012:function:lift-stream".to_owned(),
                        ),
                        (
                            "Lambda-Runtime-Trace-Id",
                            "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".to_owned(),
                        ),
                    ],
                    event,
                );
            } else {
                // Hang up without an answer: the runtime's loop fails on the connection
                // error and `App::run` returns.
                return Ok(());
            }
        } else if let Some(request_id) = path
            .strip_prefix("/2018-06-01/runtime/invocation/")
            .and_then(|rest| rest.strip_suffix("/response"))
        {
            {
                let mut responses = state.responses.lock().expect("lock");
                let recorded = responses.entry(request_id.to_owned()).or_default();
                recorded.request_line = request.line.clone();
                recorded.headers = request.headers.clone();
            }
            let chunked = request
                .headers
                .get("transfer-encoding")
                .is_some_and(|v| v.iter().any(|v| v.eq_ignore_ascii_case("chunked")));
            if chunked {
                read_chunked(&mut reader, &state, request_id)?;
            } else {
                let length: usize = request
                    .headers
                    .get("content-length")
                    .and_then(|v| v.first())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                reader.read_exact(&mut body)?;
                let mut responses = state.responses.lock().expect("lock");
                let recorded = responses.entry(request_id.to_owned()).or_default();
                recorded.chunks.push(body);
                recorded.finished = true;
                state.changed.notify_all();
            }
            answer(&mut writer, "202 Accepted", &[], b"{\"status\":\"OK\"}");
        } else if let Some((request_id, wanted)) = path
            .strip_prefix("/test/received/")
            .and_then(|rest| rest.split_once('/'))
        {
            // Body chunks come after the prelude and the eight-NUL separator.
            let wanted: usize = wanted.parse().unwrap_or(usize::MAX);
            let responses = state.responses.lock().expect("lock");
            let (responses, timeout) = state
                .changed
                .wait_timeout_while(responses, Duration::from_secs(30), |r| {
                    r.get(request_id).map_or(0, |r| r.chunks.len()) < wanted + 2
                })
                .expect("lock");
            drop(responses);
            let status = if timeout.timed_out() {
                "504 Gateway Timeout"
            } else {
                "200 OK"
            };
            answer(
                &mut writer,
                status,
                &[("Connection", "close".to_owned())],
                b"",
            );
            return Ok(());
        } else {
            answer(&mut writer, "404 Not Found", &[], b"");
        }
    }
    Ok(())
}

fn serve(listener: TcpListener, state: Arc<State>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let state = state.clone();
        thread::spawn(move || {
            let _ = connection(stream, state);
        });
    }
}

/// A Function URL event (payload 2.0) for `path`.
fn function_url_event(path: &str) -> Vec<u8> {
    let mut event = events::http("GET", path).v2();
    event["requestContext"]["domainName"] =
        Value::from("abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws");
    serde_json::to_vec(&event).expect("event")
}

fn drain(mut source: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = source.read_to_string(&mut text);
        text
    })
}

#[test]
fn streams_over_the_lambda_runtime_api() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let state = Arc::new(State {
        invocations: vec![
            (STREAMED, function_url_event("/lines")),
            (FAILING, function_url_event("/fails")),
        ],
        ..State::default()
    });
    {
        let state = state.clone();
        thread::spawn(move || serve(listener, state));
    }

    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "streaming_runtime::child_serves_one_streamed_invocation",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &address)
        .env("AWS_LAMBDA_RUNTIME_API", &address)
        .env("AWS_LAMBDA_FUNCTION_NAME", "lift-stream")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env_remove("AWS_LAMBDA_MAX_CONCURRENCY")
        .env_remove("AWS_LAMBDA_INITIALIZATION_TYPE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("child");
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let output = format!(
        "--- child stdout ---\n{}\n--- child stderr ---\n{}",
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default()
    );
    let status = status.unwrap_or_else(|| panic!("the child did not finish\n{output}"));
    assert!(status.success(), "child failed: {status}\n{output}");

    let responses = state.responses.lock().expect("lock");
    let recorded = responses.get(STREAMED).expect("a response");
    assert!(recorded.finished, "no complete /response\n{output}");
    assert_eq!(
        recorded.request_line,
        format!("POST /2018-06-01/runtime/invocation/{STREAMED}/response HTTP/1.1")
    );
    let header = |name: &str| recorded.headers.get(name).cloned().unwrap_or_default();
    assert_eq!(
        header("lambda-runtime-function-response-mode"),
        ["streaming"]
    );
    assert_eq!(header("transfer-encoding"), ["chunked"]);
    assert_eq!(
        header("content-type"),
        ["application/vnd.awslambda.http-integration-response"]
    );
    assert_eq!(
        header("trailer"),
        [
            "Lambda-Runtime-Function-Error-Type",
            "Lambda-Runtime-Function-Error-Body"
        ]
    );

    // The prelude, the separator, then each NDJSON line as its own chunk.
    assert_eq!(recorded.chunks.len(), 5, "{:?}", recorded.chunks);
    let prelude: Value = serde_json::from_slice(&recorded.chunks[0]).expect("prelude JSON");
    assert_eq!(
        prelude,
        json!({
            "statusCode": 200,
            "headers": {"content-type": "application/x-ndjson", "x-stream": "yes"},
            "cookies": ["session=abc; HttpOnly"]
        })
    );
    assert_eq!(recorded.chunks[1], [0u8; 8]);
    assert_eq!(recorded.chunks[2], b"{\"n\":1}\n");
    assert_eq!(recorded.chunks[3], b"{\"n\":2}\n");
    assert_eq!(recorded.chunks[4], b"{\"n\":3}\n");
    assert!(recorded.trailers.is_empty(), "{:?}", recorded.trailers);

    // A failure mid-stream: the line already sent, then a clean end; no error text in the
    // body (where `lambda_runtime` would write its error "trailer") and no trailers.
    let failed = responses.get(FAILING).expect("a response");
    assert!(failed.finished, "no complete /response\n{output}");
    assert_eq!(failed.chunks.len(), 3, "{:?}", failed.chunks);
    assert_eq!(failed.chunks[2], b"{\"n\":1}\n");
    let all: Vec<u8> = failed.chunks.concat();
    let text = String::from_utf8_lossy(&all);
    assert!(!text.contains("Lambda-Runtime-Function-Error"), "{text}");
    assert!(!text.contains("secret"), "{text}");
    assert!(failed.trailers.is_empty(), "{:?}", failed.trailers);
    assert!(
        output.contains("response stream failed") && output.contains(FAILING),
        "the failure is logged with the request id\n{output}"
    );
    assert_eq!(*state.next_calls.lock().expect("lock"), 3);
}
