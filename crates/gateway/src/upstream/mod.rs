//! Backends: the pooled hyper clients (TLS and HTTP/2 backends), the raw HTTP/1.1 connection
//! pool of the fast path ([`pool`]), and [`UpstreamError`], which says how an exchange with a
//! backend failed: which side caused it, whether the connection had been used before, and
//! whether sending the request again is safe.
//!
//! Owns connections to backends and the mapping of a failure to Envoy's local reply (status and
//! message). Knows nothing of routes, authentication or the client connection.

pub(crate) mod pool;

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::Protocol;
use crate::{Body, BoxError};

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Backend-failure log lines written per second at most; the rest are counted and the count
/// goes out with the next line written. A backend that is down fails every request, and one
/// line per request (82,276 lines, 34 MB in a 5-second outage under load, measured) would
/// fill a disk and slow the gateway when it can least afford it. The per-status request
/// counters in /metrics still count every failure.
const FAILURE_LINES_PER_SEC: u64 = 10;

/// Rate limit for backend-failure log lines, shared by the gateway's threads.
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    /// The second (since `epoch`) of the current window, and lines written in it.
    window: std::sync::atomic::AtomicU64,
    written: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
    epoch: std::sync::OnceLock<std::time::Instant>,
}

impl FailureLog {
    /// `Some(n)`: write this line, mentioning `n` lines suppressed since the last one written;
    /// `None`: suppressed (counted).
    pub(crate) fn admit(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self
            .epoch
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs();
        if self.window.swap(now, Relaxed) != now {
            self.written.store(0, Relaxed);
        }
        if self.written.fetch_add(1, Relaxed) < FAILURE_LINES_PER_SEC {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

/// Pooled clients to backends: HTTP/1.1 and HTTP/2.
pub struct Upstream {
    h1: Client<Connector, Body>,
    h2: Client<Connector, Body>,
    /// Idle connections of the HTTP/1.1 fast path.
    pub(crate) raw: pool::RawPool,
    /// Backend-failure log lines, rate-limited.
    pub(crate) failure_log: FailureLog,
}

impl Upstream {
    pub fn new() -> Self {
        let connector = || {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(pool::CONNECT_TIMEOUT));
            let builder = hyper_rustls::HttpsConnectorBuilder::new();
            let builder = match builder.with_native_roots() {
                Ok(b) => b,
                Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
            };
            builder
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http)
        };
        let h1 = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build(connector());
        let h2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector());
        Self {
            h1,
            h2,
            raw: pool::RawPool::default(),
            failure_log: FailureLog::default(),
        }
    }

    /// Sends `req` with the pooled hyper client for `protocol` and waits for the response head,
    /// at most `deadline`.
    pub(crate) async fn call(
        &self,
        protocol: Protocol,
        mut req: Request<Body>,
        deadline: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let client = match protocol {
            Protocol::Http1 => &self.h1,
            Protocol::H2 => {
                // HTTP/2 carries the authority in the URI; a differing Host header would be
                // malformed.
                req.headers_mut().remove(http::header::HOST);
                &self.h2
            }
        };
        match tokio::time::timeout(deadline, client.request(req)).await {
            Err(_) => Err(UpstreamError::backend(FailureKind::Timeout)),
            Ok(Err(e)) => {
                let (side, kind) = if e.is_connect() {
                    (Side::Backend, FailureKind::Connect)
                } else if std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<hyper::Error>())
                    .is_some_and(hyper::Error::is_user)
                {
                    // hyper refused what the gateway asked of it.
                    (Side::Gateway, FailureKind::Reset)
                } else {
                    (Side::Backend, FailureKind::Reset)
                };
                Err(UpstreamError::new(side, kind).with_source(e))
            }
            Ok(Ok(res)) => Ok(res),
        }
    }
}

/// Who caused a failed exchange (pingora's `ErrorSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The client: a malformed request body or target.
    Client,
    /// The backend: unreachable, too slow, closed, or not speaking HTTP.
    Backend,
    /// The gateway itself.
    Gateway,
}

/// What went wrong with a backend exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// No connection could be made.
    Connect,
    /// Nothing came back within the route's deadline.
    Timeout,
    /// The connection closed or failed before a response head.
    Reset,
    /// The backend's answer is not a response the gateway can relay.
    Protocol,
    /// The client's chunked request body is malformed.
    InvalidBody,
    /// The client's chunked request body passed the size limit.
    BodyTooLarge,
    /// The translated request target cannot be sent.
    BadTarget,
}

