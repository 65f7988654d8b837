//! What becomes of a streamed body: the [`ResponseStream`] handed to the Lambda runtime,
//! or an ordinary body collected up to a limit.

use std::convert::Infallible;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use futures_util::stream::{Stream, StreamExt};
use http::header::{CONTENT_LENGTH, SET_COOKIE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue};
use lambda_runtime::{MetadataPrelude, StreamResponse};

use tokio::time::{Instant, Sleep};

use super::body::{ByteStream, ChunkEncoder, StreamSlot, Streamed, take_stream};
use crate::error::{BoxError, Chain};
use crate::response::{Body, Response};

/// The default bound on a streamed body that is collected rather than streamed: 6 MiB,
/// Lambda's limit for a buffered response.
pub const DEFAULT_COLLECT_LIMIT: usize = 6 * 1024 * 1024;

/// How long before the invocation's deadline a streamed body still running is ended, by
/// default ([`App::stream_deadline_margin`](crate::App::stream_deadline_margin)).
pub const DEFAULT_STREAM_DEADLINE_MARGIN: std::time::Duration =
    std::time::Duration::from_millis(500);

/// Why a streamed body could not be delivered whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Collecting the body would exceed the limit; it was dropped at that point.
    #[error(
        "the streamed body exceeds the collect limit of {limit} bytes (responses are buffered: \
         serve it from a RESPONSE_STREAM Function URL with App::response_streaming, or raise \
         App::stream_collect_limit)"
    )]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The producer reported an error.
    #[error("the response stream failed after {bytes} bytes")]
    Failed {
        /// Bytes produced before the error.
        bytes: u64,
        /// The producer's error.
        #[source]
        source: BoxError,
    },
    /// The producer panicked.
    #[error("the response stream panicked after {bytes} bytes: {message}")]
    Panicked {
        /// Bytes produced before the panic.
        bytes: u64,
        /// The panic message.
        message: String,
    },
    /// An encoder put on the body ([`encode_stream`](super::encode_stream)) failed.
    #[error("the response stream's encoder failed after {bytes} bytes")]
    Encoding {
        /// Bytes produced before the failure.
        bytes: u64,
        /// The encoder's error.
        #[source]
        source: std::io::Error,
    },
    /// The body was still being produced when the invocation's deadline (less its margin,
    /// [`App::stream_deadline_margin`](crate::App::stream_deadline_margin)) came.
    #[error(
        "the response stream was not finished before the invocation's deadline ({bytes} bytes produced)"
    )]
    Deadline {
        /// Bytes produced by then.
        bytes: u64,
    },
}

/// The encoders a streamed body's bytes go through, in the order they were put on it.
struct Encoders(Vec<Box<dyn ChunkEncoder>>);

impl Encoders {
    /// `chunk` through every encoder.
    fn encode(&mut self, chunk: Bytes) -> std::io::Result<Bytes> {
        let mut bytes = chunk;
        for encoder in &mut self.0 {
            if bytes.is_empty() {
                break;
            }
            bytes = encoder.encode(&bytes)?;
        }
        Ok(bytes)
    }

    /// Closes every encoder; what one emits as it closes goes through the ones after it.
    fn finish(&mut self) -> std::io::Result<Bytes> {
        let mut pending = Bytes::new();
        for encoder in &mut self.0 {
            let mut out = BytesMut::new();
            if !pending.is_empty() {
                out.extend_from_slice(&encoder.encode(&pending)?);
            }
            out.extend_from_slice(&encoder.finish()?);
            pending = out.freeze();
        }
        Ok(pending)
    }

    /// The deadline's closing chunk, encoded, and the end of every encoder.
    fn close_with(&mut self, last: Option<Bytes>) -> std::io::Result<Bytes> {
        let mut out = BytesMut::new();
        if let Some(last) = last.filter(|b| !b.is_empty()) {
            out.extend_from_slice(&self.encode(last)?);
        }
        out.extend_from_slice(&self.finish()?);
        Ok(out.freeze())
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(message) => *message,
        Err(panic) => match panic.downcast::<&'static str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => "a non-string panic payload".to_owned(),
        },
    }
}

