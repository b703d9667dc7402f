//! Tokens: RSA signing keys, RS256 JWT minting and verification, and key publication as a JWK
//! set and as an x509 certificate map.
//!
//! This is the one token library of Gatehouse: identity mints with it, and everything that
//! checks a token (identity itself, the gateway, services) verifies with it.
//!
//! Must not: store or fetch keys, or speak HTTP: callers load keys from wherever they keep them
//! (`gatehouse-keyring`, `gatehouse-verify`'s remote key sets) and hand them in.
//!
//! Verification is deliberately narrow: only `RS256` is accepted, the key is chosen by `kid`
//! from a set the caller trusts, and `none`/`HS*` tokens are refused before any key is touched,
//! so algorithm-confusion attacks have nothing to work with.

#![forbid(unsafe_code)]

mod jwks;
mod jwt;
mod keys;

pub use jwks::{KeySet, KeySetError, ParsedJwt, SignatureError, parse_jwt};
pub use jwt::{
    Claims, Header, Verifier, VerifyError, check_claims, decode_unverified, encode_rs256,
    encode_unsigned, numeric_date, verify_with_key,
};
pub use keys::{KeyError, PublicKey, SigningKey};

use base64::Engine as _;

/// Base64url without padding, as JWTs use it.
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url, with or without padding.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

/// An RFC 3339 UTC timestamp for `ms` since the epoch: with milliseconds
/// (`2024-01-01T12:00:00.000Z`) or, with `whole_seconds`, without (`2024-01-01T12:00:00Z`,
/// the form Python's `strptime("%Y-%m-%dT%H:%M:%SZ")` reads).
pub fn rfc3339(ms: i64, whole_seconds: bool) -> String {
    let secs = ms.div_euclid(1000);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = keys::civil_from_days(secs.div_euclid(86_400));
    let (h, min, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    if whole_seconds {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
    } else {
        let millis = ms.rem_euclid(1000);
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{millis:03}Z")
    }
}
