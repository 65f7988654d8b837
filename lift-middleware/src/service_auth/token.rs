//! Signed service tokens: `<service>.<unix-expiry>.<hex HMAC-SHA256 of "service.expiry">`,
//! or, naming the service they are for, `<service>.<unix-expiry>.<audience>.<hex HMAC-SHA256
//! of "service.expiry.audience">`.
//!
//! The HMAC is aws-lc-rs's, reached through `jsonwebtoken`'s aws-lc provider (the crate's
//! one HMAC implementation); verification compares in constant time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use crate::error::{ConfigError, check};

/// The header a caller sends its service token in.
pub const SERVICE_TOKEN_HEADER: &str = "x-lift-service-token";

/// The shortest shared secret accepted: the HMAC-SHA256 output size.
pub(crate) const MIN_SECRET_LEN: usize = 32;
const MAX_SERVICE_NAME_LEN: usize = 128;
const MAX_TOKEN_LEN: usize = MAX_SERVICE_NAME_LEN + 1 + 20 + 1 + MAX_SERVICE_NAME_LEN + 1 + 64;
const SIGNATURE_LEN: usize = 32;

/// Minting a service token failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceTokenError {
    /// The service name is empty, longer than 128 bytes, or not `[A-Za-z0-9_-]`.
    #[error("invalid service name: 1 to 128 characters of `A-Z a-z 0-9 _ -`")]
    InvalidServiceName,
    /// The expiry is before 1970.
    #[error("the expiry is before the Unix epoch")]
    ExpiryBeforeEpoch,
    /// The crypto backend refused to sign (not expected for HMAC).
    #[error("the HMAC could not be computed")]
    Crypto,
}

/// Mints service tokens for the `x-lift-service-token` header, on the calling side.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use lift_middleware::service_auth::ServiceTokenSigner;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let signer = ServiceTokenSigner::new(b"0123456789abcdef0123456789abcdef")?;
/// let token = signer.sign("billing", SystemTime::now() + Duration::from_secs(300))?;
/// assert!(token.starts_with("billing."));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ServiceTokenSigner {
    key: EncodingKey,
}

impl std::fmt::Debug for ServiceTokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceTokenSigner").finish_non_exhaustive()
    }
}

impl ServiceTokenSigner {
    /// A signer with the shared `secret`.
    ///
    /// # Errors
    /// [`ConfigError::OutOfRange`] (`shared_secret`) for a secret under 32 bytes.
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let secret = secret.as_ref();
        check_secret(secret)?;
        Ok(ServiceTokenSigner {
            key: EncodingKey::from_secret(secret),
        })
    }

    /// A token naming `service`, valid until `expires_at` (whole seconds, rounded down), at
    /// any function that accepts the secret and checks no audience; prefer
    /// [`ServiceTokenSigner::sign_for`].
    ///
    /// # Errors
    /// [`ServiceTokenError`] for an invalid service name or an expiry before 1970.
    pub fn sign(&self, service: &str, expires_at: SystemTime) -> Result<String, ServiceTokenError> {
        self.mint(service, None, expires_at)
    }

    /// A token naming `service` as the caller and `audience` as the service it is for,
    /// valid until `expires_at` (whole seconds, rounded down). A function whose
    /// configuration names its own service
    /// ([`ServiceAuthConfigBuilder::audience`](super::ServiceAuthConfigBuilder::audience))
    /// refuses a token for another, so a token seen by one service cannot be replayed at
    /// another that accepts the same secret.
    ///
    /// # Errors
    /// [`ServiceTokenError`] for an invalid service name (either of them) or an expiry
    /// before 1970.
    pub fn sign_for(
        &self,
        service: &str,
        audience: &str,
        expires_at: SystemTime,
    ) -> Result<String, ServiceTokenError> {
        self.mint(service, Some(audience), expires_at)
    }

    fn mint(
        &self,
        service: &str,
        audience: Option<&str>,
        expires_at: SystemTime,
    ) -> Result<String, ServiceTokenError> {
        if !valid_service_name(service) || !audience.is_none_or(valid_service_name) {
            return Err(ServiceTokenError::InvalidServiceName);
        }
        let expiry = expires_at
            .duration_since(UNIX_EPOCH)
            .map_err(|_| ServiceTokenError::ExpiryBeforeEpoch)?
            .as_secs();
        let message = match audience {
            Some(audience) => format!("{service}.{expiry}.{audience}"),
            None => format!("{service}.{expiry}"),
        };
        let signer = (DEFAULT_PROVIDER.signer_factory)(&Algorithm::HS256, &self.key)
            .map_err(|_| ServiceTokenError::Crypto)?;
        let signature = signer
            .try_sign(message.as_bytes())
            .map_err(|_| ServiceTokenError::Crypto)?;
        Ok(format!("{message}.{}", hex(&signature)))
    }
}

