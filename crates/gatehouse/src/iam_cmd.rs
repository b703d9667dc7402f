//! `gatehouse iam`: the IAM server (token endpoint, certs, IAM and IAM Credentials APIs),
//! metadata servers, and administration straight on the database (the local owner's tools, as
//! `gcloud` is for a project owner).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use gatehouse_google_api::iam_policy::policy_json;
use gatehouse_iam::{Iam, IamConfig, project_resource};
use gatehouse_identity::SystemClock;
use gatehouse_metadata::{self as metadata, MetadataConfig};
use tokio::net::TcpListener;

use crate::cli::{IamUrlArg, StoreArgs};

#[derive(Debug, Args)]
pub struct IamArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    iam_url: IamUrlArg,
    #[command(subcommand)]
    command: IamCommand,
}

impl IamArgs {
    /// Whether this runs a server (as opposed to a one-shot command).
    pub(crate) fn is_server(&self) -> bool {
        matches!(
            self.command,
            IamCommand::Serve { .. } | IamCommand::Metadata { .. }
        )
    }
}

#[derive(Debug, Subcommand)]
enum IamCommand {
    /// Serve the IAM HTTP API (and, with --metadata, metadata servers).
    ///
    /// Example: gatehouse iam --data-dir ./data serve --listen 127.0.0.1:8085
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8085", env = "GATEHOUSE_IAM_LISTEN")]
        listen: String,
        /// Also run a metadata server for an account: `EMAIL=ADDRESS` (repeatable).
        #[arg(long = "metadata")]
        metadata: Vec<String>,
        /// Region reported by metadata servers.
        #[arg(long, default_value = "us-central1")]
        region: String,
        /// Rotation period of the ID-token and access-token keys, in seconds.
        #[arg(long, default_value_t = 6 * 3600)]
        key_rotation_secs: i64,
    },
    /// Serve one metadata server for an account.
    ///
    /// Example: gatehouse iam metadata --service-account hello@demo-project.iam.gserviceaccount.com --listen 127.0.0.1:8086
    Metadata {
        /// The account behind `default`.
        #[arg(long)]
        service_account: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8086")]
        listen: String,
        /// Region reported at `instance/region`.
        #[arg(long, default_value = "us-central1")]
        region: String,
    },
    /// Service accounts and their keys.
    ///
    /// Example: gatehouse iam service-accounts create apigw-sa --project demo-project
    #[command(name = "service-accounts", subcommand)]
    ServiceAccounts(AccountCommand),
    /// Grant a role: add a member to a binding of a resource's policy.
    ///
    /// Example: gatehouse iam add-binding --project demo-project --member serviceAccount:apigw-sa@demo-project.iam.gserviceaccount.com --role roles/run.invoker
    AddBinding(BindingArgs),
    /// Revoke a role: remove a member from a binding.
    ///
    /// Example: gatehouse iam remove-binding --project demo-project --member user:ada@example.com --role roles/run.invoker
    RemoveBinding(BindingArgs),
    /// Show a resource's policy.
    ///
    /// Example: gatehouse iam get-policy --resource projects/demo-project/secrets/vote-db
    GetPolicy {
        #[command(flatten)]
        target: ResourceArgs,
    },
    /// Print an ID token for a service account.
    ///
    /// Example: gatehouse iam print-id-token --audience http://127.0.0.1:8081 --service-account apigw-sa@demo-project.iam.gserviceaccount.com
    PrintIdToken {
        /// The token's audience.
        #[arg(long)]
        audience: String,
        /// The account.
        #[arg(long)]
        service_account: String,
    },
    /// Print the newest access decisions.
    ///
    /// Example: gatehouse iam audit --limit 20
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Create `NAME@PROJECT.iam.gserviceaccount.com`.
    ///
    /// Example: gatehouse iam service-accounts create apigw-sa --project demo-project
    Create {
        name: String,
        #[arg(long, env = "GATEHOUSE_PROJECT")]
        project: String,
        #[arg(long, default_value = "")]
        display_name: String,
    },
    /// List a project's accounts.
    ///
    /// Example: gatehouse iam service-accounts list --project demo-project
    List {
        #[arg(long, env = "GATEHOUSE_PROJECT")]
        project: String,
    },
    /// Disable an account (its keys and tokens stop working).
    ///
    /// Example: gatehouse iam service-accounts disable apigw-sa@demo-project.iam.gserviceaccount.com
    Disable { email: String },
    /// Enable an account again.
    ///
    /// Example: gatehouse iam service-accounts enable apigw-sa@demo-project.iam.gserviceaccount.com
    Enable { email: String },
    /// Delete an account with its keys.
    ///
    /// Example: gatehouse iam service-accounts delete apigw-sa@demo-project.iam.gserviceaccount.com
    Delete { email: String },
    /// Keys of an account.
    ///
    /// Example: gatehouse iam service-accounts keys create key.json --iam-account apigw-sa@demo-project.iam.gserviceaccount.com
    #[command(subcommand)]
    Keys(KeyCommand),
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create a key and write its key file (Google's JSON format) to FILE.
    ///
    /// Example: gatehouse iam service-accounts keys create key.json --iam-account apigw-sa@demo-project.iam.gserviceaccount.com
    Create {
        file: PathBuf,
        #[arg(long)]
        iam_account: String,
    },
    /// List an account's keys.
    ///
    /// Example: gatehouse iam service-accounts keys list --iam-account apigw-sa@demo-project.iam.gserviceaccount.com
    List {
        #[arg(long)]
        iam_account: String,
    },
    /// Delete a key.
    ///
    /// Example: gatehouse iam service-accounts keys delete KEY_ID --iam-account apigw-sa@demo-project.iam.gserviceaccount.com
    Delete {
        key_id: String,
        #[arg(long)]
        iam_account: String,
    },
}

