//! # lift-events
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)
)]

mod envelope;
mod error;
pub mod relay;
pub mod saga;
pub mod store;

pub use envelope::{Envelope, EnvelopeError, Event};
pub use error::ConfigError;
