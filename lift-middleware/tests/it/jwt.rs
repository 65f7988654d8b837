//! Bearer-token authentication on a real App: a table of bad tokens, each with the status
//! and challenge it must get; valid HS256, RS256 and ES256 tokens; JWKS rotation and its
//! rate limit; API Gateway's verified claims; scope requirements.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lift_core::testing::{HttpResponse, TestApp, events};
use lift_core::{App, BoxError, BoxFuture, Context, Json, with_layer};
use lift_middleware::auth::{
    JwksSource, JwtAuthLayer, JwtConfig, JwtConfigBuilder, RequireLayer, VerifiedBy,
};
use serde_json::{Value, json};

const SECRET: &[u8] = b"lift-test-secret-of-32-bytes-or-more!";
const ISSUER: &str = "https://id.example.com";
const AUDIENCE: &str = "orders";

fn key(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).expect("test key")
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64
}

fn claims() -> Value {
    json!({"sub": "user-1", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "scope": "orders:read"})
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        claims,
        &EncodingKey::from_secret(SECRET),
    )
}

async fn whoami(ctx: Context) -> lift_core::Result<Json<Value>> {
    let principal = ctx.principal().expect("authenticated");
    Ok(Json(json!({
        "sub": principal.subject,
        "by": format!("{:?}", principal.verified_by),
    })))
}

fn app(config: JwtConfig) -> TestApp {
    TestApp::new(
        App::new()
            .get("/me", whoami)
            .get(
                "/orders",
                with_layer(whoami, RequireLayer::scopes(&["orders:read"])),
            )
            .get(
                "/admin",
                with_layer(whoami, RequireLayer::scopes(&["orders:admin"])),
            )
            .layer(JwtAuthLayer::new(config)),
    )
    .expect("app")
}

fn hs_config() -> JwtConfig {
    JwtConfig::builder()
        .hs256_secret(None, SECRET)
        .rs256_pem(Some("rsa"), &key("rsa_public.pem"))
        .es256_pem(Some("ec"), &key("ec_public.pem"))
        .algorithms(&[Algorithm::HS256, Algorithm::RS256, Algorithm::ES256])
        .issuers(&[ISSUER])
        .audiences(&[AUDIENCE])
        .leeway(Duration::from_secs(5))
        .build()
        .expect("config")
}

async fn get(app: &TestApp, path: &str, authorization: Option<&str>) -> HttpResponse {
    let mut event = events::http("GET", path);
    if let Some(value) = authorization {
        event = event.header("authorization", value);
    }
    app.http(event.v2()).await.expect("response")
}

#[tokio::test]
async fn valid_tokens_of_every_algorithm() {
    let app = app(hs_config());
    let rsa = EncodingKey::from_rsa_pem(&key("rsa_private.pem")).expect("rsa");
    let ec = EncodingKey::from_ec_pem(&key("ec_private.pem")).expect("ec");
    for token in [
        hs(&claims()),
        sign(Algorithm::RS256, Some("rsa"), &claims(), &rsa),
        sign(Algorithm::ES256, Some("ec"), &claims(), &ec),
    ] {
        let response = get(&app, "/me", Some(&format!("Bearer {token}"))).await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.json::<Value>().expect("json")["sub"], "user-1");
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_with_a_challenge() {
    let app = app(hs_config());
    let rsa_public = key("rsa_public.pem");
    let mut expired = claims();
    expired["exp"] = json!(now() - 3600);
    let mut early = claims();
    early["nbf"] = json!(now() + 3600);
    let mut wrong_issuer = claims();
    wrong_issuer["iss"] = json!("https://evil.example.com");
    let mut wrong_audience = claims();
    wrong_audience["aud"] = json!("payments");
    let mut no_exp = claims();
    no_exp.as_object_mut().expect("object").remove("exp");
    // With issuers and audiences configured, a token must name one of each.
    let mut no_issuer = claims();
    no_issuer.as_object_mut().expect("object").remove("iss");
    let mut no_audience = claims();
    no_audience.as_object_mut().expect("object").remove("aud");
    let mut audience_not_text = claims();
    audience_not_text["aud"] = json!(42);
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    let other_key = EncodingKey::from_secret(b"another-secret-of-32-bytes-or-more!!");
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "Bearer realm=\"lift\""),
        (
            "expired",
            Some(format!("Bearer {}", hs(&expired))),
            "expired",
        ),
        (
            "not yet valid",
            Some(format!("Bearer {}", hs(&early))),
            "not valid yet",
        ),
        (
            "wrong issuer",
            Some(format!("Bearer {}", hs(&wrong_issuer))),
            "issuer",
        ),
        (
            "wrong audience",
            Some(format!("Bearer {}", hs(&wrong_audience))),
            "audience",
        ),
        (
            "no exp",
            Some(format!("Bearer {}", hs(&no_exp))),
            "required claim",
        ),
        (
            "no issuer",
            Some(format!("Bearer {}", hs(&no_issuer))),
            "required claim",
        ),
        (
            "no audience",
            Some(format!("Bearer {}", hs(&no_audience))),
            "required claim",
        ),
        (
            "an audience that is not text",
            Some(format!("Bearer {}", hs(&audience_not_text))),
            "required claim",
        ),
        (
            "bad signature",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS256, None, &claims(), &other_key)
            )),
            "signature",
        ),
        (
            "alg none",
            Some(format!("Bearer {unsigned}")),
            "invalid_token",
        ),
        (
            "HS256 signed with the RSA public key",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    Some("rsa"),
                    &claims(),
                    &EncodingKey::from_secret(&rsa_public)
                )
            )),
            "algorithm",
        ),
        (
            "unknown kid",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    Some("nope"),
                    &claims(),
                    &EncodingKey::from_secret(SECRET)
                )
            )),
            "key id",
        ),
        ("malformed", Some("Bearer abc.def".to_owned()), "malformed"),
        (
            "not bearer",
            Some("Basic dXNlcjpwYXNz".to_owned()),
            "invalid_request",
        ),
        (
            "empty bearer",
            Some("Bearer ".to_owned()),
            "invalid_request",
        ),
    ];
    for (name, authorization, challenge_has) in cases {
        let response = get(&app, "/me", authorization.as_deref()).await;
        assert_eq!(response.status, 401, "{name}: {}", response.text());
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert!(challenge.contains(challenge_has), "{name}: {challenge}");
        let body: Value = response.json().expect("json");
        assert_eq!(body["error"]["code"], "unauthorized", "{name}");
        if let Some(token) = authorization
            .as_deref()
            .and_then(|a| a.split(' ').nth(1))
            .filter(|t| t.len() > 8)
        {
            assert!(
                !response.text().contains(token),
                "{name}: the body echoes the token"
            );
            assert!(
                !challenge.contains(token),
                "{name}: the challenge echoes the token"
            );
        }
    }
}

