//! One instance: a child process with Cloud Run's environment on a private loopback port,
//! its output turned into structured log lines, readiness checks, restarts with backoff after
//! a crash, and a graceful stop (SIGTERM to its process group, SIGKILL after the grace period).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

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
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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
        });
        let task = tokio::spawn(supervise(me.clone(), launch, stop_rx));
        if let Ok(mut d) = me.done.try_lock() {
            *d = Some(task);
        }
        me
    }

    /// `127.0.0.1:<port>` when ready to take requests.
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

fn spawn(launch: &Launch, port: u16) -> std::io::Result<Child> {
    let (program, args) = launch
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME" || k == "LANG"))
        .envs(&launch.env)
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
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
async fn probe(port: u16, health: Option<&str>) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
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

async fn supervise(me: Arc<Instance>, launch: Launch, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        if *stop.borrow() {
            return;
        }
        let port = match free_port() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(service = launch.service, error = %e, "no free port");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let mut child = match spawn(&launch, port) {
            Ok(c) => c,
            Err(e) => {
                launch.log.event(
                    "ERROR",
                    &launch.revision,
                    Some(&launch.instance),
                    &format!("instance failed to start: {e}"),
                );
                tracing::error!(service = launch.service, instance = launch.instance, error = %e, "instance failed to start");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        me.port.store(port, Ordering::Release);
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
            if probe(port, launch.health_path.as_deref()).await {
                me.ready.store(true, Ordering::Release);
                backoff = Duration::from_millis(500);
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
        let status = match exited {
            Some(s) => s,
            None => {
                tokio::select! {
                    status = child.wait() => status,
                    _ = stop.changed() => {
                        me.ready.store(false, Ordering::Release);
                        // Graceful stop: SIGTERM to the group, SIGKILL after the grace period.
                        signal_group(&child, Signal::SIGTERM);
                        if tokio::time::timeout(launch.grace, child.wait()).await.is_err() {
                            signal_group(&child, Signal::SIGKILL);
                            let _ = child.wait().await;
                        }
                        launch.log.event("INFO", &launch.revision, Some(&launch.instance), "instance stopped");
                        tracing::info!(service = launch.service, instance = launch.instance, "instance stopped");
                        return;
                    }
                }
            }
        };
        me.ready.store(false, Ordering::Release);
        if *stop.borrow() {
            return;
        }
        me.restarts.fetch_add(1, Ordering::Relaxed);
        launch.log.event(
            "WARNING",
            &launch.revision,
            Some(&launch.instance),
            &format!(
                "instance exited ({}); restarting in {} ms",
                status
                    .as_ref()
                    .map_or_else(|e| e.to_string(), ToString::to_string),
                backoff.as_millis()
            ),
        );
        tracing::warn!(
            service = launch.service,
            instance = launch.instance,
            status = ?status.ok(),
            backoff_ms = backoff.as_millis() as u64,
            "instance exited; restarting"
        );
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
