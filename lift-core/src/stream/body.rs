//! [`StreamBody`], its bounded channel ([`Sender`]) and the errors a producer sees.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{Stream, StreamExt};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Serialize;
use tokio::sync::mpsc;

use super::sse::{Event, EventError, KeepAlive};
use crate::error::BoxError;
use crate::response::{Body, IntoResponse, Response};

/// `content-type` of a byte stream with no declared type.
pub const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
/// `content-type` of newline-delimited JSON.
pub const NDJSON: HeaderValue = HeaderValue::from_static("application/x-ndjson");
/// `content-type` of Server-Sent Events.
pub const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");

/// The type-erased stream of body chunks a [`StreamBody`] carries.
pub(crate) type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>;

/// Carries a [`StreamBody`]'s stream through the middleware stack inside the
/// [`Response`]'s extensions (which need `Clone + Send + Sync`). Whoever takes it first
/// consumes the body; the lock is taken once per streamed response, never per chunk.
#[derive(Clone)]
pub(crate) struct StreamSlot(Arc<Mutex<Option<Streamed>>>);

/// A streamed body on its way out: its chunks, the chunk to close it with when the
/// invocation's deadline cuts it short ([`StreamBody::on_deadline`]), and the encoders its
/// bytes go through ([`encode_stream`]).
pub(crate) struct Streamed {
    pub(crate) chunks: ByteStream,
    pub(crate) on_deadline: Option<Bytes>,
    pub(crate) encoders: Vec<Box<dyn ChunkEncoder>>,
}

/// Rewrites the bytes of a streamed body on their way out, chunk by chunk: what a
/// compressing middleware puts on a [`StreamBody`] with [`encode_stream`].
///
/// Every chunk the producer sends goes through [`ChunkEncoder::encode`] as it leaves, so a
/// streaming encoder must flush what it can decode at once (a compressor's sync flush).
/// When the body ends, by itself or at the invocation's deadline (after the
/// [`StreamBody::on_deadline`] chunk, which is encoded too), [`ChunkEncoder::finish`]
/// closes it. A body cut short by a producer's failure is not finished, so the client
/// sees a truncated encoding rather than a complete-looking one. A collected body (a
/// buffered reply) goes through the same calls.
pub trait ChunkEncoder: Send + 'static {
    /// The bytes to send for `chunk`; empty when the encoder holds them back for now.
    ///
    /// # Errors
    /// An I/O error ends the body as a producer's failure would.
    fn encode(&mut self, chunk: &[u8]) -> std::io::Result<Bytes>;

    /// The bytes that close the body (a compressor's trailer).
    ///
    /// # Errors
    /// An I/O error ends the body without them.
    fn finish(&mut self) -> std::io::Result<Bytes>;
}

/// Puts `encoder` on the streamed body `response` carries: every chunk, the deadline
/// chunk and the end of the body go through it (after any encoder put there before).
/// Returns `false`, and does nothing, when `response` carries no streamed body.
///
/// The caller sets the headers that go with the encoding (`Content-Encoding`, `Vary`).
pub fn encode_stream(response: &Response, encoder: impl ChunkEncoder) -> bool {
    let Some(slot) = response.extensions().get::<StreamSlot>() else {
        return false;
    };
    let mut guard = match slot.0.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    match guard.as_mut() {
        Some(streamed) => {
            streamed.encoders.push(Box::new(encoder));
            true
        }
        None => false,
    }
}

impl StreamSlot {
    pub(crate) fn new(streamed: Streamed) -> Self {
        StreamSlot(Arc::new(Mutex::new(Some(streamed))))
    }

    /// Takes the stream out; `None` when someone already did.
    pub(crate) fn take(&self) -> Option<Streamed> {
        match self.0.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }
}

/// Whether `response` carries a streamed body ([`StreamBody`]).
///
/// Its [`Body`] is then [`Body::Empty`] and the bytes are still to come, so middleware that
/// reads, caches or replays bodies (caching, idempotency) should leave such a response
/// alone; one that rewrites bytes (compression) can do it chunk by chunk with
/// [`encode_stream`].
pub fn is_streaming(response: &Response) -> bool {
    response.extensions().get::<StreamSlot>().is_some()
}

/// Takes the streamed body out of `response`, if it carries one that was not taken yet.
pub(crate) fn take_stream(response: &Response) -> Option<Streamed> {
    response
        .extensions()
        .get::<StreamSlot>()
        .and_then(StreamSlot::take)
}

