//! The fast path: one request relayed to a plain-HTTP/1.1 backend on a connection the client
//! connection keeps while it is busy (or takes from the pool). The request head is
//! re-serialised from the plan, bodies are relayed byte for byte in both directions, 1xx heads
//! are passed on, and the route's deadline bounds the whole exchange.
//!
//! Owns [`Exchange`]: framing and keep-alive decisions on both sides of one exchange, and the
//! single retry of a request without a body on a stale pooled connection. Routes nothing.

use std::io;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use http::{Method, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use smallvec::SmallVec;

use super::codec::{
    COALESCE, Framing, MAX_HEAD, MAX_HEADERS, ReqBody, field, invalid, lists, status_line,
    too_large, write_response,
};
use super::timer::Timer;
use crate::chunked::Decoder;
use crate::metrics::OperationMetrics;
use crate::plan::{self, Plan};
use crate::upstream::pool::UpConn;
use crate::upstream::{FailureKind, Side, UpstreamError};
use crate::{Gateway, GatewayError};

/// One request relayed on the fast path.
pub(crate) struct Exchange<'a> {
    pub(crate) gw: &'a Gateway,
    pub(crate) client: &'a mut TcpStream,
    pub(crate) client_buf: &'a mut BytesMut,
    pub(crate) out: &'a mut Vec<u8>,
    /// The request head for the backend (a buffer kept for the connection's life).
    pub(crate) head: &'a mut Vec<u8>,
    pub(crate) body: &'a mut Option<ReqBody>,
    /// The client asked with HEAD: it gets no body.
    pub(crate) is_head: bool,
    /// The backend was asked with HEAD (after `X-HTTP-Method-Override`): its answer has no body.
    /// Set by [`Exchange::run`] from the plan.
    pub(crate) upstream_head: bool,
    /// An HTTP/1.1 client that did not ask to close.
    pub(crate) client_keep: bool,
    pub(crate) started: Instant,
}

/// How a fast-path exchange ended.
enum Outcome {
    /// A response was relayed; whether each side may be reused.
    Relayed {
        status: u16,
        client_keep: bool,
        backend_keep: bool,
    },
    /// Nothing was sent to the client yet: the gateway answers for the failure.
    Failed(UpstreamError),
    /// The client went away, or the response broke after it started: close.
    Broken(u16),
}

