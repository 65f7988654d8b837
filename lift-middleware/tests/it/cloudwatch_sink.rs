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

#[tokio::test]
async fn a_failed_flush_keeps_the_documents() {
    // Nothing listens there: the call fails, and the documents stay for the next flush.
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
    let sink = CloudWatchSink::new(aws_sdk_cloudwatch::Client::from_conf(config));
    record(&sink);
    assert!(sink.flush().await.is_err());
    assert_eq!(sink.pending(), 1, "nothing lost");
}
