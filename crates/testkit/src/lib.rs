//! Test harness for Gatehouse: ephemeral PostgreSQL clusters, free ports, temporary
//! directories, a recording SMTP server, a spawner for the real `gatehouse` binary, a
//! `node --test` runner that fails when no test ran, the adversarial corpus runner,
//! one-request router calls, request → JSON for HTTP clients, and Chromium for page tests.
//!
//! It knows no Gatehouse domain crate but `gatehouse-tokens`, so every crate's tests can use
//! it without a dependency cycle; the IAM + Secret Manager world lives one layer up, in
//! `gatehouse-world`.
//!
//! Missing prerequisites fail loudly with the install hint.
//!
//! Must not: turn a test into a skip, or be used by production code (no crate's
//! `[dependencies]` may name it, only `[dev-dependencies]`).

#![forbid(unsafe_code)]

pub mod abusive;
pub mod adversarial;
mod browser;
mod drain;
mod fetch;
mod mount;
pub mod node;
mod oneshot;
mod pg;
mod smtp;
mod spawn;

pub use browser::{run_in_chromium, workspace_root};
pub use drain::{DrainReport, drain};
pub use fetch::FetchJson;
pub use mount::Tmpfs;
pub use node::{NodeSummary, NodeTests};
pub use oneshot::{Reply, send};
pub use pg::PgCluster;
pub use smtp::{SmtpSink, StoredMail};
pub use spawn::Spawned;
pub use tempfile::TempDir;

use std::path::PathBuf;

use anyhow::{Context, bail};

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A fresh directory under the system temp dir whose name starts with `prefix`; removed when
/// the returned [`TempDir`] is dropped.
pub fn temp_dir(prefix: &str) -> anyhow::Result<TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir()
        .with_context(|| format!("creating a temporary directory `{prefix}-*`"))
}

/// Whether this process runs as root (initdb then has to run as `postgres`).
pub(crate) fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Finds a program or fails with an install hint.
pub fn require_program(name: &str, hint: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("`{name}` is required but not installed: {hint}")
}
