//! The postmaster of a managed instance, kept running: `postgres -D <data>` is a direct child of
//! the runner (as the `postgres` user when the runner is root), so its death is seen the moment
//! it happens. A postmaster that dies without being asked is started again on the same data
//! directory, port and socket directory (PostgreSQL replays its WAL on start: crash recovery is
//! its own), at once the first time and with a growing delay while it keeps failing. Stopping
//! ends the supervision first, then asks for a fast shutdown.
//!
//! Nothing here knows about databases or users; that is `sql`'s setup.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// How often readiness is polled (`postmaster.pid` says `ready` once connections are accepted).
const READY_POLL: Duration = Duration::from_millis(10);
/// How long one start may take (crash recovery included) before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take before the postmaster is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// A postmaster up this long has recovered: the next death restarts it at once again.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// The longest wait between two restart attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a managed instance is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// A postmaster is starting (or recovering) and does not accept connections yet.
    Starting,
    /// Accepting connections.
    Ready,
    /// The postmaster died; a restart is pending.
    Down,
    /// Stopped on request; nothing is supervised any more.
    Stopped,
}

/// The instance's state, as the supervisor last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub health: Health,
    /// The running postmaster's pid.
    pub pid: Option<u32>,
    /// Restarts after an unexpected exit that reached `Ready`.
    pub restarts: u64,
    /// When `health` took its value.
    pub since: Instant,
}

/// How to start the postmaster; the same every time.
#[derive(Debug, Clone)]
pub(super) struct Launch {
    /// `PROJECT:REGION:INSTANCE`, for the log.
    pub name: String,
    pub postgres: PathBuf,
    pub data: PathBuf,
    /// Everything after `-D <data>`.
    pub args: Vec<String>,
    /// Run as this uid and gid (the runner is root), else as the runner's user.
    pub user: Option<(u32, u32)>,
    /// The server's stdout and stderr are appended here.
    pub log: PathBuf,
    /// The socket's lock file (`<socket dir>/.s.PGSQL.<port>.lock`).
    pub socket_lock: PathBuf,
}

impl Launch {
    fn spawn(&self) -> std::io::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(&self.log, Some(uid), Some(gid))?;
        }
        let mut c = Command::new(&self.postgres);
        c.arg("-D")
            .arg(&self.data)
            .args(&self.args)
            // Nothing of the runner's environment (its secrets among it) reaches the server;
            // locale and time zone come from the data directory's configuration.
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C at the terminal reaches the runner, which stops
            // the server in order, and not the server directly.
            .process_group(0);
        if let Some((uid, gid)) = self.user {
            c.uid(uid).gid(gid);
        }
        c.spawn()
    }

    /// Starts a postmaster and waits until it accepts connections.
    pub(super) async fn start(&self) -> Result<Child, String> {
        let mut child = self
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.postgres.display()))?;
        match wait_ready(&mut child, &self.data).await {
            Ok(()) => Ok(child),
            Err(why) => {
                shutdown(&mut child).await;
                Err(why)
            }
        }
    }
}

/// A PostgreSQL lock file (`postmaster.pid`, the socket's `.lock`): the pid on its first line
/// and, in `postmaster.pid`, the status word on its eighth (`starting`, `ready`, `stopping`),
/// as `pg_ctl -w` reads it.
fn lock_file(path: &Path) -> Option<(u32, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let status = lines.nth(6).unwrap_or_default().trim().to_owned();
    Some((pid, status))
}

fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|p| kill(Pid::from_raw(p), None::<Signal>).is_ok())
}

/// Removes the lock file at `path` when the postmaster it names is certainly gone: it is `dead`
/// (our own child, already reaped, whose pid may since belong to another process) or no
/// process has its pid. A live owner's file is left alone (PostgreSQL then refuses to start,
/// which is right: another server owns the directory); its pid is returned.
pub(super) fn clear_stale_lock(path: &Path, dead: Option<u32>) -> Option<u32> {
    let (pid, _) = lock_file(path)?;
    if Some(pid) == dead || !alive(pid) {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), "removing a stale lock file: {e}");
        }
        None
    } else {
        Some(pid)
    }
}

