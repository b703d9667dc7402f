//! The service spec: one entry of the manifest's `services:` (also `gatehouse run deploy`).
//!
//! ```yaml
//! name: hello
//! command: ["python3", "app.py"]     # or a string, run with `sh -c`
//! args: ["--flag"]
//! env: {GREETING: hi}
//! secrets: {DB_PASS: "db-pass:latest"}   # ENV: SECRET[:VERSION] or a full version name
//! service_account: hello@demo-proj.iam.gserviceaccount.com
//! allow_unauthenticated: false
//! min_instances: 1        # kept warm; 0 scales to zero when idle
//! max_instances: 10
//! concurrency: 80           # requests per instance before another one starts
//! idle_timeout_secs: 300    # an idle instance above min_instances stops after this
//! cloudsql_instances: ["demo-proj:us-central1:votes"]
//! health_check_path: /healthz
//! custom_audiences: ["https://hello.example"]
//! port: 8081                # the ingress port (default: any free one)
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A command: a list (program and arguments) or one string run by `sh -c`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Command {
    List(Vec<String>),
    Shell(String),
}

/// One service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub command: Command,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment variables filled from Secret Manager at instance start.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// The service's identity (its metadata endpoint's account).
    #[serde(default)]
    pub service_account: Option<String>,
    /// `allUsers` may invoke (gcloud's `--allow-unauthenticated`).
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// Instances kept running even when idle (0: scale to zero).
    #[serde(default = "one")]
    pub min_instances: u32,
    /// The most instances autoscaling starts.
    #[serde(default = "default_max")]
    pub max_instances: u32,
    /// Requests one instance is given at a time (Cloud Run's `containerConcurrency`).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Seconds an instance above `min_instances` may sit idle before it is stopped.
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    #[serde(default)]
    pub cloudsql_instances: Vec<String>,
    /// Readiness by `GET path` answering 2xx; without it, by the port accepting connections.
    #[serde(default)]
    pub health_check_path: Option<String>,
    /// Audiences accepted besides the service URL.
    #[serde(default)]
    pub custom_audiences: Vec<String>,
    /// Seconds between SIGTERM and SIGKILL.
    #[serde(default = "ten")]
    pub termination_grace_secs: u64,
    /// The ingress port (default: any free one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

fn one() -> u32 {
    1
}

fn ten() -> u64 {
    10
}

fn default_max() -> u32 {
    10
}

fn default_concurrency() -> u32 {
    80
}

fn default_idle() -> u64 {
    300
}

/// Why a spec is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service spec: {0}")]
pub struct SpecError(pub String);

impl ServiceSpec {
    /// Parses a spec from YAML or JSON and checks it.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let spec: Self = serde_saphyr::from_str(text).map_err(|e| SpecError(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Cloud Run's rules for names, and the spec's own consistency.
    pub fn validate(&self) -> Result<(), SpecError> {
        let n = self.name.as_bytes();
        let name_ok = !n.is_empty()
            && n.len() <= 49
            && n[0].is_ascii_lowercase()
            && n.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && n.last() != Some(&b'-');
        if !name_ok {
            return Err(SpecError(format!(
                "service name {:?} must be 1-49 lower-case letters, digits or hyphens, starting \
                 with a letter and not ending with a hyphen",
                self.name
            )));
        }
        match &self.command {
            Command::List(l) if l.is_empty() => {
                return Err(SpecError("command must not be empty".into()));
            }
            Command::Shell(s) if s.trim().is_empty() => {
                return Err(SpecError("command must not be empty".into()));
            }
            _ => {}
        }
        if self.min_instances > self.max_instances || self.max_instances == 0 {
            return Err(SpecError(format!(
                "min_instances ({}) must be at most max_instances ({}), which must be at least 1",
                self.min_instances, self.max_instances
            )));
        }
        if self.max_instances > 1000 {
            return Err(SpecError(format!(
                "max_instances ({}) must be at most 1000",
                self.max_instances
            )));
        }
        if !(1..=1000).contains(&self.concurrency) {
            return Err(SpecError(format!(
                "concurrency ({}) must be between 1 and 1000",
                self.concurrency
            )));
        }
        for key in self.env.keys().chain(self.secrets.keys()) {
            let ok = !key.is_empty()
                && !key.as_bytes()[0].is_ascii_digit()
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(SpecError(format!(
                    "invalid environment variable name {key:?}"
                )));
            }
            if RESERVED.contains(&key.as_str()) {
                return Err(SpecError(format!(
                    "{key} is set by the runner and cannot be given"
                )));
            }
        }
        for key in self.secrets.keys() {
            if self.env.contains_key(key) {
                return Err(SpecError(format!("{key} is both in env and in secrets")));
            }
        }
        if (!self.secrets.is_empty() || !self.cloudsql_instances.is_empty())
            && self.service_account.is_none()
        {
            return Err(SpecError(
                "secrets and cloudsql_instances need a service_account to be read as".into(),
            ));
        }
        if let Some(p) = &self.health_check_path
            && !p.starts_with('/')
        {
            return Err(SpecError(format!(
                "health_check_path {p:?} must start with /"
            )));
        }
        Ok(())
    }

    /// The program and its arguments.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = match &self.command {
            Command::List(l) => l.clone(),
            Command::Shell(s) => vec!["sh".into(), "-c".into(), s.clone()],
        };
        argv.extend(self.args.iter().cloned());
        argv
    }
}

/// Variables the runner sets itself (Cloud Run's container contract).
pub const RESERVED: [&str; 7] = [
    "PORT",
    "K_SERVICE",
    "K_REVISION",
    "K_CONFIGURATION",
    "GCE_METADATA_HOST",
    "GCE_METADATA_IP",
    "DB_SOCKET_PATH",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let s = ServiceSpec::parse(
            "name: hello\ncommand: [python3, app.py]\nenv: {A: b}\nsecrets: {DB_PASS: 'db:1'}\nservice_account: a@p.iam.gserviceaccount.com\n",
        )
        .unwrap();
        assert_eq!(s.argv(), ["python3", "app.py"]);
        assert_eq!(
            (s.min_instances, s.max_instances, s.concurrency),
            (1, 10, 80)
        );
        let shell = ServiceSpec::parse("name: x\ncommand: 'echo hi'\nargs: [a]\n").unwrap();
        assert_eq!(shell.argv(), ["sh", "-c", "echo hi", "a"]);
        for bad in [
            "name: Hello\ncommand: [x]\n",
            "name: x\ncommand: []\n",
            "name: x\ncommand: [x]\nenv: {PORT: '1'}\n",
            "name: x\ncommand: [x]\nsecrets: {A: 'b'}\n",
            "name: x\ncommand: [x]\nmin_instances: 3\nmax_instances: 2\n",
            "name: x\ncommand: [x]\nconcurrency: 0\n",
            "name: x\ncommand: [x]\nunknown_key: 1\n",
            "name: x\ncommand: [x]\nhealth_check_path: healthz\n",
        ] {
            assert!(ServiceSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
