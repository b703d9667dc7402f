//! HTTP/1.1 on the wire: parsing request and response heads (httparse, in place), request body
//! framing (Content-Length and chunked, re-framed for the backend), and serialising heads and
//! the gateway's own responses.
//!
//! Owns the RFC 9112 rules the gateway enforces on what it reads (one Host, no conflicting
//! framing, a routable target). Makes no routing or backend decisions.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, Uri, Version, header};
use http_body_util::BodyExt;
use smallvec::SmallVec;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::Body;
use crate::chunked::Decoder;

/// Largest request or response head, and most header fields in one.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
pub(crate) const MAX_HEADERS: usize = 100;
/// Bodies up to this size go out in the same write as the head.
pub(crate) const COALESCE: usize = 16 * 1024;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the backend closes (responses only).
    Close,
}

/// The gateway's answer to a request body over [`crate::ConnectionLimits::max_request_body`].
pub(crate) const PAYLOAD_TOO_LARGE: &str = "Payload Too Large";

/// The request body still to come from the client.
pub(crate) enum ReqBody {
    Length(u64),
    /// `allowed`: data bytes the body may still carry before it passes the limit.
    Chunked {
        decoder: Decoder,
        allowed: u64,
    },
}

impl ReqBody {
    /// The body a head announces; a chunked one may carry at most `max` data bytes (a
    /// Content-Length is checked against the limit before the body is read).
    pub(crate) fn new(framing: Framing, max: u64) -> Option<Self> {
        match framing {
            Framing::Length(0) | Framing::None | Framing::Close => None,
            Framing::Length(n) => Some(Self::Length(n)),
            Framing::Chunked => Some(Self::Chunked {
                decoder: Decoder::new(),
                allowed: max,
            }),
        }
    }

    pub(crate) fn done(&self) -> bool {
        match self {
            Self::Length(n) => *n == 0,
            Self::Chunked { decoder, .. } => decoder.is_done(),
        }
    }

    /// Splits off the body bytes at the front of `buf`, framing included.
    pub(crate) fn take_raw(&mut self, buf: &mut BytesMut) -> io::Result<BytesMut> {
        let n = match self {
            Self::Length(left) => {
                let n = (buf.len() as u64).min(*left);
                *left -= n;
                n as usize
            }
            Self::Chunked { decoder, allowed } => {
                let mut at = 0;
                while at < buf.len() && !decoder.is_done() {
                    let p = decoder.advance(&buf[at..]).map_err(invalid)?;
                    count(allowed, p.data.len())?;
                    at += p.used;
                }
                at
            }
        };
        Ok(buf.split_to(n))
    }

    /// Splits off the body bytes at the front of `buf`, framed for the backend by the gateway:
    /// a length-delimited body as it is; a chunked body re-chunked, so chunk extensions and
    /// trailers (which could carry identity headers such as `X-Apigateway-Api-Userinfo`) never
    /// reach the backend, and the backend sees only framing the gateway wrote.
    pub(crate) fn take_framed(&mut self, buf: &mut BytesMut) -> io::Result<BytesMut> {
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
    pub(crate) fn take_data(&mut self, buf: &mut BytesMut) -> io::Result<Bytes> {
        match self {
            Self::Length(_) => Ok(self.take_raw(buf)?.freeze()),
            Self::Chunked { decoder, allowed } => {
                let mut data = BytesMut::new();
                let mut at = 0;
                while at < buf.len() && !decoder.is_done() {
                    let p = decoder.advance(&buf[at..]).map_err(invalid)?;
                    count(allowed, p.data.len())?;
                    data.extend_from_slice(&buf[at..][p.data]);
                    at += p.used;
                }
                buf.advance(at);
                Ok(data.freeze())
            }
        }
    }
}

/// Counts `n` data bytes against what a chunked body may still carry.
fn count(allowed: &mut u64, n: usize) -> io::Result<()> {
    *allowed = allowed
        .checked_sub(n as u64)
        .ok_or_else(|| io::Error::new(io::ErrorKind::FileTooLarge, PAYLOAD_TOO_LARGE))?;
    Ok(())
}

/// Whether a body error is the body passing the size limit.
pub(crate) fn too_large(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::FileTooLarge
}

pub(crate) fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// A parsed request head.
pub(crate) struct ReqHead {
    pub(crate) parts: http::request::Parts,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
}

fn offset(base: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
pub(crate) fn lists(value: &[u8], token: &str) -> bool {
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
    let mut fields: SmallVec<[_; 16]> = SmallVec::new();
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
    // Room for the fields the gateway adds (user info, X-Forwarded-For, the original path).
    let mut headers = HeaderMap::with_capacity(fields.len() + 4);
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

/// Serialises `res` to the client. Returns whether the connection may serve another request.
pub(crate) async fn write_response(
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

pub(crate) fn status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
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

pub(crate) fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
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
