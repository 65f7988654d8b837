//! `chat`: a chat room on an API Gateway WebSocket API, one Lift function behind every route.
//!
//! The API selects routes with `$request.body.action`:
//!
//! - `$connect`: API Gateway asks the chat's Lambda authorizer first ([`authorizer_app`],
//!   the `chat-authorizer` binary): only a handshake whose query carries
//!   `token=<CHAT_TOKEN>` reaches the chat function (without a token API Gateway answers
//!   `401`, with a wrong one the authorizer's deny is a `403`). The handler logs the
//!   `user` the authorizer passed on (`?name=`, else `guest`).
//! - `send` (`{"action": "send", "text": "...", "to": "<connection id>"}`): sends
//!   `{"type": "message", "from": <sender>, "text": ...}` to `to`, or back to the sender
//!   when there is no `to`. When `to` is gone, the sender gets
//!   `{"type": "error", "code": "connection_gone", "connectionId": <to>}`.
//! - `whoami`: sends `{"type": "whoami", "connectionId", "routeKey", "stage", "apiId"}` to
//!   the sender.
//! - `$default` (any other action): sends `{"type": "error", "code": "unknown_action"}` to
//!   the sender.
//! - `$disconnect`: logs the close.
//!
//! Everything a client receives goes through the API Gateway Management API
//! (`PostToConnection`): on AWS, a route's own answer reaches the client only when the route
//! has a route response, so every handler answers with an empty `204`.

use std::sync::Arc;

use lift_core::authorizer::Authorization;
use lift_core::websocket::{ConnectionError, Connections, WebSocketRequest};
use lift_core::{App, Context, Error, Result};
use serde::{Deserialize, Serialize};

/// What the chat handlers share: the connections client.
#[derive(Clone)]
pub struct Chat {
    connections: Connections,
}

impl std::fmt::Debug for Chat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat").finish_non_exhaustive()
    }
}

impl Chat {
    /// A chat room that sends through `connections`.
    pub fn new(connections: Connections) -> Self {
        Chat { connections }
    }
}

/// A `send` message.
#[derive(Debug, Deserialize, garde::Validate)]
pub struct SendMessage {
    /// What to say.
    #[garde(length(min = 1, max = 1024))]
    pub text: String,
    /// The connection to say it to; the sender itself when absent.
    #[garde(inner(length(min = 1, max = 128)))]
    pub to: Option<String>,
}

/// What the chat sends to a client.
#[derive(Debug, Serialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum Outgoing<'a> {
    /// A message from a connection.
    Message {
        /// The sender's connection id.
        from: &'a str,
        /// What it said.
        text: &'a str,
    },
    /// The answer to `whoami`.
    Whoami {
        /// The client's connection id.
        connection_id: &'a str,
        /// The route key API Gateway selected.
        route_key: &'a str,
        /// The API's stage.
        stage: &'a str,
        /// The API's id.
        api_id: &'a str,
    },
    /// Something the chat could not do.
    Error {
        /// Stable machine-readable code.
        code: &'a str,
        /// The connection the error is about, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        connection_id: Option<&'a str>,
    },
}

fn websocket(ctx: &Context) -> Result<&WebSocketRequest> {
    ctx.websocket()
        .ok_or_else(|| Error::internal("a WebSocket route ran without a WebSocket event"))
}

async fn connect(ctx: Context) -> Result<()> {
    let ws = websocket(&ctx)?;
    let user = ws
        .request_context()
        .authorizer
        .fields
        .get("user")
        .and_then(|user| user.as_str())
        .unwrap_or("unknown");
    tracing::info!(connection = ws.connection_id(), user, "connected");
    Ok(())
}

async fn send(chat: Chat, ctx: Context, input: SendMessage) -> Result<()> {
    let ws = websocket(&ctx)?;
    let from = ws.connection_id();
    let to = input.to.as_deref().unwrap_or(from);
    let message = Outgoing::Message {
        from,
        text: &input.text,
    };
    match chat.connections.send_json(ws.api(), to, &message).await {
        Err(ConnectionError::Gone { .. }) if to != from => {
            tracing::info!(to, "the recipient is gone");
            let error = Outgoing::Error {
                code: "connection_gone",
                connection_id: Some(to),
            };
            Ok(chat.connections.send_json(ws.api(), from, &error).await?)
        }
        other => Ok(other?),
    }
}

async fn whoami(chat: Chat, ctx: Context) -> Result<()> {
    let ws = websocket(&ctx)?;
    let answer = Outgoing::Whoami {
        connection_id: ws.connection_id(),
        route_key: ws.route_key(),
        stage: ws.stage(),
        api_id: ws.api_id(),
    };
    Ok(chat
        .connections
        .send_json(ws.api(), ws.connection_id(), &answer)
        .await?)
}

async fn unknown(chat: Chat, ctx: Context) -> Result<()> {
    let error = Outgoing::Error {
        code: "unknown_action",
        connection_id: None,
    };
    let ws = websocket(&ctx)?;
    Ok(chat
        .connections
        .send_json(ws.api(), ws.connection_id(), &error)
        .await?)
}

async fn disconnect(ctx: Context) -> Result<()> {
    let ws = websocket(&ctx)?;
    tracing::info!(
        connection = ws.connection_id(),
        status = ws.request_context().disconnect_status_code,
        "disconnected"
    );
    Ok(())
}

/// The chat App. It trusts API Gateway to have run the authorizer on `$connect`.
pub fn app(chat: Chat) -> App {
    let (on_send, on_whoami, on_other) = (chat.clone(), chat.clone(), chat);
    App::new()
        .websocket("$connect", connect)
        .websocket("send", move |ctx, input| send(on_send.clone(), ctx, input))
        .websocket("whoami", move |ctx| whoami(on_whoami.clone(), ctx))
        .websocket("$default", move |ctx| unknown(on_other.clone(), ctx))
        .websocket("$disconnect", disconnect)
}

/// The chat's Lambda authorizer: a `$connect` whose query carries `token` is allowed on the
/// whole stage, with the `user` it names (`?name=`, else `guest`) passed on to the chat;
/// any other is denied.
pub fn authorizer_app(token: Arc<str>) -> App {
    App::new().authorizer(move |ctx: Context| {
        let token = token.clone();
        async move {
            if ctx.query("token") != Some(&*token) {
                return Ok::<_, Error>(Authorization::deny("anonymous"));
            }
            let user = ctx.query("name").unwrap_or("guest").to_owned();
            Ok(Authorization::allow(user.clone())
                .context("user", user)
                .for_all_routes())
        }
    })
}
