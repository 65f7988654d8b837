//! A function for the end-to-end tests on the local emulator: it registers itself as the
//! service `$LIFT_SERVICE_NAME` in the table `$LIFT_REGISTRY_TABLE`, answers `GET /whoami`,
//! and on `GET /call/{service}` calls that service's `/whoami` by name (discovery, then
//! Lambda `Invoke`). Its lease renewals (every `$LIFT_RENEW_SECONDS`, default 300) report
//! the services it called.

use std::sync::Arc;
use std::time::Duration;

use lift_core::{App, Context, Error, Json, Result};
use lift_services::client::ServiceClient;
use lift_services::discovery::Discovery;
use lift_services::health::HealthSignals;
use lift_services::transport::{LambdaTransport, ServiceRequest};
use lift_services::{DynamoRegistry, RegisterExt, Registration, ServiceConfig};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// The process's client, built on first use (off the cold start).
static CLIENT: OnceCell<ServiceClient> = OnceCell::const_new();

/// What the registration reports: the client counts its calls here.
static SIGNALS: std::sync::OnceLock<HealthSignals> = std::sync::OnceLock::new();

fn env(name: &'static str) -> Result<String> {
    std::env::var(name).map_err(|_| Error::Environment(name))
}

async fn client() -> Result<&'static ServiceClient> {
    CLIENT
        .get_or_try_init(|| async {
            let sdk = lift_core::aws::sdk_config().await;
            let registry = DynamoRegistry::new(
                aws_sdk_dynamodb::Client::new(sdk),
                env("LIFT_REGISTRY_TABLE")?,
            );
            ServiceClient::builder(
                Discovery::new(Arc::new(registry)),
                Arc::new(LambdaTransport::new(aws_sdk_lambda::Client::new(sdk))),
            )
            .caller(env("LIFT_SERVICE_NAME")?)
            .signals(SIGNALS.get_or_init(HealthSignals::new).clone())
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(Error::internal)
        })
        .await
}

async fn whoami(ctx: Context) -> Result<Json<Value>> {
    Ok(Json(json!({
        "service": env("LIFT_SERVICE_NAME")?,
        "function": ctx.function_name(),
        "arn": ctx.invoked_function_arn(),
        "caller": ctx.header("x-lift-caller"),
        "correlation": ctx.correlation_id(),
    })))
}

async fn call(ctx: Context) -> Result<Json<Value>> {
    let service = ctx.path_param("service")?.to_owned();
    let request = ServiceRequest::from_context(&ctx, http::Method::GET, "/whoami");
    let reply = client()
        .await?
        .call(&service, request)
        .await
        .map_err(Error::internal)?;
    Ok(Json(json!({
        "instance": reply.instance.as_ref(),
        "answer": reply.json::<Value>().map_err(Error::internal)?,
    })))
}

#[tokio::main]
async fn main() -> Result<()> {
    let renew = env("LIFT_RENEW_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let config = ServiceConfig::new(env("LIFT_SERVICE_NAME")?)
        .table(env("LIFT_REGISTRY_TABLE")?)
        .renew_every(Duration::from_secs(renew));
    let registration = Registration::new(config)
        .map_err(|e| Error::Config(e.to_string()))?
        .signals(SIGNALS.get_or_init(HealthSignals::new).clone());
    App::new()
        .register_with(registration)
        .get("/whoami", whoami)
        .get("/call/{service}", call)
        .run()
        .await
}