/// A streamed body's chunks as they leave: through its encoders, closed by their ends when
/// the chunks end (without the deadline chunk, which only the outermost writer can send).
pub(crate) fn encoded(streamed: Streamed) -> super::body::ByteStream {
    let state = (streamed.chunks, Encoders(streamed.encoders), false);
    Box::pin(
        futures_util::stream::unfold(state, |(mut chunks, mut encoders, done)| async move {
            if done {
                return None;
            }
            loop {
                match chunks.next().await {
                    Some(Ok(chunk)) => match encoders.encode(chunk) {
                        // An encoder holding bytes back: nothing to send yet.
                        Ok(bytes) if bytes.is_empty() => continue,
                        Ok(bytes) => return Some((Ok(bytes), (chunks, encoders, false))),
                        Err(error) => return Some((Err(error.into()), (chunks, encoders, true))),
                    },
                    Some(Err(error)) => return Some((Err(error), (chunks, encoders, true))),
                    None => {
                        let tail = encoders.finish().map_err(Into::into);
                        return match tail {
                            Ok(bytes) if bytes.is_empty() => None,
                            tail => Some((tail, (chunks, encoders, true))),
                        };
                    }
                }
            }
        })
        // Polled again after its end (a body wrapper may), it stays ended.
        .fuse(),
    )
}

/// Collects a streamed response's body into [`Body::Binary`], refusing to hold more than
/// `limit` bytes or to wait past `deadline`. A response that is not streamed comes back as
/// it was.
///
/// # Errors
/// [`StreamError::TooLarge`], [`StreamError::Deadline`], or the producer's failure or panic.
pub(crate) async fn collect(
    response: Response,
    limit: usize,
    deadline: Option<Instant>,
) -> Result<Response, StreamError> {
    let Some(Streamed {
        chunks: mut stream,
        encoders,
        ..
    }) = take_stream(&response)
    else {
        return Ok(response);
    };
    let mut encoders = Encoders(encoders);
    let mut produced: u64 = 0;
    let (mut parts, _) = response.into_parts();
    let mut body = BytesMut::new();
    loop {
        let next = AssertUnwindSafe(stream.next()).catch_unwind();
        let bytes = produced;
        let next = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, next).await {
                Ok(next) => next,
                Err(_) => return Err(StreamError::Deadline { bytes }),
            },
            None => next.await,
        };
        match next {
            Ok(Some(Ok(chunk))) => {
                produced += chunk.len() as u64;
                let chunk = encoders
                    .encode(chunk)
                    .map_err(|source| StreamError::Encoding { bytes, source })?;
                if body.len().saturating_add(chunk.len()) > limit {
                    return Err(StreamError::TooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Some(Err(source))) => return Err(StreamError::Failed { bytes, source }),
            Ok(None) => {
                let tail = encoders
                    .finish()
                    .map_err(|source| StreamError::Encoding { bytes, source })?;
                if body.len().saturating_add(tail.len()) > limit {
                    return Err(StreamError::TooLarge { limit });
                }
                body.extend_from_slice(&tail);
                break;
            }
            Err(panic) => {
                return Err(StreamError::Panicked {
                    bytes,
                    message: panic_message(panic),
                });
            }
        }
    }
    parts.extensions.remove::<StreamSlot>();
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.remove(TRANSFER_ENCODING);
    let body = if body.is_empty() {
        Body::Empty
    } else {
        Body::Binary(Vec::from(body))
    };
    Ok(Response::from_parts(parts, body))
}

/// Turns a response into the runtime's streaming reply: the HTTP-integration prelude
/// (status, headers, cookies) and the body as a [`ResponseStream`]. A body that is not
/// streamed goes out as one chunk.
///
/// The prelude follows `lambda_http`'s `into_stream_response` (`Set-Cookie` values move to
/// `cookies`); in addition, repeated header values are joined with `, ` (the prelude's
/// `headers` holds one string per name) and `content-length` / `transfer-encoding` are
/// dropped, the body being chunked by the runtime. A live body still running at `deadline`
/// is ended there (see [`ResponseStream`]).
pub(crate) fn into_stream_response(
    response: Response,
    request_id: &str,
    deadline: Option<Instant>,
) -> StreamResponse<ResponseStream> {
    let live = take_stream(&response);
    let (parts, body) = response.into_parts();
    let mut headers = parts.headers;
    let cookies = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    headers.remove(SET_COOKIE);
    headers.remove(CONTENT_LENGTH);
    headers.remove(TRANSFER_ENCODING);
    let headers = ascii_only(single_valued(headers));
    let stream = match live {
        Some(streamed) => ResponseStream::live(streamed, request_id, deadline),
        None => ResponseStream::once(match body {
            Body::Text(text) => Bytes::from(text),
            Body::Binary(bytes) => Bytes::from(bytes),
            _ => Bytes::new(),
        }),
    };
    StreamResponse {
        metadata_prelude: MetadataPrelude {
            status_code: parts.status,
            headers,
            cookies,
        },
        stream,
    }
}

