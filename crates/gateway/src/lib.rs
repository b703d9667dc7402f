//! The API gateway: serves an OpenAPI 2.0 + `x-google-*` config the way Google API Gateway /
//! ESPv2 does — JWT authentication before anything reaches a backend, routing by path template,
//! path translation, backend ID tokens, and ESPv2's error bodies.
//!
//! Owns: config compilation (`config`, `template`), authentication (`auth`), the gateway's own
//! identity (`identity`), the proxy (`proxy`) and config versions. Holds no state beyond caches.

#![forbid(unsafe_code)]

pub mod auth;
mod chunked;
pub mod config;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod h1;
pub mod identity;
mod metrics;
mod proxy;
pub mod template;

pub use config::{Problem, ServiceConfig, validate};
pub use error::GatewayError;
pub use metrics::Metrics;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use crate::auth::{Authenticator, Jwks};
use crate::identity::IdTokens;

/// Options that do not come from the OpenAPI file.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Where operations without `x-google-backend` go.
    pub local_backend: String,
    /// Valid API keys; `None`: any present key is accepted.
    pub api_keys: Option<HashSet<String>>,
    /// Threads serving connections; `None`: one per core.
    pub threads: Option<usize>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            local_backend: "http://127.0.0.1:8082".into(),
            api_keys: None,
            threads: None,
        }
    }
}

/// One loaded, immutable config version.
#[derive(Debug)]
pub struct Loaded {
    pub version: u64,
    pub config: ServiceConfig,
    pub auth: Authenticator,
}

/// The gateway: the active config version, the previous ones, and the shared clients.
pub struct Gateway {
    active: ArcSwap<Loaded>,
    history: Mutex<Vec<Arc<Loaded>>>,
    pub(crate) options: GatewayOptions,
    pub(crate) http: reqwest::Client,
    pub(crate) upstream: proxy::Upstream,
    pub(crate) id_tokens: Option<IdTokens>,
    pub(crate) metrics: Metrics,
    config_path: Option<PathBuf>,
    /// The text of the newest config applied (what the file watcher compares against).
    last_applied: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("version", &self.active.load().version)
            .finish_non_exhaustive()
    }
}

/// Errors loading a config.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading the config: {0}")]
    Read(String),
    #[error("invalid config:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    #[error("OpenID discovery for {issuer} failed: {why}")]
    Discovery { issuer: String, why: String },
}

async fn discover_jwks(client: &reqwest::Client, issuer: &str) -> Result<String, String> {
    let base = if issuer.contains("://") {
        issuer.to_owned()
    } else {
        format!("https://{issuer}")
    };
    let url = format!(
        "{}/.well-known/openid-configuration",
        base.trim_end_matches('/')
    );
    let res = client.get(&url).send().await.map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(format!("{url} answered {}", res.status()));
    }
    let doc: serde_json::Value = res.json().await.map_err(|e| e.to_string())?;
    doc.get("jwks_uri")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("{url} has no jwks_uri"))
}

