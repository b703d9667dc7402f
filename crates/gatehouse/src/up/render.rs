//! A gateway's API file as it serves it: the manifest's OpenAPI file with `${...}` filled in,
//! written to `<data-dir>/apis/NAME.yaml` (atomically, through a temporary file beside it) and
//! rewritten whenever the source changes, which the gateway's own file watch then rolls out.
//!
//! Owns the rendered file only; it must not parse the OpenAPI document (the gateway does).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::manifest::fill;

/// One API file rendered for one gateway.
#[derive(Debug, Clone)]
pub(crate) struct Rendered {
    source: PathBuf,
    target: PathBuf,
    values: BTreeMap<String, String>,
}

impl Rendered {
    /// `source` rendered to `<data_dir>/apis/<api>.yaml` with `values`.
    pub(crate) fn new(
        source: PathBuf,
        data_dir: &Path,
        api: &str,
        values: BTreeMap<String, String>,
    ) -> Self {
        Self {
            source,
            target: data_dir.join("apis").join(format!("{api}.yaml")),
            values,
        }
    }

    /// The rendered file.
    pub(crate) fn path(&self) -> &Path {
        &self.target
    }

    /// Renders the file; whether it changed.
    pub(crate) fn render(&self) -> anyhow::Result<bool> {
        let text = fill(
            &std::fs::read_to_string(&self.source)
                .with_context(|| format!("reading {}", self.source.display()))?,
            &self.values,
        );
        if std::fs::read_to_string(&self.target).ok().as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        let dir = self
            .target
            .parent()
            .context("the rendered API file's directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("a temporary file in {}", dir.display()))?;
        tmp.write_all(text.as_bytes())?;
        tmp.persist(&self.target)
            .with_context(|| format!("writing {}", self.target.display()))?;
        Ok(true)
    }

    /// Re-renders every `period` until aborted; a source that cannot be read keeps the running
    /// config (with a warning).
    pub(crate) async fn keep_rendered(self, gateway: String, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.render() {
                Ok(true) => tracing::info!(gateway, "API config changed; rolling out"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(gateway, error = %format!("{e:#}"), "API file unreadable; keeping the running config");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn renders_values_and_reports_changes_only() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("openapi.yaml");
        std::fs::write(&source, "address: ${services.hello.url}\n").unwrap();
        let values = BTreeMap::from([("services.hello.url".to_owned(), "http://h:1".to_owned())]);
        let r = Rendered::new(source.clone(), &dir.path().join("data"), "api", values);
        assert!(r.render().unwrap(), "first render writes");
        assert_eq!(
            std::fs::read_to_string(r.path()).unwrap(),
            "address: http://h:1\n"
        );
        assert!(!r.render().unwrap(), "nothing changed");
        std::fs::write(&source, "address: ${services.hello.url}/v2\n").unwrap();
        assert!(r.render().unwrap());
        assert_eq!(
            std::fs::read_to_string(r.path()).unwrap(),
            "address: http://h:1/v2\n"
        );
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(r.path().parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("api.yaml")]);
    }
}
