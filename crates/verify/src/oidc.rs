//! ID tokens of an upstream OpenID Connect provider (OIDC Core §3.1.3.7): signed with one of
//! the provider's published asymmetric keys, `iss` the provider's issuer exactly, `aud`
//! containing our client id (and `azp` our client id when there are several audiences), not
//! expired, not issued in the future, and carrying the `nonce` we sent.

use std::sync::Arc;

use gatehouse_tokens::{SignatureError, parse_jwt};
use serde_json::{Map, Value};

use crate::RemoteKeys;

const SKEW_SECS: i64 = 60;

/// Why an upstream ID token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("the provider's ID token is not a JWT")]
    Malformed,
    #[error("the provider's ID token uses algorithm {0:?}, which is not accepted")]
    Algorithm(String),
    #[error("the provider's ID token was issued by {got:?}, not {expected:?}")]
    Issuer { expected: String, got: String },
    #[error("the provider's ID token is for another client (aud {got}), not {expected:?}")]
    Audience { expected: String, got: String },
    #[error("the provider's ID token has expired")]
    Expired,
    #[error("the provider's ID token was issued in the future")]
    IssuedInFuture,
    #[error("the provider's ID token does not carry the nonce of this sign-in")]
    Nonce,
    #[error("the provider's ID token has no subject")]
    Subject,
    #[error("the provider's ID token is signed with a key it does not publish")]
    UnknownKey,
    #[error("the provider's ID token signature is invalid")]
    Signature,
    #[error("the provider's keys could not be fetched")]
    KeysUnavailable,
}

/// Verifies one provider's ID tokens for one client.
#[derive(Debug, Clone)]
pub struct OidcVerifier {
    issuer: String,
    client_id: String,
    keys: Arc<RemoteKeys>,
}

impl OidcVerifier {
    /// Tokens of `issuer` for `client_id`, with keys from `jwks_uri`.
    pub fn new(issuer: &str, client_id: &str, jwks_uri: &str, client: reqwest::Client) -> Self {
        Self {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            keys: Arc::new(RemoteKeys::new(jwks_uri.to_owned(), client)),
        }
    }

    /// Verifies `token` as of `now` (seconds); `nonce`, when given, must match.
    pub async fn verify(
        &self,
        token: &str,
        nonce: Option<&str>,
        now: i64,
    ) -> Result<Map<String, Value>, OidcError> {
        let jwt = parse_jwt(token.trim()).ok_or(OidcError::Malformed)?;
        let alg = jwt.header.alg.as_str();
        if alg == "none" || alg.starts_with("HS") {
            return Err(OidcError::Algorithm(alg.to_owned()));
        }
        let c = &jwt.claims;
        let iss = c.get("iss").and_then(Value::as_str).unwrap_or("");
        if iss != self.issuer {
            return Err(OidcError::Issuer {
                expected: self.issuer.clone(),
                got: iss.to_owned(),
            });
        }
        let audiences: Vec<&str> = match c.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let azp_ok = audiences.len() <= 1
            || c.get("azp").and_then(Value::as_str) == Some(self.client_id.as_str());
        if !audiences.contains(&self.client_id.as_str()) || !azp_ok {
            return Err(OidcError::Audience {
                expected: self.client_id.clone(),
                got: c.get("aud").map(ToString::to_string).unwrap_or_default(),
            });
        }
        let date =
            |name: &str| gatehouse_tokens::numeric_date(c, name).map_err(|_| OidcError::Expired);
        match date("exp")? {
            Some(exp) if now <= exp.saturating_add(SKEW_SECS) => {}
            _ => return Err(OidcError::Expired),
        }
        for name in ["iat", "nbf"] {
            if date(name)?.is_some_and(|t| t > now.saturating_add(SKEW_SECS)) {
                return Err(OidcError::IssuedInFuture);
            }
        }
        if let Some(expected) = nonce
            && c.get("nonce").and_then(Value::as_str) != Some(expected)
        {
            return Err(OidcError::Nonce);
        }
        if c.get("sub")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(OidcError::Subject);
        }
        let keys = self.keys.keys().await.ok_or(OidcError::KeysUnavailable)?;
        let result = match keys.verify(&jwt.header, jwt.signed.as_bytes(), &jwt.signature) {
            Err(SignatureError::NoKey) => {
                let kid = jwt.header.kid.clone().unwrap_or_default();
                match self.keys.refetch_for_unknown_kid(&kid).await {
                    Some(fresh) => fresh.verify(&jwt.header, jwt.signed.as_bytes(), &jwt.signature),
                    None => Err(SignatureError::NoKey),
                }
            }
            other => other,
        };
        match result {
            Ok(()) => Ok(jwt.claims.clone()),
            Err(SignatureError::NoKey) => Err(OidcError::UnknownKey),
            Err(SignatureError::Algorithm) => Err(OidcError::Algorithm(alg.to_owned())),
            Err(_) => Err(OidcError::Signature),
        }
    }
}
