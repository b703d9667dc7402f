//! `gatehouse secrets`: the Secret Manager API (served together with the IAM API, which its
//! clients need for credentials), and the local administrator's commands on the database.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::Request;
use clap::{Args, Subcommand};
use gatehouse_iam::{Iam, IamConfig, Principal};
use gatehouse_identity::SystemClock;
use gatehouse_secrets::{Key, NewPayload, Secrets};
use gatehouse_secrets_http::wire;
use tokio::net::TcpListener;

use crate::state::IfNoMasterKey;
use tower::ServiceExt as _;

#[derive(Debug, Args)]
pub struct SecretsArgs {
    #[command(flatten)]
    store: crate::cli::StoreArgs,
    #[command(flatten)]
    iam_url: crate::cli::IamUrlArg,
    /// The project (for commands that take a bare secret name).
    #[arg(long, env = "GATEHOUSE_PROJECT", global = true)]
    project: Option<String>,
    #[command(subcommand)]
    command: SecretsCommand,
}

impl SecretsArgs {
    /// Whether this runs a server (as opposed to a one-shot command).
    pub(crate) fn is_server(&self) -> bool {
        matches!(self.command, SecretsCommand::Serve { .. })
    }
}

#[derive(Debug, Subcommand)]
enum SecretsCommand {
    /// Serve the Secret Manager v1 REST API (and the IAM API) on one listener.
    ///
    /// Example: gatehouse secrets --master-key-file master.key serve --listen 127.0.0.1:8087
    Serve {
        #[arg(
            long,
            default_value = "127.0.0.1:8087",
            env = "GATEHOUSE_SECRETS_LISTEN"
        )]
        listen: String,
    },
    /// Write a new random master key to FILE (mode 0600).
    ///
    /// Example: gatehouse secrets generate-master-key master.key
    GenerateMasterKey { file: PathBuf },
    /// Re-wrap every data key (secrets' and signing keys') under a new master key, in one
    /// transaction (payloads and private keys are not re-encrypted).
    ///
    /// Example: gatehouse secrets --master-key-file master.key rotate-master-key --new-key-file new-master.key
    RotateMasterKey {
        /// The new master key's file; the current one comes from --master-key-file.
        #[arg(long)]
        new_key_file: PathBuf,
    },
    /// Create a secret, with its first version from a file (`-` reads stdin).
    ///
    /// Example: echo -n s3cret | gatehouse secrets --master-key-file master.key --project demo-project create db-pass --data-file -
    Create {
        name: String,
        #[arg(long)]
        data_file: Option<PathBuf>,
    },
    /// List the project's secrets.
    ///
    /// Example: gatehouse secrets --master-key-file master.key --project demo-project list
    List,
    /// Delete a secret and all its versions.
    ///
    /// Example: gatehouse secrets --master-key-file master.key --project demo-project delete db-pass
    Delete { name: String },
    /// Versions of a secret.
    ///
    /// Example: gatehouse secrets --master-key-file master.key --project demo-project versions access --secret db-pass latest
    #[command(subcommand)]
    Versions(VersionsCommand),
}

#[derive(Debug, Subcommand)]
enum VersionsCommand {
    /// Add a version from a file (`-` reads stdin).
    ///
    /// Example: gatehouse secrets --master-key-file master.key --project demo-project versions add db-pass --data-file new.txt
    Add {
        secret: String,
        #[arg(long)]
        data_file: PathBuf,
    },
    /// List a secret's versions.
    ///
    /// Example: gatehouse secrets --master-key-file master.key --project demo-project versions list db-pass
    List { secret: String },
    /// Print a version's payload (`latest`, a number or an alias).
    ///
    /// Example: gatehouse secrets --master-key-file master.key --project demo-project versions access --secret db-pass latest
    Access {
        version: String,
        #[arg(long)]
        secret: String,
    },
    /// Disable a version.
    ///
    /// Example: gatehouse secrets --master-key-file master.key --project demo-project versions disable --secret db-pass 1
    Disable {
        version: String,
        #[arg(long)]
        secret: String,
    },
    /// Enable a version.
    ///
    /// Example: gatehouse secrets --master-key-file master.key --project demo-project versions enable --secret db-pass 1
    Enable {
        version: String,
        #[arg(long)]
        secret: String,
    },
    /// Destroy a version: its payload is erased.
    ///
    /// Example: gatehouse secrets --master-key-file master.key --project demo-project versions destroy --secret db-pass 1
    Destroy {
        version: String,
        #[arg(long)]
        secret: String,
    },
}

