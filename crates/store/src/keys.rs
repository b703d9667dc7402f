//! Statements for token-signing keys.

use crate::{Result, Store};

/// A signing key as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// What the key signs (`id_token`, `session_cookie`, ...).
    pub purpose: String,
    /// PKCS#8 DER of the private key.
    pub private_der: Vec<u8>,
    /// When the key became (or becomes) the active signer, epoch ms.
    pub created_at: i64,
    /// When the key stops signing, epoch ms.
    pub retire_at: i64,
    /// When the key stops being published (every token it signed has expired), epoch ms.
    pub expires_at: i64,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("purpose", &self.purpose)
            .field("created_at", &self.created_at)
            .field("retire_at", &self.retire_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Stores a new signing key.
    pub async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, purpose, private_der, created_at, retire_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.kid)
        .bind(&key.purpose)
        .bind(&key.private_der)
        .bind(key.created_at)
        .bind(key.retire_at)
        .bind(key.expires_at)
        .execute(&self.pool)
        .await
        .map_err(crate::map_unique)?;
        Ok(())
    }

    /// The keys for `purpose` that are still published at `now`, newest first.
    pub async fn signing_keys(&self, purpose: &str, now: i64) -> Result<Vec<SigningKeyRecord>> {
        let rows: Vec<(String, Vec<u8>, i64, i64, i64)> = sqlx::query_as(
            "SELECT kid, private_der, created_at, retire_at, expires_at FROM signing_keys \
             WHERE purpose = $1 AND expires_at > $2 ORDER BY created_at DESC, kid",
        )
        .bind(purpose)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(kid, private_der, created_at, retire_at, expires_at)| SigningKeyRecord {
                    kid,
                    purpose: purpose.to_owned(),
                    private_der,
                    created_at,
                    retire_at,
                    expires_at,
                },
            )
            .collect())
    }

    /// Deletes keys no longer published.
    pub async fn purge_expired_signing_keys(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM signing_keys WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