#[tokio::test]
async fn scope_requirements() {
    let app = app(hs_config());
    let token = format!("Bearer {}", hs(&claims()));
    assert_eq!(get(&app, "/orders", Some(&token)).await.status, 200);
    let refused = get(&app, "/admin", Some(&token)).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.json::<Value>().expect("json")["error"]["code"],
        "insufficient_scope"
    );
    assert!(
        refused
            .header("www-authenticate")
            .is_some_and(|c| c.contains("insufficient_scope") && c.contains("orders:admin"))
    );
}

#[tokio::test]
async fn a_requirement_names_the_realm_it_is_given() {
    let admin = RequireLayer::scopes(&["orders:admin"]).realm("shop");
    let app = TestApp::new(
        App::new()
            .get("/admin", with_layer(whoami, admin.clone()))
            .get("/open", with_layer(whoami, admin)),
    )
    .expect("app");
    // No JWT layer here: no principal, so the requirement itself asks for a token.
    let anonymous = get(&app, "/open", None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some(r#"Bearer realm="shop""#)
    );
    let app = TestApp::new(
        App::new()
            .get(
                "/admin",
                with_layer(
                    whoami,
                    RequireLayer::scopes(&["orders:admin"]).realm("sh\"op"),
                ),
            )
            .layer(JwtAuthLayer::new(hs_config())),
    )
    .expect("app");
    let token = format!("Bearer {}", hs(&claims()));
    let refused = get(&app, "/admin", Some(&token)).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.header("www-authenticate"),
        Some(r#"Bearer realm="shop", error="insufficient_scope", scope="orders:admin""#)
    );
}

#[tokio::test]
async fn api_gateway_claims_are_trusted_only_when_configured() {
    let mut event = events::http("GET", "/me").v2();
    event["requestContext"]["authorizer"] =
        json!({"jwt": {"claims": {"sub": "gw-user", "scope": "orders:read"}, "scopes": []}});
    let trusting = TestApp::new(
        App::new().get("/me", whoami).layer(JwtAuthLayer::new(
            JwtConfig::builder()
                .hs256_secret(None, SECRET)
                .algorithms(&[Algorithm::HS256])
                .trust_api_gateway_authorizer(true)
                .build()
                .expect("config"),
        )),
    )
    .expect("app");
    let response = trusting.http(event.clone()).await.expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    let body: Value = response.json().expect("json");
    assert_eq!(body["sub"], "gw-user");
    assert_eq!(body["by"], format!("{:?}", VerifiedBy::ApiGateway));

    let strict = app(hs_config());
    assert_eq!(strict.http(event).await.expect("response").status, 401);
}

/// Claims API Gateway verified are held to this function's issuers and audiences, as a
/// token it verified would be; their lists, which API Gateway sends as `"[a b]"`, are read
/// as lists, so roles and scopes work.
#[tokio::test]
async fn trusted_api_gateway_claims_are_checked_for_issuer_and_audience() {
    let app = TestApp::new(
        App::new()
            .get("/me", whoami)
            .get(
                "/admin",
                with_layer(whoami, RequireLayer::any_role(&["admin"])),
            )
            .get(
                "/orders",
                with_layer(whoami, RequireLayer::scopes(&["orders:read"])),
            )
            .layer(JwtAuthLayer::new(
                JwtConfig::builder()
                    .hs256_secret(None, SECRET)
                    .algorithms(&[Algorithm::HS256])
                    .issuers(&[ISSUER])
                    .audiences(&[AUDIENCE])
                    .trust_api_gateway_authorizer(true)
                    .build()
                    .expect("config"),
            )),
    )
    .expect("app");
    let call = |path: &str, claims: Value, scopes: Value| {
        let mut event = events::http("GET", path).v2();
        event["requestContext"]["authorizer"] =
            json!({"jwt": {"claims": claims, "scopes": scopes}});
        let app = &app;
        async move { app.http(event).await.expect("response").status }
    };
    let ours = json!({"sub": "u", "iss": ISSUER, "aud": AUDIENCE});
    assert_eq!(call("/me", ours.clone(), json!(null)).await, 200);
    for (claims, why) in [
        (
            json!({"sub": "u", "iss": ISSUER, "aud": "public-app"}),
            "another audience",
        ),
        (
            json!({"sub": "u", "iss": "https://other", "aud": AUDIENCE}),
            "another issuer",
        ),
        (json!({"sub": "u", "aud": AUDIENCE}), "no issuer"),
    ] {
        assert_eq!(call("/me", claims, json!(null)).await, 401, "{why}");
    }
    let listed = json!({
        "sub": "u", "iss": ISSUER, "aud": format!("[web {AUDIENCE}]"),
        "cognito:groups": "[staff admin]",
    });
    assert_eq!(
        call("/me", listed.clone(), json!(null)).await,
        200,
        "one of the audiences"
    );
    let mut grouped = listed.clone();
    grouped["roles"] = json!("[staff admin]");
    assert_eq!(
        call("/admin", grouped, json!(null)).await,
        200,
        "a role in a list"
    );
    assert_eq!(
        call("/orders", ours, json!(["orders:read"])).await,
        200,
        "the scopes API Gateway checked"
    );
}

/// A JWKS that the test rotates, counting fetches.
#[derive(Clone)]
struct Rotating {
    set: Arc<std::sync::Mutex<JwkSet>>,
    fetches: Arc<AtomicU32>,
}

impl JwksSource for Rotating {
    fn fetch(&self) -> BoxFuture<Result<JwkSet, BoxError>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let set = self.set.lock().expect("lock").clone();
        Box::pin(async move { Ok(set) })
    }
}

