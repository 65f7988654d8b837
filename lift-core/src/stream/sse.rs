//! Server-Sent Events: the [`Event`] encoder and the keep-alive comment.
//!
//! The wire format is the WHATWG HTML "Server-sent events" one: UTF-8 lines of
//! `field: value`, an event ended by a blank line, a line starting with `:` a comment.
//! A parser treats `\r\n`, `\r` and `\n` alike as line ends and drops one space after the
//! colon.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::Stream;
use serde::Serialize;

use super::body::ByteStream;
use crate::error::BoxError;

/// One Server-Sent Event, built field by field and written by [`Event::encode`].
///
/// Fields are written in the order comment, `event`, `id`, `retry`, `data`, then the blank
/// line that ends the event. Multi-line data becomes one `data:` line per line (a client
/// joins them back with `\n`); so does a multi-line comment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    comment: Option<String>,
    event: Option<String>,
    id: Option<String>,
    retry: Option<Duration>,
    data: Option<String>,
}

/// Why an [`Event`] cannot be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// `event` or `id` holds a line break, which would end the field early.
    #[error("the SSE `{field}` field must not contain a line break")]
    LineBreak {
        /// The field: `event` or `id`.
        field: &'static str,
    },
    /// `id` holds a NUL character, which makes clients ignore the field.
    #[error("the SSE `id` field must not contain a NUL character")]
    NulInId,
    /// The JSON data could not be serialized.
    #[error("the SSE data could not be serialized as JSON")]
    Json(#[source] serde_json::Error),
}

impl Event {
    /// An event with no fields yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the data; line breaks (`\n`, `\r\n`, `\r`) split it over several `data:` lines.
    pub fn data(mut self, data: impl Into<String>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// Sets the data to `value` as compact JSON (always one line).
    ///
    /// # Errors
    /// [`EventError::Json`] when `value` cannot be serialized.
    pub fn json_data<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self, EventError> {
        self.data = Some(serde_json::to_string(value).map_err(EventError::Json)?);
        Ok(self)
    }

    /// Sets the event type (the client's `addEventListener` name; `message` when unset).
    pub fn event(mut self, name: impl Into<String>) -> Self {
        self.event = Some(name.into());
        self
    }

    /// Sets the event id, which a reconnecting client sends back as `Last-Event-ID`.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the client's reconnection delay, written in whole milliseconds.
    pub fn retry(mut self, after: Duration) -> Self {
        self.retry = Some(after);
        self
    }

    /// Adds a comment, which clients ignore (useful as a keep-alive or for debugging).
    pub fn comment(mut self, text: impl Into<String>) -> Self {
        self.comment = Some(text.into());
        self
    }

    /// The event's bytes on the wire.
    ///
    /// # Errors
    /// [`EventError::LineBreak`] for a line break in `event` or `id`, and
    /// [`EventError::NulInId`] for a NUL in `id`.
    pub fn encode(&self) -> Result<Bytes, EventError> {
        let mut out = String::new();
        if let Some(comment) = &self.comment {
            for line in lines(comment) {
                if line.is_empty() {
                    out.push_str(":\n");
                } else {
                    out.push_str(": ");
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        if let Some(name) = &self.event {
            single_line("event", name)?;
            field(&mut out, "event", name);
        }
        if let Some(id) = &self.id {
            single_line("id", id)?;
            if id.contains('\0') {
                return Err(EventError::NulInId);
            }
            field(&mut out, "id", id);
        }
        if let Some(retry) = self.retry {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "retry: {}", retry.as_millis());
        }
        match &self.data {
            Some(data) => {
                for line in lines(data) {
                    field(&mut out, "data", line);
                }
            }
            // A browser's EventSource drops an event without data: a named event (an
            // `event: end` marking a complete body, say) gets an empty data line.
            None if self.event.is_some() => out.push_str("data:\n"),
            None => {}
        }
        out.push('\n');
        Ok(Bytes::from(out))
    }
}

fn single_line(name: &'static str, value: &str) -> Result<(), EventError> {
    if value.contains(['\n', '\r']) {
        Err(EventError::LineBreak { field: name })
    } else {
        Ok(())
    }
}

fn field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push('\n');
}

/// Splits on `\r\n`, `\r` and `\n`, as an SSE parser does. A trailing line break yields a
/// final empty line, so that the data round-trips.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            Some(at) => {
                let skip = if current[at..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[at + skip..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// The SSE keep-alive: an empty comment and the blank line after it.
pub(crate) const KEEP_ALIVE: &[u8] = b":\n\n";

/// Wraps a body so that it sends [`KEEP_ALIVE`] whenever it has been idle for `every`.
pub(crate) struct KeepAlive {
    inner: ByteStream,
    every: Duration,
    // Created on the first poll, inside the runtime whose timer it needs.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
}

impl KeepAlive {
    pub(crate) fn new(inner: ByteStream, every: Duration) -> Self {
        KeepAlive {
            inner,
            every,
            sleep: None,
            done: false,
        }
    }

    fn restart(&mut self) {
        let deadline = tokio::time::Instant::now() + self.every;
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }
}

impl Stream for KeepAlive {
    type Item = Result<Bytes, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.sleep.is_none() {
            this.restart();
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(item)) => {
                this.restart();
                return Poll::Ready(Some(item));
            }
            Poll::Ready(None) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        let fired = match &mut this.sleep {
            Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
            None => false,
        };
        if fired {
            this.restart();
            return Poll::Ready(Some(Ok(Bytes::from_static(KEEP_ALIVE))));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_like_an_sse_parser() {
        let split: Vec<&str> = lines("a\nb\r\nc\rd").collect();
        assert_eq!(split, ["a", "b", "c", "d"]);
        let trailing: Vec<&str> = lines("a\n").collect();
        assert_eq!(trailing, ["a", ""]);
        let empty: Vec<&str> = lines("").collect();
        assert_eq!(empty, [""]);
        let crlf_pair: Vec<&str> = lines("\r\n\r\n").collect();
        assert_eq!(crlf_pair, ["", "", ""]);
    }

    /// An event a browser's EventSource dispatches needs a data line: a named event
    /// without data (the `event: end` a complete body closes with) gets an empty one.
    #[test]
    fn a_named_event_without_data_still_reaches_the_client() {
        let end = Event::new().event("end").encode().expect("an event");
        assert_eq!(&end[..], b"event: end\ndata:\n\n");
        let comment_only = Event::new().id("7").encode().expect("an event");
        assert_eq!(&comment_only[..], b"id: 7\n\n");
    }
}
