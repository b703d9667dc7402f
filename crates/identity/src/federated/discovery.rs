//! OpenID Connect discovery: a provider's endpoints and its key set (through an
//! [`OidcVerifier`]), cached per project and provider; and the HTTP client every outbound call
//! of federation uses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_verify::OidcVerifier;
use serde_json::Value;

use super::IdpConfig;
use crate::{Error, Result};

/// How long a provider's discovery document is trusted.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

/// A provider's endpoints and keys, from its discovery document.
pub(super) struct Discovered {
    pub(super) authorization_endpoint: String,
    pub(super) token_endpoint: String,
    pub(super) userinfo_endpoint: Option<String>,
    pub(super) verifier: OidcVerifier,
    at: Instant,
}

/// Outbound side of federation: the HTTP client and discovered providers.
pub(crate) struct Federation {
    pub(super) http: reqwest::Client,
    discovered: Mutex<HashMap<(String, String), Arc<Discovered>>>,
}

impl Federation {
    pub(crate) fn new() -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::internal(e.to_string()))?;
        Ok(Self {
            http,
            discovered: Mutex::new(HashMap::new()),
        })
    }

    pub(super) async fn discover(&self, project: &str, idp: &IdpConfig) -> Result<Arc<Discovered>> {
        let key = (project.to_owned(), idp.provider_id.clone());
        if let Some(d) = self
            .discovered
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
            && d.at.elapsed() < DISCOVERY_TTL
        {
            return Ok(d);
        }
        let url = format!("{}/.well-known/openid-configuration", idp.issuer);
        let unavailable = |why: String| {
            tracing::warn!(
                provider = idp.provider_id,
                url,
                why,
                "provider discovery failed"
            );
            Error::detail(
                "INVALID_IDP_RESPONSE",
                format!("the provider {} could not be reached", idp.provider_id),
            )
        };
        let res = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !res.status().is_success() {
            return Err(unavailable(format!("status {}", res.status())));
        }
        let doc: Value = res.json().await.map_err(|e| unavailable(e.to_string()))?;
        let field = |name: &str| doc.get(name).and_then(Value::as_str).map(str::to_owned);
        // OpenID Connect Discovery §4.3: the document's issuer is the one configured.
        if field("issuer").as_deref().map(|i| i.trim_end_matches('/'))
            != Some(idp.issuer.trim_end_matches('/'))
        {
            return Err(unavailable(format!(
                "discovery issuer {:?} is not {}",
                field("issuer"),
                idp.issuer
            )));
        }
        let (Some(authorization_endpoint), Some(token_endpoint), Some(jwks_uri)) = (
            field("authorization_endpoint"),
            field("token_endpoint"),
            field("jwks_uri"),
        ) else {
            return Err(unavailable("discovery document lacks endpoints".into()));
        };
        let issuer = field("issuer").unwrap_or_else(|| idp.issuer.clone());
        let d = Arc::new(Discovered {
            authorization_endpoint,
            token_endpoint,
            userinfo_endpoint: field("userinfo_endpoint"),
            verifier: OidcVerifier::new(&issuer, &idp.client_id, &jwks_uri, self.http.clone()),
            at: Instant::now(),
        });
        if let Ok(mut m) = self.discovered.lock() {
            m.insert(key, d.clone());
        }
        Ok(d)
    }
}
