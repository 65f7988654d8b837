//! The `chat` Lambda function (`bootstrap`), behind the WebSocket API of `template.yaml`.
//! Run it on Lambda or on the local emulator (`scripts/deploy.py`).

use lift_core::websocket::Connections;

#[tokio::main]
async fn main() -> Result<(), lift_core::Error> {
    // The SDK configuration loads on the first send.
    chat::app(chat::Chat::new(Connections::from_env()))
        .run()
        .await
}
