//! Authentication and tenancy per request: JWT verification (HS256, RS256 with a static key,
//! RS256 through a cached JWKS) on its own, and tenant resolution as the difference between
//! the same App with and without the tenancy layer.
//!
//! `cargo bench -p lift-middleware --bench auth`

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lift_core::testing::{events, lambda_context};
use lift_core::{App, BoxError, BoxFuture, Context};
use lift_middleware::auth::{JwksSource, JwtConfig, JwtVerifier};
use lift_middleware::tenancy::{TenantConfig, TenantLayer, TenantSource};
use serde_json::json;
use serde_json::value::RawValue;

const SECRET: &[u8] = b"lift-bench-secret-of-32-bytes-or-more";

fn key(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).expect("key")
}

fn claims() -> serde_json::Value {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs()
        + 3600;
    json!({"sub": "user-1", "iss": "https://id.example.com", "aud": "orders", "exp": exp, "tenant_id": "acme"})
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims(), key).expect("sign")
}

struct Jwks(JwkSet);

impl JwksSource for Jwks {
    fn fetch(&self) -> BoxFuture<Result<JwkSet, BoxError>> {
        let set = self.0.clone();
        Box::pin(async move { Ok(set) })
    }
}

/// A verifier that checks every token (the verified-token cache off): these rows measure
/// verification itself.
fn verifier(builder: lift_middleware::auth::JwtConfigBuilder) -> JwtVerifier {
    JwtVerifier::new(
        builder
            .issuers(&["https://id.example.com"])
            .audiences(&["orders"])
            .verify_every_token()
            .build()
            .expect("config"),
    )
}

fn verify(verifier: &JwtVerifier, token: &str) {
    let principal = verifier
        .verify_token(token)
        .now_or_never()
        .expect("no waiting")
        .expect("valid");
    black_box(principal);
}

fn jwt(c: &mut Criterion) {
    let hs = verifier(
        JwtConfig::builder()
            .hs256_secret(None, SECRET)
            .algorithms(&[Algorithm::HS256]),
    );
    let rs = verifier(
        JwtConfig::builder()
            .rs256_pem(Some("key-1"), &key("rsa_public.pem"))
            .algorithms(&[Algorithm::RS256]),
    );
    let set: JwkSet = serde_json::from_slice(&key("jwks.json")).expect("jwks");
    let jwks = verifier(
        JwtConfig::builder()
            .jwks(Jwks(set), Duration::from_secs(60))
            .algorithms(&[Algorithm::RS256]),
    );
    let hs_token = sign(Algorithm::HS256, None, &EncodingKey::from_secret(SECRET));
    let rsa = EncodingKey::from_rsa_pem(&key("rsa_private.pem")).expect("rsa");
    let rs_token = sign(Algorithm::RS256, Some("key-1"), &rsa);
    // Warm the JWKS cache: the benchmark measures the cached path. The first fetch is
    // bounded by a timer, so it runs on a runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime
        .block_on(jwks.verify_token(&rs_token))
        .expect("valid");

    let mut group = c.benchmark_group("auth");
    group.bench_function("jwt_hs256", |b| {
        b.iter(|| verify(&hs, black_box(&hs_token)))
    });
    group.bench_function("jwt_rs256", |b| {
        b.iter(|| verify(&rs, black_box(&rs_token)))
    });
    group.bench_function("jwt_rs256_jwks_cached", |b| {
        b.iter(|| verify(&jwks, black_box(&rs_token)))
    });
    group.finish();
}

fn tenancy(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let handler = |_: Context| async { Ok::<_, lift_core::Error>("ok") };
    let bare = App::new()
        .get("/t/{tenant}/orders", handler)
        .into_service()
        .expect("app");
    let tenant = App::new()
        .get("/t/{tenant}/orders", handler)
        .layer(TenantLayer::new(
            TenantConfig::builder()
                .source(TenantSource::Header("x-tenant-id".to_owned()))
                .source(TenantSource::PathParam("tenant".to_owned()))
                .trust_headers(true)
                .build()
                .expect("config"),
        ))
        .into_service()
        .expect("app");
    let event = events::http("GET", "/t/acme/orders")
        .header("x-tenant-id", "acme")
        .v2();
    let raw: Box<RawValue> = serde_json::value::to_raw_value(&event).expect("raw");
    let lambda = lambda_context("bench");
    let mut group = c.benchmark_group("auth");
    group.bench_function("app_without_tenancy", |b| {
        b.iter(|| {
            runtime
                .block_on(bare.invoke(black_box(&raw), lambda.clone()))
                .expect("ok")
        })
    });
    group.bench_function("app_with_tenant_resolution", |b| {
        b.iter(|| {
            runtime
                .block_on(tenant.invoke(black_box(&raw), lambda.clone()))
                .expect("ok")
        })
    });
    group.finish();
}

criterion_group!(benches, jwt, tenancy);
criterion_main!(benches);
