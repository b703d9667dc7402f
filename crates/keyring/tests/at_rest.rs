//! Signing keys at rest, attacked as someone holding a copy of the database (a stolen file, a
//! backup, a dump) would: no row holds a usable private key, the stored form opens only with
//! the master key, and keys stored in plaintext by an earlier version are sealed at the first
//! start, tokens they signed still verifying. On SQLite and on an ephemeral PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use gatehouse_keyring::envelope::Key;
use gatehouse_keyring::{Error, Keyring, Purpose, SystemClock};
use gatehouse_store::Store;
use gatehouse_testkit::{PgCluster, temp_dir};
use gatehouse_tokens::{Claims, PublicKey, SigningKey, Verifier, encode_rs256};
use serde_json::{Value, json};
use sqlx::Row as _;

const PURPOSE: Purpose = Purpose {
    name: "id_token",
    max_token_ms: 3_600_000,
    cert_subject: "securetoken.system.gserviceaccount.com",
};
const OTHER: Purpose = Purpose {
    name: "iam_access_token",
    max_token_ms: 3_600_000,
    cert_subject: "oauth2.googleapis.com",
};

/// A PKCS#8 RSA private key starts `SEQUENCE { INTEGER 0, SEQUENCE { OID rsaEncryption ...`.
const PKCS8_RSA: &[u8] = &[
    0x02, 0x01, 0x00, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every column of every `signing_keys` row as bytes, read straight from the database with no
/// gatehouse code in between (whatever the schema's column names are).
async fn raw_rows(url: &str) -> Vec<Vec<Vec<u8>>> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let rows = sqlx::query("SELECT * FROM signing_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    let out = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    if let Ok(b) = row.try_get::<Option<Vec<u8>>, _>(i) {
                        b.unwrap_or_default()
                    } else if let Ok(t) = row.try_get::<String, _>(i) {
                        t.into_bytes()
                    } else {
                        row.try_get::<i64, _>(i).unwrap().to_string().into_bytes()
                    }
                })
                .collect()
        })
        .collect();
    pool.close().await;
    out
}

/// What an attacker with the rows finds: no parseable private key, not even its DER prefix.
async fn assert_no_private_key_stored(url: &str) {
    let rows = raw_rows(url).await;
    assert!(!rows.is_empty(), "the keyring stored its keys");
    for row in rows {
        for column in row {
            assert!(
                !contains(&column, PKCS8_RSA),
                "a signing_keys column holds a PKCS#8 RSA private key"
            );
            assert!(
                SigningKey::from_pkcs8("x".into(), &column).is_err(),
                "a signing_keys column parses as a private key"
            );
        }
    }
}

/// The SQLite database, write-ahead log and shared memory as they are on disk.
fn assert_no_private_key_on_disk(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !contains(&bytes, PKCS8_RSA),
            "{} holds a PKCS#8 RSA private key",
            path.display()
        );
    }
}

fn claims() -> Claims {
    json!({"sub": "attacker-test", "exp": 4_102_444_800_i64})
        .as_object()
        .unwrap()
        .clone()
}

fn published(keyring: &Keyring, purpose: &Purpose) -> Verifier {
    let (jwks, _) = keyring.jwks(purpose).unwrap();
    let jwks: Value = serde_json::from_str(&jwks).unwrap();
    Verifier::new(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| PublicKey::from_jwk(k).unwrap()),
    )
}

async fn load(store: &Store, master: &Arc<Key>) -> Result<Keyring, Error> {
    Keyring::load(
        store.clone(),
        Arc::new(SystemClock),
        master.clone(),
        3600,
        &[PURPOSE, OTHER],
    )
    .await
}