impl Exchange<'_> {
    /// Relays the request and returns whether the client connection may serve another.
    /// `timer` is the connection's timer for backend deadlines.
    pub(crate) async fn run(
        &mut self,
        plan: Plan<'_>,
        backend: &mut Option<UpConn>,
        timer: &mut Timer,
    ) -> bool {
        // The head buffer is lent out for the exchange and given back for the next one.
        let mut head = std::mem::take(self.head);
        head.clear();
        let keep = self.exchange(&mut head, plan, backend, timer).await;
        *self.head = head;
        keep
    }

    async fn exchange(
        &mut self,
        head: &mut Vec<u8>,
        plan: Plan<'_>,
        backend: &mut Option<UpConn>,
        timer: &mut Timer,
    ) -> bool {
        let op = plan.op;
        let authority = &plan.origin["http://".len()..];
        self.upstream_head = plan.method == Method::HEAD;
        // The request head for the backend.
        head.extend_from_slice(plan.method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(plan.target.as_str().as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &plan.headers {
            // Framing is written below from what the gateway parsed, never copied.
            if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
                continue;
            }
            field(head, name.as_str().as_bytes(), value.as_bytes());
        }
        if !plan.headers.contains_key(header::HOST) {
            field(head, b"host", authority.as_bytes());
        }
        match self.body {
            Some(ReqBody::Chunked { .. }) => field(head, b"transfer-encoding", b"chunked"),
            Some(ReqBody::Length(n)) => field(head, b"content-length", n.to_string().as_bytes()),
            None if plan.headers.contains_key(header::CONTENT_LENGTH) => {
                field(head, b"content-length", b"0");
            }
            None => {}
        }
        head.extend_from_slice(b"\r\n");
        if plan.target.as_str().bytes().any(|b| !b.is_ascii_graphic()) {
            let e = UpstreamError::client(FailureKind::BadTarget);
            return self
                .answer(plan.metrics, e.status(), e.message(), false)
                .await;
        }

        let mut response_started = false;
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let (conn, reused) = match backend.take() {
                Some(c) if c.authority == authority && c.alive() => (c, true),
                other => {
                    if let Some(c) = other {
                        self.gw.upstream.raw.release(c);
                    }
                    match self.gw.upstream.raw.checkout(authority) {
                        Some(c) => (c, true),
                        None => match UpConn::connect(authority).await {
                            Ok(c) => (c, false),
                            Err(e) => {
                                let e = UpstreamError::backend(FailureKind::Connect).with_source(e);
                                break Outcome::Failed(e);
                            }
                        },
                    }
                }
            };
            let mut conn = conn;
            let upstream_started = Instant::now();
            let due = tokio::time::Instant::from_std(upstream_started) + plan.deadline;
            let result = {
                let relay = self.relay(
                    head,
                    &mut conn,
                    &mut response_started,
                    plan.metrics,
                    upstream_started,
                );
                tokio::select! {
                    biased;
                    o = relay => Ok(o),
                    () = timer.until(due) => Err(()),
                }
            };
            let outcome = match result {
                Err(_) if response_started => Outcome::Broken(504),
                Err(_) => {
                    let mut e = UpstreamError::backend(FailureKind::Timeout);
                    e.reused = reused;
                    Outcome::Failed(e)
                }
                Ok(Outcome::Failed(mut e)) => {
                    e.reused = reused;
                    Outcome::Failed(e)
                }
                Ok(o) => o,
            };
            match outcome {
                // A reused connection the backend had closed: one retry when nothing is lost.
                Outcome::Failed(e) if e.retry_safe() && attempt == 1 && self.body.is_none() => {
                    continue;
                }
                Outcome::Relayed {
                    backend_keep: true,
                    status,
                    client_keep,
                } => {
                    conn.idle_since = Instant::now();
                    *backend = Some(conn);
                    break Outcome::Relayed {
                        status,
                        client_keep,
                        backend_keep: true,
                    };
                }
                other => break other,
            }
        };
        match outcome {
            Outcome::Relayed {
                status,
                client_keep,
                ..
            } => {
                plan.metrics.record(status, self.started);
                client_keep
            }
            Outcome::Failed(e) => {
                let (status, msg) = (e.status(), e.message());
                // A client's own malformed or oversized body is its answer, not a backend
                // failure to log.
                if e.side != Side::Client
                    && let Some(suppressed) = self.gw.upstream.failure_log.admit()
                {
                    tracing::warn!(
                        operation = op,
                        status,
                        side = ?e.side,
                        reused = e.reused,
                        suppressed,
                        error = &e as &(dyn std::error::Error + 'static),
                        "backend failed: {msg}"
                    );
                }
                let keep = self.client_keep && self.body.as_ref().is_none_or(ReqBody::done);
                self.answer(plan.metrics, status, msg, keep).await
            }
            Outcome::Broken(status) => {
                plan.metrics.record(status, self.started);
                false
            }
        }
    }

    /// The gateway's own answer after a failed exchange.
    async fn answer(
        &mut self,
        metrics: &OperationMetrics,
        status: u16,
        msg: &'static str,
        keep: bool,
    ) -> bool {
        let res = GatewayError::new(status, msg).into_response();
        metrics.record(status, self.started);
        write_response(self.client, self.out, res, self.is_head, keep)
            .await
            .unwrap_or(false)
    }

    /// Sends the request on `conn` and relays the response.
    async fn relay(
        &mut self,
        head: &[u8],
        conn: &mut UpConn,
        response_started: &mut bool,
        metrics: &OperationMetrics,
        upstream_started: Instant,
    ) -> Outcome {
        // Head plus whatever body is already here, in one write when small.
        let mut first = self
            .body
            .as_mut()
            .map(|b| b.take_framed(self.client_buf))
            .transpose();
        let initial = match first.as_mut() {
            Ok(initial) => initial,
            Err(e) => return Outcome::Failed(UpstreamError::client(body_failure(e))),
        };
        let sent = match initial {
            Some(b) if b.len() <= COALESCE => {
                let mut all = Vec::with_capacity(head.len() + b.len());
                all.extend_from_slice(head);
                all.extend_from_slice(b);
                conn.stream.write_all(&all).await
            }
            Some(b) => match conn.stream.write_all(head).await {
                Ok(()) => conn.stream.write_all(b).await,
                Err(e) => Err(e),
            },
            None => conn.stream.write_all(head).await,
        };
        if let Err(e) = sent {
            let e_reset = UpstreamError::backend(FailureKind::Reset).closed_silently(true);
            return Outcome::Failed(e_reset.with_source(e));
        }

        // Until the final response head: more request body one way, 1xx heads the other. The
        // head is parsed once, and the client's head written while the parse is at hand.
        let head = loop {
            if !conn.buf.is_empty() {
                let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut res = httparse::Response::new(&mut raw);
                match res.parse(&conn.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let status = res.code.unwrap_or(0);
                        if (100..200).contains(&status) && status != 101 {
                            // 100 Continue / 103 Early Hints go to the client as they are.
                            let interim = conn.buf.split_to(len);
                            if self.client.write_all(&interim).await.is_err() {
                                return Outcome::Broken(499);
                            }
                            continue;
                        }
                        match self.final_head(&res, len) {
                            Some(head) => break head,
                            None => {
                                let e = UpstreamError::backend(FailureKind::Protocol);
                                return Outcome::Failed(e);
                            }
                        }
                    }
                    Ok(httparse::Status::Partial) if conn.buf.len() > MAX_HEAD => {
                        return Outcome::Failed(UpstreamError::backend(FailureKind::Protocol));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => {
                        return Outcome::Failed(UpstreamError::backend(FailureKind::Protocol));
                    }
                }
            }
            let pumping = self.body.as_ref().is_some_and(|b| !b.done());
            conn.buf.reserve(8 * 1024);
            if pumping {
                self.client_buf.reserve(8 * 1024);
            }
            tokio::select! {
                read = conn.stream.read_buf(&mut conn.buf) => match read {
                    Ok(0) | Err(_) => {
                        let nothing = conn.buf.is_empty();
                        let e = UpstreamError::backend(FailureKind::Reset).closed_silently(nothing);
                        return Outcome::Failed(e);
                    }
                    Ok(_) => {}
                },
                read = self.client.read_buf(self.client_buf), if pumping => match read {
                    Ok(0) | Err(_) => return Outcome::Broken(499),
                    Ok(_) => {
                        let chunk = match self.body.as_mut().map(|b| b.take_framed(self.client_buf)) {
                            Some(Ok(chunk)) => chunk,
                            // Nothing has gone to the client yet: the gateway answers.
                            Some(Err(e)) => return Outcome::Failed(UpstreamError::client(body_failure(&e))),
                            None => return Outcome::Broken(400),
                        };
                        if let Err(e) = conn.stream.write_all(&chunk).await {
                            let e = UpstreamError::backend(FailureKind::Reset).with_source(e);
                            return Outcome::Failed(e);
                        }
                    }
                },
            }
        };
        metrics.upstream(upstream_started.elapsed());
        let (status, client_keep) = (head.status, head.client_keep);
        conn.buf.advance(head.len);
        *response_started = true;

        // The body.
        let out = &mut *self.out;
        let relayed = match head.framing {
            _ if head.head_only => self.client.write_all(out).await.map(|()| true),
            Framing::None => self.client.write_all(out).await.map(|()| true),
            Framing::Length(n) => relay_length(self.client, out, conn, n).await,
            Framing::Chunked => relay_chunked(self.client, out, conn, head.dechunk).await,
            Framing::Close => relay_until_close(self.client, out, conn).await,
        };
        let backend_keep = head.backend_keep && conn.buf.is_empty();
        match relayed {
            Ok(true) => Outcome::Relayed {
                status,
                client_keep,
                backend_keep,
            },
            Ok(false) | Err(_) => Outcome::Broken(status),
        }
    }

    /// Reads the backend's final response head and writes the client's into `self.out`
    /// (hop-by-hop fields dropped). `None`: framing the gateway will not relay.
    fn final_head(&mut self, res: &httparse::Response<'_, '_>, len: usize) -> Option<FinalHead> {
        let status = res.code.unwrap_or(502);
        let mut backend_keep = res.version == Some(1);
        let mut chunked = false;
        let mut length = None;
        let mut dropped: SmallVec<[&[u8]; 4]> = SmallVec::new();
        for h in res.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = h
                    .value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                if !chunked {
                    return None;
                }
            } else if name.eq_ignore_ascii_case(b"content-length") {
                match std::str::from_utf8(h.value.trim_ascii())
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => return None,
                }
            } else if name.eq_ignore_ascii_case(b"connection") {
                if lists(h.value, "close") {
                    backend_keep = false;
                }
                dropped.extend(
                    h.value
                        .split(|b| *b == b',')
                        .map(<[u8]>::trim_ascii)
                        .filter(|n| plan::connection_may_remove(n)),
                );
            }
        }
        // The backend's framing follows the method it was sent, not the client's.
        let framing = if self.upstream_head || status == 204 || status == 304 {
            Framing::None
        } else if chunked {
            Framing::Chunked
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            Framing::Close
        };
        // An HTTP/1.0 client gets a chunked body decoded, and the connection closed after it.
        let dechunk = framing == Framing::Chunked && !self.client_keep;
        let body_done = self.body.as_ref().is_none_or(ReqBody::done);
        // A HEAD client whose request went upstream as another method (X-HTTP-Method-Override)
        // gets the head alone; the body still on its way makes the backend connection unusable.
        let head_only = self.is_head && framing != Framing::None;
        let client_keep = self.client_keep && (head_only || framing != Framing::Close) && body_done;
        backend_keep &= framing != Framing::Close && body_done && !head_only;

        let out = &mut *self.out;
        out.clear();
        status_line(out, status, res.reason.unwrap_or(""));
        for h in res.headers.iter() {
            let name = h.name.as_bytes();
            let hop = plan::is_hop_by_hop(name);
            let keep_te = name.eq_ignore_ascii_case(b"transfer-encoding") && !dechunk;
            if (hop && !keep_te) || dropped.iter().any(|d| name.eq_ignore_ascii_case(d)) {
                continue;
            }
            field(out, name, h.value);
        }
        if !client_keep {
            field(out, b"connection", b"close");
        }
        out.extend_from_slice(b"\r\n");
        Some(FinalHead {
            len,
            status,
            framing,
            dechunk,
            head_only,
            client_keep,
            backend_keep,
        })
    }
}

