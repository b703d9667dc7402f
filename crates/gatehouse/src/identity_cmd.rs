//! `gatehouse identity`: run the identity server on its own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::{Args, Subcommand};
use gatehouse_identity::{
    Clock, Identity, IdentityOptions, Mode, ProjectConfig, SmtpConfig, SystemClock,
};
use gatehouse_tokens::{PublicKey, SigningKey};
use secrecy::SecretString;
use tokio::net::TcpListener;

#[derive(Debug, Args)]
pub struct IdentityArgs {
    #[command(subcommand)]
    command: Option<IdentityCommand>,
    /// A project to serve, as `ID` or `ID:production` / `ID:development`. Repeatable; the first
    /// is the default project. Projects are in development mode unless told otherwise.
    #[arg(
        long = "project",
        required = true,
        env = "GATEHOUSE_PROJECT",
        value_delimiter = ','
    )]
    projects: Vec<String>,
    /// Register an API key for a project: `KEY=PROJECT`. Repeatable.
    #[arg(long = "api-key", env = "GATEHOUSE_API_KEYS", value_delimiter = ',')]
    api_keys: Vec<String>,
    /// Admin credential (`Authorization: Bearer <key>`) for production projects.
    #[arg(long, env = "GATEHOUSE_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9099", env = "GATEHOUSE_LISTEN")]
    listen: String,
    #[command(flatten)]
    store: crate::cli::StoreArgs,
    /// Base URL for links in e-mails and discovery documents (default: http://<listen address>).
    #[arg(long, env = "GATEHOUSE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Development projects only: issue unsigned (alg none) ID tokens for the Node Admin SDK.
    #[arg(long)]
    unsigned_id_tokens: bool,
    /// Trust a service account (JSON key file) to sign custom tokens. Repeatable.
    #[arg(
        long = "trust-service-account",
        env = "GATEHOUSE_TRUSTED_SERVICE_ACCOUNTS",
        value_delimiter = ','
    )]
    trusted_service_accounts: Vec<PathBuf>,
    /// Abuse limits.
    #[arg(long, value_enum, default_value = "default")]
    rate_limits: crate::cli::RateLimitsChoice,
    /// Email-enumeration protection for every project at start: `--email-privacy` turns it
    /// on, `--email-privacy=false` off. Default: on for production projects, off for
    /// development ones.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    email_privacy: Option<bool>,
    /// Domains the hosted sign-in page may return to (repeatable; default: localhost,
    /// <project>.firebaseapp.com, <project>.web.app). Settings changed through the config API
    /// and stored take precedence.
    #[arg(
        long = "authorized-domain",
        env = "GATEHOUSE_AUTHORIZED_DOMAINS",
        value_delimiter = ','
    )]
    authorized_domains: Vec<String>,
    /// Federated identity providers (Google, OpenID Connect): a YAML list, see docs/identity.md.
    #[arg(long, env = "GATEHOUSE_IDP_CONFIG")]
    idp_config: Option<PathBuf>,
    /// Trusted reverse-proxy hops in front of this server: the client address used for abuse
    /// limits is taken that many entries from the right of X-Forwarded-For (0: the peer address).
    #[arg(long, default_value_t = 0, env = "GATEHOUSE_TRUSTED_PROXY_HOPS")]
    trusted_proxy_hops: usize,
    /// Seconds a client has to send a request head (from connecting, or from the previous
    /// answer on a keep-alive connection: also the idle timeout), and then its body.
    #[arg(
        long,
        default_value_t = 30.0,
        env = "GATEHOUSE_IDENTITY_READ_TIMEOUT_SECS"
    )]
    read_timeout_secs: f64,
    /// How long account reads may be served from memory, in ms (0 = never). Bounds how stale a
    /// replica's view of another replica's writes can be.
    #[arg(long, default_value_t = 1000, env = "GATEHOUSE_ACCOUNT_CACHE_MS")]
    account_cache_ms: u64,
    /// Signing-key rotation period in seconds (at least 8). The published keys' `max-age` is
    /// an eighth of it (at most an hour): how long verifiers may keep a key that was revoked.
    #[arg(long, default_value_t = 21_600, env = "GATEHOUSE_KEY_ROTATION_SECS")]
    key_rotation_secs: i64,
    #[arg(long, env = "GATEHOUSE_SMTP_HOST")]
    smtp_host: Option<String>,
    #[arg(long, env = "GATEHOUSE_SMTP_PORT", default_value_t = 587)]
    smtp_port: u16,
    /// How the SMTP connection is secured.
    #[arg(
        long,
        env = "GATEHOUSE_SMTP_SECURITY",
        value_enum,
        default_value = "starttls"
    )]
    smtp_security: crate::cli::SmtpSecurity,
    #[arg(long, env = "GATEHOUSE_SMTP_USERNAME")]
    smtp_username: Option<String>,
    #[arg(long, env = "GATEHOUSE_SMTP_PASSWORD", hide_env_values = true)]
    smtp_password: Option<String>,
    #[arg(
        long,
        env = "GATEHOUSE_SMTP_FROM",
        default_value = "Gatehouse <noreply@localhost>"
    )]
    smtp_from: String,
}

