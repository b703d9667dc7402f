//! Statements for IAM: projects, service accounts, their keys, policies and the audit log.

use crate::{Error, Result, Store, flag, map_unique};

/// A project as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRecord {
    pub project_id: String,
    pub project_number: String,
    pub created_at: i64,
}

/// A service account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountRecord {
    pub email: String,
    pub project_id: String,
    pub account_id: String,
    pub unique_id: String,
    pub display_name: String,
    pub description: String,
    pub disabled: bool,
    pub created_at: i64,
}

/// A service-account key as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccountKeyRecord {
    pub key_id: String,
    pub email: String,
    /// `USER_MANAGED` or `SYSTEM_MANAGED`.
    pub managed: String,
    /// The public key as a JWK (JSON).
    pub public_jwk: String,
    /// A self-signed x509 certificate (PEM), as Google publishes per key.
    pub certificate: String,
    /// PKCS#8 DER, for system-managed keys only.
    pub private_der: Option<Vec<u8>>,
    pub disabled: bool,
    pub created_at: i64,
    pub expires_at: i64,
}

impl std::fmt::Debug for ServiceAccountKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKeyRecord")
            .field("key_id", &self.key_id)
            .field("email", &self.email)
            .field("managed", &self.managed)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// An access decision (or `count` identical ones, the first at `at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub at: i64,
    pub principal: String,
    pub permission: String,
    pub resource: String,
    pub allowed: bool,
    pub count: i64,
}

type AccountRow = (String, String, String, String, String, String, i64, i64);

fn account(row: AccountRow) -> ServiceAccountRecord {
    let (email, project_id, account_id, unique_id, display_name, description, disabled, created_at) =
        row;
    ServiceAccountRecord {
        email,
        project_id,
        account_id,
        unique_id,
        display_name,
        description,
        disabled: disabled != 0,
        created_at,
    }
}

/// `SELECT <account columns> FROM service_accounts <rest>` (sqlx wants static SQL).
macro_rules! select_accounts {
    ($rest:literal) => {
        concat!(
            "SELECT email, project_id, account_id, unique_id, display_name, description, disabled, \
             created_at FROM service_accounts ",
            $rest
        )
    };
}

type KeyRow = (
    String,
    String,
    String,
    String,
    String,
    Option<Vec<u8>>,
    i64,
    i64,
    i64,
);

fn key(row: KeyRow) -> ServiceAccountKeyRecord {
    let (
        key_id,
        email,
        managed,
        public_jwk,
        certificate,
        private_der,
        disabled,
        created_at,
        expires_at,
    ) = row;
    ServiceAccountKeyRecord {
        key_id,
        email,
        managed,
        public_jwk,
        certificate,
        private_der,
        disabled: disabled != 0,
        created_at,
        expires_at,
    }
}

/// `SELECT <key columns> FROM service_account_keys <rest>`.
macro_rules! select_keys {
    ($rest:literal) => {
        concat!(
            "SELECT key_id, email, managed, public_jwk, certificate, private_der, disabled, \
             created_at, expires_at FROM service_account_keys ",
            $rest
        )
    };
}