/// A response body produced chunk by chunk, as handler output.
///
/// Made from any `Stream` of byte chunks ([`StreamBody::new`]), from a bounded channel fed
/// by a task ([`StreamBody::channel`]), or from typed items as NDJSON
/// ([`StreamBody::ndjson`]) or Server-Sent Events ([`StreamBody::sse`]). Status and
/// headers are set with [`StreamBody::with_status`] and [`StreamBody::with_header`]; the
/// status defaults to `200`.
///
/// Behind a Function URL with `InvokeMode: RESPONSE_STREAM` and
/// [`App::response_streaming`](crate::App::response_streaming), each chunk goes to the
/// client as it is produced. Anywhere else the chunks are collected into an ordinary body
/// first (see the [module docs](crate::stream)).
pub struct StreamBody {
    stream: ByteStream,
    status: StatusCode,
    headers: HeaderMap,
    on_deadline: Option<Bytes>,
}

impl fmt::Debug for StreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamBody")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl StreamBody {
    fn from_parts(stream: ByteStream, content_type: HeaderValue) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, content_type);
        StreamBody {
            stream,
            status: StatusCode::OK,
            headers,
            on_deadline: None,
        }
    }

    fn event_stream(stream: ByteStream) -> Self {
        let mut body = Self::from_parts(stream, EVENT_STREAM);
        body.headers
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        body
    }

    /// A body that sends each chunk `stream` yields, as `application/octet-stream`.
    ///
    /// The stream is polled only when the reader wants the next chunk, so a slow reader
    /// slows it down with nothing buffered in between. An `Err` ends the body: see the
    /// [module docs](crate::stream) for what the client then sees.
    pub fn new<S, B, E>(stream: S) -> Self
    where
        S: Stream<Item = Result<B, E>> + Send + 'static,
        B: Into<Bytes>,
        E: Into<BoxError>,
    {
        let stream = stream.map(|chunk| chunk.map(Into::into).map_err(Into::into));
        Self::from_parts(Box::pin(stream), OCTET_STREAM)
    }

    /// A body fed through a bounded channel, as `application/octet-stream`: spawn a task
    /// that sends on the [`Sender`] and return the body from the handler.
    ///
    /// At most `capacity` chunks wait in the channel (a `capacity` of 0 counts as 1); when
    /// it is full, [`Sender::send`] waits until the reader takes one. That is the
    /// backpressure: the producer is never more than `capacity` chunks ahead of the reader,
    /// so memory stays within `capacity` × the chunk size. The body ends when every
    /// `Sender` is dropped.
    pub fn channel(capacity: usize) -> (Sender, StreamBody) {
        Self::channel_of(capacity, OCTET_STREAM)
    }

    /// [`StreamBody::channel`] as `application/x-ndjson`; send with [`Sender::send_json`].
    pub fn ndjson_channel(capacity: usize) -> (Sender, StreamBody) {
        Self::channel_of(capacity, NDJSON)
    }

    /// [`StreamBody::channel`] as `text/event-stream` (with `cache-control: no-cache`);
    /// send with [`Sender::send_event`].
    pub fn sse_channel(capacity: usize) -> (Sender, StreamBody) {
        let (sender, stream) = channel(capacity);
        (sender, Self::event_stream(stream))
    }

    fn channel_of(capacity: usize, content_type: HeaderValue) -> (Sender, StreamBody) {
        let (sender, stream) = channel(capacity);
        (sender, Self::from_parts(stream, content_type))
    }

    /// Newline-delimited JSON (`application/x-ndjson`): each item serialized as compact
    /// JSON on its own line, `\n`-terminated. An item that cannot be serialized ends the
    /// body like a stream error.
    pub fn ndjson<S, T, E>(items: S) -> Self
    where
        S: Stream<Item = Result<T, E>> + Send + 'static,
        T: Serialize,
        E: Into<BoxError>,
    {
        let stream = items.map(|item| match item {
            Ok(value) => super::ndjson::line(&value).map_err(Into::into),
            Err(error) => Err(error.into()),
        });
        Self::from_parts(Box::pin(stream), NDJSON)
    }

    /// Server-Sent Events (`text/event-stream`, `cache-control: no-cache`): each [`Event`]
    /// encoded as its field lines and a blank line. An event that cannot be encoded (see
    /// [`Event::encode`]) ends the body like a stream error.
    pub fn sse<S, E>(events: S) -> Self
    where
        S: Stream<Item = Result<Event, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let stream = events.map(|event| match event {
            Ok(event) => event.encode().map_err(Into::into),
            Err(error) => Err(error.into()),
        });
        Self::event_stream(Box::pin(stream))
    }

    /// Sets the status (default `200`).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Sets a header, replacing any value it had (`content-type` included).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// The headers, to add repeated values (`set-cookie`) or remove one.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// Sends an SSE comment line (`:` and a blank line) whenever the body has produced
    /// nothing for `every`, so that idle connections are not closed by proxies or clients.
    /// Meant for `text/event-stream` bodies; it needs the Tokio runtime's timer (Lambda's
    /// runtime is Tokio). The timer restarts with each chunk and only runs while the reader
    /// is waiting, so keep-alives never pile up behind a slow reader.
    pub fn keep_alive(mut self, every: Duration) -> Self {
        self.stream = Box::pin(KeepAlive::new(self.stream, every));
        self
    }

    /// The chunk that closes the body when the invocation's deadline ends it early.
    ///
    /// A streamed body still running shortly before the deadline (see
    /// [`App::stream_deadline_margin`](crate::App::stream_deadline_margin)) is ended there,
    /// so the function answers instead of being stopped mid-response. A plain end looks
    /// like a complete body to the client; this chunk (a last NDJSON line, an SSE event)
    /// tells it the body was cut short. The producer's [`Sender`] is closed at that point.
    pub fn on_deadline(mut self, chunk: impl Into<Bytes>) -> Self {
        self.on_deadline = Some(chunk.into());
        self
    }
}

