//! # lift-services
//!
//! The DynamoDB service registry, discovery with load balancing, and a service client with
//! failover.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)
)]

pub mod balance;
pub mod client;
pub mod clock;
mod config;
pub mod discovery;
pub mod health;
mod model;
pub mod policy;
pub mod register;
pub mod registry;
pub mod transport;

pub use config::{ConfigError, ServiceConfig, validate_name};
pub use model::{
    DEGRADED_ERROR_RATE, Endpoints, EnvReport, FAILING_ERROR_RATE, Health, Instance, REGIONS,
    is_known_region,
};
pub use register::{RegisterExt, Registration};
pub use registry::{DynamoRegistry, EnvLease, MemoryRegistry, Registry, RegistryError};
