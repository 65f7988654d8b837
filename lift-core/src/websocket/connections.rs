//! Sending to WebSocket connections through the API Gateway Management API.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::operation::delete_connection::DeleteConnectionError;
use aws_sdk_apigatewaymanagement::operation::get_connection::GetConnectionError;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use http::StatusCode;

use super::WebSocketApi;
use crate::context::Context;
use crate::error::{BoxError, Error};

/// Why a call to a connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The connection does not exist (API Gateway's `410 GoneException`): the client
    /// disconnected (forget the connection id), or it is not open yet (a post from the
    /// `$connect` of another invocation racing it).
    #[error("WebSocket connection `{connection_id}` is gone")]
    Gone {
        /// The connection that is gone.
        connection_id: String,
    },
    /// The function may not manage connections of this API (`403 ForbiddenException`): its
    /// role lacks `execute-api:ManageConnections` on the API.
    #[error("not allowed to manage WebSocket connection `{connection_id}`")]
    Forbidden {
        /// The connection the call was for.
        connection_id: String,
    },
    /// API Gateway throttled the call, or the client's buffer is full
    /// (`429 LimitExceededException`).
    #[error("WebSocket connection `{connection_id}`: limit exceeded")]
    LimitExceeded {
        /// The connection the call was for.
        connection_id: String,
    },
    /// The data is larger than API Gateway accepts for one message
    /// (`413 PayloadTooLargeException`).
    #[error("a message of {size} bytes is too large for a WebSocket connection")]
    PayloadTooLarge {
        /// Size of the refused message.
        size: usize,
    },
    /// A message could not be serialized as JSON.
    #[error("the message could not be serialized as JSON")]
    Serialize(#[source] serde_json::Error),
    /// The context did not come from a WebSocket API, so it names no connection.
    #[error("the event did not come from a WebSocket API: there is no connection to answer")]
    NotWebSocket,
    /// A reply from the connection's own `$connect`: API Gateway opens the connection only
    /// once `$connect` answers 2xx, and refuses a post to it before (`410`). Send from the
    /// first message instead, or answer the `$connect` itself.
    #[error("WebSocket connection `{connection_id}` is not open until its $connect answers")]
    NotYetConnected {
        /// The connection being opened.
        connection_id: String,
    },
    /// Any other failure of the call (network, credentials, an unexpected answer).
    #[error("the API Gateway Management API call for connection `{connection_id}` failed")]
    Api {
        /// The connection the call was for.
        connection_id: String,
        /// The SDK's error.
        #[source]
        source: BoxError,
    },
}

impl ConnectionError {
    /// Whether the connection is gone (the client disconnected).
    pub fn is_gone(&self) -> bool {
        matches!(self, ConnectionError::Gone { .. })
    }
}

/// A gone connection is a `410 connection_gone`; every other failure is an internal error
/// (the function's, not the client's).
impl From<ConnectionError> for Error {
    fn from(error: ConnectionError) -> Self {
        match error {
            ConnectionError::Gone { .. } => {
                Error::new(StatusCode::GONE, "connection_gone", error.to_string())
            }
            other => Error::internal(other),
        }
    }
}

/// A connection's state, from `GetConnection`. Every field is optional: API Gateway may
/// leave one out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// When the connection was opened.
    pub connected_at: Option<SystemTime>,
    /// When the connection last carried a message.
    pub last_active_at: Option<SystemTime>,
    /// The client's IP address.
    pub source_ip: Option<String>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
}

/// Which documented refusal an operation's error is.
enum Refused {
    Gone,
    Forbidden,
    LimitExceeded,
    PayloadTooLarge,
}

trait Refusal {
    fn refusal(&self) -> Option<Refused>;
}

impl Refusal for PostToConnectionError {
    fn refusal(&self) -> Option<Refused> {
        if self.is_payload_too_large_exception() {
            return Some(Refused::PayloadTooLarge);
        }
        common_refusal(
            self.is_gone_exception(),
            self.is_forbidden_exception(),
            self.is_limit_exceeded_exception(),
        )
    }
}