fn jwks(name: &str) -> JwkSet {
    serde_json::from_slice(&key(name)).expect("jwks")
}

impl Rotating {
    /// A source serving the key set in `file`, not fetched yet.
    fn serving(file: &str) -> Self {
        Rotating {
            set: Arc::new(std::sync::Mutex::new(jwks(file))),
            fetches: Arc::new(AtomicU32::new(0)),
        }
    }
}

/// An RS256 token naming key id `kid`, signed with the private key in `file`.
fn rs(kid: &str, file: &str) -> String {
    let key = EncodingKey::from_rsa_pem(&key(file)).expect("rsa");
    sign(Algorithm::RS256, Some(kid), &claims(), &key)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The rotated key set after its issuer withdrew key-1.
fn key1_withdrawn() -> JwkSet {
    let mut set = jwks("jwks_rotated.json");
    set.keys
        .retain(|jwk| jwk.common.key_id.as_deref() == Some("key-2"));
    set
}

/// The same verifier, warm, picks a rotated key up once its refresh interval has passed
/// (paused time), and not before.
#[tokio::test(start_paused = true)]
async fn jwks_rotation_is_picked_up_and_refreshes_are_rate_limited() {
    let source = Rotating::serving("jwks.json");
    let layer = JwtAuthLayer::new(
        JwtConfig::builder()
            .jwks(source.clone(), Duration::from_secs(60))
            .algorithms(&[Algorithm::RS256])
            // Each request looks its key up: the key set's cache is what is tested.
            .verify_every_token()
            .build()
            .expect("config"),
    );
    let app = TestApp::new(App::new().get("/me", whoami).layer(layer.clone())).expect("app");
    let token1 = bearer(&rs("key-1", "rsa_private.pem"));
    let token2 = bearer(&rs("key-2", "rsa2_private.pem"));

    assert_eq!(get(&app, "/me", Some(&token1)).await.status, 200);
    assert_eq!(get(&app, "/me", Some(&token1)).await.status, 200);
    assert_eq!(
        source.fetches.load(Ordering::SeqCst),
        1,
        "cached after the first fetch"
    );

    // key-2 is not published yet: one refresh, then the rate limit holds.
    assert_eq!(get(&app, "/me", Some(&token2)).await.status, 401);
    *source.set.lock().expect("lock") = jwks("jwks_rotated.json");
    assert_eq!(get(&app, "/me", Some(&token2)).await.status, 401);
    assert_eq!(
        source.fetches.load(Ordering::SeqCst),
        1,
        "no second fetch within a minute"
    );
    assert_eq!(layer.verifier().jwks_fetches(), 1);

    // A second short of the interval: still rate-limited.
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(get(&app, "/me", Some(&token2)).await.status, 401);
    assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
    // Past it, the same warm verifier fetches again, takes key-2 and keeps key-1.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(get(&app, "/me", Some(&token2)).await.status, 200);
    assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
    assert_eq!(get(&app, "/me", Some(&token1)).await.status, 200);
    assert_eq!(layer.verifier().jwks_fetches(), 2);
}

/// How the JWKS moves away from the key that verified a cached token.
enum Withdrawal {
    /// key-1 is no longer published.
    Removed,
    /// key-1's id now names another key's material.
    Replaced,
}

/// A token answered from the verified-token cache is answered only while the key that
/// verified it is in the JWKS: a refresh that only adds a key keeps it; one that drops its
/// key, or gives its key id other material, has it verified again, and refused.
async fn a_cached_token_outlives_no_withdrawal_of_its_key(withdrawal: Withdrawal) {
    let source = Rotating::serving("jwks.json");
    let (verifier, app) = verified_app(
        JwtConfig::builder()
            .jwks(source.clone(), Duration::from_secs(60))
            .algorithms(&[Algorithm::RS256])
            .cache_verified_tokens(16, Duration::from_secs(300)),
    );
    let token1 = bearer(&rs("key-1", "rsa_private.pem"));
    let token2 = bearer(&rs("key-2", "rsa2_private.pem"));
    let unknown = bearer(&rs("key-3", "rsa2_private.pem"));

    assert_eq!(get(&app, "/me", Some(&token1)).await.status, 200);
    assert_eq!(get(&app, "/me", Some(&token1)).await.status, 200);
    assert_eq!(verifier.cache_hits(), 1, "verified once, then answered");

    // key-2 is published beside key-1: token1 is still answered from the cache.
    *source.set.lock().expect("lock") = jwks("jwks_rotated.json");
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(get(&app, "/me", Some(&token2)).await.status, 200);
    assert_eq!(get(&app, "/me", Some(&token1)).await.status, 200);
    assert_eq!(verifier.cache_hits(), 2, "a key added drops nothing");

    // key-1 is withdrawn; the next refresh (an unknown key id asks for it) sees it.
    let mut withdrawn = key1_withdrawn();
    if let Withdrawal::Replaced = withdrawal {
        let mut other = withdrawn.keys[0].clone();
        other.common.key_id = Some("key-1".to_owned());
        withdrawn.keys.push(other);
    }
    *source.set.lock().expect("lock") = withdrawn;
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(get(&app, "/me", Some(&unknown)).await.status, 401);
    assert_eq!(source.fetches.load(Ordering::SeqCst), 3);
    let answer = get(&app, "/me", Some(&token1)).await;
    assert_eq!(answer.status, 401, "the cache must not outlive key-1");
    assert_eq!(verifier.cache_hits(), 2);
    // token2's key is still there: verified again once, then answered again.
    assert_eq!(get(&app, "/me", Some(&token2)).await.status, 200);
    assert_eq!(get(&app, "/me", Some(&token2)).await.status, 200);
    assert_eq!(verifier.cache_hits(), 3);
    if let Withdrawal::Replaced = withdrawal {
        // A token that key-1's new material signed is accepted.
        let resigned = bearer(&rs("key-1", "rsa2_private.pem"));
        assert_eq!(get(&app, "/me", Some(&resigned)).await.status, 200);
    }
}

#[tokio::test(start_paused = true)]
async fn a_cached_token_is_refused_once_the_jwks_drops_its_key() {
    a_cached_token_outlives_no_withdrawal_of_its_key(Withdrawal::Removed).await;
}

#[tokio::test(start_paused = true)]
async fn a_cached_token_is_refused_once_the_jwks_gives_its_key_id_other_material() {
    a_cached_token_outlives_no_withdrawal_of_its_key(Withdrawal::Replaced).await;
}

/// A JWKS that the test can make fail, counting fetches.
#[derive(Clone)]
struct Switchable {
    rotating: Rotating,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl JwksSource for Switchable {
    fn fetch(&self) -> BoxFuture<Result<JwkSet, BoxError>> {
        if self.failing.load(Ordering::SeqCst) {
            self.rotating.fetches.fetch_add(1, Ordering::SeqCst);
            return Box::pin(async { Err("the issuer is down".into()) });
        }
        self.rotating.fetch()
    }
}

/// A key withdrawn from the JWKS, with no new key id to make anyone fetch it, stops
/// verifying once the keys are `jwks_max_age` old: the first token after that waits for
/// the fetch and is refused. While the endpoint fails, the keys at hand stay in use and it
/// is asked again once per interval, not on every token.
#[tokio::test(start_paused = true)]
async fn keys_past_their_max_age_are_fetched_again_so_a_withdrawn_key_stops_verifying() {
    let source = Switchable {
        rotating: Rotating::serving("jwks_rotated.json"),
        failing: Arc::default(),
    };
    let fetches = || source.rotating.fetches.load(Ordering::SeqCst);
    let config = || {
        JwtConfig::builder()
            .jwks(source.clone(), Duration::from_secs(60))
            .algorithms(&[Algorithm::RS256])
            .verify_every_token()
    };
    for refused in [Duration::ZERO, Duration::from_secs(86_401)] {
        let error = config().jwks_max_age(refused).build().expect_err("refused");
        assert!(error.to_string().contains("jwks_max_age"), "{error}");
    }
    let layer = JwtAuthLayer::new(
        config()
            .jwks_max_age(Duration::from_secs(600))
            .build()
            .expect("config"),
    );
    let app = TestApp::new(App::new().get("/me", whoami).layer(layer)).expect("app");
    let token1 = bearer(&rs("key-1", "rsa_private.pem"));
    let token2 = bearer(&rs("key-2", "rsa2_private.pem"));
    assert_eq!(get(&app, "/me", Some(&token1)).await.status, 200);

    // The issuer withdraws key-1 and is down for a while.
    *source.rotating.set.lock().expect("lock") = key1_withdrawn();
    source.failing.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(599)).await;
    assert_eq!(get(&app, "/me", Some(&token1)).await.status, 200);
    assert_eq!(fetches(), 1, "not yet due");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        get(&app, "/me", Some(&token1)).await.status,
        200,
        "the fetch failed: the keys at hand stay"
    );
    assert_eq!(fetches(), 2);
    for _ in 0..20 {
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(get(&app, "/me", Some(&token1)).await.status, 200);
    }
    assert_eq!(
        fetches(),
        2,
        "aged keys are asked for again only once an interval"
    );
    // A key id not at hand (a rotation) is asked for again a second after a failure.
    let unknown = bearer(&rs("key-3", "rsa2_private.pem"));
    assert_eq!(get(&app, "/me", Some(&unknown)).await.status, 401);
    assert_eq!(fetches(), 3);
    assert_eq!(get(&app, "/me", Some(&unknown)).await.status, 401);
    assert_eq!(fetches(), 3, "not twice within a second");

    // Back up, one interval after the last fetch: that token waits for the fetch and is
    // refused; key-2's still verify.
    source.failing.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(get(&app, "/me", Some(&token1)).await.status, 401);
    assert_eq!(fetches(), 4);
    assert_eq!(get(&app, "/me", Some(&token2)).await.status, 200);
    assert_eq!(fetches(), 4);
}

