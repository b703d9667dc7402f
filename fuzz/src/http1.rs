//! An independent reading of an HTTP/1.1 request head (RFC 9112), for `h1_differential`:
//! its own line splitter, its own field parser and the framing rules of RFC 9112 §6.3.
//!
//! It accepts what the RFC says a server may accept and refuses what the RFC says a server must
//! refuse (or what makes the framing undeterminable), plus the one stricter rule the gateway
//! promises: `Content-Length` together with `Transfer-Encoding` is refused, not resolved. The
//! form of the request-target against the method (`*` only for OPTIONS, authority-form only
//! for CONNECT) is a SHOULD left to routing, and is not judged here.

use crate::{is_field_value_octet, is_token, trim_ows};

/// How the body of a request is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// Whether the connection stays open after this request (RFC 9112 §9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// The server must close after responding.
    Close,
    /// The connection persists (HTTP/1.1 without `close`).
    KeepAlive,
    /// HTTP/1.0 with `keep-alive`: the server may honour it or close.
    Either,
}

/// A request head as the oracle reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the input the head took, leading empty lines included.
    pub head_len: usize,
    pub method: String,
    /// The request-target; an absolute-form target with an empty path gets its `/` (RFC 9110
    /// §4.2.3: the two are equivalent) and its scheme lower-cased (RFC 3986 §3.1).
    pub target: String,
    pub http11: bool,
    /// Field lines in order: lower-cased name, value without surrounding whitespace.
    pub fields: Vec<(String, Vec<u8>)>,
    pub framing: Framing,
    pub persistence: Persistence,
}

/// What the oracle makes of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// No complete head yet.
    Incomplete,
    /// A server must not act on this head; the reason names the rule.
    Refused(&'static str),
    Head(Head),
}

/// Reads the request head at the front of `input`.
pub fn read_head(input: &[u8]) -> Reading {
    let (lines, head_len) = match split_lines(input) {
        Ok(Some(l)) => l,
        Ok(None) => return Reading::Incomplete,
        Err(why) => return Reading::Refused(why),
    };
    match interpret(&lines) {
        Ok((method, target, http11, fields)) => match frame(http11, &fields) {
            Ok((framing, persistence)) => Reading::Head(Head {
                head_len,
                method,
                target,
                http11,
                fields,
                framing,
                persistence,
            }),
            Err(why) => Reading::Refused(why),
        },
        Err(why) => Reading::Refused(why),
    }
}

/// Splits the head into lines (without terminators) up to the empty line; returns them and
/// the bytes taken. A line ends in CRLF or, as RFC 9112 §2.2 allows a recipient to accept, a
/// bare LF; a bare CR anywhere is invalid. Empty lines before the request-line are skipped
/// (§2.2).
fn split_lines(input: &[u8]) -> Result<Option<(Vec<&[u8]>, usize)>, &'static str> {
    let mut at = 0;
    loop {
        match &input[at..] {
            [b'\r', b'\n', ..] => at += 2,
            [b'\n', ..] => at += 1,
            [b'\r'] | [] => return Ok(None),
            [b'\r', ..] => return Err("bare CR before the request-line"),
            _ => break,
        }
    }
    let mut lines = Vec::new();
    loop {
        let rest = &input[at..];
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            let cr = rest.iter().position(|&b| b == b'\r');
            if cr.is_some_and(|i| i + 1 < rest.len()) {
                return Err("bare CR");
            }
            return Ok(None);
        };
        let raw = &rest[..lf];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.contains(&b'\r') {
            return Err("bare CR");
        }
        at += lf + 1;
        if line.is_empty() {
            return Ok(Some((lines, at)));
        }
        lines.push(line);
    }
}

type Interpreted = (String, String, bool, Vec<(String, Vec<u8>)>);

fn interpret(lines: &[&[u8]]) -> Result<Interpreted, &'static str> {
    let (first, field_lines) = lines.split_first().ok_or("no request-line")?;
    // RFC 9112 §3: method SP request-target SP HTTP-version, single spaces.
    let mut parts = first.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("request-line is not three elements");
    };
    if !is_token(method) {
        return Err("method is not a token");
    }
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => return Err("not HTTP/1.0 or HTTP/1.1"),
    };
    let target = effective_target(target)?;
    let mut fields = Vec::with_capacity(field_lines.len());
    for line in field_lines {
        // §5.2 obs-fold, and §2.2 whitespace between the start-line and the first field.
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return Err("line folding or leading whitespace");
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or("field line without a colon")?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        // §5.1: no whitespace between the name and the colon (a token has none).
        if !is_token(name) {
            return Err("field name is not a token");
        }
        let value = trim_ows(value);
        if !value.iter().all(|&b| is_field_value_octet(b)) {
            return Err("control character in a field value");
        }
        fields.push((
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            value.to_vec(),
        ));
    }
    Ok((
        String::from_utf8_lossy(method).into_owned(),
        target,
        http11,
        fields,
    ))
}

