//! Request bodies: the 1 MiB limit and JSON decoding with Google's `INVALID_ARGUMENT` wording.
//!
//! Decoding is strict where leniency would be ambiguous: an object with the same key twice
//! is refused rather than silently keeping one of the values.

use std::fmt;

use axum::body::{Body, Bytes};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::ApiError;

/// Largest body a Google-shaped API reads.
pub const MAX_BODY: usize = 1024 * 1024;

/// The prefix of every body-decoding error, as Google words it.
pub const INVALID_JSON: &str = "Invalid JSON payload received.";

/// The request body, at most [`MAX_BODY`] bytes.
pub async fn read(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::invalid_argument("Request body too large or unreadable."))
}

/// The body as JSON; an empty (or all-blank) body is `{}`.
pub fn json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice::<Strict>(body)
        .map(|s| s.0)
        .map_err(|e| ApiError::invalid_argument(format!("{INVALID_JSON} {e}")))
}

/// The body decoded into a wire type. A field the type does not know (with
/// `#[serde(deny_unknown_fields)]`) is Google's `Unknown name "foo": Cannot find field.`.
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value = json(body)?;
    serde_json::from_value(value).map_err(|e| {
        let text = e.to_string();
        let unknown = text
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name.to_owned());
        ApiError::invalid_argument(match unknown {
            Some(name) => format!("{INVALID_JSON} Unknown name \"{name}\": Cannot find field."),
            None => format!("{INVALID_JSON} {text}"),
        })
    })
}

/// A JSON value that refuses duplicate object keys.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "Duplicate value for field \"{key}\""
                )));
            }
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(r: Result<Value, ApiError>) -> String {
        r.err().map(|e| e.message().to_owned()).unwrap_or_default()
    }

    #[test]
    fn blank_is_empty_object_and_values_round_trip() {
        assert_eq!(json(b"").ok(), Some(json!({})));
        assert_eq!(json(b" \n").ok(), Some(json!({})));
        let v =
            json!({"a": [1, -2, 3.5, "x", null, true, {"b": {}}], "u": 18446744073709551615u64});
        assert_eq!(json(v.to_string().as_bytes()).ok(), Some(v));
    }

    #[test]
    fn syntax_errors_keep_googles_prefix() {
        let m = message(json(b"{"));
        assert!(m.starts_with("Invalid JSON payload received. "), "{m}");
        assert_eq!(
            message(json(b"{\"a\":1}x")),
            "Invalid JSON payload received. trailing characters at line 1 column 8"
        );
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let m = message(json(br#"{"policy":{"bindings":[]},"policy":{}}"#));
        assert!(
            m.starts_with("Invalid JSON payload received. Duplicate value for field \"policy\""),
            "{m}"
        );
        assert!(json(br#"{"a":[{"k":1,"k":2}]}"#).is_err());
        assert!(json(br#"{"a":{"k":1},"b":{"k":2}}"#).is_ok());
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Wire {
        #[allow(dead_code)]
        display_name: Option<String>,
    }

    #[test]
    fn typed_bodies_name_unknown_fields_as_google_does() {
        assert!(decode::<Wire>(br#"{"displayName":"x"}"#).is_ok());
        assert!(decode::<Wire>(b"").is_ok());
        let e = decode::<Wire>(br#"{"foo":1}"#)
            .err()
            .map(|e| e.message().to_owned());
        assert_eq!(
            e.as_deref(),
            Some("Invalid JSON payload received. Unknown name \"foo\": Cannot find field.")
        );
        let e = decode::<Wire>(br#"{"displayName":1}"#)
            .err()
            .map(|e| e.message().to_owned());
        assert!(
            e.unwrap_or_default()
                .starts_with("Invalid JSON payload received. invalid type")
        );
    }

    #[tokio::test]
    async fn huge_bodies_are_refused() {
        let big = vec![b' '; MAX_BODY + 1];
        let e = read(Body::from(big)).await.err().map(|e| e.code());
        assert_eq!(e, Some(crate::Code::InvalidArgument));
        let ok = read(Body::from(vec![b' '; MAX_BODY]))
            .await
            .map(|b| b.len());
        assert_eq!(ok.ok(), Some(MAX_BODY));
    }
}
