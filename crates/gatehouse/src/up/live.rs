//! Changes to a running `up`: `POST /v1/apply` on the control socket (what a second
//! `gatehouse up -f` on the same data directory sends) re-reads the manifest and applies it
//! without a restart where that is possible, and refuses, saying so, where it is not.
//!
//! Owns the control socket's `apply` route; it must not start the stack (see `stack`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use axum::response::IntoResponse as _;
use gatehouse_iam::Iam;
use gatehouse_run::Runner;
use gatehouse_secrets::Secrets;

use super::apply::{apply_persistent, prepare_spec};
use super::manifest::Manifest;
use super::plan::{Change, Kind, desired, from_rows, plan, to_rows};
use super::ports::Ports;
use super::stack::deploy;

/// What a running `up` needs to apply a changed manifest.
pub(crate) struct Live {
    pub(crate) manifest_path: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) iam: Iam,
    pub(crate) secrets: Secrets,
    pub(crate) runner: Runner,
    pub(crate) store: gatehouse_store::Store,
    pub(crate) values: tokio::sync::Mutex<BTreeMap<String, String>>,
    pub(crate) sqlite_fallback: BTreeSet<String>,
}

impl Live {
    /// Re-reads the manifest and applies it: persistent changes, then services — a changed one
    /// gets a new revision (started, ready, traffic moved, old one drained: no failed
    /// requests), a new one is deployed, a removed one stopped. Changes to the identity
    /// settings, SQL instances or gateways need a restart and are refused. API files are
    /// re-rendered by the running gateways on their own.
    async fn apply(&self) -> anyhow::Result<Vec<String>> {
        let m = Manifest::load(&self.manifest_path)?;
        let want = desired(&m)?;
        let have = from_rows(&self.store.up_state().await?);
        let changes = plan(&want, &have);
        let restart: Vec<String> = changes
            .iter()
            .filter(|(_, kind, _)| kind.needs_restart())
            .map(|(c, kind, name)| format!("{} {kind} {name}", c.as_str()))
            .collect();
        if !restart.is_empty() {
            bail!(
                "these changes need a restart of `gatehouse up` (down, then up): {}",
                restart.join(", ")
            );
        }
        let mut values = self.values.lock().await;
        apply_persistent(&m, &self.iam, &self.secrets, &mut values, &want, &have).await?;
        let mut report = Vec::new();
        for (change, kind, name) in &changes {
            if *kind != Kind::Service {
                report.push(format!("{} {kind} {name}: applied", change.as_str()));
                continue;
            }
            match change {
                Change::Delete => {
                    self.runner.delete(name).await;
                    report.push(format!("service {name}: stopped"));
                }
                Change::Create | Change::Update => {
                    let s = m
                        .services
                        .iter()
                        .find(|s| &s.name == name)
                        .context("service")?;
                    let spec = prepare_spec(&m, s, &values, &self.data_dir, &self.sqlite_fallback)?;
                    let mut ports = Ports::load(&self.data_dir);
                    let svc = deploy(&self.runner, &mut ports, &m.project.host, spec).await?;
                    if let Err(e) = ports.save() {
                        tracing::warn!(error = %format!("{e:#}"), "could not keep the ports for the next start");
                    }
                    values.insert(format!("services.{name}.url"), svc.url.clone());
                    report.push(format!(
                        "service {name}: revision {} serving at {}",
                        svc.revision.load().name,
                        svc.url
                    ));
                }
            }
        }
        self.store.put_up_state(&to_rows(&want)).await?;
        Ok(report)
    }

    /// The control socket's extra route.
    pub(crate) fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new().route(
            "/v1/apply",
            axum::routing::post(
                move |axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>| {
                    let live = self.clone();
                    async move { live.answer(q.get("manifest").map(Path::new)).await }
                },
            ),
        )
    }

    async fn answer(&self, manifest: Option<&Path>) -> axum::response::Response {
        let conflict = |message: String| {
            (
                axum::http::StatusCode::CONFLICT,
                axum::Json(serde_json::json!({"error": {"message": message}})),
            )
                .into_response()
        };
        let same = manifest
            .is_some_and(|m| std::fs::canonicalize(&self.manifest_path).ok().as_deref() == Some(m));
        if !same {
            return conflict(format!(
                "the running gatehouse serves {}; stop it (gatehouse down) to switch manifests",
                self.manifest_path.display()
            ));
        }
        match self.apply().await {
            Ok(report) => axum::Json(serde_json::json!({"applied": report})).into_response(),
            Err(e) => conflict(format!("{e:#}")),
        }
    }
}
