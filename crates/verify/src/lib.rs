//! ID-token verification for applications, as firebase-admin's `verifyIdToken` does it: the
//! token must be an RS256 JWT with a `kid` naming one of the issuer's published keys, `aud` the
//! project id, `iss` `https://securetoken.google.com/<project>`, a non-empty `sub` of at most
//! 128 characters (the uid), and `exp` / `iat` / `auth_time` consistent with now. The keys come
//! from Gatehouse's identity server or from Google's real endpoint — the same paths — so one
//! binary works against either.
//!
//! Owns the checks and the cached remote key sets ([`RemoteKeys`], shared with the gateway), and
//! the verification of upstream OpenID Connect ID tokens ([`OidcVerifier`], for federation).
//!
//! Must not: keep state beyond those caches (no store, no sessions), mint tokens (that is the
//! issuer's, with `gatehouse-tokens`), or implement JWT cryptography itself (that is
//! `gatehouse-tokens`).

#![forbid(unsafe_code)]

mod oidc;
mod remote;

use std::sync::Arc;

use gatehouse_tokens::{SignatureError, parse_jwt};
use serde_json::{Map, Value};

pub use oidc::{OidcError, OidcVerifier};
pub use remote::{CacheOptions, RemoteKeys};

/// Where Google publishes the Secure Token keys.
pub const GOOGLE_KEYS_BASE: &str = "https://www.googleapis.com";
/// The path of the x509 certificates ID tokens are signed with (Google's and ours).
pub const SECURETOKEN_X509_PATH: &str =
    "/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com";

/// Clock skew tolerated on `iat` and `exp`.
const SKEW_SECS: i64 = 60;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the ID token is not a JWT (header.payload.signature)")]
    Malformed,
    #[error("the ID token has no \"kid\" header")]
    NoKid,
    #[error(
        "a custom token was given where an ID token is expected (exchange it with signInWithCustomToken first)"
    )]
    CustomToken,
    #[error("the ID token's algorithm is {0:?}; RS256 is expected")]
    Algorithm(String),
    #[error("the ID token's audience is {got:?}; expected the project id {expected:?}")]
    Audience { expected: String, got: String },
    #[error("the ID token's issuer is {got:?}; expected {expected:?}")]
    Issuer { expected: String, got: String },
    #[error("the ID token's subject (uid) must be a non-empty string of at most 128 characters")]
    Subject,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token was issued in the future or is not valid yet (iat, auth_time or nbf)")]
    IssuedInFuture,
    #[error("the ID token's kid {0:?} is not one of the issuer's published keys")]
    UnknownKey(String),
    #[error("the ID token's signature is invalid")]
    Signature,
    #[error("the issuer's public keys could not be fetched")]
    KeysUnavailable,
}

/// A verified ID token.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedIdToken {
    /// The user's id (`sub`).
    pub uid: String,
    pub claims: Map<String, Value>,
}

/// Verifies one project's ID tokens.
#[derive(Debug, Clone)]
pub struct IdTokenVerifier {
    project_id: String,
    issuer: String,
    keys: Arc<RemoteKeys>,
}

impl IdTokenVerifier {
    /// Tokens of `project_id`, with keys from `keys_base` + [`SECURETOKEN_X509_PATH`]
    /// (`keys_base` is the identity server's URL, or [`GOOGLE_KEYS_BASE`]).
    pub fn new(project_id: &str, keys_base: &str, client: reqwest::Client) -> Self {
        let uri = format!("{}{SECURETOKEN_X509_PATH}", keys_base.trim_end_matches('/'));
        Self {
            project_id: project_id.to_owned(),
            issuer: format!("https://securetoken.google.com/{project_id}"),
            keys: Arc::new(RemoteKeys::new(uri, client)),
        }
    }

    /// A different expected issuer (an identity server configured with its own).
    pub fn with_issuer(mut self, issuer: &str) -> Self {
        issuer.clone_into(&mut self.issuer);
        self
    }

    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// Verifies `token` now.
    pub async fn verify(&self, token: &str) -> Result<DecodedIdToken, VerifyError> {
        self.verify_at(token, now_secs()).await
    }

    /// Verifies `token` as of `now` (seconds since the Unix epoch).
    pub async fn verify_at(&self, token: &str, now: i64) -> Result<DecodedIdToken, VerifyError> {
        let jwt = parse_jwt(token.trim()).ok_or(VerifyError::Malformed)?;
        let claims = &jwt.claims;
        let aud = claims.get("aud").and_then(Value::as_str).unwrap_or("");
        let kid = match &jwt.header.kid {
            Some(k) => k.clone(),
            None if aud
                == "https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit" =>
            {
                return Err(VerifyError::CustomToken);
            }
            None => return Err(VerifyError::NoKid),
        };
        if jwt.header.alg != "RS256" {
            return Err(VerifyError::Algorithm(jwt.header.alg.clone()));
        }
        if aud != self.project_id {
            return Err(VerifyError::Audience {
                expected: self.project_id.clone(),
                got: aud.to_owned(),
            });
        }
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if iss != self.issuer {
            return Err(VerifyError::Issuer {
                expected: self.issuer.clone(),
                got: iss.to_owned(),
            });
        }
        let uid = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 128 => s.clone(),
            _ => return Err(VerifyError::Subject),
        };
        // NumericDates must be integers: a string or float `exp` is not "no expiry".
        let number = |name: &str| {
            gatehouse_tokens::numeric_date(claims, name).map_err(|_| VerifyError::Malformed)
        };
        match number("exp")? {
            Some(exp) if now <= exp.saturating_add(SKEW_SECS) => {}
            _ => return Err(VerifyError::Expired),
        }
        for name in ["iat", "auth_time", "nbf"] {
            if number(name)?.is_some_and(|t| t > now.saturating_add(SKEW_SECS)) {
                return Err(VerifyError::IssuedInFuture);
            }
        }
        let keys = self.keys.keys().await.ok_or(VerifyError::KeysUnavailable)?;
        let keys = if keys.has_kid(&kid) {
            keys
        } else {
            // Keys rotate: an unknown kid may be a new key.
            self.keys
                .refetch_for_unknown_kid(&kid)
                .await
                .filter(|k| k.has_kid(&kid))
                .ok_or_else(|| VerifyError::UnknownKey(kid.clone()))?
        };
        match keys.verify(&jwt.header, jwt.signed.as_bytes(), &jwt.signature) {
            Ok(()) => Ok(DecodedIdToken {
                uid,
                claims: jwt.claims.clone(),
            }),
            Err(SignatureError::NoKey) => Err(VerifyError::UnknownKey(kid)),
            Err(_) => Err(VerifyError::Signature),
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