impl Refusal for GetConnectionError {
    fn refusal(&self) -> Option<Refused> {
        common_refusal(
            self.is_gone_exception(),
            self.is_forbidden_exception(),
            self.is_limit_exceeded_exception(),
        )
    }
}

impl Refusal for DeleteConnectionError {
    fn refusal(&self) -> Option<Refused> {
        common_refusal(
            self.is_gone_exception(),
            self.is_forbidden_exception(),
            self.is_limit_exceeded_exception(),
        )
    }
}

fn common_refusal(gone: bool, forbidden: bool, limited: bool) -> Option<Refused> {
    if gone {
        Some(Refused::Gone)
    } else if forbidden {
        Some(Refused::Forbidden)
    } else if limited {
        Some(Refused::LimitExceeded)
    } else {
        None
    }
}

/// Turns an SDK error into a [`ConnectionError`]: the modelled exceptions by their type, and
/// a bare `410` (an answer whose error type went missing) as gone too.
fn classify<E>(error: SdkError<E>, connection_id: &str, size: usize) -> ConnectionError
where
    E: Refusal + std::error::Error + Send + Sync + 'static,
{
    let refused = error
        .as_service_error()
        .and_then(Refusal::refusal)
        .or_else(|| {
            error
                .raw_response()
                .filter(|response| response.status().as_u16() == StatusCode::GONE.as_u16())
                .map(|_| Refused::Gone)
        });
    let connection_id = connection_id.to_owned();
    match refused {
        Some(Refused::Gone) => ConnectionError::Gone { connection_id },
        Some(Refused::Forbidden) => ConnectionError::Forbidden { connection_id },
        Some(Refused::LimitExceeded) => ConnectionError::LimitExceeded { connection_id },
        Some(Refused::PayloadTooLarge) => ConnectionError::PayloadTooLarge { size },
        None => ConnectionError::Api {
            connection_id,
            source: Box::new(error),
        },
    }
}

/// Where the SDK configuration comes from.
enum Config {
    /// The caller's.
    Given(Box<SdkConfig>),
    /// The process's shared one ([`crate::aws::sdk_config`]), loaded on first use.
    Process,
}

struct Shared {
    config: Config,
    /// One client per management endpoint, built on first use.
    clients: RwLock<HashMap<String, Client>>,
}

/// The region in `api`'s `execute-api` domain (`{id}.execute-api.{region}.amazonaws.com`).
fn execute_api_region(api: &WebSocketApi) -> Option<&str> {
    if !api.has_execute_api_domain() {
        return None;
    }
    api.domain_name()
        .strip_prefix(api.api_id())?
        .strip_prefix(".execute-api.")?
        .split('.')
        .next()
        .filter(|region| !region.is_empty())
}

/// The Management API endpoint of `api` under `config` (see [`Connections`]).
fn endpoint(config: &SdkConfig, api: &WebSocketApi) -> String {
    if let Some(base) = config.endpoint_url() {
        return format!(
            "{}/_aws/execute-api/{}/{}",
            base.trim_end_matches('/'),
            api.api_id(),
            api.stage()
        );
    }
    match config.region() {
        Some(region) if !api.has_execute_api_domain() => format!(
            "https://{}.execute-api.{region}.amazonaws.com/{}",
            api.api_id(),
            api.stage()
        ),
        _ => format!("https://{}/{}", api.domain_name(), api.stage()),
    }
}

