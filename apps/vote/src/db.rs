//! The votes, on PostgreSQL (the sample's `pet_votes` table, created on start) or SQLite.
//!
//! `GET /` must cost the same at a million votes as at ten, so the counts are not recounted per
//! request as the sample does: each vote also adds one to a per-candidate tally row in the same
//! statement (spread over a few shard rows so concurrent votes do not queue on one row lock),
//! and the page reads the tally rows plus the five newest votes through an index on
//! `time_cast`, in one statement (one snapshot). A tally table created next to an existing
//! votes table starts from a count of it, under a lock. `TALLY_MODE=count` switches to the
//! sample's own queries (a COUNT per candidate per request), for comparison in benchmarks.
//!
//! Outages: a connection is waited for at most [`ACQUIRE_TIMEOUT`] (the sample waits a minute),
//! every pooled connection is checked before use (a server that restarted leaves dead ones
//! behind), and an error says whether the database was unreachable ([`DbError::Unavailable`],
//! a 503 to the client) or refused the statement ([`DbError::Failed`], a 500).

use std::sync::Arc;
use std::time::Duration;

use sqlx::{AssertSqlSafe, PgPool, Row as _, SqlitePool};

use crate::config::DbTarget;
use crate::page::{RecentVote, Tally};

/// Tally rows per candidate.
const SHARDS: i64 = 8;

/// The longest a request waits for a database connection (connecting included).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the database did not answer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Unreachable, starting up, shutting down or out of connections: a retry later may work.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (configuration, a statement refused).
    #[error("{0}")]
    Failed(String),
}

impl DbError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// SQLSTATE classes that mean "the server is not there right now": 08 connection exception,
/// 53 insufficient resources (too many connections), 57 operator intervention (shutdown,
/// crash, starting up).
fn unavailable_state(code: &str) -> bool {
    ["08", "53", "57"].iter().any(|c| code.starts_with(c))
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        let unavailable = match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(d) => d.code().is_some_and(|c| unavailable_state(&c)),
            _ => false,
        };
        if unavailable {
            Self::Unavailable(e.to_string())
        } else {
            Self::Failed(e.to_string())
        }
    }
}

#[derive(Debug, Clone)]
enum Pool {
    Pg(PgPool),
    Lite(SqlitePool),
}

#[derive(Debug, Clone)]
struct Sql {
    vote: Arc<str>,
    bump: Arc<str>,
    page: Arc<str>,
    count: Arc<str>,
    recent: Arc<str>,
}

/// The votes store.
#[derive(Debug, Clone)]
pub struct Votes {
    pool: Pool,
    sql: Sql,
    count_mode: bool,
}

fn q(s: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    AssertSqlSafe(s.clone())
}

