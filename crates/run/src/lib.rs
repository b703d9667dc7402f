//! Runs services as Cloud Run does, on one machine: instances are child processes with the
//! container contract (`PORT`, `K_*`, secrets as environment variables resolved at start, a
//! metadata endpoint bound to the service's account), behind an ingress that checks the caller's
//! Google-style ID token and `roles/run.invoker` before anything reaches the process. A redeploy
//! starts a new revision, waits for it, moves traffic and stops the old one. Instances are
//! reachable only through the ingress where the host allows it ([`isolation`]).
//!
//! Must not: decide access itself (the ingress asks `gatehouse-iam`), decrypt secrets itself
//! (`gatehouse-secrets` resolves them), or touch Gatehouse's store; it holds no state beyond
//! its processes, their specs and their logs.

#![forbid(unsafe_code)]

pub mod admin;
mod ingress;
pub mod instance;
pub mod isolation;
pub mod logs;
mod netns;
pub mod spec;
pub mod sql;

pub use isolation::{Isolation, IsolationMode};
pub use spec::{ServiceSpec, SpecError};
pub use sql::{SqlInstance, SqlInstanceSpec, SqlUser};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use gatehouse_iam::{Iam, Principal};
use gatehouse_secrets::Secrets;

use crate::instance::{Instance, Launch};
use crate::isolation::MetadataSource;
use crate::logs::LogSink;

/// Where services run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub project: String,
    pub region: String,
    /// Address ingresses bind to (port 0: any free port).
    pub bind_host: String,
    /// Where managed SQL instances keep their data (`<data_root>/sql/<instance>`).
    pub data_root: std::path::PathBuf,
    /// The `/cloudsql` directory: instance sockets live under it, services get it as
    /// `DB_SOCKET_PATH`.
    pub socket_root: std::path::PathBuf,
    /// Network namespaces per instance when possible ([`IsolationMode::Auto`]), or never.
    pub isolation: IsolationMode,
    /// Host services (e.g. the identity and IAM servers) every instance may reach: inside an
    /// instance's namespace they answer at `127.0.0.1:<same port>`, so their URLs work there
    /// unchanged. SQL instances' TCP ports are added for the services that use them.
    pub forward: Vec<SocketAddr>,
}

impl RunConfig {
    /// Services of `project` in `region`, ingresses bound on `bind_host`, SQL data under
    /// `data_root` with the `/cloudsql` sockets in `<data_root>/cloudsql`, isolated when
    /// possible ([`IsolationMode::Auto`]), nothing forwarded.
    pub fn new(
        project: impl Into<String>,
        region: impl Into<String>,
        bind_host: impl Into<String>,
        data_root: impl Into<std::path::PathBuf>,
    ) -> Self {
        let data_root = data_root.into();
        Self {
            project: project.into(),
            region: region.into(),
            bind_host: bind_host.into(),
            socket_root: data_root.join("cloudsql"),
            data_root,
            isolation: IsolationMode::Auto,
            forward: Vec::new(),
        }
    }
}

/// Why a deploy failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl From<gatehouse_iam::Error> for DeployError {
    fn from(e: gatehouse_iam::Error) -> Self {
        Self::Failed(e.to_string())
    }
}

/// One revision: its instances, started and stopped by demand between `min_instances` and
/// `max_instances`, each given at most `concurrency` requests at a time.
#[derive(Debug)]
pub struct Revision {
    pub name: String,
    template: Launch,
    instances: Mutex<Vec<Arc<Instance>>>,
    next_id: AtomicU32,
    next: AtomicUsize,
    min: u32,
    max: u32,
    concurrency: u32,
    idle: Duration,
    capacity: tokio::sync::Notify,
    stopped: AtomicBool,
}

/// A request's hold on an instance; released when dropped.
pub(crate) struct Lease {
    revision: Arc<Revision>,
    instance: Arc<Instance>,
    pub(crate) port: u16,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.instance
            .last_active_ms
            .store(instance::now_ms(), Ordering::Relaxed);
        self.instance.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.revision.capacity.notify_one();
    }
}

impl Revision {
    fn new(name: String, template: Launch, spec: &ServiceSpec) -> Arc<Self> {
        Arc::new(Self {
            name,
            template,
            instances: Mutex::new(Vec::new()),
            next_id: AtomicU32::new(0),
            next: AtomicUsize::new(0),
            min: spec.min_instances,
            max: spec.max_instances,
            concurrency: spec.concurrency,
            idle: Duration::from_secs(spec.idle_timeout_secs),
            capacity: tokio::sync::Notify::new(),
            stopped: AtomicBool::new(false),
        })
    }

