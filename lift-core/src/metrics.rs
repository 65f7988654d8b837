//! Metrics in CloudWatch Embedded Metric Format (EMF): recorded through a handle in the
//! [`Context`](crate::Context), flushed once per invocation as EMF JSON lines on stdout,
//! which CloudWatch Logs turns into metrics without an API call.
//!
//! Each invocation gets one [`Metrics`] handle shared by all its records. Names, units and
//! dimensions are checked where they are recorded ([`MetricsError`]), never dropped in
//! silence. A document holds at most 100 metrics (more are split over several documents),
//! 30 dimensions and 100 values per metric, as CloudWatch requires.
//!
//! ```
//! use lift_core::metrics::{MetricsConfig, Unit};
//! use lift_core::{App, Context, Result};
//!
//! async fn place(ctx: Context) -> Result<()> {
//!     ctx.metrics().count("OrdersPlaced", 1.0).map_err(lift_core::Error::internal)?;
//!     ctx.metrics().value("OrderValue", 42.5, Unit::None).map_err(lift_core::Error::internal)?;
//!     Ok(())
//! }
//!
//! let app = App::new()
//!     .post("/orders", place)
//!     .metrics(MetricsConfig::new("Shop").service("orders"));
//! # let _ = app;
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use smallvec::SmallVec;

use crate::json_text::{push_f64, push_int, push_str};

/// A CloudWatch unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unit {
    /// No unit.
    None,
    /// A count.
    Count,
    /// Seconds.
    Seconds,
    /// Milliseconds.
    Milliseconds,
    /// Microseconds.
    Microseconds,
    /// Bytes.
    Bytes,
    /// Kilobytes.
    Kilobytes,
    /// Megabytes.
    Megabytes,
    /// Percent.
    Percent,
    /// Count per second.
    CountPerSecond,
    /// Bytes per second.
    BytesPerSecond,
}

impl Unit {
    /// The name CloudWatch uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::None => "None",
            Unit::Count => "Count",
            Unit::Seconds => "Seconds",
            Unit::Milliseconds => "Milliseconds",
            Unit::Microseconds => "Microseconds",
            Unit::Bytes => "Bytes",
            Unit::Kilobytes => "Kilobytes",
            Unit::Megabytes => "Megabytes",
            Unit::Percent => "Percent",
            Unit::CountPerSecond => "Count/Second",
            Unit::BytesPerSecond => "Bytes/Second",
        }
    }
}

/// A metric, dimension or property that CloudWatch would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// A name that is empty, longer than 255 characters, not printable ASCII, or starts
    /// with `:`; or a reserved property name.
    #[error("invalid metric or dimension name `{0}`")]
    InvalidName(String),
    /// A value that is not finite.
    #[error("metric `{0}` has a value that is not a finite number")]
    InvalidValue(String),
    /// The same metric recorded with two units.
    #[error("metric `{name}` was recorded in {first} and in {second}")]
    UnitMismatch {
        /// The metric.
        name: String,
        /// The unit it was first recorded with.
        first: &'static str,
        /// The other unit.
        second: &'static str,
    },
    /// More than 30 dimensions.
    #[error("more than 30 dimensions")]
    TooManyDimensions,
    /// A dimension value that is empty or longer than 1024 characters.
    #[error("invalid value for dimension `{0}`")]
    InvalidDimensionValue(String),
}

fn check_name(name: &str) -> Result<(), MetricsError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(':')
        && name.bytes().all(|b| (0x20..0x7f).contains(&b))
        && name != "_aws";
    if ok {
        Ok(())
    } else {
        Err(MetricsError::InvalidName(name.to_owned()))
    }
}

/// Where flushed EMF lines go.
pub trait MetricsSink: Send + Sync + 'static {
    /// Writes one EMF document (a JSON object, without a newline).
    fn write(&self, document: &str);
}

/// Writes EMF lines to stdout, where Lambda's log agent picks them up.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdoutSink;

impl MetricsSink for StdoutSink {
    fn write(&self, document: &str) {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        // A metrics line that cannot be written has nowhere else to go.
        let _ = writeln!(lock, "{document}");
    }
}

/// Metrics configuration for an App.
#[derive(Clone)]
pub struct MetricsConfig {
    pub(crate) namespace: Arc<str>,
    pub(crate) defaults: BTreeMap<String, String>,
    pub(crate) route_metrics: bool,
    pub(crate) cold_start: bool,
    pub(crate) sink: Arc<dyn MetricsSink>,
    /// The last `CloudWatchMetrics` directive written: an invocation that records the same
    /// metrics under the same dimensions as the one before (the usual case) reuses it.
    directive: Arc<Mutex<Option<Directive>>>,
}

