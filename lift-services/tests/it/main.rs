//! lift-services' integration tests: the registry contract on DynamoDB (the local emulator,
//! real SDK client) and in memory, discovery, and the service client.

mod balance;
mod client;
mod discovery;
mod lambda_transport;
mod register;
mod registry;
mod support;
