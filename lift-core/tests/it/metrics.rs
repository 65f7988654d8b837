//! EMF metrics flushed by an App: one flush per invocation, automatic per-route metrics, the
//! cold start once, handler metrics and properties.

use std::sync::{Arc, Mutex};

use lift_core::metrics::{MetricsConfig, MetricsSink, Unit};
use lift_core::testing::{TestApp, events};
use lift_core::{App, Context, Error, Result};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

impl MetricsSink for Captured {
    fn write(&self, document: &str) {
        self.0.lock().expect("lock").push(document.to_owned());
    }
}

impl Captured {
    fn take(&self) -> Vec<Value> {
        std::mem::take(&mut *self.0.lock().expect("lock"))
            .iter()
            .map(|d| serde_json::from_str(d).expect("EMF JSON"))
            .collect()
    }
}

async fn place(ctx: Context) -> Result<()> {
    ctx.metrics()
        .value("OrderValue", 42.5, Unit::None)
        .map_err(Error::internal)?;
    ctx.metrics()
        .dimension("tenant", "acme")
        .map_err(Error::internal)?;
    Ok(())
}

async fn charge(ctx: Context) -> Result<()> {
    if ctx.body() == b"fail" {
        return Err(Error::internal("declined"));
    }
    Ok(())
}

fn app(sink: &Captured) -> TestApp {
    TestApp::new(
        App::new().post("/orders", place).sqs(charge).metrics(
            MetricsConfig::new("Shop")
                .service("orders")
                .sink(sink.clone()),
        ),
    )
    .expect("app")
}

#[tokio::test]
async fn an_http_invocation_flushes_one_document() {
    let sink = Captured::default();
    let app = app(&sink);
    let response = app
        .http(events::http("POST", "/orders").v2())
        .await
        .expect("response");
    assert_eq!(response.status, 204);
    let docs = sink.take();
    assert_eq!(docs.len(), 1);
    let doc = &docs[0];
    let cw = &doc["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(cw["Namespace"], "Shop");
    assert_eq!(cw["Dimensions"], json!([["route", "service", "tenant"]]));
    assert_eq!(doc["route"], "POST /orders");
    assert_eq!(doc["service"], "orders");
    assert_eq!(doc["tenant"], "acme");
    assert_eq!(doc["OrderValue"], 42.5);
    assert_eq!(doc["Requests"], 1.0);
    assert_eq!(doc["Errors"], 0.0);
    assert!(doc["Latency"].as_f64().is_some_and(|ms| ms >= 0.0));
    assert_eq!(doc["ColdStart"], 1.0);
    assert_eq!(doc["requestId"], "test-request-id");

    app.http(events::http("POST", "/orders").v2())
        .await
        .expect("response");
    let second = sink.take();
    assert!(
        second[0].get("ColdStart").is_none(),
        "only the first invocation is cold"
    );
}

#[tokio::test]
async fn a_batch_flushes_once_with_every_record_counted() {
    let sink = Captured::default();
    let app = app(&sink);
    app.invoke(&events::sqs(["ok", "fail", "ok"]))
        .await
        .expect("batch");
    let docs = sink.take();
    assert_eq!(docs.len(), 1, "one flush per invocation");
    assert_eq!(docs[0]["route"], "sqs");
    assert_eq!(docs[0]["Requests"], json!([1.0, 1.0, 1.0]));
    assert_eq!(docs[0]["Errors"], json!([0.0, 1.0, 0.0]));
}

/// Set in the child process of [`nothing_is_flushed_without_a_config`].
const CHILD: &str = "LIFT_TEST_METRICS_CHILD";

/// Runs, in a process of its own, an App without a metrics config whose handler records
/// metrics, and reads that process's stdout, where an EMF document would go.
#[test]
fn nothing_is_flushed_without_a_config() {
    if std::env::var_os(CHILD).is_some() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let app = TestApp::new(App::new().post("/orders", place)).expect("app");
            let response = app
                .http(events::http("POST", "/orders").v2())
                .await
                .expect("response");
            assert_eq!(response.status, 204);
        });
        println!("child: handled");
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "metrics::nothing_is_flushed_without_a_config"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("child test process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {stdout}");
    assert!(stdout.contains("child: handled"), "the child ran: {stdout}");
    assert!(!stdout.contains("CloudWatchMetrics"), "flushed: {stdout}");
}

#[tokio::test]
async fn the_route_dimension_names_method_and_pattern_or_says_what_did_not_match() {
    let sink = Captured::default();
    let app = TestApp::new(
        App::new()
            .get("/orders/{id}", charge)
            .any("/files/{*rest}", charge)
            .metrics(MetricsConfig::new("Shop").sink(sink.clone())),
    )
    .expect("app");
    for (method, path, route, status) in [
        ("GET", "/orders/7", "GET /orders/{id}", 204),
        ("DELETE", "/orders/7", "DELETE /orders/{id}", 405),
        ("PUT", "/files/a/b", "PUT /files/{*rest}", 204),
        ("GET", "/nowhere", "GET unmatched", 404),
    ] {
        let response = app
            .http(events::http(method, path).v2())
            .await
            .expect("response");
        assert_eq!(response.status, status, "{method} {path}");
        let docs = sink.take();
        assert_eq!(docs[0]["route"], route, "{method} {path}");
    }
}

/// A streamed answer is sent when its last chunk is: what the body's producer records is
/// in the invocation's one document, flushed after the body ended, not before it began.
#[tokio::test]
async fn a_streamed_bodys_metrics_are_flushed_when_the_body_ends() {
    let sink = Captured::default();
    let app = TestApp::new(
        App::new()
            .get("/feed", |ctx: Context| async move {
                let metrics = ctx.metrics().clone();
                let items =
                    futures_util::StreamExt::map(futures_util::stream::iter(0..3), move |n| {
                        metrics.count("Sent", 1.0).expect("count");
                        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(format!("{n}\n")))
                    });
                Ok::<_, Error>(lift_core::stream::StreamBody::new(items))
            })
            .response_streaming()
            .metrics(MetricsConfig::new("Shop").sink(sink.clone())),
    )
    .expect("app");
    let response = app
        .stream(events::http("GET", "/feed").v2())
        .await
        .expect("streamed");
    assert!(
        sink.0.lock().unwrap().is_empty(),
        "nothing flushed before the body"
    );
    assert_eq!(response.body().await, b"0\n1\n2\n");
    let documents = sink.0.lock().unwrap().clone();
    assert_eq!(documents.len(), 1, "{documents:?}");
    let document: Value = serde_json::from_str(&documents[0]).expect("json");
    assert_eq!(document["Sent"], json!([1.0, 1.0, 1.0]), "{document}");
}