/// A `CloudWatchMetrics` directive as written, with what it was written for, and the parts
/// of a document that follow from it: each metric's key, and the dimensions as written for
/// the values they had last.
#[derive(Debug)]
struct Directive {
    dimensions: Vec<String>,
    metrics: Vec<(String, &'static str, bool)>,
    json: Box<RawValue>,
    /// `,"Name":` for each metric, in the batch's order.
    keys: Vec<String>,
    /// The dimension values `written` is for.
    values: Vec<String>,
    /// `,"name":"value"` for each dimension no metric of the batch shadows.
    written: String,
}

impl Directive {
    fn describes(&self, dimensions: &[(&str, &str)], batch: &[Entry<'_>]) -> bool {
        self.dimensions.len() == dimensions.len()
            && self.metrics.len() == batch.len()
            && self
                .dimensions
                .iter()
                .zip(dimensions)
                .all(|(a, (b, _))| a == b)
            && self
                .metrics
                .iter()
                .zip(batch)
                .all(|((n, u, h), (bn, bu, bh, _))| n == bn && u == bu && h == bh)
    }
}

impl MetricsConfig {
    /// Writes `document` with the cached directive and the parts that follow from it,
    /// written again first when they do not describe the document's metrics and
    /// dimensions. `None` (logged) when the directive cannot be written.
    fn write(&self, document: &Document<'_>) -> Option<String> {
        let mut cached = self
            .directive
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = cached
            .as_ref()
            .is_some_and(|d| d.describes(document.dimensions, document.batch));
        if !fresh {
            *cached = Some(self.directive(document)?);
        }
        let directive = cached.as_mut()?;
        let values_match = directive.values.len() == document.dimensions.len()
            && directive
                .values
                .iter()
                .zip(document.dimensions)
                .all(|(a, (_, b))| a == b);
        if !values_match {
            directive.values = document
                .dimensions
                .iter()
                .map(|(_, v)| (*v).to_owned())
                .collect();
            directive.written.clear();
            for &(key, value) in document.dimensions {
                if !document.is_metric(key) {
                    push_key(&mut directive.written, key);
                    push_str(&mut directive.written, value);
                }
            }
        }
        Some(document.write(directive))
    }

    /// The `CloudWatchMetrics` array for the document's batch under its dimensions, and
    /// its metrics' keys. `None` (logged) when it cannot be written.
    fn directive(&self, document: &Document<'_>) -> Option<Directive> {
        let (dimensions, batch) = (document.dimensions, document.batch);
        let names: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
        let names = names.as_slice();
        let metrics: Vec<Definition<'_>> = batch
            .iter()
            .map(|(name, unit, high, _)| Definition {
                name,
                unit,
                storage_resolution: high.then_some(1),
            })
            .collect();
        let json = serde_json::value::to_raw_value(&[DirectiveJson {
            namespace: &self.namespace,
            dimensions: [names],
            metrics,
        }]);
        match json {
            Ok(json) => Some(Directive {
                dimensions: names.iter().map(|n| (*n).to_owned()).collect(),
                metrics: batch
                    .iter()
                    .map(|(n, u, h, _)| ((*n).to_owned(), *u, *h))
                    .collect(),
                json,
                keys: batch
                    .iter()
                    .map(|(name, ..)| {
                        let mut key = String::with_capacity(name.len() + 4);
                        push_key(&mut key, name);
                        key
                    })
                    .collect(),
                // No values yet: the dimensions are written on first use.
                values: Vec::new(),
                written: String::new(),
            }),
            Err(error) => {
                tracing::warn!(target: "lift::metrics", error = %error, "an EMF directive could not be written");
                None
            }
        }
    }
}

impl std::fmt::Debug for MetricsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsConfig")
            .field("namespace", &self.namespace)
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

impl MetricsConfig {
    /// Metrics in `namespace`.
    ///
    /// # Default
    /// No default dimensions, per-route `Requests`, `Errors` and `Latency` on, a
    /// `ColdStart` count on the first invocation, written to stdout.
    pub fn new(namespace: &str) -> Self {
        MetricsConfig {
            namespace: Arc::from(namespace),
            defaults: BTreeMap::new(),
            route_metrics: true,
            cold_start: true,
            sink: Arc::new(StdoutSink),
            directive: Arc::default(),
        }
    }

