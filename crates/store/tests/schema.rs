//! The SQLite and PostgreSQL migrations are twinned by hand; this checks that, once both are
//! applied, the two schemas say the same thing: the same tables, columns (types mapped to a
//! common vocabulary), nullability, primary keys, indexes, unique constraints and foreign
//! keys (with their ON DELETE action). A difference fails with the lines only one side has.
//!
//! The common vocabulary: `integer` (SQLite's one 64-bit INTEGER; PostgreSQL's `smallint`,
//! `integer` and `bigint`), `text`, `blob` (`BLOB` / `bytea`). A primary-key column counts as
//! NOT NULL on both sides (PostgreSQL enforces it; SQLite's rowid alias cannot be NULL).
//! Index names are not compared, only what they cover.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use gatehouse_store::Store;
use gatehouse_testkit::{PgCluster, TempDir, temp_dir};
use sqlx::{Connection, PgConnection, Row, SqliteConnection};

/// One backend's schema as a sorted set of lines (`users: column email text null`, ...).
type Schema = BTreeSet<String>;

fn common_type(declared: &str) -> String {
    let t = declared.trim().to_ascii_lowercase();
    match t.as_str() {
        "integer" | "int" | "bigint" | "smallint" | "int2" | "int4" | "int8" => "integer".into(),
        "text" | "character varying" | "varchar" => "text".into(),
        "blob" | "bytea" => "blob".into(),
        "boolean" | "bool" => "boolean".into(),
        "real" | "double precision" | "float8" => "real".into(),
        other => format!("unmapped({other})"),
    }
}

/// A foreign key: its columns, the table and columns it references, its ON DELETE action.
#[derive(Debug, Default)]
struct ForeignKey {
    columns: Vec<String>,
    table: String,
    references: Vec<String>,
    on_delete: String,
}

/// Adds one table's lines: its columns, primary key and indexes.
fn describe(
    out: &mut Schema,
    table: &str,
    columns: &[(String, String, bool)],
    primary_key: &[String],
    indexes: &[(bool, Vec<String>, bool)],
    foreign_keys: &[ForeignKey],
) {
    out.insert(format!("{table}: table"));
    for (name, ty, nullable) in columns {
        let nullable = *nullable && !primary_key.contains(name);
        let null = if nullable { "null" } else { "not null" };
        out.insert(format!("{table}: column {name} {} {null}", common_type(ty)));
    }
    out.insert(format!("{table}: primary key ({})", primary_key.join(", ")));
    for (unique, cols, partial) in indexes {
        let kind = if *unique { "unique" } else { "index" };
        let partial = if *partial { " (partial)" } else { "" };
        out.insert(format!("{table}: {kind} ({}){partial}", cols.join(", ")));
    }
    for fk in foreign_keys {
        out.insert(format!(
            "{table}: foreign key ({}) references {} ({}) on delete {}",
            fk.columns.join(", "),
            fk.table,
            fk.references.join(", "),
            fk.on_delete
        ));
    }
}

