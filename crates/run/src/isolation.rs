//! How instances are kept apart from the host and from each other (issue 14 #4, #5).
//!
//! With network namespaces (root, or `CAP_SYS_ADMIN`): every instance gets its own, with only
//! `lo` in it. Its port is reachable only through connections the runner makes inside the
//! namespace (the ingress); its metadata server listens inside the namespace too, so no other
//! process can ask it for the service's tokens; host services it needs (the identity and IAM
//! servers, SQL instances' TCP ports) are forwarded into the namespace at the same
//! `127.0.0.1:PORT` as on the host, so their URLs work unchanged. Unix sockets (Cloud SQL's
//! `/cloudsql/...`) are files and keep working. There is no other egress.
//!
//! Without them: instances listen on `127.0.0.1` only — any local process can connect to them
//! around the ingress — and each instance's metadata endpoint requires a per-instance
//! credential (a random path prefix in `GCE_METADATA_HOST`).
//!
//! As root, each service's instances run as a user of their own (a fixed unprivileged uid
//! derived from project and service, no supplementary groups), so one service cannot read
//! another's secrets from `/proc/<pid>/environ` or signal its processes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Uri;
use gatehouse_iam::Iam;
use gatehouse_metadata::{self as metadata, MetadataConfig};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::netns::{self, Netns};

/// What the operator asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IsolationMode {
    /// A network namespace per instance and a user per service when the host allows them;
    /// otherwise loopback with a metadata credential (and a warning).
    #[default]
    Auto,
    /// No namespaces: instances listen on 127.0.0.1 (the weaker guarantee; users are still
    /// separated as root).
    Loopback,
}

/// What this runner does, decided once when it starts.
#[derive(Debug, Clone)]
pub struct Isolation {
    /// Every instance in a network namespace of its own.
    pub namespaces: bool,
    /// Every service's instances under a uid of their own.
    pub separate_users: bool,
    /// Why there are no namespaces, when there are none.
    pub namespaces_unavailable: Option<String>,
}

impl Isolation {
    pub(crate) fn detect(mode: IsolationMode) -> Self {
        let root = nix::unistd::Uid::effective().is_root();
        let (namespaces, why) = match mode {
            IsolationMode::Loopback => (false, Some("isolation set to loopback".to_owned())),
            IsolationMode::Auto => match netns::probe() {
                Ok(()) => (true, None),
                Err(e) => (
                    false,
                    Some(format!(
                        "cannot create network namespaces ({e}; run as root or with \
                         CAP_SYS_ADMIN)"
                    )),
                ),
            },
        };
        Self {
            namespaces,
            separate_users: root,
            namespaces_unavailable: why,
        }
    }

    /// The warning an operator must see when instances are reachable around their ingress.
    pub fn warning(&self) -> Option<String> {
        let why = self.namespaces_unavailable.as_deref()?;
        Some(format!(
            "WARNING: instances are NOT network-isolated: {why}. They listen on 127.0.0.1, so \
             any local process can reach a private service around its ingress (and forge the \
             headers it trusts); metadata endpoints require a per-instance credential.{}",
            if self.separate_users {
                ""
            } else {
                " Not root either: all instances run as this user and can read each other's \
                 environment (secrets)."
            }
        ))
    }

    /// One line for the operator.
    pub fn summary(&self) -> String {
        let users = if self.separate_users {
            "a user of its own per service"
        } else {
            "the runner's user (not separated)"
        };
        if self.namespaces {
            format!(
                "instance isolation: a network namespace per instance (reachable only through \
                 the ingress), {users}"
            )
        } else {
            format!("instance isolation: loopback only (weaker), {users}")
        }
    }
}

/// The uid and gid a service's instances run as when the runner runs as root (`None`
/// otherwise: they run as the runner's user). What is prepared for a service to write (e.g.
/// a SQLite directory) must be theirs.
pub fn service_user(project: &str, service: &str) -> Option<(u32, u32)> {
    nix::unistd::Uid::effective()
        .is_root()
        .then(|| service_ids(project, service))
}

/// The fixed unprivileged uid (and gid) of a service: a stable hash of project and service
/// into `[2^30, 2^31)`, far from real and subordinate ids.
pub(crate) fn service_ids(project: &str, service: &str) -> (u32, u32) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in project
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(service.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let id = 0x4000_0000 | u32::try_from(h % 0x4000_0000).unwrap_or(0);
    (id, id)
}

/// The service's metadata server, served per instance.
#[derive(Clone)]
pub struct MetadataSource {
    pub iam: Iam,
    pub account: String,
    pub region: String,
}

impl std::fmt::Debug for MetadataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataSource")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// How the runner reaches an instance's ports.
#[derive(Debug, Clone)]
pub(crate) enum Net {
    /// The host's loopback.
    Host,
    /// Inside the instance's namespace.
    Netns(Arc<Netns>),
}

impl Net {
    pub(crate) async fn connect(&self, port: u16) -> std::io::Result<tokio::net::TcpStream> {
        match self {
            Self::Host => {
                let s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                s.set_nodelay(true)?;
                Ok(s)
            }
            Self::Netns(ns) => ns.connect(port).await,
        }
    }

