//! Strong etags computed from a resource's serialized content, and Google's check of a
//! client's etag (a mismatch is `ABORTED` 409).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::ApiError;

/// The strong etag (quoted, as Google writes them) of `resource`, ignoring any `etag` field
/// it already has. Object keys are hashed in sorted order, so equal resources have equal
/// etags whatever order their fields were built in.
pub fn of(resource: &Value) -> String {
    let mut hasher = Sha256::new();
    feed(&mut hasher, resource, true);
    format!("\"{}\"", URL_SAFE_NO_PAD.encode(&hasher.finalize()[..18]))
}

fn feed(h: &mut Sha256, v: &Value, top: bool) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map
                .keys()
                .filter(|k| !(top && k.as_str() == "etag"))
                .collect();
            keys.sort();
            h.update(b"{");
            for k in keys {
                h.update(Value::String(k.clone()).to_string().as_bytes());
                h.update(b":");
                if let Some(inner) = map.get(k) {
                    feed(h, inner, false);
                }
                h.update(b",");
            }
            h.update(b"}");
        }
        Value::Array(items) => {
            h.update(b"[");
            for item in items {
                feed(h, item, false);
                h.update(b",");
            }
            h.update(b"]");
        }
        other => h.update(other.to_string().as_bytes()),
    }
}

/// Passes when the client sent no etag (or an empty one) or the current one; else `ABORTED`.
pub fn check(given: Option<&str>, current: &str) -> Result<(), ApiError> {
    match given.filter(|g| !g.is_empty()) {
        None => Ok(()),
        Some(g) if g == current => Ok(()),
        Some(_) => Err(ApiError::etag_mismatch()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn etags_follow_content_not_field_order() {
        let a = json!({"name": "x", "labels": {"a": "1", "b": "2"}});
        let b = json!({"labels": {"b": "2", "a": "1"}, "name": "x", "etag": "\"old\""});
        assert_eq!(of(&a), of(&b));
        assert!(of(&a).starts_with('"') && of(&a).ends_with('"'));
        assert_ne!(of(&a), of(&json!({"name": "x", "labels": {"a": "1"}})));
        assert_ne!(of(&json!({"a": "1"})), of(&json!({"a": 1})));
        // Only the top-level etag is ignored.
        assert_ne!(of(&json!({"x": {"etag": 1}})), of(&json!({"x": {}})));
    }

    #[test]
    fn stale_etags_abort() {
        let current = of(&json!({"v": 1}));
        assert!(check(None, &current).is_ok());
        assert!(check(Some(""), &current).is_ok());
        assert!(check(Some(&current), &current).is_ok());
        let stale = check(Some(&of(&json!({"v": 0}))), &current).err();
        assert_eq!(stale.map(|e| e.code()), Some(crate::Code::Aborted));
    }
}
