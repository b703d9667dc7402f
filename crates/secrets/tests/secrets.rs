//! Secret Manager on the real store (SQLite file and an ephemeral PostgreSQL): Google's
//! semantics, IAM checks, and encryption at rest — no plaintext in the database, destroyed
//! versions gone for good, master-key rotation keeps every payload readable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use gatehouse_iam::{Error, Iam, IamConfig, Principal};
use gatehouse_keyring::{ManualClock, SystemClock};
use gatehouse_secrets::{Key, NewPayload, Secrets, crc32c};
use gatehouse_store::Store;
use gatehouse_testkit::{PgCluster, temp_dir};
use serde_json::json;

const PAYLOAD_1: &[u8] = b"postgres-password-6f1d2c-FIRST";
const PAYLOAD_2: &[u8] = b"postgres-password-9a8b7c-SECOND";

fn payload(data: &[u8]) -> NewPayload<'_> {
    NewPayload { data, crc32c: None }
}

/// Runs the story; `raw` returns every byte the database holds for the secrets tables (to look
/// for plaintext).
async fn story<F, Fut>(store: Store, raw: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<u8>>,
{
    let master = Arc::new(Key::generate().unwrap());
    let master_text = master.to_base64();
    let iam = Iam::new(
        store.clone(),
        Arc::new(SystemClock),
        master.clone(),
        IamConfig {
            cache_ttl: std::time::Duration::ZERO,
            ..IamConfig::default()
        },
    )
    .await
    .unwrap();
    let secrets = Secrets::new(store.clone(), iam.clone(), master)
        .await
        .unwrap();
    let admin = iam
        .create_account("sec-proj", "sec-admin", "", "")
        .await
        .unwrap();
    let app = iam
        .create_account("sec-proj", "vote-app", "", "")
        .await
        .unwrap();
    let other = iam
        .create_account("sec-proj", "other-app", "", "")
        .await
        .unwrap();
    let p = |a: &gatehouse_store::ServiceAccountRecord| Principal::ServiceAccount {
        email: a.email.clone(),
        unique_id: a.unique_id.clone(),
    };
    let (admin, app, other) = (p(&admin), p(&app), p(&other));
    iam.edit_binding(
        "projects/sec-proj",
        "roles/secretmanager.admin",
        &admin.member(),
        true,
    )
    .await
    .unwrap();

    // Deny by default: nobody but the admin may create.
    assert!(matches!(
        secrets
            .create_secret(
                &app,
                "sec-proj",
                "db-pass",
                &json!({"replication": {"automatic": {}}})
            )
            .await,
        Err(Error::PermissionDenied(_))
    ));
    let s = secrets
        .create_secret(
            &admin,
            "sec-proj",
            "db-pass",
            &json!({"replication": {"automatic": {}}, "labels": {"env": "test"}}),
        )
        .await
        .unwrap();
    let number = iam.project("sec-proj").await.unwrap().project_number;
    assert_eq!(s.name(), format!("projects/{number}/secrets/db-pass"));
    assert!(matches!(
        secrets
            .create_secret(
                &admin,
                "sec-proj",
                "db-pass",
                &json!({"replication": {"automatic": {}}})
            )
            .await,
        Err(Error::AlreadyExists(_))
    ));
    for bad in ["", "has space", "dot.ted"] {
        assert!(matches!(
            secrets
                .create_secret(
                    &admin,
                    "sec-proj",
                    bad,
                    &json!({"replication": {"automatic": {}}})
                )
                .await,
            Err(Error::InvalidArgument(_))
        ));
    }
    // Both the project id and the number name it.
    let by_number = format!("projects/{number}/secrets/db-pass");
    assert_eq!(
        secrets.get_secret(&admin, &by_number).await.unwrap().name(),
        by_number
    );
    let name = "projects/sec-proj/secrets/db-pass";

    // No versions yet: latest is NOT_FOUND.
    assert!(matches!(
        secrets
            .access(&admin, &format!("{name}/versions/latest"))
            .await,
        Err(Error::NotFound(_))
    ));
    let v1 = secrets
        .add_version(&admin, name, payload(PAYLOAD_1))
        .await
        .unwrap();
    assert_eq!(v1.record.version, 1);
    // A checksum is checked when given.
    assert!(matches!(
        secrets
            .add_version(
                &admin,
                name,
                NewPayload {
                    data: PAYLOAD_2,
                    crc32c: Some(1)
                }
            )
            .await,
        Err(Error::InvalidArgument(_))
    ));
    let v2 = secrets
        .add_version(
            &admin,
            name,
            NewPayload {
                data: PAYLOAD_2,
                crc32c: Some(i64::from(crc32c(PAYLOAD_2))),
            },
        )
        .await
        .unwrap();
    assert_eq!(v2.record.version, 2, "a refused add uses no number");
    assert!(v2.record.client_checksum);
    assert!(matches!(
        secrets
            .add_version(&admin, name, payload(&vec![0u8; 65_537]))
            .await,
        Err(Error::InvalidArgument(_))
    ));

    // Only an accessor reads payloads.
    let latest = format!("{name}/versions/latest");
    assert!(matches!(
        secrets.access(&app, &latest).await,
        Err(Error::PermissionDenied(m)) if m.contains("secretmanager.versions.access")
    ));
    iam.edit_binding(
        "projects/sec-proj/secrets/db-pass",
        "roles/secretmanager.secretAccessor",
        &app.member(),
        true,
    )
    .await
    .unwrap();
    let got = secrets.access(&app, &latest).await.unwrap();
    assert_eq!(got.data.as_slice(), PAYLOAD_2);
    assert_eq!(
        got.name,
        format!("projects/{number}/secrets/db-pass/versions/2")
    );
    assert_eq!(got.crc32c, crc32c(PAYLOAD_2));
    assert_eq!(
        secrets
            .access(&app, &format!("{name}/versions/1"))
            .await
            .unwrap()
            .data
            .as_slice(),
        PAYLOAD_1
    );
    assert!(matches!(
        secrets.access(&other, &latest).await,
        Err(Error::PermissionDenied(_))
    ));
    // The accessor role does not manage.
    assert!(matches!(
        secrets
            .set_state(&app, &format!("{name}/versions/1"), "DISABLED", None)
            .await,
        Err(Error::PermissionDenied(_))
    ));
    // The runner's call: a reference for the service's account.
    assert_eq!(
        secrets
            .resolve_for(&app, "sec-proj", "db-pass:1")
            .await
            .unwrap()
            .data
            .as_slice(),
        PAYLOAD_1
    );
    assert_eq!(
        secrets
            .resolve_for(&app, "sec-proj", "db-pass")
            .await
            .unwrap()
            .data
            .as_slice(),
        PAYLOAD_2
    );
    assert!(
        secrets
            .resolve_for(&other, "sec-proj", "db-pass:1")
            .await
            .is_err()
    );

    // Disabled: FAILED_PRECONDITION, also through latest; enabled again reads.
    let v3 = format!("{name}/versions/2");
    let disabled = secrets
        .set_state(&admin, &v3, "DISABLED", None)
        .await
        .unwrap();
    assert_eq!(disabled.record.state, "DISABLED");
    assert!(matches!(
        secrets.access(&app, &latest).await,
        Err(Error::FailedPrecondition(m)) if m.ends_with("is in DISABLED state.")
    ));
    // A stale etag is refused.
    assert!(matches!(
        secrets
            .set_state(&admin, &v3, "ENABLED", Some(&v2.record.etag))
            .await,
        Err(Error::FailedPrecondition(_))
    ));
    secrets
        .set_state(&admin, &v3, "ENABLED", Some(&disabled.record.etag))
        .await
        .unwrap();
    assert!(secrets.access(&app, &latest).await.is_ok());

    // No plaintext anywhere in the database.
    let bytes = raw().await;
    assert!(!bytes.is_empty());
    for p in [PAYLOAD_1, PAYLOAD_2] {
        assert!(
            !bytes.windows(p.len()).any(|w| w == p),
            "plaintext found in the database"
        );
    }

    // Master-key rotation keeps every payload readable; the old key no longer opens.
    let new_master = Key::generate().unwrap();
    let old = Key::from_base64(&master_text).unwrap();
    assert_eq!(
        Secrets::rotate_master_key(&store, &old, &new_master)
            .await
            .unwrap(),
        // One secret; IAM's two signing keys (ID tokens, access tokens).
        (1, 2)
    );
    let rotated = Secrets::new(
        store.clone(),
        iam.clone(),
        Key::from_base64(&new_master.to_base64()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        rotated
            .access(&app, &format!("{name}/versions/1"))
            .await
            .unwrap()
            .data
            .as_slice(),
        PAYLOAD_1
    );
    assert_eq!(
        rotated.access(&app, &latest).await.unwrap().data.as_slice(),
        PAYLOAD_2
    );
    let refused = Secrets::new(
        store.clone(),
        iam.clone(),
        Key::from_base64(&master_text).unwrap(),
    )
    .await
    .unwrap_err();
    assert!(
        refused.to_string().contains("master key does not match"),
        "{refused}"
    );
    // A wrong "old" key rotates nothing.
    assert!(
        Secrets::rotate_master_key(&store, &Key::generate().unwrap(), &Key::generate().unwrap())
            .await
            .is_err()
    );
    assert!(rotated.access(&app, &latest).await.is_ok());

    // Destroy: the ciphertext is gone, the version cannot come back.
    let v1_name = format!("{name}/versions/1");
    let ciphertext = store
        .secret_version("sec-proj", "db-pass", 1)
        .await
        .unwrap()
        .unwrap()
        .payload
        .unwrap();
    let has = |bytes: &[u8]| {
        bytes
            .windows(ciphertext.len())
            .any(|w| w == ciphertext.as_slice())
    };
    assert!(
        has(&raw().await),
        "the ciphertext is stored before the destroy"
    );
    let destroyed = rotated
        .set_state(&admin, &v1_name, "DESTROYED", None)
        .await
        .unwrap();
    assert_eq!(destroyed.record.state, "DESTROYED");
    assert!(destroyed.record.payload.is_none());
    assert!(destroyed.record.destroyed_at.is_some());
    assert!(matches!(
        rotated.access(&app, &v1_name).await,
        Err(Error::FailedPrecondition(m)) if m.ends_with("is in DESTROYED state.")
    ));
    assert!(matches!(
        rotated.set_state(&admin, &v1_name, "ENABLED", None).await,
        Err(Error::FailedPrecondition(_))
    ));
    let stored = store
        .secret_version("sec-proj", "db-pass", 1)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.payload.is_none(), "the ciphertext is erased");
    assert!(!has(&raw().await), "no copy of the ciphertext remains");

    // Latest is the newest version whatever its state.
    rotated
        .set_state(&admin, &v3, "DISABLED", None)
        .await
        .unwrap();
    assert!(matches!(
        rotated.access(&app, &latest).await,
        Err(Error::FailedPrecondition(_))
    ));

    // Lists, labels, aliases.
    let list = rotated
        .list_versions(&admin, name, Some("state:DISABLED"))
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].record.version, 2);
    assert_eq!(
        rotated
            .list_secrets(&admin, "sec-proj", Some("labels.env=test"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        rotated
            .list_secrets(&admin, "sec-proj", Some("labels.env=prod"))
            .await
            .unwrap()
            .is_empty()
    );
    let updated = rotated
        .update_secret(
            &admin,
            name,
            &json!({"labels": {"env": "prod"}, "versionAliases": {"stable": 2}}),
            &["labels".into(), "versionAliases".into()],
        )
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&updated.record.labels).unwrap()["env"],
        "prod"
    );
    rotated
        .set_state(&admin, &v3, "ENABLED", None)
        .await
        .unwrap();
    assert_eq!(
        rotated
            .access(&app, &format!("{name}/versions/stable"))
            .await
            .unwrap()
            .data
            .as_slice(),
        PAYLOAD_2
    );

    // Delete: gone, and so are its versions.
    assert!(matches!(
        rotated.delete_secret(&admin, name, Some("\"0\"")).await,
        Err(Error::FailedPrecondition(_))
    ));
    rotated.delete_secret(&admin, name, None).await.unwrap();
    assert!(matches!(
        rotated.get_secret(&admin, name).await,
        Err(Error::NotFound(_))
    ));
    assert!(
        store
            .secret_version("sec-proj", "db-pass", 2)
            .await
            .unwrap()
            .is_none()
    );

    // Every access decision is in the audit log, with the version actually read.
    let log = iam.audit_log(1000).await.unwrap();
    assert!(log.iter().any(|r| r.allowed
        && r.permission == "secretmanager.versions.access"
        && r.resource == "projects/sec-proj/secrets/db-pass/versions/2"
        && r.principal == app.member()));
    assert!(
        log.iter()
            .any(|r| !r.allowed && r.principal == other.member())
    );
}

