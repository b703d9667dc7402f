//! Config versions: compiling a config into a [`Loaded`] version (validation, OpenID discovery,
//! a first JWKS fetch), and the one task that applies new configs.
//!
//! Every way a config changes — [`Gateway::apply`], [`Gateway::reload`] (SIGHUP, the admin
//! API), the file watcher ([`Gateway::watch_config`]) and [`Gateway::restore`] — sends a
//! request to that task, so changes are made one at a time, in the order asked, and two never
//! race for a version number. A config is parsed and validated before it is swapped in; a bad one keeps the
//! running version. Owns no request handling: requests read the active version lock-free.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use notify_debouncer_mini::notify::RecursiveMode;
use tokio::sync::{mpsc, oneshot, watch};

use crate::Gateway;
use crate::auth::{Authenticator, Jwks};
use crate::config::{self, Problem, ServiceConfig};
use crate::metrics::{Metrics, OperationMetrics};

/// How many versions are kept for [`Gateway::restore`].
pub(crate) const KEPT_VERSIONS: usize = 10;

/// One loaded, immutable config version.
#[derive(Debug)]
pub struct Loaded {
    pub version: u64,
    pub config: ServiceConfig,
    pub auth: Authenticator,
    /// The metric handles of each route, in the order of `config.routes`.
    pub(crate) operations: Vec<OperationMetrics>,
}

/// Errors loading a config.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading the config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the config {} is not UTF-8", path.display())]
    NotUtf8 {
        path: PathBuf,
        #[source]
        source: std::string::FromUtf8Error,
    },
    #[error("no config file to reload (the gateway was started from text)")]
    NoFile,
    #[error("building the HTTP client for discovery and JWKS")]
    Client(#[source] reqwest::Error),
    #[error("invalid config:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    #[error("OpenID discovery for {issuer} failed")]
    Discovery {
        issuer: String,
        #[source]
        source: DiscoveryError,
    },
    #[error("the gateway is shutting down; the config was not applied")]
    Stopped,
}

/// Why OpenID discovery of a provider's JWKS URI failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("fetching {url}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("{url} has no jwks_uri")]
    NoJwksUri { url: String },
}

async fn discover_jwks(client: &reqwest::Client, issuer: &str) -> Result<String, DiscoveryError> {
    let base = if issuer.contains("://") {
        issuer.to_owned()
    } else {
        format!("https://{issuer}")
    };
    let url = format!(
        "{}/.well-known/openid-configuration",
        base.trim_end_matches('/')
    );
    let fetch = |source| DiscoveryError::Fetch {
        url: url.clone(),
        source,
    };
    let res = client.get(&url).send().await.map_err(fetch)?;
    if !res.status().is_success() {
        return Err(DiscoveryError::Status {
            url,
            status: res.status(),
        });
    }
    let doc: serde_json::Value = res.json().await.map_err(fetch)?;
    doc.get("jwks_uri")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or(DiscoveryError::NoJwksUri { url })
}

/// Compiles `text` into a loaded version: validates, resolves JWKS URIs by discovery, fetches
/// every provider's keys once, and resolves the routes' metric handles.
pub(crate) async fn prepare(
    http: &reqwest::Client,
    metrics: &Metrics,
    jwks: gatehouse_verify::CacheOptions,
    text: &str,
    version: u64,
) -> Result<Loaded, LoadError> {
    let doc = config::parse_document(text).map_err(|p| LoadError::Invalid(vec![p]))?;
    let mut config = config::compile(&doc).map_err(LoadError::Invalid)?;
    let mut providers = Vec::new();
    for p in &mut config.providers {
        let uri = match &p.jwks_uri {
            Some(u) => u.clone(),
            None => {
                let u = discover_jwks(http, &p.issuer).await.map_err(|source| {
                    LoadError::Discovery {
                        issuer: p.issuer.clone(),
                        source,
                    }
                })?;
                p.jwks_uri = Some(u.clone());
                u
            }
        };
        providers.push((
            p.clone(),
            Arc::new(Jwks::with_options(uri, http.clone(), jwks)),
        ));
    }
    let auth = Authenticator::new(providers);
    auth.prefetch().await;
    let operations = config
        .routes
        .iter()
        .map(|r| metrics.operation(&r.operation_id))
        .collect();
    Ok(Loaded {
        version,
        config,
        auth,
        operations,
    })
}

