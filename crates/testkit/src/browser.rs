//! Page tests in Debian's Chromium, driven by playwright-core (installed by
//! `tests/browser/setup.sh`; no browser download).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Runs the Node script `script` (a path from the workspace root) with `env`, Chromium at
/// `CHROMIUM` (default `/usr/bin/chromium`) and playwright-core's directory in the environment
/// as `CHROMIUM` and `PLAYWRIGHT_CORE`. Fails unless it exits successfully and printed every
/// line of `passes`; returns its standard output.
pub async fn run_in_chromium(
    script: &str,
    env: &[(&str, &str)],
    passes: &[&str],
) -> anyhow::Result<String> {
    let root = workspace_root();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).is_file() {
        bail!("Chromium is required at {chromium}: apt-get install -y chromium");
    }
    let playwright = root.join("tests/browser/node_modules/playwright-core");
    if !playwright.is_dir() {
        bail!("playwright-core is required: run tests/browser/setup.sh");
    }
    let out = tokio::process::Command::new("node")
        .arg(root.join(script))
        .envs(env.iter().copied())
        .env("CHROMIUM", &chromium)
        .env("PLAYWRIGHT_CORE", &playwright)
        .kill_on_drop(true)
        .output()
        .await
        .context("node is required: apt-get install -y nodejs")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("browser test {script} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    }
    if let Some(missing) = passes.iter().find(|p| !stdout.contains(**p)) {
        bail!("browser test {script}: {missing} missing:\n{stdout}");
    }
    Ok(stdout)
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
