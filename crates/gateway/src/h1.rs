//! The gateway's HTTP/1.1 server and its fast path to plain-HTTP/1.1 backends.
//!
//! Each client connection is one task. Request heads are parsed in place (httparse) and turned
//! into `http` parts without copying header values; routing and authentication are the shared
//! [`proxy::plan`]. A request for a plain `http://` HTTP/1.1 backend is then relayed on a pooled
//! backend connection that stays with the client connection while it is busy: the head is
//! re-serialised, bodies are relayed byte for byte (Content-Length or chunked, in both
//! directions), and no task, channel or lock is involved per request. Backends over TLS or
//! HTTP/2 go through hyper's pooled clients ([`proxy::forward`]); a client speaking HTTP/2
//! (prior knowledge) is handed to hyper's HTTP/2 server.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::chunked::Decoder;
use crate::config::Protocol;
use crate::proxy::{self, Body, Plan};
use crate::{Gateway, GatewayError};

/// Largest request or response head, and most header fields in one.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// A keep-alive connection with no request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A request head must arrive completely within this long once it has started.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Pooled backend connections idle longer than this are probed before reuse.
const PROBE_AFTER: Duration = Duration::from_secs(1);
const MAX_IDLE_PER_BACKEND: usize = 256;
/// Bodies up to this size go out in the same write as the head.
const COALESCE: usize = 16 * 1024;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Idle plain-HTTP/1.1 backend connections, by `host:port`.
#[derive(Default)]
pub(crate) struct RawPool {
    idle: Mutex<std::collections::HashMap<String, Vec<UpConn>>>,
}

impl RawPool {
    fn take(&self, authority: &str) -> Option<UpConn> {
        self.idle.lock().ok()?.get_mut(authority)?.pop()
    }

    fn put(&self, conn: UpConn) {
        if let Ok(mut idle) = self.idle.lock() {
            let list = match idle.get_mut(conn.authority.as_str()) {
                Some(l) => l,
                None => idle.entry(conn.authority.clone()).or_default(),
            };
            if list.len() < MAX_IDLE_PER_BACKEND {
                list.push(conn);
            }
        }
    }
}

/// A connection to a plain-HTTP/1.1 backend.
pub(crate) struct UpConn {
    stream: TcpStream,
    buf: BytesMut,
    authority: String,
    idle_since: Instant,
}

impl UpConn {
    /// Whether an idle connection still looks usable: no EOF and no unexpected bytes. A
    /// connection a client connection keeps between its own requests is probed only after
    /// [`PROBE_AFTER`]; see [`Self::idle`] for connections shared through the pool.
    fn alive(&self) -> bool {
        self.idle_since.elapsed() < PROBE_AFTER || self.idle()
    }

    /// Whether the connection is provably idle: nothing buffered, and nothing (not even EOF)
    /// waiting in the socket. Only such a connection may pass to another client: bytes still
    /// arriving would be read as that client's response.
    fn idle(&self) -> bool {
        let mut probe = [0u8; 1];
        self.buf.is_empty()
            && matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

async fn connect(authority: &str) -> io::Result<UpConn> {
    let stream = if authority.rsplit_once(':').is_some_and(|(h, p)| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':')
    }) {
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority)).await
    } else {
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect(format!("{authority}:80")),
        )
        .await
    }
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))??;
    stream.set_nodelay(true)?;
    Ok(UpConn {
        stream,
        buf: BytesMut::with_capacity(8 * 1024),
        authority: authority.to_owned(),
        idle_since: Instant::now(),
    })
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the backend closes (responses only).
    Close,
}

/// The request body still to come from the client.
enum ReqBody {
    Length(u64),
    Chunked(Decoder),
}

impl ReqBody {
    fn new(framing: Framing) -> Option<Self> {
        match framing {
            Framing::Length(0) | Framing::None | Framing::Close => None,
            Framing::Length(n) => Some(Self::Length(n)),
            Framing::Chunked => Some(Self::Chunked(Decoder::new())),
        }
    }

