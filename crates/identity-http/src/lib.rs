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
use std::net::SocketAddr;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use gatehouse_identity::Identity;
use tokio::net::TcpListener;

/// Largest accepted request body (imports of 1000 accounts fit comfortably).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Deployment options of the HTTP surface.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpOptions {
    /// Trusted reverse-proxy hops in front of the server: the client address for abuse limits is
    /// taken that many entries from the right of `X-Forwarded-For`. 0 (default): the peer address.
    pub proxy_hops: usize,
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
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        // hyper closes a keep-alive connection between two requests at once, even when the
        // client's next request, sent before the stop, is already on its way: those
        // connections are served a moment longer, so the close can only meet a request sent
        // after the stop.
        tokio::time::sleep(STOP_LINGER).await;
    })
    .await
}

/// How long after the stop keep-alive connections are still served (and the listener still
/// accepts) before in-flight requests are drained and idle connections closed.
const STOP_LINGER: std::time::Duration = std::time::Duration::from_millis(100);

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
