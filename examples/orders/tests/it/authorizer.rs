//! The orders authorizer in-process: the policy a valid token gets, and a deny for every
//! token it must refuse (an HTTP API answers it with a 403).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lift_core::testing::{TestApp, events};
use serde_json::{Value, json};

const SECRET: &[u8] = b"orders-test-secret-of-32-bytes-or-more";

pub(crate) fn token(secret: &[u8], issuer: &str, subject: &str, expires_in: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    let claims = json!({"sub": subject, "iss": issuer, "exp": now + expires_in});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

fn app() -> TestApp {
    TestApp::new(orders::authorizer_app(SECRET).expect("config")).expect("app")
}

#[tokio::test]
async fn a_valid_token_is_allowed_on_the_whole_stage() {
    let bearer = format!("Bearer {}", token(SECRET, orders::TOKEN_ISSUER, "c-7", 600));
    let event = events::authorizer("POST", "/orders")
        .header("authorization", &bearer)
        .request_v2();
    let answer: Value = app().invoke(&event).await.expect("a policy");
    assert_eq!(answer["principalId"], "c-7");
    assert_eq!(answer["context"], json!({"customer": "c-7"}));
    let statement = &answer["policyDocument"]["Statement"][0];
    assert_eq!(statement["Effect"], "Allow");
    assert_eq!(
        statement["Resource"][0],
        "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/*"
    );
}

#[tokio::test]
async fn bad_tokens_are_denied() {
    let app = app();
    for bearer in [
        None,
        Some(format!(
            "Bearer {}",
            token(SECRET, "someone-else", "c-7", 600)
        )),
        Some(format!(
            "Bearer {}",
            token(SECRET, orders::TOKEN_ISSUER, "c-7", -3600)
        )),
        Some(format!(
            "Bearer {}",
            token(
                b"another-secret-of-32-bytes-or-more!!",
                orders::TOKEN_ISSUER,
                "c-7",
                600
            )
        )),
        Some("Bearer not-a-jwt".to_owned()),
    ] {
        let mut event = events::authorizer("GET", "/orders/o-1");
        if let Some(bearer) = &bearer {
            event = event.header("authorization", bearer);
        }
        let answer = app.invoke(&event.request_v2()).await.expect("a policy");
        assert_eq!(
            answer["policyDocument"]["Statement"][0]["Effect"], "Deny",
            "{bearer:?}"
        );
    }
}
