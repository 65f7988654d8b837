//! lift-middleware's integration tests: every layer on a real `App`, in-process, and the
//! DynamoDB, SQS, EventBridge and CloudWatch backed parts against the local AWS emulator.
//!
//! One test binary per crate: each binary links the whole dependency tree, so one binary
//! instead of one per file keeps builds fast and small.

mod app;
mod auth_properties;
mod aws;
mod bulkhead;
mod cache;
mod circuit_breaker;
mod cloudwatch_sink;
mod compression;
mod dynamodb_cache;
mod dynamodb_circuit_breaker;
mod dynamodb_idempotency;
mod dynamodb_item_size;
mod dynamodb_rate_limit;
mod dynamodb_retry;
mod dynamodb_tenancy;
mod http_security;
mod jwt;
mod load_shed;
mod rate_limit;
mod retry;
mod service_auth;
mod sqs_propagation;
mod support;
mod tenancy;
mod timeout;
mod validation;
