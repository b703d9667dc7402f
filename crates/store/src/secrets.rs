//! Statements for Secret Manager: secrets, versions and the master-key check. Payloads and data
//! keys arrive here already encrypted.

use crate::{Error, Result, Store, flag, map_unique};

/// A secret as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub project_id: String,
    pub secret_id: String,
    pub created_at: i64,
    /// JSON objects (text).
    pub labels: String,
    pub annotations: String,
    pub replication: String,
    pub version_aliases: String,
    pub etag: String,
    /// The data key, wrapped by the master key.
    pub wrapped_key: Vec<u8>,
    /// The newest version number handed out (0: none yet).
    pub last_version: i64,
}

impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("project_id", &self.project_id)
            .field("secret_id", &self.secret_id)
            .field("last_version", &self.last_version)
            .finish_non_exhaustive()
    }
}

/// A secret version as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretVersionRecord {
    pub project_id: String,
    pub secret_id: String,
    pub version: i64,
    /// `ENABLED`, `DISABLED` or `DESTROYED`.
    pub state: String,
    pub created_at: i64,
    pub destroyed_at: Option<i64>,
    /// Encrypted payload; `None` once destroyed.
    pub payload: Option<Vec<u8>>,
    pub crc32c: i64,
    pub client_checksum: bool,
    pub etag: String,
}

impl std::fmt::Debug for SecretVersionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretVersionRecord")
            .field("secret_id", &self.secret_id)
            .field("version", &self.version)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

type SecretRow = (
    String,
    String,
    i64,
    String,
    String,
    String,
    String,
    String,
    Vec<u8>,
    i64,
);

fn secret(r: SecretRow) -> SecretRecord {
    SecretRecord {
        project_id: r.0,
        secret_id: r.1,
        created_at: r.2,
        labels: r.3,
        annotations: r.4,
        replication: r.5,
        version_aliases: r.6,
        etag: r.7,
        wrapped_key: r.8,
        last_version: r.9,
    }
}

macro_rules! select_secrets {
    ($rest:literal) => {
        concat!(
            "SELECT project_id, secret_id, created_at, labels, annotations, replication, \
             version_aliases, etag, wrapped_key, last_version FROM secrets ",
            $rest
        )
    };
}

type VersionRow = (
    String,
    String,
    i64,
    String,
    i64,
    Option<i64>,
    Option<Vec<u8>>,
    i64,
    i64,
    String,
);

fn version(r: VersionRow) -> SecretVersionRecord {
    SecretVersionRecord {
        project_id: r.0,
        secret_id: r.1,
        version: r.2,
        state: r.3,
        created_at: r.4,
        destroyed_at: r.5,
        payload: r.6,
        crc32c: r.7,
        client_checksum: r.8 != 0,
        etag: r.9,
    }
}

macro_rules! select_versions {
    ($rest:literal) => {
        concat!(
            "SELECT project_id, secret_id, version, state, created_at, destroyed_at, payload, \
             crc32c, client_checksum, etag FROM secret_versions ",
            $rest
        )
    };
}

impl Store {
    /// Stores a new secret; `Conflict` if it exists.
    pub async fn insert_secret(&self, s: &SecretRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO secrets (project_id, secret_id, created_at, labels, annotations, \
             replication, version_aliases, etag, wrapped_key, last_version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&s.project_id)
        .bind(&s.secret_id)
        .bind(s.created_at)
        .bind(&s.labels)
        .bind(&s.annotations)
        .bind(&s.replication)
        .bind(&s.version_aliases)
        .bind(&s.etag)
        .bind(&s.wrapped_key)
        .bind(s.last_version)
        .execute(&self.pool)
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    /// One secret.
    pub async fn secret(&self, project_id: &str, secret_id: &str) -> Result<Option<SecretRecord>> {
        let row: Option<SecretRow> =
            sqlx::query_as(select_secrets!("WHERE project_id = $1 AND secret_id = $2"))
                .bind(project_id)
                .bind(secret_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(secret))
    }

    /// A project's secrets, newest first.
    pub async fn secrets(&self, project_id: &str) -> Result<Vec<SecretRecord>> {
        let rows: Vec<SecretRow> = sqlx::query_as(select_secrets!(
            "WHERE project_id = $1 ORDER BY created_at DESC, secret_id"
        ))
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(secret).collect())
    }

