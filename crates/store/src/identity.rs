//! Statements for end-user accounts, their federated identities, refresh tokens and OOB codes.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::inline::Columns;
use crate::{Result, Store, flag, map_unique};

/// One end-user account as stored.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct UserRecord {
    pub project_id: String,
    /// `""` for the project itself, else the tenant id.
    pub tenant_id: String,
    pub local_id: String,
    /// Lower-cased e-mail address.
    pub email: Option<String>,
    /// Copy of `email` when e-mails must be unique in the project, else `None`.
    pub email_unique: Option<String>,
    pub email_verified: bool,
    pub display_name: Option<String>,
    pub photo_url: Option<String>,
    pub phone_number: Option<String>,
    pub disabled: bool,
    /// The password hash in our own encoding (PHC string or a tagged foreign hash).
    pub password_hash: Option<String>,
    pub salt: Option<String>,
    pub password_updated_at: Option<i64>,
    /// Tokens issued before this second are revoked.
    pub valid_since_secs: i64,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
    pub last_refresh_at: Option<i64>,
    /// Custom claims, as JSON object text.
    pub custom_attributes: Option<String>,
    pub custom_auth: bool,
    pub email_link_signin: bool,
    pub initial_email: Option<String>,
    /// Federated provider entries, as a JSON array.
    pub providers: String,
    /// MFA enrollments, as a JSON array.
    pub mfa: String,
    /// Optimistic-concurrency counter: bumped by every update.
    pub version: i64,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("project_id", &self.project_id)
            .field("tenant_id", &self.tenant_id)
            .field("local_id", &self.local_id)
            .field("has_password", &self.password_hash.is_some())
            .field("disabled", &self.disabled)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A federated identity (`provider_id`, `raw_id`) linked to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityLink {
    pub provider_id: String,
    pub raw_id: String,
}

/// A refresh token as stored: only the hash of the token is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    pub token_hash: String,
    pub project_id: String,
    pub tenant_id: String,
    pub local_id: String,
    /// The sign-in provider the session started with.
    pub provider: String,
    /// Extra claims (custom-token claims) carried into refreshed tokens, JSON object text.
    pub extra_claims: Option<String>,
    pub created_at: i64,
}

/// An out-of-band code (e-mail verification, password reset, e-mail sign-in ...).
#[derive(Clone, PartialEq, Eq)]
pub struct OobCodeRecord {
    pub code_hash: String,
    pub project_id: String,
    pub tenant_id: String,
    pub request_type: String,
    pub email: String,
    pub new_email: Option<String>,
    pub local_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// The code itself, kept only for development projects (the emulator lists codes).
    pub dev_code: Option<String>,
    /// The action link, kept only for development projects.
    pub dev_link: Option<String>,
}

impl std::fmt::Debug for OobCodeRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OobCodeRecord")
            .field("project_id", &self.project_id)
            .field("request_type", &self.request_type)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// `SELECT <every user column> FROM users <rest>`, as a `&'static str`.
macro_rules! select_users {
    ($rest:literal) => {
        concat!(
            "SELECT project_id, tenant_id, local_id, email, email_unique, email_verified, ",
            "display_name, photo_url, phone_number, disabled, password_hash, salt, password_updated_at, ",
            "valid_since_secs, created_at, last_login_at, last_refresh_at, custom_attributes, custom_auth, ",
            "email_link_signin, initial_email, providers, mfa, version FROM users ",
            $rest
        )
    };
}

const SELECT_USER: &str =
    select_users!("WHERE project_id = $1 AND tenant_id = $2 AND local_id = $3");
const SELECT_USER_BY_EMAIL: &str = select_users!(
    "WHERE project_id = $1 AND tenant_id = $2 AND email = $3 ORDER BY created_at, local_id"
);
const SELECT_USER_BY_PHONE: &str =
    select_users!("WHERE project_id = $1 AND tenant_id = $2 AND phone_number = $3");
const LIST_USERS: &str = select_users!(
    "WHERE project_id = $1 AND tenant_id = $2 AND local_id > $3 ORDER BY local_id LIMIT $4"
);

const INSERT_USER: &str = "INSERT INTO users (project_id, tenant_id, local_id, email, email_unique, email_verified, \
    display_name, photo_url, phone_number, disabled, password_hash, salt, password_updated_at, \
    valid_since_secs, created_at, last_login_at, last_refresh_at, custom_attributes, custom_auth, \
    email_link_signin, initial_email, providers, mfa, version) VALUES \
    ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, 0)";

