//! The running components of `up`, started in dependency order: the identity server (with
//! its SMTP settings and users), SQL instances, services and gateways (each gateway with its
//! metadata server and its rendered API file). [`Stack`] holds what they share and what must
//! be stopped at the end.
//!
//! Owns starting and stopping; it must not plan or apply persistent resources (see `plan`,
//! `apply`) nor format output beyond calling `report`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gatehouse_iam::{Iam, Principal};
use gatehouse_identity::{Identity, IdentityOptions, ProjectConfig, RateLimits, SystemClock};
use gatehouse_run::Runner;
use gatehouse_secrets::{Key, Secrets};
use secrecy::SecretString;

use super::apply::prepare_spec;
use super::manifest::{Manifest, Mode};
use super::ports::Ports;
use super::render::Rendered;
use super::report::{Component, Report};

/// Builds the identity server of the manifest's project: its settings, federated providers
/// and SMTP (the password from Secret Manager), over `store`.
pub(crate) async fn identity(
    m: &Manifest,
    store: &gatehouse_store::Store,
    key: Arc<Key>,
    iam: &Iam,
    secrets: &Secrets,
    public_url: &str,
) -> anyhow::Result<Identity> {
    let project = &m.project.id;
    let mut pc = if m.project.mode == Mode::Production {
        ProjectConfig::production(project)
    } else {
        ProjectConfig::development(project)
    };
    pc.api_keys = m.identity.api_keys.clone();
    pc.settings.authorized_domains = m.identity.authorized_domains.clone();
    let mut projects = vec![pc];
    crate::idp_config::load_values(
        &m.identity.providers,
        "identity.providers",
        &mut projects,
        Some(secrets),
    )
    .await?;
    let smtp = match &m.identity.smtp {
        Some(s) => {
            let password = match &s.password_secret {
                Some(r) => {
                    let a = secrets
                        .resolve_for(&Principal::Local, project, r)
                        .await
                        .context("identity.smtp.password_secret")?;
                    Some(SecretString::from(
                        String::from_utf8_lossy(&a.data).trim_end().to_owned(),
                    ))
                }
                None => None,
            };
            Some(gatehouse_identity::SmtpConfig {
                host: s.host.clone(),
                port: s.port,
                security: s.security.into(),
                username: s.username.clone(),
                password,
                from: s.from.clone(),
            })
        }
        None => None,
    };
    Identity::new(IdentityOptions {
        store: store.clone(),
        clock: Arc::new(SystemClock),
        projects,
        rate_limits: RateLimits::default(),
        smtp,
        public_url: public_url.to_owned(),
        key_rotation_secs: 21_600,
        master_key: key,
        authority: Some(Arc::new(crate::authority::IamAuthority(iam.clone()))),
    })
    .await
    .context("the identity server")
}

/// Deploys a service on the port the manifest gives, else the one it had before when that is
/// free, and keeps the port it got in `ports` (the caller saves them).
pub(crate) async fn deploy(
    runner: &Runner,
    ports: &mut Ports,
    host: &str,
    mut spec: gatehouse_run::ServiceSpec,
) -> anyhow::Result<Arc<gatehouse_run::Service>> {
    let key = format!("service:{}", spec.name);
    spec.port = ports.free_kept(host, &key, spec.port);
    let name = spec.name.clone();
    let svc = runner
        .deploy(spec)
        .await
        .with_context(|| format!("services {name}"))?;
    if let Some(port) = super::ports::port_of(&svc.url) {
        ports.set(&key, port);
    }
    Ok(svc)
}

/// What the started components share, and the tasks to stop at the end.
pub(crate) struct Stack<'a> {
    pub(crate) m: &'a Manifest,
    pub(crate) data_dir: PathBuf,
    pub(crate) report: Report,
    pub(crate) runner: Runner,
    pub(crate) iam: Iam,
    /// `${...}` values: filled in as components get their URLs.
    pub(crate) values: BTreeMap<String, String>,
    /// SQL instances replaced by SQLite files (PostgreSQL is not installed).
    pub(crate) sqlite_fallback: BTreeSet<String>,
    pub(crate) ports: Ports,
    /// What is up, in the order it started (the URL table).
    pub(crate) components: Vec<Component>,
    /// The gateways' metadata servers, config watchers and renderers.
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The gateways' servers, stopped gracefully by `stopping`.
    pub(crate) gateways: Vec<tokio::task::JoinHandle<()>>,
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
}

