//! `gatehouse identity`: run the identity server on its own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::Args;
use gatehouse_identity::{
    Identity, IdentityOptions, Mode, ProjectConfig, RateLimits, SmtpConfig, SmtpSecurity,
    SystemClock,
};
use gatehouse_tokens::{PublicKey, SigningKey};
use secrecy::SecretString;
use tokio::net::TcpListener;

#[derive(Debug, Args)]
pub struct IdentityArgs {
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
    /// Where the embedded SQLite database lives (when no --database-url is given).
    #[arg(long, default_value = "./data", env = "GATEHOUSE_DATA_DIR")]
    data_dir: PathBuf,
    /// `postgres://...` or `sqlite://...`; defaults to `<data-dir>/gatehouse.db`.
    #[arg(long, env = "GATEHOUSE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
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
    /// Abuse limits: `default` or `off` (benchmarks only).
    #[arg(long, default_value = "default")]
    rate_limits: String,
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
    /// The master key (32 bytes, base64) that signing keys and secret data keys are wrapped
    /// with. Default: `<data-dir>/master.key`, generated on first use unless a project is in
    /// production mode.
    #[arg(
        long = "master-key-file",
        alias = "secrets-master-key-file",
        env = "GATEHOUSE_SECRETS_MASTER_KEY_FILE"
    )]
    master_key_file: Option<PathBuf>,
    /// Trusted reverse-proxy hops in front of this server: the client address used for abuse
    /// limits is taken that many entries from the right of X-Forwarded-For (0: the peer address).
    #[arg(long, default_value_t = 0, env = "GATEHOUSE_TRUSTED_PROXY_HOPS")]
    trusted_proxy_hops: usize,
    /// How long account reads may be served from memory, in ms (0 = never). Bounds how stale a
    /// replica's view of another replica's writes can be.
    #[arg(long, default_value_t = 1000, env = "GATEHOUSE_ACCOUNT_CACHE_MS")]
    account_cache_ms: u64,
    /// Signing-key rotation period in seconds.
    #[arg(long, default_value_t = 21_600)]
    key_rotation_secs: i64,
    #[arg(long, env = "GATEHOUSE_SMTP_HOST")]
    smtp_host: Option<String>,
    #[arg(long, env = "GATEHOUSE_SMTP_PORT", default_value_t = 587)]
    smtp_port: u16,
    /// `none`, `starttls` or `tls`.
    #[arg(long, env = "GATEHOUSE_SMTP_SECURITY", default_value = "starttls")]
    smtp_security: String,
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
        let key =
            SigningKey::from_pkcs8(kid.to_owned(), &der).map_err(|e| anyhow::anyhow!("{e}"))?;
        out.entry(email.to_owned())
            .or_default()
            .push(key.public().clone());
    }
    Ok(out)
}

pub async fn run(args: IdentityArgs) -> anyhow::Result<()> {
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
    let master = crate::state::master_key(
        args.master_key_file.as_deref(),
        &args.data_dir,
        if projects.iter().any(|p| p.mode == Mode::Production) {
            crate::state::IfNoMasterKey::Refuse
        } else {
            crate::state::IfNoMasterKey::Generate
        },
    )?;
    let store = crate::open_store(&args.data_dir, args.database_url.as_deref()).await?;
    store.set_account_cache_ttl(Duration::from_millis(args.account_cache_ms));
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let smtp = match &args.smtp_host {
        Some(host) => Some(SmtpConfig {
            host: host.clone(),
            port: args.smtp_port,
            security: match args.smtp_security.as_str() {
                "none" => SmtpSecurity::None,
                "tls" => SmtpSecurity::Tls,
                "starttls" => SmtpSecurity::Starttls,
                other => bail!("unknown --smtp-security {other:?}"),
            },
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
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(path) = &args.idp_config {
        let secrets = gatehouse_secrets::Secrets::new(store.clone(), iam.clone(), master.clone())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        crate::idp_config::load(path, &mut projects, Some(&secrets)).await?;
    }
    let identity = Identity::new(IdentityOptions {
        store,
        clock: Arc::new(SystemClock),
        projects,
        rate_limits: if args.rate_limits == "off" {
            RateLimits::off()
        } else {
            RateLimits::default()
        },
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
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let housekeeping = identity.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = housekeeping.housekeeping().await {
                tracing::warn!(error = %e, "housekeeping failed");
            }
        }
    });
    tracing::info!(addr = %addr, project = identity.default_project(), ready_ms = started.elapsed().as_millis() as u64, "listening");
    let http = gatehouse_identity_http::HttpOptions {
        proxy_hops: args.trusted_proxy_hops,
    };
    gatehouse_identity_http::serve_with(identity, http, listener, crate::shutdown_signal()).await?;
    Ok(())
}