impl IntoResponse for StreamBody {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::Empty);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response.extensions_mut().insert(StreamSlot::new(Streamed {
            chunks: self.stream,
            on_deadline: self.on_deadline,
            encoders: Vec::new(),
        }));
        response
    }
}

fn channel(capacity: usize) -> (Sender, ByteStream) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (Sender { tx }, Box::pin(Receiver { rx }))
}

/// The reading end of [`StreamBody::channel`].
struct Receiver {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl Stream for Receiver {
    type Item = Result<Bytes, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// The sending end of [`StreamBody::channel`]. Clone it for several producers; they share
/// the one capacity.
#[derive(Debug, Clone)]
pub struct Sender {
    tx: mpsc::Sender<Result<Bytes, BoxError>>,
}

impl Sender {
    /// Sends one chunk, waiting while the channel is full. An empty chunk is skipped.
    ///
    /// # Errors
    /// [`SendError::Closed`] when the body's reader is gone: the client's stream ended, the
    /// body was over its buffering limit, or the invocation finished. Stop producing.
    pub async fn send(&self, chunk: impl Into<Bytes>) -> Result<(), SendError> {
        let chunk = chunk.into();
        if chunk.is_empty() {
            return if self.tx.is_closed() {
                Err(SendError::Closed)
            } else {
                Ok(())
            };
        }
        self.tx.send(Ok(chunk)).await.map_err(|_| SendError::Closed)
    }

    /// Sends `value` as one NDJSON line: compact JSON and `\n`.
    ///
    /// # Errors
    /// [`SendError::Json`] when `value` cannot be serialized (nothing is sent), and
    /// [`SendError::Closed`] as for [`Sender::send`].
    pub async fn send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), SendError> {
        let line = super::ndjson::line(value).map_err(SendError::Json)?;
        self.send(line).await
    }

    /// Sends one Server-Sent Event.
    ///
    /// # Errors
    /// [`SendError::Event`] when the event cannot be encoded (nothing is sent), and
    /// [`SendError::Closed`] as for [`Sender::send`].
    pub async fn send_event(&self, event: &Event) -> Result<(), SendError> {
        let bytes = event.encode()?;
        self.send(bytes).await
    }

    /// Ends the body because producing it failed. The error is logged with the request id;
    /// the client's response ends after the chunks already sent (see the
    /// [module docs](crate::stream)). Under buffering, the response becomes a 500.
    pub async fn fail(self, error: impl Into<BoxError>) {
        // A reader that is gone has nothing left to tell.
        let _ = self.tx.send(Err(error.into())).await;
    }

    /// Whether the reader is gone, so that sending would fail.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Why a [`Sender`] could not send.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The body's reader is gone; stop producing.
    #[error("the response stream is closed: its reader is gone")]
    Closed,
    /// The value could not be serialized as JSON.
    #[error("the NDJSON line could not be serialized")]
    Json(#[source] serde_json::Error),
    /// The event could not be encoded.
    #[error(transparent)]
    Event(#[from] EventError),
}