/// A client for the connections of WebSocket APIs: send a message (`PostToConnection`), read
/// a connection's state (`GetConnection`), close it (`DeleteConnection`).
///
/// The Management API is served per API stage, so the endpoint comes from the event:
/// `https://{domainName}/{stage}` for the API's own `execute-api` domain, and
/// `https://{apiId}.execute-api.{region}.amazonaws.com/{stage}` when clients connect
/// through a custom domain. When the SDK configuration has an endpoint override
/// (`AWS_ENDPOINT_URL`, a local emulator), connections are managed at
/// `{AWS_ENDPOINT_URL}/_aws/execute-api/{apiId}/{stage}` instead, the path-based form the
/// emulator (ministack, LocalStack) serves without wildcard DNS.
///
/// Build it once at start-up: it makes no call, and [`Connections::from_env`] loads the SDK
/// configuration only when the first call needs it, off the cold start. It builds one SDK
/// client per endpoint on first use and shares it; cloning shares the clients. The
/// function's role needs `execute-api:ManageConnections` on the API.
///
/// ```no_run
/// use lift_core::websocket::Connections;
/// use lift_core::{App, Context, Result};
///
/// #[derive(serde::Deserialize, garde::Validate)]
/// struct Echo {
///     #[garde(length(max = 1024))]
///     text: String,
/// }
///
/// # async fn run() -> Result<()> {
/// let connections = Connections::from_env();
/// App::new()
///     .websocket("echo", move |ctx: Context, input: Echo| {
///         let connections = connections.clone();
///         async move {
///             connections.reply(&ctx, input.text).await?;
///             Ok::<_, lift_core::Error>(())
///         }
///     })
///     .run()
///     .await
/// # }
/// ```
#[derive(Clone)]
pub struct Connections {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").finish_non_exhaustive()
    }
}

