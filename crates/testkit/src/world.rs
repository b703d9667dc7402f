//! The IAM + Secret Manager + runner "world" the runner and app tests deploy into (feature
//! `world`): one SQLite database in a temporary directory, one master key, IAM with a zero
//! cache TTL (a grant made in a test is seen by the next request: no waiting), Secret Manager
//! over that IAM, and a [`Runner`] whose ingresses bind `127.0.0.1:0`.
//!
//! Builder style, after linkerd2-proxy's integration harness:
//!
//! ```ignore
//! let w = World::builder().project("run-proj").forward(idp_addr).build().await?;
//! w.add_secret("db-pass", b"s3cret").await?;
//! let service = w.runner.deploy(spec).await?;
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gatehouse_iam::{Iam, IamConfig, Principal};
use gatehouse_keyring::SystemClock;
use gatehouse_run::{IsolationMode, RunConfig, Runner};
use gatehouse_secrets::{Key, NewPayload, Secrets};
use gatehouse_store::Store;

use crate::TempDir;

/// How to build a [`World`]; [`World::builder`] starts one.
#[derive(Debug, Clone)]
pub struct WorldBuilder {
    project: String,
    region: String,
    isolation: IsolationMode,
    forward: Vec<SocketAddr>,
}

/// IAM, Secret Manager and a runner on one temporary database.
pub struct World {
    /// IAM (cache TTL zero).
    pub iam: Iam,
    /// Secret Manager over `iam`.
    pub secrets: Secrets,
    /// The runner, deploying into `project`.
    pub runner: Runner,
    /// The project services are deployed into.
    pub project: String,
    /// The data directory (database, runner data, Cloud SQL sockets); removed on drop.
    pub dir: TempDir,
}

impl World {
    /// A builder: project `run-proj`, region `us-central1`, isolation [`IsolationMode::Auto`],
    /// nothing forwarded into the instances.
    pub fn builder() -> WorldBuilder {
        WorldBuilder {
            project: "run-proj".into(),
            region: "us-central1".into(),
            isolation: IsolationMode::Auto,
            forward: Vec::new(),
        }
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
    /// The project the runner deploys into.
    pub fn project(mut self, project: &str) -> Self {
        self.project = project.to_owned();
        self
    }

    /// Network namespaces per instance when possible (`Auto`), or never (`Off`).
    pub fn isolation(mut self, isolation: IsolationMode) -> Self {
        self.isolation = isolation;
        self
    }

    /// A host service every instance may reach at the same address (e.g. an identity server).
    pub fn forward(mut self, addr: SocketAddr) -> Self {
        self.forward.push(addr);
        self
    }

    /// Opens the database, creates IAM, Secret Manager and the runner.
    pub async fn build(self) -> anyhow::Result<World> {
        let dir = TempDir::new("world")?;
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
        let secrets = Secrets::new(store, iam.clone(), master)
            .await
            .context("starting Secret Manager")?;
        let runner = Runner::new(
            iam.clone(),
            Some(secrets.clone()),
            RunConfig {
                project: self.project.clone(),
                region: self.region,
                bind_host: "127.0.0.1".into(),
                data_root: dir.path().join("data"),
                socket_root: dir.path().join("cloudsql"),
                isolation: self.isolation,
                forward: self.forward,
            },
        );
        Ok(World {
            iam,
            secrets,
            runner,
            project: self.project,
            dir,
        })
    }
}
