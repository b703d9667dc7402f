//! Runs the real `gatehouse` binary as a child process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running `gatehouse` process, killed on drop.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    /// The address it listens on, as printed in its "listening" log line.
    pub addr: String,
    /// Its log (stdout), line by line.
    lines: Arc<Mutex<Vec<String>>>,
}

impl Spawned {
    /// Starts `binary` with `args` (which must include `--listen 127.0.0.1:0`) and waits for the
    /// "listening" log line.
    pub fn start(binary: &Path, args: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .args(args)
            .env("GATEHOUSE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent
                    && let Ok(v) = serde_json_line(&line)
                    && let Some(addr) = v
                {
                    let _ = tx.send(addr);
                    sent = true;
                }
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(100)) {
                return Ok(Self { child, addr, lines });
            }
            if let Some(status) = child.try_wait()? {
                bail!("gatehouse exited early: {status}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("gatehouse did not report listening within 30 s");
            }
        }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its log so far, line by line.
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Sends SIGTERM (the process should stop gracefully).
    pub fn terminate(&self) -> anyhow::Result<()> {
        let pid = i32::try_from(self.child.id()).context("pid")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .context("sending SIGTERM")
    }

    /// Waits up to `within` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, within: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Extracts `addr` from a JSON log line whose message is "listening".
fn serde_json_line(line: &str) -> Result<Option<String>, ()> {
    if !line.contains("\"listening\"") {
        return Ok(None);
    }
    let start = line.find("\"addr\":\"").ok_or(())? + 8;
    let end = line[start..].find('"').ok_or(())? + start;
    Ok(Some(line[start..end].to_owned()))
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
