//! Sending metrics with the CloudWatch `PutMetricData` API, for code that runs outside
//! Lambda (where no log agent turns EMF lines into metrics).
//!
//! [`CloudWatchSink`] is a [`MetricsSink`]: give a clone to
//! [`MetricsConfig::sink`](lift_core::metrics::MetricsConfig::sink), keep one, and call
//! [`CloudWatchSink::flush`] when convenient (after each unit of work, or on a timer).
//!
//! Nothing is dropped in silence:
//! - a `PutMetricData` call that fails keeps its documents, and every later one's, for the
//!   next flush (calls carry whole documents, so none is sent twice);
//! - a document that is not EMF is dropped alone (it could never be sent), the rest go;
//! - the buffer holds at most [`CloudWatchSink::with_capacity`] documents (10 000 by
//!   default): when it is full the oldest document makes room;
//!
//! and each drop is counted ([`CloudWatchSink::dropped`], [`CloudWatchSink::malformed`])
//! and logged at WARN (target `lift::metrics`).
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

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The documents of one `PutMetricData` call and their data.
type Call = (Vec<String>, Vec<MetricDatum>);

/// The default bound of the buffer, in documents.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Buffers EMF documents and sends them with `PutMetricData`; cheap to clone (clones share
/// the buffer and the counters).
#[derive(Clone, Debug)]
pub struct CloudWatchSink {
    client: Client,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    pending: Mutex<VecDeque<String>>,
    capacity: usize,
    dropped: AtomicU64,
    malformed: AtomicU64,
}

impl MetricsSink for CloudWatchSink {
    fn write(&self, document: &str) {
        self.keep(std::iter::once(document.to_owned()));
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
    /// A sink sending through `client` (built once and shared), buffering at most
    /// [`DEFAULT_CAPACITY`] documents.
    pub fn new(client: Client) -> Self {
        Self::with_capacity(client, DEFAULT_CAPACITY)
    }

    /// A sink whose buffer holds at most `capacity` documents (at least one); when it is
    /// full, the oldest document makes room and is counted as dropped.
    pub fn with_capacity(client: Client, capacity: usize) -> Self {
        CloudWatchSink {
            client,
            shared: Arc::new(Shared {
                pending: Mutex::new(VecDeque::new()),
                capacity: capacity.max(1),
                dropped: AtomicU64::new(0),
                malformed: AtomicU64::new(0),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends documents to the buffer, dropping the oldest beyond its capacity.
    fn keep(&self, documents: impl IntoIterator<Item = String>) {
        let mut overflow = 0u64;
        {
            let mut pending = self.lock();
            for document in documents {
                if pending.len() >= self.shared.capacity {
                    pending.pop_front();
                    overflow += 1;
                }
                pending.push_back(document);
            }
        }
        if overflow > 0 {
            let total = self.shared.dropped.fetch_add(overflow, Ordering::Relaxed) + overflow;
            tracing::warn!(target: "lift::metrics", dropped = overflow, total, capacity = self.shared.capacity, "the metrics buffer is full: the oldest documents were dropped");
        }
    }

    /// Documents waiting to be sent.
    pub fn pending(&self) -> usize {
        self.lock().len()
    }

    /// Documents dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Documents dropped because they were not EMF.
    pub fn malformed(&self) -> u64 {
        self.shared.malformed.load(Ordering::Relaxed)
    }

    /// Sends everything written so far; returns how many metric data were sent.
    ///
    /// # Errors
    /// When a `PutMetricData` call fails: that call's documents and every later one's stay
    /// buffered for the next flush (the data sent before it are counted as sent).
    pub async fn flush(&self) -> Result<usize, Error> {
        let documents: Vec<String> = self.lock().drain(..).collect();
        // Whole documents per call, grouped by namespace, at most 1000 data per call.
        let mut calls: BTreeMap<String, Vec<Call>> = BTreeMap::new();
        for document in documents {
            let (namespace, data) = match data(&document) {
                Ok(parsed) => parsed,
                Err(error) => {
                    let total = self.shared.malformed.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(target: "lift::metrics", %error, total, "a metrics document that is not EMF was dropped");
                    continue;
                }
            };
            if data.is_empty() {
                continue;
            }
            let namespace_calls = calls.entry(namespace).or_default();
            match namespace_calls.last_mut() {
                Some((docs, batch)) if batch.len() + data.len() <= DATA_PER_CALL => {
                    docs.push(document);
                    batch.extend(data);
                }
                _ => namespace_calls.push((vec![document], data)),
            }
        }
        let mut queue: VecDeque<(String, Vec<String>, Vec<MetricDatum>)> = calls
            .into_iter()
            .flat_map(|(namespace, batches)| {
                batches
                    .into_iter()
                    .map(move |(docs, data)| (namespace.clone(), docs, data))
            })
            .collect();
        let mut sent = 0;
        while let Some((namespace, docs, data)) = queue.pop_front() {
            // Lift's documents carry at most 100 metrics (EMF's limit), so a call's data fit
            // in one request; the chunks only guard against a foreign document.
            let mut failure = None;
            for chunk in data.chunks(DATA_PER_CALL) {
                let result = self
                    .client
                    .put_metric_data()
                    .namespace(&namespace)
                    .set_metric_data(Some(chunk.to_vec()))
                    .send()
                    .await;
                match result {
                    Ok(_) => sent += chunk.len(),
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
            if let Some(error) = failure {
                // Keep this call's documents and the rest for the next flush, ahead of
                // whatever was written meanwhile.
                let unsent: Vec<String> = docs
                    .into_iter()
                    .chain(queue.into_iter().flat_map(|(_, docs, _)| docs))
                    .collect();
                let newer: Vec<String> = self.lock().drain(..).collect();
                self.keep(unsent.into_iter().chain(newer));
                return Err(Error::internal(error));
            }
        }
        Ok(sent)
    }
}