    fn done(&self) -> bool {
        match self {
            Self::Length(n) => *n == 0,
            Self::Chunked(d) => d.is_done(),
        }
    }

    /// Splits off the body bytes at the front of `buf`, framing included.
    fn take_raw(&mut self, buf: &mut BytesMut) -> io::Result<BytesMut> {
        let n = match self {
            Self::Length(left) => {
                let n = (buf.len() as u64).min(*left);
                *left -= n;
                n as usize
            }
            Self::Chunked(d) => d.body_len(buf).map_err(invalid)?,
        };
        Ok(buf.split_to(n))
    }

    /// Splits off the body bytes at the front of `buf`, framed for the backend by the gateway:
    /// a length-delimited body as it is; a chunked body re-chunked, so chunk extensions and
    /// trailers (which could carry identity headers such as `X-Apigateway-Api-Userinfo`) never
    /// reach the backend, and the backend sees only framing the gateway wrote.
    fn take_framed(&mut self, buf: &mut BytesMut) -> io::Result<BytesMut> {
        if let Self::Length(_) = self {
            return self.take_raw(buf);
        }
        let data = self.take_data(buf)?;
        let mut out = BytesMut::with_capacity(data.len() + 32);
        if !data.is_empty() {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        }
        if self.done() {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        Ok(out)
    }

    /// Splits off the body bytes at the front of `buf` and returns their data (chunk framing
    /// removed).
    fn take_data(&mut self, buf: &mut BytesMut) -> io::Result<Bytes> {
        match self {
            Self::Length(_) => Ok(self.take_raw(buf)?.freeze()),
            Self::Chunked(d) => {
                let mut data = BytesMut::new();
                let mut at = 0;
                while at < buf.len() && !d.is_done() {
                    let p = d.advance(&buf[at..]).map_err(invalid)?;
                    data.extend_from_slice(&buf[at..][p.data]);
                    at += p.used;
                }
                buf.advance(at);
                Ok(data.freeze())
            }
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// A parsed request head.
pub(crate) struct ReqHead {
    pub(crate) parts: http::request::Parts,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
}

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

/// Resolves when the gateway starts shutting down.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Whether the gateway is shutting down (the guard never lives across an await).
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow()
}

fn offset(base: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn lists(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether a request-target is one the gateway can route without guessing (RFC 9112 §3.2):
/// origin-form, absolute-form with an http(s) scheme, or `*` for OPTIONS; printable ASCII with
/// no fragment (a client never sends one, and dropping it would route something else).
fn request_target_ok(method: &Method, target: &[u8]) -> bool {
    if target.is_empty() || !target.iter().all(u8::is_ascii_graphic) || target.contains(&b'#') {
        return false;
    }
    let scheme = |s: &[u8]| target.len() > s.len() && target[..s.len()].eq_ignore_ascii_case(s);
    target[0] == b'/'
        || scheme(b"http://")
        || scheme(b"https://")
        || (target == b"*" && method == Method::OPTIONS)
}

/// Whether a Host value is a valid `uri-host [":" port]` (RFC 9110 §7.2): reg-name or IP
/// literal characters only, no userinfo, no whitespace. Empty is allowed (a target without
/// an authority).
fn host_ok(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    let (host, port) = match value.iter().rposition(|b| *b == b':') {
        Some(i) if !value[i..].contains(&b']') => (&value[..i], &value[i + 1..]),
        _ => (value, &b""[..]),
    };
    let reg_name = |b: &u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(b);
    // A '%' only as a pct-encoded triplet.
    let escapes_ok = host.iter().enumerate().all(|(i, b)| {
        *b != b'%' || (host.get(i + 1..i + 3)).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    let host_ok = if host.first() == Some(&b'[') {
        host.len() > 2
            && host.last() == Some(&b']')
            && host[1..host.len() - 1]
                .iter()
                .all(|b| b.is_ascii_hexdigit() || b":.".contains(b))
    } else {
        host.iter().all(reg_name)
    };
    host_ok && escapes_ok && port.iter().all(u8::is_ascii_digit) && port.len() <= 5
}

/// Parses the head at the front of `buf`: `Ok(None)` when more bytes are needed.
pub(crate) fn parse_request(buf: &mut BytesMut) -> Result<Option<ReqHead>, (u16, &'static str)> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    let len = match req.parse(buf) {
        // The limit holds however the head arrived: in one read or in many.
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
            return Err((431, "Request Header Fields Too Large"));
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err((431, "Request Header Fields Too Large"));
        }
        Err(_) => return Err((400, "Bad Request")),
    };
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| (400, "Bad Request"))?;
    let target = req.path.unwrap_or_default().as_bytes();
    if !request_target_ok(&method, target) {
        return Err((400, "Bad Request"));
    }
    let path = offset(buf, target);
    let mut fields = Vec::with_capacity(req.headers.len());
    let mut framing = Framing::None;
    let mut keep_alive = version == Version::HTTP_11;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut hosts = 0;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if !host_ok(h.value) {
                return Err((400, "Bad Request"));
            }
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(h.value.trim_ascii())
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or((400, "Bad Request"))?;
            if length.is_some_and(|l| l != n) {
                return Err((400, "Bad Request"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only `chunked` is understood; it must be the last (here: only) coding.
            if version == Version::HTTP_10
                || chunked
                || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked")
            {
                return Err((400, "Bad Request"));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") && lists(h.value, "close") {
            keep_alive = false;
        }
        fields.push((offset(buf, name), offset(buf, h.value)));
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one in HTTP/1.0. Two could be
    // read differently by the gateway and the backend.
    if hosts > 1 || (hosts == 0 && version == Version::HTTP_11) {
        return Err((400, "Bad Request"));
    }
    if chunked {
        if length.is_some() {
            return Err((400, "Bad Request"));
        }
        framing = Framing::Chunked;
    } else if let Some(n) = length {
        framing = Framing::Length(n);
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, value) in fields {
        let name = HeaderName::from_bytes(&head[name]).map_err(|_| (400, "Bad Request"))?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(value)).map_err(|_| (400, "Bad Request"))?;
        headers.append(name, value);
    }
    let uri = Uri::from_maybe_shared(head.slice(path)).map_err(|_| (400, "Bad Request"))?;
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(ReqHead {
        parts,
        framing,
        keep_alive,
    }))
}

/// A per-connection timer that is re-armed only when it fires early or must fire sooner:
/// resetting a tokio timer is a timer-wheel removal and insertion, too much to pay on every
/// request of a keep-alive connection.
struct Timer {
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Timer {
    fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
        }
    }

    /// Resolves at `at`.
    async fn until(&mut self, at: tokio::time::Instant) {
        if self.sleep.deadline() > at {
            self.sleep.as_mut().reset(at);
        }
        loop {
            self.sleep.as_mut().await;
            if tokio::time::Instant::now() >= at {
                return;
            }
            self.sleep.as_mut().reset(at);
        }
    }
}

async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    shutdown: &mut watch::Receiver<bool>,
    idle: &mut Timer,
    first: bool,
) -> Incoming {
    let mut deadline = None;
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
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + HEAD_TIMEOUT);
        }
        if buf.is_empty() && stopping(shutdown) {
            return Incoming::Done;
        }
        let wait = deadline.unwrap_or_else(|| tokio::time::Instant::now() + IDLE_TIMEOUT);
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(8 * 1024);
        }
        tokio::select! {
            read = stream.read_buf(buf) => match read {
                Ok(0) | Err(_) => return Incoming::Done,
                Ok(_) => {}
            },
            changed = shutdown.changed(), if buf.is_empty() => {
                if changed.is_err() || stopping(shutdown) {
                    return Incoming::Done;
                }
            }
            () = idle.until(wait) => {
                return if buf.is_empty() {
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
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out = Vec::with_capacity(4 * 1024);
    let mut upstream_head = Vec::with_capacity(1024);
    let mut backend: Option<UpConn> = None;
    let mut idle = Timer::new();
    let mut deadline = Timer::new();
    let mut first = true;
    loop {
        let head = match read_request(&mut stream, &mut buf, &mut shutdown, &mut idle, first).await
        {
            Incoming::Request(h) => h,
            Incoming::H2 => {
                if let Some(b) = backend.take() {
                    release(&gw, b);
                }
                serve_h2(gw, stream, buf.freeze(), peer, shutdown).await;
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
        let started = Instant::now();
        let is_head = parts.method == Method::HEAD;
        let mut body = ReqBody::new(framing);
        let loaded = gw.active();
        let keep = match proxy::plan(&gw, &loaded, &mut parts, peer, started).await {
            Err(res) => {
                // The gateway answers itself; a body already here is skipped, one still on its
                // way closes the connection after the answer.
                let mut keep = keep_alive && !stopping(&shutdown);
                if let Some(b) = &mut body {
                    keep &= b.take_raw(&mut buf).is_ok() && b.done();
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
                        client_keep: keep_alive && parts.version == Version::HTTP_11,
                        started,
                    };
                    x.run(plan, &mut backend, &mut deadline).await
                } else {
                    forward_hyper(
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
                keep && !stopping(&shutdown)
            }
        };
        if !keep {
            break;
        }
    }
    if let Some(b) = backend.take() {
        release(&gw, b);
    }
    let _ = stream.shutdown().await;
}

fn release(gw: &Gateway, mut conn: UpConn) {
    if conn.idle() {
        conn.idle_since = Instant::now();
        gw.upstream.raw.put(conn);
    }
}

/// Serialises `res` to the client. Returns whether the connection may serve another request.
async fn write_response(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    res: Response<Body>,
    is_head: bool,
    keep: bool,
) -> io::Result<bool> {
    let (parts, mut body) = res.into_parts();
    let status = parts.status.as_u16();
    let no_body = is_head || status == 204 || status == 304 || (100..200).contains(&status);
    let exact = hyper::body::Body::size_hint(&body).exact();
    let chunked = !no_body && exact.is_none() && keep;
    let keep = keep && (no_body || exact.is_some() || chunked);
    out.clear();
    status_line(out, status, parts.status.canonical_reason().unwrap_or(""));
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(n) = exact
        && status != 204
        && !(100..200).contains(&status)
    {
        field(out, b"content-length", n.to_string().as_bytes());
    } else if chunked {
        field(out, b"transfer-encoding", b"chunked");
    }
    if !keep {
        field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    if no_body {
        stream.write_all(out).await?;
        return Ok(keep);
    }
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // The backend failed mid-body: the client sees a truncated response.
            stream.write_all(out).await?;
            return Ok(false);
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if out.len() + data.len() <= COALESCE {
            out.extend_from_slice(&data);
        } else {
            stream.write_all(out).await?;
            out.clear();
            stream.write_all(&data).await?;
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() > COALESCE / 2 {
            stream.write_all(out).await?;
            out.clear();
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    stream.write_all(out).await?;
    Ok(keep)
}

fn status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    // A status is three digits (httparse and `http::StatusCode` both guarantee it).
    let status = status.clamp(100, 999);
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A request body fed to hyper from the client connection.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}

/// A request for a TLS or HTTP/2 backend: hyper's client, with the body streamed from the
/// client connection while the backend answers.
#[allow(clippy::too_many_arguments)]
async fn forward_hyper(
    gw: &Gateway,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    plan: Plan<'_>,
    body: Option<ReqBody>,
    is_head: bool,
    started: Instant,
) -> io::Result<bool> {
    let Some(mut body) = body else {
        let empty = http_body_util::Empty::new().map_err(|n| match n {}).boxed();
        let res = proxy::forward(gw, plan, empty, started).await;
        return write_response(stream, out, res, is_head, true).await;
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, BoxError>>(4);
    let res = {
        let pump = async {
            // Owned here: the body ends when the pump does.
            let tx = tx;
            loop {
                let data = body.take_data(buf)?;
                if !data.is_empty() && tx.send(Ok(data)).await.is_err() {
                    return Ok::<_, io::Error>(());
                }
                if body.done() {
                    return Ok(());
                }
                buf.reserve(8 * 1024);
                if stream.read_buf(buf).await? == 0 {
                    let _ = tx
                        .send(Err("client closed before the end of the body".into()))
                        .await;
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        };
        let call = proxy::forward(gw, plan, ChannelBody { rx }.boxed(), started);
        tokio::pin!(pump, call);
        let mut pumping = true;
        loop {
            tokio::select! {
                res = &mut call => break res,
                r = &mut pump, if pumping => {
                    pumping = false;
                    if r.is_err() {
                        // The client is gone; the call fails on the broken body.
                        continue;
                    }
                }
            }
        }
    };
    let keep = body.done();
    Ok(write_response(stream, out, res, is_head, keep).await? && keep)
}

/// One request relayed on the fast path.
struct Exchange<'a> {
    gw: &'a Gateway,
    client: &'a mut TcpStream,
    client_buf: &'a mut BytesMut,
    out: &'a mut Vec<u8>,
    /// The request head for the backend (a buffer kept for the connection's life).
    head: &'a mut Vec<u8>,
    body: &'a mut Option<ReqBody>,
    /// The client asked with HEAD: it gets no body.
    is_head: bool,
    /// The backend was asked with HEAD (after `X-HTTP-Method-Override`): its answer has no body.
    /// Set by [`Exchange::run`] from the plan.
    upstream_head: bool,
    /// An HTTP/1.1 client that did not ask to close.
    client_keep: bool,
    started: Instant,
}

/// How a fast-path exchange ended.
enum Outcome {
    /// A response was relayed; whether each side may be reused.
    Relayed {
        status: u16,
        client_keep: bool,
        backend_keep: bool,
    },
    /// Nothing was sent to the client yet: the gateway answers with this error. The flag: the
    /// backend closed before reading anything back, so a request without a body may be retried
    /// on a new connection.
    Failed(u16, &'static str, bool),
    /// The client went away, or the response broke after it started: close.
    Broken(u16),
}

impl Exchange<'_> {
    /// Relays the request and returns whether the client connection may serve another.
    /// `timer` is the connection's timer for backend deadlines.
    async fn run(
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
        head.extend_from_slice(plan.target.as_bytes());
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
            Some(ReqBody::Chunked(_)) => field(head, b"transfer-encoding", b"chunked"),
            Some(ReqBody::Length(n)) => {
                field(head, b"content-length", n.to_string().as_bytes())
            }
            None if plan.headers.contains_key(header::CONTENT_LENGTH) => {
                field(head, b"content-length", b"0");
            }
            None => {}
        }
        head.extend_from_slice(b"\r\n");
        if plan.target.bytes().any(|b| !b.is_ascii_graphic()) {
            return self.answer(op, 400, "Bad request path", false).await;
        }

        let mut response_started = false;
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let (conn, reused) = match backend.take() {
                Some(c) if c.authority == authority && c.alive() => (c, true),
                other => {
                    if let Some(c) = other {
                        release(self.gw, c);
                    }
                    match self.pooled(authority) {
                        Some(c) => (c, true),
                        None => match connect(authority).await {
                            Ok(c) => (c, false),
                            Err(e) => {
                                tracing::warn!(operation = op, error = %e, "backend unreachable");
                                break Outcome::Failed(503, proxy::UPSTREAM_CONNECT_FAILED, false);
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
                    op,
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
                Err(_) => Outcome::Failed(504, proxy::UPSTREAM_TIMEOUT, false),
                Ok(o) => o,
            };
            match outcome {
                // A reused connection the backend had closed: one retry when nothing is lost.
                Outcome::Failed(_, _, true) if reused && attempt == 1 && self.body.is_none() => {
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
                proxy::record(self.gw, op, status, self.started);
                client_keep
            }
            Outcome::Failed(status, msg, _) => {
                tracing::warn!(operation = op, status, "backend failed: {msg}");
                let keep = self.client_keep && self.body.as_ref().is_none_or(ReqBody::done);
                self.answer(op, status, msg, keep).await
            }
            Outcome::Broken(status) => {
                proxy::record(self.gw, op, status, self.started);
                false
            }
        }
    }

    fn pooled(&self, authority: &str) -> Option<UpConn> {
        while let Some(c) = self.gw.upstream.raw.take(authority) {
            if c.idle() {
                return Some(c);
            }
        }
        None
    }

    /// The gateway's own answer after a failed exchange.
    async fn answer(&mut self, op: &str, status: u16, msg: &'static str, keep: bool) -> bool {
        let res = GatewayError::new(status, msg).into_response();
        proxy::record(self.gw, op, status, self.started);
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
        op: &str,
        upstream_started: Instant,
    ) -> Outcome {
        // Head plus whatever body is already here, in one write when small.
        let mut first = self
            .body
            .as_mut()
            .map(|b| b.take_framed(self.client_buf))
            .transpose();
        let Ok(initial) = first.as_mut() else {
            return Outcome::Failed(400, "Bad Request: invalid chunked body", false);
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
        if sent.is_err() {
            return Outcome::Failed(503, proxy::UPSTREAM_RESET, true);
        }

        // Until the final response head: more request body one way, 1xx heads the other.
        loop {
            match parse_response(&conn.buf) {
                Ok(Some((len, status))) if (100..200).contains(&status) && status != 101 => {
                    // 100 Continue / 103 Early Hints go to the client as they are.
                    let interim = conn.buf.split_to(len);
                    if self.client.write_all(&interim).await.is_err() {
                        return Outcome::Broken(499);
                    }
                    continue;
                }
                Ok(Some(_)) => break,
                Ok(None) if conn.buf.len() > MAX_HEAD => {
                    return Outcome::Failed(503, proxy::UPSTREAM_PROTOCOL, false);
                }
                Ok(None) => {}
                Err(()) => return Outcome::Failed(503, proxy::UPSTREAM_PROTOCOL, false),
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
                        return Outcome::Failed(503, proxy::UPSTREAM_RESET, nothing);
                    }
                    Ok(_) => {}
                },
                read = self.client.read_buf(self.client_buf), if pumping => match read {
                    Ok(0) | Err(_) => return Outcome::Broken(499),
                    Ok(_) => {
                        let Some(Ok(chunk)) = self.body.as_mut().map(|b| b.take_framed(self.client_buf)) else {
                            return Outcome::Broken(400);
                        };
                        if conn.stream.write_all(&chunk).await.is_err() {
                            return Outcome::Failed(503, proxy::UPSTREAM_RESET, false);
                        }
                    }
                },
            }
        }
        self.gw
            .metrics
            .upstream_latency(op, upstream_started.elapsed());

        // The final response head, re-serialised without hop-by-hop fields.
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut raw);
        let Ok(httparse::Status::Complete(len)) = res.parse(&conn.buf) else {
            return Outcome::Failed(503, proxy::UPSTREAM_PROTOCOL, false);
        };
        let status = res.code.unwrap_or(502);
        let mut backend_keep = res.version == Some(1);
        let mut chunked = false;
        let mut length = None;
        let mut dropped: Vec<&[u8]> = Vec::new();
        for h in res.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = h
                    .value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                if !chunked {
                    return Outcome::Failed(503, proxy::UPSTREAM_PROTOCOL, false);
                }
            } else if name.eq_ignore_ascii_case(b"content-length") {
                match std::str::from_utf8(h.value.trim_ascii())
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => return Outcome::Failed(503, proxy::UPSTREAM_PROTOCOL, false),
                }
            } else if name.eq_ignore_ascii_case(b"connection") {
                if lists(h.value, "close") {
                    backend_keep = false;
                }
                dropped.extend(
                    h.value
                        .split(|b| *b == b',')
                        .map(<[u8]>::trim_ascii)
                        .filter(|n| proxy::connection_may_remove(n)),
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
            let hop = proxy::HOP_BY_HOP
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n.as_str().as_bytes()));
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
        conn.buf.advance(len);
        *response_started = true;

        // The body.
        let relayed = match framing {
            _ if head_only => self.client.write_all(out).await.map(|()| true),
            Framing::None => self.client.write_all(out).await.map(|()| true),
            Framing::Length(n) => relay_length(self.client, out, conn, n).await,
            Framing::Chunked => relay_chunked(self.client, out, conn, dechunk).await,
            Framing::Close => relay_until_close(self.client, out, conn).await,
        };
        match relayed {
            Ok(true) => Outcome::Relayed {
                status,
                client_keep,
                backend_keep: backend_keep && conn.buf.is_empty(),
            },
            Ok(false) | Err(_) => Outcome::Broken(status),
        }
    }
}

/// Parses a response head in `buf`: its length and status, `None` if incomplete.
fn parse_response(buf: &[u8]) -> Result<Option<(usize, u16)>, ()> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut raw);
    match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Ok(Some((n, res.code.unwrap_or(0)))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(()),
    }
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

/// A stream with bytes already read in front of it.
struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// An HTTP/2 (prior knowledge) client: hyper's server, the shared request path.
async fn serve_h2(
    gw: Arc<Gateway>,
    stream: TcpStream,
    prefix: Bytes,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |req| {
        let gw = gw.clone();
        async move { Ok::<_, std::convert::Infallible>(proxy::handle(gw, req, peer).await) }
    });
    let io = hyper_util::rt::TokioIo::new(Rewind {
        prefix,
        inner: stream,
    });
    let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads_and_framing() {
        let mut buf = BytesMut::from(
            &b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX-A: 1\r\nX-A: 2\r\n\r\nabcGET"[..],
        );
        let head = parse_request(&mut buf).unwrap().unwrap();
        assert_eq!(head.parts.method, Method::POST);
        assert_eq!(head.parts.uri.path(), "/a");
        assert_eq!(head.parts.uri.query(), Some("b=1"));
        assert_eq!(head.framing, Framing::Length(3));
        assert!(head.keep_alive);
        assert_eq!(head.parts.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(&buf[..], b"abcGET");

        let mut partial = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n"[..]);
        assert!(parse_request(&mut partial).unwrap().is_none());

        for bad in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            // Found by the differential fuzz target.
            b"GET / HTTP/1.1\r\nHost: a b@c\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: u@h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h:8x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h.test%\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h%4\r\n\r\n",
            b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET h~://gw.example HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET gw.example:80 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert!(
                parse_request(&mut BytesMut::from(bad)).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut close = BytesMut::from(
            &b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n"[..],
        );
        assert!(!parse_request(&mut close).unwrap().unwrap().keep_alive);
        for ok in [
            &b"GET http://gw.example/a HTTP/1.1\r\nHost: gw.example\r\n\r\n"[..],
            b"OPTIONS * HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
        ] {
            assert!(
                parse_request(&mut BytesMut::from(ok)).unwrap().is_some(),
                "{}",
                String::from_utf8_lossy(ok)
            );
        }
        let mut old = BytesMut::from(&b"GET / HTTP/1.0\r\n\r\n"[..]);
        assert!(!parse_request(&mut old).unwrap().unwrap().keep_alive);
    }
}
