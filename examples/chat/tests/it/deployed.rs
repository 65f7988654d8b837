//! The chat function deployed from `template.yaml` onto the local AWS emulator, behind a real
//! WebSocket API: a WebSocket client connects (past the chat's Lambda authorizer), talks on
//! custom route keys and receives what the function sent through the API Gateway Management
//! API (`PostToConnection`).
//!
//! `scripts/test.sh` starts the emulator, builds and deploys the functions and points
//! `LIFT_STACK_FILE` at the deployment's outputs (and `AWS_ENDPOINT_URL` at the emulator)
//! before the tests run. Without them these tests fail loudly: they never pretend to pass.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lift_core::websocket::{ConnectionError, Connections, WebSocketApi};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The chat authorizer's token, as `scripts/deploy.py` gives the local deployment
/// (`ChatToken`; the template has no default).
const TOKEN: &str = "let-me-in";
const WAIT: Duration = Duration::from_secs(30);

struct Deployed {
    api: WebSocketApi,
    local_url: String,
}

fn deployed() -> Deployed {
    let path = std::env::var("LIFT_STACK_FILE").expect(
        "LIFT_STACK_FILE is not set: run scripts/test.sh, which deploys the examples onto the emulator",
    );
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the stack file {path}: {e}"));
    let stack: Value = serde_json::from_str(&text).expect("stack file is JSON");
    let chat = &stack["websockets"]["ChatApi"];
    let field = |name: &str| {
        chat[name]
            .as_str()
            .unwrap_or_else(|| panic!("stack file: websockets.ChatApi.{name} is missing"))
            .to_owned()
    };
    Deployed {
        api: WebSocketApi::new(field("api_id"), field("stage"), field("domain_name")),
        local_url: field("local_url"),
    }
}

async fn connections() -> Connections {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: these tests talk to the emulator (run scripts/test.sh)"
    );
    Connections::new(lift_core::aws::sdk_config().await)
}

async fn connect(url: &str) -> Result<Socket, tungstenite::Error> {
    let (socket, _response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("the handshake finishes in time")?;
    Ok(socket)
}

async fn join(deployed: &Deployed) -> Socket {
    connect(&format!("{}?token={TOKEN}", deployed.local_url))
        .await
        .expect("a client with the token connects")
}

async fn say(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .expect("the frame is sent");
}

/// The next text frame; control frames are skipped.
async fn next_text(socket: &mut Socket) -> String {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a message arrives in time")
            .expect("the connection is open")
            .expect("a frame");
        match frame {
            Message::Text(text) => return text.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn next_json(socket: &mut Socket) -> Value {
    let text = next_text(socket).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

async fn whoami(socket: &mut Socket) -> String {
    say(socket, json!({"action": "whoami"})).await;
    let answer = next_json(socket).await;
    assert_eq!(answer["type"], "whoami", "{answer}");
    answer["connectionId"]
        .as_str()
        .expect("a connection id")
        .to_owned()
}

/// Waits until API Gateway no longer knows the connection (it closed).
async fn until_gone(connections: &Connections, api: &WebSocketApi, id: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match connections.get(api, id).await {
            Err(ConnectionError::Gone { .. }) => return,
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("connection {id} did not go away: {other:?}"),
        }
    }
}

#[tokio::test]
async fn custom_route_keys_answer_through_post_to_connection() {
    let deployed = deployed();
    let mut socket = join(&deployed).await;

    say(&mut socket, json!({"action": "whoami"})).await;
    let me = next_json(&mut socket).await;
    assert_eq!(me["type"], "whoami", "{me}");
    assert_eq!(me["routeKey"], "whoami");
    assert_eq!(me["stage"], deployed.api.stage());
    assert_eq!(me["apiId"], deployed.api.api_id());
    let id = me["connectionId"]
        .as_str()
        .expect("connection id")
        .to_owned();
    assert!(!id.is_empty());

    say(
        &mut socket,
        json!({"action": "send", "text": "hello, room"}),
    )
    .await;
    assert_eq!(
        next_json(&mut socket).await,
        json!({"type": "message", "from": id, "text": "hello, room"})
    );

    // No route has this key: API Gateway picks `$default`.
    say(&mut socket, json!({"action": "dance"})).await;
    assert_eq!(
        next_json(&mut socket).await,
        json!({"type": "error", "code": "unknown_action"})
    );
    socket.close(None).await.expect("close");
}

/// The chat function no longer checks tokens: the refusals come from API Gateway (no
/// token: the identity source is missing, 401) and from the Lift Lambda authorizer (a
/// wrong token: its deny, 403).
#[tokio::test]
async fn a_connect_without_the_token_fails_the_handshake() {
    let deployed = deployed();
    for (url, status) in [
        (deployed.local_url.clone(), 401),
        (format!("{}?token=guess", deployed.local_url), 403),
    ] {
        match connect(&url).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), status, "{url}");
            }
            Err(other) => panic!("{url}: expected an HTTP refusal, got {other:?}"),
            Ok(_) => panic!("{url}: the connection was accepted without a valid token"),
        }
    }
}

