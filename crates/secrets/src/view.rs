//! What callers hand in and get back: resource names, the secret and version views (with their
//! proto3 JSON), an accessed payload, a new payload.

use gatehouse_iam::{Error, Result};
use gatehouse_store::{SecretRecord, SecretVersionRecord};
use serde_json::{Value, json};
use zeroize::Zeroizing;

/// A secret as the API shows it.
#[derive(Debug, Clone)]
pub struct SecretView {
    pub record: SecretRecord,
    pub project_number: String,
}

impl SecretView {
    /// `projects/{number}/secrets/{id}`, as Google names it.
    pub fn name(&self) -> String {
        format!(
            "projects/{}/secrets/{}",
            self.project_number, self.record.secret_id
        )
    }

    /// The Secret message (proto3 JSON).
    pub fn to_json(&self) -> Value {
        let r = &self.record;
        let mut v = json!({
            "name": self.name(),
            "replication": serde_json::from_str::<Value>(&r.replication).unwrap_or(json!({"automatic": {}})),
            "createTime": gatehouse_tokens::rfc3339(r.created_at, false),
            "etag": r.etag,
        });
        for (field, text) in [
            ("labels", &r.labels),
            ("annotations", &r.annotations),
            ("versionAliases", &r.version_aliases),
        ] {
            if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text)
                && !m.is_empty()
            {
                v[field] = Value::Object(m);
            }
        }
        v
    }
}

/// A secret version as the API shows it.
#[derive(Debug, Clone)]
pub struct VersionView {
    pub record: SecretVersionRecord,
    pub project_number: String,
}

impl VersionView {
    /// `projects/{number}/secrets/{id}/versions/{n}`.
    pub fn name(&self) -> String {
        format!(
            "projects/{}/secrets/{}/versions/{}",
            self.project_number, self.record.secret_id, self.record.version
        )
    }

    /// The SecretVersion message (proto3 JSON).
    pub fn to_json(&self) -> Value {
        let r = &self.record;
        let mut v = json!({
            "name": self.name(),
            "createTime": gatehouse_tokens::rfc3339(r.created_at, false),
            "state": r.state,
            "replicationStatus": {"automatic": {}},
            "etag": r.etag,
            "clientSpecifiedPayloadChecksum": r.client_checksum,
        });
        if let Some(d) = r.destroyed_at {
            v["destroyTime"] = json!(gatehouse_tokens::rfc3339(d, false));
        }
        v
    }
}

/// What an access returns.
#[derive(Debug)]
pub struct Accessed {
    /// The resolved version's name (`…/versions/3` for `latest`).
    pub name: String,
    pub data: Zeroizing<Vec<u8>>,
    pub crc32c: u32,
}

/// A parsed `projects/{p}/secrets/{s}[/versions/{v}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretName {
    pub project: String,
    pub secret: String,
    pub version: Option<String>,
}

impl SecretName {
    /// Parses a resource name.
    pub fn parse(name: &str) -> Result<Self> {
        let bad = || Error::InvalidArgument(format!("Invalid resource name: {name}"));
        let parts: Vec<&str> = name.split('/').collect();
        match parts.as_slice() {
            ["projects", p, "secrets", s] if !p.is_empty() && !s.is_empty() => Ok(Self {
                project: (*p).to_owned(),
                secret: (*s).to_owned(),
                version: None,
            }),
            ["projects", p, "secrets", s, "versions", v]
                if !p.is_empty() && !s.is_empty() && !v.is_empty() =>
            {
                Ok(Self {
                    project: (*p).to_owned(),
                    secret: (*s).to_owned(),
                    version: Some((*v).to_owned()),
                })
            }
            _ => Err(bad()),
        }
    }
}

/// What `add_version` was given.
#[derive(Debug)]
pub struct NewPayload<'a> {
    pub data: &'a [u8],
    /// The client's CRC32C of `data`, if it sent one.
    pub crc32c: Option<i64>,
}
