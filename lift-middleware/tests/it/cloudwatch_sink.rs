//! The PutMetricData sink against CloudWatch on the local emulator (the current SDK's
//! RPC-v2 CBOR protocol); a failing endpoint keeps the documents for the next flush.

use std::time::SystemTime;

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

#[tokio::test]
async fn metrics_reach_cloudwatch() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
    );
    let client = aws_sdk_cloudwatch::Client::new(lift_core::aws::sdk_config().await);
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
    let client = aws_sdk_cloudwatch::Client::new(lift_core::aws::sdk_config().await);
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