/// A token the verified-token cache holds is answered only until the keys that verified it
/// reach their max age: then it is verified afresh, which waits for the fetch, and a key
/// withdrawn meanwhile is refused though its token was cached.
#[tokio::test(start_paused = true)]
async fn a_cached_token_is_not_answered_past_its_keys_max_age() {
    let source = Rotating::serving("jwks_rotated.json");
    // Tokens kept for an hour, longer than the keys' max age.
    let (verifier, app) = verified_app(
        JwtConfig::builder()
            .jwks(source.clone(), Duration::from_secs(60))
            .jwks_max_age(Duration::from_secs(600))
            .algorithms(&[Algorithm::RS256])
            .cache_verified_tokens(16, Duration::from_secs(3600)),
    );
    let token1 = bearer(&rs("key-1", "rsa_private.pem"));
    let token2 = bearer(&rs("key-2", "rsa2_private.pem"));
    // token2 fetches the keys; token1 is then verified with keys at hand, and kept.
    assert_eq!(get(&app, "/me", Some(&token2)).await.status, 200);
    assert_eq!(get(&app, "/me", Some(&token1)).await.status, 200);
    assert_eq!(get(&app, "/me", Some(&token1)).await.status, 200);
    assert_eq!(verifier.cache_hits(), 1);

    *source.set.lock().expect("lock") = key1_withdrawn();
    tokio::time::advance(Duration::from_secs(599)).await;
    assert_eq!(get(&app, "/me", Some(&token1)).await.status, 200);
    assert_eq!(verifier.cache_hits(), 2, "the keys are not aged yet");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        get(&app, "/me", Some(&token1)).await.status,
        401,
        "answered from the cache past its keys' age"
    );
    assert_eq!(source.fetches.load(Ordering::SeqCst), 2);

    // key-1 is published again: a token verified right after the fetch its unknown key id
    // asks for is kept until those keys age too.
    *source.set.lock().expect("lock") = jwks("jwks_rotated.json");
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(get(&app, "/me", Some(&token1)).await.status, 200);
    assert_eq!(source.fetches.load(Ordering::SeqCst), 3);
    assert_eq!(get(&app, "/me", Some(&token1)).await.status, 200);
    assert_eq!(verifier.cache_hits(), 3);
    tokio::time::advance(Duration::from_secs(600)).await;
    assert_eq!(get(&app, "/me", Some(&token1)).await.status, 200);
    assert_eq!(
        verifier.cache_hits(),
        3,
        "verified again once its keys aged"
    );
    assert_eq!(source.fetches.load(Ordering::SeqCst), 4);
}

