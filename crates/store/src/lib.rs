//! Storage for Gatehouse: one SQL code path over embedded SQLite (the default) and PostgreSQL.
//!
//! Owns the schema (embedded migrations, one directory per backend), the connection pool and
//! every SQL statement. All statements are plain `$N`-placeholder SQL that both backends accept
//! through sqlx's `Any` driver; times are epoch milliseconds and flags are 0/1 integers so that
//! the portable `Any` types suffice.
//!
//! Must not: make domain decisions (callers pass fully formed records and get records back;
//! what the database itself enforces, unique constraints and optimistic versions, comes back
//! as [`Error::Conflict`]) or speak HTTP.

#![forbid(unsafe_code)]

mod cache;
mod iam;
mod identity;
mod inline;
mod keys;
mod master;
mod operations;
mod secrets;

pub use iam::{AuditRecord, ProjectRecord, ServiceAccountKeyRecord, ServiceAccountRecord};
pub use identity::{IdentityLink, IdpFlowRecord, OobCodeRecord, RefreshTokenRecord, UserRecord};
pub use keys::{PlaintextSigningKey, SealedSigningKey, SigningKeyRecord};
pub use master::Rewrapped;
pub use operations::OperationRecord;
pub use secrets::{SecretRecord, SecretVersionRecord};

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (or in-memory database).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A unique constraint was violated; the payload names the constraint's subject as far as
    /// it can be told (`email`, `phone`, `identity`, `primary`).
    #[error("conflict on {0}")]
    Conflict(&'static str),
    /// The database URL is not one we support.
    #[error("unsupported database url (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
    /// The database refuses writes because its storage is full or read-only (or failing):
    /// reads still work, and writes work again once space is freed. Safe to retry later.
    #[error("storage {0}: {1}")]
    Unwritable(Unwritable, #[source] sqlx::Error),
    /// The database cannot be reached now: refused or lost connections, no connection within
    /// the pool's acquire timeout, a server that is starting, recovering or shutting down
    /// (PostgreSQL `08xxx`, `57P01`–`57P03`). Safe to retry later.
    #[error("database unreachable: {0}")]
    Unreachable(#[source] sqlx::Error),
    /// The database failed (I/O, a statement, migration...).
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// A read on the calling thread failed (SQLite; see `inline`).
    #[error("database error: {0}")]
    Read(#[from] rusqlite::Error),
    /// Migrations could not be applied.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Why the database refuses writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwritable {
    /// No space left (SQLite `SQLITE_FULL`, PostgreSQL `53100 disk_full`).
    Full,
    /// The file system or the database is read-only (SQLite `SQLITE_READONLY`, PostgreSQL
    /// `25006`).
    ReadOnly,
    /// The storage failed an I/O operation (SQLite `SQLITE_IOERR`, PostgreSQL `58030`).
    Failing,
}

impl std::fmt::Display for Unwritable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Full => "is full",
            Self::ReadOnly => "is read-only",
            Self::Failing => "is failing (I/O error)",
        })
    }
}

impl Unwritable {
    /// Classifies a database error by its code: SQLite's primary result code (the low byte
    /// of the extended code) or PostgreSQL's SQLSTATE.
    fn of(err: &sqlx::Error) -> Option<Self> {
        let sqlx::Error::Database(db) = err else {
            return None;
        };
        let code = db.code()?;
        // Told apart by the driver, not by the code's shape: PostgreSQL's SQLSTATEs for these
        // (53100, 25006, 58030) are all digits, like SQLite's result codes.
        if db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some()
        {
            return match code.as_ref() {
                "53100" => Some(Self::Full),
                "25006" => Some(Self::ReadOnly),
                "58030" => Some(Self::Failing),
                _ => None,
            };
        }
        // SQLite: SQLITE_FULL 13, SQLITE_READONLY 8, SQLITE_IOERR 10 (ENOSPC is reported as
        // SQLITE_FULL); the extended code carries the primary one in its low byte.
        match code.parse::<u32>().ok()? & 0xff {
            13 => Some(Self::Full),
            8 => Some(Self::ReadOnly),
            10 => Some(Self::Failing),
            _ => None,
        }
    }
}

/// Whether `err` says the database cannot be reached now (rather than that a statement failed).
fn unreachable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
                && db.code().is_some_and(|c| {
                    c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
                })
        }
        _ => false,
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match Unwritable::of(&err) {
            Some(why) => Self::Unwritable(why, err),
            None if unreachable(&err) => Self::Unreachable(err),
            None => Self::Database(err),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The connection pool and the statements over it.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    users: Arc<cache::UserCache>,
    /// Hot-path reads of an SQLite file, on the calling thread.
    inline: Option<Arc<inline::InlineReader>>,
}