#[derive(Debug, Args)]
struct ResourceArgs {
    /// The project (its policy, unless --resource names another resource).
    #[arg(long, env = "GATEHOUSE_PROJECT")]
    project: Option<String>,
    /// A full resource name, e.g. `projects/p/secrets/s` or
    /// `projects/p/serviceAccounts/EMAIL`.
    #[arg(long)]
    resource: Option<String>,
}

#[derive(Debug, Args)]
struct BindingArgs {
    #[command(flatten)]
    target: ResourceArgs,
    /// `user:EMAIL`, `serviceAccount:EMAIL`, `allUsers`, `allAuthenticatedUsers`, ...
    #[arg(long)]
    member: String,
    /// e.g. `roles/run.invoker`.
    #[arg(long)]
    role: String,
}

async fn iam(args: &StoreArgs, public_url: String, rotation: i64) -> anyhow::Result<Iam> {
    let master = args.master_key(crate::state::IfNoMasterKey::Generate)?;
    let store = args.open_store().await?;
    let config = IamConfig {
        public_url,
        key_rotation_secs: rotation,
        cache_ttl: Duration::from_secs(1),
    };
    Iam::new(store, Arc::new(SystemClock), master, config)
        .await
        .context("IAM")
}

fn resource(t: &ResourceArgs) -> anyhow::Result<String> {
    match (&t.resource, &t.project) {
        (Some(r), _) => Ok(r.clone()),
        (None, Some(p)) => Ok(project_resource(p)),
        (None, None) => bail!("give --project or --resource"),
    }
}

pub(crate) fn print(v: &serde_json::Value) {
    // The CLI's output is its result: one JSON document on stdout.
    #[allow(clippy::print_stdout)]
    {
        println!("{v}");
    }
}

async fn metadata_server(
    iam: Iam,
    account: &str,
    listen: &str,
    region: &str,
) -> anyhow::Result<()> {
    iam.require_account(account).await?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, account, "metadata listening");
    let app = metadata::router(iam, MetadataConfig::new(account, region));
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::shutdown_signal())
        .await?;
    Ok(())
}

pub async fn run(args: IamArgs) -> anyhow::Result<()> {
    let default_url = || "http://127.0.0.1:8085".to_owned();
    match &args.command {
        IamCommand::Serve {
            listen,
            metadata,
            region,
            key_rotation_secs,
        } => {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let addr = listener.local_addr()?;
            let public_url = args
                .iam_url
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{addr}"));
            let iam = iam(&args.store, public_url.clone(), *key_rotation_secs).await?;
            for m in metadata {
                let (account, at) = m
                    .split_once('=')
                    .context("--metadata takes EMAIL=ADDRESS")?;
                let (iam, account, at, region) = (
                    iam.clone(),
                    account.to_owned(),
                    at.to_owned(),
                    region.clone(),
                );
                tokio::spawn(async move {
                    if let Err(e) = metadata_server(iam, &account, &at, &region).await {
                        tracing::error!(error = %e, account, "metadata server failed");
                    }
                });
            }
            spawn_key_reloader(&iam);
            tracing::info!(%addr, public_url, "listening");
            axum::serve(listener, gatehouse_iam_http::router(iam))
                .with_graceful_shutdown(crate::shutdown_signal())
                .await?;
            Ok(())
        }
        IamCommand::Metadata {
            service_account,
            listen,
            region,
        } => {
            let url = args.iam_url.or_running(&args.store.data_dir, default_url);
            let iam = iam(&args.store, url, 6 * 3600).await?;
            metadata_server(iam, service_account, listen, region).await
        }
        command => {
            let url = args.iam_url.or_running(&args.store.data_dir, default_url);
            let iam = iam(&args.store, url, 6 * 3600).await?;
            let result = admin(&iam, command).await;
            iam.flush_audit().await;
            result
        }
    }
}