/// A backend exchange that failed before anything was sent to the client; the gateway answers
/// with [`UpstreamError::status`] and [`UpstreamError::message`].
#[derive(Debug, thiserror::Error)]
#[error("{kind:?} caused by the {side:?} (reused connection: {reused})")]
pub(crate) struct UpstreamError {
    pub(crate) kind: FailureKind,
    pub(crate) side: Side,
    /// The connection had carried an exchange before (kept by the client connection or taken
    /// from the pool).
    pub(crate) reused: bool,
    /// The backend closed before reading anything back: the request never reached it.
    pub(crate) nothing_sent_back: bool,
    #[source]
    source: Option<BoxError>,
}

impl UpstreamError {
    pub(crate) fn new(side: Side, kind: FailureKind) -> Self {
        Self {
            kind,
            side,
            reused: false,
            nothing_sent_back: false,
            source: None,
        }
    }

    /// A failure caused by the backend.
    pub(crate) fn backend(kind: FailureKind) -> Self {
        Self::new(Side::Backend, kind)
    }

    /// A failure caused by the client's request.
    pub(crate) fn client(kind: FailureKind) -> Self {
        Self::new(Side::Client, kind)
    }

    /// The backend closed the connection without answering anything.
    pub(crate) fn closed_silently(mut self, silent: bool) -> Self {
        self.nothing_sent_back = silent;
        self
    }

    pub(crate) fn with_source(mut self, e: impl Into<BoxError>) -> Self {
        self.source = Some(e.into());
        self
    }

    /// Whether the request may be sent again on a fresh connection (for a request without a
    /// body): a reused connection that the backend had closed before the request reached it.
    pub(crate) fn retry_safe(&self) -> bool {
        self.reused && self.nothing_sent_back && self.side == Side::Backend
    }

    /// The status of the gateway's answer.
    pub(crate) fn status(&self) -> u16 {
        match self.kind {
            FailureKind::Timeout => 504,
            FailureKind::InvalidBody | FailureKind::BadTarget => 400,
            FailureKind::BodyTooLarge => 413,
            FailureKind::Connect | FailureKind::Reset | FailureKind::Protocol => 503,
        }
    }

    /// Envoy's local-reply message for the failure.
    pub(crate) fn message(&self) -> &'static str {
        match self.kind {
            FailureKind::Timeout => UPSTREAM_TIMEOUT,
            FailureKind::Connect => UPSTREAM_CONNECT_FAILED,
            FailureKind::Reset => UPSTREAM_RESET,
            FailureKind::Protocol => UPSTREAM_PROTOCOL,
            FailureKind::InvalidBody => "Bad Request: invalid chunked body",
            FailureKind::BodyTooLarge => crate::h1::codec::PAYLOAD_TOO_LARGE,
            FailureKind::BadTarget => "Bad request path",
        }
    }
}

/// Envoy's local-reply messages for backend failures.
const UPSTREAM_TIMEOUT: &str = "upstream request timeout";
const UPSTREAM_CONNECT_FAILED: &str = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: 111";
const UPSTREAM_RESET: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
const UPSTREAM_PROTOCOL: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: protocol error";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_lines_are_limited_per_second_and_the_rest_counted() {
        let log = FailureLog::default();
        let admitted: Vec<Option<u64>> = (0..25).map(|_| log.admit()).collect();
        assert_eq!(admitted.iter().filter(|a| a.is_some()).count(), 10);
        assert_eq!(admitted[0], Some(0));
        // The next second's first line carries the count of those left out.
        log.window
            .store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(log.admit(), Some(15));
        assert_eq!(log.admit(), Some(0));
    }

    #[test]
    fn a_retry_is_safe_only_on_a_reused_connection_the_backend_closed_unanswered() {
        let silent = |reused| {
            let mut e = UpstreamError::backend(FailureKind::Reset).closed_silently(true);
            e.reused = reused;
            e
        };
        assert!(silent(true).retry_safe());
        assert!(
            !silent(false).retry_safe(),
            "a fresh connection failing is not stale"
        );
        let mut answered = UpstreamError::backend(FailureKind::Reset);
        answered.reused = true;
        assert!(!answered.retry_safe(), "the backend may have acted on it");
        let mut client = UpstreamError::client(FailureKind::InvalidBody).closed_silently(true);
        client.reused = true;
        assert!(!client.retry_safe());
    }

    #[test]
    fn failures_map_to_envoys_local_replies() {
        let timeout = UpstreamError::backend(FailureKind::Timeout);
        assert_eq!(
            (timeout.status(), timeout.message()),
            (504, UPSTREAM_TIMEOUT)
        );
        let connect = UpstreamError::backend(FailureKind::Connect);
        assert_eq!(
            (connect.status(), connect.message()),
            (503, UPSTREAM_CONNECT_FAILED)
        );
        assert_eq!(
            UpstreamError::client(FailureKind::InvalidBody).status(),
            400
        );
        assert_eq!(
            UpstreamError::backend(FailureKind::Protocol).message(),
            UPSTREAM_PROTOCOL
        );
    }
}
