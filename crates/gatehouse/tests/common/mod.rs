//! What the `gatehouse` binary's integration tests share.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use gatehouse_testkit::Spawned;

/// `gatehouse identity` for project `project` on a free 127.0.0.1 port, rate limits off, its
/// state in `data_dir` (SQLite) or, with `database`, in PostgreSQL under `(url, master key)`.
pub fn identity(project: &str, data_dir: &Path, database: Option<(&str, &Path)>) -> Spawned {
    let mut args: Vec<String> = [
        "identity",
        "--project",
        project,
        "--listen",
        "127.0.0.1:0",
        "--rate-limits",
        "off",
        "--data-dir",
    ]
    .map(str::to_owned)
    .into();
    args.push(data_dir.display().to_string());
    if let Some((url, master_key)) = database {
        args.extend([
            "--database-url".into(),
            url.to_owned(),
            "--master-key-file".into(),
            master_key.display().to_string(),
        ]);
    }
    Spawned::start(Path::new(env!("CARGO_BIN_EXE_gatehouse")), &args).expect("gatehouse starts")
}

/// A new master key file in `dir`, written by `gatehouse secrets generate-master-key`.
pub fn master_key(dir: &Path) -> PathBuf {
    let path = dir.join("master.key");
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["secrets", "generate-master-key"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    path
}
