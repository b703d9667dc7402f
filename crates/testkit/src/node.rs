//! Runs Node's built-in test runner (`node --test`) on an explicit list of files and fails
//! unless tests really ran.
//!
//! `node --test` run on a directory or a glob that matches nothing exits 0 with "tests 0"; so
//! does a file whose tests were all filtered out. [`NodeTests::run`] names every file, checks
//! that each exists, and reads the TAP summary (written to a file beside the human-readable
//! spec output) to require at least one passing test and no failed or cancelled one.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};

/// A `node --test` run: a directory, the files in it, environment variables.
#[derive(Debug)]
pub struct NodeTests {
    dir: PathBuf,
    files: Vec<String>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

/// What the TAP summary of a run says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeSummary {
    /// `# tests N`
    pub tests: u64,
    /// `# pass N`
    pub pass: u64,
    /// `# fail N`
    pub fail: u64,
    /// `# cancelled N`
    pub cancelled: u64,
    /// `# skipped N`
    pub skipped: u64,
}

impl NodeTests {
    /// `node --test` in `dir` on exactly `files` (paths relative to `dir`).
    pub fn new(dir: impl Into<PathBuf>, files: &[&str]) -> Self {
        Self {
            dir: dir.into(),
            files: files.iter().map(|f| (*f).to_owned()).collect(),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// An extra `node --test` argument (e.g. `--test-concurrency=1`).
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// An environment variable for the run.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.envs.push((key.to_owned(), value.into()));
        self
    }

    /// Runs the files; Ok with the summary only when node exited 0, every file exists, at least
    /// one test passed and none failed or was cancelled.
    pub fn run(&self) -> anyhow::Result<NodeSummary> {
        ensure!(!self.files.is_empty(), "no test files named");
        for file in &self.files {
            let path = self.dir.join(file);
            ensure!(
                path.is_file(),
                "test file {} does not exist",
                path.display()
            );
        }
        let scratch = crate::temp_dir("node-tap")?;
        let tap = scratch.path().join("summary.tap");
        let status = Command::new("node")
            .arg("--test")
            .arg("--test-reporter=spec")
            .arg("--test-reporter-destination=stdout")
            .arg("--test-reporter=tap")
            .arg(format!("--test-reporter-destination={}", tap.display()))
            .args(&self.args)
            .args(&self.files)
            .current_dir(&self.dir)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .status()
            .context("running node (apt-get install -y nodejs)")?;
        let text = std::fs::read_to_string(&tap)
            .with_context(|| format!("reading the TAP summary {}", tap.display()))?;
        let summary = NodeSummary::parse(&text).with_context(|| {
            format!(
                "node --test {} wrote no TAP summary (exit {status})",
                self.files.join(" ")
            )
        })?;
        ensure!(
            status.success(),
            "node --test {} failed (exit {status}): {summary:?}",
            self.files.join(" ")
        );
        summary.require_ran()?;
        Ok(summary)
    }
}

impl NodeSummary {
    /// Reads the `# tests N`, `# pass N`, ... lines at the end of TAP output; None when the
    /// `# tests` line is missing.
    pub fn parse(tap: &str) -> Option<Self> {
        let mut out = Self::default();
        let mut saw_tests = false;
        for line in tap.lines() {
            let Some(rest) = line.strip_prefix("# ") else {
                continue;
            };
            let Some((key, value)) = rest.split_once(' ') else {
                continue;
            };
            let Ok(n) = value.trim().parse::<u64>() else {
                continue;
            };
            match key {
                "tests" => {
                    out.tests = n;
                    saw_tests = true;
                }
                "pass" => out.pass = n,
                "fail" => out.fail = n,
                "cancelled" => out.cancelled = n,
                "skipped" => out.skipped = n,
                _ => {}
            }
        }
        saw_tests.then_some(out)
    }

    /// Fails when no test passed, or any failed or was cancelled.
    pub fn require_ran(&self) -> anyhow::Result<()> {
        if self.tests == 0 || self.pass == 0 {
            bail!("no test ran: {self:?}");
        }
        if self.fail > 0 || self.cancelled > 0 {
            bail!("tests failed: {self:?}");
        }
        Ok(())
    }
}

/// The files in `dir` whose names end with `suffix`, sorted (to check that an explicit list
/// of test files names every one of them).
pub fn files_ending_with(dir: &Path, suffix: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(suffix) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "TAP version 13\n1..0\n# tests 0\n# suites 0\n# pass 0\n# fail 0\n\
                         # cancelled 0\n# skipped 0\n# todo 0\n# duration_ms 3.2\n";

    #[test]
    fn an_empty_run_is_refused() {
        let s = NodeSummary::parse(EMPTY).unwrap_or_default();
        assert_eq!(s.tests, 0);
        assert!(s.require_ran().is_err());
    }

    #[test]
    fn a_passing_run_is_accepted_and_a_failing_one_refused() {
        let ok = "ok 1 - a\n# tests 12\n# pass 12\n# fail 0\n# cancelled 0\n# skipped 0\n";
        let s = NodeSummary::parse(ok).unwrap_or_default();
        assert_eq!(
            s,
            NodeSummary {
                tests: 12,
                pass: 12,
                ..NodeSummary::default()
            }
        );
        assert!(s.require_ran().is_ok());
        let bad = "# tests 3\n# pass 2\n# fail 1\n";
        assert!(
            NodeSummary::parse(bad)
                .unwrap_or_default()
                .require_ran()
                .is_err()
        );
        let all_skipped = "# tests 2\n# pass 0\n# fail 0\n# skipped 2\n";
        assert!(
            NodeSummary::parse(all_skipped)
                .unwrap_or_default()
                .require_ran()
                .is_err()
        );
    }

    #[test]
    fn output_without_a_summary_is_not_a_summary() {
        assert_eq!(NodeSummary::parse("TAP version 13\n"), None);
        // A test's own diagnostic line does not count as the summary.
        assert_eq!(NodeSummary::parse("# wrong secret: HTTP 401\n"), None);
    }
}