const UPDATE_USER: &str = "UPDATE users SET email = $4, email_unique = $5, email_verified = $6, \
    display_name = $7, photo_url = $8, phone_number = $9, disabled = $10, password_hash = $11, salt = $12, \
    password_updated_at = $13, valid_since_secs = $14, created_at = $15, last_login_at = $16, \
    last_refresh_at = $17, custom_attributes = $18, custom_auth = $19, email_link_signin = $20, \
    initial_email = $21, providers = $22, mfa = $23, version = version + 1 \
    WHERE project_id = $1 AND tenant_id = $2 AND local_id = $3 AND version = $24";

fn user_from_row(row: &impl Columns) -> Result<UserRecord> {
    Ok(UserRecord {
        project_id: row.col("project_id")?,
        tenant_id: row.col("tenant_id")?,
        local_id: row.col("local_id")?,
        email: row.col("email")?,
        email_unique: row.col("email_unique")?,
        email_verified: row.col::<i64>("email_verified")? != 0,
        display_name: row.col("display_name")?,
        photo_url: row.col("photo_url")?,
        phone_number: row.col("phone_number")?,
        disabled: row.col::<i64>("disabled")? != 0,
        password_hash: row.col("password_hash")?,
        salt: row.col("salt")?,
        password_updated_at: row.col("password_updated_at")?,
        valid_since_secs: row.col("valid_since_secs")?,
        created_at: row.col("created_at")?,
        last_login_at: row.col("last_login_at")?,
        last_refresh_at: row.col("last_refresh_at")?,
        custom_attributes: row.col("custom_attributes")?,
        custom_auth: row.col::<i64>("custom_auth")? != 0,
        email_link_signin: row.col::<i64>("email_link_signin")? != 0,
        initial_email: row.col("initial_email")?,
        providers: row.col("providers")?,
        mfa: row.col("mfa")?,
        version: row.col("version")?,
    })
}

const SELECT_REFRESH_TOKEN: &str = "SELECT project_id, tenant_id, local_id, provider, extra_claims, \
    created_at FROM refresh_tokens WHERE token_hash = $1";

fn refresh_from_row(row: &impl Columns, token_hash: &str) -> Result<RefreshTokenRecord> {
    Ok(RefreshTokenRecord {
        token_hash: token_hash.to_owned(),
        project_id: row.col("project_id")?,
        tenant_id: row.col("tenant_id")?,
        local_id: row.col("local_id")?,
        provider: row.col("provider")?,
        extra_claims: row.col("extra_claims")?,
        created_at: row.col("created_at")?,
    })
}

macro_rules! bind_user_fields {
    ($q:expr, $u:expr) => {
        $q.bind(&$u.project_id)
            .bind(&$u.tenant_id)
            .bind(&$u.local_id)
            .bind(&$u.email)
            .bind(&$u.email_unique)
            .bind(flag($u.email_verified))
            .bind(&$u.display_name)
            .bind(&$u.photo_url)
            .bind(&$u.phone_number)
            .bind(flag($u.disabled))
            .bind(&$u.password_hash)
            .bind(&$u.salt)
            .bind($u.password_updated_at)
            .bind($u.valid_since_secs)
            .bind($u.created_at)
            .bind($u.last_login_at)
            .bind($u.last_refresh_at)
            .bind(&$u.custom_attributes)
            .bind(flag($u.custom_auth))
            .bind(flag($u.email_link_signin))
            .bind(&$u.initial_email)
            .bind(&$u.providers)
            .bind(&$u.mfa)
    };
}

impl Store {
    /// Inserts a new account together with its federated identity links, atomically.
    /// A taken e-mail, phone number, identity or id is [`crate::Error::Conflict`].
    pub async fn insert_user(&self, user: &UserRecord, links: &[IdentityLink]) -> Result<()> {
        self.insert_account(user, links, None).await
    }

    /// [`insert_user`](Self::insert_user) and the first refresh token of the new account in
    /// the same transaction: a sign-up whose answer is an error leaves no account behind (a
    /// retry would otherwise meet `EMAIL_EXISTS`).
    pub async fn insert_user_with_token(
        &self,
        user: &UserRecord,
        links: &[IdentityLink],
        token: &RefreshTokenRecord,
    ) -> Result<()> {
        self.insert_account(user, links, Some(token)).await
    }

