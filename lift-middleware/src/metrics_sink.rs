//! Sending metrics with the CloudWatch `PutMetricData` API, for code that runs outside
//! Lambda (where no log agent turns EMF lines into metrics).
//!
//! [`CloudWatchSink`] is a [`MetricsSink`]: give a clone to
//! [`MetricsConfig::sink`](lift_core::metrics::MetricsConfig::sink), keep one, and call
//! [`CloudWatchSink::flush`] when convenient (after each unit of work, or on a timer).
//!
//! Nothing is dropped in silence:
//! - a `PutMetricData` call that fails keeps its documents, and every later one's, for the
//!   next flush (calls carry whole documents where they fit, and a document that had to
//!   be spread over several calls is kept with what of it was already sent, so no datum is
//!   sent twice); so does a flush dropped before it ends (a timeout around it, a shutdown's
//!   grace running out), whose call in flight, which may have reached CloudWatch, is sent
//!   again rather than lost;
//! - a document that is not EMF is dropped alone (it could never be sent), the rest go;
//! - calls stay within what `PutMetricData` takes (1000 metric data, 150 values a datum,
//!   1 MB a request, by an estimate of the encoded size that errs high); a value CloudWatch
//!   refuses (beyond ±2^360) is left out alone, since it would fail its whole call on every
//!   flush;
//! - the buffer holds at most [`CloudWatchSink::with_capacity`] documents (10 000 by
//!   default): when it is full the oldest document makes room;
//!
//! and each drop is counted ([`CloudWatchSink::dropped`], [`CloudWatchSink::malformed`],
//! [`CloudWatchSink::refused`]) and logged at WARN (target `lift::metrics`).
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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
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

/// CloudWatch takes at most 150 values in one metric datum.
const VALUES_PER_DATUM: usize = 150;

/// A `PutMetricData` request body is at most 1 MB.
const BYTES_PER_CALL: usize = 1_000_000;

/// CloudWatch refuses a value beyond ±2^360.
const LARGEST_VALUE: f64 = 2.348_542_582_773_833_2e108;

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
    pending: Mutex<VecDeque<Pending>>,
    capacity: usize,
    dropped: AtomicU64,
    malformed: AtomicU64,
    refused: AtomicU64,
}

/// A buffered document and how many of its metric data (in the order [`data`] gives them)
/// an earlier flush already sent.
#[derive(Debug)]
struct Pending {
    document: String,
    sent: usize,
}

impl MetricsSink for CloudWatchSink {
    fn write(&self, document: &str) {
        self.keep(std::iter::once(Pending {
            document: document.to_owned(),
            sent: 0,
        }));
    }
}

/// The metric data of one EMF document.
struct Parsed {
    namespace: String,
    data: Vec<MetricDatum>,
    /// Values left out because CloudWatch refuses them.
    refused: usize,
}

/// The metric data of one EMF document, in a fixed order: each metric's values once each
/// with their counts, at most [`VALUES_PER_DATUM`] a datum.
fn data(document: &str) -> Result<Parsed, Error> {
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
    let mut refused = 0;
    for definition in directive["Metrics"].as_array().into_iter().flatten() {
        let Some(name) = definition["Name"].as_str() else {
            continue;
        };
        let values: Vec<f64> = match &value[name] {
            Value::Array(items) => items.iter().filter_map(Value::as_f64).collect(),
            other => other.as_f64().into_iter().collect(),
        };
        let (values, counts, left_out) = counted(&values);
        refused += left_out;
        for (values, counts) in values
            .chunks(VALUES_PER_DATUM)
            .zip(counts.chunks(VALUES_PER_DATUM))
        {
            let mut datum = MetricDatum::builder()
                .metric_name(name)
                .set_dimensions(Some(dimensions.clone()))
                .unit(StandardUnit::from(
                    definition["Unit"].as_str().unwrap_or("None"),
                ))
                .timestamp(DateTime::from(
                    UNIX_EPOCH + Duration::from_millis(timestamp),
                ))
                .set_values(Some(values.to_vec()))
                .set_counts(Some(counts.to_vec()));
            if definition["StorageResolution"].as_i64() == Some(1) {
                datum = datum.storage_resolution(1);
            }
            data.push(datum.build());
        }
    }
    Ok(Parsed {
        namespace,
        data,
        refused,
    })
}