/// Headers whose values the prelude can carry: it holds each value as a JSON string, which
/// the runtime writes only for visible ASCII (any other value became `[]`, the header lost
/// or the prelude refused). A value with other bytes (UTF-8 in a `filename`, say) is sent
/// with those bytes percent-encoded, and logged at WARN; RFC 8187's `filename*` says the
/// same in a way clients read.
fn ascii_only(mut headers: HeaderMap) -> HeaderMap {
    let unsendable: Vec<_> = headers
        .iter()
        .filter(|(_, v)| v.to_str().is_err())
        .map(|(name, _)| name.clone())
        .collect();
    for name in unsendable {
        let Some(value) = headers.get(&name) else {
            continue;
        };
        let encoded: String = value
            .as_bytes()
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) || b == b'\t' {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        tracing::warn!(target: "lift", code = "header_not_ascii", header = %name, "a streamed response's header value is not ASCII: sent percent-encoded");
        if let Ok(encoded) = HeaderValue::from_str(&encoded) {
            headers.insert(name, encoded);
        }
    }
    headers
}

/// Joins repeated values of a header with `, `; a map without repeats is returned as is.
fn single_valued(headers: HeaderMap) -> HeaderMap {
    if headers.keys_len() == headers.len() {
        return headers;
    }
    let mut joined = HeaderMap::with_capacity(headers.keys_len());
    for name in headers.keys() {
        let mut values = headers.get_all(name).iter();
        let Some(first) = values.next() else {
            continue;
        };
        let mut value = first.as_bytes().to_vec();
        for next in values {
            value.extend_from_slice(b", ");
            value.extend_from_slice(next.as_bytes());
        }
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            joined.insert(name.clone(), value);
        }
    }
    joined
}

/// The body of a streamed response as the Lambda runtime reads it: chunks in order, never
/// an error.
///
/// A producer's error or panic is logged (target `lift::stream`, with the request id and
/// the bytes already sent) and ends the stream. The runtime is never handed the error:
/// `lambda_runtime` 1.5 would write its error trailer into the body as data, where the
/// client would read it (see the [module docs](crate::stream)). Empty chunks are skipped.
///
/// A body still running at the invocation's deadline, less
/// [`App::stream_deadline_margin`](crate::App::stream_deadline_margin), is ended there with
/// its [`StreamBody::on_deadline`](super::StreamBody::on_deadline) chunk, if it has one, and
/// a warning (code `stream_deadline`): the function answers rather than being stopped
/// mid-response, and the producer's [`Sender`](super::Sender) is closed.
pub struct ResponseStream {
    state: State,
    /// Runs once the body has ended (or the stream is dropped): what the invocation does
    /// after its answer, which for a streamed answer is after its last chunk.
    on_end: Option<Box<dyn FnOnce() + Send>>,
}

impl ResponseStream {
    /// Runs `f` once the body has ended, or the stream is dropped.
    pub(crate) fn on_end(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.on_end = Some(Box::new(f));
        self
    }

    fn ended(&mut self) {
        if let Some(f) = self.on_end.take() {
            f();
        }
    }
}

impl Drop for ResponseStream {
    fn drop(&mut self) {
        self.ended();
    }
}

enum State {
    Once(Option<Bytes>),
    Live {
        stream: ByteStream,
        request_id: Box<str>,
        chunks: u64,
        bytes: u64,
        deadline: Option<Pin<Box<Sleep>>>,
        on_deadline: Option<Bytes>,
        encoders: Encoders,
    },
    Done,
}

impl fmt::Debug for ResponseStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Once(_) => "once",
            State::Live { .. } => "live",
            State::Done => "done",
        };
        f.debug_struct("ResponseStream")
            .field("state", &state)
            .finish()
    }
}

impl ResponseStream {
    fn once(body: Bytes) -> Self {
        ResponseStream {
            state: State::Once((!body.is_empty()).then_some(body)),
            on_end: None,
        }
    }

    fn live(streamed: Streamed, request_id: &str, deadline: Option<Instant>) -> Self {
        ResponseStream {
            state: State::Live {
                stream: streamed.chunks,
                request_id: request_id.into(),
                chunks: 0,
                bytes: 0,
                deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
                on_deadline: streamed.on_deadline,
                encoders: Encoders(streamed.encoders),
            },
            on_end: None,
        }
    }

    /// Whether the body is produced as it goes (a [`StreamBody`](super::StreamBody)) rather
    /// than sent as the one chunk of a buffered body.
    pub fn is_live(&self) -> bool {
        matches!(self.state, State::Live { .. })
    }
}

