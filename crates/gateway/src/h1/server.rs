//! The client side of an HTTP/1.1 connection: reading request heads (with the idle and head
//! timeouts), answering what the gateway refuses, and handing each routed request to the fast
//! path ([`relay`]) or to hyper ([`bridge`]); a client that opens with the HTTP/2 preface goes to
//! [`bridge::serve_h2`].
//!
//! Owns the connection loop and keep-alive decisions. Talks to no backend itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::{Method, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::bridge;
use super::codec::{
    Framing, MAX_HEAD, PAYLOAD_TOO_LARGE, ReqBody, ReqHead, parse_request, write_response,
};
use super::relay::Exchange;
use super::timer::Timer;
use crate::config::Protocol;
use crate::upstream::pool::UpConn;
use crate::{ConnectionLimits, Gateway, GatewayError, plan};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

// One value per request, moved once: boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Incoming {
    Request(ReqHead),
    /// The client speaks HTTP/2 with prior knowledge.
    H2,
    /// Closed, idle too long, or shutting down.
    Done,
    /// A head the gateway cannot accept: answer and close.
    Reject(u16, &'static str),
}

/// Whether the gateway is shutting down (the guard never lives across an await).
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow()
}

/// Shutting down with no request under way: a request the client sent just before the stop
/// may still be on its way through the kernel, so the connection waits this long for one (and
/// serves it, with `Connection: close`) before it ends.
const STOP_LINGER: Duration = Duration::from_millis(100);

async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    shutdown: &mut watch::Receiver<bool>,
    idle: &mut Timer,
    first: bool,
    limits: &ConnectionLimits,
) -> Incoming {
    let mut deadline = None;
    let mut readable = false;
    loop {
        if !buf.is_empty() {
            match parse_request(buf) {
                Ok(Some(head)) => return Incoming::Request(head),
                Ok(None) if buf.len() > MAX_HEAD => {
                    return Incoming::Reject(431, "Request Header Fields Too Large");
                }
                Ok(None) => {}
                Err(_) if first && buf.starts_with(H2_PREFACE) => return Incoming::H2,
                Err((status, msg)) => return Incoming::Reject(status, msg),
            }
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + limits.head_timeout);
        }
        if buf.is_empty() && stopping(shutdown) {
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(8 * 1024);
            }
            match tokio::time::timeout(STOP_LINGER, stream.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => continue,
                _ => return Incoming::Done,
            }
        }
        let wait = deadline.unwrap_or_else(|| tokio::time::Instant::now() + limits.idle_timeout);
        // A connection that has sent nothing yet has no buffer: an idle connection costs its
        // task and socket only, and the buffer is allocated once the first bytes are there.
        let unbuffered = buf.capacity() == 0 && !readable;
        if !unbuffered && buf.capacity() - buf.len() < 1024 {
            buf.reserve(8 * 1024);
        }
        let empty = buf.is_empty();
        let read = async {
            if unbuffered {
                stream.readable().await.map(|()| None)
            } else {
                stream.read_buf(buf).await.map(Some)
            }
        };
        tokio::select! {
            read = read => match read {
                Ok(Some(0)) | Err(_) => return Incoming::Done,
                Ok(Some(_)) => {}
                Ok(None) => readable = true,
            },
            changed = shutdown.changed(), if empty => {
                if changed.is_err() {
                    return Incoming::Done;
                }
            }
            () = idle.until(wait) => {
                return if empty {
                    Incoming::Done
                } else {
                    Incoming::Reject(408, "Request Timeout")
                };
            }
        }
    }
}

