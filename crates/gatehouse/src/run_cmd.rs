//! `gatehouse run`: run services like Cloud Run, in the foreground, until Ctrl-C / SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use gatehouse_iam::{Iam, IamConfig};
use gatehouse_identity::SystemClock;
use gatehouse_run::{RunConfig, Runner, ServiceSpec};
use gatehouse_secrets::Secrets;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    store: crate::cli::StoreArgs,
    #[command(flatten)]
    iam_url: crate::cli::IamUrlArg,
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
    ///
    /// Example: gatehouse run --project demo-project deploy --spec hello.yaml --sql votes-db.yaml --master-key-file master.key
    Deploy {
        /// A service spec (YAML or JSON); repeatable.
        #[arg(long = "spec", required = true)]
        specs: Vec<PathBuf>,
        /// A managed PostgreSQL instance spec (`name`, `databases`, `users` with
        /// `password_secret`, `tcp_port`); repeatable; started before the services.
        #[arg(long = "sql")]
        sql: Vec<PathBuf>,
        /// Address ingresses bind to.
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
    },
    /// Check spec files.
    ///
    /// Example: gatehouse run validate hello.yaml
    Validate {
        #[arg(required = true)]
        specs: Vec<PathBuf>,
    },
    /// Inspect the services a running `gatehouse run deploy` / `gatehouse up` serves from this
    /// data directory.
    #[command(subcommand)]
    Services(ServicesCommand),
}

