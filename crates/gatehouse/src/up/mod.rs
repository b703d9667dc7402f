//! `gatehouse up`: the whole architecture from one manifest. It checks the manifest, plans
//! against what the last run applied (create / update / delete, as `terraform plan` does),
//! applies the persistent part in dependency order (service accounts, secrets, bindings,
//! users), then starts every component in this process — identity server, IAM and Secret
//! Manager, managed PostgreSQL, services, gateways — prints their URLs and runs until Ctrl-C,
//! SIGTERM or `gatehouse down`.

pub mod manifest;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::response::IntoResponse as _;
use clap::Args;
use gatehouse_iam::{Iam, IamConfig, Principal};
use gatehouse_identity::{
    Caller, Identity, IdentityOptions, ProjectConfig, RateLimits, SignUpRequest, SystemClock,
};
use gatehouse_run::{RunConfig, Runner};
use gatehouse_secrets::{NewPayload, Secrets};
use secrecy::SecretString;
use sha2::Digest as _;
use tokio::net::TcpListener;

use manifest::{Manifest, Mode, fill};

/// The demo: both seeds on one machine.
const DEMO_MANIFEST: &str = include_str!("../../../../examples/demo/gatehouse.yaml");
const DEMO_OPENAPI: &str = include_str!("../../../../examples/demo/openapi.yaml");

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The manifest (default: the built-in demo, examples/demo/gatehouse.yaml).
    #[arg(long = "file", short = 'f')]
    file: Option<PathBuf>,
    /// Print the plan and stop.
    #[arg(long)]
    dry_run: bool,
    /// Where state lives (SQLite, managed PostgreSQL data, logs, the control socket).
    #[arg(long, default_value = "./data", env = "GATEHOUSE_DATA_DIR")]
    data_dir: PathBuf,
    /// `postgres://...`: keep state in PostgreSQL instead of SQLite.
    #[arg(long, env = "GATEHOUSE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The master key that signing keys and secret data keys are wrapped with (required in
    /// production mode; development generates `<data-dir>/master.key`).
    #[arg(long, env = "GATEHOUSE_SECRETS_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// `json`: the plan, the applied changes and the URLs as JSON lines (for scripts).
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[arg(long, default_value = "./data", env = "GATEHOUSE_DATA_DIR")]
    data_dir: PathBuf,
}

/// `gatehouse down`: asks the `up` serving this data directory to stop, and waits.
pub async fn down(args: DownArgs) -> anyhow::Result<()> {
    let (status, _) = gatehouse_run::admin::request(&args.data_dir, "POST", "/v1/shutdown").await?;
    if status != 200 {
        bail!("the running gatehouse refused to stop ({status})");
    }
    let socket = gatehouse_run::admin::socket_path(&args.data_dir);
    let until = Instant::now() + Duration::from_secs(60);
    while socket.exists() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::info!("stopped");
    Ok(())
}

fn digest(parts: &[&str]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the manifest declares, as `(kind, name) → digest`.
fn desired(m: &Manifest) -> anyhow::Result<BTreeMap<(String, String), String>> {
    let mut out = BTreeMap::new();
    let mut put = |kind: &str, name: &str, d: String| {
        out.insert((kind.to_owned(), name.to_owned()), d);
    };
    put(
        "identity",
        &m.project.id,
        digest(&[
            &format!("{:?}", m.identity.api_keys),
            &format!("{:?}", m.identity.authorized_domains),
            &serde_json::to_string(&m.identity.providers)?,
        ]),
    );
    for a in &m.service_accounts {
        put(
            "service_account",
            &m.account_email(&a.name),
            digest(&[a.display_name.as_deref().unwrap_or("")]),
        );
    }
    for s in &m.secrets {
        let source = match (&s.from_file, &s.from_env, &s.value, &s.json, s.generate) {
            (Some(f), ..) => format!(
                "file:{}",
                std::fs::read_to_string(m.path(f))
                    .map(|t| digest(&[&t]))
                    .unwrap_or_default()
            ),
            (_, Some(v), ..) => format!(
                "env:{v}:{}",
                std::env::var(v).map(|t| digest(&[&t])).unwrap_or_default()
            ),
            (_, _, Some(v), ..) => format!("value:{}", digest(&[v])),
            (_, _, _, Some(j), _) => format!("json:{}", digest(&[&j.to_string()])),
            (.., Some(n)) => format!("generate:{n}"),
            _ => String::new(),
        };
        put("secret", &s.name, digest(&[&source]));
    }
    for b in &m.bindings {
        put(
            "binding",
            &format!(
                "{} {} {}",
                m.resource_name(&b.resource),
                b.role,
                m.member(&b.member)
            ),
            "-".into(),
        );
    }
    for u in &m.identity.users {
        put(
            "user",
            &u.email,
            digest(&[u.display_name.as_deref().unwrap_or("")]),
        );
    }
    for q in &m.sql_instances {
        put("sql_instance", &q.name, digest(&[&format!("{q:?}")]));
    }
    for s in &m.services {
        put("service", &s.name, digest(&[&format!("{s:?}")]));
    }
    for a in &m.apis {
        let text = std::fs::read_to_string(m.path(&a.openapi)).unwrap_or_default();
        put("api", &a.name, digest(&[&text]));
    }
    for g in &m.gateways {
        put(
            "gateway",
            &g.name,
            digest(&[&g.api, &g.service_account, &format!("{:?}", g.port)]),
        );
    }
    Ok(out)
}

/// One line of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create,
    Update,
    Delete,
}

