//! The shop's tests: the participants' effects on DynamoDB (the local emulator), and the
//! five functions deployed from `template.yaml` onto it.
//!
//! One test binary per crate: each binary links the whole dependency tree, so one binary
//! instead of one per file keeps builds fast and small.

mod deployed;
mod ledger;
mod orchestrator;
