//! The PutMetricData sink against CloudWatch on the local emulator (the current SDK's
//! RPC-v2 CBOR protocol); a failing endpoint keeps the documents for the next flush.

use std::time::SystemTime;

use aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataInput;
use lift_core::metrics::{Metrics, MetricsConfig, MetricsSink, Unit};
use lift_middleware::metrics_sink::CloudWatchSink;

fn record(sink: &CloudWatchSink) {
    let config = MetricsConfig::new("LiftTests").service("worker");
    let metrics = Metrics::default();
    metrics.count("JobsDone", 3.0).expect("count");
    metrics.count("JobsDone", 2.0).expect("count");
    metrics.value("QueueDepth", 7.0, Unit::None).expect("value");
    metrics
        .high_resolution("LatencyMs", 12.5, Unit::Milliseconds)
        .expect("value");
    for document in metrics.take_documents(&config, SystemTime::now()) {
        sink.write(&document);
    }
}

/// A client of the emulator; fails loudly without one, so that a developer's own
/// credentials never publish test metrics to CloudWatch.
async fn emulator_client() -> aws_sdk_cloudwatch::Client {
    require_emulator();
    aws_sdk_cloudwatch::Client::new(lift_core::aws::sdk_config().await)
}

fn require_emulator() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
    );
}

#[tokio::test]
async fn metrics_reach_cloudwatch() {
    let client = emulator_client().await;
    let sink = CloudWatchSink::new(client);
    record(&sink);
    assert_eq!(sink.pending(), 1);
    let sent = sink.flush().await.expect("PutMetricData");
    assert_eq!(sent, 3, "JobsDone (two values), QueueDepth, LatencyMs");
    assert_eq!(sink.pending(), 0);

    // Reading the data back is not possible here: ministack 1.5.33 answers
    // GetMetricStatistics in JSON where the SDK expects CBOR (ListMetrics likewise).
}