/// A JWKS whose fetch waits for the test to let it answer.
#[derive(Clone)]
struct Gated {
    rotating: Rotating,
    gate: Arc<tokio::sync::Notify>,
}

impl JwksSource for Gated {
    fn fetch(&self) -> BoxFuture<Result<JwkSet, BoxError>> {
        let (gate, answer) = (self.gate.clone(), self.rotating.fetch());
        Box::pin(async move {
            gate.notified().await;
            answer.await
        })
    }
}

/// A token verified with aged keys while another request's fetch of them is under way
/// waits for that fetch too, rather than being verified with a key it may withdraw.
#[tokio::test(start_paused = true)]
async fn a_token_arriving_while_aged_keys_are_fetched_waits_for_them() {
    let source = Gated {
        rotating: Rotating::serving("jwks_rotated.json"),
        gate: Arc::default(),
    };
    let verifier = lift_middleware::auth::JwtVerifier::new(
        JwtConfig::builder()
            .jwks(source.clone(), Duration::from_secs(60))
            .jwks_max_age(Duration::from_secs(600))
            .algorithms(&[Algorithm::RS256])
            .verify_every_token()
            .build()
            .expect("config"),
    );
    let token1 = rs("key-1", "rsa_private.pem");
    let token2 = rs("key-2", "rsa2_private.pem");
    source.gate.notify_one();
    assert!(verifier.verify_token(&token1).await.is_ok());

    *source.rotating.set.lock().expect("lock") = key1_withdrawn();
    tokio::time::advance(Duration::from_secs(600)).await;
    let (first, second, ()) = tokio::join!(
        verifier.verify_token(&token2),
        async {
            tokio::task::yield_now().await;
            verifier.verify_token(&token1).await
        },
        async {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            source.gate.notify_one();
        },
    );
    assert!(first.is_ok(), "{first:?}");
    assert!(second.is_err(), "verified with the withdrawn key");
    assert_eq!(source.rotating.fetches.load(Ordering::SeqCst), 2);
}

