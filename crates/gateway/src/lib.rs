//! The API gateway: serves an OpenAPI 2.0 + `x-google-*` config the way Google API Gateway /
//! ESPv2 does — JWT authentication before anything reaches a backend, routing by path template,
//! path translation, backend ID tokens, and ESPv2's error bodies.
//!
//! Owns: config compilation (`config`, `template`), authentication (`auth`), the gateway's own
//! identity (`identity`), request planning (`plan`), the HTTP/1.1 server and relay (`h1`),
//! backend connections (`upstream`), metrics (`metrics`) and config versions (`reload`).
//! Holds no state beyond caches and config versions; stores nothing on disk.
//!
//! Must not: store state, or reach into Gatehouse's other components: identity, IAM and the
//! backends are spoken to over their public HTTP protocols only (the one shared code is
//! token verification, `gatehouse-tokens` and `gatehouse-verify`).
//!
//! Module order, no cycles: `h1` → `plan` → `auth`/`identity`/`config`/`template`; `h1` →
//! `upstream`; everything may use `metrics` and `error`.

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
mod plan;
mod reload;
pub mod template;
mod upstream;

pub use config::{Problem, ServiceConfig, validate};
pub use error::GatewayError;
pub use metrics::Metrics;
pub use reload::{DiscoveryError, LoadError, Loaded, ReloadStatus};

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

use crate::identity::IdTokens;

pub use gatehouse_verify::CacheOptions;

/// An error from a body or a connection, boxed.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Streaming body type in both directions.
pub(crate) type Body = BoxBody<Bytes, BoxError>;

/// Options that do not come from the OpenAPI file.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Where operations without `x-google-backend` go.
    pub local_backend: String,
    /// Valid API keys; `None`: any present key is accepted.
    pub api_keys: Option<HashSet<String>>,
    /// Threads serving connections; `None`: [`default_threads`].
    pub threads: Option<usize>,
    /// How providers' JWKS are cached: [`GatewayOptions::default`] has ESPv2's 300 s cache
    /// duration (a shorter `max-age` from the issuer wins) and keeps the last keys through an
    /// issuer outage for up to an hour past that.
    pub jwks: gatehouse_verify::CacheOptions,
    /// What a client connection may cost the gateway.
    pub limits: ConnectionLimits,
}

/// ESPv2's JWKS cache duration (`--jwks_cache_duration_in_s`).
pub const JWKS_CACHE_DURATION_SECS: u64 = 300;
/// How long past its cache duration a provider's last JWKS keeps verifying while its issuer
/// fails.
pub const JWKS_MAX_STALE_SECS: u64 = 3600;

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            local_backend: "http://127.0.0.1:8082".into(),
            api_keys: None,
            threads: None,
            jwks: gatehouse_verify::CacheOptions {
                max_ttl: std::time::Duration::from_secs(JWKS_CACHE_DURATION_SECS),
                max_stale: std::time::Duration::from_secs(JWKS_MAX_STALE_SECS),
                ..gatehouse_verify::CacheOptions::default()
            },
            limits: ConnectionLimits::default(),
        }
    }
}

/// What a client connection may cost the gateway: how long it may take to send a request head,
/// how long it may stay idle, and how large a request body may be (docs/reliability.md §5).
/// A slow body is bounded by the route's deadline (`x-google-backend` `deadline`, 15 s by
/// default), which covers the whole exchange.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A request head must be complete within this long of its first byte (else `408` and
    /// the connection closes): a client sending its headers a byte at a time cannot hold a
    /// connection longer. Default 30 s.
    pub head_timeout: std::time::Duration,
    /// A keep-alive connection with no request under way for this long is closed. Default
    /// 300 s (ESPv2's stream idle timeout).
    pub idle_timeout: std::time::Duration,
    /// Largest request body in bytes: a larger `Content-Length` is answered `413` before any
    /// of the body is read; a chunked body is cut with `413` when it passes the limit.
    /// Default 32 MiB (Cloud Run's limit for HTTP/1 requests).
    pub max_request_body: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            head_timeout: std::time::Duration::from_secs(30),
            idle_timeout: std::time::Duration::from_secs(300),
            max_request_body: 32 * 1024 * 1024,
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit, so a server can hold as
/// many connections as the system lets it (a common soft limit is 1024). Returns the limit
/// before and after.
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
    }
    Ok((soft, soft.max(hard)))
}

/// The gateway: the active config version, the previous ones, and the shared clients.
pub struct Gateway {
    active: ArcSwap<Loaded>,
    history: Mutex<Vec<Arc<Loaded>>>,
    pub(crate) options: GatewayOptions,
    pub(crate) http: reqwest::Client,
    pub(crate) upstream: upstream::Upstream,
    pub(crate) id_tokens: Option<IdTokens>,
    pub(crate) metrics: Metrics,
    pub(crate) config_path: Option<PathBuf>,
    /// Where config changes are sent (see [`reload`]).
    reloads: reload::Reloads,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("version", &self.active.load().version)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds a gateway serving the config in `text`, and starts its reload task (on the
    /// current tokio runtime; it ends when the gateway is dropped).
    pub async fn new(
        text: &str,
        config_path: Option<PathBuf>,
        options: GatewayOptions,
        id_tokens: Option<identity::TokenSource>,
    ) -> Result<Arc<Self>, LoadError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(LoadError::Client)?;
        let metrics = Metrics::default();
        let loaded = Arc::new(reload::prepare(&http, &metrics, options.jwks, text, 1).await?);
        let id_tokens = id_tokens.map(|s| IdTokens::new(s, http.clone()));
        Ok(reload::start(
            |reloads| {
                Arc::new(Self {
                    active: ArcSwap::new(loaded.clone()),
                    history: Mutex::new(vec![loaded]),
                    options,
                    http,
                    upstream: upstream::Upstream::new(),
                    id_tokens,
                    metrics,
                    config_path,
                    reloads,
                })
            },
            text.as_bytes().to_vec(),
        ))
    }

