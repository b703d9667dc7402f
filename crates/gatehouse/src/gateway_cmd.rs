//! `gatehouse gateway`: run the API gateway, or validate a config.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use clap::{Args, Subcommand};
use gatehouse_gateway::identity::TokenSource;
use gatehouse_gateway::{Gateway, GatewayOptions};
use tokio::net::TcpListener;

#[derive(Debug, Args)]
pub struct GatewayArgs {
    #[command(subcommand)]
    command: Option<GatewayCommand>,
    /// The OpenAPI 2.0 document (YAML or JSON).
    #[arg(long, env = "GATEHOUSE_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8080", env = "GATEHOUSE_GATEWAY_LISTEN")]
    listen: String,
    /// Where operations without x-google-backend go.
    #[arg(long, default_value = "http://127.0.0.1:8082")]
    backend: String,
    /// Service-account key file: the gateway's identity towards backends (JWT-bearer grant).
    #[arg(long, env = "GATEHOUSE_GATEWAY_SERVICE_ACCOUNT_KEY")]
    service_account_key: Option<PathBuf>,
    /// Valid API keys, one per line (without it, any present key is accepted).
    #[arg(long)]
    api_keys: Option<PathBuf>,
    /// Admin listener: /metrics, /healthz, config versions.
    #[arg(long)]
    admin_listen: Option<String>,
    /// Threads serving connections (each connection stays on one); default: one per core,
    /// leaving one core free on machines of up to four cores (one thread on two cores).
    #[arg(long, env = "GATEHOUSE_GATEWAY_THREADS")]
    threads: Option<usize>,
    /// Watch the config file and apply it once it has not changed for this many seconds
    /// (0: not watched; SIGHUP and the admin API still reload).
    #[arg(long, default_value_t = 2, env = "GATEHOUSE_GATEWAY_WATCH_SECS")]
    watch_secs: u64,
    /// How long a provider's JWKS is used before it is fetched again, in seconds (ESPv2's
    /// `--jwks_cache_duration_in_s`); a shorter `Cache-Control: max-age` from the issuer wins.
    /// A key the issuer stops publishing stops verifying within this time.
    #[arg(
        long,
        default_value_t = gatehouse_gateway::JWKS_CACHE_DURATION_SECS,
        value_parser = clap::value_parser!(u64).range(1..=86_400),
        env = "GATEHOUSE_GATEWAY_JWKS_CACHE_DURATION_SECS"
    )]
    jwks_cache_duration_secs: u64,
    /// While a provider's JWKS cannot be fetched (the issuer is down), its last keys keep
    /// verifying for this many seconds past the cache duration; then its tokens are refused
    /// (401 "Jwks remote fetch is failed") until a fetch succeeds.
    #[arg(
        long,
        default_value_t = gatehouse_gateway::JWKS_MAX_STALE_SECS,
        env = "GATEHOUSE_GATEWAY_JWKS_MAX_STALE_SECS"
    )]
    jwks_max_stale_secs: u64,
    /// Seconds a client has to send a whole request head once it has started (then 408 and
    /// the connection closes).
    #[arg(
        long,
        default_value_t = 30.0,
        env = "GATEHOUSE_GATEWAY_HEAD_TIMEOUT_SECS"
    )]
    head_timeout_secs: f64,
    /// Seconds a keep-alive connection may wait for its next request.
    #[arg(
        long,
        default_value_t = 300.0,
        env = "GATEHOUSE_GATEWAY_IDLE_TIMEOUT_SECS"
    )]
    idle_timeout_secs: f64,
    /// Largest request body in bytes (larger: 413).
    #[arg(long, default_value_t = 32 * 1024 * 1024, env = "GATEHOUSE_GATEWAY_MAX_REQUEST_BODY")]
    max_request_body: u64,
}

#[derive(Debug, Subcommand)]
enum GatewayCommand {
    /// Check a config and report every problem with its location.
    ///
    /// Example: gatehouse gateway validate openapi.yaml
    Validate {
        /// The OpenAPI document.
        file: PathBuf,
    },
}

