//! `mesh`: a function that registers itself in the service registry and calls other
//! services by name.
//!
//! `template.yaml` deploys it twice, as the services `alpha` and `beta` (each behind the
//! alias `live`, `beta` also with an IAM-authorized Function URL), beside the registry
//! table. Each registers itself on its first invocation, off the response path; with
//! `MESH_SHUTDOWN_EXTENSION=on` (not set in `template.yaml`) it also releases its lease when
//! Lambda shuts the environment down, otherwise the lease runs out.
//!
//! - `GET /whoami`: the service's name, its function and ARN, and who called.
//! - `GET /call/{service}`: finds `service` in the registry and calls its `/whoami` through
//!   Lambda `Invoke` (an API Gateway v2 event to the instance's qualified ARN).
//! - `GET /call/{service}?via=url`: the same call over HTTPS to the instance's Function
//!   URL, signed with SigV4.
//!
//! Configuration (read once, at start): `LIFT_SERVICE_NAME`, `LIFT_REGISTRY_TABLE`, and
//! optionally `LIFT_RENEW_SECONDS` (the lease renewal interval, default 300) and
//! `MESH_REGISTER=off` (serve without registering) and `MESH_SHUTDOWN_EXTENSION=on` (ask
//! Lambda for SIGTERM, so that shutdown releases the lease), to compare cold starts. On a
//! local
//! emulator (`AWS_ENDPOINT_URL` set), Function URLs are reached through the emulator.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lift_core::{App, Context, Error, Json, Result};
use lift_services::client::{CallError, ServiceClient};
use lift_services::discovery::{Discovery, DiscoveryError};
use lift_services::health::HealthSignals;
use lift_services::transport::{HttpTransport, LambdaTransport, ServiceRequest, Transport};
use lift_services::{DynamoRegistry, RegisterExt, Registration, ServiceConfig};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// What this process was started as, read once.
struct Settings {
    service: String,
    table: String,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();
/// The health signals the registration reports; the clients count their calls here.
static SIGNALS: OnceLock<HealthSignals> = OnceLock::new();
/// The process's clients, built on first use (off the cold start).
static BY_INVOKE: OnceCell<ServiceClient> = OnceCell::const_new();
static BY_URL: OnceCell<ServiceClient> = OnceCell::const_new();

fn env(name: &'static str) -> Result<String> {
    std::env::var(name).map_err(|_| Error::Environment(name))
}

fn settings() -> Result<&'static Settings> {
    SETTINGS
        .get()
        .ok_or_else(|| Error::Config("settings are read in main".to_owned()))
}

fn signals() -> &'static HealthSignals {
    SIGNALS.get_or_init(HealthSignals::new)
}

async fn client(via_url: bool) -> Result<&'static ServiceClient> {
    let cell = if via_url { &BY_URL } else { &BY_INVOKE };
    cell.get_or_try_init(|| async move {
        let settings = settings()?;
        let sdk = lift_core::aws::sdk_config().await;
        let registry = DynamoRegistry::new(aws_sdk_dynamodb::Client::new(sdk), &settings.table);
        let transport: Arc<dyn Transport> = if via_url {
            let credentials = sdk
                .credentials_provider()
                .ok_or(Error::Environment("AWS credentials"))?;
            let mut http = HttpTransport::new()
                .map_err(Error::Internal)?
                .signed(credentials);
            if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                http = http.local_function_urls(endpoint);
            }
            Arc::new(http)
        } else {
            Arc::new(LambdaTransport::new(aws_sdk_lambda::Client::new(sdk)))
        };
        ServiceClient::builder(Discovery::new(Arc::new(registry)), transport)
            .caller(settings.service.clone())
            .signals(signals().clone())
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(Error::internal)
    })
    .await
}

async fn whoami(ctx: Context) -> Result<Json<Value>> {
    Ok(Json(json!({
        "service": settings()?.service,
        "function": ctx.function_name(),
        "arn": ctx.invoked_function_arn(),
        "caller": ctx.header("x-lift-caller"),
        "correlation": ctx.correlation_id(),
    })))
}

/// What a failed call answers: a service discovery cannot find (or a name no service can
/// have) is a 404 naming it, a
/// callee's answer or a failed transport a 502 saying which, the deadline a 504.
fn call_failed(error: CallError) -> Error {
    let (status, code) = match &error {
        CallError::Discovery {
            source: DiscoveryError::UnknownService { .. } | DiscoveryError::InvalidName { .. },
            ..
        } => (http::StatusCode::NOT_FOUND, "service_not_found"),
        CallError::Discovery { .. } => {
            (http::StatusCode::SERVICE_UNAVAILABLE, "service_unavailable")
        }
        CallError::Deadline { .. } => (http::StatusCode::GATEWAY_TIMEOUT, "call_deadline"),
        _ => (http::StatusCode::BAD_GATEWAY, "call_failed"),
    };
    Error::new(status, code, error.to_string())
}

async fn call(ctx: Context) -> Result<Json<Value>> {
    let service = ctx.path_param("service")?.to_owned();
    let via_url = ctx.query("via") == Some("url");
    let request = ServiceRequest::from_context(&ctx, http::Method::GET, "/whoami");
    let reply = client(via_url)
        .await?
        .call(&service, request)
        .await
        .map_err(call_failed)?;
    Ok(Json(json!({
        "instance": reply.instance.as_ref(),
        "via": if via_url { "url" } else { "invoke" },
        "answer": reply.json::<Value>().map_err(Error::internal)?,
    })))
}

#[tokio::main]
async fn main() -> Result<()> {
    let settings = SETTINGS.get_or_init(|| Settings {
        service: env("LIFT_SERVICE_NAME").unwrap_or_default(),
        table: env("LIFT_REGISTRY_TABLE").unwrap_or_default(),
    });
    let mut app = App::new()
        .get("/whoami", whoami)
        .get("/call/{service}", call);
    if std::env::var("MESH_SHUTDOWN_EXTENSION").as_deref() == Ok("on") {
        app = app.shutdown_extension(true);
    }
    if std::env::var("MESH_REGISTER").as_deref() == Ok("off") {
        return app.run().await;
    }
    let renew = env("LIFT_RENEW_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let config = ServiceConfig::new(settings.service.clone())
        .table(settings.table.clone())
        .function_url()
        .renew_every(Duration::from_secs(renew));
    let registration = Registration::new(config)
        .map_err(|e| Error::Config(e.to_string()))?
        .signals(signals().clone());
    app.register_with(registration).run().await
}
