//! Out-of-band codes: e-mail verification, password reset, e-mail sign-in and e-mail change.
//!
//! A code is 32 random bytes; only its hash is stored (plus, for development projects, a copy
//! that the emulator's `/oobCodes` listing shows). Codes expire after an hour and work once.

use gatehouse_store::{OobCodeRecord, UserRecord};

use crate::config::Mode;
use crate::session::{random_token, token_hash};
use crate::user::{check_password_policy, new_account, new_local_id, required_email};
use crate::{
    Caller, Error, Identity, IssuedTokens, OobKind, ResetPasswordRequest, Result,
    SendOobCodeRequest, SignInWithEmailLinkRequest, password,
};

/// How long an OOB code stays valid.
const OOB_TTL_MS: i64 = 3_600_000;

/// The answer to `sendOobCode`.
#[derive(Debug, Clone)]
pub struct OobSent {
    pub email: String,
    /// Only for privileged callers that asked with `returnOobLink`.
    pub oob_code: Option<String>,
    pub oob_link: Option<String>,
}

/// What a code is for (the `resetPassword` inspection answer).
#[derive(Debug, Clone)]
pub struct OobInfo {
    pub request_type: OobKind,
    pub email: String,
    pub new_email: Option<String>,
}

/// A code as the emulator's `/oobCodes` route lists it.
#[derive(Debug, Clone)]
pub struct DevOobCode {
    pub email: String,
    pub oob_code: String,
    pub oob_link: String,
    pub request_type: String,
    pub new_email: Option<String>,
}

/// The result of `signInWithEmailLink`.
#[derive(Debug, Clone)]
pub struct EmailLinkSignIn {
    pub user: UserRecord,
    pub is_new_user: bool,
    pub tokens: IssuedTokens,
}

impl Identity {
    /// `accounts:sendOobCode`.
    pub async fn send_oob_code(&self, caller: &Caller, req: SendOobCodeRequest) -> Result<OobSent> {
        let kind_name = req
            .request_type
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::code("MISSING_REQ_TYPE"))?;
        let kind = OobKind::parse(&kind_name)
            .filter(|k| *k != OobKind::RecoverEmail)
            .ok_or_else(|| {
                Error::detail("INVALID_REQ_TYPE", format!("{kind_name} is not supported"))
            })?;
        let return_link = req.return_oob_link.unwrap_or(false);
        if return_link {
            caller.require_privileged()?;
        }
        let project = &caller.project;
        let tenant = req.tenant_id.clone().unwrap_or_default();
        let settings = self.settings(&project.project_id).await;
        let privacy = settings.email_privacy_config.enable_improved_email_privacy;
        let continue_url = match req.continue_url.as_deref().filter(|s| !s.is_empty()) {
            Some(url) => Some(
                settings
                    .check_continue_url(&project.project_id, url)?
                    .to_string(),
            ),
            None => None,
        };

