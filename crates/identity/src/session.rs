//! Callers, ID tokens, refresh tokens and session cookies.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use gatehouse_store::{RefreshTokenRecord, UserRecord};
use gatehouse_tokens::{Claims, VerifyError, check_claims, decode_unverified, encode_unsigned};
use serde_json::{Map, Value, json};
use sha2::Digest;

use crate::config::{Mode, ProjectConfig};
use crate::keyring::KeyPurpose;
use crate::user::identities;
use crate::{Error, Identity, Result};

/// ID tokens live one hour.
pub const ID_TOKEN_SECS: i64 = 3600;

/// Who is calling, as resolved from the request's credentials.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The project the request acts on.
    pub project: Arc<ProjectConfig>,
    /// An admin credential (OAuth `Bearer`) came with the request.
    pub privileged: bool,
    /// The client address (abuse limits).
    pub ip: IpAddr,
}

impl Caller {
    pub(crate) fn require_privileged(&self) -> Result<()> {
        if self.privileged {
            Ok(())
        } else {
            Err(Error::code("INSUFFICIENT_PERMISSION"))
        }
    }

    /// The project id.
    pub fn project_id(&self) -> &str {
        &self.project.project_id
    }
}

/// Tokens issued at sign-in.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    pub id_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
}

/// Tokens issued by the Secure Token API.
#[derive(Debug, Clone)]
pub struct RefreshedTokens {
    pub id_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
    pub user_id: String,
    pub project_number: String,
}

pub(crate) async fn authenticate(
    identity: &Identity,
    api_key: Option<&str>,
    bearer: Option<&str>,
    path_project: Option<&str>,
    target_project: Option<&str>,
    ip: IpAddr,
) -> Result<Caller> {
    let inner = &identity.inner;
    let lookup = |id: &str| {
        inner.projects.get(id).cloned().ok_or_else(|| {
            Error::detail(
                "CONFIGURATION_NOT_FOUND",
                format!("Project {id} is not served here."),
            )
        })
    };
    if let Some(token) = bearer.filter(|t| !t.is_empty()) {
        let id = path_project
            .or(target_project)
            .unwrap_or(&inner.default_project);
        let project = lookup(id)?;
        let static_ok = match project.mode {
            Mode::Development => {
                token.eq_ignore_ascii_case("owner")
                    || token.starts_with("ya29.")
                    || project.is_admin_key(token)
            }
            Mode::Production => project.is_admin_key(token),
        };
        // Otherwise IAM decides: a service account holding an admin role on the project.
        let ok = static_ok
            || match &inner.authority {
                Some(a) => a.is_admin(token, &project.project_id).await,
                None => false,
            };
        if !ok {
            return Err(Error::Unauthenticated(
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.".into(),
            ));
        }
        return Ok(Caller {
            project,
            privileged: true,
            ip,
        });
    }
    let Some(key) = api_key.filter(|k| !k.is_empty()) else {
        return Err(Error::PermissionDenied(
            "The request is missing a valid API key.".into(),
        ));
    };
    if target_project.is_some() {
        return Err(Error::detail(
            "INSUFFICIENT_PERMISSION",
            "Only authenticated requests can specify target_project_id.",
        ));
    }
    let project = match inner.api_keys.get(key) {
        Some(id) => lookup(id)?,
        None => {
            let fallback = lookup(path_project.unwrap_or(&inner.default_project))?;
            if fallback.mode != Mode::Development {
                return Err(Error::InvalidArgument(
                    "API key not valid. Please pass a valid API key.".into(),
                ));
            }
            fallback
        }
    };
    if let Some(p) = path_project
        && p != project.project_id
    {
        return Err(Error::PermissionDenied(
            "The API key does not belong to this project.".into(),
        ));
    }
    Ok(Caller {
        project,
        privileged: false,
        ip,
    })
}