async fn wait_ready(child: &mut Child, data: &Path) -> Result<(), String> {
    let pid = child.id();
    let until = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("postgres exited during start-up: {status}"));
        }
        if let Some((owner, state)) = lock_file(&data.join("postmaster.pid"))
            && Some(owner) == pid
            && state == "ready"
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= until {
            return Err(format!(
                "postgres did not accept connections within {} s",
                START_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

fn signal(child: &Child, sig: Signal) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Fast shutdown (SIGINT: sessions are ended, data is safe), then SIGKILL after the timeout.
async fn shutdown(child: &mut Child) -> Option<ExitStatus> {
    signal(child, Signal::SIGINT);
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            tracing::warn!(
                "postgres did not stop within {} s; killing it",
                STOP_TIMEOUT.as_secs()
            );
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    }
}

/// The wait before restart attempt `failures` (0: the first attempt after a death).
fn backoff(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => (Duration::from_millis(100) * 2u32.saturating_pow(n - 1)).min(MAX_BACKOFF),
    }
}

/// Keeps one instance's postmaster running until stopped.
#[derive(Debug)]
pub(super) struct Supervisor {
    status: watch::Receiver<Status>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The current postmaster's pid (0: none), for [`Drop`].
    pid: Arc<AtomicU32>,
}

impl Supervisor {
    /// Supervises `child`, a postmaster started by `launch` and ready.
    pub(super) fn new(launch: Launch, child: Child) -> Self {
        let pid = Arc::new(AtomicU32::new(child.id().unwrap_or(0)));
        let (status_tx, status) = watch::channel(Status {
            health: Health::Ready,
            pid: child.id(),
            restarts: 0,
            since: Instant::now(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(launch, child, status_tx, stop_rx, pid.clone()));
        Self {
            status,
            stop,
            task: Mutex::new(Some(task)),
            pid,
        }
    }

    pub(super) fn status(&self) -> Status {
        *self.status.borrow()
    }

    pub(super) fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Ends the supervision and stops the server; returns when it has exited.
    pub(super) async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Supervisor {
    /// Not stopped in order (a test that failed, a runtime going away): no restart, and a fast
    /// shutdown requested directly, so no server outlives the runner.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let pid = self.pid.load(Ordering::Acquire);
        if pid != 0
            && let Ok(pid) = i32::try_from(pid)
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        }
    }
}

/// Resolves when a stop is asked for (or the supervisor is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn supervise(
    launch: Launch,
    mut child: Child,
    status: watch::Sender<Status>,
    mut stop: watch::Receiver<bool>,
    pid: Arc<AtomicU32>,
) {
    let set = |health: Health, current: Option<u32>| {
        status.send_modify(|s| {
            s.health = health;
            s.pid = current;
            s.since = Instant::now();
        });
    };
    let mut failures = 0u32;
    let mut ready_at = Instant::now();
    loop {
        let exit = tokio::select! {
            biased;
            () = stopping(&mut stop) => {
                shutdown(&mut child).await;
                pid.store(0, Ordering::Release);
                set(Health::Stopped, None);
                return;
            }
            exit = child.wait() => exit,
        };
        let dead = pid.swap(0, Ordering::AcqRel);
        let died_at = Instant::now();
        set(Health::Down, None);
        let exit = exit.map_or_else(|e| e.to_string(), |s| s.to_string());
        tracing::warn!(
            instance = launch.name,
            pid = dead,
            "sql instance: postgres exited unexpectedly ({exit}); restarting"
        );
        if ready_at.elapsed() >= STABLE_AFTER {
            failures = 0;
        }
        // Until a new postmaster is ready.
        child = loop {
            let delay = backoff(failures);
            tokio::select! {
                biased;
                () = stopping(&mut stop) => {
                    set(Health::Stopped, None);
                    return;
                }
                () = tokio::time::sleep(delay) => {}
            }
            failures = failures.saturating_add(1);
            clear_stale_lock(&launch.socket_lock, Some(dead));
            if let Some(owner) = clear_stale_lock(&launch.data.join("postmaster.pid"), Some(dead)) {
                tracing::warn!(
                    instance = launch.name,
                    owner,
                    "sql instance: another postmaster holds the data directory; waiting"
                );
            }
            let mut c = match launch.spawn() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(
                        instance = launch.name,
                        "sql instance: starting postgres: {e}"
                    );
                    continue;
                }
            };
            pid.store(c.id().unwrap_or(0), Ordering::Release);
            set(Health::Starting, c.id());
            let ready = tokio::select! {
                biased;
                () = stopping(&mut stop) => None,
                ready = wait_ready(&mut c, &launch.data) => Some(ready),
            };
            match ready {
                Some(Ok(())) => break c,
                Some(Err(why)) => {
                    shutdown(&mut c).await;
                    pid.store(0, Ordering::Release);
                    set(Health::Down, None);
                    tracing::warn!(
                        instance = launch.name,
                        attempt = failures,
                        retry_in_ms = backoff(failures).as_millis(),
                        "sql instance: restart failed: {why}"
                    );
                }
                None => {
                    // Stopped while starting: the half-started server is stopped too.
                    shutdown(&mut c).await;
                    pid.store(0, Ordering::Release);
                    set(Health::Stopped, None);
                    return;
                }
            }
        };
        let current = child.id();
        pid.store(current.unwrap_or(0), Ordering::Release);
        ready_at = Instant::now();
        status.send_modify(|s| {
            s.health = Health::Ready;
            s.pid = current;
            s.restarts += 1;
            s.since = ready_at;
        });
        tracing::info!(
            instance = launch.name,
            pid = current.unwrap_or(0),
            restarts = status.borrow().restarts,
            down_ms = died_at.elapsed().as_millis(),
            "sql instance restarted; accepting connections"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn backoff_starts_at_once_then_doubles_to_a_cap() {
        let waits: Vec<u128> = (0..9).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(waits, [0, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn the_lock_file_gives_pid_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postmaster.pid");
        assert_eq!(lock_file(&path), None);
        std::fs::write(
            &path,
            "4242\n/data\n1700000000\n5432\n/cloudsql/p:r:db\n\n  1234    5\nready   \n",
        )
        .unwrap();
        assert_eq!(lock_file(&path), Some((4242, "ready".into())));
    }

    /// A lock file naming a dead process (or our reaped child) goes; one naming a live
    /// process stays, and its owner is reported.
    #[test]
    fn only_a_dead_owners_lock_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postmaster.pid");
        let me = std::process::id();
        std::fs::write(&path, format!("{me}\n")).unwrap();
        assert_eq!(clear_stale_lock(&path, None), Some(me));
        assert!(path.is_file(), "a live owner's lock file is kept");
        assert_eq!(clear_stale_lock(&path, Some(me)), None);
        assert!(!path.exists(), "the reaped child's lock file is removed");

        // A pid that cannot be running (above any pid_max).
        std::fs::write(&path, "2147483646\n").unwrap();
        assert_eq!(clear_stale_lock(&path, None), None);
        assert!(!path.exists());
    }
}