/// A document that is not EMF is dropped alone and counted; the others are sent.
#[tokio::test]
async fn a_malformed_document_does_not_cost_the_others() {
    let client = emulator_client().await;
    let sink = CloudWatchSink::new(client);
    sink.write("not json at all");
    record(&sink);
    sink.write(r#"{"_aws": {"CloudWatchMetrics": [{"Metrics": []}]}}"#);
    assert_eq!(sink.pending(), 3);
    let sent = sink.flush().await.expect("the good document is sent");
    assert_eq!(sent, 3);
    assert_eq!(sink.malformed(), 2, "no JSON, no namespace");
    assert_eq!(sink.pending(), 0);
}

/// The buffer is bounded: beyond its capacity the oldest documents make room, counted.
#[tokio::test]
async fn a_full_buffer_drops_the_oldest_and_counts_them() {
    let sink = CloudWatchSink::with_capacity(unreachable_client(), 2);
    sink.write("first");
    record(&sink);
    record(&sink);
    assert_eq!(sink.pending(), 2);
    assert_eq!(sink.dropped(), 1);
    // A failed flush keeps what it had, still within the bound.
    assert!(sink.flush().await.is_err());
    assert_eq!(sink.pending(), 2);
    assert_eq!(sink.dropped(), 1);
    assert_eq!(
        sink.malformed(),
        0,
        "the malformed one was dropped before any flush"
    );
}

/// A CloudWatch client whose endpoint refuses connections, without retries.
fn unreachable_client() -> aws_sdk_cloudwatch::Client {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let config = aws_sdk_cloudwatch::Config::builder()
        .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudwatch::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_cloudwatch::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .retry_config(aws_sdk_cloudwatch::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_cloudwatch::Client::from_conf(config)
}

#[tokio::test]
async fn a_failed_flush_keeps_the_documents() {
    // Nothing listens there: the call fails, and the documents stay for the next flush.
    let sink = CloudWatchSink::new(unreachable_client());
    record(&sink);
    assert!(sink.flush().await.is_err());
    assert_eq!(sink.pending(), 1, "nothing lost");
}

/// What each `PutMetricData` request carried (its body's size and its values, counted),
/// and a way to fail chosen requests before they are sent, as a dropped connection would.
#[derive(Debug, Default)]
struct Requests {
    /// `(body bytes, values counted)` of each request sent.
    sent: std::sync::Mutex<Vec<(usize, f64)>>,
    /// The 1-based numbers of the requests to fail.
    fail: std::sync::Mutex<Vec<usize>>,
    seen: std::sync::atomic::AtomicUsize,
    /// The values of the request being made, counted from its input.
    values: std::sync::Mutex<f64>,
}

#[derive(Debug, Clone)]
struct RequestsInterceptor(std::sync::Arc<Requests>);

impl aws_sdk_cloudwatch::config::Intercept for RequestsInterceptor {
    fn name(&self) -> &'static str {
        "Requests"
    }

    fn read_before_serialization(
        &self,
        context: &aws_sdk_cloudwatch::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _: &aws_sdk_cloudwatch::config::RuntimeComponents,
        _: &mut aws_sdk_cloudwatch::config::ConfigBag,
    ) -> Result<(), aws_sdk_cloudwatch::error::BoxError> {
        let input = context
            .input()
            .downcast_ref::<PutMetricDataInput>()
            .expect("a PutMetricData input");
        *self.0.values.lock().unwrap() = input
            .metric_data()
            .iter()
            .flat_map(|datum| datum.counts())
            .sum();
        Ok(())
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_cloudwatch::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_cloudwatch::config::RuntimeComponents,
        _: &mut aws_sdk_cloudwatch::config::ConfigBag,
    ) -> Result<(), aws_sdk_cloudwatch::error::BoxError> {
        let number = self
            .0
            .seen
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if self.0.fail.lock().unwrap().contains(&number) {
            return Err("injected: the connection was reset".into());
        }
        let values = *self.0.values.lock().unwrap();
        let bytes = context.request().body().bytes().map_or(0, <[u8]>::len);
        self.0.sent.lock().unwrap().push((bytes, values));
        Ok(())
    }
}

/// A client of the emulator, without retries or the SDK's gzip of large bodies (so a body's
/// size is its uncompressed size), whose requests `requests` sees.
async fn watched_client(requests: &std::sync::Arc<Requests>) -> aws_sdk_cloudwatch::Client {
    require_emulator();
    let sdk = lift_core::aws::sdk_config().await;
    let config = aws_sdk_cloudwatch::config::Builder::from(sdk)
        .retry_config(aws_sdk_cloudwatch::config::retry::RetryConfig::disabled())
        .disable_request_compression(true)
        .interceptor(RequestsInterceptor(requests.clone()))
        .build();
    aws_sdk_cloudwatch::Client::from_conf(config)
}

/// Writes `documents` EMF documents of 100 metrics with 100 distinct values each.
fn record_many(sink: &CloudWatchSink, documents: usize) {
    let config = MetricsConfig::new("LiftTests").service("batch");
    for d in 0..documents {
        let metrics = Metrics::default();
        for m in 0..100 {
            for v in 0..100 {
                metrics
                    .value(
                        &format!("Metric{m}"),
                        f64::from(v) + d as f64 / 10.0,
                        Unit::None,
                    )
                    .expect("value");
            }
        }
        for document in metrics.take_documents(&config, SystemTime::now()) {
            sink.write(&document);
        }
    }
}

/// 1000 metric data are within the count limit, but ten documents of 100 metrics with 100
/// values each are about 1.8 MB of request before compression. CloudWatch takes 1 MB a
/// request; the SDK gzips bodies over 10 KiB, and whether the limit is on the body before
/// or after that is not stated, so the sink keeps within it before. The emulator takes any
/// size: the test weighs each uncompressed request as sent.
#[tokio::test]
async fn a_flush_larger_than_a_request_takes_is_sent_in_several() {
    let requests = std::sync::Arc::new(Requests::default());
    let sink = CloudWatchSink::new(watched_client(&requests).await);
    record_many(&sink, 10);
    let sent = sink.flush().await.expect("PutMetricData");
    assert_eq!(sent, 1000);
    let sent = requests.sent.lock().unwrap().clone();
    assert!(sent.len() > 1, "{sent:?}");
    for (bytes, _) in &sent {
        assert!(*bytes <= 1_000_000, "a request of {bytes} bytes: {sent:?}");
    }
    let values: f64 = sent.iter().map(|(_, values)| values).sum();
    assert_eq!(values, 100_000.0, "every value once");
}

/// A document too large for one request (a foreign writer's: 1200 metrics) is spread over
/// two; when the second fails, the next flush sends only what the first did not.
#[tokio::test]
async fn a_failure_in_the_middle_of_a_document_resends_nothing_already_sent() {
    let requests = std::sync::Arc::new(Requests::default());
    requests.fail.lock().unwrap().push(2);
    let sink = CloudWatchSink::new(watched_client(&requests).await);
    let names: Vec<String> = (0..1200).map(|m| format!("M{m}")).collect();
    let mut document = serde_json::json!({
        "_aws": {"Timestamp": 1_700_000_000_000u64, "CloudWatchMetrics": [{
            "Namespace": "LiftTests", "Dimensions": [[]],
            "Metrics": names.iter().map(|n| serde_json::json!({"Name": n})).collect::<Vec<_>>(),
        }]},
    });
    for name in &names {
        document[name] = serde_json::json!(1.0);
    }
    sink.write(&document.to_string());
    assert!(sink.flush().await.is_err(), "the second request failed");
    assert_eq!(
        sink.pending(),
        1,
        "the document stays for what was not sent"
    );
    assert_eq!(sink.flush().await.expect("PutMetricData"), 200);
    assert_eq!(sink.pending(), 0);
    let values: Vec<f64> = requests
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|(_, values)| *values)
        .collect();
    assert_eq!(values, [1000.0, 200.0], "each datum sent once");
}

/// A client of an endpoint that takes the connection and never answers.
async fn silent_client() -> aws_sdk_cloudwatch::Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let config = aws_sdk_cloudwatch::Config::builder()
        .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudwatch::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_cloudwatch::config::Credentials::for_tests())
        .endpoint_url(format!("http://{address}"))
        .build();
    aws_sdk_cloudwatch::Client::from_conf(config)
}

/// A flush dropped while its call is in flight (a timeout around it, a shutdown's grace
/// running out) keeps its documents for the next flush. (They were taken out of the buffer
/// first and lost with the future: nothing counted, nothing logged.)
#[tokio::test]
async fn a_flush_dropped_mid_call_keeps_the_documents() {
    let sink = CloudWatchSink::new(silent_client().await);
    record(&sink);
    assert_eq!(sink.pending(), 1);
    let flush = tokio::time::timeout(std::time::Duration::from_millis(200), sink.flush()).await;
    assert!(flush.is_err(), "the endpoint never answers: {flush:?}");
    assert_eq!(sink.pending(), 1, "nothing lost");
    assert_eq!(sink.dropped(), 0);
}