/// SHA-256 hex of a secret token (what the store keeps).
pub(crate) fn token_hash(token: &str) -> String {
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A random URL-safe string of `bytes` random bytes.
pub(crate) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(buf.as_mut_slice());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

impl Identity {
    /// The ID-token claims of `user` (custom attributes, then session claims, then the fixed ones).
    fn id_token_claims(
        &self,
        project: &ProjectConfig,
        user: &UserRecord,
        provider: &str,
        extra: Option<&Map<String, Value>>,
        now: i64,
    ) -> Claims {
        let mut c = Map::new();
        if let Some(name) = &user.display_name {
            c.insert("name".into(), json!(name));
        }
        if let Some(photo) = &user.photo_url {
            c.insert("picture".into(), json!(photo));
        }
        if let Some(Ok(Value::Object(attrs))) = user
            .custom_attributes
            .as_deref()
            .map(serde_json::from_str::<Value>)
        {
            c.extend(attrs);
        }
        if let Some(extra) = extra {
            c.extend(extra.clone());
        }
        c.insert("iss".into(), json!(project.issuer));
        c.insert("aud".into(), json!(project.project_id));
        c.insert(
            "auth_time".into(),
            json!(user.last_login_at.unwrap_or(user.created_at) / 1000),
        );
        c.insert("user_id".into(), json!(user.local_id));
        c.insert("sub".into(), json!(user.local_id));
        c.insert("iat".into(), json!(now));
        c.insert("exp".into(), json!(now + ID_TOKEN_SECS));
        if let Some(email) = &user.email {
            c.insert("email".into(), json!(email));
            c.insert("email_verified".into(), json!(user.email_verified));
        }
        if let Some(phone) = &user.phone_number {
            c.insert("phone_number".into(), json!(phone));
        }
        if provider == "anonymous" {
            c.insert("provider_id".into(), json!("anonymous"));
        }
        let mut firebase = Map::new();
        firebase.insert("identities".into(), identities(user));
        firebase.insert("sign_in_provider".into(), json!(provider));
        if !user.tenant_id.is_empty() {
            firebase.insert("tenant".into(), json!(user.tenant_id));
        }
        c.insert("firebase".into(), Value::Object(firebase));
        c
    }

    fn sign(
        &self,
        project: &ProjectConfig,
        purpose: KeyPurpose,
        claims: &Claims,
    ) -> Result<String> {
        if project.mode == Mode::Development && project.unsigned_id_tokens {
            return Ok(encode_unsigned(claims));
        }
        self.inner.keyring.sign(purpose, claims)
    }

    /// Mints an ID token for `user`.
    pub(crate) fn mint_id_token(
        &self,
        project: &ProjectConfig,
        user: &UserRecord,
        provider: &str,
        extra: Option<&Map<String, Value>>,
    ) -> Result<String> {
        let claims = self.id_token_claims(project, user, provider, extra, self.now_secs());
        self.sign(project, KeyPurpose::IdToken, &claims)
    }

    /// Mints an ID token and stores a new refresh token for `user`.
    pub(crate) async fn issue_tokens(
        &self,
        project: &ProjectConfig,
        user: &UserRecord,
        provider: &str,
        extra: Option<&Map<String, Value>>,
    ) -> Result<IssuedTokens> {
        let (tokens, record) = self.new_tokens(project, user, provider, extra)?;
        self.inner.store.insert_refresh_token(&record).await?;
        Ok(tokens)
    }

    /// Mints an ID token and a new refresh token for `user`; the record of the refresh token
    /// is for the caller to store.
    pub(crate) fn new_tokens(
        &self,
        project: &ProjectConfig,
        user: &UserRecord,
        provider: &str,
        extra: Option<&Map<String, Value>>,
    ) -> Result<(IssuedTokens, RefreshTokenRecord)> {
        let id_token = self.mint_id_token(project, user, provider, extra)?;
        let refresh_token = format!("GHr1.{}", random_token(48));
        let record = RefreshTokenRecord {
            token_hash: token_hash(&refresh_token),
            project_id: user.project_id.clone(),
            tenant_id: user.tenant_id.clone(),
            local_id: user.local_id.clone(),
            provider: provider.to_owned(),
            extra_claims: extra.map(|m| Value::Object(m.clone()).to_string()),
            created_at: self.now_ms(),
        };
        let tokens = IssuedTokens {
            id_token,
            refresh_token,
            expires_in: ID_TOKEN_SECS,
        };
        Ok((tokens, record))
    }

    /// The Secure Token API: exchanges a refresh token for a fresh ID token.
    pub async fn refresh(
        &self,
        caller: &Caller,
        grant_type: Option<&str>,
        refresh_token: Option<&str>,
    ) -> Result<RefreshedTokens> {
        let grant_type = grant_type
            .filter(|g| !g.is_empty())
            .ok_or_else(|| Error::code("MISSING_GRANT_TYPE"))?;
        if grant_type != "refresh_token" {
            return Err(Error::code("INVALID_GRANT_TYPE"));
        }
        let token = refresh_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::code("MISSING_REFRESH_TOKEN"))?;
        self.inner.limits.refresh(caller.ip)?;
        let record = self
            .inner
            .store
            .refresh_token(&token_hash(token))
            .await?
            .filter(|r| r.project_id == caller.project.project_id)
            .ok_or_else(|| Error::code("INVALID_REFRESH_TOKEN"))?;
        let user = self
            .inner
            .store
            .user(&record.project_id, &record.tenant_id, &record.local_id)
            .await?
            .ok_or_else(|| Error::code("USER_NOT_FOUND"))?;
        if user.disabled {
            return Err(Error::code("USER_DISABLED"));
        }
        if record.created_at < user.valid_since_secs * 1000 {
            return Err(Error::code("TOKEN_EXPIRED"));
        }
        let extra = record
            .extra_claims
            .as_deref()
            .and_then(|t| match serde_json::from_str(t) {
                Ok(Value::Object(m)) => Some(m),
                _ => None,
            });
        let id_token =
            self.mint_id_token(&caller.project, &user, &record.provider, extra.as_ref())?;
        // `lastRefreshAt` is kept to the minute: no write per refresh under load.
        let now = self.now_ms();
        if user.last_refresh_at.is_none_or(|t| now - t > 60_000) {
            let mut touched = user.clone();
            touched.last_refresh_at = Some(now);
            // Best effort: a lost race on the timestamp is harmless.
            let _ = self.inner.store.update_user(&touched, None).await;
        }
        Ok(RefreshedTokens {
            id_token,
            refresh_token: token.to_owned(),
            expires_in: ID_TOKEN_SECS,
            user_id: user.local_id,
            project_number: project_number(&caller.project.project_id),
        })
    }

    /// Verifies an ID token presented to one of our endpoints and loads its user.
    /// Signature, issuer, audience and expiry failures are `INVALID_ID_TOKEN`; a token older than
    /// the user's `validSince` is `TOKEN_EXPIRED`.
    pub(crate) async fn verify_id_token(
        &self,
        caller: &Caller,
        token: &str,
    ) -> Result<(UserRecord, Claims)> {
        if token.is_empty() {
            return Err(Error::code("MISSING_ID_TOKEN"));
        }
        let project = &caller.project;
        let claims = self
            .check_token(project, token, KeyPurpose::IdToken, &project.issuer)
            .await?;
        let uid = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let tenant = claims
            .get("firebase")
            .and_then(|f| f.get("tenant"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let user = self
            .inner
            .store
            .user(&project.project_id, tenant, uid)
            .await?
            .ok_or_else(|| Error::code("USER_NOT_FOUND"))?;
        if user.disabled {
            return Err(Error::code("USER_DISABLED"));
        }
        let iat = claims.get("iat").and_then(Value::as_i64).unwrap_or(0);
        if iat < user.valid_since_secs {
            return Err(Error::code("TOKEN_EXPIRED"));
        }
        Ok((user, claims))
    }

    async fn check_token(
        &self,
        project: &ProjectConfig,
        token: &str,
        purpose: KeyPurpose,
        issuer: &str,
    ) -> Result<Claims> {
        let invalid = || Error::code("INVALID_ID_TOKEN");
        let now = self.now_secs();
        if project.mode == Mode::Development && project.unsigned_id_tokens {
            let (header, claims) = decode_unverified(token).map_err(|_| invalid())?;
            if header.alg == "none" {
                check_claims(&claims, issuer, &project.project_id, now, 0)
                    .map_err(|_| invalid())?;
                return Ok(claims);
            }
        }
        let set = self.inner.keyring.current(purpose)?;
        if let Some(claims) = self
            .inner
            .verified
            .get(token, issuer, &project.project_id, now, &set)
        {
            return Ok(claims);
        }
        match set
            .verifier()
            .verify(token, issuer, &project.project_id, now, 0)
        {
            Ok(claims) => {
                self.inner
                    .verified
                    .put(token, issuer, &project.project_id, &claims, &set);
                Ok(claims)
            }
            Err(VerifyError::UnknownKey) => {
                // Another replica may have rotated; look once more.
                if self.inner.limits.allow_key_reload() {
                    self.inner.keyring.reload().await?;
                    let set = self.inner.keyring.current(purpose)?;
                    return set
                        .verifier()
                        .verify(token, issuer, &project.project_id, now, 0)
                        .map_err(|_| invalid());
                }
                Err(invalid())
            }
            Err(_) => Err(invalid()),
        }
    }

    /// `createSessionCookie`: a long-lived signed cookie made from a valid ID token.
    pub async fn create_session_cookie(
        &self,
        caller: &Caller,
        req: crate::CreateSessionCookieRequest,
    ) -> Result<String> {
        caller.require_privileged()?;
        let token = req.id_token.unwrap_or_default();
        let duration = req.valid_duration.unwrap_or(1_209_600);
        if !(300..=1_209_600).contains(&duration) {
            return Err(Error::code("INVALID_DURATION"));
        }
        let (_, mut claims) = self.verify_id_token(caller, &token).await?;
        let now = self.now_secs();
        claims.insert("iss".into(), json!(caller.project.session_issuer()));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + duration));
        self.sign(&caller.project, KeyPurpose::SessionCookie, &claims)
    }

    /// Verifies a session cookie (for callers of the library, e.g. services behind the gateway).
    pub async fn verify_session_cookie(&self, caller: &Caller, cookie: &str) -> Result<Claims> {
        let issuer = caller.project.session_issuer();
        self.check_token(&caller.project, cookie, KeyPurpose::SessionCookie, &issuer)
            .await
    }
}

/// A stable, numeric project number derived from the project id.
pub(crate) fn project_number(project_id: &str) -> String {
    let digest = sha2::Sha256::digest(project_id.as_bytes());
    let mut n: u64 = 0;
    for b in &digest[..8] {
        n = (n << 8) | u64::from(*b);
    }
    format!("{}", 100_000_000_000 + n % 900_000_000_000)
}
