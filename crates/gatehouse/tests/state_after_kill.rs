//! Issue 16 scenario 1, the identity server's state: sign-ups from several clients at once, the
//! server killed with SIGKILL in the middle of them, started again on the same database. Every
//! acknowledged sign-up is an account that signs in with its password and whose refresh token
//! still works; a sign-up that was not acknowledged either exists whole (signs in) or not at
//! all; SQLite's integrity check finds nothing. On SQLite and on PostgreSQL.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_testkit::{PgCluster, Spawned, temp_dir};
use serde_json::{Value, json};

const CLIENTS: usize = 4;

fn identity(url: &str, dir: &Path, master_key: &Path) -> Spawned {
    common::identity("cut-proj", dir, Some((url, master_key)))
}

fn call(url: &str, body: &Value) -> Result<(u16, Value), reqwest::Error> {
    let res = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?
        .post(url)
        .json(body)
        .send()?;
    let status = res.status().as_u16();
    Ok((status, res.json().unwrap_or(Value::Null)))
}

/// A sign-up that was sent: acknowledged with its user id and refresh token, or not.
#[derive(Debug, Clone)]
struct SignUp {
    email: String,
    acked: Option<(String, String)>,
}

fn kill_during_sign_ups(database_url: &str, dir: &Path) {
    let master_key = common::master_key(dir);
    let server = identity(database_url, &dir.join("a"), &master_key);
    let base = server.url();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Vec::<SignUp>::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (base, stop, sent) = (base.clone(), stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let email = format!("c{c}-{n}@example.com");
                    n += 1;
                    let answer = call(
                        &format!("{base}/identitytoolkit.googleapis.com/v1/accounts:signUp?key=k"),
                        &json!({"email": email, "password": "correct-horse-9", "returnSecureToken": true}),
                    );
                    let acked = match answer {
                        Ok((200, v)) => Some((
                            v["localId"].as_str().unwrap().to_owned(),
                            v["refreshToken"].as_str().unwrap().to_owned(),
                        )),
                        Ok((status, v)) => {
                            assert!(status >= 500, "{status} {v}");
                            None
                        }
                        // The server is gone: the end of this client.
                        Err(_) => {
                            sent.lock().unwrap().push(SignUp { email, acked: None });
                            break;
                        }
                    };
                    sent.lock().unwrap().push(SignUp { email, acked });
                }
            })
        })
        .collect();
    // Sign-ups for a while, then the power cut.
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while sent
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.acked.is_some())
        .count()
        < 20
    {
        assert!(
            std::time::Instant::now() < until,
            "sign-ups are acknowledged"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(server); // SIGKILL
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let sent = sent.lock().unwrap().clone();

    let server = identity(database_url, &dir.join("b"), &master_key);
    let base = server.url();
    let (mut acked, mut whole, mut absent) = (0, 0, 0);
    for s in &sent {
        let (status, v) = call(
            &format!("{base}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=k"),
            &json!({"email": s.email, "password": "correct-horse-9", "returnSecureToken": true}),
        )
        .unwrap();
        match &s.acked {
            Some((local_id, refresh)) => {
                acked += 1;
                assert_eq!(
                    status, 200,
                    "acknowledged sign-up {} signs in: {v}",
                    s.email
                );
                assert_eq!(v["localId"], local_id.as_str());
                let res = reqwest::blocking::Client::new()
                    .post(format!("{base}/securetoken.googleapis.com/v1/token?key=k"))
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
                    .send()
                    .unwrap();
                assert_eq!(res.status(), 200, "its refresh token works");
            }
            None if status == 200 => whole += 1,
            None => {
                absent += 1;
                assert_eq!(
                    v["error"]["message"], "EMAIL_NOT_FOUND",
                    "an unacknowledged sign-up is whole or absent"
                );
            }
        }
    }
    eprintln!("{acked} acknowledged, {whole} unacknowledged but whole, {absent} absent");
    assert!(
        whole <= CLIENTS,
        "only sign-ups in flight at the kill exist without an answer"
    );
    drop(server);

    let problems = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = gatehouse_store::Store::connect(database_url).await.unwrap();
        let p = store.integrity_problems().await.unwrap();
        store.close().await;
        p
    });
    assert!(problems.is_empty(), "integrity check: {problems:?}");
}

#[test]
fn sign_ups_survive_a_kill_on_sqlite() {
    let dir = temp_dir("cut-sqlite").unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("id.db").display());
    kill_during_sign_ups(&url, dir.path());
}

#[test]
fn sign_ups_survive_a_kill_on_postgres() {
    let pg = PgCluster::start().expect("ephemeral PostgreSQL (apt-get install -y postgresql-15)");
    let url = pg.create_database("cut").unwrap();
    let dir = temp_dir("cut-pg").unwrap();
    kill_during_sign_ups(&url, dir.path());
}
