//! Sending metrics with the CloudWatch `PutMetricData` API, for code that runs outside
//! Lambda (where no log agent turns EMF lines into metrics).
//!
//! [`CloudWatchSink`] is a [`MetricsSink`]: give a clone to
//! [`MetricsConfig::sink`](lift_core::metrics::MetricsConfig::sink), keep one, and call
//! [`CloudWatchSink::flush`] when convenient (after each unit of work, or on a timer). A
//! flush that fails keeps its documents for the next one: nothing is dropped in silence.
//!
//! ```no_run
//! use lift_core::metrics::{Metrics, MetricsConfig};
//! use lift_middleware::metrics_sink::CloudWatchSink;
//!
//! # async fn example() -> Result<(), lift_core::Error> {
//! let client = aws_sdk_cloudwatch::Client::new(lift_core::aws::sdk_config().await);
//! let sink = CloudWatchSink::new(client);
//! let config = MetricsConfig::new("Worker").sink(sink.clone());
//! let metrics = Metrics::default();
//! metrics.count("JobsDone", 1.0).map_err(lift_core::Error::internal)?;
//! for document in metrics.take_documents(&config, std::time::SystemTime::now()) {
//!     lift_core::metrics::MetricsSink::write(&sink, &document);
//! }
//! let sent = sink.flush().await?;
//! # let _ = sent;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use lift_core::Error;
use lift_core::metrics::MetricsSink;
use serde_json::Value;

/// CloudWatch takes at most 1000 metric data per `PutMetricData` call.
const DATA_PER_CALL: usize = 1000;

/// Buffers EMF documents and sends them with `PutMetricData`; cheap to clone (clones share
/// the buffer).
#[derive(Clone, Debug)]
pub struct CloudWatchSink {
    client: Client,
    pending: Arc<Mutex<Vec<String>>>,
}

impl MetricsSink for CloudWatchSink {
    fn write(&self, document: &str) {
        self.lock().push(document.to_owned());
    }
}

/// The metric data of one EMF document, grouped by namespace.
fn data(document: &str) -> Result<(String, Vec<MetricDatum>), Error> {
    let value: Value = serde_json::from_str(document).map_err(Error::internal)?;
    let aws = &value["_aws"];
    let timestamp = aws["Timestamp"].as_u64().unwrap_or(0);
    let directive = &aws["CloudWatchMetrics"][0];
    let namespace = directive["Namespace"]
        .as_str()
        .ok_or_else(|| Error::internal("an EMF document without a namespace"))?
        .to_owned();
    let dimensions: Vec<Dimension> = directive["Dimensions"][0]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|name| {
            let name = name.as_str()?;
            let value = value[name].as_str()?;
            Some(Dimension::builder().name(name).value(value).build())
        })
        .collect();
    let mut data = Vec::new();
    for definition in directive["Metrics"].as_array().into_iter().flatten() {
        let Some(name) = definition["Name"].as_str() else {
            continue;
        };
        let values: Vec<f64> = match &value[name] {
            Value::Array(items) => items.iter().filter_map(Value::as_f64).collect(),
            other => other.as_f64().into_iter().collect(),
        };
        if values.is_empty() {
            continue;
        }
        let mut datum = MetricDatum::builder()
            .metric_name(name)
            .set_dimensions(Some(dimensions.clone()))
            .unit(StandardUnit::from(
                definition["Unit"].as_str().unwrap_or("None"),
            ))
            .timestamp(DateTime::from(
                UNIX_EPOCH + Duration::from_millis(timestamp),
            ))
            .set_values(Some(values.clone()))
            .set_counts(Some(vec![1.0; values.len()]));
        if definition["StorageResolution"].as_i64() == Some(1) {
            datum = datum.storage_resolution(1);
        }
        data.push(datum.build());
    }
    Ok((namespace, data))
}

impl CloudWatchSink {
    /// A sink sending through `client` (built once and shared).
    pub fn new(client: Client) -> Self {
        CloudWatchSink {
            client,
            pending: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Documents waiting to be sent.
    pub fn pending(&self) -> usize {
        self.lock().len()
    }

    /// Sends everything written so far; returns how many metric data were sent.
    ///
    /// # Errors
    /// When a document is not EMF, or `PutMetricData` fails; the documents not sent stay
    /// buffered for the next flush.
    pub async fn flush(&self) -> Result<usize, Error> {
        let documents = std::mem::take(&mut *self.lock());
        let mut by_namespace: BTreeMap<String, Vec<MetricDatum>> = BTreeMap::new();
        for document in &documents {
            let (namespace, data) = data(document)?;
            by_namespace.entry(namespace).or_default().extend(data);
        }
        let mut sent = 0;
        for (namespace, data) in by_namespace {
            for chunk in data.chunks(DATA_PER_CALL) {
                let result = self
                    .client
                    .put_metric_data()
                    .namespace(&namespace)
                    .set_metric_data(Some(chunk.to_vec()))
                    .send()
                    .await;
                if let Err(error) = result {
                    // Nothing is lost: keep every document for the next flush (a datum
                    // sent twice is a smaller harm than one never sent).
                    self.lock().extend(documents);
                    return Err(Error::internal(error));
                }
                sent += chunk.len();
            }
        }
        Ok(sent)
    }
}