impl Votes {
    /// Connects and creates the schema when missing.
    pub async fn open(target: &DbTarget, table: &str, count_mode: bool) -> Result<Self, DbError> {
        let e = DbError::from;
        let refused = |e: String| DbError::Failed(e);
        match target {
            DbTarget::Sqlite(path) => {
                let opts = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10));
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(5)
                    .connect_with(opts)
                    .await
                    .map_err(e)?;
                let votes = Self {
                    pool: Pool::Lite(pool),
                    sql: Sql {
                        vote: format!("INSERT INTO {table} (candidate, time_cast, uid) VALUES (?1, ?2, ?3)").into(),
                        bump: format!("UPDATE {table}_tally SET votes = votes + 1 WHERE candidate = ?1 AND shard = ?2").into(),
                        page: format!(
                            "SELECT 0 AS kind, candidate, SUM(votes) AS n FROM {table}_tally GROUP BY candidate \
                             UNION ALL SELECT * FROM (SELECT 1, candidate, time_cast FROM {table} ORDER BY time_cast DESC LIMIT 5)"
                        )
                        .into(),
                        count: format!("SELECT COUNT(vote_id) FROM {table} WHERE candidate = ?1").into(),
                        recent: format!("SELECT candidate, time_cast FROM {table} ORDER BY time_cast DESC LIMIT 5").into(),
                    },
                    count_mode,
                };
                votes.create_sqlite(table).await.map_err(e)?;
                Ok(votes)
            }
            _ => {
                let opts = match target {
                    DbTarget::PostgresUrl(url) => {
                        url.parse::<sqlx::postgres::PgConnectOptions>().map_err(e)?
                    }
                    DbTarget::PostgresSocket {
                        dir,
                        user,
                        password,
                        database,
                    } => sqlx::postgres::PgConnectOptions::new_without_pgpass()
                        .socket(dir)
                        .username(user)
                        .password(password)
                        .database(database),
                    DbTarget::PostgresTcp {
                        host,
                        port,
                        user,
                        password,
                        database,
                    } => sqlx::postgres::PgConnectOptions::new_without_pgpass()
                        .host(host)
                        .port(*port)
                        .username(user)
                        .password(password)
                        .database(database),
                    DbTarget::Sqlite(_) => return Err(refused("not a PostgreSQL target".into())),
                };
                // The sample's five connections; not its minute to get one: during an outage
                // a vote is refused quickly, and a connection left dead by a server restart
                // fails its check and is replaced.
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(5)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .test_before_acquire(true)
                    .connect_with(opts)
                    .await
                    .map_err(e)?;
                let votes = Self {
                    pool: Pool::Pg(pool),
                    sql: Sql {
                        vote: format!(
                            "WITH v AS (INSERT INTO {table} (candidate, time_cast, uid) \
                             VALUES ($1, to_timestamp($2::float8 / 1000), $3) RETURNING 1) \
                             UPDATE {table}_tally SET votes = votes + 1 WHERE candidate = $1 AND shard = $4 \
                             AND EXISTS (SELECT 1 FROM v)"
                        )
                        .into(),
                        bump: "".into(),
                        page: format!(
                            "SELECT 0 AS kind, trim(candidate) AS candidate, SUM(votes)::int8 AS n FROM {table}_tally GROUP BY candidate \
                             UNION ALL (SELECT 1, trim(candidate), (extract(epoch FROM time_cast) * 1000)::int8 \
                             FROM {table} ORDER BY time_cast DESC LIMIT 5)"
                        )
                        .into(),
                        count: format!("SELECT COUNT(vote_id) FROM {table} WHERE candidate = $1").into(),
                        recent: format!(
                            "SELECT trim(candidate), (extract(epoch FROM time_cast) * 1000)::int8 FROM {table} \
                             ORDER BY time_cast DESC LIMIT 5"
                        )
                        .into(),
                    },
                    count_mode,
                };
                votes.create_pg(table).await.map_err(e)?;
                Ok(votes)
            }
        }
    }

    async fn create_pg(&self, table: &str) -> Result<(), sqlx::Error> {
        let Pool::Pg(pool) = &self.pool else {
            return Ok(());
        };
        let mut tx = pool.begin().await?;
        // Instances starting together create the schema one at a time.
        sqlx::query("SELECT pg_advisory_xact_lock(7346021001)")
            .execute(&mut *tx)
            .await?;
        for ddl in [
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (vote_id bigserial PRIMARY KEY NOT NULL, \
                 time_cast timestamptz NOT NULL, candidate CHAR(6) NOT NULL, uid VARCHAR(128) NOT NULL)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {table}_time_cast ON {table} (time_cast DESC)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {table}_tally (candidate CHAR(6) NOT NULL, shard int2 NOT NULL, \
                 votes int8 NOT NULL, PRIMARY KEY (candidate, shard))"
            ),
        ] {
            sqlx::query(AssertSqlSafe(ddl)).execute(&mut *tx).await?;
        }
        let seeded: i64 =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}_tally")))
                .fetch_one(&mut *tx)
                .await?;
        if seeded == 0 {
            // Votes cast before the tally existed (by the sample, say) are counted once, with
            // writers held off meanwhile.
            sqlx::query(AssertSqlSafe(format!("LOCK TABLE {table} IN SHARE MODE")))
                .execute(&mut *tx)
                .await?;
            for team in ["CATS", "DOGS"] {
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {table}_tally (candidate, shard, votes) \
                     SELECT $1, s, CASE WHEN s = 0 THEN (SELECT COUNT(*) FROM {table} WHERE candidate = $1) ELSE 0 END \
                     FROM generate_series(0, {}) AS s",
                    SHARDS - 1
                )))
                .bind(team)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await
    }

    async fn create_sqlite(&self, table: &str) -> Result<(), sqlx::Error> {
        let Pool::Lite(pool) = &self.pool else {
            return Ok(());
        };
        let mut tx = pool.begin().await?;
        for ddl in [
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (vote_id INTEGER PRIMARY KEY AUTOINCREMENT, \
                 time_cast INTEGER NOT NULL, candidate TEXT NOT NULL, uid TEXT NOT NULL)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {table}_time_cast ON {table} (time_cast DESC)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {table}_tally (candidate TEXT NOT NULL, shard INTEGER NOT NULL, \
                 votes INTEGER NOT NULL, PRIMARY KEY (candidate, shard))"
            ),
        ] {
            sqlx::query(AssertSqlSafe(ddl)).execute(&mut *tx).await?;
        }
        let seeded: i64 =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}_tally")))
                .fetch_one(&mut *tx)
                .await?;
        if seeded == 0 {
            for team in ["CATS", "DOGS"] {
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {table}_tally (candidate, shard, votes) \
                     VALUES (?1, 0, (SELECT COUNT(*) FROM {table} WHERE candidate = ?1))"
                )))
                .bind(team)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await
    }

    /// Stores a vote and counts it, atomically.
    pub async fn vote(&self, team: &str, time_ms: i64, uid: &str) -> Result<(), DbError> {
        self.vote_sql(team, time_ms, uid)
            .await
            .map_err(DbError::from)
    }

    async fn vote_sql(&self, team: &str, time_ms: i64, uid: &str) -> Result<(), sqlx::Error> {
        let shard = {
            use rand::Rng as _;
            rand::rng().random_range(0..SHARDS)
        };
        match &self.pool {
            Pool::Pg(pool) => {
                let done = sqlx::query(q(&self.sql.vote))
                    .bind(team)
                    .bind(time_ms)
                    .bind(uid)
                    .bind(shard as i16)
                    .execute(pool)
                    .await?;
                if done.rows_affected() != 1 {
                    return Err(sqlx::Error::Protocol(format!(
                        "the tally row for {team} (shard {shard}) is missing"
                    )));
                }
                Ok(())
            }
            Pool::Lite(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query(q(&self.sql.vote))
                    .bind(team)
                    .bind(time_ms)
                    .bind(uid)
                    .execute(&mut *tx)
                    .await?;
                let done = sqlx::query(q(&self.sql.bump))
                    .bind(team)
                    .bind(0_i64)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() != 1 {
                    return Err(sqlx::Error::Protocol(format!(
                        "the tally row for {team} is missing"
                    )));
                }
                tx.commit().await
            }
        }
    }

    /// The counts and the five newest votes.
    pub async fn tally(&self) -> Result<Tally, DbError> {
        self.tally_sql().await.map_err(DbError::from)
    }

    async fn tally_sql(&self) -> Result<Tally, sqlx::Error> {
        if self.count_mode {
            return self.tally_by_count().await;
        }
        let rows: Vec<(i32, String, i64)> = match &self.pool {
            Pool::Pg(pool) => sqlx::query_as(q(&self.sql.page)).fetch_all(pool).await?,
            Pool::Lite(pool) => sqlx::query(q(&self.sql.page))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| Ok((r.try_get::<i64, _>(0)? as i32, r.try_get(1)?, r.try_get(2)?)))
                .collect::<Result<_, sqlx::Error>>()?,
        };
        let mut t = Tally::default();
        for (kind, candidate, n) in rows {
            match (kind, candidate.trim()) {
                (0, "CATS") => t.cats = n,
                (0, "DOGS") => t.dogs = n,
                (0, _) => {}
                _ => t.recent.push(RecentVote {
                    candidate,
                    time_ms: n,
                }),
            }
        }
        Ok(t)
    }

    /// The sample's queries: a COUNT per candidate, then the recent votes.
    async fn tally_by_count(&self) -> Result<Tally, sqlx::Error> {
        // The same three queries on either pool type.
        macro_rules! run {
            ($pool:expr) => {{
                let cats = sqlx::query_scalar(q(&self.sql.count))
                    .bind("CATS")
                    .fetch_one($pool)
                    .await?;
                let dogs = sqlx::query_scalar(q(&self.sql.count))
                    .bind("DOGS")
                    .fetch_one($pool)
                    .await?;
                let rows: Vec<(String, i64)> =
                    sqlx::query_as(q(&self.sql.recent)).fetch_all($pool).await?;
                (cats, dogs, rows)
            }};
        }
        let (cats, dogs, rows) = match &self.pool {
            Pool::Pg(pool) => run!(pool),
            Pool::Lite(pool) => run!(pool),
        };
        Ok(Tally {
            cats,
            dogs,
            recent: rows
                .into_iter()
                .map(|(candidate, time_ms)| RecentVote { candidate, time_ms })
                .collect(),
        })
    }

    /// Closes the pool (waits for connections in use to be returned).
    pub async fn close(&self) {
        match &self.pool {
            Pool::Pg(p) => p.close().await,
            Pool::Lite(p) => p.close().await,
        }
    }
}
