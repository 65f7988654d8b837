//! `hello`: a first Lift function.
//!
//! - `GET /hello/{name}` → `200 {"message": "Hello, <name>!"}`
//! - `POST /greetings` with `{"name": "..."}` (1 to 64 characters) → `201` with the greeting;
//!   an invalid body is a `422` naming the field, malformed JSON a `400` naming line and
//!   column.

use lift_core::{App, Context, Created, Json, Result};
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

/// The hello App.
pub fn app() -> App {
    App::new()
        .get("/hello/{name}", hello)
        .post("/greetings", create)
}
