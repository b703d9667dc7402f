//! `gatehouse up`: the whole architecture from one manifest. It checks the manifest, plans
//! against what the last run applied (create / update / delete, as `terraform plan` does),
//! applies the persistent part in dependency order (service accounts, secrets, bindings,
//! users), then starts every component in this process — identity server, IAM and Secret
//! Manager, managed PostgreSQL, services, gateways — prints their URLs and runs until Ctrl-C,
//! SIGTERM or `gatehouse down`.
//!
//! This module is the sequence; the steps live in `args` (command line, manifest source),
//! `plan`, `apply`, `stack` (starting the components), `render` (gateways' API files), `live`
//! (changes to a running `up`), `ports` (stable addresses) and `report` (what the terminal
//! shows). It must not hold the logic of any of them.

mod apply;
mod args;
mod live;
pub mod manifest;
mod plan;
mod ports;
mod render;
mod report;
mod stack;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gatehouse_iam::{Iam, IamConfig};
use gatehouse_identity::SystemClock;
use gatehouse_run::{RunConfig, Runner};
use gatehouse_secrets::Secrets;

pub use args::{DownArgs, UpArgs};
use manifest::{Manifest, Mode};
use plan::{Desired, desired, from_rows, plan, to_rows};
use ports::Ports;
use report::{Component, Report};
use stack::Stack;

/// The IAM URL of the `gatehouse up` of `data_dir` (see [`ports::iam_url`]).
pub(crate) fn running_iam_url(data_dir: &Path) -> Option<String> {
    ports::iam_url(data_dir)
}

/// Where `up` writes its own log (the services' logs are beside it).
pub(crate) fn log_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("logs").join("gatehouse-up.log")
}

/// `gatehouse down`: asks the `up` serving this data directory to stop, and waits until it
/// has (its control socket is gone). Fails when none runs, when it refuses, or when it is
/// still running after `--timeout` seconds.
pub async fn down(args: DownArgs) -> anyhow::Result<()> {
    down_within(&args.data_dir, Duration::from_secs(args.timeout)).await
}

