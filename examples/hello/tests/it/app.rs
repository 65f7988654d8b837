//! The hello function, driven in-process with HTTP events.

use hello::Greeting;
use lift_core::testing::{TestApp, events};
use serde_json::{Value, json};

fn app() -> TestApp {
    TestApp::new(hello::app()).expect("hello app")
}

#[tokio::test]
async fn greets_by_name() {
    let response = app()
        .http(events::http("GET", "/hello/world").v2())
        .await
        .expect("response");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.json::<Greeting>().expect("greeting"),
        Greeting {
            message: "Hello, world!".to_owned()
        }
    );
}

#[tokio::test]
async fn creates_a_greeting() {
    let response = app()
        .http(
            events::http("POST", "/greetings")
                .json(&json!({"name": "Ada"}))
                .v2(),
        )
        .await
        .expect("response");
    assert_eq!(response.status, 201);
    assert_eq!(
        response.json::<Greeting>().expect("greeting").message,
        "Hello, Ada!"
    );
}

#[tokio::test]
async fn refuses_bad_greetings() {
    let app = app();
    let empty = app
        .http(
            events::http("POST", "/greetings")
                .json(&json!({"name": ""}))
                .v2(),
        )
        .await
        .expect("response");
    assert_eq!(empty.status, 422);
    let body: Value = empty.json().expect("json");
    assert_eq!(body["error"]["fields"][0]["pointer"], "/name");

    let long = app
        .http(
            events::http("POST", "/greetings")
                .json(&json!({"name": "x".repeat(65)}))
                .v2(),
        )
        .await
        .expect("response");
    assert_eq!(long.status, 422);

    let malformed = app
        .http(
            events::http("POST", "/greetings")
                .header("content-type", "application/json")
                .body("{\"name\": ")
                .v2(),
        )
        .await
        .expect("response");
    assert_eq!(malformed.status, 400);

    let wrong_method = app
        .http(events::http("DELETE", "/hello/world").v2())
        .await
        .expect("response");
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("GET, HEAD"));
}