    async fn insert_account(
        &self,
        user: &UserRecord,
        links: &[IdentityLink],
        token: Option<&RefreshTokenRecord>,
    ) -> Result<()> {
        self.users
            .forget(&user.project_id, &user.tenant_id, &user.local_id);
        let mut tx = self.pool.begin().await?;
        bind_user_fields!(sqlx::query(INSERT_USER), user)
            .execute(&mut *tx)
            .await
            .map_err(map_unique)?;
        for link in links {
            insert_link(&mut tx, user, link).await?;
        }
        if let Some(token) = token {
            bind_token(token)
                .execute(&mut *tx)
                .await
                .map_err(map_unique)?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Writes `user` back if nobody changed it since it was read (its `version` still matches),
    /// replacing its identity links with `links` when given. Returns `false` on a lost race.
    pub async fn update_user(
        &self,
        user: &UserRecord,
        links: Option<&[IdentityLink]>,
    ) -> Result<bool> {
        self.users
            .forget(&user.project_id, &user.tenant_id, &user.local_id);
        let mut tx = self.pool.begin().await?;
        let done = bind_user_fields!(sqlx::query(UPDATE_USER), user)
            .bind(user.version)
            .execute(&mut *tx)
            .await
            .map_err(map_unique)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(links) = links {
            sqlx::query(
                "DELETE FROM user_identities WHERE project_id = $1 AND tenant_id = $2 AND local_id = $3",
            )
            .bind(&user.project_id)
            .bind(&user.tenant_id)
            .bind(&user.local_id)
            .execute(&mut *tx)
            .await?;
            for link in links {
                insert_link(&mut tx, user, link).await?;
            }
        }
        tx.commit().await?;
        self.users
            .forget(&user.project_id, &user.tenant_id, &user.local_id);
        Ok(true)
    }

    /// Reads one account by id, possibly from the short-lived cache (see
    /// [`Store::set_account_cache_ttl`]). Read-modify-write must use [`Store::user_fresh`].
    pub async fn user(
        &self,
        project: &str,
        tenant: &str,
        local_id: &str,
    ) -> Result<Option<UserRecord>> {
        if let Some(hit) = self.users.get(project, tenant, local_id) {
            return Ok(Some(hit));
        }
        let user = self.user_fresh(project, tenant, local_id).await?;
        if let Some(u) = &user {
            self.users.put(u);
        }
        Ok(user)
    }

    /// Reads one account by id from the database.
    pub async fn user_fresh(
        &self,
        project: &str,
        tenant: &str,
        local_id: &str,
    ) -> Result<Option<UserRecord>> {
        if let Some(inline) = &self.inline {
            let rows = inline.query(SELECT_USER, (project, tenant, local_id), |r| {
                user_from_row(r)
            })?;
            return Ok(rows.into_iter().next());
        }
        let row = sqlx::query(SELECT_USER)
            .bind(project)
            .bind(tenant)
            .bind(local_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Reads the accounts with this (lower-cased) e-mail, oldest first.
    pub async fn users_by_email(
        &self,
        project: &str,
        tenant: &str,
        email: &str,
    ) -> Result<Vec<UserRecord>> {
        if let Some(inline) = &self.inline {
            return inline.query(SELECT_USER_BY_EMAIL, (project, tenant, email), |r| {
                user_from_row(r)
            });
        }
        let rows = sqlx::query(SELECT_USER_BY_EMAIL)
            .bind(project)
            .bind(tenant)
            .bind(email)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Reads the account with this phone number.
    pub async fn user_by_phone(
        &self,
        project: &str,
        tenant: &str,
        phone: &str,
    ) -> Result<Option<UserRecord>> {
        let row = sqlx::query(SELECT_USER_BY_PHONE)
            .bind(project)
            .bind(tenant)
            .bind(phone)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Finds the account a federated identity is linked to.
    pub async fn user_id_by_identity(
        &self,
        project: &str,
        tenant: &str,
        provider_id: &str,
        raw_id: &str,
    ) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT local_id FROM user_identities \
             WHERE project_id = $1 AND tenant_id = $2 AND provider_id = $3 AND raw_id = $4",
        )
        .bind(project)
        .bind(tenant)
        .bind(provider_id)
        .bind(raw_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.0))
    }

    /// Lists accounts ordered by id, starting after `after` (exclusive), at most `limit`.
    pub async fn list_users(
        &self,
        project: &str,
        tenant: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<UserRecord>> {
        let rows = sqlx::query(LIST_USERS)
            .bind(project)
            .bind(tenant)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Counts the accounts of a project (or tenant).
    pub async fn count_users(&self, project: &str, tenant: &str) -> Result<i64> {
        let row: (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM users WHERE project_id = $1 AND tenant_id = $2")
                .bind(project)
                .bind(tenant)
                .fetch_one(&self.pool)
                .await?;
        Ok(row.0)
    }

    /// Deletes one account (its refresh tokens and identity links go with it). Returns whether it existed.
    pub async fn delete_user(&self, project: &str, tenant: &str, local_id: &str) -> Result<bool> {
        self.users.forget(project, tenant, local_id);
        let done = sqlx::query(
            "DELETE FROM users WHERE project_id = $1 AND tenant_id = $2 AND local_id = $3",
        )
        .bind(project)
        .bind(tenant)
        .bind(local_id)
        .execute(&self.pool)
        .await?;
        self.users.forget(project, tenant, local_id);
        Ok(done.rows_affected() > 0)
    }

    /// Deletes every account of a project (or tenant).
    pub async fn delete_all_users(&self, project: &str, tenant: &str) -> Result<u64> {
        self.users.clear();
        let done = sqlx::query("DELETE FROM users WHERE project_id = $1 AND tenant_id = $2")
            .bind(project)
            .bind(tenant)
            .execute(&self.pool)
            .await?;
        self.users.clear();
        Ok(done.rows_affected())
    }

    /// Stores a new refresh token (by hash).
    pub async fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<()> {
        bind_token(token)
            .execute(&self.pool)
            .await
            .map_err(map_unique)?;
        Ok(())
    }

    /// Reads a refresh token by hash.
    pub async fn refresh_token(&self, token_hash: &str) -> Result<Option<RefreshTokenRecord>> {
        if let Some(inline) = &self.inline {
            let rows = inline.query(SELECT_REFRESH_TOKEN, (token_hash,), |r| {
                refresh_from_row(r, token_hash)
            })?;
            return Ok(rows.into_iter().next());
        }
        let row = sqlx::query(SELECT_REFRESH_TOKEN)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref()
            .map(|r| refresh_from_row(r, token_hash))
            .transpose()
    }

    /// Deletes every refresh token of one account.
    pub async fn delete_refresh_tokens(
        &self,
        project: &str,
        tenant: &str,
        local_id: &str,
    ) -> Result<()> {
        sqlx::query(
            "DELETE FROM refresh_tokens WHERE project_id = $1 AND tenant_id = $2 AND local_id = $3",
        )
        .bind(project)
        .bind(tenant)
        .bind(local_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores a new OOB code (by hash).
    pub async fn insert_oob_code(&self, code: &OobCodeRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO oob_codes (code_hash, project_id, tenant_id, request_type, email, new_email, local_id, \
             created_at, expires_at, dev_code, dev_link) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&code.code_hash)
        .bind(&code.project_id)
        .bind(&code.tenant_id)
        .bind(&code.request_type)
        .bind(&code.email)
        .bind(&code.new_email)
        .bind(&code.local_id)
        .bind(code.created_at)
        .bind(code.expires_at)
        .bind(&code.dev_code)
        .bind(&code.dev_link)
        .execute(&self.pool)
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    /// Reads an OOB code without using it up.
    pub async fn oob_code(&self, code_hash: &str) -> Result<Option<OobCodeRecord>> {
        let row = sqlx::query(
            "SELECT code_hash, project_id, tenant_id, request_type, email, new_email, local_id, created_at, \
             expires_at, dev_code, dev_link FROM oob_codes WHERE code_hash = $1",
        )
        .bind(code_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(oob_from_row).transpose()
    }

    /// Uses up an OOB code: deletes it and returns it, atomically, so a code works exactly once.
    pub async fn take_oob_code(&self, code_hash: &str) -> Result<Option<OobCodeRecord>> {
        let row = sqlx::query(
            "DELETE FROM oob_codes WHERE code_hash = $1 RETURNING code_hash, project_id, tenant_id, request_type, \
             email, new_email, local_id, created_at, expires_at, dev_code, dev_link",
        )
        .bind(code_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(oob_from_row).transpose()
    }

    /// Lists the live OOB codes of a project that still carry their development copy, oldest first.
    pub async fn list_dev_oob_codes(
        &self,
        project: &str,
        tenant: &str,
        now: i64,
    ) -> Result<Vec<OobCodeRecord>> {
        let rows = sqlx::query(
            "SELECT code_hash, project_id, tenant_id, request_type, email, new_email, local_id, created_at, \
             expires_at, dev_code, dev_link FROM oob_codes \
             WHERE project_id = $1 AND tenant_id = $2 AND dev_code IS NOT NULL AND expires_at > $3 \
             ORDER BY created_at",
        )
        .bind(project)
        .bind(tenant)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(oob_from_row).collect()
    }

    /// Deletes expired OOB codes.
    pub async fn purge_expired_oob_codes(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM oob_codes WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

async fn insert_link(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user: &UserRecord,
    link: &IdentityLink,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO user_identities (project_id, tenant_id, provider_id, raw_id, local_id) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&user.project_id)
    .bind(&user.tenant_id)
    .bind(&link.provider_id)
    .bind(&link.raw_id)
    .bind(&user.local_id)
    .execute(&mut **tx)
    .await
    .map_err(map_unique)?;
    Ok(())
}

fn oob_from_row(row: &AnyRow) -> Result<OobCodeRecord> {
    Ok(OobCodeRecord {
        code_hash: row.try_get("code_hash")?,
        project_id: row.try_get("project_id")?,
        tenant_id: row.try_get("tenant_id")?,
        request_type: row.try_get("request_type")?,
        email: row.try_get("email")?,
        new_email: row.try_get("new_email")?,
        local_id: row.try_get("local_id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        dev_code: row.try_get("dev_code")?,
        dev_link: row.try_get("dev_link")?,
    })
}

/// A federated sign-in flow in progress, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct IdpFlowRecord {
    pub state_hash: String,
    pub project_id: String,
    /// The flow's data (PKCE verifier, nonce, where to return), as JSON text.
    pub data: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for IdpFlowRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpFlowRecord")
            .field("project_id", &self.project_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Records a flow; expired ones are purged on the way.
    pub async fn insert_idp_flow(&self, flow: &IdpFlowRecord, now: i64) -> Result<()> {
        sqlx::query("DELETE FROM idp_flows WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO idp_flows (state_hash, project_id, data, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&flow.state_hash)
        .bind(&flow.project_id)
        .bind(&flow.data)
        .bind(flow.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Uses up a flow: deletes it and returns it, atomically, so a `state` works once.
    pub async fn take_idp_flow(&self, state_hash: &str) -> Result<Option<IdpFlowRecord>> {
        let row: Option<(String, String, String, i64)> = sqlx::query_as(
            "DELETE FROM idp_flows WHERE state_hash = $1 RETURNING state_hash, project_id, data, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            row.map(|(state_hash, project_id, data, expires_at)| IdpFlowRecord {
                state_hash,
                project_id,
                data,
                expires_at,
            }),
        )
    }
}

impl Store {
    /// What `gatehouse up` last applied: `(kind, name, digest)`, sorted.
    pub async fn up_state(&self) -> Result<Vec<(String, String, String)>> {
        Ok(
            sqlx::query_as("SELECT kind, name, digest FROM up_state ORDER BY kind, name")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Replaces the applied state, atomically.
    pub async fn put_up_state(&self, entries: &[(String, String, String)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM up_state")
            .execute(&mut *tx)
            .await?;
        for (kind, name, digest) in entries {
            sqlx::query("INSERT INTO up_state (kind, name, digest) VALUES ($1, $2, $3)")
                .bind(kind)
                .bind(name)
                .bind(digest)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The statement storing a new refresh token (by hash).
fn bind_token(
    token: &RefreshTokenRecord,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, project_id, tenant_id, local_id, provider, extra_claims, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&token.token_hash)
    .bind(&token.project_id)
    .bind(&token.tenant_id)
    .bind(&token.local_id)
    .bind(&token.provider)
    .bind(&token.extra_claims)
    .bind(token.created_at)
}
