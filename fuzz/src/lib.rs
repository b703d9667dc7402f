//! Shared code of the fuzz targets in `fuzz_targets/`: the independent oracles the
//! differential targets compare the gateway against, and the wire re-encoders of the identity
//! target. Nothing here is used outside `fuzz/`.
//!
//! The oracles are written from the RFCs, not from the gateway: they share no code with it
//! (no `httparse`, no `http::Uri`), so a disagreement means one of the two misreads the bytes.

pub mod chunked;
pub mod http1;
pub mod identity_wire;

/// The `gatehouse up` manifest parser, compiled from its source: the `gatehouse` crate is a
/// binary with no library target, and this file depends on nothing else of it.
#[allow(dead_code)]
#[rustfmt::skip]
#[path = "../../crates/gatehouse/src/up/manifest.rs"]
pub mod manifest;

/// RFC 9110 §5.6.2 `tchar`.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 §5.6.2 `token`.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// RFC 9110 §5.5 field-value octets: VCHAR, obs-text, SP, HTAB.
pub fn is_field_value_octet(b: u8) -> bool {
    matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xff)
}

/// Trims RFC 9110 OWS (SP and HTAB only) from both ends.
pub fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}
