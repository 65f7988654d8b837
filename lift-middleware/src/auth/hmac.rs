//! Tokens signed with a shared secret (HS256), checked with a key prepared once.
//!
//! `jsonwebtoken::decode` prepares the HMAC key again for every token (the secret hashed
//! into its inner and outer pads), reads the header twice more after the caller read it
//! once, and reads the claims twice (once for the caller, once for its own checks): about
//! half of what a token's check costs. For a key given as a shared secret, Lift checks the
//! signature with the key prepared when the configuration was built (AWS-LC through
//! `aws-lc-rs`, the backend `jsonwebtoken` uses here, comparing in constant time) and reads
//! the claims once, checking them against the same `jsonwebtoken::Validation` by the same
//! rules; a test holds the two paths to the same answer token by token. RSA and EC keys
//! keep going through `jsonwebtoken`.

use std::collections::HashSet;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use serde_json::{Map, Value};

/// Checks `token`'s signature with `key` and its claims against `validation` at `now`
/// (seconds since the epoch); the claims when both hold. The caller has read the header and
/// chosen the key for its `alg` and `kid`.
pub(crate) fn verify(
    token: &str,
    key: &hmac::Key,
    validation: &Validation,
    now: u64,
) -> Result<Map<String, Value>, ErrorKind> {
    let (message, signature) = token.rsplit_once('.').ok_or(ErrorKind::InvalidToken)?;
    let (_, payload) = message.rsplit_once('.').ok_or(ErrorKind::InvalidToken)?;
    // HS512 tags are the longest: 64 bytes. A longer signature cannot verify.
    let mut tag = [0_u8; 64];
    let length = match URL_SAFE_NO_PAD.decode_slice(signature, &mut tag) {
        Ok(length) => length,
        Err(base64::DecodeSliceError::OutputSliceTooSmall) => {
            return Err(ErrorKind::InvalidSignature);
        }
        Err(base64::DecodeSliceError::DecodeError(e)) => return Err(ErrorKind::Base64(e)),
    };
    hmac::verify(key, message.as_bytes(), &tag[..length])
        .map_err(|_| ErrorKind::InvalidSignature)?;
    let json = URL_SAFE_NO_PAD.decode(payload).map_err(ErrorKind::Base64)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&json).map_err(|e| ErrorKind::Json(e.into()))?;
    check(&claims, validation, now)?;
    Ok(claims)
}

/// A registered claim as read for checking.
enum Claim<T> {
    Absent,
    Malformed,
    Present(T),
}

/// A `NumericDate`: a non-negative integer, or a finite non-negative float rounded.
fn numeric(value: Option<&Value>) -> Claim<u64> {
    match value {
        None => Claim::Absent,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(whole), _) => Claim::Present(whole),
            (None, Some(float))
                if n.is_f64() && float.is_finite() && float >= 0.0 && float < u64::MAX as f64 =>
            {
                Claim::Present(float.round() as u64)
            }
            _ => Claim::Malformed,
        },
        Some(_) => Claim::Malformed,
    }
}

/// A string, or a list of strings (`iss` and `aud` may be either), read in place.
fn names(value: Option<&Value>) -> Claim<&Value> {
    match value {
        None | Some(Value::Null) => Claim::Absent,
        Some(one @ Value::String(_)) => Claim::Present(one),
        Some(list @ Value::Array(items)) if items.iter().all(Value::is_string) => {
            Claim::Present(list)
        }
        Some(_) => Claim::Malformed,
    }
}

/// One of the claim's names is in `accepted`.
fn names_one_of(value: &Value, accepted: &HashSet<String>) -> bool {
    match value {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .any(|n| accepted.contains(n)),
        other => other.as_str().is_some_and(|n| accepted.contains(n)),
    }
}