impl Stream for ResponseStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let (stream, request_id, chunks, bytes, encoders) = match &mut this.state {
            State::Done => {
                this.ended();
                return Poll::Ready(None);
            }
            State::Once(body) => {
                let body = body.take();
                this.state = State::Done;
                if body.is_none() {
                    this.ended();
                }
                return Poll::Ready(body.map(Ok));
            }
            State::Live {
                stream,
                request_id,
                chunks,
                bytes,
                deadline,
                on_deadline,
                encoders,
            } => {
                if deadline
                    .as_mut()
                    .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
                {
                    tracing::warn!(target: "lift::stream", requestId = %request_id, code = "stream_deadline", chunks = *chunks, bytes = *bytes, "response stream ended at the invocation's deadline; the body was cut short");
                    let last = match encoders.close_with(on_deadline.take()) {
                        Ok(last) => last,
                        Err(error) => {
                            tracing::error!(target: "lift::stream", requestId = %request_id, code = "stream_failed", error = %error, "the response stream's encoder failed at the deadline");
                            Bytes::new()
                        }
                    };
                    // Dropping the producer's stream closes its channel.
                    this.state = State::Done;
                    if last.is_empty() {
                        this.ended();
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(last)));
                }
                (stream, request_id, chunks, bytes, encoders)
            }
        };
        loop {
            let polled =
                std::panic::catch_unwind(AssertUnwindSafe(|| stream.as_mut().poll_next(cx)));
            let failure = match polled {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(Some(Ok(chunk)))) if chunk.is_empty() => continue,
                Ok(Poll::Ready(Some(Ok(chunk)))) => {
                    let produced = chunk.len() as u64;
                    match encoders.encode(chunk) {
                        Ok(encoded) => {
                            *chunks += 1;
                            *bytes += produced;
                            if encoded.is_empty() {
                                continue;
                            }
                            return Poll::Ready(Some(Ok(encoded)));
                        }
                        Err(source) => Some(StreamError::Encoding {
                            bytes: *bytes,
                            source,
                        }),
                    }
                }
                Ok(Poll::Ready(None)) => {
                    tracing::debug!(target: "lift::stream", requestId = %request_id, chunks = *chunks, bytes = *bytes, "response stream finished");
                    match encoders.finish() {
                        Ok(tail) => {
                            this.state = State::Once((!tail.is_empty()).then_some(tail));
                            return self.poll_next(cx);
                        }
                        Err(source) => Some(StreamError::Encoding {
                            bytes: *bytes,
                            source,
                        }),
                    }
                }
                Ok(Poll::Ready(Some(Err(source)))) => Some(StreamError::Failed {
                    bytes: *bytes,
                    source,
                }),
                Err(panic) => Some(StreamError::Panicked {
                    bytes: *bytes,
                    message: panic_message(panic),
                }),
            };
            if let Some(error) = failure {
                tracing::error!(target: "lift::stream", requestId = %request_id, code = "stream_failed", chunks = *chunks, bytes = *bytes, error = %Chain(&error), "response stream failed; the body was cut short");
            }
            this.state = State::Done;
            this.ended();
            return Poll::Ready(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_headers_are_joined_for_the_prelude() {
        let mut headers = HeaderMap::new();
        headers.append("vary", HeaderValue::from_static("origin"));
        headers.append("vary", HeaderValue::from_static("accept"));
        headers.insert("x-one", HeaderValue::from_static("1"));
        let joined = single_valued(headers);
        assert_eq!(joined["vary"], "origin, accept");
        assert_eq!(joined["x-one"], "1");
        assert_eq!(joined.len(), 2);
    }

    /// The runtime writes a prelude header only when its value is visible ASCII (anything
    /// else became `[]`): a UTF-8 value goes out percent-encoded, as a string.
    #[test]
    fn a_header_value_that_is_not_ascii_still_reaches_the_prelude() {
        let mut response = Response::new(Body::Text("pdf".to_owned()));
        response.headers_mut().insert(
            "content-disposition",
            HeaderValue::from_bytes("attachment; filename=\"résumé.pdf\"".as_bytes())
                .expect("bytes a header may hold"),
        );
        response
            .headers_mut()
            .insert("x-plain", HeaderValue::from_static("kept as is"));
        let streamed = into_stream_response(response, "r", None);
        let prelude = serde_json::to_value(&streamed.metadata_prelude).expect("JSON");
        assert_eq!(
            prelude["headers"]["content-disposition"],
            "attachment; filename=\"r%C3%A9sum%C3%A9.pdf\""
        );
        assert_eq!(prelude["headers"]["x-plain"], "kept as is");
    }
}