#[tokio::test]
async fn sqlite() {
    let dir = temp_dir("secrets-sqlite").unwrap();
    let file = dir.path().join("s.db");
    let store = Store::connect(&format!("sqlite://{}?mode=rwc", file.display()))
        .await
        .unwrap();
    let path = dir.path().to_owned();
    story(store, move || {
        let path = path.clone();
        async move {
            // The database file and its write-ahead log, as on disk.
            let mut all = Vec::new();
            for entry in std::fs::read_dir(&path).unwrap() {
                all.extend(std::fs::read(entry.unwrap().path()).unwrap_or_default());
            }
            all
        }
    })
    .await;
}

#[tokio::test]
async fn postgres() {
    let pg = PgCluster::start().expect("ephemeral PostgreSQL");
    let url = pg.create_database("secrets").unwrap();
    let store = Store::connect(&url).await.unwrap();
    let dump = store.clone();
    story(store, move || {
        let dump = dump.clone();
        async move {
            // Every column of every row of the secrets tables, as the server returns them.
            dump.secrets_raw_dump().await.unwrap()
        }
    })
    .await;
}

/// Secret Manager keeps time by its IAM's clock: `createTime`, `destroyTime`, "newest first"
/// and the audit log follow it, whatever the wall clock says.
#[tokio::test]
async fn times_come_from_the_iam_clock() {
    // 2023-11-14T22:13:20Z.
    const T0: i64 = 1_700_000_000_000;
    let dir = temp_dir("secrets-clock").unwrap();
    let file = dir.path().join("s.db");
    let store = Store::connect(&format!("sqlite://{}?mode=rwc", file.display()))
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let master = Arc::new(Key::generate().unwrap());
    let iam = Iam::new(
        store.clone(),
        clock.clone(),
        master.clone(),
        IamConfig::default(),
    )
    .await
    .unwrap();
    let secrets = Secrets::new(store, iam.clone(), master).await.unwrap();
    let local = Principal::Local;
    let body = json!({"replication": {"automatic": {}}});

    let first = secrets
        .create_secret(&local, "clock-proj", "aa-first", &body)
        .await
        .unwrap();
    assert_eq!(first.record.created_at, T0);
    clock.advance(1_500);
    let second = secrets
        .create_secret(&local, "clock-proj", "zz-second", &body)
        .await
        .unwrap();
    assert_eq!(second.record.created_at, T0 + 1_500);
    let listed: Vec<String> = secrets
        .list_secrets(&local, "clock-proj", None)
        .await
        .unwrap()
        .iter()
        .map(|s| s.record.secret_id.clone())
        .collect();
    assert_eq!(listed, ["zz-second", "aa-first"]);

    clock.advance(2_000);
    let version = secrets
        .add_version(
            &local,
            "projects/clock-proj/secrets/zz-second",
            payload(PAYLOAD_1),
        )
        .await
        .unwrap();
    assert_eq!(version.record.created_at, T0 + 3_500);
    assert_eq!(version.record.destroyed_at, None);

    clock.advance(250);
    let destroyed = secrets
        .set_state(
            &local,
            "projects/clock-proj/secrets/zz-second/versions/1",
            "DESTROYED",
            None,
        )
        .await
        .unwrap();
    assert_eq!(destroyed.record.destroyed_at, Some(T0 + 3_750));
    assert_eq!(destroyed.record.created_at, T0 + 3_500);

    let log = iam.audit_log(100).await.unwrap();
    assert!(log.iter().any(|r| r.at == T0 + 3_750
        && r.permission == "secretmanager.versions.destroy"
        && r.resource == "projects/clock-proj/secrets/zz-second/versions/1"));
}