/// The failure for a request body the gateway cannot relay.
fn body_failure(e: &io::Error) -> FailureKind {
    if too_large(e) {
        FailureKind::BodyTooLarge
    } else {
        FailureKind::InvalidBody
    }
}

/// What the backend's final response head says, once the client's head is written.
struct FinalHead {
    /// Length of the backend's head in its buffer.
    len: usize,
    status: u16,
    framing: Framing,
    /// Chunked body relayed as plain data (an HTTP/1.0 client).
    dechunk: bool,
    /// The client asked with HEAD but the backend sends a body.
    head_only: bool,
    client_keep: bool,
    backend_keep: bool,
}

/// Relays a Content-Length body. `Ok(false)`: the backend closed early.
async fn relay_length(
    client: &mut TcpStream,
    out: &mut Vec<u8>,
    conn: &mut UpConn,
    mut left: u64,
) -> io::Result<bool> {
    let here = (conn.buf.len() as u64).min(left) as usize;
    out.extend_from_slice(&conn.buf[..here]);
    conn.buf.advance(here);
    left -= here as u64;
    client.write_all(out).await?;
    while left > 0 {
        conn.buf.reserve(16 * 1024);
        if conn.stream.read_buf(&mut conn.buf).await? == 0 {
            return Ok(false);
        }
        let n = (conn.buf.len() as u64).min(left) as usize;
        client.write_all(&conn.buf[..n]).await?;
        conn.buf.advance(n);
        left -= n as u64;
    }
    Ok(true)
}

