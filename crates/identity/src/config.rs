//! Per-project configuration and the server-wide limits.

use std::collections::HashMap;

use gatehouse_tokens::PublicKey;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How strict a project is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The emulator's leniency: any API key, `Bearer owner` for admin calls, unsigned custom
    /// tokens, `/emulator/...` routes on. Tokens are still signed.
    Development,
    /// Registered API keys only, admin calls need the admin credential, custom tokens must be
    /// signed by a trusted key, `/emulator/...` routes off.
    Production,
}

/// One project served by the identity server.
pub struct ProjectConfig {
    pub project_id: String,
    pub mode: Mode,
    /// API keys registered for this project.
    pub api_keys: Vec<String>,
    /// Admin credential accepted as `Authorization: Bearer <key>` in production mode.
    pub admin_key: Option<SecretString>,
    /// ID-token issuer; defaults to `https://securetoken.google.com/<project>`.
    pub issuer: String,
    /// Development only, opt-in: issue unsigned (`alg: none`) ID tokens, which the Node Admin
    /// SDK in emulator mode requires. Refused in production.
    pub unsigned_id_tokens: bool,
    /// Keys trusted to sign custom tokens, by issuer (service-account e-mail).
    pub custom_token_signers: HashMap<String, Vec<PublicKey>>,
    /// Settings that the `/config` endpoints can change at run time (initial values).
    pub settings: ProjectSettings,
    /// Federated identity providers (Google, OpenID Connect).
    pub providers: Vec<crate::IdpConfig>,
}

impl std::fmt::Debug for ProjectConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectConfig")
            .field("project_id", &self.project_id)
            .field("mode", &self.mode)
            .field("api_keys", &self.api_keys.len())
            .field("admin_key", &self.admin_key.as_ref().map(|_| "[REDACTED]"))
            .field("issuer", &self.issuer)
            .field("unsigned_id_tokens", &self.unsigned_id_tokens)
            .finish_non_exhaustive()
    }
}

impl ProjectConfig {
    /// A development project with defaults (e-mail enumeration protection off, as in the
    /// emulator).
    pub fn development(project_id: &str) -> Self {
        Self {
            project_id: project_id.to_owned(),
            mode: Mode::Development,
            api_keys: Vec::new(),
            admin_key: None,
            issuer: format!("https://securetoken.google.com/{project_id}"),
            unsigned_id_tokens: false,
            custom_token_signers: HashMap::new(),
            settings: ProjectSettings::default(),
            providers: Vec::new(),
        }
    }

    /// A production project with defaults. Like a new Identity Platform project it has e-mail
    /// enumeration protection on; set `settings.email_privacy_config` to turn it off.
    pub fn production(project_id: &str) -> Self {
        let mut settings = ProjectSettings::default();
        settings.email_privacy_config.enable_improved_email_privacy = true;
        Self {
            mode: Mode::Production,
            settings,
            ..Self::development(project_id)
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let id_ok = !self.project_id.is_empty()
            && self.project_id.len() <= 64
            && self
                .project_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !id_ok {
            return Err(Error::internal(format!(
                "invalid project id {:?}",
                self.project_id
            )));
        }
        for p in &self.providers {
            p.validate()?;
        }
        if self.mode == Mode::Production && self.unsigned_id_tokens {
            return Err(Error::internal(format!(
                "project {}: unsigned ID tokens are refused in production mode",
                self.project_id
            )));
        }
        Ok(())
    }

    /// Whether `candidate` is this project's admin key (constant time).
    pub(crate) fn is_admin_key(&self, candidate: &str) -> bool {
        use subtle::ConstantTimeEq;
        match &self.admin_key {
            Some(key) => {
                let key = key.expose_secret().as_bytes();
                key.len() == candidate.len() && bool::from(key.ct_eq(candidate.as_bytes()))
            }
            None => false,
        }
    }

    /// The issuer of session cookies.
    pub fn session_issuer(&self) -> String {
        format!("https://session.firebase.google.com/{}", self.project_id)
    }
}

/// Settings shown and changed through the `/config` endpoints (emulator and admin).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProjectSettings {
    pub sign_in: SignInSettings,
    pub email_privacy_config: EmailPrivacyConfig,
    /// Domains the hosted sign-in page may return to (a domain covers its subdomains; an IP
    /// address only itself). `None`: Firebase's defaults (`localhost`,
    /// `<project>.firebaseapp.com`, `<project>.web.app`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorized_domains: Option<Vec<String>>,
}

impl ProjectSettings {
    /// The authorized domains of `project`.
    pub fn authorized_domains(&self, project: &str) -> Vec<String> {
        self.authorized_domains.clone().unwrap_or_else(|| {
            vec![
                "localhost".into(),
                format!("{project}.firebaseapp.com"),
                format!("{project}.web.app"),
            ]
        })
    }

