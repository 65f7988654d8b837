//! Who the caller is, as authentication established it.

use std::sync::Arc;

use lift_core::Context;
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
/// they are standard. Authentication stores it in the [`Context`]'s extensions as an
/// `Arc<Principal>`, shared with the verified-token cache, and [`PrincipalExt::principal`]
/// reads it from there.
#[derive(Debug, Clone, PartialEq)]
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

/// Reads the [`Principal`] from a [`Context`].
pub trait PrincipalExt {
    /// The authenticated caller, once authentication ran.
    fn principal(&self) -> Option<&Principal>;
}

impl PrincipalExt for Context {
    fn principal(&self) -> Option<&Principal> {
        let extensions = self.extensions();
        match extensions.get::<Arc<Principal>>() {
            Some(shared) => Some(shared),
            // One inserted by hand, as a test may do.
            None => extensions.get::<Principal>(),
        }
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
    async fn the_principal_is_read_shared_or_inserted_by_hand() {
        use lift_core::testing::{TestApp, events};
        use lift_core::{App, BoxService, Json};

        fn principal(sub: &str) -> Principal {
            let mut claims = Map::new();
            claims.insert("sub".to_owned(), Value::from(sub));
            Principal::from_claims(claims, VerifiedBy::Lift)
        }
        let shared = Arc::new(principal("shared"));
        let kept = shared.clone();
        // `x-insert`: `plain` inserts a Principal, `both` also the shared one.
        let insert = tower::layer::layer_fn(move |inner: BoxService| {
            let shared = kept.clone();
            tower::util::MapRequest::new(inner, move |mut ctx: Context| {
                let insert = ctx.header("x-insert").map(str::to_owned);
                if insert.is_some() {
                    ctx.extensions_mut().insert(principal("by-hand"));
                }
                if insert.as_deref() == Some("both") {
                    ctx.extensions_mut().insert(shared.clone());
                }
                ctx
            })
        });
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = App::new()
            .get("/", move |ctx: Context| {
                let log = log.clone();
                async move {
                    let read = ctx.principal();
                    log.lock()
                        .expect("lock")
                        .push(read.map(|p| p as *const Principal as usize));
                    let subject = read.and_then(|p| p.subject.clone());
                    Ok::<_, lift_core::Error>(Json(subject))
                }
            })
            .layer(insert);
        let app = TestApp::new(app).expect("app");
        let subject = |insert: Option<&str>| {
            let mut event = events::http("GET", "/");
            if let Some(insert) = insert {
                event = event.header("x-insert", insert);
            }
            let app = &app;
            async move {
                let answer = app.http(event.v2()).await.expect("response");
                answer.json::<Option<String>>().expect("json")
            }
        };
        assert_eq!(subject(None).await, None);
        assert_eq!(subject(Some("plain")).await.as_deref(), Some("by-hand"));
        assert_eq!(
            subject(Some("both")).await.as_deref(),
            Some("shared"),
            "shared wins"
        );
        let seen = seen.lock().expect("lock");
        assert_eq!(
            seen[2],
            Some(Arc::as_ptr(&shared) as usize),
            "read in place"
        );
    }
}
