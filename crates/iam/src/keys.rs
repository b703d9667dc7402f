//! Service-account keys: user-managed keys (the private key exists only in the key file
//! handed out), the system-managed key that signs blobs and JWTs, and which public keys are
//! published.

use std::sync::Arc;

use gatehouse_store::{ServiceAccountKeyRecord, ServiceAccountRecord};
use gatehouse_tokens::SigningKey;
use serde_json::{Value, json};

use crate::{Error, Iam, Result, url_escape};

/// Lifetime of the system-managed key a service account signs blobs and JWTs with.
const SYSTEM_KEY_MS: i64 = 14 * 86_400_000;
/// User-managed keys never expire (Google's default); stored as far in the future.
const NO_EXPIRY_MS: i64 = 253_402_300_799_000;

/// A service account's public key as published.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedKey {
    pub key_id: String,
    /// The x509 certificate (PEM).
    pub certificate: String,
    /// The public key as a JWK (`null` if the stored form does not parse).
    pub jwk: Value,
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl Iam {
    /// Creates a user-managed RSA-2048 key. Returns the record and the key file (Google's JSON;
    /// the private key exists only there).
    pub async fn create_key(&self, email: &str) -> Result<(ServiceAccountKeyRecord, Value)> {
        let a = self.require_account(email).await?;
        if a.disabled {
            return Err(Error::FailedPrecondition(format!(
                "Service account {} is disabled.",
                a.email
            )));
        }
        let key = SigningKey::generate().map_err(|e| Error::Internal(e.to_string()))?;
        let now = self.now_ms();
        let record = ServiceAccountKeyRecord {
            key_id: key.kid().to_owned(),
            email: a.email.clone(),
            managed: "USER_MANAGED".into(),
            public_jwk: key.public().jwk().to_string(),
            certificate: key
                .certificate_pem(&a.email, now / 1000 - 60, NO_EXPIRY_MS / 1000)
                .map_err(|e| Error::Internal(e.to_string()))?,
            private_der: None,
            disabled: false,
            created_at: now,
            expires_at: NO_EXPIRY_MS,
        };
        self.inner.store.insert_service_account_key(&record).await?;
        let base = self.inner.config.public_url.trim_end_matches('/');
        let file = json!({
            "type": "service_account",
            "project_id": a.project_id,
            "private_key_id": record.key_id,
            "private_key": pem("PRIVATE KEY", key.pkcs8_der()),
            "client_email": a.email,
            "client_id": a.unique_id,
            "auth_uri": format!("{base}/o/oauth2/auth"),
            "token_uri": format!("{base}/token"),
            "auth_provider_x509_cert_url": format!("{base}/oauth2/v1/certs"),
            "client_x509_cert_url": format!("{base}/robot/v1/metadata/x509/{}", url_escape(&a.email)),
            "universe_domain": "googleapis.com",
        });
        Ok((record, file))
    }

    /// An account's keys (user- and system-managed).
    pub async fn keys(&self, email: &str) -> Result<Vec<ServiceAccountKeyRecord>> {
        let a = self.require_account(email).await?;
        Ok(self.inner.store.service_account_keys(&a.email).await?)
    }

    /// One key (cached).
    pub async fn key(&self, key_id: &str) -> Result<Option<Arc<ServiceAccountKeyRecord>>> {
        if let Some(hit) = self.inner.keys.get(key_id) {
            return Ok(hit);
        }
        let found = self
            .inner
            .store
            .service_account_key(key_id)
            .await?
            .map(Arc::new);
        self.inner.keys.put(key_id, found.clone());
        Ok(found)
    }

    fn key_not_found(key_id: &str) -> Error {
        Error::NotFound(format!("Service account key {key_id} does not exist."))
    }

    /// Disables or enables a key of `email`.
    pub async fn set_key_disabled(&self, email: &str, key_id: &str, disabled: bool) -> Result<()> {
        let a = self.require_account(email).await?;
        match self.key(key_id).await? {
            Some(k) if k.email == a.email => {}
            _ => return Err(Self::key_not_found(key_id)),
        }
        self.inner
            .store
            .set_service_account_key_disabled(key_id, disabled)
            .await?;
        self.inner.keys.forget(key_id);
        Ok(())
    }

    /// Deletes a key of `email`: tokens it signed, and access tokens minted with it, stop
    /// working.
    pub async fn delete_key(&self, email: &str, key_id: &str) -> Result<()> {
        let a = self.require_account(email).await?;
        match self.key(key_id).await? {
            Some(k) if k.email == a.email => {}
            _ => return Err(Self::key_not_found(key_id)),
        }
        self.inner.store.delete_service_account_key(key_id).await?;
        self.inner.keys.forget(key_id);
        Ok(())
    }

    /// The account's signing key held by the system (for signBlob / signJwt), created on first
    /// use and replaced when it nears expiry.
    pub(crate) async fn system_key(&self, a: &ServiceAccountRecord) -> Result<SigningKey> {
        let now = self.now_ms();
        let keys = self.inner.store.service_account_keys(&a.email).await?;
        if let Some(k) = keys.iter().rev().find(|k| {
            k.managed == "SYSTEM_MANAGED"
                && !k.disabled
                && k.expires_at - now > SYSTEM_KEY_MS / 2
                && k.private_der.is_some()
        }) && let Some(der) = &k.private_der
        {
            return SigningKey::from_pkcs8(k.key_id.clone(), der)
                .map_err(|e| Error::Internal(e.to_string()));
        }
        let key = SigningKey::generate().map_err(|e| Error::Internal(e.to_string()))?;
        let record = ServiceAccountKeyRecord {
            key_id: key.kid().to_owned(),
            email: a.email.clone(),
            managed: "SYSTEM_MANAGED".into(),
            public_jwk: key.public().jwk().to_string(),
            certificate: key
                .certificate_pem(&a.email, now / 1000 - 60, (now + SYSTEM_KEY_MS) / 1000)
                .map_err(|e| Error::Internal(e.to_string()))?,
            private_der: Some(key.pkcs8_der().to_vec()),
            disabled: false,
            created_at: now,
            expires_at: now + SYSTEM_KEY_MS,
        };
        self.inner.store.insert_service_account_key(&record).await?;
        Ok(key)
    }

    /// The account's published public keys: enabled and unexpired, in key order. (The x509
    /// map and the JWK set served from them are `gatehouse-iam-http`'s.)
    pub async fn published_keys(&self, email: &str) -> Result<Vec<PublishedKey>> {
        let now = self.now_ms();
        Ok(self
            .keys(email)
            .await?
            .into_iter()
            .filter(|k| !k.disabled && k.expires_at > now)
            .map(|k| PublishedKey {
                jwk: serde_json::from_str::<Value>(&k.public_jwk).unwrap_or(Value::Null),
                key_id: k.key_id,
                certificate: k.certificate,
            })
            .collect())
    }
}