/// What the reload task has done (see [`Gateway::reload_status`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Configs tried since start, applied or refused, whatever asked for them.
    pub attempts: u64,
    /// Why the newest attempt was refused; `None` once a config is applied.
    pub last_error: Option<String>,
}

type Reply = oneshot::Sender<Result<u64, LoadError>>;

/// A request to the reload task.
pub(crate) enum Request {
    /// Apply this text ([`Gateway::apply`]).
    Text(String, Reply),
    /// Re-read the config file and apply it ([`Gateway::reload`]: SIGHUP, the admin API).
    File(Reply),
    /// The config file may have changed (the watcher): applied only if its content differs
    /// from the config applied last and from the one refused last.
    FileChanged,
    /// Make a kept version active again ([`Gateway::restore`]).
    Restore(u64, oneshot::Sender<Option<u64>>),
}

/// The sending side kept by the gateway.
pub(crate) struct Reloads {
    tx: mpsc::UnboundedSender<Request>,
    status: watch::Receiver<ReloadStatus>,
}

/// Starts the reload task for `gateway`; it ends when the gateway is dropped. `applied` is the
/// text of the version the gateway starts with.
pub(crate) fn start(make: impl FnOnce(Reloads) -> Arc<Gateway>, applied: Vec<u8>) -> Arc<Gateway> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (status_tx, status) = watch::channel(ReloadStatus::default());
    let gateway = make(Reloads { tx, status });
    let task = Task {
        gateway: Arc::downgrade(&gateway),
        applied,
        refused: None,
        status: status_tx,
    };
    tokio::spawn(task.run(rx));
    gateway
}

/// The reload task's state.
struct Task {
    gateway: Weak<Gateway>,
    /// The text of the newest config applied.
    applied: Vec<u8>,
    /// File content that was refused, so the watcher does not try it again until it changes.
    refused: Option<Vec<u8>>,
    status: watch::Sender<ReloadStatus>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
        while let Some(request) = rx.recv().await {
            let Some(gw) = self.gateway.upgrade() else {
                return;
            };
            match request {
                Request::Text(text, reply) => {
                    let result = self.apply(&gw, text.into_bytes()).await;
                    let _ = reply.send(result);
                }
                Request::File(reply) => {
                    let result = match read(&gw).await {
                        Ok(text) => self.apply(&gw, text).await,
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(result);
                }
                Request::FileChanged => self.file_changed(&gw).await,
                Request::Restore(version, reply) => {
                    let _ = reply.send(gw.reactivate(version));
                }
            }
        }
    }

    async fn file_changed(&mut self, gw: &Gateway) {
        let Some(path) = gw.config_path.as_deref() else {
            return;
        };
        let Ok(now) = tokio::fs::read(path).await else {
            // Mid-rename, or gone for now: the next event reads it again.
            return;
        };
        if now == self.applied || self.refused.as_ref() == Some(&now) {
            return;
        }
        match self.apply(gw, now.clone()).await {
            Ok(v) => {
                self.refused = None;
                tracing::info!(version = v, "config file changed; new version active");
            }
            Err(e) => {
                tracing::error!(
                    error = &e as &(dyn std::error::Error + 'static),
                    "changed config refused; keeping the current config"
                );
                // Discovery may work next time; a config that is wrong stays refused.
                if !matches!(e, LoadError::Discovery { .. }) {
                    self.refused = Some(now);
                }
            }
        }
    }

    /// Validates `text` and, only if it is good, makes it the active version.
    async fn apply(&mut self, gw: &Gateway, text: Vec<u8>) -> Result<u64, LoadError> {
        let result = match String::from_utf8(text) {
            Ok(text) => {
                let next = gw.newest_version() + 1;
                match prepare(&gw.http, &gw.metrics, gw.options.jwks, &text, next).await {
                    Ok(loaded) => {
                        gw.activate(Arc::new(loaded));
                        self.applied = text.into_bytes();
                        tracing::info!(version = next, "config activated");
                        Ok(next)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(source) => Err(LoadError::NotUtf8 {
                path: gw.config_path.clone().unwrap_or_default(),
                source,
            }),
        };
        self.status.send_modify(|s| {
            s.attempts += 1;
            s.last_error = result.as_ref().err().map(|e| chain(e));
        });
        result
    }
}

async fn read(gw: &Gateway) -> Result<Vec<u8>, LoadError> {
    let path = gw.config_path.as_deref().ok_or(LoadError::NoFile)?;
    tokio::fs::read(path)
        .await
        .map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })
}

impl Reloads {
    async fn ask(&self, request: impl FnOnce(Reply) -> Request) -> Result<u64, LoadError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(request(reply))
            .map_err(|_| LoadError::Stopped)?;
        answer.await.map_err(|_| LoadError::Stopped)?
    }
}

impl Gateway {
    /// Validates `text` and, only if it is good, makes it the active version atomically.
    /// In-flight requests finish on the version they started with.
    pub async fn apply(&self, text: &str) -> Result<u64, LoadError> {
        self.reloads
            .ask(|reply| Request::Text(text.to_owned(), reply))
            .await
    }