async fn down_within(data_dir: &Path, patience: Duration) -> anyhow::Result<()> {
    let (status, _) = gatehouse_run::admin::request(data_dir, "POST", "/v1/shutdown").await?;
    if status != 200 {
        bail!("the running gatehouse refused to stop ({status})");
    }
    let socket = gatehouse_run::admin::socket_path(data_dir);
    let until = Instant::now() + patience;
    while socket.exists() {
        if Instant::now() >= until {
            bail!(
                "the gatehouse serving {} did not stop within {} s (its control socket {} is still there)",
                data_dir.display(),
                patience.as_secs(),
                socket.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crate::say(&format!(
        "Stopped the gatehouse serving {}.",
        data_dir.display()
    ));
    Ok(())
}

/// Whether PostgreSQL server binaries are installed.
fn postgres_installed() -> bool {
    let dir =
        std::env::var("GATEHOUSE_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    Path::new(&dir).join("initdb").is_file() && Path::new(&dir).join("postgres").is_file()
}

/// `--dry-run`: the plan, with nothing written (no data directory, database or demo files).
async fn dry_run(args: &UpArgs, report: Report) -> anyhow::Result<()> {
    let (m, _demo) = args.load_readonly()?;
    let want = desired(&m)?;
    let db = args.store.data_dir.join("gatehouse.db");
    let have = if args.store.database_url.is_some() || db.exists() {
        let store = args.store.open_store().await?;
        let rows = store.up_state().await?;
        store.close().await;
        from_rows(&rows)
    } else {
        Desired::new()
    };
    report.plan(&plan(&want, &have));
    Ok(())
}

/// Another `up` serves this data directory: it applies the changes itself.
async fn apply_to_running(args: &UpArgs, report: Report) -> anyhow::Result<()> {
    let path = std::fs::canonicalize(args.manifest_path())?;
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("manifest", &path.display().to_string())
        .finish();
    let (status, v) =
        gatehouse_run::admin::request(&args.store.data_dir, "POST", &format!("/v1/apply?{query}"))
            .await?;
    if status != 200 {
        bail!(
            "{}",
            v["error"]["message"]
                .as_str()
                .unwrap_or("the running gatehouse refused the changes")
        );
    }
    let applied: Vec<&str> = v["applied"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str())
        .collect();
    report.applied(&applied);
    Ok(())
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let report = Report {
        output: args.output,
    };
    if args.dry_run {
        return dry_run(&args, report).await;
    }
    let data_dir = args.store.data_dir.clone();
    let m = args.load()?;
    let socket = gatehouse_run::admin::socket_path(&data_dir);
    if socket.exists() && tokio::net::UnixStream::connect(&socket).await.is_ok() {
        return apply_to_running(&args, report).await;
    }
    crate::state::private_dir(&data_dir)?;
    let store = args.store.open_store().await?;
    let want = desired(&m)?;
    let have = from_rows(&store.up_state().await?);
    let changes = plan(&want, &have);
    report.plan(&changes);
    let changed_users: BTreeSet<String> = changes
        .iter()
        .filter(|(c, kind, _)| *c == plan::Change::Update && *kind == plan::Kind::User)
        .map(|(_, _, email)| email.clone())
        .collect();
    let project = m.project.id.clone();
    let host = m.project.host.clone();
    let prod = m.project.mode == Mode::Production;

    // Listeners first: their URLs fill ${...} references.
    let mut ports = Ports::load(&data_dir);
    let identity_listener = ports
        .bind(&host, "identity", Some(m.identity.port.unwrap_or(9099)))
        .await
        .context("the identity server")?;
    let identity_url = format!("http://{}", identity_listener.local_addr()?);
    let iam_listener = ports
        .bind(&host, "iam", m.iam.port)
        .await
        .context("the IAM and Secret Manager server")?;
    let iam_url = format!("http://{}", iam_listener.local_addr()?);
    ports.set("identity", identity_listener.local_addr()?.port());
    ports.set("iam", iam_listener.local_addr()?.port());
    ports.set_iam_url(&iam_url);
    let mut values = initial_values(&m, &identity_url, &iam_url);

    // IAM and Secret Manager over the same store, under one master key.
    let key = args.store.master_key(if prod {
        crate::state::IfNoMasterKey::Refuse
    } else {
        crate::state::IfNoMasterKey::Generate
    })?;
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
    .context("IAM")?;
    let secrets = Secrets::new(store.clone(), iam.clone(), key.clone())
        .await
        .context("Secret Manager")?;
    apply::apply_persistent(&m, &iam, &secrets, &mut values, &want, &have).await?;

    let identity = stack::identity(&m, &store, key, &iam, &secrets, &identity_url).await?;
    apply::create_users(&m, &identity, &secrets, &changed_users).await?;
    report.applied_persistent(&changes);
    // Key rotation and reload (a key revoked with `identity signing-keys revoke`), purging.
    let identity_maintenance = tokio::spawn(identity.clone().maintain());
    let (stop_identity, identity_stopped) = tokio::sync::oneshot::channel::<()>();
    let identity_task = tokio::spawn(gatehouse_identity_http::serve(
        identity.clone(),
        identity_listener,
        async {
            let _ = identity_stopped.await;
        },
    ));
    let iam_app = crate::secrets_cmd::iam_and_secrets_app(secrets.clone(), iam.clone());
    let (stop_iam, iam_stopped) = tokio::sync::oneshot::channel::<()>();
    let iam_task = tokio::spawn(async move {
        let _ = axum::serve(iam_listener, iam_app)
            .with_graceful_shutdown(async {
                let _ = iam_stopped.await;
            })
            .await;
    });

    // The runner: SQL instances, then services.
    let runner = Runner::new(
        iam.clone(),
        Some(secrets.clone()),
        RunConfig {
            // Services reach the identity and IAM servers at their URLs, inside their
            // network namespaces too.
            forward: [&identity_url, &iam_url]
                .iter()
                .filter_map(|u| u.strip_prefix("http://")?.parse().ok())
                .collect(),
            ..RunConfig::new(
                project.clone(),
                m.project.region.clone(),
                host.clone(),
                data_dir.clone(),
            )
        },
    );
    match runner.isolation().warning() {
        Some(w) => report.notice(&w),
        None => tracing::info!("{}", runner.isolation().summary()),
    }
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let sqlite_fallback: BTreeSet<String> = if postgres_installed() || prod {
        BTreeSet::new()
    } else {
        m.sql_instances.iter().map(|q| q.name.clone()).collect()
    };
    let live = Arc::new(live::Live {
        manifest_path: args.manifest_path(),
        data_dir: data_dir.clone(),
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
    let mut stack = Stack {
        m: &m,
        data_dir: data_dir.clone(),
        report,
        runner: runner.clone(),
        iam: iam.clone(),
        values,
        sqlite_fallback,
        ports,
        components: Vec::new(),
        tasks: Vec::new(),
        gateways: Vec::new(),
        stopping: tokio::sync::watch::channel(false).0,
    };
    stack.started(Component {
        key: "identity".into(),
        label: "identity".into(),
        url: identity_url.clone(),
        notes: format!("project {} ({:?})", m.project.id, m.project.mode).to_lowercase(),
    });
    stack.started(Component {
        key: "iam".into(),
        label: "iam + secrets".into(),
        url: iam_url.clone(),
        notes: "token endpoint, IAM, Secret Manager v1".into(),
    });
    let result = serve(&mut stack, &args, &store, &want, &live, &shutdown, started).await;
    // From the outside in, each part draining what it has in flight: the gateways, then the
    // services (their ingresses, then their instances), then the identity and IAM servers
    // the others may call until the end. `down` returns once the control socket is gone.
    stack.stop().await;
    runner.shutdown().await;
    let _ = stop_identity.send(());
    let _ = stop_iam.send(());
    let _ = tokio::join!(identity_task, iam_task);
    identity_maintenance.abort();
    control.abort();
    let _ = std::fs::remove_file(gatehouse_run::admin::socket_path(&data_dir));
    result
}

/// The `${...}` values known before anything starts.
fn initial_values(m: &Manifest, identity_url: &str, iam_url: &str) -> BTreeMap<String, String> {
    let project = &m.project.id;
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    values.insert("project.id".into(), project.clone());
    values.insert("project.region".into(), m.project.region.clone());
    values.insert("identity.url".into(), identity_url.to_owned());
    values.insert("iam.url".into(), iam_url.to_owned());
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
    values
}

/// Starts the rest of the stack, records what was applied, reports the URLs and serves until
/// asked to stop.
async fn serve(
    stack: &mut Stack<'_>,
    args: &UpArgs,
    store: &gatehouse_store::Store,
    want: &Desired,
    live: &live::Live,
    shutdown: &tokio::sync::Notify,
    started: Instant,
) -> anyhow::Result<()> {
    stack.start().await?;
    store.put_up_state(&to_rows(want)).await?;
    if let Err(e) = stack.ports.save() {
        tracing::warn!(error = %format!("{e:#}"), "could not keep the ports for the next start");
    }
    *live.values.lock().await = stack.values.clone();
    let ready_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    stack
        .report
        .ready(&stack.components, ready_ms, &args.store.data_dir);
    if args.file.is_none() && args.output == args::Output::Text {
        crate::say(&report::demo_steps(
            stack.m,
            &stack.values,
            &args.store.data_dir,
        ));
    }
    tracing::info!(ready_ms, "listening");
    tokio::select! {
        () = crate::shutdown_signal() => {}
        () = shutdown.notified() => {}
    }
    tracing::info!("stopping");
    Ok(())
}