pub(crate) fn check_secret(secret: &[u8]) -> Result<(), ConfigError> {
    check(
        secret.len() >= MIN_SECRET_LEN,
        "shared_secret",
        "at least 32 bytes",
    )
}

/// Why a presented token was refused; the reasons are client-safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    Malformed,
    BadSignature,
    Expired,
    TooLongLived,
    /// For another service, or for none where this one requires its name.
    WrongAudience,
}

impl Rejection {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Rejection::Malformed => "the service token is malformed",
            Rejection::BadSignature => "the service token's signature does not verify",
            Rejection::Expired => "the service token has expired",
            Rejection::TooLongLived => "the service token's expiry is too far in the future",
            Rejection::WrongAudience => "the service token is not for this service",
        }
    }
}

/// Verifies `token` against any of `keys` that may sign for the service it names (a key
/// bound to a name signs for that name alone) at `now`, and, when `audience` is given, that
/// the token is for it; returns the service name.
pub(crate) fn verify<'t>(
    token: &'t str,
    keys: &[(Option<String>, DecodingKey)],
    now: SystemTime,
    max_lifetime: Duration,
    audience: Option<&str>,
) -> Result<&'t str, Rejection> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Rejection::Malformed);
    }
    let parts: Vec<&str> = token.splitn(5, '.').collect();
    let (service, expiry_text, for_service, signature) = match parts[..] {
        [service, expiry, signature] => (service, expiry, None, signature),
        [service, expiry, for_service, signature] => {
            (service, expiry, Some(for_service), signature)
        }
        _ => return Err(Rejection::Malformed),
    };
    if !valid_service_name(service)
        || !for_service.is_none_or(valid_service_name)
        || expiry_text.is_empty()
        || expiry_text.len() > 20
        || !expiry_text.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Rejection::Malformed);
    }
    let expiry: u64 = expiry_text.parse().map_err(|_| Rejection::Malformed)?;
    let signature = unhex(signature).ok_or(Rejection::Malformed)?;
    // The signed message is the token up to its last dot, exactly as sent.
    let message = token
        .get(..token.len() - SIGNATURE_LEN * 2 - 1)
        .ok_or(Rejection::Malformed)?;
    if !keys
        .iter()
        .filter(|(caller, _)| caller.as_deref().is_none_or(|name| name == service))
        .any(|(_, key)| hmac_verifies(key, message, &signature))
    {
        return Err(Rejection::BadSignature);
    }
    if audience.is_some_and(|audience| for_service != Some(audience)) {
        return Err(Rejection::WrongAudience);
    }
    let now = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    if expiry <= now {
        return Err(Rejection::Expired);
    }
    if expiry - now > max_lifetime.as_secs() {
        return Err(Rejection::TooLongLived);
    }
    Ok(service)
}

fn hmac_verifies(key: &DecodingKey, message: &str, signature: &Vec<u8>) -> bool {
    match (DEFAULT_PROVIDER.verifier_factory)(&Algorithm::HS256, key) {
        Ok(verifier) => verifier.verify(message.as_bytes(), signature).is_ok(),
        Err(_) => false,
    }
}

/// Service names: 1 to 128 bytes of `[A-Za-z0-9_-]`, so they never contain the `.`
/// separator and never look like an ARN.
pub(crate) fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVICE_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != SIGNATURE_LEN * 2 {
        return None;
    }
    fn nibble(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}
