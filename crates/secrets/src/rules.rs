//! Google's field rules: secret ids, labels and annotations, etags, and the errors Secret
//! Manager words its refusals with.

use std::collections::BTreeMap;

use gatehouse_iam::{Error, Result};
use serde_json::Value;

pub(crate) fn valid_secret_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(crate) fn new_etag() -> String {
    let mut b = [0u8; 7];
    let _ = aws_lc_rs::rand::fill(&mut b);
    format!(
        "\"{}\"",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

pub(crate) fn denied(permission: &str, name: &str) -> Error {
    Error::PermissionDenied(format!(
        "Permission '{permission}' denied for resource '{name}' (or it may not exist)."
    ))
}

pub(crate) fn stale_etag() -> Error {
    Error::FailedPrecondition(
        "The etag provided in the request does not match the current etag of the resource.".into(),
    )
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

/// Google's label rules: at most 64; keys start with a lower-case letter and have 1–63
/// lower-case letters, digits, `_` or `-`; values 0–63 of the same.
pub(crate) fn check_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    let ok_char = |c: char| c.is_lowercase() || c.is_numeric() || c == '_' || c == '-';
    if labels.len() > 64 {
        return Err(Error::InvalidArgument(
            "At most 64 labels are allowed.".into(),
        ));
    }
    for (k, v) in labels {
        let key_ok = k.chars().next().is_some_and(char::is_lowercase)
            && k.chars().count() <= 63
            && k.chars().all(ok_char);
        let value_ok = v.chars().count() <= 63 && v.chars().all(ok_char);
        if !key_ok || !value_ok {
            return Err(Error::InvalidArgument(format!(
                "Invalid label {k:?}: {v:?}. Keys must start with a lower-case letter; keys and \
                 values may contain only lower-case letters, digits, underscores and hyphens \
                 (at most 63 characters)."
            )));
        }
    }
    Ok(())
}

/// Labels and annotations: string → string maps.
pub(crate) fn string_map(v: Option<&Value>, what: &str) -> Result<BTreeMap<String, String>> {
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_owned()))
                    .ok_or_else(|| Error::InvalidArgument(format!("{what} values must be strings")))
            })
            .collect(),
        Some(_) => Err(Error::InvalidArgument(format!("{what} must be an object"))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn secret_ids() {
        assert!(valid_secret_id("db_pass-2"));
        assert!(valid_secret_id(&"a".repeat(255)));
        assert!(!valid_secret_id(&"a".repeat(256)));
        assert!(!valid_secret_id(""));
        assert!(!valid_secret_id("db.pass"));
        assert!(!valid_secret_id("db/pass"));
    }

    #[test]
    fn label_rules() {
        assert!(check_labels(&labels(&[("env", "prod-1"), ("team_a", "")])).is_ok());
        assert!(check_labels(&labels(&[("Env", "prod")])).is_err());
        assert!(check_labels(&labels(&[("1env", "prod")])).is_err());
        assert!(check_labels(&labels(&[("env", "Prod")])).is_err());
        assert!(check_labels(&labels(&[(&"k".repeat(63), &"v".repeat(63))])).is_ok());
        assert!(check_labels(&labels(&[(&"k".repeat(64), "v")])).is_err());
        assert!(check_labels(&labels(&[("k", &"v".repeat(64))])).is_err());
        let many: BTreeMap<String, String> =
            (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(matches!(
            check_labels(&many),
            Err(Error::InvalidArgument(m)) if m == "At most 64 labels are allowed."
        ));
    }

    #[test]
    fn string_maps() {
        assert_eq!(string_map(None, "labels").unwrap(), BTreeMap::new());
        assert_eq!(
            string_map(Some(&Value::Null), "labels").unwrap(),
            BTreeMap::new()
        );
        assert_eq!(
            string_map(Some(&json!({"a": "1"})), "labels").unwrap(),
            labels(&[("a", "1")])
        );
        assert!(matches!(
            string_map(Some(&json!({"a": 1})), "annotations"),
            Err(Error::InvalidArgument(m)) if m == "annotations values must be strings"
        ));
        assert!(matches!(
            string_map(Some(&json!(["a"])), "labels"),
            Err(Error::InvalidArgument(m)) if m == "labels must be an object"
        ));
    }

    #[test]
    fn etags_are_quoted_and_fresh() {
        let (a, b) = (new_etag(), new_etag());
        assert_eq!(a.len(), 16);
        assert!(a.starts_with('"') && a.ends_with('"'));
        assert!(a[1..15].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
