//! One instance: a child process with Cloud Run's environment in its sandbox (a network
//! namespace of its own where the host allows it, else a private loopback port; see
//! [`crate::isolation`]), its output turned into structured log lines, readiness checks,
//! restarts with backoff after a crash, and a graceful stop (SIGTERM to its process group,
//! SIGKILL after the grace period), after which the sandbox is taken down.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::isolation::{InstanceClient, Isolation, MetadataSource, Net, Sandbox};
use crate::logs::LogSink;

/// How an instance is started.
#[derive(Debug, Clone)]
pub struct Launch {
    pub service: String,
    pub revision: String,
    pub instance: String,
    pub argv: Vec<String>,
    /// Everything but `PORT`, which is chosen per start.
    pub env: BTreeMap<String, String>,
    pub health_path: Option<String>,
    pub grace: Duration,
    pub log: Arc<LogSink>,
    /// What the runner can do to keep instances apart.
    pub isolation: Arc<Isolation>,
    /// The service's account, served on a metadata endpoint of each instance's own.
    pub metadata: Option<MetadataSource>,
    /// Host services reachable from inside the instance's namespace at the same address.
    pub forward: Vec<SocketAddr>,
    /// The uid and gid the process runs as (the service's own, when the runner is root).
    pub user: Option<(u32, u32)>,
}

/// A running (or restarting) instance.
#[derive(Debug)]
pub struct Instance {
    pub id: String,
    port: AtomicU16,
    ready: AtomicBool,
    restarts: AtomicU32,
    /// Requests it is answering now.
    pub(crate) in_flight: AtomicU32,
    /// When it last finished a request (or started), in ms since the Unix epoch.
    pub(crate) last_active_ms: AtomicU64,
    /// When it was started, in ms since the Unix epoch.
    pub started_ms: u64,
    stop: watch::Sender<bool>,
    done: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The ingress's connections to it, made where it lives; gone when it stops.
    client: std::sync::Mutex<Option<InstanceClient>>,
    pid: AtomicU32,
    netns: AtomicU64,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// An instance that served this long before it exited is restarted at once (requests are
/// waiting for it); one that exits sooner backs off, so a crash loop costs little.
const STABLE_FOR: Duration = Duration::from_secs(1);

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Instance {
    /// Starts the instance and its supervisor.
    pub fn start(launch: Launch) -> Arc<Self> {
        let (stop, stop_rx) = watch::channel(false);
        let me = Arc::new(Self {
            id: launch.instance.clone(),
            port: AtomicU16::new(0),
            ready: AtomicBool::new(false),
            restarts: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            last_active_ms: AtomicU64::new(now_ms()),
            started_ms: now_ms(),
            stop,
            done: tokio::sync::Mutex::new(None),
            client: std::sync::Mutex::new(None),
            pid: AtomicU32::new(0),
            netns: AtomicU64::new(0),
        });
        let task = tokio::spawn(supervise(me.clone(), launch, stop_rx));
        if let Ok(mut d) = me.done.try_lock() {
            *d = Some(task);
        }
        me
    }

    /// The client the ingress sends this instance's requests with.
    pub(crate) fn client(&self) -> Option<InstanceClient> {
        self.client.lock().ok()?.clone()
    }

    /// The process id of its current process (0 when none).
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Acquire)
    }

    /// The inode of its network namespace, if it has one.
    pub fn netns_inode(&self) -> Option<u64> {
        Some(self.netns.load(Ordering::Acquire)).filter(|&i| i != 0)
    }

    /// `127.0.0.1:<port>` (in its namespace, if any) when ready to take requests.
    pub fn ready_addr(&self) -> Option<u16> {
        self.ready
            .load(Ordering::Acquire)
            .then(|| self.port.load(Ordering::Acquire))
    }

    /// The port its process listens on now (0 before the first start).
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Acquire)
    }

    /// Requests it is answering now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// How many times the process was restarted after exiting.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Waits until ready, or `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < until {
            if self.ready_addr().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    /// Stops the process (SIGTERM, then SIGKILL after the grace period) and waits for it.
    pub async fn stop(&self) {
        self.ready.store(false, Ordering::Release);
        let _ = self.stop.send(true);
        if let Some(task) = self.done.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// Starts the process where the sandbox says (a child forked on the namespace's thread starts
/// inside the namespace).
async fn spawn_in(launch: &Launch, sandbox: &Sandbox, port: u16) -> std::io::Result<Child> {
    let as_user = |user| async move {
        match &sandbox.net {
            Net::Host => spawn(launch, &sandbox.env, user, port),
            Net::Netns(ns) => {
                let (launch, env) = (launch.clone(), sandbox.env.clone());
                ns.run(move || spawn(&launch, &env, user, port)).await?
            }
        }
    };
    match as_user(sandbox.user).await {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && sandbox.user.is_some() => {
            // The program sits where the service's user cannot reach it (e.g. under /root):
            // run it as the runner's user, and say loudly what that costs.
            let uid = sandbox.user.map_or(0, |(u, _)| u);
            let program = launch.argv.first().map_or("", String::as_str);
            let why = format!(
                "WARNING: uid {uid} (this service's own user) cannot execute {program}; the \
                 instance runs as the runner's user instead, so other services' instances may \
                 read its environment (secrets) and it theirs. Make the program and every \
                 directory above it world-readable and -executable."
            );
            launch
                .log
                .event("WARNING", &launch.revision, Some(&launch.instance), &why);
            tracing::warn!(
                service = launch.service,
                instance = launch.instance,
                "{why}"
            );
            as_user(None).await
        }
        other => other,
    }
}

fn spawn(
    launch: &Launch,
    extra_env: &[(String, String)],
    user: Option<(u32, u32)>,
    port: u16,
) -> std::io::Result<Child> {
    let (program, args) = launch
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME" || k == "LANG"))
        .envs(&launch.env)
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some((uid, gid)) = user {
        // As root, std also drops the supplementary groups.
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd.spawn()?;
    for (stream, pipe) in [
        (
            "stdout",
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ),
        (
            "stderr",
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ),
    ] {
        let Some(pipe) = pipe else { continue };
        let (service, revision, instance, log) = (
            launch.service.clone(),
            launch.revision.clone(),
            launch.instance.clone(),
            launch.log.clone(),
        );
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.app_line(&revision, &instance, stream, &line);
                tracing::info!(target: "gatehouse::run::app", service, revision, instance, stream, "{line}");
            }
        });
    }
    Ok(child)
}