    /// Its instances now (starting, ready or restarting).
    pub fn instances(&self) -> Vec<Arc<Instance>> {
        self.instances.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Starts one more instance; the caller holds the list.
    fn start_instance(&self, list: &mut Vec<Arc<Instance>>, reason: &str) -> Arc<Instance> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut launch = self.template.clone();
        launch.instance = format!("{}-{n}", self.name);
        launch.log.event(
            "INFO",
            &self.name,
            Some(&launch.instance),
            &format!("Starting new instance. Reason: {reason}"),
        );
        let i = Instance::start(launch);
        list.push(i.clone());
        i
    }

    /// Starts the first `count` instances and waits for them.
    async fn start(&self, count: u32, timeout: Duration) -> bool {
        let started: Vec<_> = match self.instances.lock() {
            Ok(mut list) => (0..count)
                .map(|_| self.start_instance(&mut list, "DEPLOYMENT"))
                .collect(),
            Err(_) => return false,
        };
        let mut ready = true;
        for i in &started {
            ready &= i.wait_ready(timeout).await;
        }
        ready
    }

    /// A ready instance with room for one more request: the least busy, round-robin among
    /// equals. When every instance is full, another is started (up to `max_instances`) and
    /// the request waits for room, up to `wait`.
    pub(crate) async fn acquire(self: &Arc<Self>, wait: Duration) -> Option<Lease> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            {
                let mut list = self.instances.lock().ok()?;
                if self.stopped.load(Ordering::Acquire) {
                    return None;
                }
                let n = list.len();
                let offset = self.next.fetch_add(1, Ordering::Relaxed);
                let mut best: Option<(&Arc<Instance>, u16, u32)> = None;
                for k in 0..n {
                    let i = &list[(offset + k) % n];
                    let Some(port) = i.ready_addr() else { continue };
                    let busy = i.in_flight.load(Ordering::Acquire);
                    if busy < self.concurrency && best.is_none_or(|(_, _, b)| busy < b) {
                        best = Some((i, port, busy));
                    }
                }
                if let Some((i, port, _)) = best {
                    i.in_flight.fetch_add(1, Ordering::AcqRel);
                    return Some(Lease {
                        revision: self.clone(),
                        instance: i.clone(),
                        port,
                    });
                }
                let starting = list.iter().filter(|i| i.ready_addr().is_none()).count();
                if starting == 0 && n < self.max as usize {
                    let reason = if n == 0 {
                        "REQUEST (no instance running)"
                    } else {
                        "AUTOSCALING (every instance at its concurrency)"
                    };
                    self.start_instance(&mut list, reason);
                }
            }
            if tokio::time::Instant::now() >= until {
                return None;
            }
            let _ = tokio::time::timeout(Duration::from_millis(25), self.capacity.notified()).await;
        }
    }

    /// Stops instances above `min_instances` that have been idle for the idle timeout.
    async fn scale_down(&self) {
        let now = instance::now_ms();
        let idle_ms = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        let removed: Vec<Arc<Instance>> = {
            let Ok(mut list) = self.instances.lock() else {
                return;
            };
            let mut removed = Vec::new();
            let mut k = list.len();
            while k > 0 && list.len() > self.min as usize {
                k -= 1;
                let i = &list[k];
                let idle_for = now.saturating_sub(i.last_active_ms.load(Ordering::Relaxed));
                if i.in_flight.load(Ordering::Acquire) == 0 && idle_for >= idle_ms {
                    removed.push(list.remove(k));
                }
            }
            removed
        };
        for i in removed {
            self.template.log.event(
                "INFO",
                &self.name,
                Some(&i.id),
                "Shutting down idle instance (scale down)",
            );
            i.stop().await;
        }
    }

    async fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let all: Vec<_> = self
            .instances
            .lock()
            .map(|mut l| l.drain(..).collect())
            .unwrap_or_default();
        self.capacity.notify_waiters();
        for i in &all {
            i.stop().await;
        }
    }
}

/// Scales a revision down while it exists.
async fn scaler(revision: std::sync::Weak<Revision>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(r) = revision.upgrade() else { return };
        if r.stopped.load(Ordering::Acquire) {
            return;
        }
        r.scale_down().await;
    }
}

