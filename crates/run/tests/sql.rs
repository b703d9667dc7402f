//! Managed PostgreSQL users (issue 14 #15): a password with every character the old `DO $$…$$`
//! block and shell-free argv quoting got wrong is set exactly, on create and on reset, and the
//! user logs in with it (and not with anything else). A postmaster killed with SIGKILL is
//! started again by the runner on the same socket (issue 16).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gatehouse_run::{SqlInstance, SqlInstanceSpec};
use gatehouse_testkit::temp_dir;

const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";

/// `SELECT current_user` as `user` with `password` over the instance's socket.
fn login(socket_dir: &Path, user: &str, password: &str) -> Result<String, String> {
    assert!(
        Path::new(PSQL).is_file(),
        "psql missing: apt-get install -y postgresql-15"
    );
    let out = Command::new(PSQL)
        .arg("-h")
        .arg(socket_dir)
        .args([
            "-U",
            user,
            "-d",
            "app",
            "-X",
            "-w",
            "-tAc",
            "SELECT current_user",
        ])
        .env_clear()
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_with_quotes_dollars_and_backslashes_work() {
    let dir = temp_dir("run-sql").unwrap();
    let spec = SqlInstanceSpec {
        name: "pw-db".into(),
        databases: vec!["app".into()],
        users: vec![],
        tcp_port: None,
    };
    let first = r#"a$$'"\b; END$$; DROP ROLE x; -- :'name' \gexec"#;
    let start = |pw: &'static str| {
        let spec = spec.clone();
        let dir = dir.path().to_path_buf();
        async move {
            SqlInstance::start(
                spec,
                "p",
                "r",
                &dir.join("data"),
                &dir.join("cloudsql"),
                &[("app-user".into(), pw.into())],
            )
            .await
            .expect("PostgreSQL 15 starts (apt-get install -y postgresql-15)")
        }
    };
    let db = start(first).await;
    assert_eq!(
        login(&db.socket_dir, "app-user", first).unwrap(),
        "app-user"
    );
    let wrong = login(&db.socket_dir, "app-user", "a$$").unwrap_err();
    assert!(wrong.contains("password authentication failed"), "{wrong}");
    db.stop().await;

    // A restart with a changed secret resets the password (the ALTER path).
    let second = "x\\'$$\n\t\"$1";
    let db = start(second).await;
    assert_eq!(
        login(&db.socket_dir, "app-user", second).unwrap(),
        "app-user"
    );
    assert!(login(&db.socket_dir, "app-user", first).is_err());
    db.stop().await;
}

/// Issue 16 scenario 1: the postmaster killed with SIGKILL is started again by the runner, on
/// the same socket, with the committed data there; a stop ends the supervision (nothing comes
/// back after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_postmaster_is_restarted_on_the_same_socket() {
    use gatehouse_run::sql::Health;
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let dir = temp_dir("run-sql-kill").unwrap();
    let spec = SqlInstanceSpec {
        name: "kill-db".into(),
        databases: vec!["app".into()],
        users: vec![],
        tcp_port: None,
    };
    let db = SqlInstance::start(
        spec,
        "p",
        "r",
        &dir.path().join("data"),
        &dir.path().join("cloudsql"),
        &[("app-user".into(), "pw-1".into())],
    )
    .await
    .expect("PostgreSQL 15 starts (apt-get install -y postgresql-15)");
    let socket = db.socket_dir.join(".s.PGSQL.5432");
    let before = db.status();
    assert_eq!((before.health, before.restarts), (Health::Ready, 0));
    let first = before.pid.expect("a running postmaster");
    let sql = |q: &'static str| {
        let dir = db.socket_dir.clone();
        move || query(&dir, "app-user", "pw-1", q)
    };
    sql("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")().unwrap();

    let mut watch = db.watch().unwrap();
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    let back = tokio::time::timeout(
        Duration::from_secs(60),
        watch.wait_for(|s| s.health == Health::Ready && s.restarts == 1),
    )
    .await
    .expect("the instance is back within 60 s")
    .unwrap()
    .to_owned();
    let second = back.pid.unwrap();
    assert_ne!(second, first, "a new postmaster");
    assert!(alive(second));
    assert_eq!(
        db.socket_dir.join(".s.PGSQL.5432"),
        socket,
        "the same socket path"
    );
    assert_eq!(sql("SELECT n FROM kept")().unwrap(), "42");

    // A second kill is survived as well (the supervision goes on).
    kill(Pid::from_raw(second as i32), Signal::SIGKILL).unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        watch.wait_for(|s| s.health == Health::Ready && s.restarts == 2),
    )
    .await
    .expect("back again within 60 s")
    .unwrap();
    assert_eq!(sql("SELECT count(*) FROM kept")().unwrap(), "1");

    // Stopped on request: the server exits and is not started again.
    let third = db.status().pid.unwrap();
    db.stop().await;
    assert_eq!(db.status().health, Health::Stopped);
    assert!(!alive(third), "the postmaster has exited");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(db.status().health, Health::Stopped);
    assert!(
        !dir.path().join("data/sql/kill-db/postmaster.pid").exists(),
        "no server runs on the data directory"
    );
    assert!(sql("SELECT 1")().is_err());
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// `q` as `user` over the socket, in `app`; its output.
fn query(socket_dir: &Path, user: &str, password: &str, q: &str) -> Result<String, String> {
    let out = Command::new(PSQL)
        .arg("-h")
        .arg(socket_dir)
        .args(["-U", user, "-d", "app", "-X", "-w", "-tAc", q])
        .env_clear()
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
