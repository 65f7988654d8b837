//! lift-core's integration tests: Apps driven in-process, and one end-to-end run of
//! `App::run` against a loopback Lambda Runtime API.
//!
//! One test binary per crate: each binary links the whole dependency tree, so one binary
//! instead of one per file keeps builds fast and small.

mod authorizer;
mod batches;
mod http_routes;
mod lifecycle;
mod metrics;
mod params;
mod streaming;
mod streaming_runtime;
mod trace_logs;
mod websocket;
