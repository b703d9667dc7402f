//! Service identity and IAM: projects, service accounts and their keys, Google-style ID tokens
//! and access tokens, the JWT-bearer grant, IAM Credentials operations, policies with their
//! predefined roles, permission checks and the audit log.
//!
//! Knows no HTTP. State lives in the store; per-process caches (accounts, keys, policies) are
//! short-lived (`IamConfig::cache_ttl`) so replicas sharing a database agree within that time.

#![forbid(unsafe_code)]

mod credentials;
pub mod policy;
pub mod roles;
mod tokens;

pub use credentials::{SignedJwt, decode_bytes};
pub use policy::Policy;
pub use tokens::{GrantError, GrantResponse, ID_TOKEN_ISSUER};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_keyring::{Clock, Keyring, Purpose};

/// The database's master key, which the signing keys are sealed under.
pub use gatehouse_keyring::envelope::Key as MasterKey;
use gatehouse_store::{
    AuditRecord, ProjectRecord, ServiceAccountKeyRecord, ServiceAccountRecord, Store,
};
use gatehouse_tokens::SigningKey;
use serde_json::{Value, json};
use sha2::Digest as _;

/// Errors, with Google's canonical status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The HTTP status Google maps the canonical code to.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::InvalidArgument(_) | Self::FailedPrecondition(_) => 400,
            Self::Unauthenticated(_) => 401,
            Self::PermissionDenied(_) => 403,
            Self::NotFound(_) => 404,
            Self::AlreadyExists(_) | Self::Aborted(_) => 409,
            Self::Internal(_) => 500,
        }
    }

    /// The canonical code's name.
    pub fn status(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::FailedPrecondition(_) => "FAILED_PRECONDITION",
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::PermissionDenied(_) => "PERMISSION_DENIED",
            Self::NotFound(_) => "NOT_FOUND",
            Self::AlreadyExists(_) => "ALREADY_EXISTS",
            Self::Aborted(_) => "ABORTED",
            Self::Internal(_) => "INTERNAL",
        }
    }

    /// The permission-denied error Google gives for `permission` on `resource`.
    pub fn denied(permission: &str, resource: &str) -> Self {
        Self::PermissionDenied(format!(
            "Permission '{permission}' denied on resource '{resource}' (or it may not exist)."
        ))
    }

    /// The message Google gives when no credentials are sent.
    pub fn missing_credentials() -> Self {
        Self::Unauthenticated(
            "Request is missing required authentication credential. Expected OAuth 2 access \
             token, login cookie or other valid authentication credential. See \
             https://developers.google.com/identity/sign-in/web/devconsole-project."
                .into(),
        )
    }

    /// The message Google gives for bad credentials.
    pub fn unauthenticated() -> Self {
        Self::Unauthenticated(
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login \
             cookie or other valid authentication credential. See \
             https://developers.google.com/identity/sign-in/web/devconsole-project."
                .into(),
        )
    }
}

