//! `updateMask` field masks (google.protobuf.FieldMask in JSON: comma-separated paths such as
//! `labels,expireTime` or `config.timeout`): parsing, checking against the fields a resource
//! lets clients update, and applying a patch to a JSON resource.

use serde_json::{Map, Value};

use crate::ApiError;

/// A parsed field mask.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldMask {
    paths: Vec<String>,
}

fn is_field(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl FieldMask {
    /// Parses `text`: comma-separated paths of dot-separated field names; blanks between
    /// commas are ignored, `*` alone means every field.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut paths = Vec::new();
        for path in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let valid = path == "*" || path.split('.').all(is_field);
            if !valid {
                return Err(ApiError::invalid_argument(format!(
                    "Invalid field mask path: {path:?}"
                )));
            }
            if !paths.iter().any(|p| p == path) {
                paths.push(path.to_owned());
            }
        }
        Ok(Self { paths })
    }

    /// The mask's paths, in the order given, without duplicates.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// Whether the mask names no field.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Fails with `INVALID_ARGUMENT` for a path that is not (inside) one of `updatable`.
    /// Paths compare in camelCase or snake_case alike.
    pub fn check(&self, updatable: &[&str]) -> Result<(), ApiError> {
        for path in &self.paths {
            let want = camel_case(path);
            let ok = path == "*"
                || updatable.iter().any(|u| {
                    let u = camel_case(u);
                    want == u || want.strip_prefix(&u).is_some_and(|r| r.starts_with('.'))
                });
            if !ok {
                return Err(ApiError::invalid_argument(format!(
                    "Unknown field in update mask: {path}"
                )));
            }
        }
        Ok(())
    }

    /// Copies each masked field from `patch` into `target` (removing it where `patch` has
    /// none); `*` replaces every field. Paths are applied in camelCase.
    pub fn apply(&self, target: &mut Value, patch: &Value) {
        for path in &self.paths {
            if path == "*" {
                *target = patch.clone();
                return;
            }
            let parts: Vec<String> = camel_case(path).split('.').map(str::to_owned).collect();
            let value = parts
                .iter()
                .try_fold(patch, |v, k| v.get(k.as_str()))
                .cloned();
            set(target, &parts, value);
        }
    }
}

fn set(target: &mut Value, parts: &[String], value: Option<Value>) {
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut here = target;
    for p in parents {
        if !here.is_object() {
            *here = Value::Object(Map::new());
        }
        let Some(map) = here.as_object_mut() else {
            return;
        };
        here = map
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !here.is_object() {
        *here = Value::Object(Map::new());
    }
    if let Some(map) = here.as_object_mut() {
        match value {
            Some(v) => {
                map.insert(last.clone(), v);
            }
            None => {
                map.remove(last);
            }
        }
    }
}

/// snake_case → camelCase as protobuf's JSON names are made: every `_` is dropped and the
/// character after it upper-cased (`expire_time` → `expireTime`, `_x` → `X`); other
/// characters, dots included, are kept (`a.b_c` → `a.bC`).
pub fn camel_case(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut upper = false;
    for c in path.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn camel_case_as_protobuf_json_names() {
        assert_eq!(camel_case("expire_time"), "expireTime");
        assert_eq!(camel_case("expireTime"), "expireTime");
        assert_eq!(camel_case("_x"), "X");
        assert_eq!(camel_case("a.b_c"), "a.bC");
    }

    #[test]
    fn parse_and_check() {
        let m = FieldMask::parse(" labels, expire_time ,,labels").unwrap();
        assert_eq!(m.paths(), ["labels", "expire_time"]);
        assert!(m.check(&["labels", "expireTime"]).is_ok());
        assert!(m.check(&["labels"]).is_err());
        assert!(
            FieldMask::parse("labels.env")
                .unwrap()
                .check(&["labels"])
                .is_ok()
        );
        assert!(
            FieldMask::parse("labelsx")
                .unwrap()
                .check(&["labels"])
                .is_err()
        );
        assert!(FieldMask::parse("").unwrap().is_empty());
    }

    #[test]
    fn malformed_masks_are_invalid_argument() {
        for bad in [
            "a..b",
            ".a",
            "a.",
            "a b",
            "1a",
            "a/b",
            "a,b c",
            "`x`",
            "a*",
            "labels[0]",
        ] {
            let e = FieldMask::parse(bad).err().map(|e| e.code());
            assert_eq!(e, Some(crate::Code::InvalidArgument), "{bad}");
        }
    }

    #[test]
    fn apply_copies_and_clears_masked_fields_only() {
        let mut target =
            json!({"name": "n", "labels": {"a": "1"}, "ttl": "5s", "conf": {"x": 1, "y": 2}});
        let patch = json!({"name": "evil", "labels": {"b": "2"}, "conf": {"x": 9}});
        FieldMask::parse("labels,ttl,conf.x")
            .unwrap()
            .apply(&mut target, &patch);
        assert_eq!(
            target,
            json!({"name": "n", "labels": {"b": "2"}, "conf": {"x": 9, "y": 2}})
        );
        let mut t = json!({"a": 1});
        FieldMask::parse("*")
            .unwrap()
            .apply(&mut t, &json!({"b": 2}));
        assert_eq!(t, json!({"b": 2}));
        let mut deep = json!({});
        FieldMask::parse("a.b_c")
            .unwrap()
            .apply(&mut deep, &json!({"a": {"bC": 3}}));
        assert_eq!(deep, json!({"a": {"bC": 3}}));
    }
}
