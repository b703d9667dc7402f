//! Master-key rotation covers the signing keys: after `rotate-master-key` and a restart with the
//! new key, the same keys (same `kid`s, same published JWK set) are back and verify what they
//! signed before; the old master key opens none of them, not even read straight from the table.
//! On SQLite and on an ephemeral PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use gatehouse_iam::{Iam, IamConfig};
use gatehouse_keyring::{Keyring, Purpose, SystemClock};
use gatehouse_secrets::{Key, Secrets};
use gatehouse_store::Store;
use gatehouse_testkit::{PgCluster, temp_dir};
use serde_json::json;
use sqlx::Row as _;

/// Identity's ID-token keys and IAM's service-account ID-token keys: the same purposes the
/// servers use (a keyring finds a purpose by its name).
const ID_TOKEN: Purpose = *gatehouse_identity::KeyPurpose::IdToken.spec();
const GOOGLE_ID_TOKEN: Purpose = gatehouse_iam::GOOGLE_ID_TOKEN;

async fn keyring(store: &Store, master: &Arc<Key>) -> Result<Keyring, gatehouse_keyring::Error> {
    Keyring::load(
        store.clone(),
        Arc::new(SystemClock),
        master.clone(),
        3600,
        &[ID_TOKEN],
    )
    .await
}

/// (kid, wrapped data key) of every stored signing key, read with plain SQL.
async fn stored_data_keys(url: &str) -> Vec<(String, Vec<u8>)> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let rows = sqlx::query("SELECT kid, wrapped_key FROM signing_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.iter()
        .map(|r| (r.get::<String, _>(0), r.get::<Vec<u8>, _>(1)))
        .collect()
}

async fn rotation_covers_signing_keys(url: &str) {
    let old = Arc::new(Key::generate().unwrap());
    let new = Arc::new(Key::generate().unwrap());
    let store = Store::connect(url).await.unwrap();
    // The identity server's keys and IAM's, as the processes that sign create them.
    let before = keyring(&store, &old).await.unwrap();
    let iam = Iam::new(
        store.clone(),
        Arc::new(SystemClock),
        old.clone(),
        IamConfig::default(),
    )
    .await
    .unwrap();
    let iam_kid = iam
        .keyring()
        .current(&GOOGLE_ID_TOKEN)
        .unwrap()
        .signer_kid()
        .to_owned();
    let claims = json!({"sub": "u1", "exp": 4_102_444_800_i64});
    let token = before.sign(&ID_TOKEN, claims.as_object().unwrap()).unwrap();
    let (jwks_before, _) = before.jwks(&ID_TOKEN).unwrap();
    let kid_before = before.current(&ID_TOKEN).unwrap().signer_kid().to_owned();
    drop((before, iam));

    // `gatehouse secrets rotate-master-key`: no secrets, three signing keys.
    let (secrets, keys) = Secrets::rotate_master_key(&store, &old, &new)
        .await
        .unwrap();
    assert_eq!((secrets, keys), (0, 3));

    // Restarted with the new key: the same keys, published the same way.
    let after = keyring(&store, &new).await.unwrap();
    assert_eq!(after.current(&ID_TOKEN).unwrap().signer_kid(), kid_before);
    let (jwks_after, _) = after.jwks(&ID_TOKEN).unwrap();
    assert_eq!(jwks_after, jwks_before);
    // (The verifier over exactly the published keys, as the JWK sets are equal.)
    after
        .current(&ID_TOKEN)
        .unwrap()
        .verifier()
        .verify_signature(&token)
        .unwrap();
    let iam = Iam::new(
        store.clone(),
        Arc::new(SystemClock),
        new.clone(),
        IamConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        iam.keyring()
            .current(&GOOGLE_ID_TOKEN)
            .unwrap()
            .signer_kid(),
        iam_kid
    );

    // The old key is refused at start, by the keyring and by Secret Manager alike...
    assert!(matches!(
        keyring(&store, &old).await,
        Err(gatehouse_keyring::Error::WrongMasterKey { .. })
    ));
    assert!(
        Secrets::new(store.clone(), iam.clone(), old.clone())
            .await
            .is_err()
    );
    // ...and opens no stored data key, read straight from the table; the new key opens each.
    let stored = stored_data_keys(url).await;
    assert_eq!(stored.len(), 3);
    for (kid, wrapped) in &stored {
        let aad = format!("signing_keys/{kid}");
        assert!(
            old.unwrap_key(wrapped, &aad).is_err(),
            "old key opens {kid}"
        );
        assert!(
            new.unwrap_key(wrapped, &aad).is_ok(),
            "new key fails on {kid}"
        );
    }
    // Rotating again from the stale key changes nothing.
    assert!(
        Secrets::rotate_master_key(&store, &old, &new)
            .await
            .is_err()
    );
    store.close().await;
}

#[tokio::test]
async fn sqlite_rotation_covers_signing_keys() {
    let dir = temp_dir("rotate-sqlite").unwrap();
    rotation_covers_signing_keys(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("g.db").display()
    ))
    .await;
}

#[tokio::test]
async fn postgres_rotation_covers_signing_keys() {
    let pg = PgCluster::start().expect("ephemeral PostgreSQL");
    rotation_covers_signing_keys(&pg.create_database("rotate").unwrap()).await;
}
