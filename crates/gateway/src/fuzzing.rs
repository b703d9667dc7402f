//! Entry points for the fuzz targets in `fuzz/` (and their differential oracles): the HTTP/1.1
//! request-head parser and the chunked decoder exactly as the serving path runs them, and
//! the hop-by-hop rule. Not an API: nothing outside the fuzzers and tests should call these.

use bytes::BytesMut;

/// How the gateway reads a request head: what it would route and how it frames the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedHead {
    /// Bytes of the input the head took.
    pub head_len: usize,
    pub method: String,
    /// The request target as the gateway took it.
    pub target: String,
    /// `true` for HTTP/1.1, `false` for HTTP/1.0.
    pub http11: bool,
    /// `None`: no body; `Some(None)`: chunked; `Some(Some(n))`: `n` bytes.
    pub body: Option<Option<u64>>,
    pub keep_alive: bool,
    /// The header fields, in order, as the gateway passes them on (before hop-by-hop removal).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Parses a request head at the front of `input` as the HTTP/1.1 server does: `Ok(None)` when
/// more bytes are needed, `Err(status)` for a head the gateway refuses.
pub fn parse_request_head(input: &[u8]) -> Result<Option<ParsedHead>, u16> {
    let mut buf = BytesMut::from(input);
    let before = buf.len();
    let head = match crate::h1::codec::parse_request(&mut buf) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(None),
        Err((status, _)) => return Err(status),
    };
    Ok(Some(ParsedHead {
        head_len: before - buf.len(),
        method: head.parts.method.as_str().to_owned(),
        target: head.parts.uri.to_string(),
        http11: head.parts.version == http::Version::HTTP_11,
        body: match head.framing {
            crate::h1::codec::Framing::None | crate::h1::codec::Framing::Close => None,
            crate::h1::codec::Framing::Length(n) => Some(Some(n)),
            crate::h1::codec::Framing::Chunked => Some(None),
        },
        keep_alive: head.keep_alive,
        headers: head
            .parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
    }))
}

/// Decodes a chunked body at the front of `input` fed in pieces of `piece` bytes, as the
/// server receives it. Returns the data, the bytes the body took (framing and trailers
/// included) and whether it ended; `Err` for malformed framing.
pub fn decode_chunked(input: &[u8], piece: usize) -> Result<(Vec<u8>, usize, bool), String> {
    let mut d = crate::chunked::Decoder::new();
    let mut data = Vec::new();
    let mut at = 0;
    let piece = piece.max(1);
    while at < input.len() && !d.is_done() {
        let end = (at + piece).min(input.len());
        let mut window = at;
        while window < end && !d.is_done() {
            let p = d.advance(&input[window..end]).map_err(|e| e.to_string())?;
            data.extend_from_slice(&input[window..][p.data]);
            window += p.used;
            if p.used == 0 {
                break;
            }
        }
        at = window;
    }
    Ok((data, at, d.is_done()))
}

/// Whether a field named in `Connection` may be removed (never framing or `Host`).
pub fn connection_may_remove(name: &[u8]) -> bool {
    crate::plan::connection_may_remove(name)
}
