//! The IAM Service Account Credentials API (`iamcredentials.googleapis.com/v1`): short-lived
//! tokens and signatures for a service account, for callers holding
//! `roles/iam.serviceAccountTokenCreator` on it (directly or through a delegation chain).

use std::sync::Arc;

use base64::Engine as _;
use gatehouse_store::ServiceAccountRecord;
use gatehouse_tokens::{Claims, encode_rs256};
use serde_json::Value;

use crate::{Error, Iam, Principal, Result, account_resource};

/// A JWT signed with a service account's system-managed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedJwt {
    pub key_id: String,
    pub signed_jwt: String,
}

/// Longest `exp` a signJwt payload may carry, from now.
const MAX_SIGN_JWT_SECS: i64 = 12 * 3600;

/// The account named by `projects/-/serviceAccounts/{email or unique id}`.
fn account_id_of(name: &str) -> Result<&str> {
    let rest = name
        .strip_prefix("projects/")
        .and_then(|r| r.split_once("/serviceAccounts/"))
        .map(|(_, a)| a)
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "Invalid form of account ID {name}. Should be \
                 [Gaia ID |Email |Unique ID |] of the account"
            ))
        })?;
    Ok(rest)
}

impl Iam {
    /// Resolves the target account and checks the caller may act for it with `permission`:
    /// directly, or through `delegates` (each hop holding `implicitDelegation` on the next, the
    /// last one holding `permission` on the target).
    async fn acting_for(
        &self,
        caller: &Principal,
        name: &str,
        delegates: &[String],
        permission: &str,
    ) -> Result<Arc<ServiceAccountRecord>> {
        let id = account_id_of(name)?;
        let denied = || Error::denied(permission, name);
        let target = self.account(id).await?.ok_or_else(denied)?;
        let mut actor = caller.clone();
        for d in delegates {
            let hop = self.account(account_id_of(d)?).await?.ok_or_else(denied)?;
            let resource = account_resource(&hop.project_id, &hop.email);
            if !self
                .check(&actor, "iam.serviceAccounts.implicitDelegation", &resource)
                .await?
            {
                return Err(denied());
            }
            actor = Principal::ServiceAccount {
                email: hop.email.clone(),
                unique_id: hop.unique_id.clone(),
            };
        }
        let resource = account_resource(&target.project_id, &target.email);
        if !self.check(&actor, permission, &resource).await? {
            return Err(denied());
        }
        if target.disabled {
            return Err(Error::FailedPrecondition(format!(
                "Service account {} is disabled.",
                target.email
            )));
        }
        Ok(target)
    }

    /// `generateIdToken`.
    pub async fn generate_id_token(
        &self,
        caller: &Principal,
        name: &str,
        delegates: &[String],
        audience: &str,
        include_email: bool,
        email_azp: bool,
    ) -> Result<String> {
        let target = self
            .acting_for(
                caller,
                name,
                delegates,
                "iam.serviceAccounts.getOpenIdToken",
            )
            .await?;
        if audience.is_empty() {
            return Err(Error::InvalidArgument("Audience must not be empty.".into()));
        }
        self.mint_id_token(&target, audience, include_email, email_azp)
    }

    /// `generateAccessToken`: the token and its expiry (RFC 3339, whole seconds).
    pub async fn generate_access_token(
        &self,
        caller: &Principal,
        name: &str,
        delegates: &[String],
        scope: &[String],
        lifetime_secs: i64,
    ) -> Result<(String, String)> {
        let target = self
            .acting_for(
                caller,
                name,
                delegates,
                "iam.serviceAccounts.getAccessToken",
            )
            .await?;
        if scope.is_empty() {
            return Err(Error::InvalidArgument("Scope must not be empty.".into()));
        }
        if !(1..=3600).contains(&lifetime_secs) {
            return Err(Error::InvalidArgument(format!(
                "The lifetime {lifetime_secs}s is outside 1s to 3600s."
            )));
        }
        let (token, _) = self.mint_access_token(&target, scope, None, lifetime_secs)?;
        let expires = gatehouse_tokens::rfc3339(self.now_ms() + lifetime_secs * 1000, true);
        Ok((token, expires))
    }

    /// `signJwt`: `payload` (JSON claims text) signed RS256 with the account's system key.
    pub async fn sign_jwt(
        &self,
        caller: &Principal,
        name: &str,
        delegates: &[String],
        payload: &str,
    ) -> Result<SignedJwt> {
        let target = self
            .acting_for(caller, name, delegates, "iam.serviceAccounts.signJwt")
            .await?;
        let claims: Claims = match serde_json::from_str::<Value>(payload) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(Error::InvalidArgument(
                    "Payload must be a JSON object of claims.".into(),
                ));
            }
        };
        if let Some(exp) = claims.get("exp") {
            let ok = exp
                .as_i64()
                .is_some_and(|e| e <= self.now_secs() + MAX_SIGN_JWT_SECS);
            if !ok {
                return Err(Error::InvalidArgument(
                    "The exp claim must be a number at most 12 hours in the future.".into(),
                ));
            }
        }
        let key = self.system_key(&target).await?;
        let signed_jwt = encode_rs256(&key, &claims).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(SignedJwt {
            key_id: key.kid().to_owned(),
            signed_jwt,
        })
    }

    /// `signBlob`: an RSASSA-PKCS1-v1_5 SHA-256 signature over `payload` with the account's
    /// system key. Returns the key id and the signature.
    pub async fn sign_blob(
        &self,
        caller: &Principal,
        name: &str,
        delegates: &[String],
        payload: &[u8],
    ) -> Result<(String, Vec<u8>)> {
        let target = self
            .acting_for(caller, name, delegates, "iam.serviceAccounts.signBlob")
            .await?;
        let key = self.system_key(&target).await?;
        let sig = key
            .sign_rs256(payload)
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok((key.kid().to_owned(), sig))
    }
}

/// Decodes a base64 `bytes` field (standard alphabet with padding, as proto3 JSON sends; the
/// URL-safe alphabet is accepted too).
pub fn decode_bytes(text: &str) -> Result<Vec<u8>> {
    let t = text.trim();
    base64::engine::general_purpose::STANDARD
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(t))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
        .map_err(|_| Error::InvalidArgument("Invalid base64 in a bytes field.".into()))
}
