//! # lift-events
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)
)]

mod error;
pub mod saga;
pub mod store;

pub use error::ConfigError;
