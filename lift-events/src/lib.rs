//! # lift-events
//!
//! The event envelope, an EventBridge publisher, SQS and EventBridge consumers, and sagas
//! whose state lives in DynamoDB.
//!
//! Not built yet: this crate is an empty shell so the workspace has its final shape. Lift
//! Apps already consume SQS and EventBridge events through [`lift_core::App`].
