//! The chat App and its authorizer in-process: who may connect, and what `send` accepts.
//! (Sending itself talks to API Gateway: `deployed.rs` covers it on the emulator.)

use std::sync::Arc;

use chat::{Chat, app, authorizer_app};
use lift_core::testing::{TestApp, events};
use lift_core::websocket::Connections;
use serde_json::Value;

fn chat() -> TestApp {
    // No call is made below, so the SDK configuration is never loaded.
    TestApp::new(app(Chat::new(Connections::from_env()))).expect("app")
}

#[tokio::test]
async fn the_authorizer_admits_only_clients_with_the_token() {
    let authorizer = TestApp::new(authorizer_app(Arc::from("let-me-in"))).expect("app");
    let stage = "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/*";

    let accepted = authorizer
        .invoke(
            &events::authorizer("GET", "/")
                .query("token", "let-me-in")
                .query("name", "ada")
                .websocket_connect("conn-1"),
        )
        .await
        .expect("a policy");
    assert_eq!(accepted["principalId"], "ada");
    assert_eq!(accepted["context"]["user"], "ada");
    assert_eq!(
        accepted["policyDocument"]["Statement"][0]["Effect"],
        "Allow"
    );
    assert_eq!(
        accepted["policyDocument"]["Statement"][0]["Resource"][0],
        stage
    );

    for query in [None, Some("nope")] {
        let mut event = events::authorizer("GET", "/");
        if let Some(token) = query {
            event = event.query("token", token);
        }
        let refused = authorizer
            .invoke(&event.websocket_connect("conn-2"))
            .await
            .expect("a policy");
        assert_eq!(
            refused["policyDocument"]["Statement"][0]["Effect"], "Deny",
            "{query:?}"
        );
    }
}

#[tokio::test]
async fn connect_trusts_the_authorizer() {
    let accepted = chat()
        .websocket(events::websocket("conn-1").connect())
        .await
        .expect("invocation");
    assert_eq!(accepted.status, 204);
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
