//! Scenario 7 of issue 16, disk full: the identity server and Secret Manager keep their state
//! on a real file system of a few MiB (a tmpfs this test mounts), which is then filled to the
//! last byte. Writes must fail fast with the documented error shape (503 `UNAVAILABLE`, a
//! message saying the storage is full), reads and existing sessions must keep being served,
//! writes must work again once space is freed, and the database must pass
//! `PRAGMA integrity_check`. The identity server's log must not carry the password or tokens.
//!
//! Regression: a write refused by a full disk used to leave a pooled SQLite connection inside
//! its transaction, holding the write lock, so every later write answered "database is
//! locked" (500) even after space was freed.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_testkit::{Spawned, Tmpfs};
use serde_json::{Value, json};

const PASSWORD: &str = "pw-disk-full-7c1e9a";

fn identity(data_dir: &Path) -> Spawned {
    common::identity("df-proj", data_dir, None)
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs `body` to an Identity Toolkit method; the status, the body and how long it took.
fn call(base: &str, method: &str, body: &Value) -> (u16, Value, Duration) {
    let started = Instant::now();
    let res = client()
        .post(format!(
            "{base}/identitytoolkit.googleapis.com/v1/accounts:{method}?key=k"
        ))
        .json(body)
        .send()
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().unwrap_or(Value::Null), started.elapsed())
}

fn credentials(email: &str) -> Value {
    json!({"email": email, "password": PASSWORD, "returnSecureToken": true})
}