    async fn listen(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        match self {
            Self::Host => tokio::net::TcpListener::bind(addr).await,
            Self::Netns(ns) => ns.listen(addr).await,
        }
    }
}

/// The ingress's connector: connections to the instance, made where the instance is.
#[derive(Debug, Clone)]
pub(crate) struct Connector(pub(crate) Net);

type Connecting =
    std::pin::Pin<Box<dyn Future<Output = std::io::Result<TokioIo<tokio::net::TcpStream>>> + Send>>;

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let net = self.0.clone();
        Box::pin(async move {
            let port = uri
                .port_u16()
                .ok_or_else(|| std::io::Error::other("no port"))?;
            Ok(TokioIo::new(net.connect(port).await?))
        })
    }
}

/// A pooled HTTP client whose connections go to one instance.
pub(crate) type InstanceClient = Client<Connector, Body>;

/// Everything an instance has besides its process: where it lives, its metadata endpoint,
/// its forwards, its user and home. Dropping it takes all of that down.
#[derive(Debug)]
pub(crate) struct Sandbox {
    pub(crate) net: Net,
    /// Variables the process gets on top of the revision's.
    pub(crate) env: Vec<(String, String)>,
    /// The port the process listens on, when it is fixed (inside a namespace: 8080, as on
    /// Cloud Run).
    pub(crate) port: Option<u16>,
    pub(crate) user: Option<(u32, u32)>,
    home: Option<PathBuf>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(home) = &self.home {
            let _ = std::fs::remove_dir_all(home);
        }
    }
}

/// Random text for a credential.
fn random_token() -> String {
    use rand::Rng as _;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// A private home (and TMPDIR) for an instance run as `user`.
fn make_home(instance: &str, (uid, gid): (u32, u32)) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt as _, chown};
    let dir = std::env::temp_dir().join(format!("gatehouse-{instance}-{}", random_token()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    chown(&dir, Some(uid), Some(gid))?;
    Ok(dir)
}

impl Sandbox {
    /// Makes an instance's sandbox: its namespace (when the runner uses them) with `lo` up,
    /// the forwards, the metadata endpoint, the user's home.
    pub(crate) async fn prepare(
        isolation: &Isolation,
        instance: &str,
        metadata: Option<&MetadataSource>,
        forward: &[SocketAddr],
        user: Option<(u32, u32)>,
    ) -> std::io::Result<Self> {
        let mut me = Self {
            net: Net::Host,
            env: Vec::new(),
            port: None,
            user,
            home: None,
            tasks: Vec::new(),
        };
        if let Some(user) = user {
            let home = make_home(instance, user)?;
            for var in ["HOME", "TMPDIR"] {
                me.env.push((var.into(), home.display().to_string()));
            }
            me.home = Some(home);
        }
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        if isolation.namespaces {
            me.net = Net::Netns(Arc::new(Netns::create().await?));
            for &to in forward {
                let inside = SocketAddr::from(([127, 0, 0, 1], to.port()));
                let to = if to.ip().is_unspecified() { inside } else { to };
                match me.net.listen(inside).await {
                    Ok(l) => me.tasks.push(tokio::spawn(forward_to(l, to))),
                    Err(e) => {
                        tracing::warn!(instance, %to, error = %e, "cannot forward into the instance's namespace");
                    }
                }
            }
            me.port = (8080..9000).find(|p| forward.iter().all(|f| f.port() != *p));
            me.env
                .push(("GATEHOUSE_BIND_ADDR".into(), "0.0.0.0".into()));
        } else {
            me.env
                .push(("GATEHOUSE_BIND_ADDR".into(), "127.0.0.1".into()));
        }
        if let Some(source) = metadata {
            let mut config = MetadataConfig::new(&source.account, &source.region);
            let listener = me.net.listen(loopback).await?;
            let addr = listener.local_addr()?;
            // Inside a namespace only this instance can connect; on the host's loopback
            // everyone can, so the endpoint wants a credential only this instance is given.
            let host = if isolation.namespaces {
                addr.to_string()
            } else {
                let token = random_token();
                let host = format!("{addr}/{token}");
                config.path_token = Some(token);
                host
            };
            let app = metadata::router(source.iam.clone(), config);
            me.tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }));
            me.env.push(("GCE_METADATA_HOST".into(), host.clone()));
            me.env.push(("GCE_METADATA_IP".into(), host));
        }
        Ok(me)
    }

    /// The ingress's pooled client for this instance.
    pub(crate) fn client(&self) -> InstanceClient {
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build(Connector(self.net.clone()))
    }
}

/// Splices each connection accepted inside a namespace to `to` on the host.
async fn forward_to(listener: tokio::net::TcpListener, to: SocketAddr) {
    loop {
        let Ok((mut inside, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut outside) = tokio::net::TcpStream::connect(to).await {
                let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_users_are_stable_unprivileged_and_distinct() {
        let (a, _) = service_ids("p", "hello");
        assert_eq!(service_ids("p", "hello").0, a);
        assert!((1 << 30..1 << 31).contains(&a));
        assert_ne!(service_ids("p", "vote").0, a);
        assert_ne!(service_ids("q", "hello").0, a);
    }
}
