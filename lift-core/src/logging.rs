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
use std::ops::Range;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context as LayerContext, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::json_text;

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

/// Fields written as JSON as they are recorded: each value's text in one buffer, found by
/// its static name. A span's fields are two allocations however many there are, and a log
/// line copies their text without reading it again.
#[derive(Default)]
struct JsonFields {
    text: String,
    /// Name, then where its value is in `text`; a name recorded again points at its new
    /// value (the old text stays, unused, until the fields are dropped).
    fields: Vec<(&'static str, Range<usize>)>,
}

impl JsonFields {
    fn with_capacity(fields: usize, text: usize) -> Self {
        JsonFields {
            text: String::with_capacity(text),
            fields: Vec::with_capacity(fields),
        }
    }

    /// Records `name` with the value `write` appends to the text.
    fn put(&mut self, name: &'static str, write: impl FnOnce(&mut String)) {
        let start = self.text.len();
        write(&mut self.text);
        let range = start..self.text.len();
        match self.fields.iter_mut().find(|(n, _)| *n == name) {
            Some((_, old)) => *old = range,
            None => self.fields.push((name, range)),
        }
    }

    /// Copies every field of `other` in, each over a field of the same name.
    fn extend(&mut self, other: &JsonFields) {
        for (name, range) in &other.fields {
            self.put(name, |text| text.push_str(&other.text[range.clone()]));
        }
    }

    /// The fields as one JSON object and a newline.
    fn line(&self) -> String {
        let mut line = String::with_capacity(self.text.len() + 16 * self.fields.len() + 4);
        line.push('{');
        for (i, (name, range)) in self.fields.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            json_text::push_str(&mut line, name);
            line.push(':');
            line.push_str(&self.text[range.clone()]);
        }
        line.push_str("}\n");
        line
    }
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name(), |text| json_text::push_str(text, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field.name(), |text| json_text::push_int(text, value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field.name(), |text| json_text::push_int(text, value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field.name(), |text| json_text::push_int(text, value));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put(field.name(), |text| json_text::push_int(text, value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field.name(), |text| json_text::push_f64(text, value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field.name(), |text| {
            text.push_str(if value { "true" } else { "false" });
        });
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field.name(), |text| {
            json_text::push_display(text, format_args!("{}", crate::error::Chain(value)));
        });
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field.name(), |text| {
            json_text::push_display(text, format_args!("{value:?}"));
        });
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = JsonFields::with_capacity(attrs.fields().len(), 160);
        attrs.record(&mut fields);
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<JsonFields>() {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let metadata = event.metadata();
        let mut line = JsonFields::with_capacity(16, 256);
        line.put("timestamp", |text| {
            let now = chrono::Utc::now();
            json_text::push_display(
                text,
                format_args!("{}", now.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
            );
        });
        line.put("level", |text| {
            json_text::push_str(text, level_name(metadata.level()));
        });
        line.put("message", |text| text.push_str("\"\""));
        line.put("target", |text| {
            json_text::push_str(text, metadata.target())
        });
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<JsonFields>() {
                    line.extend(fields);
                }
            }
        }
        event.record(&mut line);
        let mut writer = self.writer.make_writer_for(metadata);
        // A log line that cannot be written has nowhere else to go.
        let _ = writer.write_all(line.line().as_bytes());
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
            .with(level)
            .with(JsonLayer::new(std::io::stdout))
            .try_init()
            .is_ok(),
        Format::Text => tracing_subscriber::registry()
            .with(level)
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stdout))
            .try_init()
            .is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
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
    fn each_name_once_the_innermost_value_winning_and_text_escaped() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(JsonLayer::new(buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("request", tenant = tracing::field::Empty, route = "a");
            let _outer = outer.enter();
            outer.record("tenant", "t-1");
            outer.record("tenant", "t-2");
            let inner = tracing::info_span!("record", route = "b", count = 3_u64, ok = true);
            let _inner = inner.enter();
            let error = std::io::Error::other("disk \"full\"");
            tracing::error!(
                route = "c",
                ratio = 0.5,
                error = &error as &dyn std::error::Error,
                "line\nbreak {}",
                7
            );
        });
        let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf8");
        assert_eq!(text.lines().count(), 1, "{text}");
        for key in ["\"route\":", "\"tenant\":", "\"message\":", "\"level\":"] {
            assert_eq!(text.matches(key).count(), 1, "{key} in {text}");
        }
        let line: Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["tenant"], "t-2");
        assert_eq!(line["route"], "c");
        assert_eq!(line["count"], 3);
        assert_eq!(line["ok"], true);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["error"], "disk \"full\"");
        assert_eq!(line["message"], "line\nbreak 7");
        assert_eq!(line["level"], "ERROR");
    }

    #[test]
    fn lambda_level_names() {
        assert_eq!(parse_level("debug"), LevelFilter::DEBUG);
        assert_eq!(parse_level("FATAL"), LevelFilter::ERROR);
        assert_eq!(parse_level("nonsense"), LevelFilter::INFO);
    }
}
