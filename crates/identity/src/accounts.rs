//! Client operations: sign-up, sign-in, lookup, update, delete, createAuthUri.

use gatehouse_store::{IdentityLink, UserRecord};

use crate::password::Check;
use crate::user::{
    check_password_policy, check_phone, new_account, new_local_id, normalize_email,
    stored_providers,
};
use crate::{
    Caller, CreateAuthUriRequest, DeleteRequest, Error, Identity, IssuedTokens, LookupRequest,
    Result, SignInWithPasswordRequest, SignUpRequest,
};

/// A dummy argon2id hash: checked when an e-mail is unknown so that timing does not tell.
const DUMMY_HASH: &str = "$argon2id$v=19$m=12288,t=3,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// The result of a sign-up or sign-in.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: UserRecord,
    /// `None` for privileged account creation.
    pub tokens: Option<IssuedTokens>,
    pub is_new_user: bool,
}

/// The result of `accounts:createAuthUri`.
#[derive(Debug, Clone)]
pub struct AuthUri {
    pub registered: bool,
    pub all_providers: Vec<String>,
    pub signin_methods: Vec<String>,
    pub session_id: String,
    /// Email-enumeration protection is on: say nothing about the address.
    pub private: bool,
}

fn conflict_error(subject: &str) -> Error {
    match subject {
        "email" => Error::code("EMAIL_EXISTS"),
        "phone" => Error::code("PHONE_NUMBER_EXISTS"),
        "identity" => Error::code("FEDERATED_USER_ID_ALREADY_LINKED"),
        _ => Error::code("DUPLICATE_LOCAL_ID"),
    }
}

fn map_store(e: gatehouse_store::Error) -> Error {
    match e {
        gatehouse_store::Error::Conflict(subject) => conflict_error(subject),
        other => other.into(),
    }
}

fn links_of(user: &UserRecord) -> Vec<IdentityLink> {
    stored_providers(user)
        .into_iter()
        .map(|p| IdentityLink {
            provider_id: p.provider_id,
            raw_id: p.raw_id,
        })
        .collect()
}

impl Identity {
    /// Inserts a new account; taken e-mails, phones or ids become Firebase errors.
    pub(crate) async fn insert_user(&self, user: &UserRecord) -> Result<()> {
        self.inner
            .store
            .insert_user(user, &links_of(user))
            .await
            .map_err(map_store)
    }

    /// Read-modify-write of one account with optimistic concurrency (retried on a lost race).
    pub(crate) async fn modify_user(
        &self,
        project: &str,
        tenant: &str,
        local_id: &str,
        mut change: impl FnMut(&mut UserRecord) -> Result<()>,
    ) -> Result<UserRecord> {
        for _ in 0..8 {
            let current = self
                .inner
                .store
                .user_fresh(project, tenant, local_id)
                .await?
                .ok_or_else(|| Error::code("USER_NOT_FOUND"))?;
            let mut next = current.clone();
            change(&mut next)?;
            let links = (next.providers != current.providers).then(|| links_of(&next));
            if self
                .inner
                .store
                .update_user(&next, links.as_deref())
                .await
                .map_err(map_store)?
            {
                next.version += 1;
                return Ok(next);
            }
        }
        Err(Error::internal("account update kept losing races"))
    }

    /// The oldest account with this (lower-cased) e-mail.
    pub(crate) async fn first_user_by_email(
        &self,
        project: &str,
        tenant: &str,
        email: &str,
    ) -> Result<Option<UserRecord>> {
        Ok(self
            .inner
            .store
            .users_by_email(project, tenant, email)
            .await?
            .into_iter()
            .next())
    }

    pub(crate) async fn email_taken(
        &self,
        project: &str,
        tenant: &str,
        email: &str,
        except: Option<&str>,
    ) -> Result<bool> {
        if self.settings(project).await.sign_in.allow_duplicate_emails {
            return Ok(false);
        }
        let users = self
            .inner
            .store
            .users_by_email(project, tenant, email)
            .await?;
        Ok(users.iter().any(|u| Some(u.local_id.as_str()) != except))
    }

