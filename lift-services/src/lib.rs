//! # lift-services
//!
//! Lambda functions that find and call each other by name: a DynamoDB service registry
//! ([`registry`]), self-registration from an [`App`](lift_core::App) ([`register`]),
//! discovery from a per-process cache ([`discovery`]), load balancing ([`balance`]),
//! traffic policies ([`policy`]) and a service client with failover ([`client`]) over
//! Lambda `Invoke` ([`transport`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use lift_core::{App, Context, Error, Json, Result};
//! use lift_services::client::ServiceClient;
//! use lift_services::discovery::Discovery;
//! use lift_services::transport::{LambdaTransport, ServiceRequest};
//! use lift_services::{DynamoRegistry, RegisterExt, ServiceConfig};
//!
//! # async fn run() -> Result<()> {
//! let sdk = lift_core::aws::sdk_config().await;
//! let registry = DynamoRegistry::new(aws_sdk_dynamodb::Client::new(sdk), "registry");
//! let pricing = ServiceClient::builder(
//!     Discovery::new(Arc::new(registry)),
//!     Arc::new(LambdaTransport::new(aws_sdk_lambda::Client::new(sdk))),
//! )
//! .caller("orders")
//! .build()
//! .map_err(Error::internal)?;
//!
//! let quote = move |ctx: Context| {
//!     let pricing = pricing.clone();
//!     async move {
//!         let request = ServiceRequest::from_context(&ctx, http::Method::GET, "/quotes/7");
//!         let reply = pricing.call("pricing", request).await.map_err(Error::internal)?;
//!         Ok::<_, Error>(Json(reply.json::<serde_json::Value>().map_err(Error::internal)?))
//!     }
//! };
//! App::new()
//!     .register(ServiceConfig::new("orders").table("registry"))
//!     .get("/orders/quote", quote)
//!     .run()
//!     .await
//! # }
//! ```
//!
//! # What an instance is on Lambda
//! A Lambda execution environment has no address of its own: nothing can call one
//! environment. What a caller can reach is an **endpoint** — a qualified function ARN (a
//! version or an alias), a Function URL, or an API URL — in a region. So an [`Instance`] is
//! one such endpoint of a service: service name, version, alias, region, [`Endpoints`],
//! weight, tenant scope, tags, metadata and health. A function deployed with an alias `live`
//! in `eu-west-1` is the instance `function:live@eu-west-1`, whatever number of environments
//! serve it. A container service or a partner API registers through the same
//! [`Registry`] API with an HTTP endpoint.
//!
//! The environments behind an instance keep it alive: each holds a **lease** in the
//! instance's item (`envs.<env-id>`: lease end, report time, error rate, open breakers). An
//! instance is live while any lease runs ([`Instance::is_live`]); its health is read from the
//! live environments' reports ([`Instance::health`]). Reasons:
//! - one item per endpoint keeps discovery to one `Query` per service, however many
//!   environments there are;
//! - leases per environment let an environment that shuts down release its own share
//!   without taking the instance away from the others;
//! - expiry is decided in code when reading, never by DynamoDB's TTL, which deletes up to
//!   days late (the `ttl` attribute only collects garbage);
//! - an environment is frozen between invocations and can renew nothing then, so leases
//!   are long (30 minutes by default) and renewed lazily from invocations, at most once per
//!   interval; a service idle for longer than its lease leaves discovery (set a longer
//!   lease for rarely called services), and self-preservation keeps a fleet whose leases
//!   all lapse at once (two instances or more: a lone one that lapses leaves, see
//!   [`discovery`]).
//!
//! # Registration
//! `App::new().register(ServiceConfig::new("payments"))` — [`ServiceConfig`] is validated
//! before anything is written; the registration runs as an App background task
//! ([`lift_core::lifecycle`]) and never delays a response nor fails an invocation. Every
//! write is conditional: a registration cannot resurrect an instance deregistered after
//! the environment started, nor one of the version deregistered (a tombstone with its time
//! and version); a renewal needs the instance `up`;
//! every write increments `rev`. See [`register`] for the write budget.
//!
//! # Discovery and balancing
//! [`discovery::Discovery`] serves from a per-process snapshot (zero registry reads on the
//! warm path), refreshes it in the background after its TTL with one `Query`, serves it
//! stale when the registry fails, ejects an instance after consecutive failures until the
//! next refresh, and keeps the last known set when most instances (two or more) look
//! expired at once.
//! Strategies ([`balance`]) pick without allocating; [`policy::TrafficPolicy`] splits by
//! version, routes by header or tenant and keeps sticky keys.
//!
//! # Calling
//! [`client::ServiceClient`]: discover → pick → call (through lift-middleware's circuit
//! breaker per instance and deadline-aware timeout) → decode, failing over on retryable
//! failures, propagating tenant, trace, correlation id and caller identity, refusing to
//! send one tenant's call to another tenant's instance, and recording call edges in the
//! invocation's EMF metrics. [`transport::InProcessTransport`] stands a Lift App in for a
//! service in tests, reached through the same discovery path.
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
mod http_transport;
mod model;
pub mod policy;
pub mod register;
pub mod registry;
pub mod topology;
pub mod transport;

pub use config::{ConfigError, MAX_LEASE, ServiceConfig, validate_name};
pub use model::{
    DEGRADED_ERROR_RATE, Endpoints, EnvReport, FAILING_ERROR_RATE, Health, Instance, REGIONS,
    is_known_region,
};
pub use register::{RegisterExt, Registration};
pub use registry::{DynamoRegistry, EnvLease, MemoryRegistry, Registry, RegistryError};