    /// Every secret's wrapped data key (for master-key rotation).
    pub async fn all_secrets(&self) -> Result<Vec<SecretRecord>> {
        let rows: Vec<SecretRow> =
            sqlx::query_as(select_secrets!("ORDER BY project_id, secret_id"))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(secret).collect())
    }

    /// Updates labels, annotations and aliases if the etag is still `expected_etag`;
    /// `Conflict("etag")` otherwise.
    pub async fn update_secret(&self, s: &SecretRecord, expected_etag: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE secrets SET labels = $3, annotations = $4, version_aliases = $5, etag = $6 \
             WHERE project_id = $1 AND secret_id = $2 AND etag = $7",
        )
        .bind(&s.project_id)
        .bind(&s.secret_id)
        .bind(&s.labels)
        .bind(&s.annotations)
        .bind(&s.version_aliases)
        .bind(&s.etag)
        .bind(expected_etag)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() != 1 {
            return Err(Error::Conflict("etag"));
        }
        Ok(())
    }

    /// Deletes a secret with its versions and its policy. With `expected_etag`, only if it still
    /// matches (`Conflict("etag")`). Returns false if there was no such secret.
    pub async fn delete_secret(
        &self,
        project_id: &str,
        secret_id: &str,
        expected_etag: Option<&str>,
        policy_resource: &str,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "DELETE FROM secrets WHERE project_id = $1 AND secret_id = $2 \
             AND ($3 = '' OR etag = $3)",
        )
        .bind(project_id)
        .bind(secret_id)
        .bind(expected_etag.unwrap_or_default())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            let exists: Option<(String,)> = sqlx::query_as(
                "SELECT secret_id FROM secrets WHERE project_id = $1 AND secret_id = $2",
            )
            .bind(project_id)
            .bind(secret_id)
            .fetch_optional(&mut *tx)
            .await?;
            return match exists {
                Some(_) => Err(Error::Conflict("etag")),
                None => Ok(false),
            };
        }
        sqlx::query("DELETE FROM secret_versions WHERE project_id = $1 AND secret_id = $2")
            .bind(project_id)
            .bind(secret_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM iam_policies WHERE resource = $1")
            .bind(policy_resource)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Adds a version with the next number. `make` gets the number and returns the record to
    /// store (the payload is encrypted with the number bound in). Returns the stored record, or
    /// `None` if the secret does not exist.
    pub async fn add_secret_version(
        &self,
        project_id: &str,
        secret_id: &str,
        make: impl FnOnce(i64) -> SecretVersionRecord,
    ) -> Result<Option<SecretVersionRecord>> {
        let mut tx = self.pool.begin().await?;
        let next: Option<(i64,)> = sqlx::query_as(
            "UPDATE secrets SET last_version = last_version + 1 \
             WHERE project_id = $1 AND secret_id = $2 RETURNING last_version",
        )
        .bind(project_id)
        .bind(secret_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((n,)) = next else {
            return Ok(None);
        };
        let v = make(n);
        sqlx::query(
            "INSERT INTO secret_versions (project_id, secret_id, version, state, created_at, \
             destroyed_at, payload, crc32c, client_checksum, etag) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&v.project_id)
        .bind(&v.secret_id)
        .bind(v.version)
        .bind(&v.state)
        .bind(v.created_at)
        .bind(v.destroyed_at)
        .bind(&v.payload)
        .bind(v.crc32c)
        .bind(flag(v.client_checksum))
        .bind(&v.etag)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(v))
    }

    /// One version.
    pub async fn secret_version(
        &self,
        project_id: &str,
        secret_id: &str,
        version_number: i64,
    ) -> Result<Option<SecretVersionRecord>> {
        let row: Option<VersionRow> = sqlx::query_as(select_versions!(
            "WHERE project_id = $1 AND secret_id = $2 AND version = $3"
        ))
        .bind(project_id)
        .bind(secret_id)
        .bind(version_number)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(version))
    }

    /// A secret's versions, newest first.
    pub async fn secret_versions(
        &self,
        project_id: &str,
        secret_id: &str,
    ) -> Result<Vec<SecretVersionRecord>> {
        let rows: Vec<VersionRow> = sqlx::query_as(select_versions!(
            "WHERE project_id = $1 AND secret_id = $2 ORDER BY version DESC"
        ))
        .bind(project_id)
        .bind(secret_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(version).collect())
    }

    /// Moves a version to `state` (with a new etag) if its etag is still `expected_etag`;
    /// `DESTROYED` also erases the payload. `Conflict("etag")` if the etag moved.
    pub async fn set_secret_version_state(
        &self,
        v: &SecretVersionRecord,
        state: &str,
        new_etag: &str,
        now: i64,
    ) -> Result<()> {
        let destroy = state == "DESTROYED";
        let done = sqlx::query(
            "UPDATE secret_versions SET state = $4, etag = $5, \
             payload = CASE WHEN $6 = 1 THEN NULL ELSE payload END, \
             destroyed_at = CASE WHEN $6 = 1 THEN $7 ELSE destroyed_at END \
             WHERE project_id = $1 AND secret_id = $2 AND version = $3 AND etag = $8",
        )
        .bind(&v.project_id)
        .bind(&v.secret_id)
        .bind(v.version)
        .bind(state)
        .bind(new_etag)
        .bind(flag(destroy))
        .bind(now)
        .bind(&v.etag)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() != 1 {
            return Err(Error::Conflict("etag"));
        }
        if destroy && self.backend == crate::Backend::Sqlite {
            // Fold the write-ahead log into the file (with secure_delete the old payload's
            // bytes are overwritten there) and empty it, so no copy of the ciphertext remains.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Every stored byte of the secrets tables, text and binary columns alike, concatenated
    /// (for checks that no plaintext is stored).
    pub async fn secrets_raw_dump(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let text_columns = [
            "SELECT project_id || secret_id || labels || annotations || replication || \
             version_aliases || etag FROM secrets",
            "SELECT project_id || secret_id || state || etag FROM secret_versions",
            "SELECT key_id FROM secrets_master",
        ];
        for sql in text_columns {
            let rows: Vec<(String,)> = sqlx::query_as(sql).fetch_all(&self.pool).await?;
            out.extend(rows.into_iter().flat_map(|(t,)| t.into_bytes()));
        }
        let binary_columns = [
            "SELECT wrapped_key FROM secrets",
            "SELECT payload FROM secret_versions",
            "SELECT check_blob FROM secrets_master",
        ];
        for sql in binary_columns {
            let rows: Vec<(Option<Vec<u8>>,)> = sqlx::query_as(sql).fetch_all(&self.pool).await?;
            out.extend(rows.into_iter().flat_map(|(b,)| b.unwrap_or_default()));
        }
        Ok(out)
    }
}