/// The request-target (RFC 9112 §3.2): printable ASCII only (RFC 3986 has no other
/// characters), never a fragment (`#` is in none of the forms), and in one of the four forms:
/// origin (`/path?query`), absolute (`scheme://authority/path?query`), authority
/// (`host:port`) or asterisk (`*`). Which characters a path may hold beyond that is a SHOULD
/// (§3.2: "SHOULD respond with 400"), left to routing.
fn effective_target(raw: &[u8]) -> Result<String, &'static str> {
    if raw.is_empty() || !raw.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err("request-target is not printable ASCII");
    }
    if raw.contains(&b'#') {
        return Err("fragment in the request-target");
    }
    let text = String::from_utf8_lossy(raw).into_owned();
    if text.starts_with('/') || text == "*" {
        return Ok(text);
    }
    // absolute-form: scheme "://" authority path-abempty [ "?" query ].
    if let Some((scheme, after)) = text.split_once("://") {
        let scheme_ok = scheme
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphabetic)
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !scheme_ok {
            return Err("request-target in none of the four forms (bad scheme)");
        }
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        let rest = if rest.starts_with('/') {
            rest.to_owned()
        } else {
            format!("/{rest}")
        };
        return Ok(format!(
            "{}://{authority}{rest}",
            scheme.to_ascii_lowercase()
        ));
    }
    // authority-form: uri-host ":" port.
    if raw.contains(&b':') && valid_host(raw) {
        return Ok(text);
    }
    Err("request-target in none of the four forms")
}

/// `target` with the scheme of an absolute-form target lower-cased: schemes are
/// case-insensitive (RFC 3986 §3.1, §6.2.2.1), so two readings that differ only there agree.
pub fn canonical_scheme(target: &str) -> String {
    match target.split_once("://") {
        Some((scheme, rest)) if !scheme.contains('/') => {
            format!("{}://{rest}", scheme.to_ascii_lowercase())
        }
        _ => target.to_owned(),
    }
}

/// RFC 9112 §6.3 framing and §9.3 persistence, from the parsed fields.
fn frame(
    http11: bool,
    fields: &[(String, Vec<u8>)],
) -> Result<(Framing, Persistence), &'static str> {
    let values = |name: &'static str| values(fields, name);
    // §3.2: exactly one Host in HTTP/1.1, at most one in 1.0, and a valid one.
    let hosts: Vec<&[u8]> = values("host").collect();
    if hosts.len() > 1 || (http11 && hosts.is_empty()) {
        return Err("Host missing or repeated");
    }
    if hosts.iter().any(|h| !valid_host(h)) {
        return Err("invalid Host");
    }
    let codings: Vec<Vec<u8>> = values("transfer-encoding").flat_map(list).collect();
    let has_te = values("transfer-encoding").next().is_some();
    let lengths: Vec<Vec<u8>> = values("content-length").flat_map(list).collect();
    let has_cl = values("content-length").next().is_some();
    let framing = if has_te {
        // §6.1: a Transfer-Encoding in an HTTP/1.0 message means the framing is faulty.
        if !http11 {
            return Err("Transfer-Encoding in HTTP/1.0");
        }
        // Refused outright by the gateway's rule (RFC 9112 §6.1 allows it).
        if has_cl {
            return Err("Content-Length with Transfer-Encoding");
        }
        // §6.3 (4): chunked must be the final coding, and (§6.1) applied once.
        let last = codings.last().ok_or("empty Transfer-Encoding")?;
        if !last.eq_ignore_ascii_case(b"chunked") {
            return Err("chunked is not the final transfer coding");
        }
        if codings[..codings.len() - 1]
            .iter()
            .any(|c| c.eq_ignore_ascii_case(b"chunked"))
        {
            return Err("chunked applied twice");
        }
        if !codings.iter().all(|c| is_token(c)) {
            return Err("transfer coding is not a token");
        }
        Framing::Chunked
    } else if has_cl {
        // §6.3 (5) and §8.6: 1*DIGIT; identical repeats may be taken as one.
        let mut n: Option<u64> = None;
        if lengths.is_empty() {
            return Err("empty Content-Length");
        }
        for l in &lengths {
            if l.is_empty() || !l.iter().all(u8::is_ascii_digit) {
                return Err("Content-Length is not digits");
            }
            let v = std::str::from_utf8(l)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or("Content-Length out of range")?;
            if n.is_some_and(|n| n != v) {
                return Err("differing Content-Length values");
            }
            n = Some(v);
        }
        Framing::Length(n.unwrap_or(0))
    } else {
        Framing::None
    };
    let options: Vec<Vec<u8>> = values("connection").flat_map(list).collect();
    let close = options.iter().any(|o| o.eq_ignore_ascii_case(b"close"));
    let keep = options
        .iter()
        .any(|o| o.eq_ignore_ascii_case(b"keep-alive"));
    let persistence = match (close, http11, keep) {
        (true, _, _) => Persistence::Close,
        (false, true, _) => Persistence::KeepAlive,
        (false, false, true) => Persistence::Either,
        (false, false, false) => Persistence::Close,
    };
    Ok((framing, persistence))
}

