//! Logs in the shape of Lambda's JSON log format, with every span field on every line.
//!
//! Each line is one JSON object: `timestamp` (RFC 3339, milliseconds, UTC), `level`
//! (`TRACE` … `ERROR`), `message`, `target`, then the fields of every enclosing span (the
//! Lambda runtime's invocation span brings `requestId`; Lift's request and record spans add
//! `xrayTraceId`, `correlationId`, `source`, `route`, `messageId`, ...) and the event's own
//! fields.
//!
//! [`try_init`] reads `AWS_LAMBDA_LOG_FORMAT` (`JSON` or `Text`) and `AWS_LAMBDA_LOG_LEVEL`
//! once, at cold start; [`crate::App::run`] calls it for you unless a subscriber is set.
//!
//! ```
//! use tracing_subscriber::layer::SubscriberExt;
//! let subscriber = tracing_subscriber::registry()
//!     .with(lift_core::logging::JsonLayer::new(std::io::stdout));
//! tracing::subscriber::with_default(subscriber, || {
//!     tracing::info!(orderId = 42, "order placed");
//! });
//! ```

use std::fmt;
use std::io::Write;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context as LayerContext, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// A `tracing_subscriber` layer writing one Lambda-style JSON object per event.
#[derive(Debug)]
pub struct JsonLayer<W> {
    writer: W,
}

impl<W> JsonLayer<W>
where
    W: for<'a> MakeWriter<'a> + 'static,
{
    /// A layer writing to `writer` (`std::io::stdout` in Lambda).
    pub fn new(writer: W) -> Self {
        JsonLayer { writer }
    }
}

/// Span fields, stored in the span's extensions: by their static names, in the order
/// recorded, so a span costs no key allocations and no map until a line is written.
struct SpanFields(Vec<(&'static str, Value)>);

/// Where a visitor puts the fields it records.
trait Fields {
    fn put(&mut self, name: &'static str, value: Value);
}

impl Fields for Map<String, Value> {
    fn put(&mut self, name: &'static str, value: Value) {
        self.insert(name.to_owned(), value);
    }
}

impl Fields for Vec<(&'static str, Value)> {
    fn put(&mut self, name: &'static str, value: Value) {
        match self.iter_mut().find(|(n, _)| *n == name) {
            Some((_, old)) => *old = value,
            None => self.push((name, value)),
        }
    }
}

struct JsonVisitor<'a, F>(&'a mut F);

impl<F: Fields> Visit for JsonVisitor<'_, F> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.put(field.name(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.put(field.name(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.put(field.name(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.put(field.name(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.put(field.name(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.put(
            field.name(),
            Value::from(crate::error::Chain(value).to_string()),
        );
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.put(field.name(), Value::from(format!("{value:?}")));
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Vec::with_capacity(attrs.fields().len());
        attrs.record(&mut JsonVisitor(&mut fields));
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
            values.record(&mut JsonVisitor(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".to_owned(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        line.insert(
            "level".to_owned(),
            Value::from(level_name(metadata.level())),
        );
        line.insert("message".to_owned(), Value::from(""));
        line.insert("target".to_owned(), Value::from(metadata.target()));
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    for (key, value) in fields {
                        line.insert((*key).to_owned(), value.clone());
                    }
                }
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        let Ok(mut text) = serde_json::to_string(&line) else {
            return;
        };
        text.push('\n');
        let mut writer = self.writer.make_writer_for(metadata);
        // A log line that cannot be written has nowhere else to go.
        let _ = writer.write_all(text.as_bytes());
    }
}

/// The log format `AWS_LAMBDA_LOG_FORMAT` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// One JSON object per line.
    Json,
    /// `tracing_subscriber`'s plain text format.
    Text,
}

/// Reads `AWS_LAMBDA_LOG_FORMAT` (default text) and `AWS_LAMBDA_LOG_LEVEL` (default
/// `INFO`; `FATAL` counts as `ERROR`).
pub fn from_env() -> (Format, LevelFilter) {
    let format = match std::env::var("AWS_LAMBDA_LOG_FORMAT") {
        Ok(value) if value.eq_ignore_ascii_case("json") => Format::Json,
        _ => Format::Text,
    };
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .map(|value| parse_level(&value))
        .unwrap_or(LevelFilter::INFO);
    (format, level)
}

/// Parses a Lambda log level name; anything unknown is `INFO`.
pub fn parse_level(value: &str) -> LevelFilter {
    match value.to_ascii_uppercase().as_str() {
        "TRACE" => LevelFilter::TRACE,
        "DEBUG" => LevelFilter::DEBUG,
        "WARN" => LevelFilter::WARN,
        "ERROR" | "FATAL" => LevelFilter::ERROR,
        _ => LevelFilter::INFO,
    }
}

/// Installs Lift's subscriber as the global default, configured from the environment.
/// Returns `false` (and changes nothing) when a global subscriber is already set.
pub fn try_init() -> bool {
    let (format, level) = from_env();
    match format {
        Format::Json => tracing_subscriber::registry()
            .with(JsonLayer::new(std::io::stdout).with_filter(level))
            .try_init()
            .is_ok(),
        Format::Text => tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stdout)
                    .with_filter(level),
            )
            .try_init()
            .is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
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

    #[test]
    fn lines_carry_span_fields_in_lambda_shape() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(JsonLayer::new(buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", requestId = "req-1", correlationId = "c-9");
            let _entered = span.enter();
            tracing::warn!(orderId = 42, "order placed");
        });
        let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf8");
        let line: Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "order placed");
        assert_eq!(line["requestId"], "req-1");
        assert_eq!(line["correlationId"], "c-9");
        assert_eq!(line["orderId"], 42);
        let timestamp = line["timestamp"].as_str().expect("timestamp");
        assert!(
            chrono::DateTime::parse_from_rfc3339(timestamp).is_ok() && timestamp.ends_with('Z'),
            "{timestamp}"
        );
    }

    #[test]
    fn lambda_level_names() {
        assert_eq!(parse_level("debug"), LevelFilter::DEBUG);
        assert_eq!(parse_level("FATAL"), LevelFilter::ERROR);
        assert_eq!(parse_level("nonsense"), LevelFilter::INFO);
    }
}
