//! An incremental decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1) that never copies:
//! it tells the caller which bytes of its buffer are framing and which are data, and where the
//! body ends. The fast path relays chunked bodies byte for byte and uses this only to find the
//! end; an HTTP/1.0 client gets the data runs alone.

use std::ops::Range;

/// Longest chunk-size line (size, extensions) and trailer section accepted.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size,
    /// After the size: whitespace or `;extension` up to CR.
    Extension,
    /// The LF that ends the size line.
    SizeLf,
    /// `remaining` data bytes.
    Data,
    /// The CR LF after a chunk's data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// The LF of the final empty line.
    EndLf,
    Done,
}

/// Malformed chunked framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked encoding: {0}")]
pub struct ChunkError(&'static str);

/// What one call to [`Decoder::advance`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input consumed (framing and data).
    pub used: usize,
    /// The data bytes among them (empty for framing).
    pub data: Range<usize>,
}

/// The decoder's position in a chunked body.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    remaining: u64,
    digits: usize,
    line: usize,
    trailers: usize,
    /// Inside a quoted-string of a chunk extension, and after its backslash.
    quoted: bool,
    escaped: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            state: State::Size,
            remaining: 0,
            digits: 0,
            line: 0,
            trailers: 0,
            quoted: false,
            escaped: false,
        }
    }

    /// Whether the whole body (last chunk and trailers) has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes framing bytes from the front of `buf` until a data run or the end, or returns
    /// one data run. Call again with the rest until `used == buf.len()` or [`Self::is_done`].
    pub fn advance(&mut self, buf: &[u8]) -> Result<Progress, ChunkError> {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                State::Done => break,
                State::Data => {
                    if i > 0 {
                        // Return the framing consumed so far; the data run comes next call.
                        break;
                    }
                    let n = (buf.len() as u64).min(self.remaining) as usize;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Progress {
                        used: n,
                        data: 0..n,
                    });
                }
                State::Size => {
                    if let Some(d) = hex(b) {
                        self.digits += 1;
                        if self.digits > 16 {
                            return Err(ChunkError("chunk size too large"));
                        }
                        self.remaining = (self.remaining << 4) | u64::from(d);
                    } else if self.digits == 0 {
                        return Err(ChunkError("chunk size missing"));
                    } else if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        self.state = State::Extension;
                        self.line = 0;
                        self.quoted = false;
                        self.escaped = false;
                    } else {
                        return Err(ChunkError("bad chunk size"));
                    }
                }
                State::Extension => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err(ChunkError("chunk extension too long"));
                    }
                    // RFC 9112 §7.1.1: a quoted-string cannot hold CR, LF or other controls,
                    // so an unterminated quote before CR LF is malformed, not a line end that
                    // one parser sees and another does not.
                    let control = (b < 0x20 && b != b'\t') || b == 0x7f;
                    if self.escaped {
                        if control {
                            return Err(ChunkError("control character in chunk extension"));
                        }
                        self.escaped = false;
                    } else if self.quoted {
                        match b {
                            b'\\' => self.escaped = true,
                            b'"' => self.quoted = false,
                            _ if control => {
                                return Err(ChunkError("unterminated quoted chunk extension"));
                            }
                            _ => {}
                        }
                    } else if b == b'"' {
                        self.quoted = true;
                    } else if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if control {
                        return Err(ChunkError("control character in chunk size line"));
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError("expected LF after chunk size"));
                    }
                    self.digits = 0;
                    if self.remaining == 0 {
                        self.state = State::TrailerStart;
                    } else {
                        self.state = State::Data;
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError("expected CRLF after chunk data"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError("expected CRLF after chunk data"));
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => {
                    self.trailers += 1;
                    if b == b'\r' {
                        self.state = State::EndLf;
                    } else if b == b'\n' {
                        return Err(ChunkError("bare LF in trailers"));
                    } else {
                        self.state = State::Trailer;
                    }
                }
                State::Trailer => {
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err(ChunkError("trailers too long"));
                    }
                    if b == b'\n' {
                        self.state = State::TrailerStart;
                    }
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError("expected LF after trailers"));
                    }
                    self.state = State::Done;
                    i += 1;
                    break;
                }
            }
            i += 1;
        }
        Ok(Progress {
            used: i,
            data: 0..0,
        })
    }

    /// How many bytes at the front of `buf` belong to the body (all of it if the body does not
    /// end inside `buf`).
    pub fn body_len(&mut self, buf: &[u8]) -> Result<usize, ChunkError> {
        let mut at = 0;
        while at < buf.len() && !self.is_done() {
            let p = self.advance(&buf[at..])?;
            at += p.used;
        }
        Ok(at)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = Decoder::new();
        let mut data = Vec::new();
        let mut at = 0;
        while at < input.len() && !d.is_done() {
            let end = (at + piece).min(input.len());
            let mut local = at;
            while local < end && !d.is_done() {
                let p = d.advance(&input[local..end])?;
                data.extend_from_slice(&input[local..end][p.data.clone()]);
                local += p.used;
            }
            at = local;
        }
        Ok((data, if d.is_done() { at } else { usize::MAX }))
    }

    #[test]
    fn decodes_in_any_split() {
        let body =
            b"5\r\nhello\r\n1a; ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for piece in 1..body.len() {
            let (data, end) = decode_in_pieces(body, piece).unwrap();
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "piece {piece}");
            assert_eq!(&body[end..], b"NEXT", "piece {piece}");
        }
    }

    #[test]
    fn empty_body_and_body_len() {
        let mut d = Decoder::new();
        assert_eq!(d.body_len(b"0\r\n\r\nGET / HTTP/1.1").unwrap(), 5);
        assert!(d.is_done());
        let mut d = Decoder::new();
        assert_eq!(d.body_len(b"3\r\nab").unwrap(), 5);
        assert!(!d.is_done());
        assert_eq!(d.body_len(b"c\r\n0\r\n\r\n").unwrap(), 8);
        assert!(d.is_done());
    }

    #[test]
    fn rejects_bad_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloXX",
            b"11111111111111111\r\n",
            b"0\r\n\n",
            b"-1\r\n",
            b"1;a=\"\r\nx\r\n0\r\n\r\n",
            b"1;a=\"x\\\r\"\r\nx\r\n",
            b"1;a\x00\r\nx\r\n",
            b"1;a\nx\r\n",
        ] {
            assert!(Decoder::new().body_len(bad).is_err(), "{bad:?}");
        }
        // Quoted extensions with escapes and semicolons are fine.
        let ok = b"1;a=\"x;\\\"y\";b=c\r\nx\r\n0\r\n\r\n";
        assert_eq!(Decoder::new().body_len(ok), Ok(ok.len()));
    }
}
