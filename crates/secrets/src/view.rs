//! What callers hand in and get back: resource names, the secret and version views, an accessed
//! payload, a new payload. Their JSON is `gatehouse-secrets-http`'s.

use gatehouse_iam::{Error, Result};
use gatehouse_store::{SecretRecord, SecretVersionRecord};
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