/// Serves one client connection until it closes.
pub(crate) async fn serve_connection(
    gw: Arc<Gateway>,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    // Allocated when first needed (see `read_request`).
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut upstream_head = Vec::new();
    let limits = gw.options.limits;
    let mut backend: Option<UpConn> = None;
    let mut idle = Timer::new();
    let mut deadline = Timer::new();
    let mut first = true;
    // The connection ends with a request body the gateway did not read.
    let mut unread_body = false;
    let peer_header = plan::peer_header(peer.ip());
    loop {
        let read = read_request(
            &mut stream,
            &mut buf,
            &mut shutdown,
            &mut idle,
            first,
            &limits,
        );
        let head = match read.await {
            Incoming::Request(h) => h,
            Incoming::H2 => {
                if let Some(b) = backend.take() {
                    gw.upstream.raw.release(b);
                }
                bridge::serve_h2(gw, stream, buf.freeze(), peer, shutdown).await;
                return;
            }
            Incoming::Done => break,
            Incoming::Reject(status, msg) => {
                let res = GatewayError::new(status, msg).into_response();
                let _ = write_response(&mut stream, &mut out, res, false, false).await;
                break;
            }
        };
        first = false;
        let ReqHead {
            mut parts,
            framing,
            keep_alive,
        } = head;
        if let Framing::Length(n) = framing
            && n > limits.max_request_body
        {
            // Refused before a byte of the body is read; the connection closes, so the body
            // is never read at all.
            let res = GatewayError::new(413, PAYLOAD_TOO_LARGE).into_response();
            let _ = write_response(&mut stream, &mut out, res, false, false).await;
            unread_body = true;
            break;
        }
        let started = Instant::now();
        let is_head = parts.method == Method::HEAD;
        let mut body = ReqBody::new(framing, limits.max_request_body);
        let loaded = gw.active();
        let keep = match plan::plan(&gw, &loaded, &mut parts, &peer_header, started).await {
            Err(res) => {
                // The gateway answers itself; a body already here is skipped, one still on its
                // way closes the connection after the answer.
                let mut keep = keep_alive && !stopping(&shutdown);
                if let Some(b) = &mut body {
                    keep &= b.take_raw(&mut buf).is_ok() && b.done();
                    unread_body = !b.done();
                }
                write_response(&mut stream, &mut out, res, is_head, keep)
                    .await
                    .unwrap_or(false)
            }
            Ok(plan) => {
                let fast = plan.protocol == Protocol::Http1 && plan.origin.starts_with("http://");
                let keep = if fast {
                    let mut x = Exchange {
                        gw: &gw,
                        client: &mut stream,
                        client_buf: &mut buf,
                        out: &mut out,
                        head: &mut upstream_head,
                        body: &mut body,
                        is_head,
                        upstream_head: false,
                        client_keep: keep_alive
                            && parts.version == Version::HTTP_11
                            && !stopping(&shutdown),
                        started,
                    };
                    let keep = x.run(plan, &mut backend, &mut deadline).await;
                    unread_body = body.as_ref().is_some_and(|b| !b.done());
                    keep
                } else {
                    bridge::forward_hyper(
                        &gw,
                        &mut stream,
                        &mut buf,
                        &mut out,
                        plan,
                        body,
                        is_head,
                        started,
                    )
                    .await
                    .unwrap_or(false)
                        && keep_alive
                };
                // A stop during this request: the connection ends in `read_request` unless
                // the client's next request is already on its way.
                keep
            }
        };
        if !keep {
            break;
        }
    }
    if let Some(b) = backend.take() {
        gw.upstream.raw.release(b);
    }
    let _ = stream.shutdown().await;
    if unread_body {
        discard_until_closed(&mut stream, &mut buf).await;
    }
}

/// How long, and how many bytes, a connection closed with a request body unread is still read
/// (and dropped) after the gateway's answer.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// After the answer to a request whose body the gateway will not read (a `413`, or an answer
/// given before the body arrived): closing with unread bytes would make the kernel reset the
/// connection, and the reset can reach the client before it has read the answer. So the write
/// side is closed and what the client still sends is read into the connection's buffer and
/// dropped, for at most [`LINGER_TIME`] and [`LINGER_BYTES`]: memory stays one buffer.
async fn discard_until_closed(stream: &mut TcpStream, buf: &mut BytesMut) {
    let until = tokio::time::Instant::now() + LINGER_TIME;
    let mut read = 0;
    while read < LINGER_BYTES {
        buf.clear();
        buf.reserve(8 * 1024);
        match tokio::time::timeout_at(until, stream.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => read += n,
            _ => return,
        }
    }
}
