//! Statements for long-running operations (google.longrunning.Operation), shared by every
//! API that starts one. Metadata and results arrive as JSON text; the meaning is the caller's.

use crate::{Result, Store, flag, map_unique};

/// An operation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRecord {
    /// `projects/{p}/locations/{l}/operations/{id}`.
    pub name: String,
    /// The collection it is listed under (`projects/{p}/locations/{l}`).
    pub parent: String,
    /// JSON text.
    pub metadata: String,
    pub done: bool,
    /// JSON text, `{"response": …}` or `{"error": …}`, once done.
    pub result: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

type Row = (String, String, String, i64, Option<String>, i64, i64);

fn record(r: Row) -> OperationRecord {
    OperationRecord {
        name: r.0,
        parent: r.1,
        metadata: r.2,
        done: r.3 != 0,
        result: r.4,
        created_at: r.5,
        updated_at: r.6,
    }
}

impl Store {
    /// Stores a new operation; an existing name is [`crate::Error::Conflict`].
    pub async fn insert_operation(&self, op: &OperationRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO operations (name, parent, metadata, done, result, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&op.name)
        .bind(&op.parent)
        .bind(&op.metadata)
        .bind(flag(op.done))
        .bind(op.result.as_deref())
        .bind(op.created_at)
        .bind(op.updated_at)
        .execute(&self.pool)
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    /// The operation called `name`.
    pub async fn operation(&self, name: &str) -> Result<Option<OperationRecord>> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT name, parent, metadata, done, result, created_at, updated_at \
                 FROM operations WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(record))
    }

    /// The operations under `parent`, oldest first.
    pub async fn operations(&self, parent: &str) -> Result<Vec<OperationRecord>> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT name, parent, metadata, done, result, created_at, updated_at \
             FROM operations WHERE parent = $1 ORDER BY created_at, name",
        )
        .bind(parent)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(record).collect())
    }

    /// Replaces a running operation's metadata; false if it is missing or already done.
    pub async fn set_operation_metadata(
        &self,
        name: &str,
        metadata: &str,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE operations SET metadata = $2, updated_at = $3 WHERE name = $1 AND done = 0",
        )
        .bind(name)
        .bind(metadata)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a running operation done with `result` (and, if given, final `metadata`); false
    /// if it is missing or was already done (the first result wins).
    pub async fn finish_operation(
        &self,
        name: &str,
        result: &str,
        metadata: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE operations SET done = 1, result = $2, metadata = COALESCE($3, metadata), \
             updated_at = $4 WHERE name = $1 AND done = 0",
        )
        .bind(name)
        .bind(result)
        .bind(metadata)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets an operation; false if there was none.
    pub async fn delete_operation(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM operations WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
