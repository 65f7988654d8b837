//! The `chat` Lambda function (`bootstrap`), behind the WebSocket API of `template.yaml`.
//! Run it on Lambda or on the local emulator (`scripts/deploy.py`).

use std::sync::Arc;

use lift_core::websocket::Connections;

#[tokio::main]
async fn main() -> Result<(), lift_core::Error> {
    // Read once at cold start; the SDK configuration loads on the first send.
    let token = std::env::var("CHAT_TOKEN")
        .ok()
        .filter(|token| !token.is_empty())
        .ok_or(lift_core::Error::Environment("CHAT_TOKEN"))?;
    chat::app(chat::Chat::new(Connections::from_env(), Arc::from(token)))
        .run()
        .await
}