    /// Adds the `service` dimension to every metric.
    pub fn service(self, service: &str) -> Self {
        self.default_dimension("service", service)
    }

    /// Adds a dimension to every metric.
    pub fn default_dimension(mut self, name: &str, value: &str) -> Self {
        self.defaults.insert(name.to_owned(), value.to_owned());
        self
    }

    /// Switches the automatic per-route `Requests`, `Errors` and `Latency` metrics.
    pub fn route_metrics(mut self, on: bool) -> Self {
        self.route_metrics = on;
        self
    }

    /// Switches the `ColdStart` metric.
    pub fn cold_start(mut self, on: bool) -> Self {
        self.cold_start = on;
        self
    }

    /// Sends documents to `sink` instead of stdout.
    pub fn sink(mut self, sink: impl MetricsSink) -> Self {
        self.sink = Arc::new(sink);
        self
    }
}

/// A name recorded by Lift itself is borrowed for the life of the program; one recorded
/// by a handler is copied once, when it is first seen in an invocation.
type Name = Cow<'static, str>;

/// The values of one metric: the first inline, since most metrics get one per invocation.
#[derive(Debug)]
struct Values {
    first: f64,
    /// Every value, the first included, once there is more than one.
    all: Vec<f64>,
}

impl Values {
    fn push(&mut self, value: f64) {
        if self.all.is_empty() {
            self.all.push(self.first);
        }
        self.all.push(value);
    }

    fn as_slice(&self) -> &[f64] {
        if self.all.is_empty() {
            std::slice::from_ref(&self.first)
        } else {
            &self.all
        }
    }
}

#[derive(Debug)]
struct Metric {
    name: Name,
    unit: &'static str,
    high_resolution: bool,
    values: Values,
}

/// What one invocation recorded, each name once, in the order first recorded.
#[derive(Debug, Default)]
struct Recorder {
    dimensions: Vec<(Name, String)>,
    metrics: Vec<Metric>,
    properties: Vec<(Name, Value)>,
}

impl Recorder {
    /// Records `value` of `name`, which must be finite (`owned` makes the name kept, the
    /// first time).
    fn record(
        &mut self,
        name: &str,
        owned: impl FnOnce() -> Name,
        value: f64,
        unit: Unit,
        high_resolution: bool,
    ) -> Result<(), MetricsError> {
        if !value.is_finite() {
            return Err(MetricsError::InvalidValue(name.to_owned()));
        }
        let unit = unit.as_str();
        let Some(metric) = self.metrics.iter_mut().find(|m| m.name == name) else {
            self.metrics.push(Metric {
                name: owned(),
                unit,
                high_resolution,
                values: Values {
                    first: value,
                    all: Vec::new(),
                },
            });
            return Ok(());
        };
        if metric.unit != unit {
            return Err(MetricsError::UnitMismatch {
                name: name.to_owned(),
                first: metric.unit,
                second: unit,
            });
        }
        metric.values.push(value);
        metric.high_resolution |= high_resolution;
        Ok(())
    }