/// A deployed service.
pub struct Service {
    pub spec: ArcSwap<ServiceSpec>,
    /// `http://host:port` of its ingress.
    pub url: String,
    pub resource: String,
    pub revision: ArcSwap<Revision>,
    revisions: AtomicU64,
    pub log: Arc<LogSink>,
    /// Turned true to stop the ingress gracefully.
    ingress_stop: tokio::sync::watch::Sender<bool>,
    ingress: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("url", &self.url)
            .field("revision", &self.revision.load().name)
            .finish_non_exhaustive()
    }
}

/// The runner: deployed services by name.
#[derive(Clone)]
pub struct Runner {
    iam: Iam,
    secrets: Option<Secrets>,
    config: RunConfig,
    isolation: Arc<Isolation>,
    services: Arc<Mutex<HashMap<String, Arc<Service>>>>,
    sql: Arc<Mutex<HashMap<String, Arc<SqlInstance>>>>,
    deploying: Arc<tokio::sync::Mutex<()>>,
}

impl Runner {
    /// A runner; decides once how instances are isolated, and warns when they cannot be.
    pub fn new(iam: Iam, secrets: Option<Secrets>, config: RunConfig) -> Self {
        let isolation = Isolation::detect(config.isolation);
        match isolation.warning() {
            Some(w) => tracing::warn!("{w}"),
            None => tracing::info!("{}", isolation.summary()),
        }
        Self {
            iam,
            secrets,
            config,
            isolation: Arc::new(isolation),
            services: Arc::new(Mutex::new(HashMap::new())),
            sql: Arc::new(Mutex::new(HashMap::new())),
            deploying: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// How instances are isolated here.
    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    /// The uid and gid a service's instances run as (`None`: as the runner's user). What
    /// the runner prepares for a service to write (e.g. a SQLite directory) must be theirs.
    pub fn service_user(&self, service: &str) -> Option<(u32, u32)> {
        self.isolation
            .separate_users
            .then(|| isolation::service_ids(&self.config.project, service))
    }

    /// The service resource name IAM bindings use.
    pub fn resource(&self, service: &str) -> String {
        format!(
            "projects/{}/locations/{}/services/{service}",
            self.config.project, self.config.region
        )
    }

    /// A deployed service.
    pub fn service(&self, name: &str) -> Option<Arc<Service>> {
        self.services.lock().ok()?.get(name).cloned()
    }

    /// Every deployed service.
    pub fn services(&self) -> Vec<Arc<Service>> {
        let mut list: Vec<_> = self
            .services
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        list.sort_by(|a, b| a.spec.load().name.cmp(&b.spec.load().name));
        list
    }

    /// Deploys (or redeploys) a service: checks what its account may read, starts a new
    /// revision, waits until every instance is ready, moves traffic, stops the old revision.
    pub async fn deploy(&self, spec: ServiceSpec) -> Result<Arc<Service>, DeployError> {
        spec.validate()?;
        let _one_at_a_time = self.deploying.lock().await;
        let resource = self.resource(&spec.name);
        let principal = match &spec.service_account {
            Some(email) => {
                let a = self.iam.account(email).await?.ok_or_else(|| {
                    DeployError::Refused(format!("service account {email} does not exist"))
                })?;
                if a.disabled {
                    return Err(DeployError::Refused(format!(
                        "service account {email} is disabled"
                    )));
                }
                Some(Principal::ServiceAccount {
                    email: a.email.clone(),
                    unique_id: a.unique_id.clone(),
                })
            }
            None => None,
        };
        // Secrets are read at deploy, as the service's account (Cloud Run checks at deploy
        // and resolves at instance start).
        let mut env: BTreeMap<String, String> = spec.env.clone();
        if !spec.secrets.is_empty() {
            let (Some(secrets), Some(who)) = (&self.secrets, &principal) else {
                return Err(DeployError::Refused(
                    "this runner has no Secret Manager configured".into(),
                ));
            };
            for (var, reference) in &spec.secrets {
                match secrets
                    .resolve_for(who, &self.config.project, reference)
                    .await
                {
                    Ok(a) => {
                        let text = String::from_utf8(a.data.to_vec()).map_err(|_| {
                            DeployError::Refused(format!(
                                "secret {reference} (for {var}) is not UTF-8 text"
                            ))
                        })?;
                        env.insert(var.clone(), text);
                    }
                    Err(e) => {
                        return Err(DeployError::Refused(format!(
                            "secret {reference} (for {var}) cannot be read by {}: {e} \
                             (grant roles/secretmanager.secretAccessor on the secret or the project)",
                            spec.service_account.as_deref().unwrap_or_default()
                        )));
                    }
                }
            }
        }
        let mut forward = self.config.forward.clone();
        for wanted in &spec.cloudsql_instances {
            let instance = self.sql_instance(wanted).ok_or_else(|| {
                DeployError::Refused(format!(
                    "Cloud SQL instance {wanted} is not running here (declare it under sql_instances)"
                ))
            })?;
            let resource = format!(
                "projects/{}/instances/{}",
                self.config.project, instance.spec.name
            );
            let allowed = match &principal {
                Some(p) => {
                    self.iam
                        .check(p, "cloudsql.instances.connect", &resource)
                        .await?
                }
                None => false,
            };
            if !allowed {
                return Err(DeployError::Refused(format!(
                    "service account {} may not connect to Cloud SQL instance {} (grant \
                     roles/cloudsql.client on {resource} or the project)",
                    spec.service_account.as_deref().unwrap_or("(none)"),
                    instance.connection_name
                )));
            }
            if let Some(port) = instance.spec.tcp_port {
                forward.push(SocketAddr::from(([127, 0, 0, 1], port)));
            }
        }
        if !spec.cloudsql_instances.is_empty() {
            env.insert(
                "DB_SOCKET_PATH".into(),
                self.config.socket_root.display().to_string(),
            );
        }
        // `allow_unauthenticated` is the whole truth about `allUsers` (gcloud's
        // `--[no-]allow-unauthenticated`): a redeploy as private takes the binding away again.
        self.iam
            .edit_binding(
                &resource,
                "roles/run.invoker",
                "allUsers",
                spec.allow_unauthenticated,
            )
            .await?;
        let existing = self.service(&spec.name);
        let number = existing
            .as_ref()
            .map_or(1, |s| s.revisions.load(Ordering::Relaxed) + 1);
        let revision_name = format!("{}-{number:05}-{}", spec.name, suffix());
        env.insert("K_SERVICE".into(), spec.name.clone());
        env.insert("K_CONFIGURATION".into(), spec.name.clone());
        env.insert("K_REVISION".into(), revision_name.clone());
        // Each instance gets a metadata endpoint of its own, for the service's account.
        let metadata = spec.service_account.as_ref().map(|account| MetadataSource {
            iam: self.iam.clone(),
            account: account.clone(),
            region: self.config.region.clone(),
        });
        let log = match &existing {
            Some(s) => s.log.clone(),
            None => Arc::new(
                LogSink::open(&self.config.data_root, &spec.name)
                    .map_err(|e| DeployError::Failed(format!("service log: {e}")))?,
            ),
        };
        let revision = Revision::new(
            revision_name.clone(),
            Launch {
                service: spec.name.clone(),
                revision: revision_name.clone(),
                instance: String::new(),
                argv: spec.argv(),
                env: env.clone(),
                health_path: spec.health_check_path.clone(),
                grace: Duration::from_secs(spec.termination_grace_secs),
                log: log.clone(),
                isolation: self.isolation.clone(),
                metadata,
                forward,
                user: self.service_user(&spec.name),
            },
            &spec,
        );
        // Cloud Run starts one instance even with min 0, to check the revision is healthy.
        let ready = revision
            .start(spec.min_instances.max(1), Duration::from_secs(60))
            .await;
        if !ready {
            revision.stop().await;
            log.event(
                "ERROR",
                &revision_name,
                None,
                "revision did not become ready within 60 s",
            );
            return Err(DeployError::Failed(format!(
                "revision {revision_name} did not become ready within 60 s (see its logs)"
            )));
        }
        let every = (Duration::from_secs(spec.idle_timeout_secs) / 4)
            .clamp(Duration::from_millis(250), Duration::from_secs(1));
        tokio::spawn(scaler(Arc::downgrade(&revision), every));
        log.event(
            "INFO",
            &revision_name,
            None,
            "revision ready; serving traffic",
        );
        match existing {
            Some(service) => {
                // Traffic moves at once; the old revision finishes what it has and stops.
                let grace = Duration::from_secs(spec.termination_grace_secs);
                let old = service.revision.swap(revision);
                service.spec.store(Arc::new(spec));
                service.revisions.store(number, Ordering::Relaxed);
                // Requests hold the revision they were sent to; the old one stops when the
                // last of them has its answer (or after the grace period).
                let until = tokio::time::Instant::now() + grace;
                while Arc::strong_count(&old) > 1 && tokio::time::Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                old.stop().await;
                tracing::info!(service = %service.spec.load().name, revision = revision_name, "revision serving");
                Ok(service)
            }
            None => {
                let port = spec.port.unwrap_or(0);
                let listener =
                    tokio::net::TcpListener::bind((self.config.bind_host.as_str(), port))
                        .await
                        .map_err(|e| DeployError::Failed(e.to_string()))?;
                let addr = listener
                    .local_addr()
                    .map_err(|e| DeployError::Failed(e.to_string()))?;
                let url = format!("http://{addr}");
                let shared = Arc::new(ingress::Shared::new(self.iam.clone(), resource.clone()));
                let (ingress_stop, stop) = tokio::sync::watch::channel(false);
                let service = Arc::new_cyclic(|weak: &std::sync::Weak<Service>| {
                    let task = tokio::spawn(ingress::serve(listener, weak.clone(), shared, stop));
                    Service {
                        spec: ArcSwap::new(Arc::new(spec)),
                        url: url.clone(),
                        resource,
                        revision: ArcSwap::new(revision),
                        revisions: AtomicU64::new(number),
                        log,
                        ingress_stop,
                        ingress: std::sync::Mutex::new(Some(task)),
                    }
                });
                if let Ok(mut m) = self.services.lock() {
                    m.insert(service.spec.load().name.clone(), service.clone());
                }
                tracing::info!(service = %service.spec.load().name, url, revision = revision_name, "service serving");
                Ok(service)
            }
        }
    }

    /// Stops a service gracefully: its ingress stops accepting and lets the requests in
    /// flight get their answers (up to the termination grace period), then its instances get
    /// SIGTERM (SIGKILL after the grace period).
    pub async fn delete(&self, name: &str) -> bool {
        let Some(service) = self.services.lock().ok().and_then(|mut m| m.remove(name)) else {
            return false;
        };
        let _ = service.ingress_stop.send(true);
        let task = service.ingress.lock().ok().and_then(|mut t| t.take());
        if let Some(mut task) = task {
            let grace = Duration::from_secs(service.spec.load().termination_grace_secs);
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                tracing::warn!(
                    service = name,
                    "requests still in flight after the grace period"
                );
                task.abort();
            }
        }
        service.revision.load().stop().await;
        true
    }

    /// Starts a managed PostgreSQL instance; user passwords are read from Secret Manager by
    /// the local administrator (the manifest's owner).
    pub async fn start_sql(&self, spec: SqlInstanceSpec) -> Result<Arc<SqlInstance>, DeployError> {
        let mut passwords = Vec::new();
        for u in &spec.users {
            let secrets = self.secrets.as_ref().ok_or_else(|| {
                DeployError::Refused("SQL users need Secret Manager for their passwords".into())
            })?;
            let a = secrets
                .resolve_for(&Principal::Local, &self.config.project, &u.password_secret)
                .await
                .map_err(|e| {
                    DeployError::Refused(format!(
                        "password of SQL user {} ({}): {e}",
                        u.name, u.password_secret
                    ))
                })?;
            let pw = String::from_utf8(a.data.to_vec()).map_err(|_| {
                DeployError::Refused(format!("password secret {} is not text", u.password_secret))
            })?;
            passwords.push((u.name.clone(), pw.trim_end_matches('\n').to_owned()));
        }
        let instance = SqlInstance::start(
            spec,
            &self.config.project,
            &self.config.region,
            &self.config.data_root,
            &self.config.socket_root,
            &passwords,
        )
        .await
        .map_err(|e| DeployError::Failed(e.to_string()))?;
        let instance = Arc::new(instance);
        if let Ok(mut m) = self.sql.lock() {
            m.insert(instance.connection_name.clone(), instance.clone());
        }
        Ok(instance)
    }

    /// A running SQL instance by connection name (`P:R:I`) or instance name.
    pub fn sql_instance(&self, name: &str) -> Option<Arc<SqlInstance>> {
        let m = self.sql.lock().ok()?;
        m.get(name)
            .cloned()
            .or_else(|| m.values().find(|i| i.spec.name == name).cloned())
    }

    /// Every running SQL instance, by name.
    pub fn sql_instances(&self) -> Vec<Arc<SqlInstance>> {
        let mut list: Vec<_> = self
            .sql
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        list.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        list
    }

    /// The project and region services run in.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// Stops everything: services first, then SQL instances.
    pub async fn shutdown(&self) {
        for s in self.services() {
            self.delete(&s.spec.load().name).await;
        }
        let instances: Vec<_> = self
            .sql
            .lock()
            .map(|mut m| m.drain().map(|(_, v)| v).collect())
            .unwrap_or_default();
        for i in instances {
            i.stop().await;
        }
    }
}

fn suffix() -> String {
    use rand::Rng as _;
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..3)
        .map(|_| char::from(A[rng.random_range(0..A.len())]))
        .collect()
}