/// Compares the manifest with what was applied.
pub fn plan(
    want: &BTreeMap<(String, String), String>,
    have: &[(String, String, String)],
) -> Vec<(Change, String, String)> {
    let have: BTreeMap<(String, String), String> = have
        .iter()
        .map(|(k, n, d)| ((k.clone(), n.clone()), d.clone()))
        .collect();
    let mut out = Vec::new();
    for ((kind, name), d) in want {
        match have.get(&(kind.clone(), name.clone())) {
            None => out.push((Change::Create, kind.clone(), name.clone())),
            Some(old) if old != d => out.push((Change::Update, kind.clone(), name.clone())),
            Some(_) => {}
        }
    }
    for (kind, name) in have.keys() {
        if !want.contains_key(&(kind.clone(), name.clone())) {
            out.push((Change::Delete, kind.clone(), name.clone()));
        }
    }
    out
}

fn print_plan(changes: &[(Change, String, String)]) {
    if changes.is_empty() {
        crate::say("Plan: no changes. The manifest matches what is applied.");
        return;
    }
    let mut lines = vec!["Plan:".to_owned()];
    let (mut c, mut u, mut d) = (0, 0, 0);
    for (change, kind, name) in changes {
        let sign = match change {
            Change::Create => {
                c += 1;
                "+ create"
            }
            Change::Update => {
                u += 1;
                "~ update"
            }
            Change::Delete => {
                d += 1;
                "- delete"
            }
        };
        lines.push(format!("  {sign} {kind} {name}"));
    }
    lines.push(format!("{c} to create, {u} to update, {d} to delete."));
    crate::say(&lines.join("\n"));
}

fn random_password(n: usize) -> String {
    use rand::Rng as _;
    const A: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(A[rng.random_range(0..A.len())]))
        .collect()
}

/// The manifest file: the given one, or the demo's copy in the data directory.
fn manifest_path(args: &UpArgs) -> PathBuf {
    args.file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("demo").join("gatehouse.yaml"))
}

/// Reads the manifest: the given file, or the demo written into the data directory.
fn load(args: &UpArgs) -> anyhow::Result<Manifest> {
    match &args.file {
        Some(f) => Ok(Manifest::load(f)?),
        None => {
            let dir = args.data_dir.join("demo");
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("gatehouse.yaml"), DEMO_MANIFEST)?;
            if std::fs::read_to_string(dir.join("openapi.yaml"))
                .ok()
                .as_deref()
                != Some(DEMO_OPENAPI)
            {
                std::fs::write(dir.join("openapi.yaml"), DEMO_OPENAPI)?;
            }
            Ok(Manifest::load(&dir.join("gatehouse.yaml"))?)
        }
    }
}

