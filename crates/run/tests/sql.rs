//! Managed PostgreSQL users (issue 14 #15): a password with every character the old `DO $$…$$`
//! block and shell-free argv quoting got wrong is set exactly, on create and on reset, and the
//! user logs in with it (and not with anything else).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

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
