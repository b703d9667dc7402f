//! `filter=` of the list calls.

use std::collections::BTreeMap;

use gatehouse_iam::{Error, Result};
use gatehouse_store::{SecretRecord, SecretVersionRecord};

/// The list filters Gatehouse understands: space-separated terms (AND) of `name:TEXT`,
/// `labels.KEY=VALUE`, `labels.KEY:*` / `labels.KEY:VALUE`, `state:STATE` / `state=STATE`.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    terms: Vec<(String, char, String)>,
}

impl Filter {
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let mut terms = Vec::new();
        for t in text.split_whitespace() {
            if t.eq_ignore_ascii_case("AND") {
                continue;
            }
            let Some(i) = t.find([':', '=']) else {
                return Err(Error::InvalidArgument(format!("Invalid filter term: {t}")));
            };
            let (field, rest) = t.split_at(i);
            let op = rest.chars().next().unwrap_or(':');
            let value = rest[1..].trim_matches('"').to_owned();
            if !(field == "name" || field == "state" || field.starts_with("labels.")) {
                return Err(Error::InvalidArgument(format!(
                    "Unsupported filter field: {field}"
                )));
            }
            terms.push((field.to_owned(), op, value));
        }
        Ok(Self { terms })
    }

    pub(crate) fn matches_secret(&self, s: &SecretRecord) -> bool {
        let labels: BTreeMap<String, String> = serde_json::from_str(&s.labels).unwrap_or_default();
        self.terms.iter().all(|(field, op, value)| {
            if field == "name" {
                return s.secret_id.contains(value.as_str());
            }
            if let Some(key) = field.strip_prefix("labels.") {
                return match (labels.get(key), op) {
                    (Some(_), ':') if value == "*" => true,
                    (Some(v), ':') => v.contains(value.as_str()),
                    (Some(v), _) => v == value,
                    (None, _) => false,
                };
            }
            false
        })
    }

    pub(crate) fn matches_version(&self, v: &SecretVersionRecord) -> bool {
        self.terms.iter().all(|(field, _, value)| {
            field == "state" && v.state.eq_ignore_ascii_case(value)
                || field == "name" && v.version.to_string().contains(value.as_str())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(id: &str, labels: &str) -> SecretRecord {
        SecretRecord {
            project_id: "p".into(),
            secret_id: id.into(),
            created_at: 0,
            labels: labels.into(),
            annotations: "{}".into(),
            replication: r#"{"automatic":{}}"#.into(),
            version_aliases: "{}".into(),
            etag: "\"e\"".into(),
            wrapped_key: Vec::new(),
            last_version: 0,
        }
    }

    fn version(n: i64, state: &str) -> SecretVersionRecord {
        SecretVersionRecord {
            project_id: "p".into(),
            secret_id: "s".into(),
            version: n,
            state: state.into(),
            created_at: 0,
            destroyed_at: None,
            payload: None,
            crc32c: 0,
            client_checksum: false,
            etag: "\"e\"".into(),
        }
    }

    #[test]
    fn terms_are_checked() {
        assert!(matches!(
            Filter::parse("owner:me"),
            Err(Error::InvalidArgument(m)) if m == "Unsupported filter field: owner"
        ));
        assert!(matches!(
            Filter::parse("name"),
            Err(Error::InvalidArgument(m)) if m == "Invalid filter term: name"
        ));
        assert_eq!(Filter::parse("").unwrap().terms, []);
        assert_eq!(
            Filter::parse(r#"name:db AND labels.env="prod""#)
                .unwrap()
                .terms,
            [
                ("name".to_owned(), ':', "db".to_owned()),
                ("labels.env".to_owned(), '=', "prod".to_owned()),
            ]
        );
    }

    #[test]
    fn secrets_match_by_name_and_labels() {
        let db = secret("db-pass", r#"{"env":"prod-eu","team":"core"}"#);
        let api = secret("api-key", "{}");
        let matches = |f: &str, s: &SecretRecord| Filter::parse(f).unwrap().matches_secret(s);
        assert!(matches("", &api));
        assert!(matches("name:pass", &db) && !matches("name:pass", &api));
        assert!(matches("labels.env:*", &db) && !matches("labels.env:*", &api));
        assert!(matches("labels.env:prod", &db));
        assert!(matches("labels.env=prod-eu", &db) && !matches("labels.env=prod", &db));
        assert!(matches("name:db labels.team=core", &db));
        assert!(!matches("name:db labels.team=edge", &db));
        // A version's field says nothing about a secret.
        assert!(!matches("state:ENABLED", &db));
    }

    #[test]
    fn versions_match_by_state_and_number() {
        let matches =
            |f: &str, v: &SecretVersionRecord| Filter::parse(f).unwrap().matches_version(v);
        assert!(matches("state:enabled", &version(3, "ENABLED")));
        assert!(matches("state=DISABLED", &version(3, "DISABLED")));
        assert!(!matches("state:ENABLED", &version(3, "DESTROYED")));
        assert!(matches("name:12", &version(12, "ENABLED")));
        assert!(!matches("name:7", &version(12, "ENABLED")));
        assert!(!matches("labels.env:*", &version(1, "ENABLED")));
    }
}