#[tokio::test]
async fn clients_talk_to_each_other_and_a_gone_recipient_is_reported() {
    let deployed = deployed();
    let connections = connections().await;
    let mut alice = join(&deployed).await;
    let mut bob = join(&deployed).await;
    let alice_id = whoami(&mut alice).await;
    let bob_id = whoami(&mut bob).await;
    assert_ne!(alice_id, bob_id);

    say(
        &mut alice,
        json!({"action": "send", "text": "hi Bob", "to": bob_id}),
    )
    .await;
    assert_eq!(
        next_json(&mut bob).await,
        json!({"type": "message", "from": alice_id, "text": "hi Bob"})
    );

    bob.close(None).await.expect("close");
    until_gone(&connections, &deployed.api, &bob_id).await;
    say(
        &mut alice,
        json!({"action": "send", "text": "still there?", "to": bob_id}),
    )
    .await;
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "error", "code": "connection_gone", "connectionId": bob_id})
    );
    alice.close(None).await.expect("close");
}

#[tokio::test]
async fn the_connections_client_sends_reads_and_closes_and_gone_is_typed() {
    let deployed = deployed();
    let connections = connections().await;
    let mut socket = join(&deployed).await;
    let id = whoami(&mut socket).await;

    connections
        .send(&deployed.api, &id, "pushed by the server")
        .await
        .expect("PostToConnection to a live connection");
    assert_eq!(next_text(&mut socket).await, "pushed by the server");
    connections
        .send_json(&deployed.api, &id, &json!({"n": 1}))
        .await
        .expect("PostToConnection of JSON");
    assert_eq!(next_json(&mut socket).await, json!({"n": 1}));

    connections
        .get(&deployed.api, &id)
        .await
        .expect("GetConnection of a live connection");

    connections
        .disconnect(&deployed.api, &id)
        .await
        .expect("DeleteConnection");
    // The server closes the socket.
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the socket was not closed after DeleteConnection"
    );

    let sent = connections.send(&deployed.api, &id, "too late").await;
    assert!(
        matches!(&sent, Err(ConnectionError::Gone { connection_id }) if *connection_id == id),
        "{sent:?}"
    );
    assert!(matches!(
        connections.get(&deployed.api, &id).await,
        Err(ConnectionError::Gone { .. })
    ));
    assert!(matches!(
        connections.disconnect(&deployed.api, &id).await,
        Err(ConnectionError::Gone { .. })
    ));
    let never = connections
        .send(&deployed.api, "neverconnected00", "hello?")
        .await;
    assert!(
        never.as_ref().is_err_and(ConnectionError::is_gone),
        "{never:?}"
    );
    // A handler's `?` turns it into a 410.
    let error = lift_core::Error::from(never.expect_err("gone"));
    assert_eq!(error.status(), lift_core::http::StatusCode::GONE);
}
