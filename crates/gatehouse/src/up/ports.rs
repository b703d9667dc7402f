//! Stable addresses: the ports `up` listened on, kept in `<data-dir>/ports.json` and taken
//! again on the next start, so key files' `token_uri`, bookmarks and scripts stay valid across
//! restarts. A port the manifest gives always wins; a kept one that another process took
//! since is replaced by a free one, with a notice.
//!
//! Owns that file and binding the listeners; it must not start servers on them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::net::TcpListener;

const FILE: &str = "ports.json";

/// The ports of the last run, by component key (`identity`, `iam`, `service:NAME`, ...), and
/// the IAM server's URL (what `gatehouse iam` puts in key files by default).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Ports {
    #[serde(default)]
    ports: BTreeMap<String, u16>,
    #[serde(default)]
    iam_url: Option<String>,
    #[serde(skip)]
    path: PathBuf,
}

impl Ports {
    /// The kept ports of `data_dir` (none when there is no file or it is unreadable).
    pub(crate) fn load(data_dir: &Path) -> Self {
        let path = data_dir.join(FILE);
        let mut ports: Ports = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        ports.path = path;
        ports
    }

    /// The kept port of a component.
    pub(crate) fn get(&self, key: &str) -> Option<u16> {
        self.ports.get(key).copied().filter(|p| *p != 0)
    }

    /// Keeps a component's port.
    pub(crate) fn set(&mut self, key: &str, port: u16) {
        self.ports.insert(key.to_owned(), port);
    }

    pub(crate) fn set_iam_url(&mut self, url: &str) {
        self.iam_url = Some(url.to_owned());
    }

    /// Writes the file.
    pub(crate) fn save(&self) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&self.path, text).with_context(|| format!("writing {}", self.path.display()))
    }

    /// Binds a component's listener on `host`: the manifest's port when it gives one (not 0),
    /// else the kept one, else any free one.
    pub(crate) async fn bind(
        &self,
        host: &str,
        key: &str,
        manifest: Option<u16>,
    ) -> anyhow::Result<TcpListener> {
        if let Some(port) = manifest.filter(|p| *p != 0) {
            return TcpListener::bind((host, port))
                .await
                .with_context(|| format!("{key}: binding {host}:{port}"));
        }
        if let Some(port) = self.get(key) {
            match TcpListener::bind((host, port)).await {
                Ok(l) => return Ok(l),
                Err(e) => tracing::warn!(
                    component = key,
                    port,
                    error = %e,
                    "the port of the last run is taken; using another one"
                ),
            }
        }
        TcpListener::bind((host, 0))
            .await
            .with_context(|| format!("{key}: binding {host}:0"))
    }

    /// The port for a component a runner binds itself: the manifest's, else the kept one when
    /// it is free now, else none (any).
    pub(crate) fn free_kept(&self, host: &str, key: &str, manifest: Option<u16>) -> Option<u16> {
        if let Some(port) = manifest.filter(|p| *p != 0) {
            return Some(port);
        }
        let port = self.get(key)?;
        std::net::TcpListener::bind((host, port)).ok().map(|_| port)
    }
}

/// The port of an `http://HOST:PORT` URL.
pub(crate) fn port_of(url: &str) -> Option<u16> {
    url.rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

/// The IAM URL of the `gatehouse up` that last ran on `data_dir` (its port is kept, so it
/// stays valid across restarts).
pub(crate) fn iam_url(data_dir: &Path) -> Option<String> {
    Ports::load(data_dir).iam_url
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[tokio::test]
    async fn a_kept_port_is_taken_again_and_a_taken_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let mut ports = Ports::load(dir.path());
        let first = ports.bind("127.0.0.1", "iam", None).await.unwrap();
        let port = first.local_addr().unwrap().port();
        ports.set("iam", port);
        ports.set_iam_url(&format!("http://127.0.0.1:{port}"));
        ports.save().unwrap();
        drop(first);

        let again = Ports::load(dir.path());
        assert_eq!(again.get("iam"), Some(port));
        let l = again.bind("127.0.0.1", "iam", None).await.unwrap();
        assert_eq!(l.local_addr().unwrap().port(), port);
        assert_eq!(
            iam_url(dir.path()).as_deref(),
            Some(format!("http://127.0.0.1:{port}").as_str())
        );
        // Held by someone else now: another port, not an error.
        let other = again.bind("127.0.0.1", "iam", None).await.unwrap();
        assert_ne!(other.local_addr().unwrap().port(), port);
        assert_eq!(again.free_kept("127.0.0.1", "iam", None), None);
        assert_eq!(again.free_kept("127.0.0.1", "iam", Some(1234)), Some(1234));
        assert_eq!(port_of("http://127.0.0.1:8080"), Some(8080));
        assert_eq!(port_of("/tmp/socket"), None);
        // The manifest's port is not negotiable.
        assert!(again.bind("127.0.0.1", "iam", Some(port)).await.is_err());
    }
}
