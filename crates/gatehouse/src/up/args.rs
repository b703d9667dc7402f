//! The command line of `gatehouse up` and `gatehouse down`, and where `up`'s manifest comes
//! from (the given file, or the built-in demo). Parsing only: starts nothing.

use std::path::PathBuf;

use clap::Args;

use super::manifest::Manifest;
use crate::cli::StoreArgs;

/// The demo: both seeds on one machine.
const DEMO_MANIFEST: &str = include_str!("../../../../examples/demo/gatehouse.yaml");
const DEMO_OPENAPI: &str = include_str!("../../../../examples/demo/openapi.yaml");

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The manifest (default: the built-in demo, examples/demo/gatehouse.yaml).
    #[arg(long = "file", short = 'f')]
    pub(crate) file: Option<PathBuf>,
    /// Print the plan and stop; nothing is written.
    #[arg(long)]
    pub(crate) dry_run: bool,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// `json`: the plan, the applied changes and the URLs as JSON lines (for scripts).
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) output: Output,
    /// Logs (JSON audit lines, component logs) on the terminal too, not only in
    /// `<data-dir>/logs/` (setting GATEHOUSE_LOG does the same).
    #[arg(long, short = 'v')]
    pub(crate) verbose: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// The data directory of the `gatehouse up` to stop.
    #[arg(long, default_value = "./data", env = "GATEHOUSE_DATA_DIR")]
    pub(crate) data_dir: PathBuf,
    /// Seconds to wait for it to stop before failing.
    #[arg(long, default_value_t = 60)]
    pub(crate) timeout: u64,
}

impl UpArgs {
    /// The manifest file: the given one, or the demo's copy in the data directory.
    pub(crate) fn manifest_path(&self) -> PathBuf {
        self.file
            .clone()
            .unwrap_or_else(|| self.store.data_dir.join("demo").join("gatehouse.yaml"))
    }

    /// Reads the manifest: the given file, or the demo written into `<data-dir>/demo` (where
    /// its OpenAPI file can be edited while it runs).
    pub(crate) fn load(&self) -> anyhow::Result<Manifest> {
        match &self.file {
            Some(f) => Ok(Manifest::load(f)?),
            None => {
                let dir = self.store.data_dir.join("demo");
                write_demo(&dir)?;
                Ok(Manifest::load(&dir.join("gatehouse.yaml"))?)
            }
        }
    }

    /// Reads the manifest without writing anything: the demo is written to a temporary
    /// directory, removed when the returned guard drops.
    pub(crate) fn load_readonly(&self) -> anyhow::Result<(Manifest, Option<tempfile::TempDir>)> {
        match &self.file {
            Some(f) => Ok((Manifest::load(f)?, None)),
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("gatehouse-demo")
                    .tempdir()?;
                write_demo(tmp.path())?;
                let m = Manifest::load(&tmp.path().join("gatehouse.yaml"))?;
                Ok((m, Some(tmp)))
            }
        }
    }
}

/// Writes the demo's manifest and OpenAPI file into `dir` (the OpenAPI file only when it
/// differs, so a running gateway does not see a change).
fn write_demo(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("gatehouse.yaml"), DEMO_MANIFEST)?;
    if std::fs::read_to_string(dir.join("openapi.yaml"))
        .ok()
        .as_deref()
        != Some(DEMO_OPENAPI)
    {
        std::fs::write(dir.join("openapi.yaml"), DEMO_OPENAPI)?;
    }
    Ok(())
}
