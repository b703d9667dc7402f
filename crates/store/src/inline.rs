//! Hot-path reads of an SQLite database on the calling thread.
//!
//! sqlx runs each SQLite connection on a worker thread of its own: every statement is a
//! round trip between threads (two wake-ups and two context switches), which cost more CPU than
//! the read itself — a one-row read by primary key from the page cache takes a few
//! microseconds, the hand-offs around it tens. The few reads every request makes (a refresh
//! token, an account by id or e-mail) go through these connections instead, on the task's
//! own thread, with the same SQL text as the sqlx path.
//!
//! The connections only read (`PRAGMA query_only`): every write stays on the sqlx pool, so
//! transactions, write locking and the full/read-only classification are unchanged. A read
//! here sees every transaction committed before it starts (WAL), so a process always reads
//! its own writes.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Params, Row};

use crate::Result;

/// Typed column access by name, the same for an sqlx row and a row read here, so one mapping
/// function serves both paths.
pub(crate) trait Columns {
    fn col<T>(&self, name: &str) -> Result<T>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any> + rusqlite::types::FromSql;
}

impl Columns for sqlx::any::AnyRow {
    fn col<T>(&self, name: &str) -> Result<T>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any> + rusqlite::types::FromSql,
    {
        Ok(sqlx::Row::try_get(self, name)?)
    }
}

impl Columns for Row<'_> {
    fn col<T>(&self, name: &str) -> Result<T>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any> + rusqlite::types::FromSql,
    {
        Ok(self.get(name)?)
    }
}

/// Connections kept open for reuse; more may exist for a moment under load.
const KEEP: usize = 4;

/// A small pool of read-only connections to one SQLite file.
#[derive(Debug)]
pub(crate) struct InlineReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl InlineReader {
    /// The reader for `url` when it names an SQLite file (`sqlite://path?...`,
    /// `sqlite:path`); `None` for an in-memory database, which other connections cannot see.
    pub(crate) fn for_url(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("sqlite:")?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() || path.starts_with(':') || url.contains("mode=memory") {
            return None;
        }
        Some(Self {
            path: Path::new(path).to_path_buf(),
            idle: Mutex::new(Vec::new()),
        })
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(2))?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        match self.idle.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Opens one connection and reads the migrations table: the URL named the database the
    /// pool opened (a path sqlx reads differently would fail here, not on a request).
    pub(crate) fn check(&self) -> Result<()> {
        self.query("SELECT version FROM _sqlx_migrations LIMIT 1", (), |_| {
            Ok(())
        })?;
        Ok(())
    }

    /// Runs `sql` with `params` and maps each row with `map`.
    pub(crate) fn query<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        mut map: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let popped = self.idle().pop();
        let conn = match popped {
            Some(c) => c,
            None => self.open()?,
        };
        let read = (|| {
            let mut stmt = conn.prepare_cached(sql)?;
            let mut rows = stmt.query(params)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(map(row)?);
            }
            Ok(out)
        })();
        // A connection that failed is dropped rather than kept: the next read opens a new one.
        if read.is_ok() {
            let mut idle = self.idle();
            if idle.len() < KEEP {
                idle.push(conn);
            }
        }
        read
    }
}

#[cfg(test)]
mod tests {
    use super::InlineReader;

    fn path(url: &str) -> Option<String> {
        InlineReader::for_url(url).map(|r| r.path.display().to_string())
    }

    #[test]
    fn file_urls_name_their_file_and_memory_has_none() {
        assert_eq!(
            path("sqlite:///var/g/s.db?mode=rwc").as_deref(),
            Some("/var/g/s.db")
        );
        assert_eq!(path("sqlite://rel/s.db").as_deref(), Some("rel/s.db"));
        assert_eq!(path("sqlite:s.db").as_deref(), Some("s.db"));
        assert_eq!(path("sqlite::memory:"), None);
        assert_eq!(path("sqlite://x.db?mode=memory"), None);
        assert_eq!(path("sqlite://"), None);
        assert_eq!(path("postgres://h/db"), None);
    }
}
