//! Helpers shared by the gateway's integration tests.

#![allow(dead_code, clippy::unwrap_used)]

use gatehouse_tokens::{SigningKey, encode_rs256};
use serde_json::Value;

/// `claims` (a JSON object) signed by `key` as an RS256 JWT.
pub fn token(key: &SigningKey, claims: Value) -> String {
    let Value::Object(m) = claims else {
        unreachable!()
    };
    encode_rs256(key, &m).unwrap()
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
