//! `accounts:update` (setAccountInfo): profile, e-mail, password, attributes, providers, and
//! the privileged fields (claims, disabling, revocation).

use gatehouse_store::UserRecord;
use serde_json::Value;

use crate::user::{
    ProviderInfo, check_custom_claims, check_password_policy, check_phone, normalize_email,
    stored_providers,
};
use crate::{Caller, Error, Identity, IssuedTokens, Result, UpdateRequest};

/// The result of `accounts:update`.
#[derive(Debug, Clone)]
pub struct Updated {
    pub user: UserRecord,
    pub tokens: Option<IssuedTokens>,
    pub new_email: Option<String>,
}

impl Identity {
    /// `accounts:update` (setAccountInfo).
    pub async fn update(&self, caller: &Caller, req: UpdateRequest) -> Result<Updated> {
        if let Some(code) = req.oob_code.as_deref().filter(|c| !c.is_empty()) {
            let user = self.apply_oob_code(caller, code).await?;
            return Ok(Updated {
                user,
                tokens: None,
                new_email: None,
            });
        }
        let pid = caller.project_id().to_owned();
        let token_session = match req.id_token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => Some(self.verify_id_token(caller, token).await?),
            None => None,
        };
        let target = match (
            &token_session,
            req.local_id.as_deref().filter(|l| !l.is_empty()),
        ) {
            (_, Some(local_id)) if caller.privileged => {
                let tenant = req.tenant_id.clone().unwrap_or_default();
                self.inner
                    .store
                    .user(&pid, &tenant, local_id)
                    .await?
                    .ok_or_else(|| Error::code("USER_NOT_FOUND"))?
            }
            (Some((user, _)), _) => user.clone(),
            (None, _) if caller.privileged => return Err(Error::code("MISSING_LOCAL_ID")),
            (None, _) => {
                return Err(Error::detail(
                    "INVALID_REQ_TYPE",
                    "Unsupported request parameters.",
                ));
            }
        };
        if !caller.privileged {
            if req.disable_user.is_some() {
                return Err(Error::code("OPERATION_NOT_ALLOWED"));
            }
            if req.custom_attributes.is_some()
                || req.valid_since.is_some()
                || req.created_at.is_some()
                || req.last_login_at.is_some()
                || req.email_verified.is_some()
                || req.phone_number.is_some()
                || req.link_provider_user_info.is_some()
            {
                return Err(Error::code("INSUFFICIENT_PERMISSION"));
            }
        }
        let email = match req.email.as_deref() {
            Some(e) => Some(normalize_email(e)?),
            None => None,
        };
        if let Some(email) = &email
            && target.email.as_ref() != Some(email)
            && self
                .email_taken(&pid, &target.tenant_id, email, Some(&target.local_id))
                .await?
        {
            return Err(Error::code("EMAIL_EXISTS"));
        }
        let hash = match req.password.as_deref() {
            Some(p) => {
                check_password_policy(p)?;
                Some(self.hash_password(p).await?)
            }
            None => None,
        };
        let claims_text = match req.custom_attributes.as_deref() {
            Some(text) if text.trim().is_empty() || text.trim() == "{}" => Some(None),
            Some(text) => {
                check_custom_claims(text)?;
                Some(Some(text.to_owned()))
            }
            None => None,
        };
        if let Some(phone) = req.phone_number.as_deref().filter(|p| !p.is_empty()) {
            check_phone(phone)?;
        }
        let link = match &req.link_provider_user_info {
            Some(info) => {
                let provider_id = info
                    .provider_id
                    .clone()
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| Error::code("MISSING_PROVIDER_ID"))?;
                let raw_id = info
                    .raw_id
                    .clone()
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| Error::code("MISSING_RAW_ID"))?;
                if matches!(provider_id.as_str(), "password" | "phone") {
                    return Err(Error::detail(
                        "INVALID_PROVIDER_ID",
                        "Use email/phoneNumber for first-party providers.",
                    ));
                }
                Some(ProviderInfo {
                    federated_id: Some(raw_id.clone()),
                    provider_id,
                    raw_id,
                    email: info.email.clone(),
                    display_name: info.display_name.clone(),
                    photo_url: info.photo_url.clone(),
                    screen_name: info.screen_name.clone(),
                    phone_number: None,
                })
            }
            None => None,
        };
        let allow_dup = self.settings(&pid).await.sign_in.allow_duplicate_emails;
        let now = self.now_ms();
        let mut revoked = false;
        let mut new_email = None;
        let user = self
            .modify_user(&pid, &target.tenant_id, &target.local_id, |u| {
                revoked = false;
                new_email = None;
                if let Some(email) = &email
                    && u.email.as_ref() != Some(email)
                {
                    u.email = Some(email.clone());
                    u.email_unique = (!allow_dup).then(|| email.clone());
                    u.email_verified = false;
                    new_email = Some(email.clone());
                    revoked = true;
                }
                if let Some(h) = &hash {
                    u.password_hash = Some(h.clone());
                    u.salt = None;
                    u.password_updated_at = Some(now);
                    revoked = true;
                }
                if let Some(name) = &req.display_name {
                    u.display_name = Some(name.clone()).filter(|n| !n.is_empty());
                }
                if let Some(photo) = &req.photo_url {
                    u.photo_url = Some(photo.clone()).filter(|p| !p.is_empty());
                }
                for attr in &req.delete_attribute {
                    match attr.as_str() {
                        "DISPLAY_NAME" => u.display_name = None,
                        "PHOTO_URL" => u.photo_url = None,
                        "PASSWORD" => u.password_hash = None,
                        "EMAIL" => {
                            u.email = None;
                            u.email_unique = None;
                            u.email_verified = false;
                        }
                        "PHONE_NUMBER" => u.phone_number = None,
                        other => {
                            return Err(Error::detail(
                                "INVALID_ARGUMENT",
                                format!("unknown attribute {other}"),
                            ));
                        }
                    }
                }
                if !req.delete_provider.is_empty() {
                    let mut providers = stored_providers(u);
                    for p in &req.delete_provider {
                        match p.as_str() {
                            "password" => u.password_hash = None,
                            "phone" => u.phone_number = None,
                            other => providers.retain(|x| x.provider_id != other),
                        }
                    }
                    u.providers = serde_json::to_string(&providers).unwrap_or_else(|_| "[]".into());
                }
                if let Some(info) = &link {
                    let mut providers = stored_providers(u);
                    providers.retain(|x| x.provider_id != info.provider_id);
                    providers.push(info.clone());
                    u.providers = serde_json::to_string(&providers).unwrap_or_else(|_| "[]".into());
                }
                if let Some(phone) = &req.phone_number {
                    u.phone_number = Some(phone.clone()).filter(|p| !p.is_empty());
                }
                if let Some(v) = req.email_verified {
                    u.email_verified = v;
                }
                if let Some(d) = req.disable_user {
                    u.disabled = d;
                }
                if let Some(c) = &claims_text {
                    u.custom_attributes = c.clone();
                }
                if let Some(v) = req.valid_since {
                    u.valid_since_secs = v;
                    revoked = true;
                } else if revoked {
                    u.valid_since_secs = now / 1000;
                }
                if let Some(c) = req.created_at {
                    u.created_at = c;
                }
                if let Some(l) = req.last_login_at {
                    u.last_login_at = Some(l);
                }
                Ok(())
            })
            .await?;
        if revoked {
            self.inner
                .store
                .delete_refresh_tokens(&pid, &user.tenant_id, &user.local_id)
                .await?;
        }
        let tokens = match &token_session {
            Some((_, claims)) if revoked || !caller.privileged => {
                let provider = claims
                    .get("firebase")
                    .and_then(|f| f.get("sign_in_provider"))
                    .and_then(Value::as_str)
                    .unwrap_or("password")
                    .to_owned();
                Some(
                    self.issue_tokens(&caller.project, &user, &provider, None)
                        .await?,
                )
            }
            _ => None,
        };
        Ok(Updated {
            user,
            tokens,
            new_email,
        })
    }
}