#[derive(Debug, Subcommand)]
enum ServicesCommand {
    /// One line per service: name, URL, serving revision, ready/running instances, access.
    ///
    /// Example: gatehouse run services list --data-dir ./data
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// A service as a Cloud Run v2 `Service` resource, with its live instances (JSON).
    ///
    /// Example: gatehouse run services describe hello
    Describe { name: String },
    /// A service's log: what its instances printed and what the runner did.
    ///
    /// Example: gatehouse run services logs hello --limit 20 --follow
    Logs {
        name: String,
        /// How many of the latest entries to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Keep printing entries as they are written, until Ctrl-C.
        #[arg(long, short)]
        follow: bool,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Table,
    Text,
    Json,
}

impl RunArgs {
    /// Whether this runs a server (as opposed to a one-shot command).
    pub(crate) fn is_server(&self) -> bool {
        matches!(self.command, RunCommand::Deploy { .. })
    }
}

/// The CLI's result on stdout.
fn out(text: &str) {
    use std::io::Write as _;
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{text}");
    let _ = o.flush();
}

async fn services(data_dir: &std::path::Path, command: &ServicesCommand) -> anyhow::Result<()> {
    use gatehouse_run::admin;
    match command {
        ServicesCommand::List { output } => {
            let (_, v) = admin::query(data_dir, "/v1/services").await?;
            if *output == Output::Json {
                out(&serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let mut rows = vec![[
                "SERVICE".to_owned(),
                "URL".to_owned(),
                "REVISION".to_owned(),
                "INSTANCES".to_owned(),
                "ACCESS".to_owned(),
            ]];
            for s in v["services"].as_array().into_iter().flatten() {
                let name = s["name"].as_str().unwrap_or_default();
                let instances = s["instances"].as_array().map_or(0, Vec::len);
                let ready = s["instances"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|i| i["ready"] == true)
                    .count();
                rows.push([
                    name.rsplit('/').next().unwrap_or(name).to_owned(),
                    s["uri"].as_str().unwrap_or_default().to_owned(),
                    s["latestReadyRevision"]
                        .as_str()
                        .and_then(|r| r.rsplit('/').next())
                        .unwrap_or_default()
                        .to_owned(),
                    format!("{ready}/{instances}"),
                    if s["allowUnauthenticated"] == true {
                        "public"
                    } else {
                        "private"
                    }
                    .to_owned(),
                ]);
            }
            for i in v["sqlInstances"].as_array().into_iter().flatten() {
                rows.push([
                    format!("sql:{}", i["name"].as_str().unwrap_or_default()),
                    i["socket"].as_str().unwrap_or_default().to_owned(),
                    i["connectionName"].as_str().unwrap_or_default().to_owned(),
                    "1/1".to_owned(),
                    "cloudsql.client".to_owned(),
                ]);
            }
            out(&crate::table(&rows));
            Ok(())
        }
        ServicesCommand::Describe { name } => {
            let (status, v) = admin::query(data_dir, &format!("/v1/services/{name}")).await?;
            if status != 200 {
                anyhow::bail!(
                    "{}",
                    v["error"]["message"]
                        .as_str()
                        .unwrap_or("service not found")
                );
            }
            out(&serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        ServicesCommand::Logs {
            name,
            limit,
            follow,
            output,
        } => {
            let show = |line: &str| {
                if *output == Output::Json {
                    out(line);
                    return;
                }
                let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                let who = v["instance"]
                    .as_str()
                    .or(v["revision"].as_str())
                    .unwrap_or("");
                let mut message = v["message"].as_str().unwrap_or_default().to_owned();
                if let Some(p) = v.get("jsonPayload") {
                    message = format!("{message} {p}");
                }
                out(&format!(
                    "{} {:<8} {who} {}",
                    v["timestamp"].as_str().unwrap_or_default(),
                    v["severity"].as_str().unwrap_or_default(),
                    message.trim()
                ));
            };
            for line in gatehouse_run::logs::tail(data_dir, name, *limit)? {
                show(&line);
            }
            if !*follow {
                return Ok(());
            }
            let path = gatehouse_run::logs::log_path(data_dir, name);
            let mut offset = std::fs::metadata(&path).map_or(0, |m| m.len());
            let mut partial = String::new();
            loop {
                tokio::select! {
                    () = crate::shutdown_signal() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                let len = std::fs::metadata(&path).map_or(0, |m| m.len());
                if len < offset {
                    // Rotated: the new file is read from its start.
                    offset = 0;
                    partial.clear();
                }
                if len == offset {
                    continue;
                }
                use std::io::{Read as _, Seek as _};
                let mut f = std::fs::File::open(&path)?;
                f.seek(std::io::SeekFrom::Start(offset))?;
                let mut chunk = String::new();
                f.read_to_string(&mut chunk)?;
                offset += chunk.len() as u64;
                partial.push_str(&chunk);
                while let Some(end) = partial.find('\n') {
                    let line: String = partial.drain(..=end).collect();
                    show(line.trim_end());
                }
            }
        }
    }
}

fn read_spec(path: &PathBuf) -> anyhow::Result<ServiceSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ServiceSpec::parse(&text).with_context(|| path.display().to_string())
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    match &args.command {
        RunCommand::Services(command) => services(&args.store.data_dir, command).await,
        RunCommand::Validate { specs } => {
            for s in specs {
                read_spec(s)?;
            }
            tracing::info!(count = specs.len(), "specs are valid");
            Ok(())
        }
        RunCommand::Deploy { specs, sql, bind } => {
            let project = args
                .project
                .clone()
                .context("give --project (or set GATEHOUSE_PROJECT)")?;
            let specs: Vec<ServiceSpec> = specs.iter().map(read_spec).collect::<Result<_, _>>()?;
            let master = args
                .store
                .master_key(crate::state::IfNoMasterKey::Generate)?;
            let store = args.store.open_store().await?;
            let iam = Iam::new(
                store.clone(),
                Arc::new(SystemClock),
                master.clone(),
                IamConfig {
                    public_url: args
                        .iam_url
                        .public_url
                        .clone()
                        .unwrap_or_else(|| IamConfig::default().public_url),
                    ..IamConfig::default()
                },
            )
            .await
            .context("IAM")?;
            let secrets = Some(
                Secrets::new(store, iam.clone(), master)
                    .await
                    .context("Secret Manager")?,
            );
            let runner = Runner::new(
                iam.clone(),
                secrets,
                RunConfig::new(
                    project,
                    args.region.clone(),
                    bind.clone(),
                    args.store.data_dir.clone(),
                ),
            );
            match runner.isolation().warning() {
                Some(w) => eprintln!("{w}"),
                None => eprintln!("{}", runner.isolation().summary()),
            }
            let control = gatehouse_run::admin::serve(runner.clone())
                .await
                .context("control socket")?;
            for file in sql {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let spec = gatehouse_run::SqlInstanceSpec::parse(&text)
                    .with_context(|| file.display().to_string())?;
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
            crate::iam_cmd::spawn_key_reloader(&iam);
            crate::shutdown_signal().await;
            runner.shutdown().await;
            control.abort();
            let _ = std::fs::remove_file(gatehouse_run::admin::socket_path(&args.store.data_dir));
            Ok(())
        }
    }
}