/// A JWKS endpoint that fails once (a cold start during a blip) is tried again a second
/// later, not after the whole refresh interval; one that hangs is given up on.
#[tokio::test(start_paused = true)]
async fn a_failed_jwks_fetch_is_retried_soon_and_a_hanging_one_times_out() {
    #[derive(Clone)]
    struct Flaky {
        calls: Arc<AtomicU32>,
        hang: bool,
    }
    impl JwksSource for Flaky {
        fn fetch(&self) -> BoxFuture<Result<JwkSet, BoxError>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let hang = self.hang;
            Box::pin(async move {
                if n == 0 {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    return Err("502 from the identity provider".into());
                }
                Ok(jwks("jwks.json"))
            })
        }
    }
    let key1 = EncodingKey::from_rsa_pem(&key("rsa_private.pem")).expect("rsa");
    let token = format!(
        "Bearer {}",
        sign(Algorithm::RS256, Some("key-1"), &claims(), &key1)
    );
    for hang in [false, true] {
        let source = Flaky {
            calls: Arc::new(AtomicU32::new(0)),
            hang,
        };
        let layer = JwtAuthLayer::new(
            JwtConfig::builder()
                .jwks(source.clone(), Duration::from_secs(60))
                .algorithms(&[Algorithm::RS256])
                .build()
                .expect("config"),
        );
        let app = TestApp::new(App::new().get("/me", whoami).layer(layer)).expect("app");
        assert_eq!(
            get(&app, "/me", Some(&token)).await.status,
            401,
            "hang: {hang}"
        );
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert_eq!(
            get(&app, "/me", Some(&token)).await.status,
            200,
            "hang: {hang}"
        );
        assert_eq!(source.calls.load(Ordering::SeqCst), 2);
    }
}

#[test]
fn configurations_that_would_be_unsafe_do_not_build() {
    // An empty secret (an unset variable) or a short one: anyone could sign tokens.
    for secret in [&b""[..], b"sixteen-byte-key", &[7u8; 31]] {
        let built = JwtConfig::builder()
            .hs256_secret(None, secret)
            .algorithms(&[Algorithm::HS256])
            .build();
        assert!(
            matches!(
                built,
                Err(lift_middleware::ConfigError::OutOfRange {
                    field: "hs256_secret",
                    ..
                })
            ),
            "a {}-byte secret",
            secret.len()
        );
    }
    assert!(
        JwtConfig::builder()
            .hs256_secret(None, SECRET)
            .build()
            .is_err(),
        "no pinned algorithm"
    );
    assert!(
        JwtConfig::builder()
            .rs256_pem(None, &key("rsa_public.pem"))
            .algorithms(&[Algorithm::HS256])
            .build()
            .is_err(),
        "a key whose algorithm is not pinned"
    );
    assert!(
        JwtConfig::builder()
            .rs256_pem(None, b"not a pem")
            .algorithms(&[Algorithm::RS256])
            .build()
            .is_err(),
        "a key that does not parse"
    );
    assert!(
        JwtConfig::builder()
            .algorithms(&[Algorithm::RS256])
            .build()
            .is_err(),
        "no key"
    );
}

/// A JWKS endpoint on 127.0.0.1 serving `jwks.json`, counting requests.
async fn jwks_server() -> (String, Arc<AtomicU32>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().expect("address")
    );
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    let body = String::from_utf8(key("jwks.json")).expect("utf8");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (counter, body) = (counter.clone(), body.clone());
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 4096];
                let mut read = 0;
                while !buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

