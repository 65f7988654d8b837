//! # lift-services
//!
//! The DynamoDB service registry, discovery with load balancing, and a service client with
//! failover.
//!
//! Not built yet: this crate is an empty shell so the workspace has its final shape.
