//! Spans with timing: each layer added to an App runs in a `middleware` span that logs its
//! elapsed time and status at DEBUG, inside the request's span; the request logs its own
//! duration. At INFO, none of it is written. Every line carries the X-Ray trace id.

use std::io::Write;
use std::sync::{Arc, Mutex};

use lift_core::logging::JsonLayer;
use lift_core::testing::{TestApp, events};
use lift_core::{App, Context, Error};
use serde_json::Value;
use tower::util::MapRequestLayer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

/// The trace header `lift_core::testing` gives every invocation.
const TRACE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1";

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Buffer {
    fn lines(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }
}

/// Runs `work` on a current-thread runtime (its clock paused when `paused`) under Lift's
/// JSON log subscriber at `level`; its result, and the lines it logged.
fn logged<T>(
    level: LevelFilter,
    paused: bool,
    work: impl std::future::Future<Output = T>,
) -> (T, Vec<Value>) {
    let buffer = Buffer::default();
    let subscriber = tracing_subscriber::registry()
        .with(JsonLayer::new(buffer.clone()))
        .with(level);
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(paused)
        .build()
        .unwrap();
    let out = runtime.block_on(work);
    (out, buffer.lines())
}

/// A layer of its own type, so its span has a recognisable name.
#[derive(Clone)]
struct Audit;

impl<S> tower::Layer<S> for Audit {
    type Service = S;
    fn layer(&self, inner: S) -> S {
        inner
    }
}

fn app() -> App {
    App::new()
        .get("/orders/{id}", |ctx: Context| async move {
            tracing::info!("reading the order");
            Ok::<_, Error>(format!("order {}", ctx.path_param("id")?))
        })
        .layer(MapRequestLayer::new(|ctx: Context| ctx))
        .layer(Audit)
}

fn run(level: LevelFilter) -> Vec<Value> {
    let ((), lines) = logged(level, false, async {
        let app = TestApp::new(app()).unwrap();
        let ok = app
            .http(events::http("GET", "/orders/7").v2())
            .await
            .unwrap();
        assert_eq!(ok.status, 200);
        let missing = app.http(events::http("GET", "/nope").v2()).await.unwrap();
        assert_eq!(missing.status, 404);
    });
    lines
}

#[test]
fn each_layer_and_each_request_logs_its_timing_at_debug() {
    let lines = run(LevelFilter::DEBUG);
    let finished: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "middleware finished")
        .collect();
    assert_eq!(finished.len(), 4, "two layers, two requests: {lines:#?}");
    // The inner layer finishes first; the outermost (added last) is Audit.
    assert_eq!(finished[0]["middleware"], "MapRequestLayer<{{closure}}>");
    assert_eq!(finished[1]["middleware"], "Audit");
    for line in &finished {
        assert_eq!(line["target"], "lift::middleware");
        assert!(line["elapsedUs"].is_u64(), "{line}");
        assert!(
            line["requestId"].is_string(),
            "inside the request span: {line}"
        );
    }
    assert_eq!(finished[0]["status"], 200);
    assert_eq!(finished[2]["status"], 404);
    assert_eq!(finished[2]["route"], "");

    let handled: Vec<&Value> = lines.iter().filter(|l| l["message"] == "handled").collect();
    assert_eq!(handled.len(), 2, "{lines:#?}");
    assert_eq!(handled[0]["status"], 200);
    assert_eq!(handled[0]["route"], "/orders/{id}");
    assert!(handled[0]["durationUs"].is_u64());
    assert_eq!(handled[1]["status"], 404);
}

#[test]
fn at_info_nothing_of_it_is_written_and_log_lines_carry_the_trace() {
    let lines = run(LevelFilter::INFO);
    let handler = lines
        .iter()
        .find(|l| l["message"] == "reading the order")
        .expect("the handler's line");
    assert_eq!(handler["xrayTraceId"], TRACE);
    assert_eq!(handler["route"], "/orders/{id}");
    assert!(
        lines
            .iter()
            .all(|l| l["message"] != "middleware finished" && l["message"] != "handled"),
        "{lines:#?}"
    );
}

/// An event that cannot be decoded reaches no handler: its cause (the field) is logged at
/// ERROR and is in the invocation's error, and a header value that cannot be a header is
/// not quoted (it may be a credential).
#[test]
fn an_undecodable_event_names_its_cause_and_quotes_no_header_value() {
    let ((no_detail, bad_header), lines) = logged(LevelFilter::INFO, false, async {
        let app = TestApp::new(
            App::new()
                .event("app", "Placed", |_ctx: Context| async {
                    Ok::<_, Error>(())
                })
                .get("/orders/{id}", |_ctx: Context| async { Ok::<_, Error>(()) }),
        )
        .unwrap();
        let mut event = events::eventbridge("app", "Placed", serde_json::json!({}));
        event.as_object_mut().unwrap().remove("detail");
        let no_detail = app.invoke(&event).await.expect_err("undecodable");
        let mut request = events::http("GET", "/orders/1").v2();
        request["headers"]["authorization"] = Value::from("Bearer s3cr3t\u{1}");
        let bad_header = app.invoke(&request).await;
        (no_detail, format!("{bad_header:?}"))
    });
    assert_eq!(no_detail.code(), "invalid_event");
    assert!(
        no_detail.to_string().contains("missing field `detail`"),
        "{no_detail}"
    );
    assert!(
        lines.iter().any(|line| line["level"] == "ERROR"
            && line["error"]
                .as_str()
                .is_some_and(|e| e.contains("missing field `detail`"))),
        "{lines:#?}"
    );
    assert!(!bad_header.contains("s3cr3t"), "{bad_header}");
    assert!(
        lines
            .iter()
            .all(|line| !line.to_string().contains("s3cr3t")),
        "{lines:#?}"
    );
}

/// Logs when dropped, as a guard held across an await does.
struct LogsOnDrop;

impl Drop for LogsOnDrop {
    fn drop(&mut self) {
        tracing::info!("guard dropped");
    }
}

/// An invocation dropped before it finished (a caller's timeout) drops its handler's
/// state inside the request's span, so what logs then still names the request.
#[test]
fn a_cancelled_invocation_drops_its_handler_inside_the_request_span() {
    let ((), lines) = logged(LevelFilter::INFO, true, async {
        let app = TestApp::new(
            App::new()
                .get("/slow", |_ctx: Context| async move {
                    let _guard = LogsOnDrop;
                    std::future::pending::<()>().await;
                    Ok::<_, Error>("never")
                })
                .layer(Audit),
        )
        .unwrap();
        let call = app.http(events::http("GET", "/slow").v2());
        let cancelled = tokio::time::timeout(std::time::Duration::from_secs(1), call).await;
        assert!(cancelled.is_err(), "the handler never answers");
    });
    let dropped: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "guard dropped")
        .collect();
    assert_eq!(dropped.len(), 1, "{lines:#?}");
    assert!(
        dropped[0]["requestId"].is_string(),
        "inside the request span: {}",
        dropped[0]
    );
    assert_eq!(dropped[0]["route"], "/slow");
}
