//! Statements for the master key: the check row recording which master key the database's data
//! keys are wrapped with, and rotation (every wrapped data key replaced in one transaction).

use crate::{Error, Result, Store, map_unique};

/// Every data key re-wrapped under a new master key, for [`Store::rewrap_master_key`].
#[derive(Debug, Default)]
pub struct Rewrapped {
    /// (project, secret, new wrapped key) for every secret.
    pub secrets: Vec<(String, String, Vec<u8>)>,
    /// (kid, new wrapped key) for every signing key.
    pub signing_keys: Vec<(String, Vec<u8>)>,
}

impl Store {
    /// The master-key check row: the key's id (a public fingerprint) and a value only that key
    /// decrypts.
    pub async fn master_key_check(&self) -> Result<Option<(String, Vec<u8>)>> {
        Ok(
            sqlx::query_as("SELECT key_id, check_blob FROM secrets_master WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records the master key the first time; `Conflict("primary")` if one is recorded.
    pub async fn init_master_key_check(&self, key_id: &str, check: &[u8]) -> Result<()> {
        sqlx::query("INSERT INTO secrets_master (id, key_id, check_blob) VALUES (1, $1, $2)")
            .bind(key_id)
            .bind(check)
            .execute(&self.pool)
            .await
            .map_err(map_unique)?;
        Ok(())
    }

    /// Master-key rotation: replaces the check row and the wrapped key of every secret and every
    /// signing key, all or nothing. `Conflict` (and nothing changed) when the stored master key
    /// is not `old_key_id`, or when a secret or signing key is not in `rewrapped` (one was
    /// created meanwhile, or a signing key is still in plaintext).
    pub async fn rewrap_master_key(
        &self,
        old_key_id: &str,
        key_id: &str,
        check: &[u8],
        rewrapped: &Rewrapped,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE secrets_master SET key_id = $1, check_blob = $2 WHERE id = 1 AND key_id = $3",
        )
        .bind(key_id)
        .bind(check)
        .bind(old_key_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(Error::Conflict("master key"));
        }
        let mut secrets = 0;
        for (project, secret, wrapped) in &rewrapped.secrets {
            secrets += sqlx::query(
                "UPDATE secrets SET wrapped_key = $3 WHERE project_id = $1 AND secret_id = $2",
            )
            .bind(project)
            .bind(secret)
            .bind(wrapped)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        let mut keys = 0;
        for (kid, wrapped) in &rewrapped.signing_keys {
            keys += sqlx::query(
                "UPDATE signing_keys SET wrapped_key = $2 WHERE kid = $1 AND wrapped_key IS NOT NULL",
            )
            .bind(kid)
            .bind(wrapped)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        // Anything created meanwhile would be left under the old key: refuse, nothing changes.
        let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM secrets")
            .fetch_one(&mut *tx)
            .await?;
        if secrets != total as u64 {
            return Err(Error::Conflict("secrets changed during rotation"));
        }
        let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM signing_keys")
            .fetch_one(&mut *tx)
            .await?;
        if keys != total as u64 {
            return Err(Error::Conflict("signing keys changed during rotation"));
        }
        tx.commit().await?;
        Ok(())
    }
}