impl Gateway {
    /// Compiles `text` into a loaded version: validates, resolves JWKS URIs by discovery, and
    /// fetches every provider's keys once.
    async fn prepare(
        http: &reqwest::Client,
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
                    let u = discover_jwks(http, &p.issuer).await.map_err(|why| {
                        LoadError::Discovery {
                            issuer: p.issuer.clone(),
                            why,
                        }
                    })?;
                    p.jwks_uri = Some(u.clone());
                    u
                }
            };
            providers.push((p.clone(), Arc::new(Jwks::new(uri, http.clone()))));
        }
        let auth = Authenticator::new(providers);
        auth.prefetch().await;
        Ok(Loaded {
            version,
            config,
            auth,
        })
    }

    /// Builds a gateway serving the config in `text`.
    pub async fn new(
        text: &str,
        config_path: Option<PathBuf>,
        options: GatewayOptions,
        id_tokens: Option<identity::TokenSource>,
    ) -> Result<Arc<Self>, LoadError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| LoadError::Read(e.to_string()))?;
        let loaded = Arc::new(Self::prepare(&http, text, 1).await?);
        let id_tokens = id_tokens.map(|s| IdTokens::new(s, http.clone()));
        Ok(Arc::new(Self {
            active: ArcSwap::new(loaded.clone()),
            history: Mutex::new(vec![loaded]),
            options,
            http,
            upstream: proxy::Upstream::new(),
            id_tokens,
            metrics: Metrics::default(),
            config_path,
            last_applied: Mutex::new(text.as_bytes().to_vec()),
        }))
    }

    /// The active version.
    pub fn active(&self) -> Arc<Loaded> {
        self.active.load_full()
    }

    /// Validates `text` and, only if it is good, makes it the active version atomically.
    /// In-flight requests finish on the version they started with.
    pub async fn apply(&self, text: &str) -> Result<u64, LoadError> {
        let next = self
            .history
            .lock()
            .map(|h| h.iter().map(|l| l.version).max().unwrap_or(0) + 1)
            .unwrap_or(1);
        let loaded = Arc::new(Self::prepare(&self.http, text, next).await?);
        self.active.store(loaded.clone());
        if let Ok(mut last) = self.last_applied.lock() {
            *last = text.as_bytes().to_vec();
        }
        if let Ok(mut h) = self.history.lock() {
            h.push(loaded);
            let excess = h.len().saturating_sub(10);
            h.drain(..excess);
        }
        tracing::info!(version = next, "config activated");
        Ok(next)
    }

    /// Re-reads the config file given at start.
    pub async fn reload(&self) -> Result<u64, LoadError> {
        let path = self
            .config_path
            .clone()
            .ok_or_else(|| LoadError::Read("no config file to reload".into()))?;
        let text = tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| LoadError::Read(format!("{}: {e}", path.display())))?;
        self.apply(&text).await
    }

    /// Watches the config file given at start and applies it whenever its content changes
    /// (checked every `every`; editors' atomic renames and symlink swaps are seen too). A bad
    /// file is logged and the running version kept; the same content is not applied twice.
    pub async fn watch_config(self: Arc<Self>, every: std::time::Duration) {
        let Some(path) = self.config_path.clone() else {
            return;
        };
        // Content that was refused, so it is not tried again until it changes.
        let mut refused: Option<Vec<u8>> = None;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(now) = tokio::fs::read(&path).await else {
                continue;
            };
            let applied = self.last_applied.lock().map(|l| *l == now).unwrap_or(true);
            if applied || refused.as_ref() == Some(&now) {
                continue;
            }
            let Ok(text) = String::from_utf8(now.clone()) else {
                tracing::error!(path = %path.display(), "config file is not UTF-8; keeping the current config");
                refused = Some(now);
                continue;
            };
            match self.apply(&text).await {
                Ok(v) => {
                    refused = None;
                    tracing::info!(version = v, "config file changed; new version active");
                }
                Err(e) => {
                    tracing::error!(error = %e, "changed config refused; keeping the current config");
                    // Discovery may work next time; a config that is wrong stays refused.
                    if !matches!(e, LoadError::Discovery { .. }) {
                        refused = Some(now);
                    }
                }
            }
        }
    }

    /// Makes a previous version active again.
    pub fn restore(&self, version: u64) -> Option<u64> {
        let found = self
            .history
            .lock()
            .ok()?
            .iter()
            .find(|l| l.version == version)
            .cloned()?;
        self.active.store(found);
        tracing::info!(version, "config restored");
        Some(version)
    }

    /// The versions kept (newest last) and the active one.
    pub fn versions(&self) -> (Vec<u64>, u64) {
        let list = self
            .history
            .lock()
            .map(|h| h.iter().map(|l| l.version).collect())
            .unwrap_or_default();
        (list, self.active.load().version)
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// Serves the gateway on `listener` (HTTP/1.1, and HTTP/2 with prior knowledge) until
/// `shutdown`; then stops accepting, lets every in-flight request finish (up to 30 s) and closes
/// idle connections.
///
/// Connections are served by one single-threaded runtime per core (or
/// [`GatewayOptions::threads`]), each accepted connection handed to the next: a request never
/// crosses threads, so there is no work stealing or cross-thread wake-up on the request path.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let threads = gateway
        .options
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Every connection task holds a sender; `recv` returns `None` once all have finished.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut workers = Vec::with_capacity(threads);
    let mut joins = Vec::with_capacity(threads);
    for i in 0..threads {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let gw = gateway.clone();
        let stop = stop_rx.clone();
        let done = done_tx.clone();
        let join = std::thread::Builder::new()
            .name(format!("gateway-{i}"))
            .spawn(move || runtime.block_on(worker(gw, rx, stop, done)))?;
        workers.push(tx);
        joins.push(join);
    }
    tokio::pin!(shutdown);
    let mut next = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        // Out of descriptors: give connections a moment to close.
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Ok(stream) = stream.into_std() else { continue };
                next = (next + 1) % workers.len();
                let _ = workers[next].send((stream, peer));
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    drop(workers);
    let _ = stop_tx.send(true);
    drop(done_tx);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), done_rx.recv()).await;
    drop(stop_rx);
    for j in joins {
        let _ = tokio::task::spawn_blocking(move || j.join()).await;
    }
    Ok(())
}

/// One worker runtime: serves the connections it is handed until the acceptor stops, then
/// waits (up to 30 s) for them to finish.
async fn worker(
    gateway: Arc<Gateway>,
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    stop: tokio::sync::watch::Receiver<bool>,
    done: tokio::sync::mpsc::Sender<()>,
) {
    let (local_tx, mut local_rx) = tokio::sync::mpsc::channel::<()>(1);
    while let Some((stream, peer)) = incoming.recv().await {
        let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
            continue;
        };
        let gw = gateway.clone();
        let stop = stop.clone();
        let done = done.clone();
        let local = local_tx.clone();
        tokio::spawn(async move {
            h1::serve_connection(gw, stream, peer, stop).await;
            drop((done, local));
        });
    }
    drop((local_tx, done));
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), local_rx.recv()).await;
}

/// The peer address type used by handlers.
pub type Peer = SocketAddr;
