//! A configured identity provider: Google or a generic OpenID Connect issuer.

use secrecy::SecretString;

use super::GOOGLE_ISSUER;
use crate::{Error, Result};

/// One configured identity provider.
#[derive(Clone)]
pub struct IdpConfig {
    /// `google.com` or `oidc.<name>`.
    pub provider_id: String,
    /// The button text: "Sign in with <display_name>".
    pub display_name: String,
    /// The OpenID issuer; discovery at `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub scopes: Vec<String>,
    pub enabled: bool,
    /// The provider's `email_verified` is trusted to mean the user owns the address (linking
    /// to an existing account with that e-mail). Google's is.
    pub trusted_email: bool,
}

impl std::fmt::Debug for IdpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpConfig")
            .field("provider_id", &self.provider_id)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl IdpConfig {
    /// Google: only the client id and secret are needed.
    pub fn google(client_id: &str, client_secret: SecretString) -> Self {
        Self {
            provider_id: "google.com".into(),
            display_name: "Google".into(),
            issuer: GOOGLE_ISSUER.into(),
            client_id: client_id.to_owned(),
            client_secret,
            scopes: default_scopes(),
            enabled: true,
            trusted_email: true,
        }
    }

    /// A generic OpenID Connect provider, `oidc.<name>`.
    pub fn oidc(name: &str, issuer: &str, client_id: &str, client_secret: SecretString) -> Self {
        Self {
            provider_id: format!("oidc.{name}"),
            display_name: name.to_owned(),
            issuer: issuer.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            client_secret,
            scopes: default_scopes(),
            enabled: true,
            trusted_email: false,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let id_ok = self.provider_id == "google.com"
            || self.provider_id.strip_prefix("oidc.").is_some_and(|n| {
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            });
        if !id_ok {
            return Err(Error::internal(format!(
                "provider id {:?} must be google.com or oidc.<name>",
                self.provider_id
            )));
        }
        let issuer_ok = url::Url::parse(&self.issuer)
            .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host_str().is_some());
        if !issuer_ok || self.client_id.is_empty() {
            return Err(Error::internal(format!(
                "provider {}: an http(s) issuer and a client id are required",
                self.provider_id
            )));
        }
        Ok(())
    }
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids() {
        let s = SecretString::from("x");
        assert!(IdpConfig::google("c", s.clone()).validate().is_ok());
        assert!(
            IdpConfig::oidc("corp", "https://id.corp", "c", s.clone())
                .validate()
                .is_ok()
        );
        let mut bad = IdpConfig::oidc("corp", "https://id.corp", "c", s);
        bad.provider_id = "saml.corp".into();
        assert!(bad.validate().is_err());
    }
}
