//! `--idp-config FILE`: federated identity providers, a YAML list.
//!
//! ```yaml
//! - provider_id: google.com              # issuer preconfigured
//!   client_id: 1234.apps.googleusercontent.com
//!   client_secret_file: ./google-secret.txt
//! - provider_id: oidc.corp
//!   display_name: Corp SSO
//!   issuer: https://sso.corp.example
//!   client_id: gatehouse
//!   client_secret_secret: corp-oidc-secret:latest   # from Secret Manager (needs the master key)
//!   scopes: [openid, email, profile]
//!   trusted_email: false
//!   enabled: true
//!   project: demo-project                 # default: the first --project
//! ```
//!
//! The client secret comes from exactly one of `client_secret_file`, `client_secret_env` or
//! `client_secret_secret`; it is never logged.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use gatehouse_iam::Principal;
use gatehouse_identity::{GOOGLE_ISSUER, IdpConfig, ProjectConfig};
use gatehouse_secrets::Secrets;
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    provider_id: String,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    client_id: String,
    #[serde(default)]
    client_secret_file: Option<PathBuf>,
    #[serde(default)]
    client_secret_env: Option<String>,
    #[serde(default)]
    client_secret_secret: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    trusted_email: Option<bool>,
}

/// Reads the providers of `path` into `projects`.
pub async fn load(
    path: &Path,
    projects: &mut [ProjectConfig],
    secrets: Option<&Secrets>,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let entries: Vec<Entry> =
        serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    apply(entries, &path.display().to_string(), projects, secrets).await
}

/// The manifest's `identity.providers` (entries in the same format).
pub async fn load_values(
    values: &[serde_json::Value],
    origin: &str,
    projects: &mut [ProjectConfig],
    secrets: Option<&Secrets>,
) -> anyhow::Result<()> {
    let mut entries = Vec::new();
    for (i, v) in values.iter().enumerate() {
        entries.push(
            serde_json::from_value::<Entry>(v.clone()).with_context(|| format!("{origin}[{i}]"))?,
        );
    }
    apply(entries, origin, projects, secrets).await
}

async fn apply(
    entries: Vec<Entry>,
    origin: &str,
    projects: &mut [ProjectConfig],
    secrets: Option<&Secrets>,
) -> anyhow::Result<()> {
    for (i, e) in entries.into_iter().enumerate() {
        let at = || format!("{origin} entry {}", i + 1);
        let sources = [
            e.client_secret_file.is_some(),
            e.client_secret_env.is_some(),
            e.client_secret_secret.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            bail!(
                "{}: give exactly one of client_secret_file, client_secret_env, client_secret_secret",
                at()
            );
        }
        let project_index = match &e.project {
            Some(p) => projects
                .iter()
                .position(|x| &x.project_id == p)
                .with_context(|| format!("{}: unknown project {p}", at()))?,
            None => 0,
        };
        let project_id = projects
            .get(project_index)
            .map(|p| p.project_id.clone())
            .context("no project")?;
        let secret = if let Some(f) = &e.client_secret_file {
            std::fs::read_to_string(f)
                .with_context(|| format!("{}: reading {}", at(), f.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_owned()
        } else if let Some(var) = &e.client_secret_env {
            std::env::var(var).with_context(|| format!("{}: ${var} is not set", at()))?
        } else {
            let reference = e.client_secret_secret.as_deref().unwrap_or_default();
            let secrets = secrets.with_context(|| {
                format!(
                    "{}: client_secret_secret needs --secrets-master-key-file",
                    at()
                )
            })?;
            let access = secrets
                .resolve_for(&Principal::Local, &project_id, reference)
                .await
                .with_context(|| format!("{}: secret {reference}", at()))?;
            String::from_utf8(access.data.to_vec())
                .with_context(|| format!("{}: secret {reference} is not text", at()))?
                .trim_end_matches(['\n', '\r'])
                .to_owned()
        };
        let secret = SecretString::from(secret);
        let mut idp = if e.provider_id == "google.com" {
            let mut g = IdpConfig::google(&e.client_id, secret);
            if let Some(issuer) = &e.issuer
                && issuer != GOOGLE_ISSUER
            {
                bail!("{}: google.com's issuer is {GOOGLE_ISSUER}", at());
            }
            g.issuer = GOOGLE_ISSUER.into();
            g
        } else {
            let name = e.provider_id.strip_prefix("oidc.").with_context(|| {
                format!("{}: provider_id must be google.com or oidc.<name>", at())
            })?;
            let issuer = e
                .issuer
                .as_deref()
                .with_context(|| format!("{}: issuer is required for {}", at(), e.provider_id))?;
            IdpConfig::oidc(name, issuer, &e.client_id, secret)
        };
        if let Some(d) = e.display_name {
            idp.display_name = d;
        }
        if let Some(s) = e.scopes {
            idp.scopes = s;
        }
        if let Some(en) = e.enabled {
            idp.enabled = en;
        }
        if let Some(t) = e.trusted_email {
            idp.trusted_email = t;
        }
        let project = &mut projects[project_index];
        if project
            .providers
            .iter()
            .any(|p| p.provider_id == idp.provider_id)
        {
            bail!(
                "{}: {} is configured twice for {project_id}",
                at(),
                idp.provider_id
            );
        }
        project.providers.push(idp);
    }
    Ok(())
}
