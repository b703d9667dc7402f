//! Secret Manager: secrets and their versions, with Google's semantics (`latest`, aliases,
//! states, CRC32C, etags, error wording), envelope encryption at rest, and IAM checks on every
//! call (every access audited, never the payload).
//!
//! Knows no HTTP. Payloads are encrypted before they reach the store: AES-256-GCM under a data
//! key per secret, data keys wrapped by the master key given at start (see [`crypto`]).

#![forbid(unsafe_code)]

pub mod crypto;

use std::collections::BTreeMap;
use std::sync::Arc;

use gatehouse_iam::{Error, Iam, Principal, Result};
use gatehouse_store::{Rewrapped, SecretRecord, SecretVersionRecord, Store};
use serde_json::{Value, json};
use zeroize::Zeroizing;

pub use crypto::{Key, crc32c};

/// Largest payload Secret Manager accepts.
pub const MAX_PAYLOAD: usize = 64 * 1024;

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

fn valid_secret_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn new_etag() -> String {
    let mut b = [0u8; 7];
    let _ = aws_lc_rs::rand::fill(&mut b);
    format!(
        "\"{}\"",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

fn denied(permission: &str, name: &str) -> Error {
    Error::PermissionDenied(format!(
        "Permission '{permission}' denied for resource '{name}' (or it may not exist)."
    ))
}

fn stale_etag() -> Error {
    Error::FailedPrecondition(
        "The etag provided in the request does not match the current etag of the resource.".into(),
    )
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

/// What `add_version` was given.
#[derive(Debug)]
pub struct NewPayload<'a> {
    pub data: &'a [u8],
    /// The client's CRC32C of `data`, if it sent one.
    pub crc32c: Option<i64>,
}

/// Google's label rules: at most 64; keys start with a lower-case letter and have 1–63
/// lower-case letters, digits, `_` or `-`; values 0–63 of the same.
fn check_labels(labels: &BTreeMap<String, String>) -> Result<()> {
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
fn string_map(v: Option<&Value>, what: &str) -> Result<BTreeMap<String, String>> {
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

/// The Secret Manager service.
#[derive(Clone)]
pub struct Secrets {
    store: Store,
    iam: Iam,
    master: Arc<Key>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("master", &self.master.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Opens Secret Manager over `store` with `master`. The first start records which master
    /// key the data is under; later starts with another key fail here, before anything is
    /// written.
    pub async fn new(store: Store, iam: Iam, master: impl Into<Arc<Key>>) -> Result<Self> {
        let master = master.into();
        match gatehouse_keyring::master::bind(&store, &master).await {
            Ok(()) => {}
            Err(gatehouse_keyring::Error::WrongMasterKey { stored, given }) => {
                return Err(Error::FailedPrecondition(format!(
                    "the secrets master key does not match the one the secrets are stored under \
                     (stored key fingerprint {stored}, given {given})"
                )));
            }
            Err(gatehouse_keyring::Error::Store(e)) => return Err(e.into()),
            Err(e) => return Err(internal(e)),
        }
        Ok(Self { store, iam, master })
    }

    /// Re-wraps every data key from `old` to `new` in one transaction: the secrets' data keys
    /// and the signing keys' (payloads and private keys are not re-encrypted; signing keys still
    /// in plaintext are sealed first). `old` must be the current master key. Returns how many
    /// secrets and signing keys there are.
    pub async fn rotate_master_key(store: &Store, old: &Key, new: &Key) -> Result<(usize, usize)> {
        let Some((key_id, check)) = store.master_key_check().await? else {
            return Err(Error::FailedPrecondition(
                "nothing has been stored under a master key yet; there is nothing to rotate".into(),
            ));
        };
        if !gatehouse_keyring::master::opens_check(old, &check) {
            return Err(Error::FailedPrecondition(format!(
                "the old master key is not the current one (stored key fingerprint {key_id})"
            )));
        }
        for _ in 0..3 {
            let all = store.all_secrets().await?;
            let mut rewrapped = Rewrapped::default();
            for s in &all {
                let aad = key_aad(&s.project_id, &s.secret_id);
                let data_key = old.unwrap_key(&s.wrapped_key, &aad).map_err(internal)?;
                rewrapped.secrets.push((
                    s.project_id.clone(),
                    s.secret_id.clone(),
                    new.wrap(&data_key, &aad).map_err(internal)?,
                ));
            }
            rewrapped.signing_keys = gatehouse_keyring::rewrap_signing_keys(store, old, new)
                .await
                .map_err(internal)?;
            let new_check = gatehouse_keyring::master::check_value(new).map_err(internal)?;
            match store
                .rewrap_master_key(&key_id, &new.fingerprint(), &new_check, &rewrapped)
                .await
            {
                Ok(()) => return Ok((all.len(), rewrapped.signing_keys.len())),
                // A secret or signing key was created meanwhile: read again.
                Err(gatehouse_store::Error::Conflict(
                    "secrets changed during rotation" | "signing keys changed during rotation",
                )) => {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Aborted(
            "secrets kept changing during the rotation; try again".into(),
        ))
    }

    /// The IAM service the checks go through.
    pub fn iam(&self) -> &Iam {
        &self.iam
    }

    /// The project (id and number) for an id or number.
    async fn project(&self, id_or_number: &str) -> Result<(String, String)> {
        let p = self.iam.project(id_or_number).await?;
        Ok((p.project_id, p.project_number))
    }

    async fn require(
        &self,
        who: &Principal,
        permission: &str,
        resource: &str,
        shown: &str,
    ) -> Result<()> {
        if self.iam.check(who, permission, resource).await? {
            Ok(())
        } else {
            Err(denied(permission, shown))
        }
    }

    /// The stored secret, or Google's NOT_FOUND (`… not found{suffix}.`).
    async fn stored(
        &self,
        project_id: &str,
        number: &str,
        secret: &str,
        suffix: &str,
    ) -> Result<SecretRecord> {
        self.store.secret(project_id, secret).await?.ok_or_else(|| {
            Error::NotFound(format!(
                "Secret [projects/{number}/secrets/{secret}] not found{suffix}."
            ))
        })
    }

    /// A secret the caller may act on with `permission`, or Google's error.
    async fn secret_for(
        &self,
        who: &Principal,
        name: &str,
        permission: &str,
    ) -> Result<(SecretView, SecretName)> {
        let n = SecretName::parse(name)?;
        let (project_id, number) = self.project(&n.project).await?;
        let resource = format!("projects/{project_id}/secrets/{}", n.secret);
        self.require(who, permission, &resource, name).await?;
        let record = self.stored(&project_id, &number, &n.secret, "").await?;
        Ok((
            SecretView {
                record,
                project_number: number,
            },
            n,
        ))
    }

    // ------------------------------------------------------------------ secrets

    /// `CreateSecret`.
    pub async fn create_secret(
        &self,
        who: &Principal,
        project: &str,
        secret_id: &str,
        body: &Value,
    ) -> Result<SecretView> {
        let (project_id, number) = self.project(project).await?;
        self.require(
            who,
            "secretmanager.secrets.create",
            &format!("projects/{project_id}"),
            &format!("projects/{project}"),
        )
        .await?;
        if !valid_secret_id(secret_id) {
            return Err(Error::InvalidArgument(format!(
                "Secret id [{secret_id}] must be 1 to 255 letters, digits, underscores or hyphens."
            )));
        }
        let replication = match body.get("replication") {
            Some(r @ Value::Object(m))
                if m.contains_key("automatic") || m.contains_key("userManaged") =>
            {
                r.clone()
            }
            None | Some(Value::Null) => {
                return Err(Error::InvalidArgument(
                    "Secret.replication is required.".into(),
                ));
            }
            Some(_) => {
                return Err(Error::InvalidArgument(
                    "Secret.replication must be automatic or userManaged.".into(),
                ));
            }
        };
        let labels = string_map(body.get("labels"), "labels")?;
        check_labels(&labels)?;
        let annotations = string_map(body.get("annotations"), "annotations")?;
        let data_key = Key::generate().map_err(internal)?;
        let record = SecretRecord {
            project_id: project_id.clone(),
            secret_id: secret_id.to_owned(),
            created_at: now_ms(),
            labels: json!(labels).to_string(),
            annotations: json!(annotations).to_string(),
            replication: replication.to_string(),
            version_aliases: "{}".into(),
            etag: new_etag(),
            wrapped_key: self
                .master
                .wrap(&data_key, &key_aad(&project_id, secret_id))
                .map_err(internal)?,
            last_version: 0,
        };
        match self.store.insert_secret(&record).await {
            Ok(()) => {}
            Err(gatehouse_store::Error::Conflict(_)) => {
                return Err(Error::AlreadyExists(format!(
                    "Secret [projects/{number}/secrets/{secret_id}] already exists."
                )));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(SecretView {
            record,
            project_number: number,
        })
    }

    /// `GetSecret`.
    pub async fn get_secret(&self, who: &Principal, name: &str) -> Result<SecretView> {
        Ok(self
            .secret_for(who, name, "secretmanager.secrets.get")
            .await?
            .0)
    }

    /// `ListSecrets`: newest first; a page and the next page token.
    pub async fn list_secrets(
        &self,
        who: &Principal,
        project: &str,
        filter: Option<&str>,
    ) -> Result<Vec<SecretView>> {
        let (project_id, number) = self.project(project).await?;
        self.require(
            who,
            "secretmanager.secrets.list",
            &format!("projects/{project_id}"),
            &format!("projects/{project}"),
        )
        .await?;
        let filter = Filter::parse(filter.unwrap_or_default())?;
        Ok(self
            .store
            .secrets(&project_id)
            .await?
            .into_iter()
            .filter(|s| filter.matches_secret(s))
            .map(|record| SecretView {
                record,
                project_number: number.clone(),
            })
            .collect())
    }

    /// `UpdateSecret`: the fields in `mask` (labels, annotations, versionAliases) from `body`.
    pub async fn update_secret(
        &self,
        who: &Principal,
        name: &str,
        body: &Value,
        mask: &[String],
    ) -> Result<SecretView> {
        let (mut view, _) = self
            .secret_for(who, name, "secretmanager.secrets.update")
            .await?;
        if mask.is_empty() {
            return Err(Error::InvalidArgument("update_mask is required.".into()));
        }
        let expected = view.record.etag.clone();
        if let Some(e) = body.get("etag").and_then(Value::as_str)
            && e != expected
        {
            return Err(stale_etag());
        }
        for field in mask {
            match field.as_str() {
                "labels" => {
                    let labels = string_map(body.get("labels"), "labels")?;
                    check_labels(&labels)?;
                    view.record.labels = json!(labels).to_string();
                }
                "annotations" => {
                    view.record.annotations =
                        json!(string_map(body.get("annotations"), "annotations")?).to_string();
                }
                "version_aliases" | "versionAliases" => {
                    let mut aliases = BTreeMap::new();
                    if let Some(Value::Object(m)) = body.get("versionAliases") {
                        for (alias, v) in m {
                            let number = v
                                .as_i64()
                                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                                .filter(|n| *n >= 1 && *n <= view.record.last_version)
                                .ok_or_else(|| {
                                    Error::InvalidArgument(format!(
                                        "Version alias {alias} must name an existing version."
                                    ))
                                })?;
                            if alias == "latest" || alias.parse::<i64>().is_ok() {
                                return Err(Error::InvalidArgument(format!(
                                    "{alias} cannot be used as a version alias."
                                )));
                            }
                            aliases.insert(alias.clone(), number);
                        }
                    }
                    view.record.version_aliases = json!(aliases).to_string();
                }
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "The update mask field {other} cannot be updated."
                    )));
                }
            }
        }
        view.record.etag = new_etag();
        match self.store.update_secret(&view.record, &expected).await {
            Err(gatehouse_store::Error::Conflict(_)) => return Err(stale_etag()),
            other => other?,
        }
        Ok(view)
    }

    /// `DeleteSecret` (with its versions and policy).
    pub async fn delete_secret(
        &self,
        who: &Principal,
        name: &str,
        etag: Option<&str>,
    ) -> Result<()> {
        let (view, n) = self
            .secret_for(who, name, "secretmanager.secrets.delete")
            .await?;
        let resource = format!("projects/{}/secrets/{}", view.record.project_id, n.secret);
        match self
            .store
            .delete_secret(&view.record.project_id, &n.secret, etag, &resource)
            .await
        {
            Err(gatehouse_store::Error::Conflict(_)) => Err(stale_etag()),
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::NotFound(format!(
                "Secret [{}] not found.",
                view.name()
            ))),
            Err(e) => Err(e.into()),
        }
    }

    // ------------------------------------------------------------------ versions

    /// `AddSecretVersion`.
    pub async fn add_version(
        &self,
        who: &Principal,
        name: &str,
        payload: NewPayload<'_>,
    ) -> Result<VersionView> {
        let (view, n) = self
            .secret_for(who, name, "secretmanager.versions.add")
            .await?;
        if payload.data.len() > MAX_PAYLOAD {
            return Err(Error::InvalidArgument(format!(
                "Secret Payload cannot be larger than {MAX_PAYLOAD} bytes."
            )));
        }
        let crc = i64::from(crc32c(payload.data));
        if let Some(given) = payload.crc32c
            && given != crc
        {
            return Err(Error::InvalidArgument(
                "Checksum mismatch: the dataCrc32c does not match the payload's CRC32C.".into(),
            ));
        }
        let project_id = view.record.project_id.clone();
        let data_key = self
            .master
            .unwrap_key(&view.record.wrapped_key, &key_aad(&project_id, &n.secret))
            .map_err(internal)?;
        let mut sealed = None;
        let now = now_ms();
        let stored = self
            .store
            .add_secret_version(&project_id, &n.secret, |number| {
                sealed =
                    Some(data_key.seal(payload.data, &payload_aad(&project_id, &n.secret, number)));
                SecretVersionRecord {
                    project_id: project_id.clone(),
                    secret_id: n.secret.clone(),
                    version: number,
                    state: "ENABLED".into(),
                    created_at: now,
                    destroyed_at: None,
                    payload: sealed.as_ref().and_then(|s| s.as_ref().ok()).cloned(),
                    crc32c: crc,
                    client_checksum: payload.crc32c.is_some(),
                    etag: new_etag(),
                }
            })
            .await?;
        if let Some(Err(e)) = sealed {
            return Err(internal(e));
        }
        let record = stored
            .ok_or_else(|| Error::NotFound(format!("Secret [{}] not found.", view.name())))?;
        Ok(VersionView {
            record,
            project_number: view.project_number,
        })
    }

    /// Resolves `latest`, a number or an alias to a stored version.
    async fn resolve(&self, view: &SecretView, version: &str) -> Result<SecretVersionRecord> {
        let secret_name = view.name();
        let number = if version == "latest" {
            if view.record.last_version == 0 {
                return Err(Error::NotFound(format!(
                    "Secret [{secret_name}] not found or has no versions."
                )));
            }
            // The newest version is the newest one still stored (a deleted number never
            // comes back, so this is the highest number).
            self.store
                .secret_versions(&view.record.project_id, &view.record.secret_id)
                .await?
                .first()
                .map(|v| v.version)
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "Secret [{secret_name}] not found or has no versions."
                    ))
                })?
        } else if let Ok(n) = version.parse::<i64>() {
            n
        } else {
            let aliases: BTreeMap<String, i64> =
                serde_json::from_str(&view.record.version_aliases).unwrap_or_default();
            *aliases.get(version).ok_or_else(|| {
                Error::NotFound(format!(
                    "Secret Version [{secret_name}/versions/{version}] not found."
                ))
            })?
        };
        self.store
            .secret_version(&view.record.project_id, &view.record.secret_id, number)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "Secret Version [{secret_name}/versions/{number}] not found."
                ))
            })
    }

    async fn version_for(
        &self,
        who: &Principal,
        name: &str,
        permission: &str,
    ) -> Result<(SecretView, SecretVersionRecord)> {
        let n = SecretName::parse(name)?;
        let version = n
            .version
            .clone()
            .ok_or_else(|| Error::InvalidArgument(format!("Invalid resource name: {name}")))?;
        let (project_id, number) = self.project(&n.project).await?;
        let resource = format!(
            "projects/{project_id}/secrets/{}/versions/{version}",
            n.secret
        );
        self.require(who, permission, &resource, name).await?;
        let record = self
            .stored(&project_id, &number, &n.secret, " or has no versions")
            .await?;
        let view = SecretView {
            record,
            project_number: number,
        };
        let v = self.resolve(&view, &version).await?;
        Ok((view, v))
    }

    /// `AccessSecretVersion`: the payload of an enabled version. The decision on the resolved
    /// version is audited too, so the log says which version was read.
    pub async fn access(&self, who: &Principal, name: &str) -> Result<Accessed> {
        let (view, v) = self
            .version_for(who, name, "secretmanager.versions.access")
            .await?;
        let resolved = format!(
            "projects/{}/secrets/{}/versions/{}",
            v.project_id, v.secret_id, v.version
        );
        // `latest` or an alias: decide (and audit) once more on the version actually read.
        let asked = name.rsplit('/').next().unwrap_or_default();
        if asked != v.version.to_string() {
            self.require(who, "secretmanager.versions.access", &resolved, name)
                .await?;
        }
        let shown = VersionView {
            record: v.clone(),
            project_number: view.project_number.clone(),
        }
        .name();
        if v.state != "ENABLED" {
            return Err(Error::FailedPrecondition(format!(
                "Secret Version [{shown}] is in {} state.",
                v.state
            )));
        }
        let sealed = v
            .payload
            .as_ref()
            .ok_or_else(|| Error::Internal(format!("{shown} has no payload")))?;
        let data_key = self
            .master
            .unwrap_key(
                &view.record.wrapped_key,
                &key_aad(&v.project_id, &v.secret_id),
            )
            .map_err(internal)?;
        let data = data_key
            .open(sealed, &payload_aad(&v.project_id, &v.secret_id, v.version))
            .map_err(internal)?;
        tracing::info!(target: "gatehouse::audit", principal = %who.member(), version = %resolved, "secret version accessed");
        Ok(Accessed {
            name: shown,
            crc32c: crc32c(&data),
            data,
        })
    }

    /// `GetSecretVersion`.
    pub async fn get_version(&self, who: &Principal, name: &str) -> Result<VersionView> {
        let (view, record) = self
            .version_for(who, name, "secretmanager.versions.get")
            .await?;
        Ok(VersionView {
            record,
            project_number: view.project_number,
        })
    }

    /// `ListSecretVersions`: newest first.
    pub async fn list_versions(
        &self,
        who: &Principal,
        name: &str,
        filter: Option<&str>,
    ) -> Result<Vec<VersionView>> {
        let (view, n) = self
            .secret_for(who, name, "secretmanager.versions.list")
            .await?;
        let filter = Filter::parse(filter.unwrap_or_default())?;
        Ok(self
            .store
            .secret_versions(&view.record.project_id, &n.secret)
            .await?
            .into_iter()
            .filter(|v| filter.matches_version(v))
            .map(|record| VersionView {
                record,
                project_number: view.project_number.clone(),
            })
            .collect())
    }

    /// `EnableSecretVersion` / `DisableSecretVersion` / `DestroySecretVersion` (`state` is
    /// the target: `ENABLED`, `DISABLED`, `DESTROYED`). Destroying erases the ciphertext.
    pub async fn set_state(
        &self,
        who: &Principal,
        name: &str,
        state: &str,
        etag: Option<&str>,
    ) -> Result<VersionView> {
        let permission = match state {
            "ENABLED" => "secretmanager.versions.enable",
            "DISABLED" => "secretmanager.versions.disable",
            _ => "secretmanager.versions.destroy",
        };
        let (view, mut v) = self.version_for(who, name, permission).await?;
        let shown = VersionView {
            record: v.clone(),
            project_number: view.project_number.clone(),
        }
        .name();
        if etag.is_some_and(|e| e != v.etag) {
            return Err(stale_etag());
        }
        if v.state == "DESTROYED" {
            return Err(Error::FailedPrecondition(format!(
                "Secret Version [{shown}] is in DESTROYED state."
            )));
        }
        let new_etag = new_etag();
        let now = now_ms();
        match self
            .store
            .set_secret_version_state(&v, state, &new_etag, now)
            .await
        {
            Err(gatehouse_store::Error::Conflict(_)) => return Err(stale_etag()),
            other => other?,
        }
        v.state = state.to_owned();
        v.etag = new_etag;
        if state == "DESTROYED" {
            v.payload = None;
            v.destroyed_at = Some(now);
        }
        Ok(VersionView {
            record: v,
            project_number: view.project_number,
        })
    }

    /// For the runner: the payload `reference` names, read as `principal` (the service's
    /// account), with the same permission check and audit as an API access. `reference` is
    /// `SECRET:VERSION` (or `SECRET`, meaning latest) in `project`, or a full
    /// `projects/P/secrets/S/versions/V` name.
    pub async fn resolve_for(
        &self,
        principal: &Principal,
        project: &str,
        reference: &str,
    ) -> Result<Accessed> {
        let name = if reference.starts_with("projects/") {
            reference.to_owned()
        } else {
            let (secret, version) = reference.split_once(':').unwrap_or((reference, "latest"));
            format!("projects/{project}/secrets/{secret}/versions/{version}")
        };
        self.access(principal, &name).await
    }

    /// A secret's IAM resource name (by project id), for policy calls.
    pub async fn policy_resource(
        &self,
        who: &Principal,
        name: &str,
        permission: &str,
    ) -> Result<String> {
        let (view, n) = self.secret_for(who, name, permission).await?;
        Ok(format!(
            "projects/{}/secrets/{}",
            view.record.project_id, n.secret
        ))
    }
}

fn key_aad(project_id: &str, secret_id: &str) -> String {
    format!("projects/{project_id}/secrets/{secret_id}")
}

fn payload_aad(project_id: &str, secret_id: &str, version: i64) -> String {
    format!("projects/{project_id}/secrets/{secret_id}/versions/{version}")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The list filters Gatehouse understands: space-separated terms (AND) of `name:TEXT`,
/// `labels.KEY=VALUE`, `labels.KEY:*` / `labels.KEY:VALUE`, `state:STATE` / `state=STATE`.
#[derive(Debug, Default)]
struct Filter {
    terms: Vec<(String, char, String)>,
}

impl Filter {
    fn parse(text: &str) -> Result<Self> {
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

    fn matches_secret(&self, s: &SecretRecord) -> bool {
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

    fn matches_version(&self, v: &SecretVersionRecord) -> bool {
        self.terms.iter().all(|(field, _, value)| {
            field == "state" && v.state.eq_ignore_ascii_case(value)
                || field == "name" && v.version.to_string().contains(value.as_str())
        })
    }
}