    /// Whether a page at `host` (no port) is on the authorized-domains list, as the Firebase
    /// JS SDK matches: an IP address exactly, a name exactly or as a subdomain.
    pub fn is_authorized_host(&self, project: &str, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ip = host.parse::<std::net::IpAddr>().is_ok()
            || host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok());
        self.authorized_domains(project).iter().any(|d| {
            let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            !d.is_empty()
                && (host == d
                    || (!ip
                        && host
                            .strip_suffix(d.as_str())
                            .is_some_and(|rest| rest.ends_with('.'))))
        })
    }

    /// Checks a `continueUrl` (where an e-mailed action link leads on) as Identity Platform
    /// does: an http(s) URL whose host is on the project's authorized domains. Anything else
    /// would let whoever asks for a code choose where the victim's live code goes.
    pub fn check_continue_url(&self, project: &str, continue_url: &str) -> Result<url::Url> {
        let url = url::Url::parse(continue_url).map_err(|_| Error::code("INVALID_CONTINUE_URI"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::code("INVALID_CONTINUE_URI"));
        }
        let host = url
            .host_str()
            .ok_or_else(|| Error::code("INVALID_CONTINUE_URI"))?;
        if !self.is_authorized_host(project, host) {
            return Err(Error::detail(
                "UNAUTHORIZED_DOMAIN",
                "Domain not allowlisted by project",
            ));
        }
        Ok(url)
    }
}

impl crate::Identity {
    /// Whether any served project is in production mode. The server-wide behaviour that cannot
    /// know the project before a request is read (CORS) is then the strict one.
    pub fn serves_production(&self) -> bool {
        self.inner
            .projects
            .values()
            .any(|p| p.mode == Mode::Production)
    }

    /// The served projects in development mode, sorted.
    pub fn development_projects(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .inner
            .projects
            .values()
            .filter(|p| p.mode == Mode::Development)
            .map(|p| p.project_id.as_str())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Whether a web page at `host` (no port) is on the authorized domains of any served
    /// project (as [`ProjectSettings::is_authorized_host`] matches).
    pub async fn is_authorized_host_of_any_project(&self, host: &str) -> bool {
        self.inner
            .settings
            .read()
            .await
            .iter()
            .any(|(project, settings)| settings.is_authorized_host(project, host))
    }
}

/// `signIn` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SignInSettings {
    pub allow_duplicate_emails: bool,
}

/// `emailPrivacyConfig` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EmailPrivacyConfig {
    /// Email-enumeration protection: sign-in failures say `INVALID_LOGIN_CREDENTIALS` only,
    /// `createAuthUri` does not say whether an address is registered, and password-reset
    /// requests for unknown addresses succeed silently. On by default in production projects.
    pub enable_improved_email_privacy: bool,
}

/// Abuse limits (per client IP and per account). `0` disables a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Sign-ups per IP per minute.
    pub sign_up_per_ip_per_min: u32,
    /// Sign-in attempts (all kinds) per IP per minute.
    pub sign_in_per_ip_per_min: u32,
    /// Failed password attempts per account per 10 minutes.
    pub failed_sign_in_per_account: u32,
    /// Token refreshes per IP per minute.
    pub refresh_per_ip_per_min: u32,
    /// OOB e-mails per IP per minute.
    pub oob_per_ip_per_min: u32,
    /// OOB e-mails per address per hour.
    pub oob_per_email_per_hour: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            sign_up_per_ip_per_min: 120,
            sign_in_per_ip_per_min: 600,
            failed_sign_in_per_account: 20,
            refresh_per_ip_per_min: 1200,
            oob_per_ip_per_min: 60,
            oob_per_email_per_hour: 20,
        }
    }
}

impl RateLimits {
    /// No limits at all (benchmarks).
    pub fn off() -> Self {
        Self {
            sign_up_per_ip_per_min: 0,
            sign_in_per_ip_per_min: 0,
            failed_sign_in_per_account: 0,
            refresh_per_ip_per_min: 0,
            oob_per_ip_per_min: 0,
            oob_per_email_per_hour: 0,
        }
    }
}

/// How to reach the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain text (local relays, test sinks).
    None,
    /// STARTTLS upgrade (usually port 587).
    Starttls,
    /// Implicit TLS (usually port 465).
    Tls,
}

/// Outgoing mail settings.
#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// `From:` address, e.g. `Gatehouse <noreply@example.com>`.
    pub from: String,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("from", &self.from)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_continue_url_must_be_http_on_an_authorized_domain() {
        let settings = ProjectSettings {
            authorized_domains: Some(vec!["example.com".into(), "10.0.0.7".into()]),
            ..ProjectSettings::default()
        };
        let check = |url: &str| match settings.check_continue_url("p", url) {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.message(),
        };
        for ok in [
            "https://example.com/done",
            "http://app.example.com:8080/x?y=1#z",
            "https://EXAMPLE.com./",
            "http://10.0.0.7/",
        ] {
            assert_eq!(check(ok), "ok", "{ok}");
        }
        for unauthorized in [
            "https://evil.example/",
            "https://example.com.evil.example/",
            "https://evilexample.com/",
            "https://example.com@evil.example/",
            "https://evil.example\\@example.com/",
            "http://110.0.0.7/",
            "http://localhost/",
        ] {
            assert_eq!(
                check(unauthorized),
                "UNAUTHORIZED_DOMAIN : Domain not allowlisted by project",
                "{unauthorized}"
            );
        }
        for invalid in [
            "javascript:alert(1)//example.com",
            "data:text/html,x",
            "file:///etc/passwd",
            "example.com/done",
            "",
        ] {
            assert_eq!(check(invalid), "INVALID_CONTINUE_URI", "{invalid}");
        }
    }
}
