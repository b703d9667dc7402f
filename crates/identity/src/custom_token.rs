//! `accounts:signInWithCustomToken`: custom tokens as each project mode accepts them.

use gatehouse_store::UserRecord;
use gatehouse_tokens::decode_unverified;
use serde_json::{Map, Value};

use crate::accounts::SignedIn;
use crate::config::Mode;
use crate::user::{check_claim_names, new_account};
use crate::{Caller, Error, Identity, Result, SignInWithCustomTokenRequest};

/// The audience of Admin-SDK custom tokens.
pub const CUSTOM_TOKEN_AUDIENCE: &str =
    "https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit";

impl Identity {
    /// `accounts:signInWithCustomToken`.
    pub async fn sign_in_with_custom_token(
        &self,
        caller: &Caller,
        req: SignInWithCustomTokenRequest,
    ) -> Result<SignedIn> {
        let project = caller.project.clone();
        let pid = project.project_id.as_str();
        let token = req
            .token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::code("MISSING_CUSTOM_TOKEN"))?;
        self.inner.limits.sign_in(caller.ip)?;
        let claims = self.check_custom_token(caller, token).await?;
        let uid = match claims.get("uid").or_else(|| claims.get("user_id")) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(Error::code("MISSING_IDENTIFIER")),
        };
        if uid.chars().count() > 128 {
            return Err(Error::detail(
                "INVALID_CUSTOM_TOKEN",
                "uid must be at most 128 characters",
            ));
        }
        let token_tenant = claims
            .get("tenant_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let tenant = req.tenant_id.clone().unwrap_or_default();
        if !token_tenant.is_empty() && token_tenant != tenant {
            return Err(Error::code("TENANT_ID_MISMATCH"));
        }
        let extra = match claims.get("claims") {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => {
                check_claim_names(map)?;
                if Value::Object(map.clone()).to_string().len() > 1000 {
                    return Err(Error::code("CLAIMS_TOO_LARGE"));
                }
                Some(map.clone())
            }
            Some(_) => return Err(Error::code("INVALID_CLAIMS")),
        };
        let now = self.now_ms();
        let existing = self.inner.store.user(pid, &tenant, &uid).await?;
        let (user, is_new_user) = match existing {
            Some(u) => {
                if u.disabled {
                    return Err(Error::code("USER_DISABLED"));
                }
                let u = self
                    .modify_user(pid, &tenant, &uid, |u| {
                        u.last_login_at = Some(now);
                        u.last_refresh_at = Some(now);
                        u.custom_auth = true;
                        Ok(())
                    })
                    .await?;
                (u, false)
            }
            None => {
                let u = UserRecord {
                    custom_auth: true,
                    ..new_account(pid, &tenant, uid.clone(), now, true)
                };
                match self.insert_user(&u).await {
                    Ok(()) => (u, true),
                    // Two first sign-ins raced: the other one created the account.
                    Err(e) if e.is("DUPLICATE_LOCAL_ID") => {
                        let u = self
                            .inner
                            .store
                            .user(pid, &tenant, &uid)
                            .await?
                            .ok_or_else(|| Error::code("USER_NOT_FOUND"))?;
                        (u, false)
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let tokens = self
            .issue_tokens(&project, &user, "custom", extra.as_ref())
            .await?;
        Ok(SignedIn {
            user,
            tokens: Some(tokens),
            is_new_user,
        })
    }

    /// Checks a custom token as the project's mode requires; returns its claims.
    async fn check_custom_token(&self, caller: &Caller, token: &str) -> Result<Map<String, Value>> {
        let project = &caller.project;
        let invalid = |why: &str| Error::detail("INVALID_CUSTOM_TOKEN", why.to_owned());
        if project.mode == Mode::Development && token.trim_start().starts_with('{') {
            return match serde_json::from_str::<Value>(token) {
                Ok(Value::Object(map)) => Ok(map),
                _ => Err(invalid("The custom token is not valid JSON.")),
            };
        }
        let (header, claims) = decode_unverified(token)
            .map_err(|_| invalid("The custom token format is incorrect."))?;
        if claims.get("aud").and_then(Value::as_str) != Some(CUSTOM_TOKEN_AUDIENCE) {
            return Err(invalid("The custom token has the wrong audience."));
        }
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // Configured signers first, else the keys IAM knows for an account of the project.
        let from_iam;
        let signers = match project.custom_token_signers.get(issuer) {
            Some(s) => Some(s),
            None => {
                from_iam = match &self.inner.authority {
                    Some(a) if header.alg == "RS256" => {
                        a.custom_token_keys(issuer, &project.project_id).await
                    }
                    _ => Vec::new(),
                };
                (!from_iam.is_empty()).then_some(&from_iam)
            }
        };
        if project.mode == Mode::Development && (header.alg == "none" || signers.is_none()) {
            // The emulator's leniency: unsigned (or unknown-signer) custom tokens are accepted.
            return Ok(claims);
        }
        if header.alg != "RS256" {
            return Err(invalid("The custom token must be signed with RS256."));
        }
        let signers = signers.ok_or_else(|| {
            invalid("The custom token was not signed by a trusted service account.")
        })?;
        // Admin SDKs sign custom tokens without a kid: try each key of the issuer.
        let verified = signers
            .iter()
            .any(|k| gatehouse_tokens::verify_with_key(token, k).is_ok());
        if !verified {
            return Err(invalid("The custom token signature is invalid."));
        }
        let now = self.now_secs();
        let iat = claims
            .get("iat")
            .and_then(Value::as_i64)
            .ok_or_else(|| invalid("missing iat"))?;
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| invalid("missing exp"))?;
        if exp <= now || iat > now + 300 || exp - iat > 3600 {
            return Err(invalid(
                "The custom token has expired or its lifetime is too long.",
            ));
        }
        if claims.get("sub").and_then(Value::as_str) != Some(issuer) {
            return Err(invalid("The custom token subject must be its issuer."));
        }
        Ok(claims)
    }
}
