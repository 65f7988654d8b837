//! The third baseline for `scripts/coldstart.py`: the same `GET /hello/{name}` answer as the
//! smallest Lift function, an [`App`] with this one route and nothing else. What it costs over
//! `bare-runtime` is what any Lift function pays before its own code: the four HTTP event
//! shapes, routing, the JSON log subscriber, metrics and streamed responses, all built in.

use lift_core::{App, Context, Json, Result};
use serde::Serialize;

#[derive(Serialize)]
struct Greeting {
    message: String,
}

async fn hello(ctx: Context) -> Result<Json<Greeting>> {
    let name = ctx.path_param("name")?;
    Ok(Json(Greeting {
        message: format!("Hello, {name}!"),
    }))
}

#[tokio::main]
async fn main() -> Result<(), lift_core::Error> {
    App::new().get("/hello/{name}", hello).run().await
}
