//! Test harness for Gatehouse: ephemeral PostgreSQL clusters, free ports, temporary
//! directories, a recording SMTP server, a spawner for the real `gatehouse` binary, a
//! `node --test` runner that fails when no test ran, and (feature `world`) the IAM + Secret
//! Manager + runner world that the runner and app tests deploy into.
//!
//! Missing prerequisites fail loudly with the install hint.
//!
//! Must not: turn a test into a skip, or be used by production code (no crate's
//! `[dependencies]` may name it, only `[dev-dependencies]`).

#![forbid(unsafe_code)]

pub mod adversarial;
mod drain;
mod mount;
pub mod node;
mod pg;
mod smtp;
mod spawn;
#[cfg(feature = "world")]
mod world;

pub use drain::{DrainReport, drain};
pub use mount::Tmpfs;
pub use node::{NodeSummary, NodeTests};
pub use pg::PgCluster;
pub use smtp::{SmtpSink, StoredMail};
pub use spawn::Spawned;
#[cfg(feature = "world")]
pub use world::{World, WorldBuilder};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