#[derive(Debug, Subcommand)]
enum IdentityCommand {
    /// The token-signing keys on the database: list them, or revoke one early.
    ///
    /// Example: gatehouse identity --data-dir ./data signing-keys revoke 3f2a…
    #[command(name = "signing-keys", subcommand)]
    SigningKeys(SigningKeysCommand),
}

#[derive(Debug, Subcommand)]
enum SigningKeysCommand {
    /// Every stored key: kid, purpose, when it signs from and until, when it stops being
    /// published (epoch ms).
    ///
    /// Example: gatehouse identity --data-dir ./data signing-keys list
    List,
    /// Stop publishing a key now (a leaked key): running servers drop it within 5 s (their key
    /// reload), and verifiers within the keys' `max-age` after that. Tokens it signed stop
    /// verifying; if it was the signer, the next key signs (a new one is made if there is none).
    ///
    /// Example: gatehouse identity --data-dir ./data signing-keys revoke 3f2a…
    Revoke {
        /// The key's id (the `kid` of the tokens it signed).
        kid: String,
    },
}

impl IdentityArgs {
    /// Whether this runs the server (as opposed to a one-shot command).
    pub(crate) fn is_server(&self) -> bool {
        self.command.is_none()
    }
}

async fn signing_keys(args: &IdentityArgs, command: &SigningKeysCommand) -> anyhow::Result<()> {
    let store = args.store.open_store().await?;
    let now = SystemClock.now_ms();
    match command {
        SigningKeysCommand::List => {
            let keys: Vec<serde_json::Value> = store
                .all_signing_keys()
                .await?
                .into_iter()
                .map(|k| {
                    serde_json::json!({
                        "kid": k.kid,
                        "purpose": k.purpose,
                        "created_at": k.created_at,
                        "retire_at": k.retire_at,
                        "expires_at": k.expires_at,
                        "published": k.expires_at > now,
                    })
                })
                .collect();
            crate::iam_cmd::print(&serde_json::json!(keys));
        }
        SigningKeysCommand::Revoke { kid } => {
            if !store.revoke_signing_key(kid, now).await? {
                bail!("no published signing key {kid:?} (see `signing-keys list`)");
            }
            tracing::warn!(kid = %kid, "signing key revoked");
            crate::iam_cmd::print(&serde_json::json!({"revoked": kid, "at": now}));
        }
    }
    Ok(())
}

fn trusted_signers(paths: &[PathBuf]) -> anyhow::Result<HashMap<String, Vec<PublicKey>>> {
    let mut out: HashMap<String, Vec<PublicKey>> = HashMap::new();
    for path in paths {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let email = json["client_email"]
            .as_str()
            .context("service account file has no client_email")?;
        let kid = json["private_key_id"].as_str().unwrap_or_default();
        let pem = json["private_key"]
            .as_str()
            .context("service account file has no private_key")?;
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .context("private_key is not PEM")?;
        let key = SigningKey::from_pkcs8(kid.to_owned(), &der)
            .with_context(|| format!("{}: private_key", path.display()))?;
        out.entry(email.to_owned())
            .or_default()
            .push(key.public().clone());
    }
    Ok(out)
}

