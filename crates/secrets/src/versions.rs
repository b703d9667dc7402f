//! Secret versions: add, resolve (`latest`, numbers, aliases), access (decrypt), get, list,
//! change state; and the runner's `resolve_for`.

use std::collections::BTreeMap;

use gatehouse_iam::{Error, Principal, Result};
use gatehouse_store::SecretVersionRecord;

use crate::crypto::{key_aad, payload_aad};
use crate::filter::Filter;
use crate::rules::{internal, new_etag, stale_etag};
use crate::{
    Accessed, MAX_PAYLOAD, NewPayload, SecretName, SecretView, Secrets, VersionView, crc32c,
};

impl Secrets {
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
        let now = self.now_ms();
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
        let now = self.now_ms();
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
