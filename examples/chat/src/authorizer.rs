//! The `chat-authorizer` Lambda function (`bootstrap`): the Lambda authorizer of the chat
//! WebSocket API's `$connect`. `CHAT_TOKEN` holds the token clients must show; it is read
//! once, at cold start.

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lift_core::Error> {
    let token = std::env::var("CHAT_TOKEN")
        .ok()
        .filter(|token| !token.is_empty())
        .ok_or(lift_core::Error::Environment("CHAT_TOKEN"))?;
    chat::authorizer_app(Arc::from(token)).run().await
}