    /// Re-reads the config file given at start and applies it.
    pub async fn reload(&self) -> Result<u64, LoadError> {
        self.reloads.ask(Request::File).await
    }

    /// Makes a previous version active again (in order with the reloads asked before it).
    /// `None`: no such version is kept, or the gateway is shutting down.
    pub async fn restore(&self, version: u64) -> Option<u64> {
        let (reply, answer) = oneshot::channel();
        self.reloads
            .tx
            .send(Request::Restore(version, reply))
            .ok()?;
        answer.await.ok().flatten()
    }

    /// What the reload task has done: wait on it for a reload to be tried (tests, tooling).
    pub fn reload_status(&self) -> watch::Receiver<ReloadStatus> {
        self.reloads.status.clone()
    }

    /// Watches the config file given at start and applies it whenever its content changes:
    /// file-system events on its directory (and its target's, if it is a symlink) are
    /// debounced for `debounce`, so editors' atomic renames and symlink swaps are seen once
    /// the writing is over. A bad file is logged and the running version kept; the same
    /// content is not applied twice. If the platform cannot watch files, the file is checked
    /// every `debounce` instead. Returns when the gateway is dropped.
    pub async fn watch_config(self: Arc<Self>, debounce: Duration) {
        let Some(path) = self.config_path.clone() else {
            return;
        };
        let tx = self.reloads.tx.clone();
        drop(self);
        let notify = tx.clone();
        let watcher = notify_debouncer_mini::new_debouncer(
            debounce,
            move |events: notify_debouncer_mini::DebounceEventResult| {
                if events.is_ok_and(|e| !e.is_empty()) {
                    let _ = notify.send(Request::FileChanged);
                }
            },
        );
        let watching = watcher.map_err(|e| e.to_string()).and_then(|mut w| {
            for dir in directories(&path) {
                w.watcher()
                    .watch(&dir, RecursiveMode::NonRecursive)
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            Ok(w)
        });
        match watching {
            Ok(_watcher) => {
                // A change made before the watcher was in place is seen too.
                if tx.send(Request::FileChanged).is_ok() {
                    tx.closed().await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot watch the config file; checking it every {debounce:?}");
                let mut tick = tokio::time::interval(debounce.max(Duration::from_millis(10)));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if tx.send(Request::FileChanged).is_err() {
                                return;
                            }
                        }
                        () = tx.closed() => return,
                    }
                }
            }
        }
    }
}

/// The directories whose entries decide what `path` reads: its own, and its target's when it
/// is a symlink (a swapped link or an edited target).
fn directories(path: &Path) -> Vec<PathBuf> {
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut dirs = vec![parent(path)];
    if let Ok(target) = std::fs::canonicalize(path) {
        let d = parent(&target);
        if std::fs::canonicalize(&dirs[0]).ok().as_ref() != Some(&d) {
            dirs.push(d);
        }
    }
    dirs
}

/// An error and its sources, `: `-separated.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