/// Each value CloudWatch takes once, in the order first seen, with how often it occurs;
/// and how many values were left out.
fn counted(values: &[f64]) -> (Vec<f64>, Vec<f64>, usize) {
    let mut unique: Vec<f64> = Vec::with_capacity(values.len());
    let mut counts: Vec<f64> = Vec::with_capacity(values.len());
    let mut left_out = 0;
    for &value in values {
        if !(-LARGEST_VALUE..=LARGEST_VALUE).contains(&value) {
            left_out += 1;
            continue;
        }
        match unique
            .iter()
            .position(|seen| seen.to_bits() == value.to_bits())
        {
            Some(at) => counts[at] += 1.0,
            None => {
                unique.push(value);
                counts.push(1.0);
            }
        }
    }
    (unique, counts, left_out)
}

/// An estimate of a datum's encoded size that errs high: the field names and framing,
/// its name, dimensions, unit, and each value with its count as 8-byte numbers.
fn encoded_size(datum: &MetricDatum) -> usize {
    let dimensions: usize = datum
        .dimensions()
        .iter()
        .map(|d| 48 + d.name().map_or(0, str::len) + d.value().map_or(0, str::len))
        .sum();
    let values = datum.values().len() + datum.counts().len();
    192 + datum.metric_name().map_or(0, str::len)
        + datum.unit().map_or(0, |u| u.as_str().len())
        + dimensions
        + 16 * values
}

/// One `PutMetricData` call: its data, and which documents they come from.
#[derive(Debug)]
struct Call {
    namespace: String,
    data: Vec<MetricDatum>,
    bytes: usize,
    /// `(index of the document in the flush, how many of its data this call carries)`.
    parts: Vec<(usize, usize)>,
}

impl Call {
    fn new(namespace: &str) -> Self {
        Call {
            namespace: namespace.to_owned(),
            data: Vec::new(),
            bytes: 256 + namespace.len(),
            parts: Vec::new(),
        }
    }

    fn fits(&self, data: usize, bytes: usize) -> bool {
        self.data.len() + data <= DATA_PER_CALL && self.bytes + bytes <= BYTES_PER_CALL
    }

