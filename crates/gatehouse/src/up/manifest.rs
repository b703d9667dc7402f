//! The manifest `gatehouse up` reads (reference: `docs/manifest.md`): the project, its identity
//! settings, service accounts, IAM bindings, secrets, SQL instances, services, APIs and
//! gateways. Unknown fields and dangling references are errors that name where they are,
//! found before anything changes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use gatehouse_run::{ServiceSpec, SqlInstanceSpec};
use serde::Deserialize;

/// The whole manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub project: Project,
    #[serde(default)]
    pub identity: IdentitySection,
    #[serde(default)]
    pub iam: IamSection,
    #[serde(default)]
    pub service_accounts: Vec<ServiceAccountDecl>,
    #[serde(default)]
    pub bindings: Vec<BindingDecl>,
    #[serde(default)]
    pub secrets: Vec<SecretDecl>,
    #[serde(default)]
    pub sql_instances: Vec<SqlInstanceSpec>,
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    #[serde(default)]
    pub apis: Vec<ApiDecl>,
    #[serde(default)]
    pub gateways: Vec<GatewayDecl>,
    /// Where relative paths are resolved (the manifest's directory).
    #[serde(skip)]
    pub base: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Development,
    Production,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    pub id: String,
    #[serde(default = "development")]
    pub mode: Mode,
    #[serde(default = "default_region")]
    pub region: String,
    /// Address every server binds to.
    #[serde(default = "default_host")]
    pub host: String,
}

fn development() -> Mode {
    Mode::Development
}
fn default_region() -> String {
    "us-central1".into()
}
fn default_host() -> String {
    "127.0.0.1".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// Port of the identity server (default 9099, the emulator's).
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub api_keys: Vec<String>,
    #[serde(default)]
    pub authorized_domains: Option<Vec<String>>,
    /// Federated providers, as `--idp-config` entries.
    #[serde(default)]
    pub providers: Vec<serde_json::Value>,
    #[serde(default)]
    pub smtp: Option<SmtpDecl>,
    /// Users created when missing (a test user for the demo).
    #[serde(default)]
    pub users: Vec<UserDecl>,
}

/// The IAM and Secret Manager listener (token endpoint, IAM, Secret Manager v1).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IamSection {
    /// Its port (default: one chosen on the first run and kept, so key files' `token_uri`
    /// stays valid).
    #[serde(default)]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpDecl {
    pub host: String,
    #[serde(default = "smtp_port")]
    pub port: u16,
    /// `none`, `starttls` (the default) or `tls`; anything else is refused.
    #[serde(default)]
    pub security: SmtpSecurity,
    #[serde(default)]
    pub username: Option<String>,
    /// `SECRET[:VERSION]` holding the password.
    #[serde(default)]
    pub password_secret: Option<String>,
    #[serde(default = "smtp_from")]
    pub from: String,
}