/// Whether the PostgreSQL server binaries are installed.
fn postgres_installed() -> bool {
    let dir =
        std::env::var("GATEHOUSE_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    Path::new(&dir).join("initdb").is_file() && Path::new(&dir).join("postgres").is_file()
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let m = load(&args)?;
    // Another `up` serves this data directory: it applies the changes itself.
    let socket = gatehouse_run::admin::socket_path(&args.data_dir);
    if !args.dry_run && socket.exists() && tokio::net::UnixStream::connect(&socket).await.is_ok() {
        let path = std::fs::canonicalize(manifest_path(&args))?;
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("manifest", &path.display().to_string())
            .finish();
        let (status, v) =
            gatehouse_run::admin::request(&args.data_dir, "POST", &format!("/v1/apply?{query}"))
                .await?;
        if status != 200 {
            bail!(
                "{}",
                v["error"]["message"]
                    .as_str()
                    .unwrap_or("the running gatehouse refused the changes")
            );
        }
        let report: Vec<&str> = v["applied"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str())
            .collect();
        if args.output == Output::Json {
            crate::say(&serde_json::json!({"applied": report}).to_string());
        } else if report.is_empty() {
            crate::say("Applied to the running gatehouse: no changes.");
        } else {
            crate::say(&format!(
                "Applied to the running gatehouse:\n  {}",
                report.join("\n  ")
            ));
        }
        return Ok(());
    }
    crate::state::private_dir(&args.data_dir)?;
    let store = crate::open_store(&args.data_dir, args.database_url.as_deref()).await?;
    let want = desired(&m)?;
    let changes = plan(&want, &store.up_state().await?);
    if args.output == Output::Json {
        let list: Vec<serde_json::Value> = changes
            .iter()
            .map(|(c, kind, name)| {
                serde_json::json!({"change": format!("{c:?}").to_lowercase(), "kind": kind, "name": name})
            })
            .collect();
        crate::say(&serde_json::json!({"plan": list}).to_string());
    } else {
        print_plan(&changes);
    }
    if args.dry_run {
        return Ok(());
    }
    let project = m.project.id.clone();
    let host = m.project.host.clone();
    let prod = m.project.mode == Mode::Production;

    // Listeners first: their URLs fill ${...} references.
    let identity_listener = TcpListener::bind((host.as_str(), m.identity.port.unwrap_or(9099)))
        .await
        .with_context(|| {
            format!(
                "binding the identity server on {host}:{}",
                m.identity.port.unwrap_or(9099)
            )
        })?;
    let identity_url = format!("http://{}", identity_listener.local_addr()?);
    let iam_listener = TcpListener::bind((host.as_str(), 0)).await?;
    let iam_url = format!("http://{}", iam_listener.local_addr()?);
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    values.insert("project.id".into(), project.clone());
    values.insert("project.region".into(), m.project.region.clone());
    values.insert("identity.url".into(), identity_url.clone());
    values.insert("iam.url".into(), iam_url.clone());
    if let Some(k) = m.identity.api_keys.first() {
        values.insert("identity.api_key".into(), k.clone());
    }
    for q in &m.sql_instances {
        values.insert(
            format!("sql.{}.connection_name", q.name),
            format!("{project}:{}:{}", m.project.region, q.name),
        );
    }
    for a in &m.service_accounts {
        values.insert(
            format!("accounts.{}.email", a.name),
            m.account_email(&a.name),
        );
    }

    // IAM and Secret Manager over the same store, under one master key.
    let key = crate::state::master_key(
        args.master_key_file.as_deref(),
        &args.data_dir,
        if prod {
            crate::state::IfNoMasterKey::Refuse
        } else {
            crate::state::IfNoMasterKey::Generate
        },
    )?;
    let iam = Iam::new(
        store.clone(),
        Arc::new(SystemClock),
        key.clone(),
        IamConfig {
            public_url: iam_url.clone(),
            ..IamConfig::default()
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let secrets = Secrets::new(store.clone(), iam.clone(), key.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // Apply: accounts, secrets, bindings.
    apply_persistent(&m, &iam, &secrets, &store, &mut values, &want).await?;
    let local = Principal::Local;

    // The identity server.
    let mut pc = if prod {
        ProjectConfig::production(&project)
    } else {
        ProjectConfig::development(&project)
    };
    pc.api_keys = m.identity.api_keys.clone();
    pc.settings.authorized_domains = m.identity.authorized_domains.clone();
    let mut projects = vec![pc];
    crate::idp_config::load_values(
        &m.identity.providers,
        "identity.providers",
        &mut projects,
        Some(&secrets),
    )
    .await?;
    let smtp = match &m.identity.smtp {
        Some(s) => {
            let password = match &s.password_secret {
                Some(r) => {
                    let a = secrets
                        .resolve_for(&local, &project, r)
                        .await
                        .map_err(|e| anyhow::anyhow!("identity.smtp.password_secret: {e}"))?;
                    Some(SecretString::from(
                        String::from_utf8_lossy(&a.data).trim_end().to_owned(),
                    ))
                }
                None => None,
            };
            Some(gatehouse_identity::SmtpConfig {
                host: s.host.clone(),
                port: s.port,
                security: match s.security.as_str() {
                    "none" => gatehouse_identity::SmtpSecurity::None,
                    "tls" => gatehouse_identity::SmtpSecurity::Tls,
                    _ => gatehouse_identity::SmtpSecurity::Starttls,
                },
                username: s.username.clone(),
                password,
                from: s.from.clone(),
            })
        }
        None => None,
    };
    let identity = Identity::new(IdentityOptions {
        store: store.clone(),
        clock: Arc::new(SystemClock),
        projects,
        rate_limits: RateLimits::default(),
        smtp,
        public_url: identity_url.clone(),
        key_rotation_secs: 21_600,
        master_key: key,
        authority: Some(Arc::new(crate::authority::IamAuthority(iam.clone()))),
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let caller = Caller {
        project: identity.project(&project).context("the identity project")?,
        privileged: true,
        ip: std::net::IpAddr::from([127, 0, 0, 1]),
    };
    for u in &m.identity.users {
        let password = match (&u.password, &u.password_secret) {
            (Some(p), _) => p.clone(),
            (_, Some(r)) => {
                let a = secrets
                    .resolve_for(&local, &project, r)
                    .await
                    .map_err(|e| anyhow::anyhow!("identity.users {}: {e}", u.email))?;
                String::from_utf8_lossy(&a.data).trim_end().to_owned()
            }
            _ => continue,
        };
        let req = SignUpRequest {
            email: Some(u.email.clone()),
            password: Some(password),
            display_name: u.display_name.clone(),
            ..SignUpRequest::default()
        };
        match identity.sign_up(&caller, req).await {
            Ok(_) => {}
            Err(gatehouse_identity::Error::Code {
                code: "EMAIL_EXISTS",
                ..
            }) => {}
            Err(e) => bail!("identity.users {}: {e}", u.email),
        }
    }
    let (stop_identity, identity_stopped) = tokio::sync::oneshot::channel::<()>();
    let identity_task = tokio::spawn(gatehouse_identity_http::serve(
        identity.clone(),
        identity_listener,
        async {
            let _ = identity_stopped.await;
        },
    ));
    let iam_app = crate::secrets_cmd::iam_and_secrets_app(secrets.clone(), iam.clone());
    let iam_task = tokio::spawn(async move {
        let _ = axum::serve(iam_listener, iam_app).await;
    });

    // The runner: SQL instances, then services.
    let runner = Runner::new(
        iam.clone(),
        Some(secrets.clone()),
        RunConfig {
            project: project.clone(),
            region: m.project.region.clone(),
            bind_host: host.clone(),
            data_root: args.data_dir.clone(),
            socket_root: args.data_dir.join("cloudsql"),
            isolation: gatehouse_run::IsolationMode::Auto,
            // Services reach the identity and IAM servers at their URLs, inside their
            // network namespaces too.
            forward: [&identity_url, &iam_url]
                .iter()
                .filter_map(|u| u.strip_prefix("http://")?.parse().ok())
                .collect(),
        },
    );
    match runner.isolation().warning() {
        Some(w) => eprintln!("{w}"),
        None => eprintln!("{}", runner.isolation().summary()),
    }
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let sqlite_fallback: BTreeSet<String> = if postgres_installed() || prod {
        BTreeSet::new()
    } else {
        m.sql_instances.iter().map(|q| q.name.clone()).collect()
    };
    let live = Arc::new(Live {
        manifest_path: manifest_path(&args),
        data_dir: args.data_dir.clone(),
        iam: iam.clone(),
        secrets: secrets.clone(),
        runner: runner.clone(),
        store: store.clone(),
        values: tokio::sync::Mutex::new(BTreeMap::new()),
        sqlite_fallback: sqlite_fallback.clone(),
    });
    let control = gatehouse_run::admin::serve_with(
        runner.clone(),
        Some(shutdown.clone()),
        Some(live.clone().router()),
    )
    .await
    .context("control socket")?;
    let result = start_and_serve(
        &m,
        &args,
        &runner,
        &iam,
        &mut values,
        &identity_url,
        &iam_url,
        started,
        &want,
        &store,
        shutdown,
        &sqlite_fallback,
        &live,
    )
    .await;
    runner.shutdown().await;
    control.abort();
    let _ = std::fs::remove_file(gatehouse_run::admin::socket_path(&args.data_dir));
    let _ = stop_identity.send(());
    let _ = identity_task.await;
    iam_task.abort();
    result
}

#[allow(clippy::too_many_arguments)]
async fn start_and_serve(
    m: &Manifest,
    args: &UpArgs,
    runner: &Runner,
    iam: &Iam,
    values: &mut BTreeMap<String, String>,
    identity_url: &str,
    iam_url: &str,
    started: Instant,
    want: &BTreeMap<(String, String), String>,
    store: &gatehouse_store::Store,
    shutdown: Arc<tokio::sync::Notify>,
    sqlite_fallback: &BTreeSet<String>,
    live: &Live,
) -> anyhow::Result<()> {
    let mut rows: Vec<[String; 3]> = vec![
        ["COMPONENT".into(), "URL".into(), "NOTES".into()],
        [
            "identity".into(),
            identity_url.to_owned(),
            format!("project {} ({:?})", m.project.id, m.project.mode).to_lowercase(),
        ],
        [
            "iam + secrets".into(),
            iam_url.to_owned(),
            "token endpoint, IAM, Secret Manager v1".into(),
        ],
    ];
    for q in &m.sql_instances {
        if sqlite_fallback.contains(&q.name) {
            crate::say(&format!(
                "Notice: PostgreSQL 15 is not installed (apt-get install -y postgresql-15); SQL instance {} is replaced by SQLite files for the services that use it.",
                q.name
            ));
            continue;
        }
        let i = runner
            .start_sql(q.clone())
            .await
            .map_err(|e| anyhow::anyhow!("sql_instances {}: {e}", q.name))?;
        rows.push([
            format!("sql {}", q.name),
            i.socket_dir.join(".s.PGSQL.5432").display().to_string(),
            i.connection_name.clone(),
        ]);
    }
    for s in &m.services {
        let spec = prepare_spec(m, s, values, &args.data_dir, sqlite_fallback)?;
        let name = spec.name.clone();
        let svc = runner
            .deploy(spec)
            .await
            .map_err(|e| anyhow::anyhow!("services {name}: {e}"))?;
        values.insert(format!("services.{name}.url"), svc.url.clone());
        let access = if s.allow_unauthenticated {
            "public"
        } else {
            "private"
        };
        rows.push([
            format!("service {name}"),
            svc.url.clone(),
            format!("{access}, revision {}", svc.revision.load().name),
        ]);
    }
    // Gateways: the API file rendered with the URLs, reloaded when the file changes.
    let mut gateway_tasks = Vec::new();
    for g in &m.gateways {
        let api = m.apis.iter().find(|a| a.name == g.api).context("api")?;
        let listener = TcpListener::bind((m.project.host.as_str(), g.port.unwrap_or(0)))
            .await
            .with_context(|| format!("gateways {}: binding port {:?}", g.name, g.port))?;
        let url = format!("http://{}", listener.local_addr()?);
        values.insert(format!("gateways.{}.url", g.name), url.clone());
        let source = m.path(&api.openapi);
        let rendered = args
            .data_dir
            .join("apis")
            .join(format!("{}.yaml", api.name));
        std::fs::create_dir_all(rendered.parent().context("apis dir")?)?;
        let render = {
            let values = values.clone();
            let (source, rendered) = (source.clone(), rendered.clone());
            move || -> anyhow::Result<bool> {
                let text = fill(&std::fs::read_to_string(&source)?, &values);
                if std::fs::read_to_string(&rendered).ok().as_deref() == Some(text.as_str()) {
                    return Ok(false);
                }
                let tmp = rendered.with_extension("yaml.tmp");
                std::fs::write(&tmp, &text)?;
                std::fs::rename(&tmp, &rendered)?;
                Ok(true)
            }
        };
        render()?;
        let account = m.account_email(&g.service_account);
        let md = TcpListener::bind("127.0.0.1:0").await?;
        let md_host = md.local_addr()?.to_string();
        let md_app = gatehouse_metadata::router(
            iam.clone(),
            gatehouse_metadata::MetadataConfig::new(&account, &m.project.region),
        );
        gateway_tasks.push(tokio::spawn(async move {
            let _ = axum::serve(md, md_app).await;
        }));
        let text = std::fs::read_to_string(&rendered)?;
        let gw = gatehouse_gateway::Gateway::new(
            &text,
            Some(rendered.clone()),
            gatehouse_gateway::GatewayOptions {
                local_backend: "http://127.0.0.1:8082".into(),
                api_keys: None,
                threads: Some(1),
            },
            Some(gatehouse_gateway::identity::TokenSource::Metadata { host: md_host }),
        )
        .await
        .map_err(|e| anyhow::anyhow!("gateways {}: {e}", g.name))?;
        gateway_tasks.push(tokio::spawn(
            gw.clone().watch_config(Duration::from_millis(500)),
        ));
        let name = g.name.clone();
        gateway_tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                match render() {
                    Ok(true) => tracing::info!(gateway = name, "API config changed; rolling out"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(gateway = name, error = %e, "API file unreadable; keeping the running config"),
                }
            }
        }));
        let gw_serve = gw.clone();
        gateway_tasks.push(tokio::spawn(async move {
            let _ = gatehouse_gateway::serve(gw_serve, listener, std::future::pending()).await;
        }));
        rows.push([
            format!("gateway {}", g.name),
            url,
            format!("API {} as {account}", g.api),
        ]);
    }
    let applied: Vec<(String, String, String)> = want
        .iter()
        .map(|((k, n), d)| (k.clone(), n.clone(), d.clone()))
        .collect();
    store.put_up_state(&applied).await?;
    *live.values.lock().await = values.clone();
    if args.output == Output::Json {
        let urls: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .skip(1)
            .map(|r| {
                (
                    r[0].clone(),
                    serde_json::json!({"url": r[1], "notes": r[2]}),
                )
            })
            .collect();
        crate::say(
            &serde_json::json!({"ready_ms": started.elapsed().as_millis() as u64, "components": urls})
                .to_string(),
        );
    } else {
        crate::say(&crate::table(&rows));
        crate::say(&format!(
            "Ready in {} ms. Ctrl-C or `gatehouse down --data-dir {}` stops everything.",
            started.elapsed().as_millis(),
            args.data_dir.display()
        ));
    }
    if args.file.is_none() && args.output == Output::Text {
        crate::say(&demo_steps(m, values, identity_url, &args.data_dir));
    }
    tracing::info!(ready_ms = started.elapsed().as_millis() as u64, "listening");
    tokio::select! {
        () = crate::shutdown_signal() => {}
        () = shutdown.notified() => {}
    }
    tracing::info!("stopping");
    for t in gateway_tasks {
        t.abort();
    }
    Ok(())
}

fn demo_steps(
    m: &Manifest,
    values: &BTreeMap<String, String>,
    identity_url: &str,
    data: &Path,
) -> String {
    let get = |k: &str| values.get(k).cloned().unwrap_or_default();
    let key = m
        .identity
        .api_keys
        .first()
        .cloned()
        .unwrap_or_else(|| "any".into());
    let user = m.identity.users.first();
    let (email, password) = user.map_or(("ada@example.com".into(), "correct-horse".into()), |u| {
        (u.email.clone(), u.password.clone().unwrap_or_default())
    });
    format!(
        "\nNext steps\n\
         1. The first seed: open {vote}/ , sign in (or sign up), vote.\n\
         2. The second seed:\n\
         \x20  TOKEN=$(curl -s '{identity_url}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key={key}' \\\n\
         \x20    -H 'content-type: application/json' -d '{{\"email\":\"{email}\",\"password\":\"{password}\",\"returnSecureToken\":true}}' | sed -E 's/.*\"idToken\": *\"([^\"]+)\".*/\\1/')\n\
         \x20  curl -i {gw}/hello                                   # 401: no token\n\
         \x20  curl -i {hello}/                                     # 401: the backend is private\n\
         \x20  curl -i {hello}/ -H \"Authorization: Bearer $(gatehouse iam --data-dir {data} print-id-token --audience {hello} --service-account vote-identity@{project}.iam.gserviceaccount.com)\"   # 403: only the gateway's account may invoke it\n\
         \x20  curl -s {gw}/hello -H \"Authorization: Bearer $TOKEN\"  # 200, with the user's claims",
        vote = get("services.vote.url"),
        gw = get("gateways.api-gateway.url"),
        hello = get("services.hello.url"),
        data = data.display(),
        project = m.project.id,
    )
}

/// Applies the persistent part of the manifest: the project, service accounts (removed ones
/// deleted), secrets (a new version when the value changed), bindings (removed ones revoked).
async fn apply_persistent(
    m: &Manifest,
    iam: &Iam,
    secrets: &Secrets,
    store: &gatehouse_store::Store,
    values: &mut BTreeMap<String, String>,
    want: &BTreeMap<(String, String), String>,
) -> anyhow::Result<()> {
    let local = Principal::Local;
    let project = m.project.id.clone();
    iam.project(&project)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for a in &m.service_accounts {
        let email = m.account_email(&a.name);
        if iam
            .account(&email)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .is_none()
        {
            iam.create_account(
                &project,
                &a.name,
                a.display_name.as_deref().unwrap_or(""),
                "",
            )
            .await
            .map_err(|e| anyhow::anyhow!("service_accounts {}: {e}", a.name))?;
        }
    }
    for s in &m.secrets {
        let name = format!("projects/{project}/secrets/{}", s.name);
        let current = secrets
            .access(&local, &format!("{name}/versions/latest"))
            .await
            .ok();
        let value: Option<String> = match (&s.from_file, &s.from_env, &s.value, &s.json, s.generate)
        {
            (Some(f), ..) => Some(
                std::fs::read_to_string(m.path(f))
                    .with_context(|| format!("secrets {}: reading {}", s.name, f.display()))?,
            ),
            (_, Some(v), ..) => Some(
                std::env::var(v).with_context(|| format!("secrets {}: ${v} is not set", s.name))?,
            ),
            (_, _, Some(v), ..) => Some(fill(v, values)),
            (_, _, _, Some(j), _) => Some(fill(&j.to_string(), values)),
            // Generated once; kept across runs.
            (.., Some(n)) => current.is_none().then(|| random_password(n)),
            _ => None,
        };
        if current.is_none() && secrets.get_secret(&local, &name).await.is_err() {
            secrets
                .create_secret(
                    &local,
                    &project,
                    &s.name,
                    &serde_json::json!({"replication": {"automatic": {}}}),
                )
                .await
                .map_err(|e| anyhow::anyhow!("secrets {}: {e}", s.name))?;
        }
        if let Some(v) = value
            && current
                .as_ref()
                .is_none_or(|c| c.data.as_slice() != v.as_bytes())
        {
            secrets
                .add_version(
                    &local,
                    &name,
                    NewPayload {
                        data: v.as_bytes(),
                        crc32c: None,
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("secrets {}: {e}", s.name))?;
        }
        if let Ok(a) = secrets
            .access(&local, &format!("{name}/versions/latest"))
            .await
            && let Ok(text) = String::from_utf8(a.data.to_vec())
        {
            values.insert(format!("secrets.{}", s.name), text);
        }
    }
    // Bindings: added, and those of the last run that are gone, removed.
    let have = store.up_state().await?;
    for (kind, name, _) in &have {
        if kind == "binding" && !want.contains_key(&(kind.clone(), name.clone())) {
            let mut parts = name.splitn(3, ' ');
            if let (Some(r), Some(role), Some(member)) = (parts.next(), parts.next(), parts.next())
            {
                let _ = iam.edit_binding(r, role, member, false).await;
            }
        }
    }
    for b in &m.bindings {
        iam.edit_binding(
            &m.resource_name(&b.resource),
            &b.role,
            &m.member(&b.member),
            true,
        )
        .await
        .map_err(|e| anyhow::anyhow!("bindings {} {} {}: {e}", b.resource, b.role, b.member))?;
    }
    for (kind, name, _) in &have {
        if kind == "service_account" && !want.contains_key(&(kind.clone(), name.clone())) {
            let _ = iam.delete_account(name).await;
        }
    }

    Ok(())
}

/// A manifest service as the runner deploys it: `${...}` filled, short account names expanded,
/// `gatehouse` as the program meaning this binary, SQLite instead of a SQL instance that could
/// not be started.
fn prepare_spec(
    m: &Manifest,
    s: &gatehouse_run::ServiceSpec,
    values: &BTreeMap<String, String>,
    data_dir: &Path,
    sqlite_fallback: &BTreeSet<String>,
) -> anyhow::Result<gatehouse_run::ServiceSpec> {
    let mut spec = s.clone();
    for v in spec.env.values_mut() {
        *v = fill(v, values);
    }
    if spec
        .service_account
        .as_deref()
        .is_some_and(|a| !a.contains('@'))
    {
        spec.service_account = spec.service_account.as_deref().map(|a| m.account_email(a));
    }
    if let gatehouse_run::spec::Command::List(list) = &mut spec.command
        && list.first().map(String::as_str) == Some("gatehouse")
        && let Ok(exe) = std::env::current_exe()
    {
        list[0] = exe.display().to_string();
    }
    let uses_fallback = spec
        .cloudsql_instances
        .iter()
        .any(|c| sqlite_fallback.contains(c.rsplit(':').next().unwrap_or(c)));
    if uses_fallback {
        spec.cloudsql_instances.clear();
        spec.secrets
            .retain(|k, _| k != "CLOUD_SQL_CREDENTIALS_SECRET");
        // A directory per service: as root the service runs as a user of its own, and its
        // database file and journals must be that user's.
        let dir = data_dir.join("sqlite").join(&spec.name);
        std::fs::create_dir_all(&dir)?;
        let db = dir.join(format!("{}.db", spec.name));
        let before = data_dir.join("sqlite").join(format!("{}.db", spec.name));
        if before.is_file() && !db.exists() {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::rename(
                    format!("{}{suffix}", before.display()),
                    format!("{}{suffix}", db.display()),
                );
            }
        }
        if let Some((uid, gid)) = gatehouse_run::isolation::service_user(&m.project.id, &spec.name)
        {
            for path in std::iter::once(dir.clone())
                .chain(std::fs::read_dir(&dir)?.flatten().map(|e| e.path()))
            {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
            }
        }
        spec.env
            .insert("DATABASE_URL".into(), format!("sqlite://{}", db.display()));
    }
    Ok(spec)
}

/// What a running `up` needs to apply a changed manifest (`POST /v1/apply` on the control
/// socket, which a second `gatehouse up -f` on the same data directory sends).
pub(crate) struct Live {
    manifest_path: PathBuf,
    data_dir: PathBuf,
    iam: Iam,
    secrets: Secrets,
    runner: Runner,
    store: gatehouse_store::Store,
    values: tokio::sync::Mutex<BTreeMap<String, String>>,
    sqlite_fallback: BTreeSet<String>,
}

impl Live {
    /// Re-reads the manifest and applies it: persistent changes, then services — a changed one
    /// gets a new revision (started, ready, traffic moved, old one drained: no failed
    /// requests), a new one is deployed, a removed one stopped. Changes to the identity
    /// settings, SQL instances or gateways need a restart and are refused. API files are
    /// re-rendered by the running gateways on their own.
    async fn apply(&self) -> anyhow::Result<Vec<String>> {
        let m = Manifest::load(&self.manifest_path)?;
        let want = desired(&m)?;
        let changes = plan(&want, &self.store.up_state().await?);
        let restart: Vec<String> = changes
            .iter()
            .filter(|(_, kind, _)| {
                matches!(
                    kind.as_str(),
                    "identity" | "sql_instance" | "gateway" | "user"
                )
            })
            .map(|(c, kind, name)| format!("{c:?} {kind} {name}").to_lowercase())
            .collect();
        if !restart.is_empty() {
            bail!(
                "these changes need a restart of `gatehouse up` (down, then up): {}",
                restart.join(", ")
            );
        }
        let mut values = self.values.lock().await;
        apply_persistent(
            &m,
            &self.iam,
            &self.secrets,
            &self.store,
            &mut values,
            &want,
        )
        .await?;
        let mut report = Vec::new();
        for (change, kind, name) in &changes {
            if kind != "service" {
                report.push(format!("{change:?} {kind} {name}: applied").to_lowercase());
                continue;
            }
            match change {
                Change::Delete => {
                    self.runner.delete(name).await;
                    report.push(format!("service {name}: stopped"));
                }
                Change::Create | Change::Update => {
                    let s = m
                        .services
                        .iter()
                        .find(|s| &s.name == name)
                        .context("service")?;
                    let spec = prepare_spec(&m, s, &values, &self.data_dir, &self.sqlite_fallback)?;
                    let svc = self
                        .runner
                        .deploy(spec)
                        .await
                        .map_err(|e| anyhow::anyhow!("services {name}: {e}"))?;
                    values.insert(format!("services.{name}.url"), svc.url.clone());
                    report.push(format!(
                        "service {name}: revision {} serving at {}",
                        svc.revision.load().name,
                        svc.url
                    ));
                }
            }
        }
        let applied: Vec<(String, String, String)> = want
            .iter()
            .map(|((k, n), d)| (k.clone(), n.clone(), d.clone()))
            .collect();
        self.store.put_up_state(&applied).await?;
        Ok(report)
    }

    /// The control socket's extra route.
    fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new().route(
            "/v1/apply",
            axum::routing::post(move |axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>| {
                let live = self.clone();
                async move {
                    let same = q.get("manifest").is_some_and(|m| {
                        std::fs::canonicalize(&live.manifest_path).ok().as_deref() == Some(Path::new(m))
                    });
                    if !same {
                        return (
                            axum::http::StatusCode::CONFLICT,
                            axum::Json(serde_json::json!({"error": {"message": format!(
                                "the running gatehouse serves {}; stop it (gatehouse down) to switch manifests",
                                live.manifest_path.display()
                            )}})),
                        )
                            .into_response();
                    }
                    match live.apply().await {
                        Ok(report) => axum::Json(serde_json::json!({"applied": report})).into_response(),
                        Err(e) => (
                            axum::http::StatusCode::CONFLICT,
                            axum::Json(serde_json::json!({"error": {"message": format!("{e:#}")}})),
                        )
                            .into_response(),
                    }
                }
            }),
        )
    }
}
