//! An incremental decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1) that never copies:
//! it tells the caller which bytes of its buffer are framing and which are data, and where the
//! body ends. The fast path relays chunked bodies byte for byte and uses this only to find the
//! end; an HTTP/1.0 client gets the data runs alone.
//!
//! No I/O and no allocation: callers own the buffers.

use std::ops::Range;

/// Longest chunk-size line (size, extensions) and trailer section accepted.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size,
    /// Whitespace after the size or after an extension (before `;` or CR).
    ExtBws,
    /// After `;`: whitespace, then an extension name.
    ExtNameStart,
    ExtName,
    /// Whitespace after an extension name (before `=`, `;` or CR).
    ExtAfterName,
    /// After `=`: whitespace, then a token or a quoted-string.
    ExtValueStart,
    ExtToken,
    ExtQuoted,
    /// After a backslash inside a quoted-string.
    ExtQuotedEscape,
    /// The LF that ends the size line.
    SizeLf,
    /// `remaining` data bytes.
    Data,
    /// The CR LF after a chunk's data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// A trailer field's name, up to its colon.
    TrailerName,
    /// A trailer field's value, up to CR.
    TrailerValue,
    /// The LF that ends a trailer line.
    TrailerLf,
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
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

/// RFC 9110 `tchar`: the bytes of a token (field and extension names, token values).
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whitespace allowed around extension parts (BWS).
fn ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Field-value and quoted-pair bytes: visible ASCII, space, tab and obs-text.
fn vchar(b: u8) -> bool {
    ws(b) || (0x21..=0x7e).contains(&b) || b >= 0x80
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            state: State::Size,
            remaining: 0,
            digits: 0,
            line: 0,
            trailers: 0,
        }
    }

    /// Whether the whole body (last chunk and trailers) has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The state after a byte of a chunk extension (RFC 9112 §7.1.1), read strictly: any
    /// byte the grammar has no place for is an error, so no two readers can disagree about
    /// where the size line ends.
    fn extension(&self, b: u8) -> Result<State, ChunkError> {
        use State::*;
        let bad = Err(ChunkError("malformed chunk extension"));
        Ok(match (self.state, b) {
            (ExtQuoted, b'\\') => ExtQuotedEscape,
            (ExtQuoted, b'"') => ExtBws,
            (ExtQuoted, b) if vchar(b) => ExtQuoted,
            (ExtQuotedEscape, b) if vchar(b) => ExtQuoted,
            (ExtQuoted | ExtQuotedEscape, _) => return bad,
            (ExtBws | ExtName | ExtAfterName | ExtToken, b'\r') => SizeLf,
            (ExtBws | ExtName | ExtAfterName | ExtToken, b';') => ExtNameStart,
            (ExtName | ExtAfterName, b'=') => ExtValueStart,
            (ExtBws | ExtAfterName | ExtNameStart | ExtValueStart, b) if ws(b) => self.state,
            (ExtName, b) if ws(b) => ExtAfterName,
            (ExtToken, b) if ws(b) => ExtBws,
            (ExtNameStart | ExtName, b) if tchar(b) => ExtName,
            (ExtValueStart | ExtToken, b) if tchar(b) => ExtToken,
            (ExtValueStart, b'"') => ExtQuoted,
            _ => return bad,
        })
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
                    } else if b == b';' || ws(b) {
                        self.state = if b == b';' {
                            State::ExtNameStart
                        } else {
                            State::ExtBws
                        };
                        self.line = 0;
                    } else {
                        return Err(ChunkError("bad chunk size"));
                    }
                }
                State::ExtBws
                | State::ExtNameStart
                | State::ExtName
                | State::ExtAfterName
                | State::ExtValueStart
                | State::ExtToken
                | State::ExtQuoted
                | State::ExtQuotedEscape => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err(ChunkError("chunk extension too long"));
                    }
                    self.state = self.extension(b)?;
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
                State::TrailerStart
                | State::TrailerName
                | State::TrailerValue
                | State::TrailerLf => {
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err(ChunkError("trailers too long"));
                    }
                    // Each trailer line is a field (name, colon, value) ending in CR LF; the
                    // empty line ends the body. Nothing else, so no reader can end it elsewhere.
                    self.state = match (self.state, b) {
                        (State::TrailerStart, b'\r') => State::EndLf,
                        (State::TrailerStart | State::TrailerName, b) if tchar(b) => {
                            State::TrailerName
                        }
                        (State::TrailerName, b':') => State::TrailerValue,
                        (State::TrailerValue, b'\r') => State::TrailerLf,
                        (State::TrailerValue, b) if vchar(b) => State::TrailerValue,
                        (State::TrailerLf, b'\n') => State::TrailerStart,
                        _ => return Err(ChunkError("malformed trailer field")),
                    };
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
    /// end inside `buf`). The server counts data as it goes instead (`h1::codec::ReqBody`).
    #[cfg(test)]
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
        // Extensions and trailers outside RFC 9112's grammar (found by the differential fuzz
        // target: a proxy that reads them by the RFC would end the body elsewhere).
        for bad in [
            &b"3 garbage\r\nabc\r\n0\r\n\r\n"[..],
            b"3;\r\nabc\r\n0\r\n\r\n",
            b"3;a=\r\nabc\r\n0\r\n\r\n",
            b"3;a b\r\nabc\r\n0\r\n\r\n",
            b"0\r\nx: a\nb: c\r\n\r\n",
            b"0\r\nx: a\rb: c\r\n\r\n",
            b"0\r\nGET /admin HTTP/1.1\r\n\r\n",
            b"0\r\n folded: x\r\n\r\n",
            b"0\r\n: x\r\n\r\n",
        ] {
            assert!(
                Decoder::new().body_len(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Extensions by the grammar, with whitespace, tokens and quoted-strings, and trailers.
        for ok in [
            &b"1;a=\"x;\\\"y\";b=c\r\nx\r\n0\r\n\r\n"[..],
            b"1 ; a = b ;c\t\r\nx\r\n0;last\r\nX-T: v  w\r\nY:\r\n\r\n",
        ] {
            assert_eq!(
                Decoder::new().body_len(ok),
                Ok(ok.len()),
                "{}",
                String::from_utf8_lossy(ok)
            );
        }
    }
}
