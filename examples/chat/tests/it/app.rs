//! The chat App in-process: who may connect, and what `send` accepts. (Sending itself talks
//! to API Gateway: `deployed.rs` covers it on the emulator.)

use std::sync::Arc;

use chat::{Chat, app};
use lift_core::testing::{TestApp, events};
use lift_core::websocket::Connections;
use serde_json::Value;

fn chat() -> TestApp {
    // No call is made below, so the SDK configuration is never loaded.
    TestApp::new(app(Chat::new(
        Connections::from_env(),
        Arc::from("let-me-in"),
    )))
    .expect("app")
}

#[tokio::test]
async fn only_clients_with_the_token_may_connect() {
    let app = chat();
    let client = events::websocket("conn-1");
    let accepted = app
        .websocket(client.clone().query("token", "let-me-in").connect())
        .await
        .expect("invocation");
    assert_eq!(accepted.status, 204);

    for refused in [
        client.connect(),
        client.clone().query("token", "nope").connect(),
    ] {
        let refused = app.websocket(refused).await.expect("invocation");
        assert_eq!(refused.status, 401);
        let body: Value = refused.json().expect("json");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
}

#[tokio::test]
async fn send_validates_its_message_before_sending_anything() {
    let app = chat();
    let client = events::websocket("conn-1");
    let empty = app
        .websocket(client.message("send", r#"{"action":"send","text":""}"#))
        .await
        .expect("invocation");
    assert_eq!(empty.status, 422);
    assert_eq!(
        empty.json::<Value>().expect("json")["error"]["fields"][0]["pointer"],
        "/text"
    );
    let long_to = format!(
        r#"{{"action":"send","text":"hi","to":"{}"}}"#,
        "x".repeat(200)
    );
    let refused = app
        .websocket(client.message("send", &long_to))
        .await
        .expect("invocation");
    assert_eq!(refused.status, 422);
    assert_eq!(
        refused.json::<Value>().expect("json")["error"]["fields"][0]["pointer"],
        "/to"
    );
}

#[tokio::test]
async fn disconnect_is_acknowledged() {
    let app = chat();
    let response = app
        .websocket(events::websocket("conn-1").disconnect())
        .await
        .expect("invocation");
    assert_eq!(response.status, 204);
}
