//! The IAM + Secret Manager "world" that the tests of the crates above IAM and Secret Manager
//! (their HTTP surfaces, the runner, the apps) build on: one SQLite database in a temporary
//! directory, one master key, IAM with a zero cache TTL (a grant made in a test is seen by the
//! next request: no waiting) and Secret Manager over that IAM.
//!
//! A test-support crate, in its own crate so that the dependency graph has no cycle: it sits
//! above `gatehouse-store`, `-keyring`, `-iam` and `-secrets`, whose own tests use only
//! `gatehouse-testkit`. Not for production code: only `[dev-dependencies]` may name it.
//!
//! Builder style, after linkerd2-proxy's integration harness:
//!
//! ```ignore
//! let w = World::builder().project("sec-proj").build().await?;
//! let (admin, token) = w.admin("sm-admin", "roles/secretmanager.admin").await?;
//! w.add_secret("db-pass", b"s3cret").await?;
//! ```

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gatehouse_iam::{Iam, IamConfig, Policy, Principal};
use gatehouse_keyring::SystemClock;
use gatehouse_secrets::{Key, NewPayload, Secrets};
use gatehouse_store::{ServiceAccountRecord, Store};
use gatehouse_testkit::{TempDir, temp_dir};

/// The scope Google's client libraries ask for.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// How to build a [`World`]; [`World::builder`] starts one.
#[derive(Debug, Clone)]
pub struct WorldBuilder {
    project: String,
}

/// IAM and Secret Manager on one temporary database.
pub struct World {
    /// The database.
    pub store: Store,
    /// IAM (cache TTL zero).
    pub iam: Iam,
    /// Secret Manager over `iam`.
    pub secrets: Secrets,
    /// The master key IAM and Secret Manager seal with.
    pub master: Arc<Key>,
    /// The project the test works in.
    pub project: String,
    /// The data directory (the database; room for the test's own files); removed on drop.
    pub dir: TempDir,
}

impl World {
    /// A builder: project `run-proj`.
    pub fn builder() -> WorldBuilder {
        WorldBuilder {
            project: "run-proj".into(),
        }
    }

    /// A world in `project` with an administrator: service account `account_id` granted `role`
    /// on the project ([`World::admin`]); the world, the account and its access token.
    pub async fn with_admin(
        project: &str,
        account_id: &str,
        role: &str,
    ) -> anyhow::Result<(Self, ServiceAccountRecord, String)> {
        let world = Self::builder().project(project).build().await?;
        let (admin, token) = world.admin(account_id, role).await?;
        Ok((world, admin, token))
    }

    /// Service account `account_id` in the world's project, granted `role` on the project, and
    /// a `cloud-platform` access token for it.
    pub async fn admin(
        &self,
        account_id: &str,
        role: &str,
    ) -> anyhow::Result<(ServiceAccountRecord, String)> {
        let account = self
            .iam
            .create_account(&self.project, account_id, "", "")
            .await
            .with_context(|| format!("creating account {account_id}"))?;
        let policy = Policy::from_json(&serde_json::json!({"bindings": [{
            "role": role,
            "members": [format!("serviceAccount:{}", account.email)],
        }]}))
        .context("building the policy")?;
        self.iam
            .set_policy(&format!("projects/{}", self.project), &policy, None)
            .await
            .context("setting the project's policy")?;
        let (token, _) = self
            .iam
            .mint_access_token(&account, &[CLOUD_PLATFORM.to_owned()], None, 3600)
            .context("minting an access token")?;
        Ok((account, token))
    }

    /// Creates secret `name` (automatic replication) in the world's project with one version
    /// holding `data`, as the local administrator.
    pub async fn add_secret(&self, name: &str, data: &[u8]) -> anyhow::Result<()> {
        let local = Principal::Local;
        self.secrets
            .create_secret(
                &local,
                &self.project,
                name,
                &serde_json::json!({"replication": {"automatic": {}}}),
            )
            .await
            .with_context(|| format!("creating secret {name}"))?;
        self.secrets
            .add_version(
                &local,
                &format!("projects/{}/secrets/{name}", self.project),
                NewPayload { data, crc32c: None },
            )
            .await
            .with_context(|| format!("adding a version to secret {name}"))?;
        Ok(())
    }
}

impl WorldBuilder {
    /// The project the test works in.
    pub fn project(mut self, project: &str) -> Self {
        self.project = project.to_owned();
        self
    }

    /// Opens the database, creates IAM and Secret Manager.
    pub async fn build(self) -> anyhow::Result<World> {
        let dir = temp_dir("world")?;
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("world.db").display()
        );
        let store = Store::connect(&url)
            .await
            .context("opening the world's database")?;
        let master = Arc::new(Key::generate().context("generating a master key")?);
        let iam = Iam::new(
            store.clone(),
            Arc::new(SystemClock),
            master.clone(),
            IamConfig {
                cache_ttl: Duration::ZERO,
                ..IamConfig::default()
            },
        )
        .await
        .context("starting IAM")?;
        let secrets = Secrets::new(store.clone(), iam.clone(), master.clone())
            .await
            .context("starting Secret Manager")?;
        Ok(World {
            store,
            iam,
            secrets,
            master,
            project: self.project,
            dir,
        })
    }
}
