//! The `gatehouse` binary: one executable, one subcommand per component, and `up`, which runs
//! them all from one manifest. Owns the command line (flags shared by every subcommand are in
//! `cli`), where logs go, and wiring the components together. Must not: hold the components'
//! logic (that is in their crates) nor define their wire formats (the CLI prints the HTTP
//! crates' JSON).

#![forbid(unsafe_code)]

mod auth_cmd;
mod authority;
mod cli;
mod gateway_cmd;
mod iam_cmd;
mod identity_cmd;
mod idp_config;
mod run_cmd;
mod secrets_cmd;
mod state;
mod up;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Google's secure Cloud Run architecture, runnable anywhere"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "GATEHOUSE_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    log_format: cli::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The end-user identity server (Firebase Auth / Identity Platform compatible).
    ///
    /// Example: gatehouse identity --project demo-project --listen 127.0.0.1:9099 --authorized-domain localhost
    #[command(subcommand_negates_reqs = true)]
    Identity(Box<identity_cmd::IdentityArgs>),
    /// The API gateway (Google API Gateway / ESPv2 compatible OpenAPI configs).
    ///
    /// Example: gatehouse gateway --config openapi.yaml --listen 127.0.0.1:8080 --service-account-key apigw-sa.json
    Gateway(gateway_cmd::GatewayArgs),
    /// Service accounts, keys, tokens, policies and metadata servers (Google IAM compatible).
    ///
    /// Example: gatehouse iam --data-dir ./data service-accounts create apigw-sa --project demo-project
    Iam(iam_cmd::IamArgs),
    /// Secret Manager (v1 REST API, encrypted at rest, IAM-guarded) and its CLI.
    ///
    /// Example: gatehouse secrets --master-key-file master.key --project demo-project list
    Secrets(secrets_cmd::SecretsArgs),
    /// Run services like Cloud Run (instances, invoker-checking ingress, revisions).
    ///
    /// Example: gatehouse run --project demo-project deploy --spec hello.yaml
    Run(run_cmd::RunArgs),
    /// The whole architecture from one manifest (default: the demo of both seeds).
    ///
    /// Example: gatehouse up -f examples/demo/gatehouse.yaml --dry-run
    Up(up::UpArgs),
    /// Stop the `gatehouse up` serving a data directory.
    ///
    /// Example: gatehouse down --data-dir ./data
    Down(up::DownArgs),
    /// Users, sign-in and custom tokens (the seeds' manual identity steps).
    ///
    /// Example: gatehouse auth sign-in --email ada@example.com --password correct-horse-battery
    Auth(auth_cmd::AuthArgs),
    /// The sample applications, as services run them.
    ///
    /// Example: PORT=8082 gatehouse apps hello
    #[command(subcommand)]
    Apps(AppsCommand),
}

#[derive(Debug, Subcommand)]
enum AppsCommand {
    /// CATS v DOGS, the idp-sql sample (configured by environment; see docs/vote.md).
    ///
    /// Example: DATABASE_URL=sqlite://votes.db GOOGLE_CLOUD_PROJECT=demo-project gatehouse apps vote
    Vote,
    /// The second seed's hello backend (listens on $PORT, default 8080).
    ///
    /// Example: PORT=8082 gatehouse apps hello
    Hello,
}

/// Where logs go: servers log to stdout (where supervisors and tests read the "listening"
/// line); one-shot commands log to stderr, so their stdout is exactly their result; `up` logs to
/// `<data-dir>/logs/` (its terminal is the person's), and to stderr too with `--verbose` or
/// `GATEHOUSE_LOG`.
fn log_writer(command: &Command) -> tracing_subscriber::fmt::writer::BoxMakeWriter {
    use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt as _};
    match command {
        Command::Identity(a) if a.is_server() => BoxMakeWriter::new(std::io::stdout),
        Command::Gateway(_) => BoxMakeWriter::new(std::io::stdout),
        Command::Iam(a) if a.is_server() => BoxMakeWriter::new(std::io::stdout),
        Command::Secrets(a) if a.is_server() => BoxMakeWriter::new(std::io::stdout),
        Command::Run(a) if a.is_server() => BoxMakeWriter::new(std::io::stdout),
        Command::Up(a) if !a.dry_run => {
            let terminal = a.verbose || std::env::var_os("GATEHOUSE_LOG").is_some();
            match open_log(&up::log_file(&a.store.data_dir)) {
                Ok(file) if terminal => {
                    BoxMakeWriter::new(std::sync::Mutex::new(file).and(std::io::stderr))
                }
                Ok(file) => BoxMakeWriter::new(std::sync::Mutex::new(file)),
                Err(e) => {
                    use std::io::Write as _;
                    let _ = writeln!(std::io::stderr(), "Warning: logging to stderr: {e:#}");
                    BoxMakeWriter::new(std::io::stderr)
                }
            }
        }
        _ => BoxMakeWriter::new(std::io::stderr),
    }
}

/// Opens `up`'s log file for appending, in the private data directory.
fn open_log(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use anyhow::Context as _;
    let dir = path.parent().context("the log directory")?;
    if let Some(data) = dir.parent() {
        state::private_dir(data)?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn init_tracing(format: cli::LogFormat, writer: tracing_subscriber::fmt::writer::BoxMakeWriter) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(writer);
    match format {
        cli::LogFormat::Text => builder.init(),
        cli::LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format, log_writer(&cli.command));
    // Servers hold a descriptor per connection: the soft limit (often 1024) is raised to the
    // hard one, so it is the system's limit that counts.
    match gatehouse_gateway::raise_open_files_limit() {
        Ok((before, after)) if before != after => {
            tracing::debug!(before, after, "open files limit raised");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
    let result = match cli.command {
        Command::Identity(args) => identity_cmd::run(*args).await,
        Command::Gateway(args) => gateway_cmd::run(args).await,
        Command::Iam(args) => iam_cmd::run(args).await,
        Command::Secrets(args) => secrets_cmd::run(args).await,
        Command::Run(args) => run_cmd::run(args).await,
        Command::Up(args) => up::up(args).await,
        Command::Auth(args) => auth_cmd::run(args).await,
        Command::Down(args) => up::down(args).await,
        Command::Apps(AppsCommand::Vote) => {
            return gatehouse_vote::run_from_env().await;
        }
        Command::Apps(AppsCommand::Hello) => {
            let port = std::env::var("PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(8080);
            gatehouse_hello::serve(port).await.map_err(Into::into)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The error and its causes, without a backtrace: these are the user's to read.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Writes a secret file readable only by its owner; with `create_new` an existing file is
/// never overwritten.
pub(crate) fn write_private(
    path: &std::path::Path,
    text: &str,
    create_new: bool,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

/// Rows as a left-aligned text table (the first row is the header).
pub(crate) fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    text.pop();
    text
}

/// A one-shot command's result (or `up`'s report) on stdout.
pub(crate) fn say(text: &str) {
    use std::io::Write as _;
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{text}");
    let _ = o.flush();
}
