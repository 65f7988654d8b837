//! Who the caller is, as authentication established it.

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
/// they are standard. Stored in the [`Context`]'s extensions.
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
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let mut scopes = strings(claims.get("scope"));
        scopes.extend(strings(claims.get("scp")));
        let mut roles = strings(claims.get("roles"));
        roles.extend(strings(claims.get("cognito:groups")));
        Principal {
            subject: text("sub"),
            issuer: text("iss"),
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
        self.extensions().get::<Principal>()
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
    }
}
