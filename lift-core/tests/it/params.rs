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