#[tokio::test]
async fn a_jwks_url_is_fetched_once_and_cached() {
    let (url, hits) = jwks_server().await;
    let source = lift_middleware::auth::HttpJwks::new(&url).expect("jwks client");
    let app = TestApp::new(
        App::new().get("/me", whoami).layer(JwtAuthLayer::new(
            JwtConfig::builder()
                .jwks(source, Duration::from_secs(60))
                .algorithms(&[Algorithm::RS256])
                // Each request looks its key up: the key set's cache is what is tested.
                .verify_every_token()
                .build()
                .expect("config"),
        )),
    )
    .expect("app");
    let rsa = EncodingKey::from_rsa_pem(&key("rsa_private.pem")).expect("rsa");
    let token = format!(
        "Bearer {}",
        sign(Algorithm::RS256, Some("key-1"), &claims(), &rsa)
    );
    for _ in 0..3 {
        let response = get(&app, "/me", Some(&token)).await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "fetched over HTTP once, then cached"
    );
}

/// A WebSocket App whose `$connect` alone is authenticated, reading the token from the
/// handshake's `access_token` query parameter when `query_token`; plus an HTTP route behind
/// the same layer.
fn websocket_app(query_token: bool) -> TestApp {
    let mut config = JwtConfig::builder()
        .hs256_secret(None, SECRET)
        .algorithms(&[Algorithm::HS256])
        .issuers(&[ISSUER])
        .audiences(&[AUDIENCE]);
    if query_token {
        config = config.websocket_query_token("access_token");
    }
    let auth = JwtAuthLayer::new(config.build().expect("config"));
    TestApp::new(
        App::new()
            .websocket("$connect", with_layer(whoami, auth.clone()))
            .websocket("$default", |_ctx: Context| async {
                Ok::<_, lift_core::Error>(Json(json!({"ok": true})))
            })
            .get("/me", with_layer(whoami, auth)),
    )
    .expect("app")
}

async fn connect(app: &TestApp, query: Option<&str>, authorization: Option<&str>) -> HttpResponse {
    let mut event = events::websocket("conn-1");
    if let Some(token) = query {
        event = event.query("access_token", token);
    }
    if let Some(value) = authorization {
        event = event.header("authorization", value);
    }
    app.websocket(event.connect()).await.expect("response")
}

#[tokio::test]
async fn a_websocket_connect_can_carry_its_token_in_the_query() {
    let app = websocket_app(true);
    let token = hs(&claims());

    let accepted = connect(&app, Some(&token), None).await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    assert_eq!(accepted.json::<Value>().expect("json")["sub"], "user-1");

    let mut expired = claims();
    expired["exp"] = json!(now() - 3600);
    for (query, error) in [
        (hs(&expired), "invalid_token"),
        ("not-a-jwt".to_owned(), "invalid_token"),
        (" ".to_owned(), "invalid_request"),
    ] {
        let refused = connect(&app, Some(&query), None).await;
        assert_eq!(refused.status, 401, "{query:?}: {}", refused.text());
        let challenge = refused.header("www-authenticate").expect("challenge");
        assert!(challenge.contains(error), "{query:?}: {challenge}");
    }
    let missing = connect(&app, None, None).await;
    assert_eq!(missing.status, 401);

    // The Authorization header, when the client could send one, comes first.
    let header = connect(&app, Some("not-a-jwt"), Some(&format!("Bearer {token}"))).await;
    assert_eq!(header.status, 200, "{}", header.text());

    // Messages after the handshake carry no token and are not behind the layer.
    let message = app
        .websocket(events::websocket("conn-1").message("$default", "{}"))
        .await
        .expect("message");
    assert_eq!(message.status, 200);
}

#[tokio::test]
async fn a_query_token_is_read_only_on_a_websocket_connect_that_asks_for_it() {
    let token = hs(&claims());
    let with_setting = websocket_app(true);
    let http = with_setting
        .http(
            events::http("GET", "/me")
                .query("access_token", &token)
                .v2(),
        )
        .await
        .expect("response");
    assert_eq!(http.status, 401, "an HTTP query never carries a token");

    let without_setting = websocket_app(false);
    let refused = connect(&without_setting, Some(&token), None).await;
    assert_eq!(refused.status, 401);
    let accepted = connect(&without_setting, None, Some(&format!("Bearer {token}"))).await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
}