impl Stack<'_> {
    /// Records a started component and says so.
    pub(crate) fn started(&mut self, c: Component) {
        self.report.started(&c);
        self.components.push(c);
    }

    /// Starts the SQL instances, services and gateways, in that order.
    pub(crate) async fn start(&mut self) -> anyhow::Result<()> {
        self.start_sql().await?;
        self.start_services().await?;
        self.start_gateways().await
    }

    async fn start_sql(&mut self) -> anyhow::Result<()> {
        let m = self.m;
        for q in &m.sql_instances {
            if self.sqlite_fallback.contains(&q.name) {
                self.report.notice(&format!(
                    "Notice: PostgreSQL 15 is not installed (apt-get install -y postgresql-15); SQL instance {} is replaced by SQLite files for the services that use it.",
                    q.name
                ));
                continue;
            }
            let i = self
                .runner
                .start_sql(q.clone())
                .await
                .with_context(|| format!("sql_instances {}", q.name))?;
            self.started(Component {
                key: format!("sql:{}", q.name),
                label: format!("sql {}", q.name),
                url: i.socket_dir.join(".s.PGSQL.5432").display().to_string(),
                notes: i.connection_name.clone(),
            });
        }
        Ok(())
    }

    async fn start_services(&mut self) -> anyhow::Result<()> {
        let m = self.m;
        for s in &m.services {
            let spec = prepare_spec(m, s, &self.values, &self.data_dir, &self.sqlite_fallback)?;
            let name = spec.name.clone();
            let svc = deploy(&self.runner, &mut self.ports, &m.project.host, spec).await?;
            self.values
                .insert(format!("services.{name}.url"), svc.url.clone());
            let access = if s.allow_unauthenticated {
                "public"
            } else {
                "private"
            };
            self.started(Component {
                key: format!("service:{name}"),
                label: format!("service {name}"),
                url: svc.url.clone(),
                notes: format!("{access}, revision {}", svc.revision.load().name),
            });
        }
        Ok(())
    }

    /// Gateways: the API file rendered with the URLs, reloaded when the file changes.
    async fn start_gateways(&mut self) -> anyhow::Result<()> {
        let m = self.m;
        for g in &m.gateways {
            let api = m.apis.iter().find(|a| a.name == g.api).context("api")?;
            let key = format!("gateway:{}", g.name);
            let listener = self
                .ports
                .bind(&m.project.host, &key, g.port)
                .await
                .with_context(|| format!("gateways {}", g.name))?;
            let addr = listener.local_addr()?;
            self.ports.set(&key, addr.port());
            let url = format!("http://{addr}");
            self.values
                .insert(format!("gateways.{}.url", g.name), url.clone());
            let rendered = Rendered::new(
                m.path(&api.openapi),
                &self.data_dir,
                &api.name,
                self.values.clone(),
            );
            rendered
                .render()
                .with_context(|| format!("gateways {}: rendering API {}", g.name, api.name))?;
            let account = m.account_email(&g.service_account);
            let md = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let md_host = md.local_addr()?.to_string();
            let md_app = gatehouse_metadata::router(
                self.iam.clone(),
                gatehouse_metadata::MetadataConfig::new(&account, &m.project.region),
            );
            self.tasks.push(tokio::spawn(async move {
                let _ = axum::serve(md, md_app).await;
            }));
            let text = std::fs::read_to_string(rendered.path())?;
            let gw = gatehouse_gateway::Gateway::new(
                &text,
                Some(rendered.path().to_path_buf()),
                gatehouse_gateway::GatewayOptions {
                    local_backend: "http://127.0.0.1:8082".into(),
                    api_keys: None,
                    threads: Some(1),
                    limits: Default::default(),
                },
                Some(gatehouse_gateway::identity::TokenSource::Metadata { host: md_host }),
            )
            .await
            .with_context(|| format!("gateways {}", g.name))?;
            self.tasks.push(tokio::spawn(
                gw.clone().watch_config(Duration::from_millis(500)),
            ));
            self.tasks.push(tokio::spawn(
                rendered.keep_rendered(g.name.clone(), Duration::from_millis(500)),
            ));
            let mut stop = self.stopping.subscribe();
            self.gateways.push(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                };
                if let Err(e) = gatehouse_gateway::serve(gw, listener, stopped).await {
                    tracing::error!(error = %e, "gateway failed");
                }
            }));
            self.started(Component {
                key,
                label: format!("gateway {}", g.name),
                url,
                notes: format!("API {} as {account}", g.api),
            });
        }
        Ok(())
    }

    /// Stops the gateways gracefully (each stops accepting and lets the requests in flight
    /// get their answers, up to 30 s), then their metadata servers, which they may need until
    /// the end. The runner is stopped by its owner, after this.
    pub(crate) async fn stop(self) {
        let _ = self.stopping.send(true);
        for g in self.gateways {
            let _ = g.await;
        }
        for t in self.tasks {
            t.abort();
        }
    }
}