    /// `accounts:signUp` (client) and `projects/{p}/accounts` (privileged create).
    pub async fn sign_up(&self, caller: &Caller, req: SignUpRequest) -> Result<SignedIn> {
        let project = caller.project.clone();
        let pid = project.project_id.as_str();
        let tenant = req.tenant_id.clone().unwrap_or_default();
        let allow_dup = self.settings(pid).await.sign_in.allow_duplicate_emails;
        let now = self.now_ms();
        if !caller.privileged {
            self.inner.limits.sign_up(caller.ip)?;
            if req.local_id.is_some() {
                return Err(Error::detail("UNEXPECTED_PARAMETER", "User ID"));
            }
        }
        let email = match req.email.as_deref() {
            Some(e) if !e.is_empty() => Some(normalize_email(e)?),
            Some(_) if !caller.privileged => return Err(Error::code("INVALID_EMAIL")),
            _ => None,
        };
        let has_credentials = email.is_some() || req.password.is_some() || req.id_token.is_some();

        // Linking e-mail/password to the signed-in (usually anonymous) user.
        if let Some(token) = req.id_token.as_deref().filter(|t| !t.is_empty()) {
            let (user, _) = self.verify_id_token(caller, token).await?;
            let email = email.ok_or_else(|| Error::code("MISSING_EMAIL"))?;
            let password = req
                .password
                .as_deref()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| Error::code("MISSING_PASSWORD"))?;
            check_password_policy(password)?;
            if user.email.is_some() && user.password_hash.is_some() {
                return Err(Error::code("EMAIL_EXISTS"));
            }
            if self
                .email_taken(pid, &user.tenant_id, &email, Some(&user.local_id))
                .await?
            {
                return Err(Error::code("EMAIL_EXISTS"));
            }
            let hash = self.hash_password(password).await?;
            let user = self
                .modify_user(pid, &user.tenant_id, &user.local_id, |u| {
                    u.email = Some(email.clone());
                    u.email_unique = (!allow_dup).then(|| email.clone());
                    u.email_verified = false;
                    u.password_hash = Some(hash.clone());
                    u.salt = None;
                    u.password_updated_at = Some(now);
                    if let Some(name) = &req.display_name {
                        u.display_name = Some(name.clone());
                    }
                    u.last_login_at = Some(now);
                    u.last_refresh_at = Some(now);
                    Ok(())
                })
                .await?;
            let tokens = self.issue_tokens(&project, &user, "password", None).await?;
            return Ok(SignedIn {
                user,
                tokens: Some(tokens),
                is_new_user: false,
            });
        }

