//! Streamed HTTP responses: bodies sent chunk by chunk through a Lambda Function URL.
//!
//! A handler returns a [`StreamBody`]: from any `Stream` of byte chunks
//! ([`StreamBody::new`]), from a bounded channel a task feeds ([`StreamBody::channel`]),
//! or from typed items as newline-delimited JSON ([`StreamBody::ndjson`],
//! [`StreamBody::ndjson_channel`]) or Server-Sent Events ([`StreamBody::sse`],
//! [`StreamBody::sse_channel`], [`Event`]). Status and headers are set on the body; the
//! App's middleware still sees (and may change) them before the first byte leaves.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use futures_util::stream;
//! use lift_core::stream::{Event, StreamBody};
//! use lift_core::testing::{TestApp, events};
//! use lift_core::{App, Context, Result};
//! use serde_json::json;
//!
//! // NDJSON from a stream of items: pulled only as fast as the client reads.
//! async fn rows(_ctx: Context) -> Result<StreamBody> {
//!     let items = stream::iter((1..=3).map(|n| Ok::<_, Infallible>(json!({ "n": n }))));
//!     Ok(StreamBody::ndjson(items))
//! }
//!
//! // Server-Sent Events from a task: `send_event` waits while 8 events are unread.
//! async fn ticks(_ctx: Context) -> Result<StreamBody> {
//!     let (tx, body) = StreamBody::sse_channel(8);
//!     tokio::spawn(async move {
//!         for n in 0..2 {
//!             let event = Event::new().event("tick").id(n.to_string()).data("line 1\nline 2");
//!             if tx.send_event(&event).await.is_err() {
//!                 return; // the reader is gone
//!             }
//!         }
//!     });
//!     Ok(body)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<()> {
//! let app = App::new()
//!     .get("/rows", rows)
//!     .get("/ticks", ticks)
//!     .response_streaming(); // the Function URL has InvokeMode RESPONSE_STREAM
//! let app = TestApp::new(app)?;
//!
//! let mut rows = app.stream(events::http("GET", "/rows").v2()).await?;
//! assert_eq!(rows.header("content-type"), Some("application/x-ndjson"));
//! assert_eq!(rows.next_chunk().await.as_deref(), Some(&b"{\"n\":1}\n"[..]));
//! assert_eq!(rows.body().await, b"{\"n\":2}\n{\"n\":3}\n");
//!
//! let ticks = app.stream(events::http("GET", "/ticks").v2()).await?;
//! assert_eq!(
//!     String::from_utf8_lossy(&ticks.body().await),
//!     "event: tick\nid: 0\ndata: line 1\ndata: line 2\n\n\
//!      event: tick\nid: 1\ndata: line 1\ndata: line 2\n\n"
//! );
//! # Ok(())
//! # }
//! ```
//!
//! # Response modes
//!
//! Streaming is a deployment choice, so it is an App setting, not a per-handler one:
//!
//! - **[`App::response_streaming`](crate::App::response_streaming)** — for a function
//!   behind a Function URL with `InvokeMode: RESPONSE_STREAM`. Such a URL invokes the
//!   function with `InvokeWithResponseStream` and streams every response that comes through
//!   it ([AWS: function URL invoke modes][invoke-modes]), so Lift answers **every**
//!   payload-2.0 event with a streamed reply: a `StreamBody` chunk by chunk as it is
//!   produced, any other body (error responses included) as one chunk. The runtime sends it
//!   with `Lambda-Runtime-Function-Response-Mode: streaming`, chunked, as
//!   `application/vnd.awslambda.http-integration-response`: a JSON prelude (`statusCode`,
//!   `headers`, `cookies`), eight NUL bytes, then the body (`lambda_runtime` 1.5,
//!   `requests.rs`). API Gateway REST, ALB and batch events keep their buffered responses.
//!   An API Gateway HTTP API also sends payload 2.0 but cannot take a streamed reply: do not
//!   put one in front of a function in this mode.
//! - **Default (buffered)** — every other deployment (a `BUFFERED` Function URL, API
//!   Gateway, ALB). A `StreamBody` is collected into an ordinary body before the response
//!   is written, up to [`App::stream_collect_limit`](crate::App::stream_collect_limit)
//!   bytes (default [`DEFAULT_COLLECT_LIMIT`], 6 MiB: a buffered Lambda response cannot be
//!   larger). Over the limit, the producer's channel is closed at that point, nothing more
//!   is held, and the client gets a `500` whose log line names [`StreamError::TooLarge`].
//!   A producer error or panic is a `500` too. The stream must end for the response to
//!   leave; an endless one (SSE) runs into the limit or the invocation's deadline, which
//!   answers `504` (see below).
//!
//! [`LiftService::invoke`](crate::LiftService::invoke) and
//! [`TestApp::http`](crate::testing::TestApp::http) always answer buffered;
//! [`LiftService::respond`](crate::LiftService::respond) (what `App::run` serves) and
//! [`TestApp::stream`](crate::testing::TestApp::stream) answer as the runtime would.
//! Only HTTP responses stream: a `StreamBody` returned for a batch record or an EventBridge
//! event is dropped unread (the status alone decides the record's fate).
//!
//! # Backpressure and memory
//!
//! Nothing is produced faster than the client reads:
//!
//! - A [`StreamBody::new`] / [`StreamBody::ndjson`] / [`StreamBody::sse`] stream is polled
//!   only when the next chunk is wanted: no chunk is produced ahead.
//! - A channel body holds at most `capacity` chunks; [`Sender::send`] waits while it is
//!   full. Clones of a [`Sender`] share the capacity.
//!
//! Past Lift, `lambda_runtime` moves chunks from its own task into the request body: one
//! chunk waits in that task and one in its body channel (a zero-buffer `futures` channel
//! holds one message per sender). `hyper` stops taking chunks while its write buffer holds
//! about 400 KiB or 16 queued buffers (`DEFAULT_MAX_BUFFER_SIZE`, `MAX_BUF_LIST_BUFFERS` in
//! `hyper` 1.x `proto/h1/io.rs`), then the socket's send buffer fills. So a channel
//! producer is at most `capacity` + 2 chunks (and the one its pending `send` holds), plus
//! those buffers, ahead of what Lambda has accepted: memory stays within about
//! (`capacity` + 3) × chunk size + 400 KiB + the socket buffer, however long the response.
//!
//! A handler must return the body before it waits on a full channel: spawn the producer
//! (as above), or nobody reads. Producers learn that the reader is gone (the collect limit
//! was hit, the runtime's connection to the Runtime API failed, the body was dropped) from
//! [`SendError::Closed`].
//!
//! # Errors mid-stream
//!
//! Once the prelude has gone out, the status cannot change. When a producer fails
//! ([`Sender::fail`], an `Err` item, an item that cannot be encoded, a panic), Lift logs
//! it at ERROR (target `lift::stream`, code `stream_failed`, with the request id, chunks
//! and bytes sent and the error chain) and ends the body cleanly. The client sees the
//! status and the chunks already sent, then a normal end of body: make truncation
//! detectable in the format itself (a final NDJSON line or an `event: end`) when it
//! matters.
//!
//! The runtime's error trailer is deliberately not used. The custom-runtime protocol
//! reports a mid-stream error with `Lambda-Runtime-Function-Error-Type` /
//! `-Error-Body` HTTP trailers ([AWS: custom runtimes][custom-runtime]), and
//! `lambda_runtime` 1.5 declares them in its `Trailer` header, but when its stream
//! yields an `Err` it writes those header lines into the body as an ordinary data chunk
//! (`requests.rs`, the streaming branch of `EventCompletionRequest::into_req`) and goes on
//! reading. The client would receive the error text (base64, yet internal) in the middle
//! of its NDJSON or SSE. [`ResponseStream`] therefore never yields an error.
//!
//! Errors before the first byte (routing, input, a handler's `Err`, a panic) are ordinary
//! error responses, streamed as one chunk with their status.
//!
//! # Encoding
//!
//! Middleware can rewrite a streamed body's bytes without collecting it:
//! [`encode_stream`] puts a [`ChunkEncoder`] on the body, which sees every chunk as it
//! leaves and closes the body at its end or at the deadline. `lift-middleware`'s
//! compression layer gzips streamed responses this way, flushing each chunk so an SSE
//! client still gets every event as it is sent.
//!
//! # The invocation's deadline
//!
//! A Lambda function stopped at its timeout loses the response being written, and its
//! execution environment with it: the next request pays a cold start. So a streamed body
//! still running [`App::stream_deadline_margin`](crate::App::stream_deadline_margin)
//! before the deadline (default [`DEFAULT_STREAM_DEADLINE_MARGIN`], 500 ms) is ended
//! there: a streamed reply closes with the body's [`StreamBody::on_deadline`] chunk, if it
//! has one (a last NDJSON line, an SSE event, so that the client can tell a cut body from a
//! complete one); a body being collected is answered with a `504`
//! ([`Error::Timeout`](crate::Error::Timeout)). Lift logs a warning (code
//! `stream_deadline`, with the chunks and bytes sent), and the producer's [`Sender`] gets
//! [`SendError::Closed`] from then on.
//!
//! # Limits
//!
//! Facts from the AWS Lambda developer guide ([response streaming][streaming],
//! [function URL invoke modes][invoke-modes], [quotas][quotas]):
//!
//! - **Size:** a streamed response may be up to 200 MB; a buffered one up to 6 MB.
//! - **Bandwidth:** the first 6 MB stream uncapped; the rest at most 2 MBps (limits the
//!   response payload only, not the function's own network access).
//! - **Time:** the whole stream must finish within the function timeout (at most 900 s);
//!   streaming continues after the handler returns, so the remaining time
//!   ([`Context::remaining`](crate::Context::remaining)) bounds the stream, not the handler.
//!   A [`tower`] timeout layer bounds the time to the response head only; Lift ends the
//!   body itself just before the deadline (above).
//! - **Disconnects:** a streamed response is not interrupted when the invoking client's
//!   connection breaks, and the function is billed for its full duration. Do not count on
//!   [`SendError::Closed`] to learn of it (the invocation goes on): the deadline ends the
//!   body at the latest, so keep the function timeout short.
//! - **Where:** function URLs in `RESPONSE_STREAM` mode and `InvokeWithResponseStream`;
//!   function URLs do not stream inside a VPC environment; the Lambda console test shows
//!   responses buffered. API Gateway REST proxy integrations can now stream too (through
//!   `InvokeWithResponseStream`); Lift does not stream payload-1.0 events yet.
//!
//! [streaming]: https://docs.aws.amazon.com/lambda/latest/dg/configuration-response-streaming.html
//! [invoke-modes]: https://docs.aws.amazon.com/lambda/latest/dg/config-rs-invoke-furls.html
//! [quotas]: https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
//! [custom-runtime]: https://docs.aws.amazon.com/lambda/latest/dg/runtimes-custom.html#runtimes-custom-response-streaming

mod body;
mod ndjson;
mod response;
mod sse;

pub use body::{
    ChunkEncoder, EVENT_STREAM, NDJSON, OCTET_STREAM, SendError, Sender, StreamBody, encode_stream,
    is_streaming,
};
pub use ndjson::line as ndjson_line;
pub use response::{
    DEFAULT_COLLECT_LIMIT, DEFAULT_STREAM_DEADLINE_MARGIN, ResponseStream, StreamError,
};
pub use sse::{Event, EventError};

pub(crate) use body::{StreamSlot, Streamed, take_stream};
pub(crate) use response::{collect, encoded, into_stream_response};