impl Store {
    /// Connects to `url` (`sqlite://path?mode=rwc`, `sqlite::memory:`, `postgres://...`) and applies
    /// the embedded migrations for that backend.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(Error::UnsupportedUrl);
        };
        let options = AnyConnectOptions::from_str(url)?.disable_statement_logging();
        let mut pool_options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        pool_options = match backend {
            // SQLite serialises writers anyway; a few connections let readers proceed in WAL mode.
            // A SQLite connection is a file handle in this process: it cannot go stale while
            // pooled, so it is not pinged before each use (sqlx's default). That ping is a round
            // trip to the connection's worker thread and doubled the cost of every query.
            Backend::Sqlite => pool_options
                .max_connections(4)
                .test_before_acquire(false)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        // Deleted content is overwritten, so an erased secret payload does not
                        // linger in free pages.
                        conn.execute("PRAGMA secure_delete = ON").await?;
                        Ok(())
                    })
                }),
            Backend::Postgres => pool_options.max_connections(16),
        };
        // A connection whose transaction could not be ended (a COMMIT or ROLLBACK refused by a
        // full or read-only disk) is closed, not pooled: SQLite would keep the write lock
        // (every later write "database is locked", even after space is freed) and later
        // statements on it would run inside the stale transaction, never committed.
        pool_options = pool_options.after_release(|conn, _| {
            Box::pin(async move {
                if !sqlx::Connection::is_in_transaction(&*conn) {
                    return Ok(true);
                }
                // Flushes the rollback queued by a dropped transaction, then looks again.
                sqlx::Connection::ping(&mut *conn).await?;
                Ok(!sqlx::Connection::is_in_transaction(&*conn))
            })
        });
        let pool = pool_options.connect_with(options).await?;
        let mut store = Self {
            pool,
            backend,
            users: Arc::new(cache::UserCache::new(1000)),
            inline: None,
        };
        store.migrate().await?;
        store.inline = inline::InlineReader::for_url(url)
            .filter(|r| match r.check() {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "reads go through the pool: the database file could not be opened directly");
                    false
                }
            })
            .map(Arc::new);
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => {
                self.pool.execute("PRAGMA journal_mode = WAL").await?;
                sqlx::migrate!("migrations/sqlite").run(&self.pool).await?;
            }
            Backend::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// How long an account read may be served from this process's cache (default 1 s; 0 = off).
    /// Writes through this store are always visible at once; writes by other processes sharing
    /// the database become visible within this time.
    pub fn set_account_cache_ttl(&self, ttl: Duration) {
        self.users
            .set_ttl(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    }

    /// Whether the hot-path reads (refresh tokens, accounts by id or e-mail) run on the
    /// calling thread: an SQLite file that could be opened directly.
    pub fn reads_inline(&self) -> bool {
        self.inline.is_some()
    }

    /// The backend this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.pool.execute("SELECT 1").await?;
        Ok(())
    }

    /// Problems the database finds in its own files: SQLite's `PRAGMA integrity_check` lines
    /// (empty when it says `ok`). PostgreSQL keeps its pages consistent through its WAL and has
    /// no cheap whole-database check: an answer is all that is asked of it.
    pub async fn integrity_problems(&self) -> Result<Vec<String>> {
        match self.backend {
            Backend::Sqlite => {
                let lines: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
                    .fetch_all(&self.pool)
                    .await?;
                Ok(lines.into_iter().filter(|l| l != "ok").collect())
            }
            Backend::Postgres => {
                self.ping().await?;
                Ok(Vec::new())
            }
        }
    }

    /// After plaintext was overwritten: moves the SQLite write-ahead log into the database file
    /// and truncates it, so the replaced pages do not linger in the log (`secure_delete` zeroes
    /// them in the database file). Best effort; PostgreSQL keeps old row versions until
    /// `VACUUM` (see docs/operations.md).
    pub(crate) async fn scrub_log(&self) {
        if self.backend == Backend::Sqlite
            && let Err(e) = self.pool.execute("PRAGMA wal_checkpoint(TRUNCATE)").await
        {
            tracing::warn!(error = %e, "could not checkpoint the write-ahead log");
        }
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Reads a project's stored settings document (JSON text), if any.
    pub async fn project_settings(&self, project_id: &str) -> Result<Option<String>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT settings FROM project_settings WHERE project_id = $1")
                .bind(project_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.0))
    }

    /// Replaces a project's stored settings document.
    pub async fn put_project_settings(&self, project_id: &str, settings: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO project_settings (project_id, settings) VALUES ($1, $2) \
             ON CONFLICT (project_id) DO UPDATE SET settings = excluded.settings",
        )
        .bind(project_id)
        .bind(settings)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Maps a unique violation to [`Error::Conflict`] naming the subject; anything else passes through.
fn map_unique(err: sqlx::Error) -> Error {
    if let sqlx::Error::Database(db) = &err
        && db.kind() == sqlx::error::ErrorKind::UniqueViolation
    {
        let text = format!("{} {}", db.message(), db.constraint().unwrap_or_default());
        let subject = if text.contains("email") {
            "email"
        } else if text.contains("phone") {
            "phone"
        } else if text.contains("identities") || text.contains("provider_id") {
            "identity"
        } else {
            "primary"
        };
        return Error::Conflict(subject);
    }
    Error::from(err)
}

fn flag(v: bool) -> i64 {
    i64::from(v)
}
