//! End-user identity with Firebase Auth / Identity Platform semantics.
//!
//! Owns the rules: who may sign up and how, password hashing (argon2id, plus verification of
//! imported Firebase-scrypt, scrypt, bcrypt, PBKDF2 and HMAC hashes), ID-token and refresh-token
//! issue and revocation, session cookies, out-of-band codes and the e-mail that carries them,
//! signing-key rotation, and abuse limits. Errors carry Firebase's error codes, since those are
//! the domain's vocabulary.
//!
//! Federated sign-in (OpenID Connect providers, Google among them) lives in `federated`, split
//! by concern: provider configuration, discovery, the hosted page's code flow,
//! `accounts:signInWithIdp`, and account linking.
//!
//! Answers leave as typed values (`IdpSignedIn`, `UserRecord`, tokens, errors by Firebase
//! code); requests arrive as the typed structs of `requests`, which `gatehouse-identity-http`
//! decodes.
//!
//! Must not: speak HTTP to its callers, know HTTP statuses or the JSON shapes of the API's
//! responses (all of that is `gatehouse-identity-http`'s; the only HTTP here is outbound, to
//! identity providers), or write SQL (that is `gatehouse-store`). Token claims are this
//! crate's: they are what it signs, not a wire format.

#![forbid(unsafe_code)]

mod accounts;
mod admin;
mod config;
mod custom_token;
mod error;
mod federated;
mod hashing;
mod keyring;
mod limits;
mod mail;
mod oob;
pub mod password;
mod requests;
mod session;
mod update;
mod user;
mod verified;

pub use config::{Mode, ProjectConfig, ProjectSettings, RateLimits, SmtpConfig, SmtpSecurity};
pub use error::{Error, Result, unwritable_message};
pub use federated::{
    GOOGLE_ISSUER, IdpConfig, IdpProfile, IdpSignedIn, ReturnTo, SignInWithIdpRequest,
    binding_cookie,
};
pub use gatehouse_keyring::{Clock, ManualClock, SystemClock};
pub use keyring::{KeyPurpose, Keyring, MasterKey};
pub use limits::Limits;
pub use mail::Mailer;
pub use requests::*;
pub use session::{Caller, IssuedTokens, RefreshedTokens};
pub use user::{ProviderInfo, provider_infos};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use gatehouse_store::Store;
use gatehouse_tokens::PublicKey;

/// The identity service: every operation of the Identity Toolkit and Secure Token APIs.
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    projects: HashMap<String, Arc<ProjectConfig>>,
    default_project: String,
    api_keys: HashMap<String, String>,
    keyring: Keyring,
    limits: Limits,
    mailer: Option<Mailer>,
    public_url: String,
    hashing: hashing::HashPool,
    settings: tokio::sync::RwLock<HashMap<String, ProjectSettings>>,
    verified: verified::VerifiedTokens,
    authority: Option<Arc<dyn Authority>>,
    federation: federated::Federation,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("default_project", &self.inner.default_project)
            .field("projects", &self.inner.projects.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Everything needed to build an [`Identity`].
pub struct IdentityOptions {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    /// The projects served; the first is the default one.
    pub projects: Vec<ProjectConfig>,
    pub rate_limits: RateLimits,
    pub smtp: Option<SmtpConfig>,
    /// Base URL that e-mailed links point at (e.g. `http://127.0.0.1:9099`).
    pub public_url: String,
    /// How often signing keys rotate, in seconds.
    pub key_rotation_secs: i64,
    /// The database's master key: the signing keys are stored sealed under it.
    pub master_key: Arc<MasterKey>,
    /// IAM: admin credentials and custom-token signers beyond the static configuration.
    pub authority: Option<Arc<dyn Authority>>,
}

/// A future returned by an [`Authority`].
pub type AuthorityFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Who else may administer a project and sign its custom tokens: Google's IAM plays this part
/// for Identity Platform (service accounts holding `roles/firebaseauth.admin`, keys of the
/// project's service accounts).
pub trait Authority: Send + Sync + 'static {
    /// Whether `bearer` (an OAuth access token or a self-signed service-account JWT) is an
    /// admin credential for `project_id`.
    fn is_admin<'a>(&'a self, bearer: &'a str, project_id: &'a str) -> AuthorityFuture<'a, bool>;

    /// The public keys with which `issuer` (a service-account e-mail) may sign custom tokens
    /// for `project_id`; empty if it is not an enabled account of that project.
    fn custom_token_keys<'a>(
        &'a self,
        issuer: &'a str,
        project_id: &'a str,
    ) -> AuthorityFuture<'a, Vec<PublicKey>>;
}

