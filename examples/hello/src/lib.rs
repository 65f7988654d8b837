//! `hello`: a first Lift function.
//!
//! - `GET /hello/{name}` → `200 {"message": "Hello, <name>!"}`
//! - `POST /greetings` with `{"name": "..."}` (1 to 64 characters) → `201` with the greeting;
//!   an invalid body is a `422` naming the field, malformed JSON a `400` naming line and
//!   column.
//! - `GET /stream?count=N` → `200 application/x-ndjson`: `N` greetings (1 to 100, default 3),
//!   one JSON line each, produced as the client reads them. Behind a Function URL with
//!   `InvokeMode: RESPONSE_STREAM`, serve `app().response_streaming()` and each line leaves
//!   as it is produced; otherwise the lines are collected into one body.

use lift_core::stream::StreamBody;
use lift_core::{App, Context, Created, Error, Json, Result};
use serde::{Deserialize, Serialize};

/// The body of `POST /greetings`.
#[derive(Debug, Deserialize, garde::Validate)]
pub struct NewGreeting {
    /// Who to greet.
    #[garde(length(chars, min = 1, max = 64))]
    pub name: String,
}

/// A greeting.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Greeting {
    /// The greeting's text.
    pub message: String,
}

async fn hello(ctx: Context) -> Result<Json<Greeting>> {
    let name = ctx.path_param("name")?;
    Ok(Json(Greeting {
        message: format!("Hello, {name}!"),
    }))
}

async fn create(ctx: Context, input: NewGreeting) -> Result<Created<Greeting>> {
    tracing::info!(correlationId = ctx.correlation_id(), "greeting created");
    Ok(Created(Greeting {
        message: format!("Hello, {}!", input.name),
    }))
}

async fn stream(ctx: Context) -> Result<StreamBody> {
    let count = match ctx.query("count") {
        None => 3,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| Error::bad_request("`count` must be a whole number from 1 to 100"))?,
    };
    // At most 8 lines wait for a slow reader; the task pauses until the reader catches up.
    let (tx, body) = StreamBody::ndjson_channel(8);
    tokio::spawn(async move {
        for n in 1..=count {
            let greeting = Greeting {
                message: format!("Hello #{n}!"),
            };
            if tx.send_json(&greeting).await.is_err() {
                return; // the reader is gone
            }
        }
    });
    Ok(body)
}

/// The hello App.
pub fn app() -> App {
    App::new()
        .get("/hello/{name}", hello)
        .post("/greetings", create)
        .get("/stream", stream)
}