fn read_data(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        use std::io::Read as _;
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        return Ok(buf);
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn print(v: &serde_json::Value) {
    #[allow(clippy::print_stdout)]
    {
        println!("{v}");
    }
}

pub async fn run(args: SecretsArgs) -> anyhow::Result<()> {
    if let SecretsCommand::GenerateMasterKey { file } = &args.command {
        let key = Key::generate().context("generating a master key")?;
        crate::write_private(file, &format!("{}\n", key.to_base64().as_str()), true)?;
        print(
            &serde_json::json!({"file": file.display().to_string(), "fingerprint": key.fingerprint()}),
        );
        return Ok(());
    }
    let master = args.store.master_key(IfNoMasterKey::Refuse)?;
    let store = args.store.open_store().await?;
    if let SecretsCommand::RotateMasterKey { new_key_file } = &args.command {
        let new = crate::state::master_key(
            Some(new_key_file),
            &args.store.data_dir,
            IfNoMasterKey::Refuse,
        )?;
        let (secrets, signing_keys) = Secrets::rotate_master_key(&store, &master, &new)
            .await
            .context("rotating the master key")?;
        print(&serde_json::json!({
            "rewrapped": secrets,
            "signingKeys": signing_keys,
            "fingerprint": new.fingerprint(),
        }));
        return Ok(());
    }
    let public_url = match &args.command {
        SecretsCommand::Serve { .. } => args.iam_url.public_url.clone(),
        _ => None,
    };
    let iam = Iam::new(
        store.clone(),
        Arc::new(SystemClock),
        master.clone(),
        IamConfig {
            public_url: public_url.unwrap_or_else(|| "http://127.0.0.1:8087".into()),
            ..IamConfig::default()
        },
    )
    .await
    .context("IAM")?;
    let secrets = Secrets::new(store, iam.clone(), master)
        .await
        .context("Secret Manager")?;
    if let SecretsCommand::Serve { listen, .. } = &args.command {
        return serve(secrets, iam, listen).await;
    }
    let result = admin(&secrets, &args).await;
    iam.flush_audit().await;
    result
}

/// Secret Manager and IAM (token endpoint, IAM v1, IAM Credentials, certs) as one app.
pub(crate) fn iam_and_secrets_app(secrets: Secrets, iam: Iam) -> axum::Router {
    let sm = gatehouse_secrets_http::router(secrets);
    let iam_api = gatehouse_iam_http::router(iam);
    axum::Router::new().fallback(move |req: Request| {
        let (sm, iam_api) = (sm.clone(), iam_api.clone());
        async move {
            let router = if gatehouse_secrets_http::handles(req.uri().path()) {
                sm
            } else {
                iam_api
            };
            match router.oneshot(req).await {
                Ok(res) => res,
                Err(never) => match never {},
            }
        }
    })
}

/// Secret Manager and IAM on one listener.
async fn serve(secrets: Secrets, iam: Iam, listen: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let app = iam_and_secrets_app(secrets, iam.clone());
    crate::iam_cmd::spawn_key_reloader(&iam);
    tracing::info!(%addr, "listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::shutdown_signal())
        .await?;
    Ok(())
}

async fn admin(secrets: &Secrets, args: &SecretsArgs) -> anyhow::Result<()> {
    let e = |e: gatehouse_iam::Error| anyhow::Error::new(e);
    let me = Principal::Local;
    let project = || {
        args.project
            .clone()
            .context("give --project (or set GATEHOUSE_PROJECT)")
    };
    let secret_name = |s: &str| -> anyhow::Result<String> {
        if s.starts_with("projects/") {
            Ok(s.to_owned())
        } else {
            Ok(format!("projects/{}/secrets/{s}", project()?))
        }
    };
    match &args.command {
        SecretsCommand::Create { name, data_file } => {
            let p = project()?;
            let s = secrets
                .create_secret(
                    &me,
                    &p,
                    name,
                    &serde_json::json!({"replication": {"automatic": {}}}),
                )
                .await
                .map_err(e)?;
            let mut out = serde_json::json!({"secret": wire::secret(&s)});
            if let Some(f) = data_file {
                let data = read_data(f)?;
                let v = secrets
                    .add_version(
                        &me,
                        &s.name(),
                        NewPayload {
                            data: &data,
                            crc32c: None,
                        },
                    )
                    .await
                    .map_err(e)?;
                out["version"] = wire::version(&v);
            }
            print(&out);
        }
        SecretsCommand::List => {
            let list: Vec<_> = secrets
                .list_secrets(&me, &project()?, None)
                .await
                .map_err(e)?
                .iter()
                .map(wire::secret)
                .collect();
            print(&serde_json::json!(list));
        }
        SecretsCommand::Delete { name } => {
            secrets
                .delete_secret(&me, &secret_name(name)?, None)
                .await
                .map_err(e)?;
        }
        SecretsCommand::Versions(v) => match v {
            VersionsCommand::Add { secret, data_file } => {
                let data = read_data(data_file)?;
                let v = secrets
                    .add_version(
                        &me,
                        &secret_name(secret)?,
                        NewPayload {
                            data: &data,
                            crc32c: None,
                        },
                    )
                    .await
                    .map_err(e)?;
                print(&wire::version(&v));
            }
            VersionsCommand::List { secret } => {
                let list: Vec<_> = secrets
                    .list_versions(&me, &secret_name(secret)?, None)
                    .await
                    .map_err(e)?
                    .iter()
                    .map(wire::version)
                    .collect();
                print(&serde_json::json!(list));
            }
            VersionsCommand::Access { version, secret } => {
                let a = secrets
                    .access(&me, &format!("{}/versions/{version}", secret_name(secret)?))
                    .await
                    .map_err(e)?;
                use std::io::Write as _;
                std::io::stdout().write_all(&a.data)?;
            }
            VersionsCommand::Disable { version, secret }
            | VersionsCommand::Enable { version, secret }
            | VersionsCommand::Destroy { version, secret } => {
                let state = match v {
                    VersionsCommand::Disable { .. } => "DISABLED",
                    VersionsCommand::Enable { .. } => "ENABLED",
                    _ => "DESTROYED",
                };
                let out = secrets
                    .set_state(
                        &me,
                        &format!("{}/versions/{version}", secret_name(secret)?),
                        state,
                        None,
                    )
                    .await
                    .map_err(e)?;
                print(&wire::version(&out));
            }
        },
        SecretsCommand::Serve { .. }
        | SecretsCommand::GenerateMasterKey { .. }
        | SecretsCommand::RotateMasterKey { .. } => {}
    }
    Ok(())
}