/// The documented answer to a write the full disk refused.
fn assert_storage_full(what: &str, status: u16, body: &Value, took: Duration) {
    assert_eq!(status, 503, "{what}: {body}");
    assert_eq!(body["error"]["status"], "UNAVAILABLE", "{what}: {body}");
    assert_eq!(body["error"]["code"], 503, "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("storage is full"), "{what}: {body}");
    assert!(!message.contains("SQLITE") && !message.contains("code: 13"));
    // Refused at once, not after the pool's or SQLite's busy timeouts (10 s).
    assert!(took < Duration::from_secs(5), "{what} took {took:?}");
}

/// Reads and existing sessions while full: alice's lookup and a token refresh are served.
fn assert_session_served(base: &str, id_token: &str, refresh_token: &str) {
    let (status, body, _) = call(base, "lookup", &json!({"idToken": id_token}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["users"][0]["email"], "alice@example.com");
    let res = client()
        .post(format!("{base}/securetoken.googleapis.com/v1/token?key=k"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 200, "refresh while full");
}

/// Space freed: six sign-ups (more than the pool's connections) and alice's sign-in succeed.
/// The e-mails signed up.
fn writes_work_again(base: &str) -> Vec<String> {
    let emails: Vec<String> = (0..6).map(|i| format!("v{i}@example.com")).collect();
    for email in &emails {
        let (status, body, _) = call(base, "signUp", &credentials(email));
        assert_eq!(status, 200, "sign-up after space was freed: {body}");
    }
    let (status, body, _) = call(
        base,
        "signInWithPassword",
        &credentials("alice@example.com"),
    );
    assert_eq!(status, 200, "sign-in after space was freed: {body}");
    emails
}

fn stop(server: &mut Spawned) {
    server.terminate().unwrap();
    assert!(
        server.wait_exit(Duration::from_secs(20)).unwrap().is_some(),
        "identity did not stop"
    );
}

fn integrity_check(db: &Path) -> String {
    gatehouse_testkit::require_program("sqlite3", "apt-get install -y sqlite3").unwrap();
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg("PRAGMA integrity_check; SELECT count(*) FROM users;")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn identity_refuses_writes_when_the_disk_is_full_and_keeps_serving_reads() {
    let fs = Tmpfs::mount("disk-full-identity", 8 * 1024).unwrap();
    let mut server = identity(fs.path());
    let base = server.url();

    let (status, alice, _) = call(&base, "signUp", &credentials("alice@example.com"));
    assert_eq!(status, 200, "{alice}");
    let id_token = alice["idToken"].as_str().unwrap().to_owned();
    let refresh_token = alice["refreshToken"].as_str().unwrap().to_owned();

    fs.fill().unwrap();
    assert!(fs.available().unwrap() < 4096);

    // Writes: refused with the documented error, never a 500, a panic or a hang.
    let mut acknowledged = 1;
    let mut refused = 0;
    for i in 0..5 {
        let (status, body, took) =
            call(&base, "signUp", &credentials(&format!("u{i}@example.com")));
        if status == 200 {
            acknowledged += 1;
        } else {
            assert_storage_full("sign-up", status, &body, took);
            refused += 1;
        }
    }
    assert!(refused > 0, "no sign-up was refused: the disk did not fill");
    // A sign-in stores the refresh token it returns (and the last-login time): it is a write.
    let (status, body, took) = call(
        &base,
        "signInWithPassword",
        &credentials("alice@example.com"),
    );
    assert_storage_full("sign-in", status, &body, took);

    assert_session_served(&base, &id_token, &refresh_token);
    let keys = client()
        .get(format!(
            "{base}/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
        ))
        .send()
        .unwrap();
    assert_eq!(keys.status().as_u16(), 200, "key publication while full");

    // Space freed: writes work again, on every pooled connection.
    fs.free().unwrap();
    acknowledged += writes_work_again(&base).len();

    // Stopped cleanly; the database is intact and holds every acknowledged account.
    stop(&mut server);
    assert_eq!(
        integrity_check(&fs.path().join("gatehouse.db")),
        format!("ok\n{acknowledged}")
    );

    let log = server.log().join("\n");
    assert!(log.contains("storage is full: write refused"), "{log}");
    for secret in [PASSWORD, id_token.as_str(), refresh_token.as_str()] {
        assert!(!log.contains(secret), "the log leaks a secret");
    }
}

/// Secret Manager over the real router, its store on the small file system.
#[tokio::test]
async fn secret_manager_refuses_new_versions_when_the_disk_is_full_and_keeps_serving_access() {
    use axum::body::Body;
    use axum::http::{Method, Request};
    use base64::Engine as _;
    use tower::ServiceExt as _;

    let fs = Tmpfs::mount("disk-full-secrets", 8 * 1024).unwrap();
    let db = fs.path().join("secrets.db");
    let store = gatehouse_store::Store::connect(&format!("sqlite://{}?mode=rwc", db.display()))
        .await
        .unwrap();
    let master = Arc::new(gatehouse_iam::MasterKey::generate().unwrap());
    let iam = gatehouse_iam::Iam::new(
        store.clone(),
        Arc::new(gatehouse_identity::SystemClock),
        master.clone(),
        gatehouse_iam::IamConfig::default(),
    )
    .await
    .unwrap();
    let secrets = gatehouse_secrets::Secrets::new(store.clone(), iam.clone(), master)
        .await
        .unwrap();
    let admin = iam
        .create_account("df-proj", "sm-admin", "", "")
        .await
        .unwrap();
    let policy = gatehouse_iam::Policy::from_json(&json!({"bindings": [{
        "role": "roles/secretmanager.admin",
        "members": [format!("serviceAccount:{}", admin.email)],
    }]}))
    .unwrap();
    iam.set_policy("projects/df-proj", &policy, None)
        .await
        .unwrap();
    let scopes = vec!["https://www.googleapis.com/auth/cloud-platform".to_owned()];
    let (token, _) = iam.mint_access_token(&admin, &scopes, None, 3600).unwrap();
    let app = gatehouse_secrets_http::router(secrets);
    let send = |method: Method, path: &str, body: Option<Value>| {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let app = app.clone();
        async move {
            let started = Instant::now();
            let res = app.oneshot(req).await.unwrap();
            let status = res.status().as_u16();
            let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .unwrap();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (status, body, started.elapsed())
        }
    };
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let version = |data: &str| json!({"payload": {"data": b64(data)}});
    let secret = "/v1/projects/df-proj/secrets/db-password";

    let (status, body, _) = send(
        Method::POST,
        "/v1/projects/df-proj/secrets?secretId=db-password",
        Some(json!({"replication": {"automatic": {}}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = send(
        Method::POST,
        &format!("{secret}:addVersion"),
        Some(version("first")),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    fs.fill().unwrap();
    let mut refused = 0;
    for i in 0..5 {
        let (status, body, took) = send(
            Method::POST,
            &format!("{secret}:addVersion"),
            Some(version(&format!("while-full-{i}"))),
        )
        .await;
        if status != 200 {
            assert_storage_full("addVersion", status, &body, took);
            refused += 1;
        }
    }
    assert!(refused > 0, "no version was refused: the disk did not fill");
    let (status, body, _) = send(Method::GET, &format!("{secret}/versions/1:access"), None).await;
    assert_eq!(status, 200, "access while full: {body}");
    assert_eq!(body["payload"]["data"], b64("first"));

    fs.free().unwrap();
    for i in 0..6 {
        let (status, body, _) = send(
            Method::POST,
            &format!("{secret}:addVersion"),
            Some(version(&format!("after-{i}"))),
        )
        .await;
        assert_eq!(status, 200, "addVersion after space was freed: {body}");
    }
    let (status, body, _) = send(
        Method::GET,
        &format!("{secret}/versions/latest:access"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payload"]["data"], b64("after-5"));
    store.close().await;
    let check = integrity_check_secrets(&db);
    assert_eq!(check, "ok");
}

fn integrity_check_secrets(db: &Path) -> String {
    gatehouse_testkit::require_program("sqlite3", "apt-get install -y sqlite3").unwrap();
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg("PRAGMA integrity_check;")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The identity server on PostgreSQL whose database lives in a tablespace on a small file
/// system, filled to the last byte (the WAL stays on a disk with room: PostgreSQL refuses to
/// extend a table or index with `ERROR 53100`, and keeps running). Writes that need a new page
/// are refused with the documented 503, reads and existing sessions are served, writes work
/// again once space is freed, every acknowledged account is there and `pg_amcheck` finds no
/// corruption.
#[test]
fn identity_on_postgres_refuses_writes_when_its_tablespace_is_full() {
    // The new database is a copy of template1 (about 7.5 MiB) inside the tablespace. The
    // cluster is declared last so that it stops before the file system is unmounted.
    let fs = Tmpfs::mount("disk-full-pg", 24 * 1024).unwrap();
    let pg = gatehouse_testkit::PgCluster::start()
        .expect("ephemeral PostgreSQL (apt-get install -y postgresql-15)");
    let space = fs.path().join("space");
    std::fs::create_dir(&space).unwrap();
    let url = pg.create_database_in("idfull", &space).unwrap();
    let dir = gatehouse_testkit::temp_dir("disk-full-pg-identity").unwrap();
    let key = common::master_key(dir.path());
    let mut server = common::identity("df-proj", dir.path(), Some((&url, &key)));
    let base = server.url();

    let (status, alice, _) = call(&base, "signUp", &credentials("alice@example.com"));
    assert_eq!(status, 200, "{alice}");
    let id_token = alice["idToken"].as_str().unwrap().to_owned();
    let refresh_token = alice["refreshToken"].as_str().unwrap().to_owned();
    let mut acknowledged = vec!["alice@example.com".to_owned()];

    fs.fill().unwrap();
    // Sign-ups fill the pages the tables and indexes have; the first one needing a new page
    // is refused.
    let mut refused = 0;
    for i in 0..300 {
        let email = format!("u{i}@example.com");
        let (status, body, took) = call(&base, "signUp", &credentials(&email));
        if status == 200 {
            acknowledged.push(email);
        } else {
            assert_storage_full("sign-up", status, &body, took);
            refused += 1;
            if refused == 3 {
                break;
            }
        }
    }
    assert_eq!(
        refused, 3,
        "sign-ups were not refused: the tablespace did not fill"
    );

    assert_session_served(&base, &id_token, &refresh_token);

    // Space freed: writes work again, on every pooled connection.
    fs.free().unwrap();
    acknowledged.extend(writes_work_again(&base));
    stop(&mut server);
    let stored = pg
        .psql("idfull", "SELECT email FROM users ORDER BY email")
        .unwrap();
    let stored: std::collections::BTreeSet<&str> = stored.lines().collect();
    for email in &acknowledged {
        assert!(
            stored.contains(email.as_str()),
            "acknowledged {email} is missing"
        );
    }
    assert_eq!(stored.len(), acknowledged.len(), "{stored:?}");
    pg.amcheck("idfull").unwrap();

    let log = server.log().join("\n");
    assert!(log.contains("storage is full: write refused"), "{log}");
    for secret in [PASSWORD, id_token.as_str(), refresh_token.as_str()] {
        assert!(!log.contains(secret), "the log leaks a secret");
    }
}

/// A sign-up stores the account and its first refresh token; when the second write is the one
/// the full disk refuses, the answer is the 503 and no account is left behind, so the retry
/// signs up instead of meeting `EMAIL_EXISTS`. (The long form on a full tmpfs found 11 of 511
/// refused sign-ups stored; here PostgreSQL refuses the refresh token with `53100` from a
/// trigger, so the order of the refusals is certain.)
#[test]
fn a_sign_up_refused_by_a_full_disk_leaves_no_account_behind() {
    let pg = gatehouse_testkit::PgCluster::start()
        .expect("ephemeral PostgreSQL (apt-get install -y postgresql-15)");
    let url = pg.create_database("halfway").unwrap();
    let dir = gatehouse_testkit::temp_dir("disk-full-pg-halfway").unwrap();
    let key = common::master_key(dir.path());
    let server = common::identity("df-proj", dir.path(), Some((&url, &key)));
    let base = server.url();
    let (status, body, _) = call(&base, "signUp", &credentials("first@example.com"));
    assert_eq!(status, 200, "{body}");

    pg.psql(
        "halfway",
        "CREATE FUNCTION full_disk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; \
         END $$; \
         CREATE TRIGGER full_disk BEFORE INSERT ON refresh_tokens FOR EACH ROW EXECUTE FUNCTION full_disk();",
    )
    .unwrap();
    let (status, body, took) = call(&base, "signUp", &credentials("retry@example.com"));
    assert_storage_full("sign-up", status, &body, took);
    assert_eq!(
        pg.psql(
            "halfway",
            "SELECT count(*) FROM users WHERE email = 'retry@example.com'"
        )
        .unwrap(),
        "0",
        "a refused sign-up left its account behind"
    );

    pg.psql("halfway", "DROP TRIGGER full_disk ON refresh_tokens")
        .unwrap();
    let (status, body, _) = call(&base, "signUp", &credentials("retry@example.com"));
    assert_eq!(status, 200, "the retry of a refused sign-up: {body}");
}

/// PostgreSQL down (what a full WAL disk does to it: PANIC, then a failed crash recovery, and
/// the server stays down): requests that need the database answer 503 `UNAVAILABLE` saying so,
/// not 500, within the pool's acquire timeout; once the server is back they succeed again.
#[test]
fn identity_answers_unavailable_while_its_postgres_is_down() {
    let pg = gatehouse_testkit::PgCluster::start()
        .expect("ephemeral PostgreSQL (apt-get install -y postgresql-15)");
    let url = pg.create_database("down").unwrap();
    let dir = gatehouse_testkit::temp_dir("pg-down-identity").unwrap();
    let key = common::master_key(dir.path());
    let server = common::identity("df-proj", dir.path(), Some((&url, &key)));
    let base = server.url();
    let (status, body, _) = call(&base, "signUp", &credentials("before@example.com"));
    assert_eq!(status, 200, "{body}");

    pg.stop().unwrap();
    let (status, body, took) = call(&base, "signUp", &credentials("during@example.com"));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["status"], "UNAVAILABLE", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("cannot be reached"), "{body}");
    assert!(
        !message.contains("pool") && !message.contains("os error"),
        "{body}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");

    pg.start_again().unwrap();
    let (status, body, _) = call(&base, "signUp", &credentials("during@example.com"));
    assert_eq!(status, 200, "after the database came back: {body}");
    let (status, body, _) = call(
        &base,
        "signInWithPassword",
        &credentials("before@example.com"),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        server
            .log()
            .join("\n")
            .contains("database unreachable: request refused")
    );
}