    /// Sets the dimension `name` to `value`, which is checked here.
    fn set_dimension(
        &mut self,
        name: &str,
        owned: impl FnOnce() -> Name,
        value: &str,
    ) -> Result<(), MetricsError> {
        if value.is_empty() || value.len() > 1024 {
            return Err(MetricsError::InvalidDimensionValue(name.to_owned()));
        }
        if let Some((_, old)) = self.dimensions.iter_mut().find(|(n, _)| n == name) {
            value.clone_into(old);
            return Ok(());
        }
        if self.dimensions.len() >= 30 {
            return Err(MetricsError::TooManyDimensions);
        }
        self.dimensions.push((owned(), value.to_owned()));
        Ok(())
    }
}

/// The metrics of one invocation; cheap to clone (every record's [`Context`](crate::Context)
/// holds the same one).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    inner: Arc<Invocation>,
}

#[derive(Debug, Default)]
struct Invocation {
    recorder: Mutex<Recorder>,
    /// Whether a request got past every layer to its handler; the App tells a caller when
    /// it did not (see `App`'s refusal header).
    handler_called: std::sync::atomic::AtomicBool,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Recorder) -> T) -> T {
        let mut recorder = self
            .inner
            .recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut recorder)
    }

    /// Notes that the invocation's handler was called.
    pub(crate) fn handler_called(&self) {
        self.inner
            .handler_called
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the invocation's handler was called.
    pub(crate) fn was_handler_called(&self) -> bool {
        self.inner
            .handler_called
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn record_named(
        &self,
        name: &str,
        value: f64,
        unit: Unit,
        high_resolution: bool,
    ) -> Result<(), MetricsError> {
        check_name(name)?;
        let owned = || Cow::Owned(name.to_owned());
        self.with(|r| r.record(name, owned, value, unit, high_resolution))
    }

    /// Lift's per-route metrics of one request, under one lock: the `route` dimension and
    /// `Requests`, `Errors` and `Latency` (milliseconds). Valid names, never copied.
    pub(crate) fn record_route(&self, route: &str, failed: bool, latency: f64) {
        self.with(|r| {
            if let Err(error) = r.set_dimension("route", || Cow::Borrowed("route"), route) {
                tracing::warn!(target: "lift::metrics", %error, route, "the route dimension was not recorded");
            }
            // In name order, as a document lists them: a request that records nothing
            // else needs no sort.
            let builtins = [
                ("Errors", if failed { 1.0 } else { 0.0 }, Unit::Count),
                ("Latency", latency, Unit::Milliseconds),
                ("Requests", 1.0, Unit::Count),
            ];
            for (name, value, unit) in builtins {
                let _ = r.record(name, || Cow::Borrowed(name), value, unit, false);
            }
        });
    }

    /// Lift's own `ColdStart` count (the per-route ones go through
    /// [`Metrics::record_route`]): a valid name, never copied.
    pub(crate) fn record_builtin(
        &self,
        name: &'static str,
        value: f64,
        unit: Unit,
    ) -> Result<(), MetricsError> {
        self.with(|r| r.record(name, || Cow::Borrowed(name), value, unit, false))
    }

    /// Adds `n` to the count `name`.
    ///
    /// # Errors
    /// [`MetricsError`] for an invalid name or value, or a unit other than before.
    pub fn count(&self, name: &str, n: f64) -> Result<(), MetricsError> {
        self.record_named(name, n, Unit::Count, false)
    }

    /// Records a value of `name` in `unit`.
    ///
    /// # Errors
    /// As [`Metrics::count`].
    pub fn value(&self, name: &str, value: f64, unit: Unit) -> Result<(), MetricsError> {
        self.record_named(name, value, unit, false)
    }

    /// Records a value at one-second resolution.
    ///
    /// # Errors
    /// As [`Metrics::count`].
    pub fn high_resolution(&self, name: &str, value: f64, unit: Unit) -> Result<(), MetricsError> {
        self.record_named(name, value, unit, true)
    }

    /// Records a duration in milliseconds, to the microsecond.
    ///
    /// # Errors
    /// As [`Metrics::count`].
    pub fn timing(&self, name: &str, duration: Duration) -> Result<(), MetricsError> {
        self.record_named(name, millis(duration), Unit::Milliseconds, false)
    }

    /// Adds a dimension to every metric of this invocation (tenant, route, ...).
    ///
    /// # Errors
    /// [`MetricsError`] for an invalid name or value, or past 30 dimensions.
    pub fn dimension(&self, name: &str, value: &str) -> Result<(), MetricsError> {
        check_name(name)?;
        self.set_dimension(name, || Cow::Owned(name.to_owned()), value)
    }

    fn set_dimension(
        &self,
        name: &str,
        owned: impl FnOnce() -> Name,
        value: &str,
    ) -> Result<(), MetricsError> {
        self.with(|r| r.set_dimension(name, owned, value))
    }

    /// Adds a property: a searchable field of the log line that is not a dimension
    /// (request id, order id).
    ///
    /// # Errors
    /// [`MetricsError::InvalidName`] for `_aws` or an invalid name.
    pub fn property(&self, name: &str, value: impl Into<Value>) -> Result<(), MetricsError> {
        check_name(name)?;
        let value = value.into();
        self.with(|r| match r.properties.iter_mut().find(|(n, _)| n == name) {
            Some((_, old)) => *old = value,
            None => r.properties.push((Cow::Owned(name.to_owned()), value)),
        });
        Ok(())
    }

    /// Builds the EMF documents for what was recorded, and empties the handle.
    pub fn take_documents(&self, config: &MetricsConfig, now: SystemTime) -> Vec<String> {
        let mut documents = Vec::new();
        self.documents(config, now, &[], |document| documents.push(document));
        documents
    }

    /// [`Metrics::take_documents`] with properties of the invocation (`requestId`) that
    /// win over recorded ones of the same name, written without being copied first; each
    /// document goes to `emit` as it is written.
    ///
    /// An invocation records a few metrics under a few dimensions, so their lists are
    /// kept on the stack: the document itself is the one allocation of a flush.
    pub(crate) fn documents(
        &self,
        config: &MetricsConfig,
        now: SystemTime,
        fixed: &[(&'static str, &str)],
        mut emit: impl FnMut(String),
    ) {
        let mut recorder = self.with(std::mem::take);
        if recorder.metrics.is_empty() {
            return;
        }
        // In name order, so that the directive does not depend on the order of recording.
        if !recorder.metrics.is_sorted_by(|a, b| a.name <= b.name) {
            recorder
                .metrics
                .sort_unstable_by(|a, b| a.name.cmp(&b.name));
        }
        // Default and invocation dimensions together, in name order, an invocation's value
        // over a default of the same name, within CloudWatch's 30: borrowed, not copied.
        let mut dimensions: SmallVec<[(&str, &str); 8]> = config
            .defaults
            .iter()
            .filter(|(k, _)| !recorder.dimensions.iter().any(|(n, _)| n == *k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(recorder.dimensions.iter().map(|(k, v)| (&**k, v.as_str())))
            .collect();
        if !dimensions.is_sorted_by_key(|(k, _)| *k) {
            dimensions.sort_unstable_by_key(|(k, _)| *k);
        }
        if dimensions.len() > 30 {
            tracing::warn!(target: "lift::metrics", dropped = dimensions.len() - 30, "more than CloudWatch's 30 dimensions with the defaults: the last by name are left out");
            dimensions.truncate(30);
        }
        let timestamp = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // At most 100 values per metric: a longer one is cut into chunks, each in its own
        // document, since a name appears once in a document.
        let mut pending: SmallVec<[Entry<'_>; 8]> = recorder
            .metrics
            .iter()
            .flat_map(|metric| {
                metric
                    .values
                    .as_slice()
                    .chunks(100)
                    .map(|chunk| (&*metric.name, metric.unit, metric.high_resolution, chunk))
            })
            .collect();
        while !pending.is_empty() {
            // At most 100 metrics per document, each name once (a name is recorded once, so
            // that holds unless a metric was cut into chunks). Usually everything fits.
            let fits = pending.len() <= 100
                && pending
                    .iter()
                    .enumerate()
                    .all(|(i, e)| !pending[..i].iter().any(|(n, ..)| *n == e.0));
            let batch = if fits {
                std::mem::take(&mut pending)
            } else {
                let mut batch = SmallVec::new();
                let mut rest = SmallVec::new();
                for entry in pending {
                    if batch.len() < 100 && !batch.iter().any(|(n, ..): &Entry<'_>| *n == entry.0) {
                        batch.push(entry);
                    } else {
                        rest.push(entry);
                    }
                }
                pending = rest;
                batch
            };
            let document = Document {
                timestamp,
                dimensions: &dimensions,
                fixed,
                properties: &recorder.properties,
                batch: &batch,
            };
            if let Some(written) = config.write(&document) {
                emit(written);
            }
        }
    }
}

/// A duration in milliseconds to the microsecond, as `Latency` and [`Metrics::timing`]
/// record it (so that a document writes it without the float formatter).
pub(crate) fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

/// One EMF document: the `_aws` metadata, then the dimensions, the properties and the
/// metric values as top-level fields. A metric's value wins over a dimension or a property
/// of the same name, a dimension over a property, and a fixed property over a recorded
/// one, so that no key is written twice.
struct Document<'a> {
    timestamp: u64,
    dimensions: &'a [(&'a str, &'a str)],
    /// Keys are Lift's own plain names (letters and digits), written without escaping.
    fixed: &'a [(&'static str, &'a str)],
    properties: &'a [(Name, Value)],
    batch: &'a [Entry<'a>],
}

/// One metric of a document: name, unit, high resolution, values (at most 100).
type Entry<'a> = (&'a str, &'static str, bool, &'a [f64]);

impl Document<'_> {
    /// Whether `key` is written by a metric, or is `_aws` (which a default dimension,
    /// unchecked where it is configured, could otherwise write a second time).
    fn is_metric(&self, key: &str) -> bool {
        key == "_aws" || self.batch.iter().any(|(name, ..)| *name == key)
    }

    fn is_dimension(&self, key: &str) -> bool {
        self.dimensions.iter().any(|(name, _)| *name == key)
    }

    /// The document as one line of JSON, written field by field from the recorded data
    /// and `directive`'s parts (the directive, the metrics' keys and the dimensions, as
    /// [`MetricsConfig::write`] keeps them for this document): no JSON value tree and no
    /// serializer state in between. Every name was checked where it was recorded; strings
    /// are escaped as JSON requires.
    fn write(&self, directive: &Directive) -> String {
        let json = directive.json.get();
        let mut out = String::with_capacity(json.len() + directive.written.len() + 256);
        out.push_str("{\"_aws\":{\"Timestamp\":");
        push_int(&mut out, self.timestamp);
        out.push_str(",\"CloudWatchMetrics\":");
        out.push_str(json);
        out.push('}');
        out.push_str(&directive.written);
        for &(key, value) in self.fixed {
            if !self.is_metric(key) && !self.is_dimension(key) {
                debug_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
                out.push_str(",\"");
                out.push_str(key);
                out.push_str("\":");
                push_str(&mut out, value);
            }
        }
        for (key, value) in self.properties {
            if !self.is_metric(key)
                && !self.is_dimension(key)
                && !self.fixed.iter().any(|(name, _)| name == key)
            {
                push_key(&mut out, key);
                // Writing a `Value` into a `String` cannot fail.
                let _ = write!(out, "{value}");
            }
        }
        for (key, &(_, _, _, values)) in directive.keys.iter().zip(self.batch) {
            out.push_str(key);
            match values {
                [one] => push_f64(&mut out, *one),
                many => {
                    out.push('[');
                    for (i, value) in many.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        push_f64(&mut out, *value);
                    }
                    out.push(']');
                }
            }
        }
        out.push('}');
        out
    }
}

/// `,"key":`: every key follows the `_aws` object.
fn push_key(out: &mut String, key: &str) {
    out.push(',');
    push_str(out, key);
    out.push(':');
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DirectiveJson<'a> {
    namespace: &'a str,
    dimensions: [&'a [&'a str]; 1],
    metrics: Vec<Definition<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Definition<'a> {
    name: &'a str,
    unit: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage_resolution: Option<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> MetricsConfig {
        MetricsConfig::new("Shop").service("orders")
    }

    fn parse(documents: &[String]) -> Vec<Value> {
        documents
            .iter()
            .map(|d| serde_json::from_str(d).expect("json"))
            .collect()
    }

    #[test]
    fn a_directive_is_reused_only_for_the_same_metrics_and_dimensions() {
        let config = config();
        let at = UNIX_EPOCH + Duration::from_secs(10);
        let directive = |m: &Metrics| {
            parse(&m.take_documents(&config, at))[0]["_aws"]["CloudWatchMetrics"][0].clone()
        };
        let m = Metrics::default();
        m.count("Placed", 1.0).expect("count");
        let first = directive(&m);
        m.count("Placed", 2.0).expect("count");
        assert_eq!(directive(&m), first, "the same metrics");
        m.count("Placed", 1.0).expect("count");
        m.timing("Took", Duration::from_millis(3)).expect("timing");
        let two = directive(&m);
        assert_eq!(
            two["Metrics"],
            json!([{"Name": "Placed", "Unit": "Count"}, {"Name": "Took", "Unit": "Milliseconds"}])
        );
        m.count("Placed", 1.0).expect("count");
        m.dimension("tenant", "acme").expect("dimension");
        let dims = directive(&m);
        assert_eq!(dims["Dimensions"], json!([["service", "tenant"]]));
        assert_eq!(
            dims["Metrics"],
            json!([{"Name": "Placed", "Unit": "Count"}])
        );
        m.high_resolution("Placed", 1.0, Unit::Count)
            .expect("value");
        let high = directive(&m);
        assert_eq!(high["Dimensions"], json!([["service"]]));
        assert_eq!(high["Metrics"][0]["StorageResolution"], 1);
    }

    #[test]
    fn a_document_in_emf_shape() {
        let m = Metrics::default();
        m.count("Placed", 1.0).expect("count");
        m.count("Placed", 2.0).expect("count");
        m.timing("Took", Duration::from_millis(12)).expect("timing");
        m.high_resolution("Depth", 3.0, Unit::None).expect("value");
        m.dimension("tenant", "acme").expect("dimension");
        m.property("requestId", "r-1").expect("property");
        let docs = parse(&m.take_documents(&config(), UNIX_EPOCH + Duration::from_secs(10)));
        assert_eq!(docs.len(), 1);
        let doc = &docs[0];
        assert_eq!(doc["_aws"]["Timestamp"], 10_000);
        let cw = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "Shop");
        assert_eq!(cw["Dimensions"], json!([["service", "tenant"]]));
        assert_eq!(doc["Placed"], json!([1.0, 2.0]));
        assert_eq!(doc["Took"], json!(12.0));
        assert_eq!(doc["tenant"], "acme");
        assert_eq!(doc["requestId"], "r-1");
        let depth = cw["Metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .find(|d| d["Name"] == "Depth")
            .expect("Depth");
        assert_eq!(depth["StorageResolution"], 1);
        assert!(
            m.take_documents(&config(), UNIX_EPOCH).is_empty(),
            "emptied"
        );
    }

    #[test]
    fn a_name_is_written_once_metric_over_dimension_over_property() {
        let m = Metrics::default();
        m.count("orders", 3.0).expect("count");
        m.dimension("orders", "all").expect("dimension");
        m.property("orders", "a property").expect("property");
        m.dimension("region", "eu").expect("dimension");
        m.property("region", "a property").expect("property");
        m.property("orderId", "o-1").expect("property");
        let documents = m.take_documents(&config(), UNIX_EPOCH);
        let text = &documents[0];
        for key in ["\"orders\":", "\"region\":", "\"orderId\":", "\"_aws\":"] {
            assert_eq!(text.matches(key).count(), 1, "{key} in {text}");
        }
        let doc = &parse(&documents)[0];
        assert_eq!(doc["orders"], json!(3.0));
        assert_eq!(doc["region"], "eu");
        assert_eq!(doc["orderId"], "o-1");
        assert_eq!(doc["service"], "orders");
    }

    #[test]
    fn each_invocation_writes_its_own_dimension_values_with_one_config() {
        // One config for every invocation, as an App has: what it keeps from one document
        // must not leak into the next.
        let config = config();
        let document = |route: &str, region: Option<&str>, metric: &str| {
            let m = Metrics::default();
            m.dimension("route", route).expect("dimension");
            if let Some(region) = region {
                m.dimension("region", region).expect("dimension");
            }
            m.count(metric, 1.0).expect("count");
            let documents = m.take_documents(&config, UNIX_EPOCH);
            assert_eq!(documents.len(), 1);
            let text = documents[0].clone();
            (parse(&documents).remove(0), text)
        };
        let (a, _) = document("GET /a", None, "Requests");
        let (b, _) = document("GET /b", None, "Requests");
        let (again, _) = document("GET /a", Some("eu"), "Requests");
        assert_eq!(a["route"], "GET /a");
        assert_eq!(b["route"], "GET /b", "same directive, other value");
        assert_eq!(again["route"], "GET /a");
        assert_eq!(again["region"], "eu");
        assert_eq!(
            again["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["region", "route", "service"]])
        );
        // A metric named like a dimension wins; the next document, without that metric but
        // with the same dimension values, writes the dimension again.
        let (shadowed, text) = document("GET /a", Some("eu"), "region");
        assert_eq!(shadowed["region"], json!(1.0));
        assert_eq!(text.matches("\"region\":").count(), 1, "{text}");
        let (back, text) = document("GET /a", Some("eu"), "Requests");
        assert_eq!(back["region"], "eu");
        assert_eq!(back["Requests"], json!(1.0));
        assert_eq!(text.matches("\"region\":").count(), 1, "{text}");
    }

    #[test]
    fn a_default_dimension_named_aws_does_not_write_the_metadata_key_twice() {
        let m = Metrics::default();
        m.count("Placed", 1.0).expect("count");
        let config = config().default_dimension("_aws", "shadow");
        let documents = m.take_documents(&config, UNIX_EPOCH + Duration::from_secs(10));
        let text = &documents[0];
        assert_eq!(text.matches("\"_aws\":").count(), 1, "{text}");
        assert_eq!(parse(&documents)[0]["_aws"]["Timestamp"], 10_000);
    }

    #[test]
    fn text_that_needs_escaping_is_escaped() {
        let m = Metrics::default();
        m.count("say \"hi\"", 1.0).expect("count");
        m.dimension("tenant", "a\"b\\c\nd\u{1}é")
            .expect("dimension");
        m.property("note", json!({"nested": ["x\"y", 1.5, null]}))
            .expect("property");
        let docs = m.take_documents(&config(), UNIX_EPOCH);
        let doc = &parse(&docs)[0];
        assert_eq!(doc["say \"hi\""], json!(1.0));
        assert_eq!(doc["tenant"], "a\"b\\c\nd\u{1}é");
        assert_eq!(doc["note"], json!({"nested": ["x\"y", 1.5, null]}));
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "say \"hi\""
        );
    }

    #[test]
    fn the_invocation_properties_win_over_recorded_ones_and_lose_to_metrics() {
        let m = Metrics::default();
        m.count("Placed", 1.0).expect("count");
        m.property("requestId", "recorded").expect("property");
        m.property("orderId", "o-1").expect("property");
        m.timing("Took", Duration::from_micros(12_345))
            .expect("timing");
        let fixed = [
            ("requestId", "r-9"),
            ("Placed", "shadowed"),
            ("service", "x"),
        ];
        let mut documents = Vec::new();
        m.documents(&config(), UNIX_EPOCH, &fixed, |d| documents.push(d));
        let text = &documents[0];
        for key in ["\"requestId\":", "\"Placed\":", "\"service\":"] {
            assert_eq!(text.matches(key).count(), 1, "{key} in {text}");
        }
        let doc = &parse(&documents)[0];
        assert_eq!(doc["requestId"], "r-9");
        assert_eq!(doc["orderId"], "o-1");
        assert_eq!(doc["Placed"], json!(1.0));
        assert_eq!(doc["service"], "orders");
        assert_eq!(doc["Took"], json!(12.345));
    }

    #[test]
    fn past_100_metrics_documents_split() {
        let m = Metrics::default();
        for i in 0..250 {
            m.count(&format!("m{i}"), 1.0).expect("count");
        }
        for _ in 0..150 {
            m.count("many", 1.0).expect("count");
        }
        let docs = parse(&m.take_documents(&config(), UNIX_EPOCH));
        assert!(docs.iter().all(|d| {
            d["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .is_some_and(|a| a.len() <= 100)
        }));
        let total: usize = docs
            .iter()
            .map(|d| {
                d["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                    .as_array()
                    .map_or(0, Vec::len)
            })
            .sum();
        assert_eq!(
            total, 252,
            "250 metrics, and `many` in two documents of 100 and 50 values"
        );
        let many: usize = docs
            .iter()
            .filter_map(|d| d["many"].as_array().map(Vec::len))
            .sum();
        assert_eq!(many, 150);
    }

    #[test]
    fn a_long_metric_among_few_is_cut_and_each_name_written_once_per_document() {
        let m = Metrics::default();
        m.count("few", 1.0).expect("count");
        for _ in 0..130 {
            m.count("many", 2.0).expect("count");
        }
        let docs = parse(&m.take_documents(&config(), UNIX_EPOCH));
        assert_eq!(docs.len(), 2, "{docs:?}");
        assert_eq!(docs[0]["many"].as_array().map(Vec::len), Some(100));
        assert_eq!(docs[0]["few"], json!(1.0));
        assert_eq!(docs[1]["many"].as_array().map(Vec::len), Some(30));
        assert!(docs[1].get("few").is_none());
    }

    #[test]
    fn invalid_input_is_an_error_where_it_is_recorded() {
        let m = Metrics::default();
        assert!(matches!(
            m.count("", 1.0),
            Err(MetricsError::InvalidName(_))
        ));
        assert!(matches!(
            m.count("bad\nname", 1.0),
            Err(MetricsError::InvalidName(_))
        ));
        assert!(matches!(
            m.count("x", f64::NAN),
            Err(MetricsError::InvalidValue(_))
        ));
        m.count("x", 1.0).expect("count");
        assert!(matches!(
            m.value("x", 1.0, Unit::Bytes),
            Err(MetricsError::UnitMismatch { .. })
        ));
        for i in 0..30 {
            m.dimension(&format!("d{i}"), "v").expect("dimension");
        }
        assert_eq!(
            m.dimension("d31", "v"),
            Err(MetricsError::TooManyDimensions)
        );
        assert!(m.dimension("d0", "").is_err());
        assert!(m.property("_aws", 1).is_err());
    }
}