impl Identity {
    /// Builds the service: loads (or creates) signing keys and project settings.
    pub async fn new(options: IdentityOptions) -> Result<Self> {
        let IdentityOptions {
            store,
            clock,
            projects,
            rate_limits,
            smtp,
            public_url,
            key_rotation_secs,
            master_key,
            authority,
        } = options;
        let default_project = projects
            .first()
            .map(|p| p.project_id.clone())
            .ok_or_else(|| Error::internal("no project configured"))?;
        let mut api_keys = HashMap::new();
        let mut by_id = HashMap::new();
        let mut settings = HashMap::new();
        for project in projects {
            project.validate()?;
            for key in &project.api_keys {
                api_keys.insert(key.clone(), project.project_id.clone());
            }
            let stored = store.project_settings(&project.project_id).await?;
            let current = match stored {
                Some(text) => {
                    serde_json::from_str(&text).unwrap_or_else(|_| project.settings.clone())
                }
                None => project.settings.clone(),
            };
            settings.insert(project.project_id.clone(), current);
            by_id.insert(project.project_id.clone(), Arc::new(project));
        }
        let keyring =
            Keyring::load(store.clone(), clock.clone(), master_key, key_rotation_secs).await?;
        let mailer = smtp.map(Mailer::new).transpose()?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                clock,
                projects: by_id,
                default_project,
                api_keys,
                keyring,
                limits: Limits::new(rate_limits),
                mailer,
                public_url: public_url.trim_end_matches('/').to_owned(),
                hashing: hashing::HashPool::new(cores)?,
                settings: tokio::sync::RwLock::new(settings),
                verified: verified::VerifiedTokens::default(),
                authority,
                federation: federated::Federation::new()?,
            }),
        })
    }

    /// The signing keys (for publication and for verifiers).
    pub fn keyring(&self) -> &Keyring {
        &self.inner.keyring
    }

    /// The default project's id.
    pub fn default_project(&self) -> &str {
        &self.inner.default_project
    }

    /// A served project's configuration.
    pub fn project(&self, id: &str) -> Option<Arc<ProjectConfig>> {
        self.inner.projects.get(id).cloned()
    }

    /// Checks the store answers (for health checks).
    pub async fn ready(&self) -> Result<()> {
        self.inner.store.ping().await?;
        Ok(())
    }

    /// Runs for the life of the server: re-reads the signing keys every
    /// [`Keyring::reload_interval`] (rotation, and keys revoked or rotated by other processes,
    /// show in the published set within it) and runs [`Identity::housekeeping`] every 30 s.
    pub async fn maintain(self) {
        let mut keys = tokio::time::interval(self.inner.keyring.reload_interval());
        keys.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(std::time::Duration::from_secs(30));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keys.tick().await;
        housekeeping.tick().await;
        loop {
            tokio::select! {
                _ = keys.tick() => {
                    if let Err(e) = self.inner.keyring.reload().await {
                        tracing::warn!(error = %e, "signing-key reload failed");
                    }
                }
                _ = housekeeping.tick() => {
                    if let Err(e) = self.housekeeping().await {
                        tracing::warn!(error = %e, "housekeeping failed");
                    }
                }
            }
        }
    }

    /// Runs periodic housekeeping: key rotation and purging of expired codes and keys.
    pub async fn housekeeping(&self) -> Result<()> {
        self.inner.keyring.reload().await?;
        let now = self.now_ms();
        self.inner.store.purge_expired_oob_codes(now).await?;
        self.inner.store.purge_expired_signing_keys(now).await?;
        self.inner.limits.shrink();
        Ok(())
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn now_secs(&self) -> i64 {
        self.inner.clock.now_ms().div_euclid(1000)
    }

    /// Resolves who is calling from the request's credentials.
    ///
    /// `api_key` comes from `?key=` or `x-goog-api-key`; `bearer` from `Authorization: Bearer`.
    /// `path_project` is the project named in the URL, `target_project` the `targetProjectId`
    /// of the body. `ip` is the client address used for abuse limits.
    pub async fn authenticate(
        &self,
        api_key: Option<&str>,
        bearer: Option<&str>,
        path_project: Option<&str>,
        target_project: Option<&str>,
        ip: IpAddr,
    ) -> Result<Caller> {
        session::authenticate(self, api_key, bearer, path_project, target_project, ip).await
    }

    pub(crate) async fn settings(&self, project: &str) -> ProjectSettings {
        self.inner
            .settings
            .read()
            .await
            .get(project)
            .cloned()
            .unwrap_or_default()
    }

    /// The project settings that the emulator's `/config` endpoints show and change.
    pub async fn project_settings(&self, caller: &Caller) -> ProjectSettings {
        self.settings(&caller.project.project_id).await
    }

    /// Replaces the project settings (sign-in options, e-mail privacy).
    pub async fn update_project_settings(
        &self,
        caller: &Caller,
        patch: serde_json::Value,
    ) -> Result<ProjectSettings> {
        caller.require_privileged()?;
        let project = &caller.project.project_id;
        let mut all = self.inner.settings.write().await;
        let mut current = serde_json::to_value(all.get(project).cloned().unwrap_or_default())
            .map_err(|e| Error::internal(e.to_string()))?;
        merge_json(&mut current, patch);
        let updated: ProjectSettings = serde_json::from_value(current)
            .map_err(|e| Error::invalid_argument(format!("Invalid JSON payload received. {e}")))?;
        let text = serde_json::to_string(&updated).map_err(|e| Error::internal(e.to_string()))?;
        self.inner
            .store
            .put_project_settings(project, &text)
            .await?;
        all.insert(project.clone(), updated.clone());
        Ok(updated)
    }
}

fn merge_json(base: &mut serde_json::Value, patch: serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge_json(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

pub use accounts::{AuthUri, SignedIn};
pub use admin::{BatchItemError, UserPage};
pub use custom_token::CUSTOM_TOKEN_AUDIENCE;
pub use oob::{DevOobCode, EmailLinkSignIn, OobInfo, OobSent};
pub use update::Updated;

impl Identity {
    /// The base URL that links (e-mails, discovery documents) point at.
    pub fn public_url(&self) -> &str {
        &self.inner.public_url
    }
}