async fn sqlite_schema(conn: &mut SqliteConnection) -> Schema {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let mut out = Schema::new();
    for table in tables {
        let rows = sqlx::query(
            "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1) ORDER BY cid",
        )
        .bind(&table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let mut columns = Vec::new();
        let mut pk: Vec<(i64, String)> = Vec::new();
        for r in rows {
            let name: String = r.get("name");
            let notnull: i64 = r.get("notnull");
            let pk_pos: i64 = r.get("pk");
            if pk_pos > 0 {
                pk.push((pk_pos, name.clone()));
            }
            columns.push((name, r.get::<String, _>("type"), notnull == 0));
        }
        pk.sort();
        let primary_key: Vec<String> = pk.into_iter().map(|(_, n)| n).collect();
        let index_rows = sqlx::query(
            "SELECT name, \"unique\", origin, partial FROM pragma_index_list(?1) ORDER BY name",
        )
        .bind(&table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let mut indexes = Vec::new();
        for r in index_rows {
            let origin: String = r.get("origin");
            if origin == "pk" {
                continue; // the primary key, described above
            }
            let name: String = r.get("name");
            let cols: Vec<Option<String>> =
                sqlx::query_scalar("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")
                    .bind(&name)
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap();
            let cols = cols
                .into_iter()
                .map(|c| c.unwrap_or_else(|| "<expression>".into()))
                .collect();
            let unique: i64 = r.get("unique");
            let partial: i64 = r.get("partial");
            indexes.push((unique != 0, cols, partial != 0));
        }
        let fk_rows = sqlx::query(
            "SELECT id, \"table\" AS ref_table, \"from\" AS col, \"to\" AS ref_col, on_delete \
             FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
        )
        .bind(&table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let mut foreign_keys: BTreeMap<i64, ForeignKey> = BTreeMap::new();
        for r in fk_rows {
            let fk = foreign_keys.entry(r.get("id")).or_default();
            fk.table = r.get("ref_table");
            fk.on_delete = r.get::<String, _>("on_delete").to_ascii_lowercase();
            fk.columns.push(r.get("col"));
            // `REFERENCES t` without columns means t's primary key.
            let to: Option<String> = r.get("ref_col");
            fk.references
                .push(to.unwrap_or_else(|| "<primary key>".into()));
        }
        let foreign_keys: Vec<ForeignKey> = foreign_keys.into_values().collect();
        describe(
            &mut out,
            &table,
            &columns,
            &primary_key,
            &indexes,
            &foreign_keys,
        );
    }
    out
}

async fn postgres_schema(conn: &mut PgConnection) -> Schema {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' \
         AND table_name <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let mut out = Schema::new();
    for table in tables {
        let columns: Vec<(String, String, bool)> = sqlx::query(
            "SELECT column_name::text AS name, data_type::text AS type, \
             is_nullable::text = 'YES' AS nullable \
             FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(&table)
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get("name"), r.get("type"), r.get("nullable")))
        .collect();
        let index_rows = sqlx::query(
            "SELECT ix.indisunique AS is_unique, ix.indisprimary AS is_primary, \
             ix.indpred IS NOT NULL AS partial, \
             ARRAY(SELECT pg_get_indexdef(ix.indexrelid, k, true) \
                   FROM generate_series(1, ix.indnkeyatts) AS k ORDER BY k) AS cols \
             FROM pg_index ix \
             JOIN pg_class t ON t.oid = ix.indrelid \
             JOIN pg_namespace n ON n.oid = t.relnamespace \
             WHERE n.nspname = 'public' AND t.relname = $1",
        )
        .bind(&table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let mut primary_key = Vec::new();
        let mut indexes = Vec::new();
        for r in index_rows {
            let cols: Vec<String> = r.get("cols");
            let cols: Vec<String> = cols
                .iter()
                .map(|c| c.trim_matches('"').to_owned())
                .collect();
            if r.get::<bool, _>("is_primary") {
                primary_key = cols;
            } else {
                indexes.push((r.get("is_unique"), cols, r.get("partial")));
            }
        }
        let foreign_keys: Vec<ForeignKey> = sqlx::query(
            "SELECT c.confrelid::regclass::text AS ref_table, \
             ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord) \
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum \
                   ORDER BY k.ord) AS cols, \
             ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, ord) \
                   JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum \
                   ORDER BY k.ord) AS ref_cols, \
             c.confdeltype::text AS on_delete \
             FROM pg_constraint c \
             JOIN pg_class t ON t.oid = c.conrelid \
             JOIN pg_namespace n ON n.oid = t.relnamespace \
             WHERE c.contype = 'f' AND n.nspname = 'public' AND t.relname = $1 \
             ORDER BY c.conname",
        )
        .bind(&table)
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .into_iter()
        .map(|r| ForeignKey {
            columns: r.get("cols"),
            table: r.get("ref_table"),
            references: r.get("ref_cols"),
            on_delete: match r.get::<String, _>("on_delete").as_str() {
                "c" => "cascade",
                "n" => "set null",
                "d" => "set default",
                "r" => "restrict",
                _ => "no action",
            }
            .into(),
        })
        .collect();
        describe(
            &mut out,
            &table,
            &columns,
            &primary_key,
            &indexes,
            &foreign_keys,
        );
    }
    out
}

/// The lines only one side has, grouped by table; empty when the schemas match.
fn difference(sqlite: &Schema, postgres: &Schema) -> String {
    let mut by_table: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (side, only) in [
        ("sqlite only:  ", sqlite.difference(postgres)),
        ("postgres only:", postgres.difference(sqlite)),
    ] {
        for line in only {
            let table = line.split(':').next().unwrap_or_default();
            by_table
                .entry(table)
                .or_default()
                .push(format!("  {side} {line}"));
        }
    }
    by_table
        .into_values()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n")
}

async fn migrated_sqlite(dir: &TempDir) -> SqliteConnection {
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    Store::connect(&url).await.unwrap().close().await;
    SqliteConnection::connect(&url).await.unwrap()
}

#[tokio::test]
async fn sqlite_and_postgres_schemas_match_after_migrations() {
    let dir = temp_dir("store-schema").unwrap();
    let sqlite = sqlite_schema(&mut migrated_sqlite(&dir).await).await;

    let pg = PgCluster::start().expect("ephemeral PostgreSQL");
    let url = pg.create_database("schema").unwrap();
    Store::connect(&url).await.unwrap().close().await;
    let postgres = postgres_schema(&mut PgConnection::connect(&url).await.unwrap()).await;

    // Not vacuous: both sides see the tables the store is built on.
    for line in [
        "users: primary key (project_id, tenant_id, local_id)",
        "users: unique (project_id, tenant_id, email_unique)",
        "secret_versions: column payload blob null",
        "refresh_tokens: foreign key (project_id, tenant_id, local_id) \
         references users (project_id, tenant_id, local_id) on delete cascade",
    ] {
        assert!(sqlite.contains(line), "sqlite schema lacks {line:?}");
        assert!(postgres.contains(line), "postgres schema lacks {line:?}");
    }
    assert!(
        !sqlite.iter().any(|l| l.contains("unmapped(")),
        "a SQLite column type outside the common vocabulary:\n{sqlite:#?}"
    );
    let diff = difference(&sqlite, &postgres);
    assert!(
        diff.is_empty(),
        "the SQLite and PostgreSQL schemas differ after migrations:\n{diff}"
    );
}

/// The comparison sees a difference: a column, an index, a table, a foreign key.
#[tokio::test]
async fn a_schema_difference_is_reported() {
    let dir = temp_dir("store-schema-diff").unwrap();
    let mut conn = migrated_sqlite(&dir).await;
    let before = sqlite_schema(&mut conn).await;
    for ddl in [
        "ALTER TABLE users ADD COLUMN nickname TEXT",
        "CREATE INDEX users_nickname ON users (project_id, nickname)",
        "CREATE TABLE extra (id INTEGER NOT NULL PRIMARY KEY, note BLOB NOT NULL, \
         owner TEXT REFERENCES service_accounts (email) ON DELETE SET NULL)",
    ] {
        sqlx::query(ddl).execute(&mut conn).await.unwrap();
    }
    let after = sqlite_schema(&mut conn).await;
    let diff = difference(&after, &before);
    for expected in [
        "sqlite only:   users: column nickname text null",
        "sqlite only:   users: index (project_id, nickname)",
        "sqlite only:   extra: table",
        "sqlite only:   extra: column note blob not null",
        "sqlite only:   extra: primary key (id)",
        "sqlite only:   extra: foreign key (owner) references service_accounts (email) \
         on delete set null",
    ] {
        assert!(
            diff.contains(expected),
            "{expected:?} missing from:\n{diff}"
        );
    }
    assert!(difference(&before, &before).is_empty());
}