/// Ready when the port accepts connections, or the health path answers 2xx.
async fn probe(net: &Net, port: u16, health: Option<&str>) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(1), net.connect(port)).await
    else {
        return false;
    };
    let Some(path) = health else { return true };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut head)).await,
        Ok(Ok(_)) if head.starts_with(b"HTTP/1.") && head[9] == b'2'
    )
}

fn signal_group(child: &Child, signal: Signal) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// Logs a failed start, waits out the backoff (doubling it); `true` when stopped meanwhile.
async fn failed(
    launch: &Launch,
    what: &str,
    e: &std::io::Error,
    backoff: &mut Duration,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    launch.log.event(
        "ERROR",
        &launch.revision,
        Some(&launch.instance),
        &format!("{what}: {e}"),
    );
    tracing::error!(service = launch.service, instance = launch.instance, error = %e, "{what}");
    tokio::select! {
        () = tokio::time::sleep(*backoff) => {}
        _ = stop.changed() => return true,
    }
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    false
}

async fn supervise(me: Arc<Instance>, launch: Launch, stop: watch::Receiver<bool>) {
    let mut sandbox = None;
    run(&me, &launch, stop, &mut sandbox).await;
    // Down with the process: its client's connections, its endpoints, its namespace.
    if let Ok(mut c) = me.client.lock() {
        c.take();
    }
    drop(sandbox);
    me.netns.store(0, Ordering::Release);
}

