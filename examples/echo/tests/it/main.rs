//! The echo example's tests: in-process, over the shared Lambda fixtures, and deployed.
//!
//! One test binary per crate: each binary links the whole dependency tree, so one binary
//! instead of one per file keeps builds fast and small.

mod deployed;
mod fixtures;
mod roundtrip;
