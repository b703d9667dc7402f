//! `gatehouse run`: run services like Cloud Run, in the foreground, until Ctrl-C / SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use gatehouse_iam::{Iam, IamConfig};
use gatehouse_identity::SystemClock;
use gatehouse_run::{RunConfig, Runner, ServiceSpec};
use gatehouse_secrets::{Key, Secrets};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    store: crate::iam_cmd::StoreArgs,
    /// The project services run in.
    #[arg(long, env = "GATEHOUSE_PROJECT", global = true)]
    project: Option<String>,
    /// The region (service resource names, metadata `instance/region`).
    #[arg(long, default_value = "us-central1", global = true)]
    region: String,
    #[command(subcommand)]
    command: RunCommand,
}

#[derive(Debug, Subcommand)]
enum RunCommand {
    /// Deploy services from spec files and serve them until stopped.
    Deploy {
        /// A service spec (YAML or JSON); repeatable.
        #[arg(long = "spec", required = true)]
        specs: Vec<PathBuf>,
        /// A managed PostgreSQL instance spec (`name`, `databases`, `users` with
        /// `password_secret`, `tcp_port`); repeatable; started before the services.
        #[arg(long = "sql")]
        sql: Vec<PathBuf>,
        /// The secrets master key, when services use `secrets:`.
        #[arg(long, env = "GATEHOUSE_SECRETS_MASTER_KEY_FILE")]
        master_key_file: Option<PathBuf>,
        /// Address ingresses bind to.
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
    },
    /// Check spec files.
    Validate {
        #[arg(required = true)]
        specs: Vec<PathBuf>,
    },
}

impl RunArgs {
    /// Whether this runs a server (as opposed to a one-shot command).
    pub(crate) fn is_server(&self) -> bool {
        matches!(self.command, RunCommand::Deploy { .. })
    }
}

fn read_spec(path: &PathBuf) -> anyhow::Result<ServiceSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ServiceSpec::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    match &args.command {
        RunCommand::Validate { specs } => {
            for s in specs {
                read_spec(s)?;
            }
            tracing::info!(count = specs.len(), "specs are valid");
            Ok(())
        }
        RunCommand::Deploy {
            specs,
            sql,
            master_key_file,
            bind,
        } => {
            let project = args
                .project
                .clone()
                .context("give --project (or set GATEHOUSE_PROJECT)")?;
            let specs: Vec<ServiceSpec> = specs.iter().map(read_spec).collect::<Result<_, _>>()?;
            let store =
                crate::open_store(&args.store.data_dir, args.store.database_url.as_deref()).await?;
            let iam = Iam::new(
                store.clone(),
                Arc::new(SystemClock),
                IamConfig {
                    public_url: args
                        .store
                        .public_url
                        .clone()
                        .unwrap_or_else(|| IamConfig::default().public_url),
                    ..IamConfig::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let secrets = match master_key_file {
                Some(f) => {
                    let text = std::fs::read_to_string(f)
                        .with_context(|| format!("reading {}", f.display()))?;
                    let key = Key::from_base64(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
                    Some(
                        Secrets::new(store, iam.clone(), key)
                            .await
                            .map_err(|e| anyhow::anyhow!("{e}"))?,
                    )
                }
                None => None,
            };
            let runner = Runner::new(
                iam.clone(),
                secrets,
                RunConfig {
                    project,
                    region: args.region.clone(),
                    bind_host: bind.clone(),
                    data_root: args.store.data_dir.clone(),
                    socket_root: args.store.data_dir.join("cloudsql"),
                },
            );
            for file in sql {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let spec = gatehouse_run::SqlInstanceSpec::parse(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                if let Err(e) = runner.start_sql(spec).await {
                    runner.shutdown().await;
                    anyhow::bail!("{e}");
                }
            }
            for spec in specs {
                let name = spec.name.clone();
                match runner.deploy(spec).await {
                    Ok(s) => {
                        tracing::info!(service = name, url = s.url, revision = %s.revision.load().name, "listening");
                    }
                    Err(e) => {
                        runner.shutdown().await;
                        anyhow::bail!("deploying {name}: {e}");
                    }
                }
            }
            let keys = iam.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    let _ = keys.reload_keys().await;
                }
            });
            crate::shutdown_signal().await;
            runner.shutdown().await;
            Ok(())
        }
    }
}