/// A fresh database: the keys are stored sealed, open only with the master key.
async fn sealed_from_the_start(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let master = Arc::new(Key::generate().unwrap());
    let keyring = load(&store, &master).await.unwrap();
    let token = keyring.sign(&PURPOSE, &claims()).unwrap();
    assert_no_private_key_stored(url).await;

    // Another master key opens nothing, and says so before anything is written.
    let stranger = Arc::new(Key::generate().unwrap());
    assert!(matches!(
        load(&store, &stranger).await,
        Err(Error::WrongMasterKey { .. })
    ));
    // The right one opens the same keys again.
    let again = load(&store, &master).await.unwrap();
    assert_eq!(
        again.current(&PURPOSE).unwrap().signer_kid(),
        keyring.current(&PURPOSE).unwrap().signer_kid()
    );
    published(&again, &PURPOSE)
        .verify_signature(&token)
        .unwrap();
    store.close().await;
}

/// The schema and rows an earlier version left: migrations 0001–0005, plaintext PKCS#8.
async fn legacy_database(url: &str, migrations: &str, key: &SigningKey, purpose: &Purpose) {
    sqlx::any::install_default_drivers();
    let only_old = temp_dir("keyring-old-migrations").unwrap();
    for entry in std::fs::read_dir(migrations).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.as_str() < "0006" {
            std::fs::copy(&path, only_old.path().join(name)).unwrap();
        }
    }
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::migrate::Migrator::new(only_old.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    sqlx::query(
        "INSERT INTO signing_keys (kid, purpose, private_der, created_at, retire_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(key.kid())
    .bind(purpose.name)
    .bind(key.pkcs8_der())
    .bind(now - 1000)
    .bind(now + 3_600_000)
    .bind(now + 7_200_000)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

/// A database from before: its plaintext keys (of every purpose, loaded or not) are sealed at
/// the first start with the master key; the key keeps its kid and what it signed verifies.
async fn plaintext_rows_are_sealed(url: &str, migrations: &str) {
    let old = SigningKey::generate().unwrap();
    legacy_database(url, migrations, &old, &PURPOSE).await;
    let token = encode_rs256(&old, &claims()).unwrap();

    let store = Store::connect(url).await.unwrap();
    let master = Arc::new(Key::generate().unwrap());
    let keyring = Keyring::load(
        store.clone(),
        Arc::new(SystemClock),
        master.clone(),
        3600,
        &[OTHER],
    )
    .await
    .unwrap();
    drop(keyring);
    // The row of a purpose this process does not load was sealed all the same.
    assert_no_private_key_stored(url).await;

    let keyring = load(&store, &master).await.unwrap();
    assert_eq!(keyring.current(&PURPOSE).unwrap().signer_kid(), old.kid());
    published(&keyring, &PURPOSE)
        .verify_signature(&token)
        .unwrap();
    assert!(matches!(
        load(&store, &Arc::new(Key::generate().unwrap())).await,
        Err(Error::WrongMasterKey { .. })
    ));
    store.close().await;
}

const SQLITE_MIGRATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../store/migrations/sqlite");
const PG_MIGRATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../store/migrations/postgres");

#[tokio::test]
async fn sqlite_keys_are_sealed() {
    let dir = temp_dir("keyring-sealed").unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("g.db").display());
    sealed_from_the_start(&url).await;
    assert_no_private_key_on_disk(dir.path());
}

#[tokio::test]
async fn sqlite_plaintext_keys_from_before_are_sealed() {
    let dir = temp_dir("keyring-legacy").unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("g.db").display());
    plaintext_rows_are_sealed(&url, SQLITE_MIGRATIONS).await;
    // Nor does the plaintext linger in freed pages or the write-ahead log.
    assert_no_private_key_on_disk(dir.path());
}

#[tokio::test]
async fn postgres_keys_are_sealed() {
    let pg = PgCluster::start().expect("ephemeral PostgreSQL");
    sealed_from_the_start(&pg.create_database("sealed").unwrap()).await;
    plaintext_rows_are_sealed(&pg.create_database("legacy").unwrap(), PG_MIGRATIONS).await;
}
