//! An independent whole-buffer decoder of the chunked transfer coding (RFC 9112 §7.1), for
//! `h1_differential`: it reads the grammar as written, line by line, with CRLF line ends only
//! (a bare LF or CR inside chunk framing is a known smuggling vector, so no leniency here).
//!
//! ```text
//! chunked-body   = *chunk last-chunk trailer-section CRLF
//! chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! last-chunk     = 1*("0") [ chunk-ext ] CRLF
//! chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! chunk-ext-val  = token / quoted-string
//! trailer-section = *( field-line CRLF )
//! ```

use crate::{is_field_value_octet, is_tchar, is_token, trim_ows};

/// What the oracle makes of a chunked body at the front of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The body does not end inside the input (and nothing seen so far is invalid).
    Incomplete,
    /// The framing breaks the grammar.
    Invalid(&'static str),
    /// The body ends after `used` bytes and carries `data`.
    Done { data: Vec<u8>, used: usize },
}

enum Line<'a> {
    Complete(&'a [u8], usize),
    Incomplete,
    Invalid(&'static str),
}

/// The CRLF-terminated line starting at `at`, and where the next one starts.
fn line(input: &[u8], at: usize) -> Line<'_> {
    let rest = &input[at..];
    match rest.iter().position(|&b| b == b'\n') {
        None => {
            if rest
                .iter()
                .position(|&b| b == b'\r')
                .is_some_and(|i| i + 1 < rest.len())
            {
                Line::Invalid("bare CR")
            } else {
                Line::Incomplete
            }
        }
        Some(lf) => {
            let Some(text) = rest[..lf].strip_suffix(b"\r") else {
                return Line::Invalid("bare LF");
            };
            if text.contains(&b'\r') {
                return Line::Invalid("bare CR");
            }
            Line::Complete(text, at + lf + 1)
        }
    }
}

/// Decodes the chunked body at the front of `input`.
pub fn decode(input: &[u8]) -> Decoded {
    let mut at = 0;
    let mut data = Vec::new();
    loop {
        let (text, next) = match line(input, at) {
            Line::Complete(t, n) => (t, n),
            Line::Incomplete => return Decoded::Incomplete,
            Line::Invalid(why) => return Decoded::Invalid(why),
        };
        let digits = text.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 {
            return Decoded::Invalid("chunk-size missing");
        }
        let Some(size) = std::str::from_utf8(&text[..digits])
            .ok()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
        else {
            return Decoded::Invalid("chunk-size out of range");
        };
        if !chunk_ext(&text[digits..]) {
            return Decoded::Invalid("chunk-ext");
        }
        at = next;
        if size == 0 {
            break;
        }
        let Some(end) = usize::try_from(size).ok().and_then(|s| at.checked_add(s)) else {
            return Decoded::Incomplete;
        };
        if input.len() < end {
            return Decoded::Incomplete;
        }
        data.extend_from_slice(&input[at..end]);
        match &input[end..] {
            [b'\r', b'\n', ..] => at = end + 2,
            [] | [b'\r'] => return Decoded::Incomplete,
            _ => return Decoded::Invalid("chunk-data not followed by CRLF"),
        }
    }
    // trailer-section CRLF
    loop {
        let (text, next) = match line(input, at) {
            Line::Complete(t, n) => (t, n),
            Line::Incomplete => return Decoded::Incomplete,
            Line::Invalid(why) => return Decoded::Invalid(why),
        };
        at = next;
        if text.is_empty() {
            return Decoded::Done { data, used: at };
        }
        if !field_line(text) {
            return Decoded::Invalid("trailer field line");
        }
    }
}

/// `*( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`
fn chunk_ext(mut s: &[u8]) -> bool {
    loop {
        s = trim_start_ows(s);
        if s.is_empty() {
            return true;
        }
        let Some(rest) = s.strip_prefix(b";") else {
            return false;
        };
        s = trim_start_ows(rest);
        let name = s.iter().take_while(|&&b| is_tchar(b)).count();
        if name == 0 {
            return false;
        }
        s = &s[name..];
        let after = trim_start_ows(s);
        if let Some(rest) = after.strip_prefix(b"=") {
            s = trim_start_ows(rest);
            if s.first() == Some(&b'"') {
                match quoted_string(s) {
                    Some(len) => s = &s[len..],
                    None => return false,
                }
            } else {
                let value = s.iter().take_while(|&&b| is_tchar(b)).count();
                if value == 0 {
                    return false;
                }
                s = &s[value..];
            }
        }
    }
}

/// The length of the quoted-string at the front of `s` (RFC 9110 §5.6.4).
fn quoted_string(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    loop {
        match *s.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => {
                let q = *s.get(i + 1)?;
                if !(q == b'\t' || q == b' ' || (0x21..=0x7e).contains(&q) || q >= 0x80) {
                    return None;
                }
                i += 2;
            }
            b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => i += 1,
            _ => return None,
        }
    }
}

/// `field-name ":" OWS field-value OWS`
fn field_line(text: &[u8]) -> bool {
    let Some(colon) = text.iter().position(|&b| b == b':') else {
        return false;
    };
    is_token(&text[..colon])
        && trim_ows(&text[colon + 1..])
            .iter()
            .all(|&b| is_field_value_octet(b))
}

fn trim_start_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

/// Known answers of the decoder, checked once per process by the differential target.
pub fn self_check() {
    let body =
        b"5\r\nhello\r\n1a; ext=\"q\\\"\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
    assert_eq!(
        decode(body),
        Decoded::Done {
            data: b"helloabcdefghijklmnopqrstuvwxyz".to_vec(),
            used: body.len() - 4,
        }
    );
    assert_eq!(decode(b"5\r\nhel"), Decoded::Incomplete);
    assert_eq!(decode(b"0\r\n\r"), Decoded::Incomplete);
    for bad in [
        &b"5\nhello\r\n"[..],
        b"5 x\r\n",
        b"5;\r\n",
        b"5;a=\r\n",
        b"0\r\nX\r\n\r\n",
        b"0\r\nX: 1\n\r\n",
        b"5\r\nhelloXX",
        b"x\r\n",
    ] {
        assert!(
            matches!(decode(bad), Decoded::Invalid(_)),
            "oracle self-check: {bad:?} not invalid"
        );
    }
}
