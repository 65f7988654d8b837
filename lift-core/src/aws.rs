//! The AWS SDK configuration, loaded once per process and shared by every client.
//!
//! Loading it reads the environment and, on Lambda, the credentials the runtime provides; it
//! costs time, so Lift never does it at start-up: the first call loads it (on the first
//! invocation that needs a client, after the runtime's first poll), every later call gets
//! the same value. `AWS_ENDPOINT_URL` (a local emulator) is honoured like everywhere else in
//! the SDK.
//!
//! ```no_run
//! # async fn example() {
//! let config = lift_core::aws::sdk_config().await;
//! println!("{:?}", config.region());
//! # }
//! ```

use aws_config::{BehaviorVersion, SdkConfig};
use tokio::sync::OnceCell;

static CONFIG: OnceCell<SdkConfig> = OnceCell::const_new();

/// The process's shared SDK configuration, loaded on first use.
pub async fn sdk_config() -> &'static SdkConfig {
    CONFIG
        .get_or_init(|| aws_config::load_defaults(BehaviorVersion::latest()))
        .await
}