/// A Lambda authorizer whose tokens `JwtAuthLayer` verifies: the handler only turns the
/// principal into a decision.
#[tokio::test]
async fn a_lambda_authorizer_can_verify_jwts_with_the_layer() {
    use lift_core::authorizer::Authorization;

    let app = TestApp::new(
        App::new()
            .authorizer(|ctx: Context| async move {
                let principal = ctx.principal().expect("the layer verified a token");
                Ok::<_, lift_core::Error>(
                    Authorization::allow(principal.subject.clone().unwrap_or_default())
                        .context("scope", principal.claim_str("scope").unwrap_or_default())
                        .for_all_routes(),
                )
            })
            .layer(JwtAuthLayer::new(hs_config())),
    )
    .expect("app");
    let orders = events::authorizer("GET", "/orders");
    let token = format!("Bearer {}", hs(&claims()));
    for event in [
        orders.token(&token),
        orders.clone().header("authorization", &token).request_v1(),
        orders.clone().header("authorization", &token).request_v2(),
    ] {
        let answer = app.invoke(&event).await.expect("a policy");
        assert_eq!(answer["principalId"], "user-1", "{answer}");
        assert_eq!(answer["context"]["scope"], "orders:read");
        assert_eq!(answer["policyDocument"]["Statement"][0]["Effect"], "Allow");
    }
    let mut expired = claims();
    expired["exp"] = json!(now() - 3600);
    for event in [
        orders.token(&format!("Bearer {}", hs(&expired))),
        orders.request_v1(),
    ] {
        let error = app.invoke(&event).await.expect_err("refused");
        // The invocation error's message, which API Gateway answers with a 401.
        assert_eq!(error.to_string(), "Unauthorized");
    }
}

fn cached_config(capacity: usize, max_age: Duration) -> JwtConfigBuilder {
    JwtConfig::builder()
        .hs256_secret(None, SECRET)
        .algorithms(&[Algorithm::HS256])
        .issuers(&[ISSUER])
        .audiences(&[AUDIENCE])
        .leeway(Duration::from_secs(0))
        .cache_verified_tokens(capacity, max_age)
}

#[tokio::test]
async fn a_verified_token_is_answered_from_the_cache_and_a_refused_one_never_is() {
    let layer = JwtAuthLayer::new(
        cached_config(16, Duration::from_secs(300))
            .build()
            .expect("config"),
    );
    let verifier = layer.verifier().clone();
    let app = TestApp::new(App::new().get("/me", whoami).layer(layer)).expect("app");
    let token = format!("Bearer {}", hs(&claims()));
    for _ in 0..3 {
        let answer = get(&app, "/me", Some(&token)).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json::<Value>().expect("json")["sub"], "user-1");
    }
    assert_eq!(verifier.cache_hits(), 2, "verified once, answered twice");

    let mut other = claims();
    other["sub"] = json!("user-2");
    let answer = get(&app, "/me", Some(&format!("Bearer {}", hs(&other)))).await;
    assert_eq!(answer.json::<Value>().expect("json")["sub"], "user-2");
    assert_eq!(verifier.cache_hits(), 2, "another token is verified");

    // A token signed with another secret, and an expired one: refused every time.
    let forged = sign(
        Algorithm::HS256,
        None,
        &claims(),
        &EncodingKey::from_secret(b"another-secret-of-32-bytes-or-more!!"),
    );
    let mut expired = claims();
    expired["exp"] = json!(now() - 10);
    for bad in [forged, hs(&expired)] {
        for _ in 0..2 {
            let answer = get(&app, "/me", Some(&format!("Bearer {bad}"))).await;
            assert_eq!(answer.status, 401);
        }
    }
    // A token whose last byte changed is another token.
    let tampered = format!("{}x", token);
    assert_eq!(get(&app, "/me", Some(&tampered)).await.status, 401);
    assert_eq!(verifier.cache_hits(), 2);
}

/// An App answering `GET /me` behind a JWT layer built from `config`, and the layer's
/// verifier.
fn verified_app(config: JwtConfigBuilder) -> (lift_middleware::auth::JwtVerifier, TestApp) {
    let layer = JwtAuthLayer::new(config.build().expect("config"));
    let verifier = layer.verifier().clone();
    let app = TestApp::new(App::new().get("/me", whoami).layer(layer)).expect("app");
    (verifier, app)
}

/// Hits of a verifier built from `config`, after the same token three times.
async fn hits_after_three_requests(config: JwtConfigBuilder) -> u64 {
    let (verifier, app) = verified_app(config);
    let token = format!("Bearer {}", hs(&claims()));
    for _ in 0..3 {
        assert_eq!(get(&app, "/me", Some(&token)).await.status, 200);
    }
    verifier.cache_hits()
}

#[tokio::test]
async fn tokens_are_cached_by_default_and_verified_every_time_when_asked() {
    let config = || {
        JwtConfig::builder()
            .hs256_secret(None, SECRET)
            .algorithms(&[Algorithm::HS256])
    };
    assert_eq!(hits_after_three_requests(config()).await, 2, "by default");
    assert_eq!(
        hits_after_three_requests(config().verify_every_token()).await,
        0
    );
}

#[test]
fn a_cache_without_room_or_time_or_kept_past_an_hour_is_refused() {
    for (capacity, max_age) in [
        (0, Duration::from_secs(60)),
        (16, Duration::ZERO),
        (16, Duration::from_secs(3601)),
    ] {
        let error = cached_config(capacity, max_age)
            .build()
            .expect_err("refused");
        assert!(
            error.to_string().contains("cache_verified_tokens"),
            "{error}"
        );
    }
    assert!(cached_config(1, Duration::from_secs(3600)).build().is_ok());
}
