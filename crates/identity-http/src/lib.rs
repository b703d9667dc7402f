//! The HTTP surface of the identity server: Identity Toolkit v1 and Secure Token under the
//! emulator's host-prefixed paths, the public-key endpoints, the emulator's development routes,
//! the hosted action page, and `/healthz`.
//!
//! Handlers are thin: they resolve the caller, decode the body leniently (snake_case or
//! camelCase keys, numbers as strings), call `gatehouse-identity`, and shape the Firebase
//! response.
//!
//! Owns the wire: routes, CORS, the Firebase error body and every status (`error`), the
//! responses' JSON (accounts' `UserInfo` in `account`, `VerifyAssertionResponse` in `idp`,
//! the rest beside their routes), key publication and the action page.
//!
//! Must not: decide anything about identities (who may sign in, what a token holds: that is
//! `gatehouse-identity`) or write SQL (`gatehouse-store`; its records pass through only as
//! `gatehouse-identity` hands them over).

#![forbid(unsafe_code)]

mod account;
mod action;
mod cors;
mod error;
mod hosted;
mod idp;
mod keys;
mod paths;
mod request;
mod routes;

pub use error::ApiError;

/// Request decoding exactly as the handlers run it, for the fuzz targets in `fuzz/`. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::request::{body_object, decode};
}

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use gatehouse_identity::Identity;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// Largest accepted request body (imports of 1000 accounts fit comfortably).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Deployment options of the HTTP surface.
#[derive(Debug, Clone, Copy)]
pub struct HttpOptions {
    /// Trusted reverse-proxy hops in front of the server: the client address for abuse limits is
    /// taken that many entries from the right of `X-Forwarded-For`. 0 (default): the peer address.
    pub proxy_hops: usize,
    /// A request head must arrive within this long (counted from the end of the previous
    /// request on a keep-alive connection, so it is also the idle timeout), and then its body
    /// within this long again: a client trickling bytes cannot hold a connection longer.
    /// Default 30 s.
    pub read_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            proxy_hops: 0,
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// The full identity router with default options.
pub fn router(identity: Identity) -> Router {
    router_with(identity, HttpOptions::default())
}

/// The full identity router.
pub fn router_with(identity: Identity, options: HttpOptions) -> Router {
    Router::new()
        .merge(keys::router())
        .merge(action::router())
        .merge(hosted::router())
        .merge(routes::router())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(identity.clone(), cors::cors))
        .layer(middleware::from_fn(access_log))
        .layer(axum::Extension(options))
        .with_state(identity)
}

/// Serves the identity router on `listener` until `shutdown` resolves.
pub async fn serve(
    identity: Identity,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(identity, HttpOptions::default(), listener, shutdown).await
}

/// [`serve`] with deployment options.
pub async fn serve_with(
    identity: Identity,
    options: HttpOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        cors::warn_if_exposed(&identity, addr);
    }
    let app = router_with(identity, options);
    // hyper's connection builder, not `axum::serve`: that one has no timer, so hyper's header
    // read timeout never fires and a client sending its head a byte at a time (or nothing at
    // all) holds its connection for ever.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(options.read_timeout)
        .keep_alive_timeout(options.read_timeout);
    let graceful = GracefulShutdown::new();
    // hyper closes a keep-alive connection between two requests at once, even when the
    // client's next request, sent before the stop, is already on its way: those connections
    // are served a moment longer, so the close can only meet a request sent after the stop.
    let stop = async move {
        shutdown.await;
        tokio::time::sleep(STOP_LINGER).await;
    };
    tokio::pin!(stop);
    let mut backoff = Duration::ZERO;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => {
                    backoff = Duration::ZERO;
                    x
                }
                Err(e) => {
                    backoff = accept_failed(&e, backoff);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut stop => break,
                    }
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let app = app.clone();
        let asked = Arc::new(AtomicBool::new(false));
        let asked_in_service = asked.clone();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            asked_in_service.store(true, Ordering::Relaxed);
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            tower::ServiceExt::oneshot(app.clone(), req)
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let first_head = options.read_timeout;
        tokio::spawn(async move {
            tokio::pin!(conn);
            // The first request's head must be complete within the read timeout of the
            // connection: before it, hyper's own timeout may not run yet (the HTTP/1-or-2
            // detection waits for bytes with none), so a client that sends nothing, or a
            // few bytes, would hold the connection for ever.
            if tokio::time::timeout(first_head, conn.as_mut())
                .await
                .is_err()
                && asked.load(Ordering::Relaxed)
            {
                let _ = conn.await;
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// After a failed `accept`: how long to pause. A connection reset before it was accepted is
/// skipped at once; anything else (out of descriptors or memory) fails again until
/// connections close, so the pause doubles from 10 ms to 1 s and is logged once per run.
fn accept_failed(e: &std::io::Error, pause: Duration) -> Duration {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
        return Duration::ZERO;
    }
    if pause.is_zero() {
        tracing::warn!(error = %e, "accept failed; pausing until connections close");
    }
    (pause * 2).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// How long after the stop keep-alive connections are still served (and the listener still
/// accepts) before in-flight requests are drained and idle connections closed.
const STOP_LINGER: Duration = Duration::from_millis(100);

/// One structured line per request: method, path (never the query: API keys and codes live
/// there), status and latency.
async fn access_log(req: Request<Body>, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    tracing::debug!(
        target: "gatehouse::access",
        %method,
        path,
        status = res.status().as_u16(),
        micros = start.elapsed().as_micros() as u64,
        "request"
    );
    res
}
