//! Property tests: no Authorization header, token, tenant header, path or host a client can
//! send makes authentication or tenancy panic or answer anything but an allowed status.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use lift_core::testing::{TestApp, events};
use lift_core::{App, Context};
use lift_middleware::auth::{JwksSource, JwtAuthLayer, JwtConfig};
use lift_middleware::tenancy::{TenantConfig, TenantLayer, TenantSource};
use proptest::prelude::*;
use tower::ServiceBuilder;

struct EmptyJwks;

impl JwksSource for EmptyJwks {
    fn fetch(
        &self,
    ) -> lift_core::BoxFuture<Result<jsonwebtoken::jwk::JwkSet, lift_core::BoxError>> {
        Box::pin(async { Ok(jsonwebtoken::jwk::JwkSet { keys: Vec::new() }) })
    }
}

fn app() -> TestApp {
    let jwt = JwtConfig::builder()
        .hs256_secret(None, b"lift-test-secret-of-32-bytes-or-more!")
        .jwks(EmptyJwks, Duration::ZERO)
        .algorithms(&[Algorithm::HS256, Algorithm::RS256])
        .optional(true)
        .build()
        .expect("jwt");
    let tenancy = TenantConfig::builder()
        .source(TenantSource::Claim("tenant".to_owned()))
        .source(TenantSource::Header("x-tenant-id".to_owned()))
        .source(TenantSource::PathParam("tenant".to_owned()))
        .source(TenantSource::Subdomain)
        .trust_headers(true)
        .required(false)
        .build()
        .expect("tenancy");
    TestApp::new(
        App::new()
            .any("/t/{tenant}", |_: Context| async {
                Ok::<_, lift_core::Error>("ok")
            })
            .layer(
                ServiceBuilder::new()
                    .layer(JwtAuthLayer::new(jwt))
                    .layer(TenantLayer::new(tenancy)),
            ),
    )
    .expect("app")
}

fn token_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,80}",
        "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,40}",
        // A base64url header that may name any alg and kid.
        ("(HS256|RS256|none|ES512|PS256|x)", "[ -~]{0,12}").prop_map(|(alg, kid)| {
            use base64::Engine;
            let header = serde_json::json!({"alg": alg, "kid": kid}).to_string();
            format!(
                "{}.e30.c2ln",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header)
            )
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn never_a_panic_or_a_server_error(
        scheme in "(Bearer|bearer|Basic|)",
        token in token_like(),
        tenant_header in "[ -~]{0,20}",
        tenant_path in "[A-Za-z0-9%_.-]{1,20}",
        host in "[a-z0-9.-]{0,30}",
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let app = app();
        let mut event = events::http("GET", &format!("/t/{tenant_path}"))
            .header("authorization", &format!("{scheme} {token}"));
        if !tenant_header.trim().is_empty() {
            event = event.header("x-tenant-id", tenant_header.trim());
        }
        if !host.is_empty() {
            event = event.header("host", &host);
        }
        let response = runtime.block_on(app.http(event.v2())).expect("an HTTP response");
        prop_assert!(
            [200, 400, 401, 403].contains(&response.status),
            "status {} for {scheme:?} {token:?}: {}", response.status, response.text()
        );
        if response.status == 401 && token.len() > 8 {
            prop_assert!(!response.text().contains(&token));
        }
    }
}