    /// The active version.
    pub fn active(&self) -> Arc<Loaded> {
        self.active.load_full()
    }

    /// The newest version number handed out (only the reload task makes new ones).
    fn newest_version(&self) -> u64 {
        self.history
            .lock()
            .map(|h| h.iter().map(|l| l.version).max().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Makes a new version the active one and keeps it in the history.
    fn activate(&self, loaded: Arc<Loaded>) {
        self.active.store(loaded.clone());
        if let Ok(mut h) = self.history.lock() {
            h.push(loaded);
            let excess = h.len().saturating_sub(reload::KEPT_VERSIONS);
            h.drain(..excess);
        }
    }

    /// Makes a kept version active again (the reload task's half of [`Gateway::restore`]).
    fn reactivate(&self, version: u64) -> Option<u64> {
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

/// The default number of serving threads on a machine with `cores` cores: one per core, but
/// on a machine of four cores or fewer one core is left to what shares it (the backends, the
/// identity server, the clients). On 2 cores a second gateway thread measured a p99 three
/// times one thread's (6.7-7.0 ms against 2.1 ms, docs/benchmarks.md): the gateway's threads
/// and its backend preempted each other.
pub fn default_threads(cores: usize) -> usize {
    match cores {
        0..=2 => 1,
        3..=4 => cores - 1,
        n => n,
    }
}

/// Serves the gateway on `listener` (HTTP/1.1, and HTTP/2 with prior knowledge) until
/// `shutdown`; then stops accepting, lets every in-flight request finish (up to 30 s) and closes
/// idle connections.
///
/// Connections are served by [`default_threads`] single-threaded runtimes (or
/// [`GatewayOptions::threads`]), each accepted connection handed to the next: a request never
/// crosses threads, so there is no work stealing or cross-thread wake-up on the request path.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let threads = gateway.options.threads.unwrap_or_else(|| {
        default_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
    });
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
    let mut backoff = AcceptBackoff::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => {
                        backoff.reset();
                        x
                    }
                    Err(e) => {
                        if let Some(pause) = backoff.after(&e) {
                            tokio::select! {
                                () = tokio::time::sleep(pause) => {}
                                () = &mut shutdown => break,
                            }
                        }
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
    // Connections the kernel completed before the stop are still served (a request already
    // sent on one is answered); the listener then closes and later ones are refused.
    if let Ok(listener) = listener.into_std() {
        // Non-blocking (as tokio's listener is): the loop ends when none is left.
        while let Ok((stream, peer)) = listener.accept() {
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            next = (next + 1) % workers.len();
            let _ = workers[next].send((stream, peer));
        }
    }
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

/// What the acceptor does after a failed `accept`. A connection that failed before it was
/// accepted (reset, aborted) is skipped at once. Anything else — out of descriptors (`EMFILE`,
/// `ENFILE`) or memory — will fail again until connections close: the acceptor pauses, 10 ms
/// doubling to 1 s while it keeps failing, and logs once per run of failures, so a descriptor
/// exhaustion neither spins a core nor floods the log, and accepting resumes by itself.
#[derive(Debug, Default)]
struct AcceptBackoff {
    pause: std::time::Duration,
    failures: u64,
}

impl AcceptBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(10);
    const MAX: std::time::Duration = std::time::Duration::from_secs(1);

    fn reset(&mut self) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "accepting connections again");
        }
        *self = Self::default();
    }

    /// How long to pause after `e` (`None`: retry at once).
    fn after(&mut self, e: &std::io::Error) -> Option<std::time::Duration> {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
        if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
            return None;
        }
        if self.failures == 0 {
            tracing::warn!(error = %e, "accept failed; pausing until connections close");
        }
        self.failures += 1;
        self.pause = (self.pause * 2).clamp(Self::FIRST, Self::MAX);
        Some(self.pause)
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn accept_failures_back_off_to_a_second_and_connection_errors_do_not() {
        let mut b = super::AcceptBackoff::default();
        let emfile = std::io::Error::from_raw_os_error(24);
        let pauses: Vec<u128> = (0..10)
            .filter_map(|_| b.after(&emfile))
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        let aborted = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        assert_eq!(b.after(&aborted), None);
        b.reset();
        assert_eq!(b.after(&emfile).map(|d| d.as_millis()), Some(10));
    }

    #[test]
    fn default_threads_leave_a_core_on_small_machines() {
        let got: Vec<usize> = (0..=9).map(super::default_threads).collect();
        assert_eq!(got, [1, 1, 1, 2, 3, 5, 6, 7, 8, 9]);
    }
}