impl Store {
    /// The project, created with `number` if it does not exist yet.
    pub async fn ensure_project(
        &self,
        project_id: &str,
        number: &str,
        now: i64,
    ) -> Result<ProjectRecord> {
        let inserted = sqlx::query(
            "INSERT INTO projects (project_id, project_number, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (project_id) DO NOTHING",
        )
        .bind(project_id)
        .bind(number)
        .bind(now)
        .execute(&self.pool)
        .await;
        if let Err(e) = inserted {
            // Another project already has that number: callers pick numbers from the id, so
            // this is a hash collision; report it.
            return Err(map_unique(e));
        }
        let (project_id, project_number, created_at): (String, String, i64) = sqlx::query_as(
            "SELECT project_id, project_number, created_at FROM projects WHERE project_id = $1",
        )
        .bind(project_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(ProjectRecord {
            project_id,
            project_number,
            created_at,
        })
    }

    /// The project with this id or number.
    pub async fn project(&self, id_or_number: &str) -> Result<Option<ProjectRecord>> {
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT project_id, project_number, created_at FROM projects \
             WHERE project_id = $1 OR project_number = $1",
        )
        .bind(id_or_number)
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            row.map(|(project_id, project_number, created_at)| ProjectRecord {
                project_id,
                project_number,
                created_at,
            }),
        )
    }

    /// Stores a new service account; `Conflict` if the email exists.
    pub async fn insert_service_account(&self, a: &ServiceAccountRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO service_accounts (email, project_id, account_id, unique_id, display_name, \
             description, disabled, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&a.email)
        .bind(&a.project_id)
        .bind(&a.account_id)
        .bind(&a.unique_id)
        .bind(&a.display_name)
        .bind(&a.description)
        .bind(flag(a.disabled))
        .bind(a.created_at)
        .execute(&self.pool)
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    /// The service account with this email or unique id.
    pub async fn service_account(&self, email_or_id: &str) -> Result<Option<ServiceAccountRecord>> {
        let row: Option<AccountRow> =
            sqlx::query_as(select_accounts!("WHERE email = $1 OR unique_id = $1"))
                .bind(email_or_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(account))
    }

    /// A project's service accounts, by account id.
    pub async fn service_accounts(&self, project_id: &str) -> Result<Vec<ServiceAccountRecord>> {
        let rows: Vec<AccountRow> = sqlx::query_as(select_accounts!(
            "WHERE project_id = $1 ORDER BY account_id"
        ))
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(account).collect())
    }

    /// Updates the mutable fields of a service account; false if it does not exist.
    pub async fn update_service_account(&self, a: &ServiceAccountRecord) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE service_accounts SET display_name = $2, description = $3, disabled = $4 \
             WHERE email = $1",
        )
        .bind(&a.email)
        .bind(&a.display_name)
        .bind(&a.description)
        .bind(flag(a.disabled))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a service account with its keys and its policy; false if it did not exist.
    pub async fn delete_service_account(&self, email: &str, resource: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM service_account_keys WHERE email = $1")
            .bind(email)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM iam_policies WHERE resource = $1")
            .bind(resource)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM service_accounts WHERE email = $1")
            .bind(email)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores a new key.
    pub async fn insert_service_account_key(&self, k: &ServiceAccountKeyRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO service_account_keys (key_id, email, managed, public_jwk, certificate, \
             private_der, disabled, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&k.key_id)
        .bind(&k.email)
        .bind(&k.managed)
        .bind(&k.public_jwk)
        .bind(&k.certificate)
        .bind(&k.private_der)
        .bind(flag(k.disabled))
        .bind(k.created_at)
        .bind(k.expires_at)
        .execute(&self.pool)
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    /// An account's keys, oldest first.
    pub async fn service_account_keys(&self, email: &str) -> Result<Vec<ServiceAccountKeyRecord>> {
        let rows: Vec<KeyRow> =
            sqlx::query_as(select_keys!("WHERE email = $1 ORDER BY created_at, key_id"))
                .bind(email)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(key).collect())
    }

    /// One key.
    pub async fn service_account_key(
        &self,
        key_id: &str,
    ) -> Result<Option<ServiceAccountKeyRecord>> {
        let row: Option<KeyRow> = sqlx::query_as(select_keys!("WHERE key_id = $1"))
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(key))
    }

    /// Enables or disables a key; false if it does not exist.
    pub async fn set_service_account_key_disabled(
        &self,
        key_id: &str,
        disabled: bool,
    ) -> Result<bool> {
        let done = sqlx::query("UPDATE service_account_keys SET disabled = $2 WHERE key_id = $1")
            .bind(key_id)
            .bind(flag(disabled))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a key; false if it did not exist.
    pub async fn delete_service_account_key(&self, key_id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM service_account_keys WHERE key_id = $1")
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The policy of a resource (JSON) and its write count.
    pub async fn iam_policy(&self, resource: &str) -> Result<Option<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT policy, version FROM iam_policies WHERE resource = $1")
                .bind(resource)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Writes a policy. With `expected` (the write count the caller read; 0 = none yet) the
    /// write happens only if nobody wrote in between, else `Conflict("etag")`. Returns the new
    /// write count. One statement each way, so SQLite never has to upgrade a read transaction.
    pub async fn put_iam_policy(
        &self,
        resource: &str,
        policy: &str,
        expected: Option<i64>,
        now: i64,
    ) -> Result<i64> {
        match expected {
            None => {
                let (version,): (i64,) = sqlx::query_as(
                    "INSERT INTO iam_policies (resource, policy, version, updated_at) \
                     VALUES ($1, $2, 1, $3) ON CONFLICT (resource) DO UPDATE SET \
                     policy = excluded.policy, version = iam_policies.version + 1, \
                     updated_at = excluded.updated_at RETURNING version",
                )
                .bind(resource)
                .bind(policy)
                .bind(now)
                .fetch_one(&self.pool)
                .await?;
                Ok(version)
            }
            Some(0) => {
                let done = sqlx::query(
                    "INSERT INTO iam_policies (resource, policy, version, updated_at) \
                     VALUES ($1, $2, 1, $3) ON CONFLICT (resource) DO NOTHING",
                )
                .bind(resource)
                .bind(policy)
                .bind(now)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(Error::Conflict("etag"));
                }
                Ok(1)
            }
            Some(current) => {
                let done = sqlx::query(
                    "UPDATE iam_policies SET policy = $2, version = $3, updated_at = $4 \
                     WHERE resource = $1 AND version = $5",
                )
                .bind(resource)
                .bind(policy)
                .bind(current + 1)
                .bind(now)
                .bind(current)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(Error::Conflict("etag"));
                }
                Ok(current + 1)
            }
        }
    }

    /// Records access decisions, many rows per statement.
    pub async fn insert_audit(&self, records: &[AuditRecord]) -> Result<()> {
        const ROWS: usize = 200;
        let mut tx = self.pool.begin().await?;
        for chunk in records.chunks(ROWS) {
            let mut sql = String::from(
                "INSERT INTO iam_audit (at, principal, permission, resource, allowed, count) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 6;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6
                ));
            }
            // Only placeholders are generated; every value is bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(r.at)
                    .bind(&r.principal)
                    .bind(&r.permission)
                    .bind(&r.resource)
                    .bind(flag(r.allowed))
                    .bind(r.count);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The newest `limit` decisions, newest first.
    pub async fn audit(&self, limit: i64) -> Result<Vec<AuditRecord>> {
        let rows: Vec<(i64, String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT at, principal, permission, resource, allowed, count FROM iam_audit \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(at, principal, permission, resource, allowed, count)| AuditRecord {
                    at,
                    principal,
                    permission,
                    resource,
                    allowed: allowed != 0,
                    count,
                },
            )
            .collect())
    }
}