        let password_hash = match req.password.as_deref() {
            Some(p) if !p.is_empty() || !caller.privileged => {
                if !caller.privileged && email.is_none() {
                    return Err(Error::code("MISSING_EMAIL"));
                }
                if p.is_empty() {
                    return Err(Error::code("MISSING_PASSWORD"));
                }
                check_password_policy(p)?;
                Some(self.hash_password(p).await?)
            }
            _ => {
                if !caller.privileged && email.is_some() {
                    return Err(Error::code("MISSING_PASSWORD"));
                }
                None
            }
        };
        let local_id = match req.local_id.as_deref() {
            Some(id) if !id.is_empty() => {
                if id.chars().count() > 128 {
                    return Err(Error::code("INVALID_LOCAL_ID"));
                }
                id.to_owned()
            }
            _ => new_local_id(),
        };
        let phone = match req.phone_number.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => {
                check_phone(p)?;
                Some(p.to_owned())
            }
            None => None,
        };
        if let Some(email) = &email
            && self.email_taken(pid, &tenant, email, None).await?
        {
            return Err(Error::code("EMAIL_EXISTS"));
        }
        let anonymous = !caller.privileged && !has_credentials;
        let user = UserRecord {
            email_unique: email.clone().filter(|_| !allow_dup),
            email,
            email_verified: caller.privileged && req.email_verified.unwrap_or(false),
            display_name: if anonymous {
                None
            } else {
                req.display_name.clone().filter(|n| !n.is_empty())
            },
            photo_url: if caller.privileged {
                req.photo_url.clone().filter(|p| !p.is_empty())
            } else {
                None
            },
            phone_number: if caller.privileged { phone } else { None },
            disabled: caller.privileged && req.disabled.unwrap_or(false),
            password_updated_at: password_hash.as_ref().map(|_| now),
            password_hash,
            ..new_account(pid, &tenant, local_id, now, !caller.privileged)
        };
        let tokens = if caller.privileged {
            self.insert_user(&user).await?;
            None
        } else {
            // The account and its first refresh token are stored together: a sign-up
            // answered with an error leaves no account behind.
            let provider = if anonymous { "anonymous" } else { "password" };
            let (tokens, record) = self.new_tokens(&project, &user, provider, None)?;
            self.inner
                .store
                .insert_user_with_token(&user, &links_of(&user), &record)
                .await
                .map_err(map_store)?;
            Some(tokens)
        };
        Ok(SignedIn {
            user,
            tokens,
            is_new_user: true,
        })
    }

    /// `accounts:signInWithPassword`.
    pub async fn sign_in_with_password(
        &self,
        caller: &Caller,
        req: SignInWithPasswordRequest,
    ) -> Result<SignedIn> {
        let project = caller.project.clone();
        let pid = project.project_id.as_str();
        let tenant = req.tenant_id.clone().unwrap_or_default();
        let email = normalize_email(req.email.as_deref().unwrap_or_default())?;
        let password = req
            .password
            .as_deref()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::code("MISSING_PASSWORD"))?;
        self.inner.limits.sign_in(caller.ip)?;
        let account_key = format!("{pid}/{tenant}/{email}");
        self.inner.limits.password_attempt(&account_key)?;
        let privacy = self
            .settings(pid)
            .await
            .email_privacy_config
            .enable_improved_email_privacy;
        let fail = |code: &'static str| {
            if privacy {
                Error::code("INVALID_LOGIN_CREDENTIALS")
            } else {
                Error::code(code)
            }
        };

        // The attempt counts as a failure unless the password matches.
        let Some(user) = self.first_user_by_email(pid, &tenant, &email).await? else {
            let _ = self.check_password(password, DUMMY_HASH).await?;
            return Err(fail("EMAIL_NOT_FOUND"));
        };
        let Some(stored) = user.password_hash.clone() else {
            return Err(fail("INVALID_PASSWORD"));
        };
        let check = self.check_password(password, &stored).await?;
        if check == Check::Mismatch {
            return Err(fail("INVALID_PASSWORD"));
        }
        self.inner.limits.password_matched(&account_key);
        if user.disabled {
            return Err(Error::code("USER_DISABLED"));
        }
        let rehash = if check == Check::MatchRehash {
            Some(self.hash_password(password).await?)
        } else {
            None
        };
        let now = self.now_ms();
        let user = self
            .modify_user(pid, &tenant, &user.local_id, |u| {
                if let Some(h) = &rehash {
                    u.password_hash = Some(h.clone());
                    u.salt = None;
                }
                u.last_login_at = Some(now);
                u.last_refresh_at = Some(now);
                Ok(())
            })
            .await?;
        let tokens = self.issue_tokens(&project, &user, "password", None).await?;
        Ok(SignedIn {
            user,
            tokens: Some(tokens),
            is_new_user: false,
        })
    }

    /// `accounts:lookup`.
    pub async fn lookup(&self, caller: &Caller, req: LookupRequest) -> Result<Vec<UserRecord>> {
        let pid = caller.project_id().to_owned();
        let tenant = req.tenant_id.clone().unwrap_or_default();
        let mut found: Vec<UserRecord> = Vec::new();
        let push = |u: UserRecord, found: &mut Vec<UserRecord>| {
            if !found.iter().any(|f| f.local_id == u.local_id) {
                found.push(u);
            }
        };
        if let Some(token) = req.id_token.as_deref().filter(|t| !t.is_empty()) {
            let (user, _) = self.verify_id_token(caller, token).await?;
            push(user, &mut found);
        } else if !caller.privileged {
            return Err(Error::code("MISSING_ID_TOKEN"));
        }
        if !caller.privileged {
            return Ok(found);
        }
        if !req.initial_email.is_empty() {
            return Err(Error::NotImplemented(
                "Lookup by initialEmail is not implemented.".into(),
            ));
        }
        for id in &req.local_id {
            if let Some(u) = self.inner.store.user(&pid, &tenant, id).await? {
                push(u, &mut found);
            }
        }
        for email in &req.email {
            let Ok(email) = normalize_email(email) else {
                continue;
            };
            for u in self
                .inner
                .store
                .users_by_email(&pid, &tenant, &email)
                .await?
            {
                push(u, &mut found);
            }
        }
        for phone in &req.phone_number {
            if let Some(u) = self.inner.store.user_by_phone(&pid, &tenant, phone).await? {
                push(u, &mut found);
            }
        }
        for fed in &req.federated_user_id {
            let provider = fed
                .provider_id
                .as_deref()
                .ok_or_else(|| Error::code("MISSING_PROVIDER_ID"))?;
            let raw = fed
                .raw_id
                .as_deref()
                .ok_or_else(|| Error::code("MISSING_RAW_ID"))?;
            let id = match provider {
                "password" | "email" => self
                    .first_user_by_email(&pid, &tenant, &raw.to_lowercase())
                    .await?
                    .map(|u| u.local_id),
                "phone" => self
                    .inner
                    .store
                    .user_by_phone(&pid, &tenant, raw)
                    .await?
                    .map(|u| u.local_id),
                _ => {
                    self.inner
                        .store
                        .user_id_by_identity(&pid, &tenant, provider, raw)
                        .await?
                }
            };
            if let Some(id) = id
                && let Some(u) = self.inner.store.user(&pid, &tenant, &id).await?
            {
                push(u, &mut found);
            }
        }
        Ok(found)
    }

    /// `accounts:delete`.
    pub async fn delete(&self, caller: &Caller, req: DeleteRequest) -> Result<()> {
        let pid = caller.project_id().to_owned();
        let (tenant, local_id) = match (
            req.local_id.as_deref().filter(|l| !l.is_empty()),
            req.id_token.as_deref().filter(|t| !t.is_empty()),
        ) {
            (Some(local_id), _) if caller.privileged => (
                req.tenant_id.clone().unwrap_or_default(),
                local_id.to_owned(),
            ),
            (_, Some(token)) => {
                let (user, _) = self.verify_id_token(caller, token).await?;
                (user.tenant_id, user.local_id)
            }
            (Some(_), None) => return Err(Error::code("INSUFFICIENT_PERMISSION")),
            (None, None) if caller.privileged => return Err(Error::code("MISSING_LOCAL_ID")),
            (None, None) => return Err(Error::code("MISSING_ID_TOKEN")),
        };
        if !self
            .inner
            .store
            .delete_user(&pid, &tenant, &local_id)
            .await?
        {
            return Err(Error::code("USER_NOT_FOUND"));
        }
        Ok(())
    }

    /// `accounts:createAuthUri` (what `fetchSignInMethodsForEmail` calls).
    pub async fn create_auth_uri(
        &self,
        caller: &Caller,
        req: CreateAuthUriRequest,
    ) -> Result<AuthUri> {
        let session_id = req
            .session_id
            .clone()
            .unwrap_or_else(|| crate::session::random_token(18));
        if req.provider_id.as_deref().is_some_and(|p| !p.is_empty()) {
            return Err(Error::NotImplemented(
                "createAuthUri with providerId is not implemented.".into(),
            ));
        }
        let identifier = req
            .identifier
            .as_deref()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| Error::code("MISSING_IDENTIFIER"))?;
        let continue_uri = req
            .continue_uri
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Error::code("MISSING_CONTINUE_URI"))?;
        if url::Url::parse(continue_uri).is_err() {
            return Err(Error::code("INVALID_CONTINUE_URI"));
        }
        let email = normalize_email(identifier).map_err(|_| Error::code("INVALID_IDENTIFIER"))?;
        let pid = caller.project_id();
        if self
            .settings(pid)
            .await
            .email_privacy_config
            .enable_improved_email_privacy
        {
            return Ok(AuthUri {
                registered: false,
                all_providers: vec![],
                signin_methods: vec![],
                session_id,
                private: true,
            });
        }
        let tenant = req.tenant_id.clone().unwrap_or_default();
        let user = self.first_user_by_email(pid, &tenant, &email).await?;
        let mut all = Vec::new();
        let mut methods = Vec::new();
        if let Some(u) = &user {
            if u.password_hash.is_some() {
                all.push("password".to_owned());
                methods.push("password".to_owned());
            }
            if u.email_link_signin {
                if !all.iter().any(|p| p == "password") {
                    all.push("password".to_owned());
                }
                methods.push("emailLink".to_owned());
            }
            for p in stored_providers(u) {
                all.push(p.provider_id.clone());
                methods.push(p.provider_id);
            }
        }
        Ok(AuthUri {
            registered: user.is_some(),
            all_providers: all,
            signin_methods: methods,
            session_id,
            private: false,
        })
    }
}
