//! Service identity and IAM: projects, service accounts and their keys, Google-style ID tokens
//! and access tokens, the JWT-bearer grant, IAM Credentials operations, policies with their
//! predefined roles, permission checks and the audit log.
//!
//! State lives in the store; per-process caches (accounts, keys, policies) are short-lived
//! (`IamConfig::cache_ttl`) so replicas sharing a database agree within that time.
//!
//! By concern: `accounts` (projects and service accounts), `keys` (their keys and key
//! publication), `tokens` (ID and access tokens, the JWT-bearer grant, authentication of bearer
//! tokens), `credentials` (the IAM Credentials API), `access` (policies and permission checks),
//! [`policy`] and [`roles`] (the policy document, the predefined roles), `audit` (the decision
//! log), `resource` (resource names and id rules).
//!
//! Answers leave as typed values (records, [`Policy`] with its write count, [`Grant`] and
//! [`GrantError`], [`PublishedKey`]s); errors carry Google's canonical codes, not statuses.
//! Token claims and the service-account key file are this crate's content, not a wire format.
//!
//! Must not: speak HTTP, know HTTP statuses or the JSON shapes of the APIs' responses (that is
//! `gatehouse-iam-http`, with `gatehouse-google-api` for the error envelope and the Policy
//! message), or write SQL (that is `gatehouse-store`).

#![forbid(unsafe_code)]

mod access;
mod accounts;
mod audit;
mod cache;
mod credentials;
mod error;
mod keys;
pub mod policy;
mod principal;
mod resource;
pub mod roles;
mod tokens;

pub use credentials::{SignedJwt, decode_bytes};
pub use error::{Error, Result};
pub use keys::PublishedKey;
pub use policy::Policy;
pub use principal::Principal;
pub use resource::{
    account_resource, ancestors, project_resource, resource_project, valid_project_id,
};
pub use tokens::{Grant, GrantError, GrantErrorKind, ID_TOKEN_ISSUER};

use std::sync::Arc;
use std::time::Duration;

use gatehouse_keyring::{Clock, Keyring, Purpose};

/// The database's master key, which the signing keys are sealed under.
pub use gatehouse_keyring::envelope::Key as MasterKey;
use gatehouse_store::{AuditRecord, ServiceAccountKeyRecord, ServiceAccountRecord, Store};

use cache::Ttl;

/// Settings of the IAM core.
#[derive(Debug, Clone)]
pub struct IamConfig {
    /// Base URL where the IAM endpoints are served (key files' `token_uri`, cert URLs).
    pub public_url: String,
    /// Rotation period of the ID-token and access-token signing keys.
    pub key_rotation_secs: i64,
    /// How long accounts, keys and policies are cached per process.
    pub cache_ttl: Duration,
}

impl Default for IamConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8085".into(),
            key_rotation_secs: 6 * 3600,
            cache_ttl: Duration::from_secs(1),
        }
    }
}

/// Google ID tokens for service accounts (`iss` https://accounts.google.com).
pub const GOOGLE_ID_TOKEN: Purpose = Purpose {
    name: "google_id_token",
    max_token_ms: 3_600_000,
    cert_subject: "accounts.google.com",
};
/// Access tokens minted by the token endpoint, IAM Credentials and metadata servers.
pub(crate) const ACCESS_TOKEN: Purpose = Purpose {
    name: "iam_access_token",
    max_token_ms: 3_600_000,
    cert_subject: "oauth2.googleapis.com",
};

struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    keyring: Keyring,
    config: IamConfig,
    accounts: Ttl<Option<Arc<ServiceAccountRecord>>>,
    keys: Ttl<Option<Arc<ServiceAccountKeyRecord>>>,
    policies: Ttl<Arc<(Policy, i64)>>,
    audit: tokio::sync::mpsc::Sender<AuditRecord>,
    audit_flushed: tokio::sync::Notify,
    audit_pending: std::sync::atomic::AtomicU64,
}

/// The IAM service.
#[derive(Clone)]
pub struct Iam {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Iam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iam")
            .field("public_url", &self.inner.config.public_url)
            .finish_non_exhaustive()
    }
}

impl Iam {
    /// Loads (or creates) the signing keys, sealed under `master_key` (the database's master
    /// key), and starts the audit writer. Must run inside a tokio runtime.
    pub async fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        master_key: Arc<MasterKey>,
        config: IamConfig,
    ) -> Result<Self> {
        let keyring = Keyring::load(
            store.clone(),
            clock.clone(),
            master_key,
            config.key_rotation_secs,
            &[GOOGLE_ID_TOKEN, ACCESS_TOKEN],
        )
        .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(audit::AUDIT_QUEUE);
        let ttl = config.cache_ttl;
        let iam = Self {
            inner: Arc::new(Inner {
                store,
                clock,
                keyring,
                config,
                accounts: Ttl::new(ttl),
                keys: Ttl::new(ttl),
                policies: Ttl::new(ttl),
                audit: tx,
                audit_flushed: tokio::sync::Notify::new(),
                audit_pending: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        tokio::spawn(audit::audit_writer(Arc::downgrade(&iam.inner), rx));
        Ok(iam)
    }

    /// The clock every decision, token and record of this IAM world is timed by (Secret
    /// Manager, built over this IAM, reads it too).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    pub(crate) fn now_secs(&self) -> i64 {
        self.inner.clock.now_ms().div_euclid(1000)
    }

    /// The configuration.
    pub fn config(&self) -> &IamConfig {
        &self.inner.config
    }

    /// The keyring (ID-token and access-token keys).
    pub fn keyring(&self) -> &Keyring {
        &self.inner.keyring
    }

    /// The ID-token keys as Google's `oauth2/v1/certs` x509 map, with its max-age.
    pub fn id_token_certs(&self) -> Result<(String, i64)> {
        Ok(self.inner.keyring.x509(&GOOGLE_ID_TOKEN)?)
    }

    /// The ID-token keys as Google's `oauth2/v3/certs` JWK set, with its max-age.
    pub fn id_token_jwks(&self) -> Result<(String, i64)> {
        Ok(self.inner.keyring.jwks(&GOOGLE_ID_TOKEN)?)
    }

    /// Re-reads signing keys (rotation by another replica) and rotates when due.
    pub async fn reload_keys(&self) -> Result<()> {
        self.inner.keyring.reload().await?;
        Ok(())
    }
}

/// An RFC 3339 timestamp in whole seconds (`2024-01-01T12:00:00Z`), as Google's APIs write.
pub fn rfc3339(ms: i64) -> String {
    gatehouse_tokens::rfc3339(ms, true)
}

/// Percent-escapes `@` and other reserved characters in a path segment.
pub fn url_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