async fn run(
    me: &Arc<Instance>,
    launch: &Launch,
    mut stop: watch::Receiver<bool>,
    sandbox: &mut Option<Sandbox>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if *stop.borrow() {
            return;
        }
        if sandbox.is_none() {
            match Sandbox::prepare(
                &launch.isolation,
                &launch.instance,
                launch.metadata.as_ref(),
                &launch.forward,
                launch.user,
            )
            .await
            {
                Ok(s) => {
                    if let Net::Netns(ns) = &s.net {
                        me.netns.store(ns.inode, Ordering::Release);
                    }
                    if let Ok(mut c) = me.client.lock() {
                        *c = Some(s.client());
                    }
                    *sandbox = Some(s);
                }
                Err(e) => {
                    if failed(
                        launch,
                        "instance sandbox failed",
                        &e,
                        &mut backoff,
                        &mut stop,
                    )
                    .await
                    {
                        return;
                    }
                    continue;
                }
            }
        }
        let Some(sb) = sandbox.as_ref() else { continue };
        let port = match sb.port.map_or_else(free_port, Ok) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(service = launch.service, error = %e, "no free port");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let mut child = match spawn_in(launch, sb, port).await {
            Ok(c) => c,
            Err(e) => {
                if failed(
                    launch,
                    "instance failed to start",
                    &e,
                    &mut backoff,
                    &mut stop,
                )
                .await
                {
                    return;
                }
                continue;
            }
        };
        me.port.store(port, Ordering::Release);
        me.pid.store(child.id().unwrap_or(0), Ordering::Release);
        launch.log.event(
            "INFO",
            &launch.revision,
            Some(&launch.instance),
            &format!("instance started on port {port}"),
        );
        tracing::info!(
            service = launch.service,
            revision = launch.revision,
            instance = launch.instance,
            port,
            "instance started"
        );
        // Readiness, while watching for an early exit or a stop.
        let started = tokio::time::Instant::now();
        let exited = loop {
            if probe(&sb.net, port, launch.health_path.as_deref()).await {
                me.ready.store(true, Ordering::Release);
                break None;
            }
            if started.elapsed() > READY_TIMEOUT {
                tracing::error!(
                    service = launch.service,
                    instance = launch.instance,
                    "instance never became ready; restarting it"
                );
                signal_group(&child, Signal::SIGKILL);
                break Some(child.wait().await);
            }
            tokio::select! {
                status = child.wait() => break Some(status),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop.changed() => break None,
            }
        };
        let ready_at = me
            .ready
            .load(Ordering::Acquire)
            .then(tokio::time::Instant::now);
        let status = match exited {
            Some(s) => s,
            // A stop seen while starting is not seen again by `changed`: checked first.
            None if *stop.borrow() => return stop_gracefully(me, launch, &mut child).await,
            None => {
                tokio::select! {
                    status = child.wait() => status,
                    _ = stop.changed() => return stop_gracefully(me, launch, &mut child).await,
                }
            }
        };
        me.ready.store(false, Ordering::Release);
        if *stop.borrow() {
            return;
        }
        me.restarts.fetch_add(1, Ordering::Relaxed);
        // Requests wait for an instance that was serving: restarted at once. One that exits
        // again soon after waits out a doubling backoff.
        let delay = if ready_at.is_some_and(|t| t.elapsed() >= STABLE_FOR) {
            backoff = FIRST_BACKOFF;
            Duration::ZERO
        } else {
            let d = backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            d
        };
        launch.log.event(
            "WARNING",
            &launch.revision,
            Some(&launch.instance),
            &format!(
                "instance exited ({}); restarting in {} ms",
                status
                    .as_ref()
                    .map_or_else(|e| e.to_string(), ToString::to_string),
                delay.as_millis()
            ),
        );
        tracing::warn!(
            service = launch.service,
            instance = launch.instance,
            status = ?status.ok(),
            delay_ms = delay.as_millis() as u64,
            "instance exited; restarting"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Graceful stop: SIGTERM to the group, SIGKILL after the grace period.
async fn stop_gracefully(me: &Instance, launch: &Launch, child: &mut Child) {
    me.ready.store(false, Ordering::Release);
    signal_group(child, Signal::SIGTERM);
    if tokio::time::timeout(launch.grace, child.wait())
        .await
        .is_err()
    {
        signal_group(child, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    launch.log.event(
        "INFO",
        &launch.revision,
        Some(&launch.instance),
        "instance stopped",
    );
    tracing::info!(
        service = launch.service,
        instance = launch.instance,
        "instance stopped"
    );
}
