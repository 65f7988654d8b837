//! Authentication with bearer JWTs, and requirements on who may call a route.
//!
//! [`JwtAuthLayer`] verifies the `Authorization: Bearer` token with the `jsonwebtoken`
//! crate (AWS-LC backend): HS256, RS256 and ES256 keys, or a JWKS fetched from a URL,
//! cached, and fetched again when a token names an unknown key id or once its keys are 10
//! minutes old (at most once per interval, one fetch at a time, old keys kept if a fetch
//! fails); an HS256 secret's key is
//! prepared once and its tokens checked by Lift with AWS-LC under the same rules (about
//! half the work of `jsonwebtoken::decode`, which prepares the key for every token). It
//! checks `exp` and `nbf` with leeway, and `iss` and `aud` when configured (a token
//! without them is then refused); accepted algorithms are pinned, and each key only
//! verifies its own algorithm, so `alg: none` and RS/HS confusion are refused. The claims
//! become a typed [`Principal`] in the context ([`Context::principal`]). A missing or
//! invalid token is a 401 with a `WWW-Authenticate` challenge; error bodies never echo the
//! token. When API Gateway's JWT authorizer already verified the token, its claims can be
//! trusted instead (configured explicitly). A warm function keeps the tokens it verified
//! for a while ([`JwtConfigBuilder::cache_verified_tokens`], on by default), answering each
//! as verifying it again would: never past its `exp` plus the leeway, never once a JWKS
//! refresh has dropped or changed its key.
//!
//! [`Context::principal`]: lift_core::Context::principal
//!
//! [`RequireLayer`] then demands scopes, roles or any rule on a route: 403
//! `insufficient_scope` when the principal falls short.
//!
//! ```
//! use jsonwebtoken::Algorithm;
//! use lift_core::{App, Context, Result, with_layer};
//! use lift_middleware::auth::{JwtAuthLayer, JwtConfig, RequireLayer};
//!
//! async fn me(ctx: Context) -> Result<String> {
//!     Ok(ctx.principal().and_then(|p| p.subject.clone()).unwrap_or_default())
//! }
//!
//! # fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! let config = JwtConfig::builder()
//!     .hs256_secret(None, b"a shared secret of at least 32 bytes!!")
//!     .algorithms(&[Algorithm::HS256])
//!     .issuers(&["https://id.example.com"])
//!     .audiences(&["orders"])
//!     .build()?;
//! let app = App::new()
//!     .get("/me", with_layer(me, RequireLayer::scopes(&["profile"])))
//!     .layer(JwtAuthLayer::new(config));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "jwt")]
mod hmac;
#[cfg(feature = "jwt")]
mod jwt;
#[cfg(feature = "jwt")]
mod keys;
mod require;
#[cfg(feature = "jwt")]
mod verified;

#[cfg(feature = "jwt")]
pub use jsonwebtoken::Algorithm;
#[cfg(feature = "jwt")]
pub use jwt::{JwtAuth, JwtAuthLayer, JwtConfig, JwtConfigBuilder, JwtVerifier, ResponseFuture};
#[cfg(feature = "jwt")]
pub use keys::{HttpJwks, JwksSource};
pub use lift_core::principal::{Principal, VerifiedBy};
pub use require::{Require, RequireLayer};