pub async fn run(args: IdentityArgs) -> anyhow::Result<()> {
    if let Some(IdentityCommand::SigningKeys(command)) = &args.command {
        return signing_keys(&args, command).await;
    }
    let started = std::time::Instant::now();
    let signers = trusted_signers(&args.trusted_service_accounts)?;
    let mut projects = Vec::new();
    for spec in &args.projects {
        let (id, mode) = spec.split_once(':').unwrap_or((spec, "development"));
        let mut p = match mode {
            "development" | "dev" => ProjectConfig::development(id),
            "production" | "prod" => ProjectConfig::production(id),
            other => bail!("unknown mode {other:?} for project {id} (development or production)"),
        };
        p.admin_key = args.admin_key.clone().map(SecretString::from);
        p.unsigned_id_tokens = args.unsigned_id_tokens && p.mode == Mode::Development;
        p.custom_token_signers = signers.clone();
        if let Some(on) = args.email_privacy {
            p.settings
                .email_privacy_config
                .enable_improved_email_privacy = on;
        }
        if !args.authorized_domains.is_empty() {
            p.settings.authorized_domains = Some(args.authorized_domains.clone());
        }
        projects.push(p);
    }
    for spec in &args.api_keys {
        let (key, project) = spec
            .split_once('=')
            .context("--api-key takes KEY=PROJECT")?;
        let p = projects
            .iter_mut()
            .find(|p| p.project_id == project)
            .with_context(|| format!("--api-key names unknown project {project}"))?;
        p.api_keys.push(key.to_owned());
    }
    if args.unsigned_id_tokens {
        tracing::warn!(
            "unsigned ID tokens are on for development projects: anyone can forge tokens they accept"
        );
    }
    let master = args
        .store
        .master_key(if projects.iter().any(|p| p.mode == Mode::Production) {
            crate::state::IfNoMasterKey::Refuse
        } else {
            crate::state::IfNoMasterKey::Generate
        })?;
    let store = args.store.open_store().await?;
    store.set_account_cache_ttl(Duration::from_millis(args.account_cache_ms));
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let smtp = match &args.smtp_host {
        Some(host) => Some(SmtpConfig {
            host: host.clone(),
            port: args.smtp_port,
            security: args.smtp_security.into(),
            username: args.smtp_username.clone(),
            password: args.smtp_password.clone().map(SecretString::from),
            from: args.smtp_from.clone(),
        }),
        None => None,
    };
    // IAM on the same database: service accounts with an admin role are admins, keys of the
    // project's service accounts sign custom tokens.
    let iam = gatehouse_iam::Iam::new(
        store.clone(),
        Arc::new(SystemClock),
        master.clone(),
        gatehouse_iam::IamConfig::default(),
    )
    .await
    .context("IAM")?;
    if let Some(path) = &args.idp_config {
        let secrets = gatehouse_secrets::Secrets::new(store.clone(), iam.clone(), master.clone())
            .await
            .context("Secret Manager")?;
        crate::idp_config::load(path, &mut projects, Some(&secrets)).await?;
    }
    let identity = Identity::new(IdentityOptions {
        store,
        clock: Arc::new(SystemClock),
        projects,
        rate_limits: args.rate_limits.into(),
        smtp,
        public_url: args
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}")),
        key_rotation_secs: args.key_rotation_secs,
        master_key: master,
        authority: Some(Arc::new(crate::authority::IamAuthority(iam))),
    })
    .await
    .context("the identity server")?;
    tokio::spawn(identity.clone().maintain());
    tracing::info!(addr = %addr, project = identity.default_project(), ready_ms = started.elapsed().as_millis() as u64, "listening");
    let http = gatehouse_identity_http::HttpOptions {
        proxy_hops: args.trusted_proxy_hops,
        read_timeout: crate::cli::seconds("--read-timeout-secs", args.read_timeout_secs)?,
    };
    gatehouse_identity_http::serve_with(identity, http, listener, crate::shutdown_signal()).await?;
    Ok(())
}
