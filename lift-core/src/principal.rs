//! Who the caller is, as authentication established it: the [`Principal`] that
//! authentication middleware (lift-middleware's `JwtAuthLayer`) sets on the
//! [`Context`](crate::Context) and handlers read with
//! [`Context::principal`](crate::Context::principal).

use serde_json::{Map, Value};

/// How a [`Principal`] was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifiedBy {
    /// Lift verified the token's signature and claims.
    Lift,
    /// API Gateway's JWT authorizer verified it; Lift trusted its claims (configured).
    ApiGateway,
}

/// The authenticated caller: subject, issuer, scopes, roles and every claim, typed where
/// they are standard. Authentication sets it with [`Context::set_principal`] (shared, so
/// that a cache of verified tokens hands out the same one) and [`Context::principal`]
/// reads it.
///
/// [`Context`]: crate::Context
/// [`Context::set_principal`]: crate::Context::set_principal
/// [`Context::principal`]: crate::Context::principal
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Principal {
    /// The `sub` claim.
    pub subject: Option<String>,
    /// The `iss` claim.
    pub issuer: Option<String>,
    /// Scopes, from `scope` (space-separated) or `scp` (a list or a string).
    pub scopes: Vec<String>,
    /// Roles, from `roles` or `cognito:groups`.
    pub roles: Vec<String>,
    /// Every claim, as sent.
    pub claims: Map<String, Value>,
    /// Who verified the token.
    pub verified_by: VerifiedBy,
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(text)) => text
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

impl Principal {
    /// A principal from a set of claims.
    pub fn from_claims(claims: Map<String, Value>, verified_by: VerifiedBy) -> Self {
        // One pass over the claims (a token carries a handful) rather than a lookup per
        // standard claim.
        let [mut sub, mut iss, mut scope, mut scp, mut roles, mut groups] = [None; 6];
        for (name, value) in &claims {
            let slot = match name.as_str() {
                "sub" => &mut sub,
                "iss" => &mut iss,
                "scope" => &mut scope,
                "scp" => &mut scp,
                "roles" => &mut roles,
                "cognito:groups" => &mut groups,
                _ => continue,
            };
            *slot = Some(value);
        }
        let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
        let mut scopes = strings(scope);
        scopes.extend(strings(scp));
        let mut roles = strings(roles);
        roles.extend(strings(groups));
        Principal {
            subject: text(sub),
            issuer: text(iss),
            scopes,
            roles,
            claims,
            verified_by,
        }
    }

    /// A claim by name.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }

    /// A string claim by name.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// Whether the principal holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether the principal holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_roles_from_the_usual_claims() {
        let claims = serde_json::json!({
            "sub": "u1", "iss": "https://id.example.com",
            "scope": "orders:read orders:write", "scp": ["admin"],
            "cognito:groups": ["staff"], "roles": "auditor"
        });
        let Value::Object(map) = claims else {
            panic!("object")
        };
        let p = Principal::from_claims(map, VerifiedBy::Lift);
        assert_eq!(p.subject.as_deref(), Some("u1"));
        assert!(p.has_scope("orders:write") && p.has_scope("admin"));
        assert!(p.has_role("staff") && p.has_role("auditor"));
        assert!(!p.has_role("root"));
        assert_eq!(
            p.scopes,
            ["orders:read", "orders:write", "admin"],
            "scope, then scp"
        );
        assert_eq!(p.roles, ["auditor", "staff"], "roles, then cognito:groups");
        assert_eq!(p.issuer.as_deref(), Some("https://id.example.com"));
    }

    #[tokio::test]
    async fn the_principal_set_by_middleware_is_read_in_place() {
        use std::sync::{Arc, Mutex};

        use crate::testing::{TestApp, events};
        use crate::{App, BoxService, Context, Json};

        let mut claims = Map::new();
        claims.insert("sub".to_owned(), Value::from("user-1"));
        let shared = Arc::new(Principal::from_claims(claims, VerifiedBy::Lift));
        let kept = shared.clone();
        // Sets the principal when `x-sign-in` is sent, as authentication would.
        let sign_in = tower::layer::layer_fn(move |inner: BoxService| {
            let shared = kept.clone();
            tower::util::MapRequest::new(inner, move |mut ctx: Context| {
                if ctx.header("x-sign-in").is_some() {
                    ctx.set_principal(shared.clone());
                }
                ctx
            })
        });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = App::new()
            .get("/", move |ctx: Context| {
                let log = log.clone();
                async move {
                    let read = ctx.principal();
                    let at = read.map(|p| p as *const Principal as usize);
                    log.lock().expect("lock").push(at);
                    Ok::<_, crate::Error>(Json(read.and_then(|p| p.subject.clone())))
                }
            })
            .layer(sign_in);
        let app = TestApp::new(app).expect("app");
        let anonymous = app
            .http(events::http("GET", "/").v2())
            .await
            .expect("answer");
        assert_eq!(anonymous.json::<Option<String>>().expect("json"), None);
        let signed_in = events::http("GET", "/").header("x-sign-in", "1").v2();
        let signed_in = app.http(signed_in).await.expect("answer");
        assert_eq!(
            signed_in.json::<Option<String>>().expect("json").as_deref(),
            Some("user-1")
        );
        let seen = seen.lock().expect("lock");
        assert_eq!(seen[0], None);
        assert_eq!(
            seen[1],
            Some(Arc::as_ptr(&shared) as usize),
            "read in place"
        );
    }
}
