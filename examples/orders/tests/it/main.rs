//! The orders example's tests: the function deployed from `template.yaml` onto the local
//! AWS emulator with its three tables, invoked through the Lambda Invoke API.
//!
//! One test binary per crate: each binary links the whole dependency tree, so one binary
//! instead of one per file keeps builds fast and small.

mod deployed;