fn validate(file: &PathBuf) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let problems = gatehouse_gateway::validate(&text);
    if problems.is_empty() {
        tracing::info!(file = %file.display(), "config is valid");
        return Ok(());
    }
    let report: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {p}", file.display()))
        .collect();
    bail!("{} problem(s):\n{}", problems.len(), report.join("\n"))
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    if let Some(GatewayCommand::Validate { file }) = &args.command {
        return validate(file);
    }
    let path = args.config.clone().context("--config is required")?;
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let api_keys = match &args.api_keys {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect::<HashSet<_>>(),
        ),
        None => None,
    };
    let source = match (
        &args.service_account_key,
        std::env::var("GCE_METADATA_HOST").ok(),
    ) {
        (Some(key), _) => Some(TokenSource::from_key_file(key)?),
        (None, Some(host)) if !host.is_empty() => Some(TokenSource::Metadata { host }),
        _ => None,
    };
    let options = GatewayOptions {
        local_backend: args.backend.clone(),
        api_keys,
        threads: args.threads.filter(|n| *n > 0),
        jwks: gatehouse_gateway::CacheOptions {
            max_ttl: std::time::Duration::from_secs(args.jwks_cache_duration_secs),
            max_stale: std::time::Duration::from_secs(args.jwks_max_stale_secs),
            ..gatehouse_gateway::CacheOptions::default()
        },
        limits: gatehouse_gateway::ConnectionLimits {
            head_timeout: crate::cli::seconds("--head-timeout-secs", args.head_timeout_secs)?,
            idle_timeout: crate::cli::seconds("--idle-timeout-secs", args.idle_timeout_secs)?,
            max_request_body: args.max_request_body,
        },
    };
    let gateway = Gateway::new(&text, Some(path.clone()), options, source)
        .await
        .with_context(|| format!("loading {}", path.display()))?;

    // SIGHUP: re-read the config; a bad file keeps the current one. Like the file watcher and
    // the admin API, it goes through the gateway's one reload task. The handler is installed
    // before "listening" is logged: a SIGHUP that arrives first must not kill the process.
    let on_hup = gateway.clone();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match on_hup.reload().await {
                Ok(v) => tracing::info!(version = v, "reloaded config"),
                Err(e) => {
                    let e = anyhow::Error::from(e);
                    tracing::error!(
                        error = format!("{e:#}"),
                        "config reload refused; keeping the current config"
                    )
                }
            }
        }
    });

    if args.watch_secs > 0 {
        tokio::spawn(
            gateway
                .clone()
                .watch_config(std::time::Duration::from_secs(args.watch_secs)),
        );
    }

    if let Some(admin) = &args.admin_listen {
        let listener = TcpListener::bind(admin)
            .await
            .with_context(|| format!("binding {admin}"))?;
        tracing::info!(addr = %listener.local_addr()?, "admin listening");
        let app = admin_router(gateway.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }

    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, version = gateway.active().version, "listening");
    gatehouse_gateway::serve(gateway, listener, crate::shutdown_signal()).await?;
    Ok(())
}

fn admin_router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(g): State<Arc<Gateway>>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        gatehouse_gateway::Metrics::CONTENT_TYPE,
                    )],
                    g.metrics().render(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/configs", get(versions))
        .route("/configs/reload", post(reload))
        .route("/configs/{version}/activate", post(activate))
        .with_state(gateway)
}

async fn versions(State(g): State<Arc<Gateway>>) -> impl IntoResponse {
    let (list, active) = g.versions();
    let reloads = g.reload_status().borrow().clone();
    axum::Json(serde_json::json!({
        "versions": list,
        "active": active,
        "reloads": {"attempts": reloads.attempts, "last_error": reloads.last_error},
    }))
}

async fn reload(State(g): State<Arc<Gateway>>) -> impl IntoResponse {
    match g.reload().await {
        Ok(v) => (StatusCode::OK, axum::Json(serde_json::json!({"active": v}))),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": format!("{:#}", anyhow::Error::from(e))})),
        ),
    }
}

async fn activate(State(g): State<Arc<Gateway>>, Path(version): Path<u64>) -> impl IntoResponse {
    match g.restore(version).await {
        Some(v) => (StatusCode::OK, axum::Json(serde_json::json!({"active": v}))),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": "no such version"})),
        ),
    }
}