fn smtp_port() -> u16 {
    587
}
fn smtp_from() -> String {
    "Gatehouse <noreply@localhost>".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserDecl {
    pub email: String,
    /// Development only.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_secret: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountDecl {
    /// The account id: `<name>@<project>.iam.gserviceaccount.com`.
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingDecl {
    /// `project`, `secrets/NAME`, `services/NAME`, `sql/NAME`, or a full resource name.
    pub resource: String,
    pub role: String,
    /// `serviceAccount:NAME` (a declared account) or any IAM member.
    pub member: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretDecl {
    pub name: String,
    #[serde(default)]
    pub from_file: Option<PathBuf>,
    #[serde(default)]
    pub from_env: Option<String>,
    /// Inline text (development only); `${...}` references are filled in.
    #[serde(default)]
    pub value: Option<String>,
    /// A JSON document (its string values may hold `${...}` references).
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// A random password of this many characters, made once and kept.
    #[serde(default)]
    pub generate: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiDecl {
    pub name: String,
    /// The OpenAPI 2.0 file (`${...}` references are filled in).
    pub openapi: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayDecl {
    pub name: String,
    pub api: String,
    /// The account the gateway calls backends as.
    pub service_account: String,
    #[serde(default)]
    pub port: Option<u16>,
}

/// What is wrong with a manifest: every problem, each with where it is.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ManifestError(pub Vec<String>);

impl Manifest {
    /// Reads and checks a manifest file.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ManifestError(vec![format!("{}: {e}", path.display())]))?;
        let base = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Self::parse(&text, &base, &path.display().to_string())
    }

    /// Parses and checks manifest text; `origin` names it in errors.
    pub fn parse(text: &str, base: &Path, origin: &str) -> Result<Self, ManifestError> {
        let mut m: Self = serde_saphyr::from_str(text)
            .map_err(|e| ManifestError(vec![format!("{origin}: {e}")]))?;
        m.base = base.to_path_buf();
        let problems = m.problems();
        if problems.is_empty() {
            Ok(m)
        } else {
            Err(ManifestError(
                problems
                    .into_iter()
                    .map(|p| format!("{origin}: {p}"))
                    .collect(),
            ))
        }
    }

    /// `name@project.iam.gserviceaccount.com` for a short account name.
    pub fn account_email(&self, name: &str) -> String {
        if name.contains('@') {
            name.to_owned()
        } else {
            format!("{name}@{}.iam.gserviceaccount.com", self.project.id)
        }
    }

    /// The full resource name of a binding's resource.
    pub fn resource_name(&self, short: &str) -> String {
        let p = &self.project.id;
        if short == "project" {
            return format!("projects/{p}");
        }
        if let Some(n) = short.strip_prefix("secrets/") {
            return format!("projects/{p}/secrets/{n}");
        }
        if let Some(n) = short.strip_prefix("services/") {
            return format!(
                "projects/{p}/locations/{}/services/{n}",
                self.project.region
            );
        }
        if let Some(n) = short.strip_prefix("sql/") {
            return format!("projects/{p}/instances/{n}");
        }
        short.to_owned()
    }

    /// A binding's member with short account names expanded.
    pub fn member(&self, member: &str) -> String {
        match member.strip_prefix("serviceAccount:") {
            Some(n) => format!("serviceAccount:{}", self.account_email(n)),
            None => member.to_owned(),
        }
    }

    /// Resolves a path relative to the manifest.
    pub fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let prod = self.project.mode == Mode::Production;
        let accounts: BTreeSet<String> = self
            .service_accounts
            .iter()
            .map(|a| self.account_email(&a.name))
            .collect();
        let secrets: BTreeSet<&str> = self.secrets.iter().map(|s| s.name.as_str()).collect();
        let services: BTreeSet<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
        let sql: BTreeSet<&str> = self.sql_instances.iter().map(|s| s.name.as_str()).collect();
        let apis: BTreeSet<&str> = self.apis.iter().map(|a| a.name.as_str()).collect();
        let gateways: BTreeSet<&str> = self.gateways.iter().map(|g| g.name.as_str()).collect();
        let dupes = |what: &str, names: Vec<&str>, out: &mut Vec<String>| {
            let mut seen = BTreeSet::new();
            for n in names {
                if !seen.insert(n) {
                    out.push(format!("{what}: {n} is declared twice"));
                }
            }
        };
        dupes(
            "service_accounts",
            self.service_accounts
                .iter()
                .map(|a| a.name.as_str())
                .collect(),
            &mut out,
        );
        dupes(
            "secrets",
            self.secrets.iter().map(|s| s.name.as_str()).collect(),
            &mut out,
        );
        dupes(
            "services",
            self.services.iter().map(|s| s.name.as_str()).collect(),
            &mut out,
        );
        dupes(
            "sql_instances",
            self.sql_instances.iter().map(|s| s.name.as_str()).collect(),
            &mut out,
        );
        dupes(
            "apis",
            self.apis.iter().map(|a| a.name.as_str()).collect(),
            &mut out,
        );
        dupes(
            "gateways",
            self.gateways.iter().map(|g| g.name.as_str()).collect(),
            &mut out,
        );

        let secret_ref = |at: &str, reference: &str, out: &mut Vec<String>| {
            let name = reference.split(':').next().unwrap_or(reference);
            let name = name
                .strip_prefix(&format!("projects/{}/secrets/", self.project.id))
                .map_or(name, |rest| rest.split('/').next().unwrap_or(rest));
            if !secrets.contains(name) {
                out.push(format!("{at}: secret {name} is not declared under secrets"));
            }
        };
        let account_ref = |at: &str, name: &str, out: &mut Vec<String>| {
            let email = self.account_email(name);
            if email.ends_with(&format!("@{}.iam.gserviceaccount.com", self.project.id))
                && !accounts.contains(&email)
            {
                out.push(format!(
                    "{at}: service account {name} is not declared under service_accounts"
                ));
            }
        };

        for (i, u) in self.identity.users.iter().enumerate() {
            let at = format!("identity.users[{i}] ({})", u.email);
            match (&u.password, &u.password_secret) {
                (Some(_), Some(_)) | (None, None) => {
                    out.push(format!("{at}: give one of password, password_secret"));
                }
                (Some(_), None) if prod => out.push(format!(
                    "{at}: inline passwords are refused in production mode; use password_secret"
                )),
                (_, Some(r)) => secret_ref(&at, r, &mut out),
                _ => {}
            }
        }
        if let Some(smtp) = &self.identity.smtp
            && let Some(r) = &smtp.password_secret
        {
            secret_ref("identity.smtp.password_secret", r, &mut out);
        }
        for (i, b) in self.bindings.iter().enumerate() {
            let at = format!("bindings[{i}]");
            if let Some(n) = b.member.strip_prefix("serviceAccount:") {
                account_ref(&format!("{at}.member"), n, &mut out);
            }
            let r = b.resource.as_str();
            let check = |set: &BTreeSet<&str>, n: &str, what: &str, out: &mut Vec<String>| {
                if !set.contains(n) {
                    out.push(format!("{at}.resource: {what} {n} is not declared"));
                }
            };
            if let Some(n) = r.strip_prefix("secrets/") {
                check(&secrets, n, "secret", &mut out);
            } else if let Some(n) = r.strip_prefix("services/") {
                check(&services, n, "service", &mut out);
            } else if let Some(n) = r.strip_prefix("sql/") {
                check(&sql, n, "SQL instance", &mut out);
            } else if r != "project" && !r.starts_with("projects/") {
                out.push(format!(
                    "{at}.resource: {r:?} is not project, secrets/NAME, services/NAME, sql/NAME or a full resource name"
                ));
            }
            if !b.role.starts_with("roles/") {
                out.push(format!("{at}.role: {:?} is not a role (roles/...)", b.role));
            }
        }
        for (i, s) in self.secrets.iter().enumerate() {
            let at = format!("secrets[{i}] ({})", s.name);
            let sources = [
                s.from_file.is_some(),
                s.from_env.is_some(),
                s.value.is_some(),
                s.json.is_some(),
                s.generate.is_some(),
            ];
            if sources.iter().filter(|x| **x).count() != 1 {
                out.push(format!(
                    "{at}: give exactly one of from_file, from_env, value, json, generate"
                ));
            }
            if prod && (s.value.is_some() || s.json.is_some()) {
                out.push(format!(
                    "{at}: inline secret values are refused in production mode; use from_file, from_env or generate"
                ));
            }
            if let Some(f) = &s.from_file
                && !self.path(f).is_file()
            {
                out.push(format!(
                    "{at}.from_file: {} does not exist",
                    self.path(f).display()
                ));
            }
            if let Some(n) = s.generate
                && !(12..=256).contains(&n)
            {
                out.push(format!("{at}.generate: between 12 and 256 characters"));
            }
        }
        for (i, q) in self.sql_instances.iter().enumerate() {
            let at = format!("sql_instances[{i}] ({})", q.name);
            if let Err(e) = q.validate() {
                out.push(format!("{at}: {e}"));
            }
            for (j, u) in q.users.iter().enumerate() {
                secret_ref(
                    &format!("{at}.users[{j}].password_secret"),
                    &u.password_secret,
                    &mut out,
                );
            }
        }
        for (i, s) in self.services.iter().enumerate() {
            let at = format!("services[{i}] ({})", s.name);
            if let Err(e) = s.validate() {
                out.push(format!("{at}: {e}"));
            }
            if let Some(a) = &s.service_account {
                account_ref(&format!("{at}.service_account"), a, &mut out);
            }
            for (var, r) in &s.secrets {
                secret_ref(&format!("{at}.secrets.{var}"), r, &mut out);
            }
            for c in &s.cloudsql_instances {
                let name = c.rsplit(':').next().unwrap_or(c);
                if !sql.contains(name) {
                    out.push(format!(
                        "{at}.cloudsql_instances: {c} is not declared under sql_instances"
                    ));
                }
            }
        }
        for (i, a) in self.apis.iter().enumerate() {
            if !self.path(&a.openapi).is_file() {
                out.push(format!(
                    "apis[{i}] ({}).openapi: {} does not exist",
                    a.name,
                    self.path(&a.openapi).display()
                ));
            }
        }
        for (i, g) in self.gateways.iter().enumerate() {
            let at = format!("gateways[{i}] ({})", g.name);
            if !apis.contains(g.api.as_str()) {
                out.push(format!(
                    "{at}.api: API {} is not declared under apis",
                    g.api
                ));
            }
            account_ref(
                &format!("{at}.service_account"),
                &g.service_account,
                &mut out,
            );
        }
        // ${...} references in templated places.
        let mut templates: Vec<(String, String)> = Vec::new();
        for (i, s) in self.secrets.iter().enumerate() {
            if let Some(v) = &s.value {
                templates.push((format!("secrets[{i}].value"), v.clone()));
            }
            if let Some(j) = &s.json {
                templates.push((format!("secrets[{i}].json"), j.to_string()));
            }
        }
        for (i, s) in self.services.iter().enumerate() {
            for (k, v) in &s.env {
                templates.push((format!("services[{i}].env.{k}"), v.clone()));
            }
        }
        for (i, a) in self.apis.iter().enumerate() {
            if let Ok(text) = std::fs::read_to_string(self.path(&a.openapi)) {
                templates.push((format!("apis[{i}] ({}) openapi", a.name), text));
            }
        }
        for (at, text) in templates {
            for r in references(&text) {
                let ok = match r.split('.').collect::<Vec<_>>().as_slice() {
                    ["project", "id" | "region"] => true,
                    ["identity", "url"] | ["iam", "url"] => true,
                    ["identity", "api_key"] => !self.identity.api_keys.is_empty(),
                    ["services", n, "url"] => services.contains(n),
                    ["gateways", n, "url"] => gateways.contains(n),
                    ["sql", n, "connection_name"] => sql.contains(n),
                    ["secrets", n] => secrets.contains(n),
                    ["accounts", n, "email"] => accounts.contains(&self.account_email(n)),
                    _ => false,
                };
                if !ok {
                    out.push(format!("{at}: unknown reference ${{{r}}}"));
                }
            }
        }
        out
    }
}

/// Whether `${key}` is one of ours: dotted names of letters, digits, `-` and `_`.
fn is_reference(key: &str) -> bool {
    key.contains('.')
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
}

/// The `${...}` references in `text`.
pub fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let key = after[..end].trim();
                if is_reference(key) {
                    out.push(key.to_owned());
                }
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out
}

/// Fills `${...}` references from `values`; unknown ones stay as they are.
pub fn fill(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let key = after[..end].trim();
                match values.get(key) {
                    Some(v) => out.push_str(v),
                    None => {
                        out.push_str("${");
                        out.push_str(&after[..=end]);
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// How the SMTP connection is secured: `--smtp-security` and the manifest's
/// `identity.smtp.security` (both reject anything else).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain text (a local relay only).
    None,
    /// Upgraded with STARTTLS (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangling_references_and_unknown_fields_are_located() {
        let dir = std::env::temp_dir();
        let bad = "project: {id: p1}\nservices:\n  - name: web\n    command: [x]\n    service_account: nobody\n    secrets: {DB: 'missing:latest'}\nbindings:\n  - {resource: secrets/ghost, role: roles/secretmanager.secretAccessor, member: 'serviceAccount:nobody'}\n";
        let e = Manifest::parse(bad, &dir, "m.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "m.yaml: services[0] (web).service_account: service account nobody is not declared"
            ),
            "{e}"
        );
        assert!(
            e.contains("services[0] (web).secrets.DB: secret missing is not declared"),
            "{e}"
        );
        assert!(
            e.contains("bindings[0].resource: secret ghost is not declared"),
            "{e}"
        );
        assert!(
            e.contains("bindings[0].member: service account nobody"),
            "{e}"
        );
        let unknown = Manifest::parse("project: {id: p1}\nsurprise: 1\n", &dir, "m.yaml")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("surprise"), "{unknown}");
        let prod = Manifest::parse(
            "project: {id: p1, mode: production}\nsecrets: [{name: s, value: x}]\n",
            &dir,
            "m.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            prod.contains("inline secret values are refused in production mode"),
            "{prod}"
        );
        let r = Manifest::parse(
            "project: {id: p1}\nservices: [{name: a, command: [x], env: {U: '${services.b.url}'}}]\n",
            &dir,
            "m.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(r.contains("unknown reference ${services.b.url}"), "{r}");
    }

    #[test]
    fn templates() {
        let mut v = BTreeMap::new();
        v.insert(
            "services.hello.url".to_owned(),
            "http://127.0.0.1:1".to_owned(),
        );
        assert_eq!(
            fill("address: ${services.hello.url}/x ${other}", &v),
            "address: http://127.0.0.1:1/x ${other}"
        );
        assert_eq!(references("a ${ x.y } b ${z} c ${...}"), ["x.y"]);
    }
}
