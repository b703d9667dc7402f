//! Privileged bulk operations: batchGet, batchCreate (import), batchDelete, query, and the
//! development-only "delete every account".

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use gatehouse_store::UserRecord;

use crate::config::Mode;
use crate::password::{ImportedHash, fake_hash_password};
use crate::user::{ProviderInfo, check_custom_claims, check_phone, normalize_email};
use crate::{
    BatchCreateRequest, BatchDeleteRequest, Caller, Error, Identity, QueryRequest, Result,
};

/// One page of `accounts:batchGet`.
#[derive(Debug, Clone)]
pub struct UserPage {
    pub users: Vec<UserRecord>,
    pub next_page_token: Option<String>,
}

/// A per-item failure of a batch operation.
#[derive(Debug, Clone)]
pub struct BatchItemError {
    pub index: usize,
    pub local_id: Option<String>,
    pub message: String,
}

/// Accepts standard or web-safe base64, padded or not.
fn decode_b64(text: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
        .ok()
}

impl Identity {
    /// `accounts:batchGet`: accounts ordered by id, paged by the last id of the previous page.
    pub async fn batch_get(
        &self,
        caller: &Caller,
        max_results: Option<i64>,
        page_token: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<UserPage> {
        caller.require_privileged()?;
        let limit = match max_results {
            None | Some(0) => 20,
            Some(-1) if caller.project.mode == Mode::Development => i64::MAX,
            Some(n) if (1..=1000).contains(&n) => n,
            Some(_) => {
                return Err(Error::detail(
                    "INVALID_ARGUMENT",
                    "maxResults must be between 1 and 1000",
                ));
            }
        };
        let after = match page_token.filter(|t| !t.is_empty()) {
            Some(token) => {
                let bytes = URL_SAFE_NO_PAD
                    .decode(token)
                    .map_err(|_| Error::code("INVALID_PAGE_SELECTION"))?;
                String::from_utf8(bytes).map_err(|_| Error::code("INVALID_PAGE_SELECTION"))?
            }
            None => String::new(),
        };
        let fetch = if limit == i64::MAX { limit } else { limit + 1 };
        let mut users = self
            .inner
            .store
            .list_users(
                caller.project_id(),
                tenant.unwrap_or_default(),
                &after,
                fetch,
            )
            .await?;
        let next_page_token = if limit != i64::MAX && users.len() as i64 > limit {
            users.truncate(limit as usize);
            users
                .last()
                .map(|u| URL_SAFE_NO_PAD.encode(u.local_id.as_bytes()))
        } else {
            None
        };
        Ok(UserPage {
            users,
            next_page_token,
        })
    }

    /// `accounts:batchCreate` (import). Per-user problems are reported, not fatal; each account is
    /// written whole or not at all.
    pub async fn batch_create(
        &self,
        caller: &Caller,
        req: BatchCreateRequest,
    ) -> Result<Vec<BatchItemError>> {
        caller.require_privileged()?;
        if req.users.is_empty() {
            return Err(Error::code("MISSING_USER_ACCOUNT"));
        }
        if req.users.len() > 1000 {
            return Err(Error::detail(
                "MAXIMUM_USER_COUNT_EXCEEDED",
                "A maximum of 1000 accounts can be imported at once.",
            ));
        }
        let pid = caller.project_id().to_owned();
        let tenant_default = req.tenant_id.clone().unwrap_or_default();
        let algorithm = req.hash_algorithm.clone().filter(|a| !a.is_empty());
        let hash_template = algorithm.as_ref().map(|alg| ImportedHash {
            alg: alg.to_ascii_uppercase(),
            hash: String::new(),
            salt: String::new(),
            signer_key: req
                .signer_key
                .as_deref()
                .and_then(decode_b64)
                .map(|b| STANDARD.encode(b)),
            salt_separator: req
                .salt_separator
                .as_deref()
                .and_then(decode_b64)
                .map(|b| STANDARD.encode(b)),
            rounds: req.rounds.unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
            memory_cost: req.memory_cost.unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
            cpu_mem_cost: req.cpu_mem_cost.or(req.memory_cost).unwrap_or(0).max(0) as u64,
            parallelization: req.parallelization.unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
            block_size: req.block_size.unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
            dk_len: req.dk_len.unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
            order: req.password_hash_order.clone().unwrap_or_default(),
        });
        if let Some(t) = &hash_template
            && let Err(why) = t.validate()
        {
            return Err(Error::detail("INVALID_HASH_ALGORITHM", why));
        }
        let allow_dup = self.settings(&pid).await.sign_in.allow_duplicate_emails;
        let allow_overwrite = req.allow_overwrite.unwrap_or(false);
        let now = self.now_ms();
        let mut errors = Vec::new();
        for (index, u) in req.users.into_iter().enumerate() {
            let fail = |message: String| BatchItemError {
                index,
                local_id: u.local_id.clone(),
                message,
            };
            let Some(local_id) = u
                .local_id
                .clone()
                .filter(|l| !l.is_empty() && l.chars().count() <= 128)
            else {
                errors.push(fail("localId is missing or too long".into()));
                continue;
            };
            let email = match u.email.as_deref().filter(|e| !e.is_empty()) {
                Some(e) => match normalize_email(e) {
                    Ok(e) => Some(e),
                    Err(_) => {
                        errors.push(fail("email is invalid".into()));
                        continue;
                    }
                },
                None => None,
            };
            if let Some(p) = u.phone_number.as_deref().filter(|p| !p.is_empty())
                && check_phone(p).is_err()
            {
                errors.push(fail("phone number is invalid".into()));
                continue;
            }
            if let Some(c) = u.custom_attributes.as_deref().filter(|c| !c.is_empty())
                && let Err(e) = check_custom_claims(c)
            {
                errors.push(fail(e.message()));
                continue;
            }
            // The password: raw, the emulator's fake hash, or a foreign hash to verify later.
            let password_hash = if let Some(raw) = u.raw_password.as_deref() {
                Some(self.hash_password(raw).await?)
            } else if let Some(hash) = u.password_hash.as_deref().filter(|h| !h.is_empty()) {
                let salt_text = u.salt.clone().unwrap_or_default();
                if let Some(pw) = fake_hash_password(hash, &salt_text) {
                    Some(self.hash_password(pw).await?)
                } else if let Some(template) = &hash_template {
                    let (Some(hash_bytes), Some(salt_bytes)) = (
                        decode_b64(hash),
                        decode_b64(&salt_text).or(Some(Vec::new())),
                    ) else {
                        errors.push(fail("passwordHash must be base64".into()));
                        continue;
                    };
                    Some(
                        ImportedHash {
                            hash: STANDARD.encode(hash_bytes),
                            salt: STANDARD.encode(salt_bytes),
                            ..template.clone()
                        }
                        .to_stored(),
                    )
                } else {
                    errors.push(fail(
                        "hashAlgorithm is required to import a passwordHash".into(),
                    ));
                    continue;
                }
            } else {
                None
            };
            let mut providers = Vec::new();
            for p in &u.provider_user_info {
                let (Some(provider_id), Some(raw_id)) = (p.provider_id.clone(), p.raw_id.clone())
                else {
                    continue;
                };
                if matches!(provider_id.as_str(), "password" | "phone") {
                    continue;
                }
                providers.push(ProviderInfo {
                    federated_id: Some(raw_id.clone()),
                    provider_id,
                    raw_id,
                    email: p.email.clone(),
                    display_name: p.display_name.clone(),
                    photo_url: p.photo_url.clone(),
                    screen_name: p.screen_name.clone(),
                    phone_number: None,
                });
            }
            let tenant = u
                .tenant_id
                .clone()
                .unwrap_or_else(|| tenant_default.clone());
            let record = UserRecord {
                project_id: pid.clone(),
                tenant_id: tenant.clone(),
                local_id: local_id.clone(),
                email_unique: email.clone().filter(|_| !allow_dup),
                email,
                email_verified: u.email_verified.unwrap_or(false),
                display_name: u.display_name.clone().filter(|d| !d.is_empty()),
                photo_url: u.photo_url.clone().filter(|p| !p.is_empty()),
                phone_number: u.phone_number.clone().filter(|p| !p.is_empty()),
                disabled: u.disabled.unwrap_or(false),
                password_updated_at: password_hash.as_ref().map(|_| now),
                password_hash,
                valid_since_secs: now / 1000,
                created_at: u.created_at.unwrap_or(now),
                last_login_at: u.last_login_at,
                custom_attributes: u.custom_attributes.clone().filter(|c| !c.is_empty()),
                providers: serde_json::to_string(&providers).unwrap_or_else(|_| "[]".into()),
                mfa: "[]".into(),
                ..UserRecord::default()
            };
            if allow_overwrite
                && self
                    .inner
                    .store
                    .user(&pid, &tenant, &local_id)
                    .await?
                    .is_some()
            {
                self.inner
                    .store
                    .delete_user(&pid, &tenant, &local_id)
                    .await?;
            }
            if let Err(e) = self.insert_user(&record).await {
                let message = match &e {
                    Error::Code {
                        code: "EMAIL_EXISTS",
                        ..
                    } => "email exists in other account in DB".to_owned(),
                    Error::Code {
                        code: "DUPLICATE_LOCAL_ID",
                        ..
                    } => "localId belongs to an existing account".into(),
                    Error::Code {
                        code: "PHONE_NUMBER_EXISTS",
                        ..
                    } => "phone number exists in other account in DB".into(),
                    Error::Code { .. } => e.message(),
                    _ => return Err(e),
                };
                errors.push(fail(message));
            }
        }
        Ok(errors)
    }

    /// `accounts:batchDelete`: enabled accounts are refused unless `force`; unknown ids are skipped.
    pub async fn batch_delete(
        &self,
        caller: &Caller,
        req: BatchDeleteRequest,
    ) -> Result<Vec<BatchItemError>> {
        caller.require_privileged()?;
        if req.local_ids.is_empty() || req.local_ids.len() > 1000 {
            return Err(Error::code("LOCAL_ID_LIST_EXCEEDS_LIMIT"));
        }
        let pid = caller.project_id().to_owned();
        let tenant = req.tenant_id.clone().unwrap_or_default();
        let force = req.force.unwrap_or(false);
        let mut errors = Vec::new();
        for (index, id) in req.local_ids.iter().enumerate() {
            let Some(user) = self.inner.store.user(&pid, &tenant, id).await? else {
                continue;
            };
            if !force && !user.disabled {
                errors.push(BatchItemError {
                    index,
                    local_id: Some(id.clone()),
                    message: "NOT_DISABLED : Disable the account before batch deletion.".into(),
                });
                continue;
            }
            self.inner.store.delete_user(&pid, &tenant, id).await?;
        }
        Ok(errors)
    }

    /// `accounts:query`: count, or list ordered by user id (optionally descending), with
    /// `limit`/`offset`.
    pub async fn query(
        &self,
        caller: &Caller,
        req: QueryRequest,
    ) -> Result<(i64, Option<Vec<UserRecord>>)> {
        caller.require_privileged()?;
        if !req.expression.is_empty() {
            return Err(Error::NotImplemented(
                "accounts:query with expression is not implemented.".into(),
            ));
        }
        if let Some(sort) = req.sort_by.as_deref()
            && !matches!(sort, "USER_ID" | "SORT_BY_FIELD_UNSPECIFIED")
        {
            return Err(Error::NotImplemented(format!(
                "accounts:query sortBy {sort} is not implemented."
            )));
        }
        let pid = caller.project_id();
        let tenant = req.tenant_id.clone().unwrap_or_default();
        let count = self.inner.store.count_users(pid, &tenant).await?;
        if !req.return_user_info.unwrap_or(true) {
            return Ok((count, None));
        }
        let limit = req.limit.unwrap_or(500).clamp(1, 500) as usize;
        let offset = req.offset.unwrap_or(0).max(0) as usize;
        let mut all = self
            .inner
            .store
            .list_users(pid, &tenant, "", i64::MAX)
            .await?;
        if req.order.as_deref() == Some("DESC") {
            all.reverse();
        }
        let users: Vec<UserRecord> = all.into_iter().skip(offset).take(limit).collect();
        Ok((users.len() as i64, Some(users)))
    }

    /// `DELETE /emulator/v1/projects/{p}/accounts` (development projects only).
    pub async fn delete_all_accounts(&self, caller: &Caller, tenant: &str) -> Result<u64> {
        if caller.project.mode != Mode::Development {
            return Err(Error::NotFound("Not Found".into()));
        }
        Ok(self
            .inner
            .store
            .delete_all_users(caller.project_id(), tenant)
            .await?)
    }
}
