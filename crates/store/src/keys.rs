//! Statements for token-signing keys. Keys are stored sealed (see the keyring); rows from before
//! migration 0006 are plaintext until a process with the master key seals them.

use crate::{Error, Result, Store};

/// A signing key as stored: its PKCS#8 DER sealed under a data key, the data key wrapped by the
/// master key. This crate neither seals nor opens them.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// What the key signs (`id_token`, `session_cookie`, ...).
    pub purpose: String,
    /// The key's data key, wrapped by the master key.
    pub wrapped_key: Vec<u8>,
    /// The PKCS#8 DER of the private key, sealed under the data key.
    pub sealed_pkcs8: Vec<u8>,
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

/// A signing key stored in plaintext by a version before migration 0006.
pub struct PlaintextSigningKey {
    pub kid: String,
    pub purpose: String,
    /// PKCS#8 DER, in the clear.
    pub private_der: Vec<u8>,
}

impl std::fmt::Debug for PlaintextSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaintextSigningKey")
            .field("kid", &self.kid)
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

/// A key's sealed form, replacing its plaintext: (kid, wrapped data key, sealed PKCS#8).
pub type SealedSigningKey = (String, Vec<u8>, Vec<u8>);

type Row = (String, String, Vec<u8>, Vec<u8>, i64, i64, i64);

fn record(
    (kid, purpose, wrapped_key, sealed_pkcs8, created_at, retire_at, expires_at): Row,
) -> SigningKeyRecord {
    SigningKeyRecord {
        kid,
        purpose,
        wrapped_key,
        sealed_pkcs8,
        created_at,
        retire_at,
        expires_at,
    }
}

impl Store {
    /// Stores a new signing key, sealed under the master key whose id is `master_key_id`.
    /// `Conflict("master key")` (and nothing stored) when the database is under another master
    /// key: it was rotated while this process ran.
    pub async fn insert_signing_key(
        &self,
        key: &SigningKeyRecord,
        master_key_id: &str,
    ) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO signing_keys \
             (kid, purpose, wrapped_key, sealed_pkcs8, created_at, retire_at, expires_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7 FROM secrets_master WHERE id = 1 AND key_id = $8",
        )
        .bind(&key.kid)
        .bind(&key.purpose)
        .bind(&key.wrapped_key)
        .bind(&key.sealed_pkcs8)
        .bind(key.created_at)
        .bind(key.retire_at)
        .bind(key.expires_at)
        .bind(master_key_id)
        .execute(&self.pool)
        .await
        .map_err(crate::map_unique)?;
        if done.rows_affected() != 1 {
            return Err(Error::Conflict("master key"));
        }
        Ok(())
    }

    /// The sealed keys for `purpose` that are still published at `now`, newest first.
    pub async fn signing_keys(&self, purpose: &str, now: i64) -> Result<Vec<SigningKeyRecord>> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT kid, purpose, wrapped_key, sealed_pkcs8, created_at, retire_at, expires_at \
             FROM signing_keys \
             WHERE purpose = $1 AND expires_at > $2 AND wrapped_key IS NOT NULL \
             ORDER BY created_at DESC, kid",
        )
        .bind(purpose)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(record).collect())
    }

    /// Every sealed key, whatever its purpose (for master-key rotation).
    pub async fn all_signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT kid, purpose, wrapped_key, sealed_pkcs8, created_at, retire_at, expires_at \
             FROM signing_keys WHERE wrapped_key IS NOT NULL ORDER BY kid",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(record).collect())
    }

    /// Keys still stored in plaintext (written before migration 0006).
    pub async fn plaintext_signing_keys(&self) -> Result<Vec<PlaintextSigningKey>> {
        let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT kid, purpose, sealed_pkcs8 FROM signing_keys WHERE wrapped_key IS NULL \
             ORDER BY kid",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(kid, purpose, private_der)| PlaintextSigningKey {
                kid,
                purpose,
                private_der,
            })
            .collect())
    }

    /// Replaces plaintext keys by their sealed form, all or nothing: `Conflict` (and nothing
    /// changed) when the database is not under master key `master_key_id`, or when the plaintext
    /// keys are not exactly `sealed` (another process sealed them meanwhile).
    pub async fn seal_plaintext_signing_keys(
        &self,
        master_key_id: &str,
        sealed: &[SealedSigningKey],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let master: Option<(String,)> =
            sqlx::query_as("SELECT key_id FROM secrets_master WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await?;
        if master.is_none_or(|(id,)| id != master_key_id) {
            return Err(Error::Conflict("master key"));
        }
        let mut updated = 0;
        for (kid, wrapped_key, sealed_pkcs8) in sealed {
            updated += sqlx::query(
                "UPDATE signing_keys SET wrapped_key = $2, sealed_pkcs8 = $3 \
                 WHERE kid = $1 AND wrapped_key IS NULL",
            )
            .bind(kid)
            .bind(wrapped_key)
            .bind(sealed_pkcs8)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        let (left,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM signing_keys WHERE wrapped_key IS NULL")
                .fetch_one(&mut *tx)
                .await?;
        if updated != sealed.len() as u64 || left != 0 {
            return Err(Error::Conflict("signing keys changed while sealing"));
        }
        tx.commit().await?;
        self.scrub_log().await;
        Ok(())
    }

    /// Deletes keys no longer published.
    /// Revokes a signing key before its time: it stops being published (and signing) at `now`.
    /// `false` when no key `kid` is published at `now`.
    pub async fn revoke_signing_key(&self, kid: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE signing_keys SET expires_at = $2, \
             retire_at = CASE WHEN retire_at > $2 THEN $2 ELSE retire_at END \
             WHERE kid = $1 AND expires_at > $2",
        )
        .bind(kid)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn purge_expired_signing_keys(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM signing_keys WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