/// The values of the fields named `name` (lower case), in order.
fn values<'a>(
    fields: &'a [(String, Vec<u8>)],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    fields
        .iter()
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// The non-empty elements of a comma-separated list (RFC 9110 §5.6.1), without OWS.
fn list(value: &[u8]) -> Vec<Vec<u8>> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// RFC 9110 §7.2 `Host = uri-host [ ":" port ]`, or empty.
fn valid_host(value: &[u8]) -> bool {
    if value.is_empty() {
        return true;
    }
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(close) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let inner = &value[1..close];
        let literal_ok = !inner.is_empty()
            && inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            || inner.first() == Some(&b'v')
                && inner[1..]
                    .iter()
                    .all(|&b| unreserved(b) || sub_delim(b) || b == b':');
        if !literal_ok {
            return false;
        }
        match &value[close + 1..] {
            [] => (&value[..0], None),
            [b':', port @ ..] => (&value[..0], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        }
    };
    if port.is_some_and(|p| !p.iter().all(u8::is_ascii_digit)) {
        return false;
    }
    // reg-name / IPv4address: unreserved, pct-encoded, sub-delims.
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        if b == b'%' {
            if !(host.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && host.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            {
                return false;
            }
            i += 3;
            continue;
        }
        if !(unreserved(b) || sub_delim(b)) {
            return false;
        }
        i += 1;
    }
    true
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn sub_delim(b: u8) -> bool {
    b"!$&'()*+,;=".contains(&b)
}

/// Known answers of the oracle, checked once per process by the differential target before it
/// judges anything (an oracle that is wrong reports bugs that are not there, or hides some).
pub fn self_check() {
    let head = |s: &str| match read_head(s.as_bytes()) {
        Reading::Head(h) => h,
        other => panic!("oracle self-check: {s:?} read as {other:?}"),
    };
    let refused = |s: &str| matches!(read_head(s.as_bytes()), Reading::Refused(_));
    let h = head("GET /a?b HTTP/1.1\r\nHost: x\r\n\r\nrest");
    assert_eq!(
        (h.framing, h.persistence, h.head_len),
        (Framing::None, Persistence::KeepAlive, 30)
    );
    let framing = |s: &str| head(s).framing;
    assert_eq!(
        framing("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n"),
        Framing::Length(5)
    );
    assert_eq!(
        framing("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        Framing::Chunked
    );
    assert_eq!(
        head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").persistence,
        Persistence::Either
    );
    assert_eq!(head("\r\nGET / HTTP/1.1\nHost: x\n\n").head_len, 26);
    assert_eq!(
        head("GET http://A.b HTTP/1.1\r\nHost: a.b\r\n\r\n").target,
        "http://A.b/"
    );
    assert_eq!(
        head("CONNECT a.b:443 HTTP/1.1\r\nHost: a.b:443\r\n\r\n").target,
        "a.b:443"
    );
    for bad in [
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        "GET /#f HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET h~://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n",
    ] {
        assert!(refused(bad), "oracle self-check: {bad:?} not refused");
    }
    assert_eq!(
        read_head(b"GET / HTTP/1.1\r\nHost: x\r\n"),
        Reading::Incomplete
    );
}
