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