/// Relays a chunked body as it is, or only its data for an HTTP/1.0 client.
async fn relay_chunked(
    client: &mut TcpStream,
    out: &mut Vec<u8>,
    conn: &mut UpConn,
    dechunk: bool,
) -> io::Result<bool> {
    let mut decoder = Decoder::new();
    loop {
        let mut at = 0;
        while at < conn.buf.len() && !decoder.is_done() {
            let p = decoder.advance(&conn.buf[at..]).map_err(invalid)?;
            if dechunk {
                out.extend_from_slice(&conn.buf[at..][p.data]);
            } else {
                out.extend_from_slice(&conn.buf[at..at + p.used]);
            }
            at += p.used;
        }
        conn.buf.advance(at);
        if !out.is_empty() {
            client.write_all(out).await?;
            out.clear();
        }
        if decoder.is_done() {
            return Ok(true);
        }
        conn.buf.reserve(16 * 1024);
        if conn.stream.read_buf(&mut conn.buf).await? == 0 {
            return Ok(false);
        }
    }
}

/// Relays a body delimited by the backend closing its connection.
async fn relay_until_close(
    client: &mut TcpStream,
    out: &mut Vec<u8>,
    conn: &mut UpConn,
) -> io::Result<bool> {
    out.extend_from_slice(&conn.buf);
    conn.buf.clear();
    client.write_all(out).await?;
    loop {
        conn.buf.reserve(16 * 1024);
        if conn.stream.read_buf(&mut conn.buf).await? == 0 {
            return Ok(true);
        }
        client.write_all(&conn.buf).await?;
        conn.buf.clear();
    }
}
