//! Command-line pieces every subcommand shares: where the state is ([`StoreArgs`]: data
//! directory, database URL, master key, with one rule for which master key is used), the IAM
//! URL the local tools put in key files ([`IamUrlArg`]), and the flag values with a fixed set
//! of choices ([`LogFormat`], [`RateLimitsChoice`], [`SmtpSecurity`]), which clap rejects when
//! unknown.
//!
//! Owns parsing and the mapping to the components' types only; it must not start servers or
//! touch the database beyond opening it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use crate::state::IfNoMasterKey;

/// Where the state is: the data directory, the database in it (or a URL) and the master key
/// the database's keys are wrapped with.
#[derive(Debug, Clone, Args)]
pub(crate) struct StoreArgs {
    /// Where state lives: the embedded SQLite database (when no --database-url is given),
    /// master.key, logs and the control socket.
    #[arg(
        long,
        default_value = "./data",
        env = "GATEHOUSE_DATA_DIR",
        global = true
    )]
    pub(crate) data_dir: PathBuf,
    /// `postgres://...` or `sqlite://...`; defaults to `<data-dir>/gatehouse.db`.
    #[arg(
        long,
        env = "GATEHOUSE_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    pub(crate) database_url: Option<String>,
    /// The master key (32 bytes, base64) that signing keys and secret data keys are wrapped
    /// with. Default: `<data-dir>/master.key`, generated on first use where the command allows
    /// it (not in production mode, not by `secrets`).
    #[arg(
        long = "master-key-file",
        alias = "secrets-master-key-file",
        env = "GATEHOUSE_SECRETS_MASTER_KEY_FILE",
        global = true
    )]
    pub(crate) master_key_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The master key (see [`crate::state::master_key`]).
    pub(crate) fn master_key(
        &self,
        if_none: IfNoMasterKey,
    ) -> anyhow::Result<Arc<gatehouse_secrets::Key>> {
        crate::state::master_key(self.master_key_file.as_deref(), &self.data_dir, if_none)
    }

    /// Opens the database (see [`crate::state::open_store`]).
    pub(crate) async fn open_store(&self) -> anyhow::Result<gatehouse_store::Store> {
        crate::state::open_store(&self.data_dir, self.database_url.as_deref()).await
    }
}

/// The IAM server's base URL, which key files carry as `token_uri`.
#[derive(Debug, Clone, Args)]
pub(crate) struct IamUrlArg {
    /// Base URL of the IAM server (`token_uri` and cert URLs in key files). Default: the one a
    /// running `gatehouse up` on the data directory serves, else the command's own default.
    #[arg(long = "public-url", env = "GATEHOUSE_IAM_URL", global = true)]
    pub(crate) public_url: Option<String>,
}

impl IamUrlArg {
    /// The given URL, else the one the `gatehouse up` of `data_dir` serves (when it runs),
    /// else `fallback`.
    pub(crate) fn or_running(&self, data_dir: &Path, fallback: impl FnOnce() -> String) -> String {
        self.public_url
            .clone()
            .or_else(|| crate::up::running_iam_url(data_dir))
            .unwrap_or_else(fallback)
    }
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// `--rate-limits`: the identity server's abuse limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RateLimitsChoice {
    /// The limits Firebase applies.
    Default,
    /// None (benchmarks only).
    Off,
}

impl From<RateLimitsChoice> for gatehouse_identity::RateLimits {
    fn from(choice: RateLimitsChoice) -> Self {
        match choice {
            RateLimitsChoice::Default => Self::default(),
            RateLimitsChoice::Off => Self::off(),
        }
    }
}

/// `--smtp-security` and `identity.smtp.security` (defined with the manifest, whose parser is
/// also compiled on its own by the fuzz targets).
pub(crate) use crate::up::manifest::SmtpSecurity;

impl From<SmtpSecurity> for gatehouse_identity::SmtpSecurity {
    fn from(s: SmtpSecurity) -> Self {
        match s {
            SmtpSecurity::None => Self::None,
            SmtpSecurity::Starttls => Self::Starttls,
            SmtpSecurity::Tls => Self::Tls,
        }
    }
}

/// A positive number of seconds from the command line.
pub fn seconds(flag: &str, value: f64) -> anyhow::Result<std::time::Duration> {
    use anyhow::Context as _;
    std::time::Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{flag} must be a positive number of seconds, not {value}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use clap::ValueEnum as _;

    use super::*;

    #[test]
    fn smtp_security_maps_each_choice_and_rejects_others() {
        let parse = |s: &str| SmtpSecurity::from_str(s, false);
        assert_eq!(
            gatehouse_identity::SmtpSecurity::from(parse("none").unwrap()),
            gatehouse_identity::SmtpSecurity::None
        );
        assert_eq!(
            gatehouse_identity::SmtpSecurity::from(parse("starttls").unwrap()),
            gatehouse_identity::SmtpSecurity::Starttls
        );
        assert_eq!(
            gatehouse_identity::SmtpSecurity::from(parse("tls").unwrap()),
            gatehouse_identity::SmtpSecurity::Tls
        );
        // The manifest used to map any unknown word to STARTTLS; both now refuse it.
        assert!(parse("ssl").is_err());
        let manifest: Result<SmtpSecurity, _> = serde_json::from_str("\"ssl\"");
        assert!(manifest.is_err());
        let manifest: SmtpSecurity = serde_json::from_str("\"tls\"").unwrap();
        assert_eq!(manifest, SmtpSecurity::Tls);
        assert_eq!(SmtpSecurity::default(), SmtpSecurity::Starttls);
    }
}