impl From<gatehouse_store::Error> for Error {
    fn from(e: gatehouse_store::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<gatehouse_keyring::Error> for Error {
    fn from(e: gatehouse_keyring::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials.
    Anonymous,
    /// A service account (by its email and unique id).
    ServiceAccount { email: String, unique_id: String },
    /// A user (by email).
    User { email: String },
    /// The local administrator: the `gatehouse` CLI working on the database, as a project
    /// owner's `gcloud` would. Holds every permission; its decisions are audited too.
    Local,
}

impl Principal {
    /// The member string that names this principal (`serviceAccount:…`, `user:…`,
    /// `allUsers` for anonymous callers).
    pub fn member(&self) -> String {
        match self {
            Self::Anonymous => "allUsers".to_owned(),
            Self::ServiceAccount { email, .. } => format!("serviceAccount:{email}"),
            Self::User { email } => format!("user:{email}"),
            Self::Local => "local:admin".to_owned(),
        }
    }
}

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
pub(crate) const GOOGLE_ID_TOKEN: Purpose = Purpose {
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

/// Decisions waiting for the audit writer at most; more wait for it.
const AUDIT_QUEUE: usize = 65_536;
/// Decisions written per batch at most.
const AUDIT_BATCH: usize = 8_192;

/// Lifetime of the system-managed key a service account signs blobs and JWTs with.
const SYSTEM_KEY_MS: i64 = 14 * 86_400_000;
/// User-managed keys never expire (Google's default); stored as far in the future.
const NO_EXPIRY_MS: i64 = 253_402_300_799_000;

/// A short-lived per-process cache.
struct Ttl<V> {
    ttl: Duration,
    map: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Ttl<V> {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &str) -> Option<V> {
        let map = self.map.lock().ok()?;
        map.get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: &str, v: V) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() > 50_000 {
                map.clear();
            }
            map.insert(key.to_owned(), (Instant::now(), v));
        }
    }

    fn forget(&self, key: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(key);
        }
    }
}

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

/// The resource name of a project.
pub fn project_resource(project: &str) -> String {
    format!("projects/{project}")
}

/// The resource name of a service account.
pub fn account_resource(project: &str, email: &str) -> String {
    format!("projects/{project}/serviceAccounts/{email}")
}

/// A resource and the resources above it whose policies also apply, nearest first:
/// `projects/p/secrets/s/versions/3` → itself, `projects/p/secrets/s`, `projects/p`.
pub fn ancestors(resource: &str) -> impl Iterator<Item = &str> {
    let segments = resource.split('/').count();
    let mut ends: Vec<usize> = resource
        .match_indices('/')
        .map(|(i, _)| i)
        .enumerate()
        // The slash after an even number of segments ends a `collection/id` prefix.
        .filter(|(n, _)| (n + 1).is_multiple_of(2))
        .map(|(_, i)| i)
        .collect();
    ends.reverse();
    let own = segments.is_multiple_of(2).then_some(resource);
    own.into_iter()
        .chain(ends.into_iter().map(move |i| &resource[..i]))
        .filter(|r| r.starts_with("projects/"))
}

/// The project a resource name belongs to (`projects/{p}/…`).
pub fn resource_project(resource: &str) -> Option<&str> {
    let rest = resource.strip_prefix("projects/")?;
    Some(rest.split('/').next().unwrap_or(rest)).filter(|p| !p.is_empty())
}

/// `n` random digits starting with 1 (the shape of Google's unique ids).
fn random_digits(n: usize) -> String {
    use rand::Rng as _;
    let mut rng = rand::rng();
    let mut s = String::from("1");
    s.extend((1..n).map(|_| char::from(b'0' + rng.random_range(0..10u8))));
    s
}

/// Google's rules for account ids: 6–30 characters, lower-case letters, digits and hyphens,
/// starting with a letter and not ending with a hyphen.
fn valid_account_id(id: &str) -> bool {
    let b = id.as_bytes();
    (6..=30).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.last() != Some(&b'-')
}

/// Project ids: 6–30 characters of lower-case letters, digits and hyphens, starting with a
/// letter (Google's rule; `demo-*` ids as the Firebase emulators use are fine).
pub fn valid_project_id(id: &str) -> bool {
    valid_account_id(id)
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
        let (tx, rx) = tokio::sync::mpsc::channel(AUDIT_QUEUE);
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
        tokio::spawn(audit_writer(Arc::downgrade(&iam.inner), rx));
        Ok(iam)
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

    // ------------------------------------------------------------------ projects

    /// The project with this id (created on first use, with a stable 12-digit number).
    pub async fn project(&self, project_id: &str) -> Result<ProjectRecord> {
        if let Some(p) = self.inner.store.project(project_id).await? {
            return Ok(p);
        }
        if !valid_project_id(project_id) {
            return Err(Error::InvalidArgument(format!(
                "Invalid project id: {project_id}"
            )));
        }
        let digest = sha2::Sha256::digest(project_id.as_bytes());
        let mut n: u64 = 0;
        for b in &digest[..8] {
            n = (n << 8) | u64::from(*b);
        }
        let number = format!("{}", 100_000_000_000 + n % 900_000_000_000);
        Ok(self
            .inner
            .store
            .ensure_project(project_id, &number, self.now_ms())
            .await?)
    }

    // ------------------------------------------------------------------ accounts

    /// Creates `account_id@project.iam.gserviceaccount.com`.
    pub async fn create_account(
        &self,
        project: &str,
        account_id: &str,
        display_name: &str,
        description: &str,
    ) -> Result<ServiceAccountRecord> {
        if !valid_account_id(account_id) {
            return Err(Error::InvalidArgument(format!(
                "Invalid account id {account_id:?}: 6 to 30 lower-case letters, digits or hyphens, \
                 starting with a letter."
            )));
        }
        let project = self.project(project).await?;
        let email = format!(
            "{account_id}@{}.iam.gserviceaccount.com",
            project.project_id
        );
        let record = ServiceAccountRecord {
            email: email.clone(),
            project_id: project.project_id.clone(),
            account_id: account_id.to_owned(),
            unique_id: random_digits(21),
            display_name: display_name.to_owned(),
            description: description.to_owned(),
            disabled: false,
            created_at: self.now_ms(),
        };
        match self.inner.store.insert_service_account(&record).await {
            Ok(()) => {}
            Err(gatehouse_store::Error::Conflict(_)) => {
                return Err(Error::AlreadyExists(format!(
                    "Service account {account_id} already exists within project projects/{}.",
                    project.project_id
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.inner.accounts.forget(&email);
        Ok(record)
    }

    /// A service account by email or unique id (cached).
    pub async fn account(&self, email_or_id: &str) -> Result<Option<Arc<ServiceAccountRecord>>> {
        if let Some(hit) = self.inner.accounts.get(email_or_id) {
            return Ok(hit);
        }
        let found = self
            .inner
            .store
            .service_account(email_or_id)
            .await?
            .map(Arc::new);
        self.inner.accounts.put(email_or_id, found.clone());
        Ok(found)
    }

    /// A service account that must exist.
    pub async fn require_account(&self, email_or_id: &str) -> Result<Arc<ServiceAccountRecord>> {
        self.account(email_or_id).await?.ok_or_else(|| {
            Error::NotFound(format!(
                "Service account projects/-/serviceAccounts/{email_or_id} does not exist."
            ))
        })
    }

    /// A project's service accounts.
    pub async fn accounts(&self, project: &str) -> Result<Vec<ServiceAccountRecord>> {
        let project = self.project(project).await?;
        Ok(self
            .inner
            .store
            .service_accounts(&project.project_id)
            .await?)
    }

    /// Disables or enables an account: its keys and tokens stop (or start again) working.
    pub async fn set_account_disabled(&self, email: &str, disabled: bool) -> Result<()> {
        let mut a = (*self.require_account(email).await?).clone();
        a.disabled = disabled;
        self.inner.store.update_service_account(&a).await?;
        self.forget_account(&a);
        Ok(())
    }

    /// Updates display name and description.
    pub async fn update_account(
        &self,
        email: &str,
        display_name: Option<&str>,
        description: Option<&str>,
    ) -> Result<ServiceAccountRecord> {
        let mut a = (*self.require_account(email).await?).clone();
        if let Some(d) = display_name {
            a.display_name = d.to_owned();
        }
        if let Some(d) = description {
            a.description = d.to_owned();
        }
        self.inner.store.update_service_account(&a).await?;
        self.forget_account(&a);
        Ok(a)
    }

    /// Deletes an account with its keys and its policy.
    pub async fn delete_account(&self, email: &str) -> Result<()> {
        let a = self.require_account(email).await?;
        let keys = self.inner.store.service_account_keys(&a.email).await?;
        let resource = account_resource(&a.project_id, &a.email);
        self.inner
            .store
            .delete_service_account(&a.email, &resource)
            .await?;
        for k in keys {
            self.inner.keys.forget(&k.key_id);
        }
        self.inner.policies.forget(&resource);
        self.forget_account(&a);
        Ok(())
    }

    fn forget_account(&self, a: &ServiceAccountRecord) {
        self.inner.accounts.forget(&a.email);
        self.inner.accounts.forget(&a.unique_id);
    }

    // ------------------------------------------------------------------ keys

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

    /// The account's published public keys (enabled, unexpired) as `{kid: PEM certificate}`.
    pub async fn public_x509(&self, email: &str) -> Result<Value> {
        let now = self.now_ms();
        let mut map = serde_json::Map::new();
        for k in self.keys(email).await? {
            if !k.disabled && k.expires_at > now {
                map.insert(k.key_id.clone(), Value::String(k.certificate.clone()));
            }
        }
        Ok(Value::Object(map))
    }

    /// The account's published public keys as a JWK set.
    pub async fn public_jwks(&self, email: &str) -> Result<Value> {
        let now = self.now_ms();
        let mut keys = Vec::new();
        for k in self.keys(email).await? {
            if !k.disabled && k.expires_at > now {
                keys.push(serde_json::from_str::<Value>(&k.public_jwk).unwrap_or(Value::Null));
            }
        }
        Ok(json!({ "keys": keys }))
    }

    // ------------------------------------------------------------------ policies

    /// A resource's policy and its write count (cached).
    pub async fn policy(&self, resource: &str) -> Result<Arc<(Policy, i64)>> {
        if let Some(hit) = self.inner.policies.get(resource) {
            return Ok(hit);
        }
        let found = match self.inner.store.iam_policy(resource).await? {
            Some((text, writes)) => (Policy::from_store(&text)?, writes),
            None => (Policy::default(), 0),
        };
        let found = Arc::new(found);
        self.inner.policies.put(resource, found.clone());
        Ok(found)
    }

    /// Replaces a resource's policy. With `etag` the write happens only if the policy is still
    /// the one the caller read (else ABORTED, as Google). Service accounts named as members
    /// must exist. Returns the new write count.
    pub async fn set_policy(
        &self,
        resource: &str,
        policy: &Policy,
        etag: Option<&str>,
    ) -> Result<i64> {
        let expected = etag.map(policy::parse_etag).transpose()?;
        let is_project =
            resource_project(resource).is_some_and(|p| resource == project_resource(p));
        if is_project
            && policy.bindings.iter().any(|b| {
                b.members
                    .iter()
                    .any(|m| m == "allUsers" || m == "allAuthenticatedUsers")
            })
        {
            return Err(Error::InvalidArgument(
                "Project does not support allUsers and allAuthenticatedUsers as members in a \
                 Binding of a Policy."
                    .into(),
            ));
        }
        for b in &policy.bindings {
            for m in &b.members {
                if let Some(email) = m.strip_prefix("serviceAccount:")
                    && email.ends_with(".iam.gserviceaccount.com")
                    && self.account(email).await?.is_none()
                {
                    return Err(Error::InvalidArgument(format!(
                        "Service account {email} does not exist."
                    )));
                }
            }
        }
        let result = match self
            .inner
            .store
            .put_iam_policy(resource, &policy.to_store(), expected, self.now_ms())
            .await
        {
            Err(gatehouse_store::Error::Conflict(_)) => Err(Error::Aborted(
                "There were concurrent policy changes. Please retry the whole \
                 read-modify-write with exponential backoff."
                    .into(),
            )),
            other => other.map_err(Error::from),
        };
        self.inner.policies.forget(resource);
        result
    }

    /// Adds (or removes) one binding with a read-modify-write that retries on concurrent
    /// changes. Returns whether the policy changed.
    pub async fn edit_binding(
        &self,
        resource: &str,
        role: &str,
        member: &str,
        add: bool,
    ) -> Result<bool> {
        if !roles::exists(role) {
            return Err(Error::InvalidArgument(format!(
                "Role ({role}) does not exist in the resource's hierarchy."
            )));
        }
        // Validates the member's form.
        Policy::from_json(&json!({"bindings": [{"role": role, "members": [member]}]}))?;
        for _ in 0..5 {
            self.inner.policies.forget(resource);
            let current = self.policy(resource).await?;
            let mut next = current.0.clone();
            let changed = if add {
                next.add(role, member)
            } else {
                next.remove(role, member)
            };
            if !changed {
                return Ok(false);
            }
            match self
                .set_policy(resource, &next, Some(&policy::etag(current.1)))
                .await
            {
                Ok(_) => return Ok(true),
                Err(Error::Aborted(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Aborted("too many concurrent policy changes".into()))
    }

    // ------------------------------------------------------------------ checks

    /// Whether `principal` holds `permission` on `resource` (its own policy or its project's).
    /// Every decision goes to the audit log.
    pub async fn check(
        &self,
        principal: &Principal,
        permission: &str,
        resource: &str,
    ) -> Result<bool> {
        let allowed = self.evaluate(principal, permission, resource).await?;
        self.audit(principal, permission, resource, allowed).await;
        Ok(allowed)
    }

    /// Whether anyone at all (`allUsers`) holds `permission` on `resource`. A property of the
    /// resource's policies rather than a decision about a caller, so it is not audited.
    pub async fn is_public(&self, permission: &str, resource: &str) -> Result<bool> {
        self.evaluate(&Principal::Anonymous, permission, resource)
            .await
    }

    /// The decision itself: the resource's policy or an ancestor's grants `permission`.
    async fn evaluate(
        &self,
        principal: &Principal,
        permission: &str,
        resource: &str,
    ) -> Result<bool> {
        if matches!(principal, Principal::Local) {
            return Ok(true);
        }
        for r in ancestors(resource) {
            if self.policy(r).await?.0.allows(principal, permission) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Like [`Self::check`], failing with Google's PERMISSION_DENIED.
    pub async fn require(
        &self,
        principal: &Principal,
        permission: &str,
        resource: &str,
    ) -> Result<()> {
        if self.check(principal, permission, resource).await? {
            Ok(())
        } else {
            Err(Error::denied(permission, resource))
        }
    }

    /// The subset of `permissions` the principal holds on `resource`.
    pub async fn test_permissions(
        &self,
        principal: &Principal,
        resource: &str,
        permissions: &[String],
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for p in permissions {
            if p.contains('*') {
                return Err(Error::InvalidArgument(format!(
                    "Permission {p} is not valid: wildcards are not allowed."
                )));
            }
            if roles::known_permission(p) && self.check(principal, p, resource).await? {
                out.push(p.clone());
            }
        }
        Ok(out)
    }

    /// Queues a decision for the audit log; when the writer falls behind by a full queue,
    /// decisions wait for it (nothing is dropped, memory stays bounded).
    async fn audit(&self, principal: &Principal, permission: &str, resource: &str, allowed: bool) {
        let who = principal.member();
        tracing::info!(target: "gatehouse::audit", principal = %who, permission, resource, allowed, "access decision");
        self.inner
            .audit_pending
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let record = AuditRecord {
            at: self.now_ms(),
            principal: who,
            permission: permission.to_owned(),
            resource: resource.to_owned(),
            allowed,
            count: 1,
        };
        if self.inner.audit.send(record).await.is_err() {
            self.inner
                .audit_pending
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Waits until every decision made so far is in the store.
    pub async fn flush_audit(&self) {
        loop {
            let notified = self.inner.audit_flushed.notified();
            if self
                .inner
                .audit_pending
                .load(std::sync::atomic::Ordering::SeqCst)
                == 0
            {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    /// The newest audit records, newest first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditRecord>> {
        self.flush_audit().await;
        Ok(self.inner.store.audit(limit).await?)
    }
}

/// Writes audit records in batches, off the request path. Identical decisions in one batch
/// become one row with their count.
async fn audit_writer(
    inner: std::sync::Weak<Inner>,
    mut rx: tokio::sync::mpsc::Receiver<AuditRecord>,
) {
    let mut batch = Vec::with_capacity(AUDIT_BATCH);
    while rx.recv_many(&mut batch, AUDIT_BATCH).await > 0 {
        let Some(inner) = inner.upgrade() else { return };
        let n = batch.len() as u64;
        let mut rows: Vec<AuditRecord> = Vec::new();
        let mut index: HashMap<(String, String, String, bool), usize> = HashMap::new();
        for r in batch.drain(..) {
            let key = (
                r.principal.clone(),
                r.permission.clone(),
                r.resource.clone(),
                r.allowed,
            );
            match index.get(&key) {
                Some(&i) => rows[i].count += r.count,
                None => {
                    index.insert(key, rows.len());
                    rows.push(r);
                }
            }
        }
        if let Err(e) = inner.store.insert_audit(&rows).await {
            tracing::error!(error = %e, records = n, "audit log write failed");
        }
        inner
            .audit_pending
            .fetch_sub(n, std::sync::atomic::Ordering::SeqCst);
        inner.audit_flushed.notify_waiters();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ancestors() {
        let a: Vec<&str> = ancestors("projects/p/secrets/s/versions/3").collect();
        assert_eq!(
            a,
            [
                "projects/p/secrets/s/versions/3",
                "projects/p/secrets/s",
                "projects/p"
            ]
        );
        let a: Vec<&str> = ancestors("projects/p/locations/l/services/hello").collect();
        assert_eq!(
            a,
            [
                "projects/p/locations/l/services/hello",
                "projects/p/locations/l",
                "projects/p"
            ]
        );
        assert_eq!(ancestors("projects/p").collect::<Vec<_>>(), ["projects/p"]);
        assert_eq!(
            ancestors("projects/p/serviceAccounts/a@b.c").collect::<Vec<_>>(),
            ["projects/p/serviceAccounts/a@b.c", "projects/p"]
        );
    }
}
