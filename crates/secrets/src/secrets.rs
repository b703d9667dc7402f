//! Secrets: `CreateSecret`, `GetSecret`, `ListSecrets`, `UpdateSecret`, `DeleteSecret`.

use std::collections::BTreeMap;

use gatehouse_iam::{Error, Principal, Result};
use gatehouse_store::SecretRecord;
use serde_json::{Value, json};

use crate::crypto::key_aad;
use crate::filter::Filter;
use crate::rules::{check_labels, internal, new_etag, stale_etag, string_map, valid_secret_id};
use crate::{Key, SecretView, Secrets};

impl Secrets {
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
            created_at: self.now_ms(),
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
}