/// `jsonwebtoken`'s checks of the registered claims, in its order: required claims, the
/// format of `exp` and `nbf`, expiry, not-before, issuer, audience.
fn check(claims: &Map<String, Value>, v: &Validation, now: u64) -> Result<(), ErrorKind> {
    let exp = numeric(claims.get("exp"));
    let nbf = numeric(claims.get("nbf"));
    let iss = names(claims.get("iss"));
    let aud = names(claims.get("aud"));
    for (present, name) in [
        (matches!(exp, Claim::Present(_)), "exp"),
        (matches!(nbf, Claim::Present(_)), "nbf"),
        (matches!(iss, Claim::Present(_)), "iss"),
        (matches!(aud, Claim::Present(_)), "aud"),
    ] {
        if !present && v.required_spec_claims.contains(name) {
            return Err(ErrorKind::MissingRequiredClaim(name.to_owned()));
        }
    }
    if v.validate_exp && matches!(exp, Claim::Malformed) {
        return Err(ErrorKind::InvalidClaimFormat("exp".to_owned()));
    }
    if v.validate_nbf && matches!(nbf, Claim::Malformed) {
        return Err(ErrorKind::InvalidClaimFormat("nbf".to_owned()));
    }
    if let Claim::Present(exp) = exp
        && v.validate_exp
        && exp < now.saturating_sub(v.leeway)
    {
        return Err(ErrorKind::ExpiredSignature);
    }
    if let Claim::Present(nbf) = nbf
        && v.validate_nbf
        && nbf > now.saturating_add(v.leeway)
    {
        return Err(ErrorKind::ImmatureSignature);
    }
    if let (Claim::Present(iss), Some(accepted)) = (&iss, &v.iss)
        && !names_one_of(iss, accepted)
    {
        return Err(ErrorKind::InvalidIssuer);
    }
    if !v.validate_aud {
        return Ok(());
    }
    match (&aud, &v.aud) {
        (Claim::Present(aud), Some(accepted)) if !names_one_of(aud, accepted) => {
            Err(ErrorKind::InvalidAudience)
        }
        // An audience the function does not declare it is.
        (Claim::Present(_), None) => Err(ErrorKind::InvalidAudience),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"lift-unit-secret-of-32-bytes-or-more";
    const NOW: u64 = 1_800_000_000;

    /// The rules `JwtVerifier` writes for issuers and audiences, with 60 s of leeway.
    fn rules() -> Validation {
        let mut v = Validation::new(jsonwebtoken::Algorithm::HS256);
        v.leeway = 60;
        v.validate_nbf = true;
        v.set_issuer(&["https://id.example.com"]);
        v.set_audience(&["orders", "payments"]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v
    }

    fn token(claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let message = format!("{header}.{payload}");
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
        let tag = hmac::sign(&key, message.as_bytes());
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    fn run(claims: Value) -> Result<Map<String, Value>, ErrorKind> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
        verify(&token(&claims), &key, &rules(), NOW)
    }

    fn base() -> Value {
        json!({"sub": "u", "iss": "https://id.example.com", "aud": "orders", "exp": NOW + 10})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut claims = base();
        claims[field] = value;
        claims
    }

    #[test]
    fn exp_and_nbf_hold_to_the_second_with_leeway() {
        assert!(
            run(with("exp", json!(NOW - 60))).is_ok(),
            "exp at now - leeway"
        );
        assert!(matches!(
            run(with("exp", json!(NOW - 61))),
            Err(ErrorKind::ExpiredSignature)
        ));
        assert!(
            run(with("nbf", json!(NOW + 60))).is_ok(),
            "nbf at now + leeway"
        );
        assert!(matches!(
            run(with("nbf", json!(NOW + 61))),
            Err(ErrorKind::ImmatureSignature)
        ));
        assert!(
            run(with("exp", json!((NOW - 60) as f64 + 0.4))).is_ok(),
            "a float, rounded"
        );
        assert!(matches!(
            run(with("nbf", json!("soon"))),
            Err(ErrorKind::InvalidClaimFormat(_))
        ));
        for exp in [json!(-1), json!("later"), json!(null), json!(1e300)] {
            assert!(
                matches!(
                    run(with("exp", exp.clone())),
                    Err(ErrorKind::MissingRequiredClaim(_))
                ),
                "{exp}"
            );
        }
    }

    #[test]
    fn issuer_and_audience_may_be_lists_and_must_name_an_accepted_one() {
        assert!(run(with("aud", json!(["billing", "payments"]))).is_ok());
        assert!(run(with("iss", json!(["https://id.example.com"]))).is_ok());
        assert!(matches!(
            run(with("aud", json!(["billing"]))),
            Err(ErrorKind::InvalidAudience)
        ));
        assert!(matches!(
            run(with("aud", json!([]))),
            Err(ErrorKind::InvalidAudience)
        ));
        assert!(matches!(
            run(with("iss", json!("https://evil.example.com"))),
            Err(ErrorKind::InvalidIssuer)
        ));
        assert!(matches!(
            run(with("aud", json!(["orders", 7]))),
            Err(ErrorKind::MissingRequiredClaim(_))
        ));
        let mut open = Validation::new(jsonwebtoken::Algorithm::HS256);
        open.leeway = 0;
        open.validate_aud = false;
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
        let anything = json!({"iss": 5, "aud": {"x": 1}, "exp": NOW});
        assert!(verify(&token(&anything), &key, &open, NOW).is_ok());
    }

    #[test]
    fn a_signature_that_is_not_the_keys_is_refused_before_the_claims_are_read() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
        let good = token(&base());
        let (message, _) = good.rsplit_once('.').expect("three parts");
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"another secret of 32 bytes or more");
        let forged = format!(
            "{message}.{}",
            URL_SAFE_NO_PAD.encode(hmac::sign(&other, message.as_bytes()).as_ref())
        );
        let long = format!("{message}.{}", URL_SAFE_NO_PAD.encode([7_u8; 80]));
        let short = format!("{message}.{}", URL_SAFE_NO_PAD.encode([7_u8; 8]));
        for (name, token) in [("forged", &forged), ("long", &long), ("short", &short)] {
            assert!(
                matches!(
                    verify(token, &key, &rules(), NOW),
                    Err(ErrorKind::InvalidSignature)
                ),
                "{name}"
            );
        }
        let expired_and_forged = {
            let t = token(&with("exp", json!(1)));
            let (m, _) = t.rsplit_once('.').expect("three parts");
            format!(
                "{m}.{}",
                URL_SAFE_NO_PAD.encode(hmac::sign(&other, m.as_bytes()).as_ref())
            )
        };
        assert!(matches!(
            verify(&expired_and_forged, &key, &rules(), NOW),
            Err(ErrorKind::InvalidSignature)
        ));
        assert!(matches!(
            verify(&format!("{message}.a*b"), &key, &rules(), NOW),
            Err(ErrorKind::Base64(_))
        ));
        assert!(verify("no-dots", &key, &rules(), NOW).is_err());
        assert_eq!(
            verify(&good, &key, &rules(), NOW).expect("valid")["sub"],
            "u"
        );
    }
}
