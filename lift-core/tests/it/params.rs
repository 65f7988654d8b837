//! Property test: any path parameter value, percent-encoded by the client, reaches the
//! handler decoded and intact.

use lift_core::testing::{TestApp, events};
use lift_core::{App, Context, Result};
use proptest::prelude::*;

async fn param(ctx: Context) -> Result<String> {
    Ok(ctx.path_param("id")?.to_owned())
}

proptest! {
    #[test]
    fn encoded_params_arrive_decoded(value in "\\PC{1,24}") {
        let encoded: String =
            percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let app = TestApp::new(App::new().get("/items/{id}", param)).expect("app");
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        for event in [
            events::http("GET", &format!("/items/{encoded}")).v2(),
            events::http("GET", &format!("/items/{encoded}")).alb(),
        ] {
            let response = runtime.block_on(app.http(event)).expect("response");
            prop_assert_eq!(response.status, 200);
            prop_assert_eq!(response.text(), value.clone());
        }
    }
}

async fn all_params(ctx: Context) -> Result<String> {
    let pairs: Vec<String> = ctx
        .path_params()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    Ok(pairs.join("&"))
}

#[tokio::test]
async fn every_param_is_listed_in_route_order_and_a_clone_keeps_them() {
    async fn cloned(ctx: Context) -> Result<String> {
        let copy = ctx.clone();
        drop(ctx);
        Ok(format!(
            "{} {}",
            copy.path_param("shop")?,
            copy.path_param("item")?
        ))
    }
    let app = TestApp::new(
        App::new()
            .get("/shops/{shop}/items/{item}", all_params)
            .get("/copies/{shop}/{item}", cloned),
    )
    .expect("app");
    let long = "an-item-name-well-over-twenty-four-bytes-long";
    let response = app
        .http(events::http("GET", &format!("/shops/s%201/items/{long}")).v2())
        .await
        .expect("response");
    assert_eq!(response.text(), format!("shop=s 1&item={long}"));
    let response = app
        .http(events::http("GET", &format!("/copies/a/{long}")).v2())
        .await
        .expect("response");
    assert_eq!(response.text(), format!("a {long}"));
}

/// A literal segment matches however the client encoded it, in every source: HTTP APIs and
/// ALBs send the path as the client encoded it, REST APIs decoded.
#[tokio::test]
async fn a_literal_segment_matches_however_the_client_encoded_it() {
    let app = TestApp::new(
        App::new()
            .get("/städte/{id}", param)
            .get("/users/@me/{id}", param),
    )
    .expect("app");
    for (encoded, decoded) in [
        ("/st%C3%A4dte/1", "/städte/1"),
        ("/users/%40me/2", "/users/@me/2"),
        ("/st%c3%a4dte/a%2Fb", "/städte/a/b"),
    ] {
        for event in [
            events::http("GET", encoded).v2(),
            events::http("GET", encoded).alb(),
        ] {
            let response = app.http(event).await.expect("response");
            assert_eq!(response.status, 200, "{encoded}: {}", response.text());
        }
        if !encoded.contains("%2F") {
            let response = app
                .http(events::http("GET", decoded).v1())
                .await
                .expect("response");
            assert_eq!(response.status, 200, "{decoded}");
        }
    }
    // An encoded slash stays inside its segment, decoded in the parameter.
    let response = app
        .http(events::http("GET", "/st%C3%A4dte/a%2Fb").v2())
        .await
        .expect("response");
    assert_eq!(response.text(), "a/b");
}