    fn push(&mut self, document: usize, datum: MetricDatum, bytes: usize) {
        self.data.push(datum);
        self.bytes += bytes;
        match self.parts.last_mut() {
            Some((last, count)) if *last == document => *count += 1,
            _ => self.parts.push((document, 1)),
        }
    }
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
                refused: AtomicU64::new(0),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends documents to the buffer, dropping the oldest beyond its capacity.
    fn keep(&self, documents: impl IntoIterator<Item = Pending>) {
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

    /// Metric values left out because CloudWatch refuses them (beyond ±2^360).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// The calls that send `documents`: grouped by namespace, whole documents per call
    /// where they fit, a document too large for one call spread over the next ones.
    fn plan(&self, documents: &[Pending]) -> Vec<Call> {
        let mut calls: BTreeMap<String, Vec<Call>> = BTreeMap::new();
        for (index, pending) in documents.iter().enumerate() {
            let parsed = match data(&pending.document) {
                Ok(parsed) => parsed,
                Err(error) => {
                    let total = self.shared.malformed.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(target: "lift::metrics", %error, total, "a metrics document that is not EMF was dropped");
                    continue;
                }
            };
            if parsed.refused > 0 {
                let refused = parsed.refused as u64;
                let total = self.shared.refused.fetch_add(refused, Ordering::Relaxed) + refused;
                tracing::warn!(target: "lift::metrics", refused, total, namespace = %parsed.namespace, "metric values beyond what CloudWatch takes (±2^360) were left out");
            }
            let data: Vec<(MetricDatum, usize)> = parsed
                .data
                .into_iter()
                .skip(pending.sent)
                .map(|datum| {
                    let bytes = encoded_size(&datum);
                    (datum, bytes)
                })
                .collect();
            if data.is_empty() {
                continue;
            }
            let total: usize = data.iter().map(|(_, bytes)| bytes).sum();
            let namespace_calls = calls.entry(parsed.namespace.clone()).or_default();
            if !namespace_calls
                .last()
                .is_some_and(|call| call.fits(data.len(), total))
            {
                namespace_calls.push(Call::new(&parsed.namespace));
            }
            for (datum, bytes) in data {
                if !namespace_calls
                    .last()
                    .is_some_and(|call| call.fits(1, bytes))
                {
                    namespace_calls.push(Call::new(&parsed.namespace));
                }
                if let Some(call) = namespace_calls.last_mut() {
                    call.push(index, datum, bytes);
                }
            }
        }
        calls.into_values().flatten().collect()
    }

    /// Sends everything written so far; returns how many metric data were sent.
    ///
    /// # Errors
    /// When a `PutMetricData` call fails: what that call and every later one would have
    /// sent stays buffered for the next flush (the data sent before it are counted as sent).
    /// A flush dropped before it ends (a timeout around it, a shutdown's grace running out)
    /// keeps the same way what its unfinished calls carried: the call in flight may have
    /// reached CloudWatch, and is sent again rather than lost.
    pub async fn flush(&self) -> Result<usize, Error> {
        let documents: Vec<Pending> = self.lock().drain(..).collect();
        let mut calls = self.plan(&documents);
        let mut flight = InFlight {
            sink: self,
            parts: calls.iter().map(|call| call.parts.clone()).collect(),
            sent_of: vec![0; documents.len()],
            documents,
            next: 0,
        };
        let mut sent = 0;
        for (at, call) in calls.iter_mut().enumerate() {
            flight.next = at;
            self.client
                .put_metric_data()
                .namespace(&call.namespace)
                .set_metric_data(Some(std::mem::take(&mut call.data)))
                .send()
                .await
                .map_err(Error::internal)?;
            for &(document, count) in &call.parts {
                flight.sent_of[document] += count;
                sent += count;
            }
        }
        flight.next = calls.len();
        Ok(sent)
    }
}

/// The documents of a flush under way. However the flush ends before its last call, when
/// this is dropped (a failed call returned, or the flush's future was dropped), the
/// documents of the calls from `next` on go back to the buffer, each with what of it was
/// sent, ahead of whatever was written meanwhile.
struct InFlight<'a> {
    sink: &'a CloudWatchSink,
    documents: Vec<Pending>,
    /// Each call's `(document, data)` parts.
    parts: Vec<Vec<(usize, usize)>>,
    /// Data of each document sent by this flush.
    sent_of: Vec<usize>,
    /// The first call not known to be sent.
    next: usize,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let unsent: BTreeSet<usize> = self.parts[self.next.min(self.parts.len())..]
            .iter()
            .flat_map(|parts| parts.iter().map(|&(document, _)| document))
            .collect();
        if unsent.is_empty() {
            return;
        }
        let mut documents: Vec<Option<Pending>> = std::mem::take(&mut self.documents)
            .into_iter()
            .map(Some)
            .collect();
        let kept: Vec<Pending> = unsent
            .into_iter()
            .filter_map(|index| {
                documents[index].take().map(|pending| Pending {
                    sent: pending.sent + self.sent_of[index],
                    document: pending.document,
                })
            })
            .collect();
        let newer: Vec<Pending> = self.sink.lock().drain(..).collect();
        self.sink.keep(kept.into_iter().chain(newer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> CloudWatchSink {
        let config = aws_sdk_cloudwatch::Config::builder()
            .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
            .region(aws_sdk_cloudwatch::config::Region::new("us-east-1"))
            .build();
        CloudWatchSink::new(Client::from_conf(config))
    }

    /// An EMF document of `metrics` metrics named `m0`, `m1`, …, each with `values`.
    fn document(metrics: usize, values: &[f64]) -> Pending {
        let mut root = serde_json::json!({
            "_aws": {"Timestamp": 1_700_000_000_000u64, "CloudWatchMetrics": [{
                "Namespace": "Tests",
                "Dimensions": [["service"]],
                "Metrics": (0..metrics).map(|m| serde_json::json!({"Name": format!("m{m}")})).collect::<Vec<_>>(),
            }]},
            "service": "worker",
        });
        for m in 0..metrics {
            root[format!("m{m}")] = serde_json::json!(values);
        }
        Pending {
            document: root.to_string(),
            sent: 0,
        }
    }

    fn counts(call: &Call) -> f64 {
        call.data.iter().flat_map(|d| d.counts()).sum()
    }

    #[test]
    fn values_are_sent_once_each_with_their_counts_and_refused_ones_left_out() {
        let (values, counts, left_out) = counted(&[3.0, 1.0, 3.0, 1e300, -1e200, 3.0, 2.0]);
        assert_eq!(values, [3.0, 1.0, 2.0]);
        assert_eq!(counts, [3.0, 1.0, 1.0]);
        assert_eq!(left_out, 2);
        let (values, _, left_out) = counted(&[LARGEST_VALUE, -LARGEST_VALUE]);
        assert_eq!(values.len(), 2, "the bounds themselves are taken");
        assert_eq!(left_out, 0);
    }

    #[test]
    fn a_metric_with_more_values_than_a_datum_takes_is_spread_over_several() {
        let values: Vec<f64> = (0..400).map(f64::from).collect();
        let parsed = data(&document(1, &values).document).expect("EMF");
        let sizes: Vec<usize> = parsed.data.iter().map(|d| d.values().len()).collect();
        assert_eq!(sizes, [150, 150, 100]);
        assert_eq!(parsed.data[2].values()[0], 300.0);
    }

    #[test]
    fn calls_stay_within_the_limits_and_carry_every_datum_once() {
        // Ten documents of 100 metrics with 100 distinct values each: 1000 data, which the
        // count limit alone would put in one call of about 1.6 MB.
        let values: Vec<f64> = (0..100).map(|v| f64::from(v) + 0.5).collect();
        let documents: Vec<Pending> = (0..10).map(|_| document(100, &values)).collect();
        let calls = sink().plan(&documents);
        assert!(calls.len() > 1, "{} call(s)", calls.len());
        for call in &calls {
            assert!(call.data.len() <= DATA_PER_CALL);
            assert!(call.bytes <= BYTES_PER_CALL, "{} bytes", call.bytes);
            let parts: usize = call.parts.iter().map(|(_, n)| n).sum();
            assert_eq!(parts, call.data.len());
        }
        let total: f64 = calls.iter().map(counts).sum();
        assert_eq!(total, 100_000.0);
        // Whole documents per call: each document is in exactly one call.
        let mut seen: Vec<usize> = calls
            .iter()
            .flat_map(|call| call.parts.iter().map(|(d, _)| *d))
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_document_larger_than_a_call_is_spread_and_what_was_sent_is_skipped() {
        let mut big = document(1200, &[1.0]);
        let calls = sink().plan(std::slice::from_ref(&big));
        let sizes: Vec<usize> = calls.iter().map(|c| c.data.len()).collect();
        assert_eq!(sizes, [1000, 200]);
        big.sent = 1000;
        let calls = sink().plan(std::slice::from_ref(&big));
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].data.len(), 200);
        assert_eq!(calls[0].data[0].metric_name(), Some("m1000"));
    }
}