impl Connections {
    fn with(config: Config) -> Self {
        Connections {
            shared: Arc::new(Shared {
                config,
                clients: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// A client over `config` (region, credentials, retries and the endpoint override).
    pub fn new(config: &SdkConfig) -> Self {
        Self::with(Config::Given(Box::new(config.clone())))
    }

    /// A client over the process's shared SDK configuration ([`crate::aws::sdk_config`]),
    /// loaded by the first call that needs it.
    pub fn from_env() -> Self {
        Self::with(Config::Process)
    }

    async fn config(&self) -> &SdkConfig {
        match &self.shared.config {
            Config::Given(config) => config,
            Config::Process => crate::aws::sdk_config().await,
        }
    }

    /// The Management API endpoint of `api` (see the type's documentation).
    pub async fn endpoint(&self, api: &WebSocketApi) -> String {
        endpoint(self.config().await, api)
    }

    /// The SDK client for `api`'s endpoint, built once and shared.
    pub async fn client(&self, api: &WebSocketApi) -> Client {
        let config = self.config().await;
        let endpoint = endpoint(config, api);
        let clients = &self.shared.clients;
        if let Some(client) = clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&endpoint)
        {
            return client.clone();
        }
        let mut builder =
            aws_sdk_apigatewaymanagement::config::Builder::from(config).endpoint_url(&endpoint);
        // Signed for the API's own region, which a stored API's domain names, whatever
        // region this function runs in (else API Gateway answers 403).
        if config.endpoint_url().is_none()
            && let Some(region) = execute_api_region(api)
        {
            builder = builder.region(aws_sdk_apigatewaymanagement::config::Region::new(
                region.to_owned(),
            ));
        }
        let client = Client::from_conf(builder.build());
        tracing::debug!(target: "lift::websocket", endpoint = %endpoint, "management API client built");
        clients
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(endpoint)
            .or_insert(client)
            .clone()
    }

    /// Sends `data` to the connection as one message (a text frame when it is UTF-8).
    ///
    /// # Errors
    /// [`ConnectionError::Gone`] when the client has disconnected, another
    /// [`ConnectionError`] when API Gateway refused or the call failed.
    pub async fn send(
        &self,
        api: &WebSocketApi,
        connection_id: &str,
        data: impl Into<Vec<u8>>,
    ) -> Result<(), ConnectionError> {
        let data = data.into();
        let size = data.len();
        self.client(api)
            .await
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(data))
            .send()
            .await
            .map_err(|error| classify(error, connection_id, size))?;
        tracing::debug!(target: "lift::websocket", connection = connection_id, bytes = size, "message sent");
        Ok(())
    }

    /// Sends `value` serialized as JSON to the connection.
    ///
    /// # Errors
    /// As [`Connections::send`], and [`ConnectionError::Serialize`].
    pub async fn send_json<T: serde::Serialize + ?Sized>(
        &self,
        api: &WebSocketApi,
        connection_id: &str,
        value: &T,
    ) -> Result<(), ConnectionError> {
        let data = serde_json::to_vec(value).map_err(ConnectionError::Serialize)?;
        self.send(api, connection_id, data).await
    }

    /// Sends `data` to the connection the WebSocket event in `ctx` came from.
    ///
    /// # Errors
    /// [`ConnectionError::NotWebSocket`] for a context of another source,
    /// [`ConnectionError::NotYetConnected`] for a `$connect` (nothing is sent: the
    /// connection opens when it answers); otherwise as [`Connections::send`].
    pub async fn reply(
        &self,
        ctx: &Context,
        data: impl Into<Vec<u8>>,
    ) -> Result<(), ConnectionError> {
        let request = ctx.websocket().ok_or(ConnectionError::NotWebSocket)?;
        if request.event_type() == super::EventType::Connect {
            return Err(ConnectionError::NotYetConnected {
                connection_id: request.connection_id().to_owned(),
            });
        }
        self.send(request.api(), request.connection_id(), data)
            .await
    }

    /// Reads the connection's state.
    ///
    /// # Errors
    /// [`ConnectionError::Gone`] when the client has disconnected, another
    /// [`ConnectionError`] when API Gateway refused or the call failed.
    pub async fn get(
        &self,
        api: &WebSocketApi,
        connection_id: &str,
    ) -> Result<ConnectionInfo, ConnectionError> {
        let output = self
            .client(api)
            .await
            .get_connection()
            .connection_id(connection_id)
            .send()
            .await
            .map_err(|error| classify(error, connection_id, 0))?;
        let time = |t: Option<&aws_sdk_apigatewaymanagement::primitives::DateTime>| {
            t.and_then(|t| SystemTime::try_from(*t).ok())
        };
        Ok(ConnectionInfo {
            connected_at: time(output.connected_at()),
            last_active_at: time(output.last_active_at()),
            source_ip: output
                .identity()
                .and_then(|i| i.source_ip())
                .map(str::to_owned),
            user_agent: output
                .identity()
                .and_then(|i| i.user_agent())
                .map(str::to_owned),
        })
    }

    /// Closes the connection from the server side; API Gateway then runs `$disconnect`.
    ///
    /// # Errors
    /// [`ConnectionError::Gone`] when the connection was already closed, another
    /// [`ConnectionError`] when API Gateway refused or the call failed.
    pub async fn disconnect(
        &self,
        api: &WebSocketApi,
        connection_id: &str,
    ) -> Result<(), ConnectionError> {
        self.client(api)
            .await
            .delete_connection()
            .connection_id(connection_id)
            .send()
            .await
            .map_err(|error| classify(error, connection_id, 0))?;
        tracing::debug!(target: "lift::websocket", connection = connection_id, "connection closed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_config::{BehaviorVersion, Region};

    fn config(endpoint: Option<&str>) -> SdkConfig {
        let mut builder = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"));
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        builder.build()
    }

    #[tokio::test]
    async fn endpoints_follow_the_event_on_aws_and_the_path_form_on_an_emulator() {
        let api = WebSocketApi::new(
            "a1b2c3",
            "prod",
            "a1b2c3.execute-api.eu-west-1.amazonaws.com",
        );
        let aws = Connections::new(&config(None));
        assert_eq!(
            aws.endpoint(&api).await,
            "https://a1b2c3.execute-api.eu-west-1.amazonaws.com/prod"
        );
        let custom = WebSocketApi::new("a1b2c3", "prod", "chat.example.com");
        assert_eq!(
            aws.endpoint(&custom).await,
            "https://a1b2c3.execute-api.eu-west-1.amazonaws.com/prod"
        );
        let local = Connections::new(&config(Some("http://127.0.0.1:4566/")));
        assert_eq!(
            local.endpoint(&api).await,
            "http://127.0.0.1:4566/_aws/execute-api/a1b2c3/prod"
        );
    }

    /// A stored API of another region is called with requests signed for its region.
    #[tokio::test]
    async fn a_client_signs_for_the_apis_own_region() {
        let connections = Connections::new(&config(None));
        let east = WebSocketApi::new(
            "a1b2c3",
            "prod",
            "a1b2c3.execute-api.us-east-1.amazonaws.com",
        );
        let client = connections.client(&east).await;
        assert_eq!(
            client.config().region().map(|r| r.as_ref()),
            Some("us-east-1")
        );
        let custom = WebSocketApi::new("d4e5f6", "prod", "chat.example.com");
        let client = connections.client(&custom).await;
        assert_eq!(
            client.config().region().map(|r| r.as_ref()),
            Some("eu-west-1"),
            "a custom domain names no region: the function's"
        );
    }

    #[tokio::test]
    async fn one_client_per_endpoint() {
        let connections = Connections::new(&config(None));
        let a = WebSocketApi::new(
            "a1b2c3",
            "prod",
            "a1b2c3.execute-api.eu-west-1.amazonaws.com",
        );
        let b = WebSocketApi::new(
            "d4e5f6",
            "prod",
            "d4e5f6.execute-api.eu-west-1.amazonaws.com",
        );
        connections.client(&a).await;
        connections.client(&a).await;
        connections.client(&b).await;
        let clients = connections.shared.clients.read().expect("lock");
        assert_eq!(clients.len(), 2);
    }

    /// A `$connect` cannot post to its own connection, which opens when it answers:
    /// `reply` says so without a call, where API Gateway's 410 would have refused the
    /// connection through the handler's `?`. A message's reply does call (here an endpoint
    /// that refuses connections).
    #[tokio::test]
    async fn a_reply_from_connect_is_refused_without_a_call() {
        use crate::testing::{TestApp, events};
        let connections = Connections::new(&config(Some("http://127.0.0.1:9")));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (on_connect, on_say) = (
            (connections.clone(), seen.clone()),
            (connections, seen.clone()),
        );
        let app = TestApp::new(
            crate::App::new()
                .websocket("$connect", move |ctx: Context| {
                    let (connections, seen) = on_connect.clone();
                    async move {
                        let result = connections.reply(&ctx, "welcome").await;
                        seen.lock().expect("seen").push(format!("{result:?}"));
                        Ok::<_, Error>(())
                    }
                })
                .websocket("say", move |ctx: Context| {
                    let (connections, seen) = on_say.clone();
                    async move {
                        let result = connections.reply(&ctx, "hi").await;
                        seen.lock().expect("seen").push(format!("{result:?}"));
                        Ok::<_, Error>(())
                    }
                }),
        )
        .expect("app");
        let client = events::websocket("c-1");
        let connected = app.websocket(client.connect()).await.expect("response");
        assert!(connected.status < 300, "the connection is accepted");
        app.websocket(client.message("say", "{}"))
            .await
            .expect("response");
        let seen = seen.lock().expect("seen").clone();
        assert!(seen[0].starts_with("Err(NotYetConnected"), "{seen:?}");
        assert!(
            seen[1].starts_with("Err(Api"),
            "a message's reply is sent: {seen:?}"
        );
    }

    #[test]
    fn a_gone_connection_is_a_410_for_handlers() {
        let gone = ConnectionError::Gone {
            connection_id: "c1".to_owned(),
        };
        assert!(gone.is_gone());
        let error = Error::from(gone);
        assert_eq!(error.status(), StatusCode::GONE);
        assert_eq!(error.code(), "connection_gone");
        let other = Error::from(ConnectionError::NotWebSocket);
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
