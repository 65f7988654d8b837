//! The orders example's tests: its authorizer in-process, and the functions deployed from
//! `template.yaml` onto the local AWS emulator with their tables and HTTP API.
//!
//! One test binary per crate: each binary links the whole dependency tree, so one binary
//! instead of one per file keeps builds fast and small.

mod authorizer;
mod deployed;