async fn admin(iam: &Iam, command: &IamCommand) -> anyhow::Result<()> {
    let e = |e: gatehouse_iam::Error| anyhow::Error::new(e);
    match command {
        IamCommand::ServiceAccounts(AccountCommand::Create {
            name,
            project,
            display_name,
        }) => {
            let a = iam
                .create_account(project, name, display_name, "")
                .await
                .map_err(e)?;
            print(
                &serde_json::json!({"email": a.email, "uniqueId": a.unique_id, "projectId": a.project_id}),
            );
        }
        IamCommand::ServiceAccounts(AccountCommand::List { project }) => {
            let list: Vec<_> = iam
                .accounts(project)
                .await
                .map_err(e)?
                .into_iter()
                .map(|a| serde_json::json!({"email": a.email, "uniqueId": a.unique_id, "disabled": a.disabled}))
                .collect();
            print(&serde_json::json!(list));
        }
        IamCommand::ServiceAccounts(AccountCommand::Disable { email }) => {
            iam.set_account_disabled(email, true).await.map_err(e)?;
        }
        IamCommand::ServiceAccounts(AccountCommand::Enable { email }) => {
            iam.set_account_disabled(email, false).await.map_err(e)?;
        }
        IamCommand::ServiceAccounts(AccountCommand::Delete { email }) => {
            iam.delete_account(email).await.map_err(e)?;
        }
        IamCommand::ServiceAccounts(AccountCommand::Keys(KeyCommand::Create {
            file,
            iam_account,
        })) => {
            let (record, key_file) = iam.create_key(iam_account).await.map_err(e)?;
            crate::write_private(file, &serde_json::to_string_pretty(&key_file)?, false)?;
            print(&serde_json::json!({"keyId": record.key_id, "file": file.display().to_string()}));
        }
        IamCommand::ServiceAccounts(AccountCommand::Keys(KeyCommand::List { iam_account })) => {
            let list: Vec<_> = iam
                .keys(iam_account)
                .await
                .map_err(e)?
                .into_iter()
                .map(|k| serde_json::json!({"keyId": k.key_id, "keyType": k.managed, "disabled": k.disabled}))
                .collect();
            print(&serde_json::json!(list));
        }
        IamCommand::ServiceAccounts(AccountCommand::Keys(KeyCommand::Delete {
            key_id,
            iam_account,
        })) => {
            iam.delete_key(iam_account, key_id).await.map_err(e)?;
        }
        IamCommand::AddBinding(b) | IamCommand::RemoveBinding(b) => {
            let add = matches!(command, IamCommand::AddBinding(_));
            let r = resource(&b.target)?;
            if let Some(project) = gatehouse_iam::resource_project(&r) {
                iam.project(project).await.map_err(e)?;
            }
            iam.edit_binding(&r, &b.role, &b.member, add)
                .await
                .map_err(e)?;
            let p = iam.policy(&r).await.map_err(e)?;
            print(&policy_json(&p.0, p.1));
        }
        IamCommand::GetPolicy { target } => {
            let r = resource(target)?;
            let p = iam.policy(&r).await.map_err(e)?;
            print(&policy_json(&p.0, p.1));
        }
        IamCommand::PrintIdToken {
            audience,
            service_account,
        } => {
            let a = iam.require_account(service_account).await.map_err(e)?;
            if a.disabled {
                bail!("service account {} is disabled", a.email);
            }
            let token = iam.mint_id_token(&a, audience, true, false).map_err(e)?;
            #[allow(clippy::print_stdout)]
            {
                println!("{token}");
            }
        }
        IamCommand::Audit { limit } => {
            let list: Vec<_> = iam
                .audit_log(*limit)
                .await
                .map_err(e)?
                .into_iter()
                .map(|r| serde_json::json!({"at": r.at, "principal": r.principal, "permission": r.permission, "resource": r.resource, "allowed": r.allowed}))
                .collect();
            print(&serde_json::json!(list));
        }
        IamCommand::Serve { .. } | IamCommand::Metadata { .. } => {}
    }
    Ok(())
}

/// Keeps an IAM service's signing keys current: they rotate on schedule, and rotations made by
/// other replicas on the same database are picked up (every minute).
pub(crate) fn spawn_key_reloader(iam: &Iam) {
    let keys = iam.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            if let Err(e) = keys.reload_keys().await {
                tracing::warn!(error = %e, "key reload failed");
            }
        }
    });
}