        let (email, new_email, user) = match kind {
            OobKind::PasswordReset | OobKind::EmailSignin => {
                let email = required_email(req.email.as_deref(), "MISSING_EMAIL")?;
                let user = self
                    .first_user_by_email(&project.project_id, &tenant, &email)
                    .await?;
                if kind == OobKind::EmailSignin && continue_url.is_none() {
                    return Err(Error::code("MISSING_CONTINUE_URI"));
                }
                if kind == OobKind::PasswordReset && user.is_none() {
                    if privacy && !caller.privileged {
                        // Say nothing about whether the address exists.
                        return Ok(OobSent {
                            email,
                            oob_code: None,
                            oob_link: None,
                        });
                    }
                    return Err(Error::code("EMAIL_NOT_FOUND"));
                }
                (email, None, user)
            }
            OobKind::VerifyEmail | OobKind::VerifyAndChangeEmail => {
                let user = if let Some(token) = req.id_token.as_deref().filter(|t| !t.is_empty()) {
                    self.verify_id_token(caller, token).await?.0
                } else if caller.privileged {
                    let email = required_email(req.email.as_deref(), "MISSING_EMAIL")?;
                    self.first_user_by_email(&project.project_id, &tenant, &email)
                        .await?
                        .ok_or_else(|| Error::code("USER_NOT_FOUND"))?
                } else {
                    return Err(Error::code("MISSING_ID_TOKEN"));
                };
                let email = user
                    .email
                    .clone()
                    .ok_or_else(|| Error::code("MISSING_EMAIL"))?;
                let new_email = if kind == OobKind::VerifyAndChangeEmail {
                    let new = required_email(req.new_email.as_deref(), "MISSING_NEW_EMAIL")?;
                    if self
                        .email_taken(&project.project_id, &tenant, &new, None)
                        .await?
                    {
                        return Err(Error::code("EMAIL_EXISTS"));
                    }
                    Some(new)
                } else {
                    None
                };
                (email, new_email, Some(user))
            }
            OobKind::RecoverEmail => return Err(Error::code("INVALID_REQ_TYPE")),
        };
        if !caller.privileged {
            self.inner.limits.send_oob(caller.ip, &email)?;
        }
        let (code, link) = self
            .create_oob(
                caller,
                &tenant,
                kind,
                &email,
                new_email.as_deref(),
                user.as_ref().map(|u| u.local_id.as_str()),
                continue_url.as_deref(),
            )
            .await?;
        if return_link {
            return Ok(OobSent {
                email,
                oob_code: Some(code),
                oob_link: Some(link),
            });
        }
        let to = new_email.as_deref().unwrap_or(&email);
        self.deliver(kind, to, &link).await?;
        Ok(OobSent {
            email,
            oob_code: None,
            oob_link: None,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_oob(
        &self,
        caller: &Caller,
        tenant: &str,
        kind: OobKind,
        email: &str,
        new_email: Option<&str>,
        local_id: Option<&str>,
        continue_url: Option<&str>,
    ) -> Result<(String, String)> {
        let project = &caller.project;
        let code = random_token(32);
        let mut link = url::Url::parse(&format!("{}/__/auth/action", self.inner.public_url))
            .map_err(|e| Error::internal(format!("public url: {e}")))?;
        {
            let mut q = link.query_pairs_mut();
            q.append_pair("mode", kind.mode());
            q.append_pair("oobCode", &code);
            q.append_pair(
                "apiKey",
                project
                    .api_keys
                    .first()
                    .map_or("gatehouse-api-key", String::as_str),
            );
            q.append_pair("lang", "en");
            if let Some(url) = continue_url {
                q.append_pair("continueUrl", url);
            }
            if !tenant.is_empty() {
                q.append_pair("tenantId", tenant);
            }
        }
        let link = link.to_string();
        let now = self.now_ms();
        let dev = project.mode == Mode::Development;
        self.inner
            .store
            .insert_oob_code(&OobCodeRecord {
                code_hash: token_hash(&code),
                project_id: project.project_id.clone(),
                tenant_id: tenant.to_owned(),
                request_type: kind.as_str().to_owned(),
                email: email.to_owned(),
                new_email: new_email.map(str::to_owned),
                local_id: local_id.map(str::to_owned),
                created_at: now,
                expires_at: now + OOB_TTL_MS,
                dev_code: dev.then(|| code.clone()),
                dev_link: dev.then(|| link.clone()),
            })
            .await?;
        Ok((code, link))
    }

    async fn deliver(&self, kind: OobKind, to: &str, link: &str) -> Result<()> {
        let Some(mailer) = &self.inner.mailer else {
            tracing::info!(
                request_type = kind.as_str(),
                "no SMTP configured; OOB e-mail not sent"
            );
            return Ok(());
        };
        let (subject, intro) = match kind {
            OobKind::PasswordReset => (
                "Reset your password",
                "Follow this link to reset your password:",
            ),
            OobKind::VerifyEmail => (
                "Verify your email",
                "Follow this link to verify your email address:",
            ),
            OobKind::EmailSignin => ("Sign in", "Follow this link to sign in:"),
            OobKind::VerifyAndChangeEmail => (
                "Verify your new email",
                "Follow this link to verify your new email address:",
            ),
            OobKind::RecoverEmail => (
                "Your sign-in email was changed",
                "Follow this link to undo the change:",
            ),
        };
        let body = format!(
            "Hello,\n\n{intro}\n\n{link}\n\nThe link expires in one hour. If you didn't ask for this, you can ignore this email.\n"
        );
        mailer.send(to, subject, body).await?;
        tracing::info!(request_type = kind.as_str(), "OOB e-mail sent");
        Ok(())
    }

    /// Reads a live code of this project, without using it.
    async fn peek_oob(&self, caller: &Caller, code: &str) -> Result<OobCodeRecord> {
        let record = self
            .inner
            .store
            .oob_code(&token_hash(code))
            .await?
            .filter(|r| r.project_id == caller.project.project_id)
            .ok_or_else(|| Error::code("INVALID_OOB_CODE"))?;
        if record.expires_at <= self.now_ms() {
            return Err(Error::code("EXPIRED_OOB_CODE"));
        }
        Ok(record)
    }

    /// Uses up a live code of this project.
    pub(crate) async fn take_oob(&self, caller: &Caller, code: &str) -> Result<OobCodeRecord> {
        self.peek_oob(caller, code).await?;
        self.inner
            .store
            .take_oob_code(&token_hash(code))
            .await?
            .ok_or_else(|| Error::code("INVALID_OOB_CODE"))
    }

    /// `accounts:resetPassword`: inspects a code, or (with `newPassword`) resets the password.
    pub async fn reset_password(
        &self,
        caller: &Caller,
        req: ResetPasswordRequest,
    ) -> Result<OobInfo> {
        let code = req
            .oob_code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Error::code("MISSING_OOB_CODE"))?;
        let record = self.peek_oob(caller, code).await?;
        let kind =
            OobKind::parse(&record.request_type).ok_or_else(|| Error::code("INVALID_OOB_CODE"))?;
        let Some(new_password) = req.new_password.as_deref() else {
            return Ok(OobInfo {
                request_type: kind,
                email: record.email,
                new_email: record.new_email,
            });
        };
        if kind != OobKind::PasswordReset {
            return Err(Error::code("INVALID_OOB_CODE"));
        }
        check_password_policy(new_password)?;
        let hash = self.hash_password(new_password).await?;
        let record = self.take_oob(caller, code).await?;
        let local_id = record.local_id.clone().unwrap_or_default();
        let now = self.now_ms();
        let user = self
            .modify_user(&record.project_id, &record.tenant_id, &local_id, |u| {
                if u.email.as_deref() != Some(record.email.as_str()) {
                    return Err(Error::code("INVALID_OOB_CODE"));
                }
                u.password_hash = Some(hash.clone());
                u.salt = None;
                u.password_updated_at = Some(now);
                u.email_verified = true;
                u.valid_since_secs = now / 1000;
                Ok(())
            })
            .await
            .map_err(|e| {
                if e.is("USER_NOT_FOUND") {
                    Error::code("INVALID_OOB_CODE")
                } else {
                    e
                }
            })?;
        self.inner
            .store
            .delete_refresh_tokens(&user.project_id, &user.tenant_id, &user.local_id)
            .await?;
        Ok(OobInfo {
            request_type: kind,
            email: record.email,
            new_email: None,
        })
    }

    /// Applies a VERIFY_EMAIL or VERIFY_AND_CHANGE_EMAIL code (`accounts:update {oobCode}`).
    pub(crate) async fn apply_oob_code(&self, caller: &Caller, code: &str) -> Result<UserRecord> {
        let record = self.peek_oob(caller, code).await?;
        let kind =
            OobKind::parse(&record.request_type).ok_or_else(|| Error::code("INVALID_OOB_CODE"))?;
        if !matches!(kind, OobKind::VerifyEmail | OobKind::VerifyAndChangeEmail) {
            return Err(Error::code("INVALID_OOB_CODE"));
        }
        let record = self.take_oob(caller, code).await?;
        let local_id = record.local_id.clone().unwrap_or_default();
        let now = self.now_ms();
        let allow_dup = self
            .settings(&caller.project.project_id)
            .await
            .sign_in
            .allow_duplicate_emails;
        self.modify_user(&record.project_id, &record.tenant_id, &local_id, |u| {
            if u.email.as_deref() != Some(record.email.as_str()) {
                return Err(Error::code("INVALID_OOB_CODE"));
            }
            if let Some(new) = &record.new_email {
                u.email = Some(new.clone());
                u.email_unique = (!allow_dup).then(|| new.clone());
                u.valid_since_secs = now / 1000;
            }
            u.email_verified = true;
            Ok(())
        })
        .await
        .map_err(|e| {
            if e.is("USER_NOT_FOUND") {
                Error::code("INVALID_OOB_CODE")
            } else {
                e
            }
        })
    }

    /// `accounts:signInWithEmailLink`.
    pub async fn sign_in_with_email_link(
        &self,
        caller: &Caller,
        req: SignInWithEmailLinkRequest,
    ) -> Result<EmailLinkSignIn> {
        let email = required_email(req.email.as_deref(), "MISSING_EMAIL")?;
        let code = req
            .oob_code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Error::code("MISSING_OOB_CODE"))?;
        self.inner.limits.sign_in(caller.ip)?;
        let record = self.peek_oob(caller, code).await?;
        if record.request_type != OobKind::EmailSignin.as_str() {
            return Err(Error::code("INVALID_OOB_CODE"));
        }
        if record.email != email {
            return Err(Error::code("INVALID_EMAIL"));
        }
        let linking = match req.id_token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => Some(self.verify_id_token(caller, token).await?.0),
            None => None,
        };
        let record = self.take_oob(caller, code).await?;
        let project = caller.project.clone();
        let tenant = record.tenant_id.clone();
        let now = self.now_ms();
        let allow_dup = self
            .settings(&project.project_id)
            .await
            .sign_in
            .allow_duplicate_emails;
        let existing = self
            .first_user_by_email(&project.project_id, &tenant, &email)
            .await?;
        let (user, is_new_user) = match (linking, existing) {
            (Some(target), Some(other)) if other.local_id != target.local_id => {
                return Err(Error::code("EMAIL_EXISTS"));
            }
            (Some(target), _) => {
                let user = self
                    .modify_user(
                        &target.project_id,
                        &target.tenant_id,
                        &target.local_id,
                        |u| {
                            u.email = Some(email.clone());
                            u.email_unique = (!allow_dup).then(|| email.clone());
                            u.email_verified = true;
                            u.email_link_signin = true;
                            u.last_login_at = Some(now);
                            u.last_refresh_at = Some(now);
                            Ok(())
                        },
                    )
                    .await?;
                (user, false)
            }
            (None, Some(existing)) => {
                if existing.disabled {
                    return Err(Error::code("USER_DISABLED"));
                }
                let user = self
                    .modify_user(
                        &existing.project_id,
                        &existing.tenant_id,
                        &existing.local_id,
                        |u| {
                            u.email_verified = true;
                            u.email_link_signin = true;
                            u.last_login_at = Some(now);
                            u.last_refresh_at = Some(now);
                            Ok(())
                        },
                    )
                    .await?;
                (user, false)
            }
            (None, None) => {
                let user = UserRecord {
                    email: Some(email.clone()),
                    email_unique: (!allow_dup).then(|| email.clone()),
                    email_verified: true,
                    email_link_signin: true,
                    ..new_account(&project.project_id, &tenant, new_local_id(), now, true)
                };
                self.insert_user(&user).await?;
                (user, true)
            }
        };
        let tokens = self.issue_tokens(&project, &user, "password", None).await?;
        Ok(EmailLinkSignIn {
            user,
            is_new_user,
            tokens,
        })
    }

    /// The development listing of live OOB codes (`GET /emulator/v1/projects/{p}/oobCodes`).
    pub async fn dev_oob_codes(&self, caller: &Caller, tenant: &str) -> Result<Vec<DevOobCode>> {
        let rows = self
            .inner
            .store
            .list_dev_oob_codes(&caller.project.project_id, tenant, self.now_ms())
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(DevOobCode {
                    email: r.email,
                    oob_code: r.dev_code?,
                    oob_link: r.dev_link?,
                    request_type: r.request_type,
                    new_email: r.new_email,
                })
            })
            .collect())
    }

    /// Hashes a password with argon2id on the hashing threads.
    pub(crate) async fn hash_password(&self, password: &str) -> Result<String> {
        self.inner.hashing.hash(password).await
    }

    /// Checks a password on the hashing threads.
    pub(crate) async fn check_password(
        &self,
        password: &str,
        stored: &str,
    ) -> Result<password::Check> {
        self.inner.hashing.verify(password, stored).await
    }
}
