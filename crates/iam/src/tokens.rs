//! Tokens for service accounts: Google-style ID tokens, access tokens, the JWT-bearer grant
//! (RFC 7523) as `oauth2.googleapis.com/token` runs it, and authentication of the bearer
//! tokens Google APIs accept (access tokens, self-signed service-account JWTs).

use std::sync::Arc;

use gatehouse_keyring::Purpose;
use gatehouse_store::ServiceAccountRecord;
use gatehouse_tokens::{Claims, PublicKey, VerifyError, decode_unverified, verify_with_key};
use serde_json::{Value, json};

use crate::{ACCESS_TOKEN, Error, GOOGLE_ID_TOKEN, Iam, Principal, Result};

/// `iss` of the ID tokens, as Google's.
pub const ID_TOKEN_ISSUER: &str = "https://accounts.google.com";
/// Access tokens look like Google's (`ya29.`), and are JWTs signed by the IAM access-token key.
const ACCESS_PREFIX: &str = "ya29.";
const ACCESS_ISSUER: &str = "gatehouse-iam";
const TOKEN_LIFETIME: i64 = 3600;
/// Clock skew tolerated on self-signed JWTs and grant assertions.
const SKEW: i64 = 300;
/// The audiences google-auth and other clients put in JWT-bearer assertions.
const GRANT_AUDIENCES: [&str; 4] = [
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v4/token",
    "https://accounts.google.com/o/oauth2/token",
    "https://oauth2.googleapis.com/",
];
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// What the token endpoint grants (its JSON is `gatehouse-iam-http`'s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// An ID token: the assertion named a `target_audience`.
    IdToken(String),
    /// An access token for the assertion's scopes, valid for `expires_in` seconds.
    AccessToken { token: String, expires_in: i64 },
}

/// Why the token endpoint refused, by OAuth 2.0's error codes (RFC 6749 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantErrorKind {
    /// A required parameter is missing (`invalid_request`).
    InvalidRequest,
    /// The assertion is not acceptable: signature, issuer, audience, times, account
    /// (`invalid_grant`).
    InvalidGrant,
    /// Not the JWT-bearer grant (`unsupported_grant_type`).
    UnsupportedGrantType,
    /// No scope asked for (`invalid_scope`).
    InvalidScope,
    /// Our failure, not the client's (`internal_failure`).
    Internal,
}

impl GrantErrorKind {
    /// The OAuth `error` code.
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidGrant => "invalid_grant",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::Internal => "internal_failure",
        }
    }
}

/// A token endpoint refusal: what kind, and the `error_description` in Google's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantError {
    pub kind: GrantErrorKind,
    pub description: String,
}

impl GrantError {
    fn new(kind: GrantErrorKind, description: impl Into<String>) -> Self {
        Self {
            kind,
            description: description.into(),
        }
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(GrantErrorKind::InvalidGrant, description)
    }
}

impl From<Error> for GrantError {
    fn from(e: Error) -> Self {
        Self::new(GrantErrorKind::Internal, e.to_string())
    }
}

/// Whether a JWT `aud` (a string or a list) names one of `audiences`, ignoring a trailing `/`.
fn audience_matches(aud: &Value, audiences: &[&str]) -> bool {
    let wanted = |a: &str| {
        audiences
            .iter()
            .any(|w| w.trim_end_matches('/') == a.trim_end_matches('/'))
    };
    match aud {
        Value::String(a) => wanted(a),
        Value::Array(list) => list.iter().filter_map(Value::as_str).any(wanted),
        _ => false,
    }
}

fn num(claims: &Claims, name: &str) -> Option<i64> {
    claims.get(name).and_then(Value::as_i64)
}

fn text<'a>(claims: &'a Claims, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

impl Iam {
    /// A Google-style ID token for `account` with audience `audience`: RS256 with a published
    /// key, `iss` https://accounts.google.com, `sub`/`azp` the unique id (`azp` the email with
    /// `email_azp`), `email` + `email_verified` unless `include_email` is false, 1 h lifetime.
    pub fn mint_id_token(
        &self,
        account: &ServiceAccountRecord,
        audience: &str,
        include_email: bool,
        email_azp: bool,
    ) -> Result<String> {
        if audience.is_empty() {
            return Err(Error::InvalidArgument("audience must not be empty".into()));
        }
        let now = self.now_secs();
        let mut claims = Claims::new();
        claims.insert("aud".into(), json!(audience));
        claims.insert(
            "azp".into(),
            json!(if email_azp {
                &account.email
            } else {
                &account.unique_id
            }),
        );
        if include_email {
            claims.insert("email".into(), json!(account.email));
            claims.insert("email_verified".into(), json!(true));
        }
        claims.insert("exp".into(), json!(now + TOKEN_LIFETIME));
        claims.insert("iat".into(), json!(now));
        claims.insert("iss".into(), json!(ID_TOKEN_ISSUER));
        claims.insert("sub".into(), json!(account.unique_id));
        Ok(self.keyring().sign(&GOOGLE_ID_TOKEN, &claims)?)
    }

    /// An access token for `account` (opaque to clients; `ya29.`-prefixed). `source_key` is the
    /// key whose assertion it was granted for: deleting or disabling that key revokes it.
    /// Returns the token and its lifetime in seconds.
    pub fn mint_access_token(
        &self,
        account: &ServiceAccountRecord,
        scopes: &[String],
        source_key: Option<&str>,
        lifetime_secs: i64,
    ) -> Result<(String, i64)> {
        let now = self.now_secs();
        let lifetime = lifetime_secs.clamp(1, TOKEN_LIFETIME);
        let mut claims = Claims::new();
        claims.insert("iss".into(), json!(ACCESS_ISSUER));
        claims.insert("sub".into(), json!(account.unique_id));
        claims.insert("email".into(), json!(account.email));
        claims.insert("scope".into(), json!(scopes.join(" ")));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + lifetime));
        claims.insert("src".into(), json!(source_key.unwrap_or_default()));
        let jwt = self.keyring().sign(&ACCESS_TOKEN, &claims)?;
        Ok((format!("{ACCESS_PREFIX}{jwt}"), lifetime - 1))
    }

    /// Checks the signature of a token this IAM signed for `purpose`; an unknown key id
    /// re-reads the keys once (another replica may have rotated).
    async fn verify_own(&self, purpose: &Purpose, token: &str) -> Result<Claims> {
        let verify = |iam: &Self| -> Result<Result<Claims, VerifyError>> {
            Ok(iam
                .keyring()
                .current(purpose)?
                .verifier()
                .verify_signature(token)
                .map(|(_, c)| c))
        };
        match verify(self)? {
            Ok(c) => Ok(c),
            Err(VerifyError::UnknownKey) => {
                self.reload_keys().await?;
                verify(self)?.map_err(|_| Error::unauthenticated())
            }
            Err(_) => Err(Error::unauthenticated()),
        }
    }

    /// The account behind a token, if it may act: it exists and is enabled, and so is the key
    /// the token came from (when there is one).
    async fn active_account(
        &self,
        email_or_id: &str,
        key_id: Option<&str>,
    ) -> Result<Arc<ServiceAccountRecord>> {
        let account = self
            .account(email_or_id)
            .await?
            .filter(|a| !a.disabled)
            .ok_or_else(Error::unauthenticated)?;
        if let Some(kid) = key_id.filter(|k| !k.is_empty()) {
            let now = self.now_ms();
            match self.key(kid).await? {
                Some(k) if !k.disabled && k.expires_at > now && k.email == account.email => {}
                _ => return Err(Error::unauthenticated()),
            }
        }
        Ok(account)
    }

    /// Authenticates a bearer token presented to a Gatehouse API: an access token this IAM
    /// issued, or a JWT self-signed with a service-account key (what Google's client libraries
    /// send with `always_use_jwt_access`). A self-signed JWT is valid only for the API its `aud`
    /// names — one of `audiences` (trailing slash ignored) — or, without `aud`, by `scope`.
    /// ID tokens are not API credentials.
    pub async fn authenticate(&self, bearer: &str, audiences: &[&str]) -> Result<Principal> {
        let now = self.now_secs();
        if let Some(jwt) = bearer.strip_prefix(ACCESS_PREFIX) {
            let claims = self.verify_own(&ACCESS_TOKEN, jwt).await?;
            if text(&claims, "iss") != Some(ACCESS_ISSUER)
                || num(&claims, "exp").is_none_or(|exp| exp <= now)
            {
                return Err(Error::unauthenticated());
            }
            let sub = text(&claims, "sub").ok_or_else(Error::unauthenticated)?;
            let account = self.active_account(sub, text(&claims, "src")).await?;
            return Ok(Principal::ServiceAccount {
                email: account.email.clone(),
                unique_id: account.unique_id.clone(),
            });
        }
        let (header, _) = decode_unverified(bearer).map_err(|_| Error::unauthenticated())?;
        let kid = header.kid.as_deref().ok_or_else(Error::unauthenticated)?;
        let key = self.key(kid).await?.ok_or_else(Error::unauthenticated)?;
        let public = serde_json::from_str::<Value>(&key.public_jwk)
            .ok()
            .and_then(|j| PublicKey::from_jwk(&j).ok())
            .ok_or_else(Error::unauthenticated)?;
        let (_, claims) = verify_with_key(bearer, &public).map_err(|_| Error::unauthenticated())?;
        let account = self.active_account(&key.email, Some(kid)).await?;
        // Google's rules for self-signed JWTs: iss = sub = the account, short-lived, and an
        // audience (the API) or a scope.
        let iat = num(&claims, "iat");
        let exp = num(&claims, "exp");
        let ok = text(&claims, "iss") == Some(account.email.as_str())
            && text(&claims, "sub").is_none_or(|s| s == account.email)
            && matches!((iat, exp), (Some(iat), Some(exp))
                if iat <= now + SKEW && exp > now && exp - iat <= TOKEN_LIFETIME + SKEW)
            && match claims.get("aud") {
                Some(aud) => audience_matches(aud, audiences),
                None => claims.contains_key("scope"),
            };
        if !ok {
            return Err(Error::unauthenticated());
        }
        Ok(Principal::ServiceAccount {
            email: account.email.clone(),
            unique_id: account.unique_id.clone(),
        })
    }

    /// Verifies a Google-style ID token minted here (what a service's ingress receives):
    /// signature by a published ID-token key, issuer, `aud` among `audiences`, time; a token
    /// of a service account of this IAM also needs the account to exist and be enabled.
    pub async fn verify_id_token(&self, token: &str, audiences: &[String]) -> Result<Claims> {
        let now = self.now_secs();
        let claims = self.verify_own(&GOOGLE_ID_TOKEN, token).await?;
        let iss_ok = matches!(
            text(&claims, "iss"),
            Some("https://accounts.google.com" | "accounts.google.com")
        );
        let aud_ok = text(&claims, "aud").is_some_and(|a| audiences.iter().any(|x| x == a));
        let time_ok = matches!((num(&claims, "iat"), num(&claims, "exp")),
            (Some(iat), Some(exp)) if iat <= now + 60 && exp > now);
        if !(iss_ok && aud_ok && time_ok) {
            return Err(Error::unauthenticated());
        }
        if let Some(sub) = text(&claims, "sub") {
            self.active_account(sub, None).await?;
        }
        Ok(claims)
    }

    /// The token endpoint: `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with an
    /// assertion signed by a service-account key. With `target_audience` in the assertion the
    /// grant is an ID token, else an access token for the assertion's `scope`.
    /// `own_urls` are further audiences the assertion may name (this server's token URL).
    pub async fn grant(
        &self,
        form: &[(String, String)],
        own_urls: &[String],
    ) -> Result<Grant, GrantError> {
        let param = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        match param("grant_type") {
            Some(JWT_BEARER) => {}
            Some(other) => {
                return Err(GrantError::new(
                    GrantErrorKind::UnsupportedGrantType,
                    format!("Invalid grant_type: {other}"),
                ));
            }
            None => {
                return Err(GrantError::new(
                    GrantErrorKind::UnsupportedGrantType,
                    "Invalid grant_type: ",
                ));
            }
        }
        let assertion = param("assertion").ok_or_else(|| {
            GrantError::new(
                GrantErrorKind::InvalidRequest,
                "Missing required parameter: assertion",
            )
        })?;
        let bad_signature = || GrantError::invalid_grant("Invalid JWT Signature.");
        let (header, unverified) = decode_unverified(assertion).map_err(|_| bad_signature())?;
        let issuer = text(&unverified, "iss").unwrap_or_default().to_owned();
        // The key: by kid, else any enabled key of the issuing account.
        let now_ms = self.now_ms();
        let candidates = match header.kid.as_deref() {
            Some(kid) => self.key(kid).await?.into_iter().collect::<Vec<_>>(),
            None => self
                .keys(&issuer)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(Arc::new)
                .collect(),
        };
        let mut verified = None;
        for k in candidates {
            if k.disabled || k.expires_at <= now_ms {
                continue;
            }
            let Some(public) = serde_json::from_str::<Value>(&k.public_jwk)
                .ok()
                .and_then(|j| PublicKey::from_jwk(&j).ok())
            else {
                continue;
            };
            if let Ok((_, claims)) = verify_with_key(assertion, &public) {
                verified = Some((k, claims));
                break;
            }
        }
        let (key, claims) = verified.ok_or_else(bad_signature)?;
        let account = self
            .account(&key.email)
            .await?
            .ok_or_else(|| GrantError::invalid_grant("Invalid grant: account not found"))?;
        if account.disabled {
            return Err(GrantError::invalid_grant(
                "Invalid grant: account not found",
            ));
        }
        if text(&claims, "iss") != Some(account.email.as_str()) {
            return Err(GrantError::invalid_grant(
                "Invalid JWT: the issuer must be the service account's email.",
            ));
        }
        let aud = text(&claims, "aud").unwrap_or_default();
        if !GRANT_AUDIENCES.contains(&aud) && !own_urls.iter().any(|u| u == aud) {
            return Err(GrantError::invalid_grant(
                "Invalid JWT: Failed audience check. The expected audience is https://oauth2.googleapis.com/token.",
            ));
        }
        let now = self.now_secs();
        let fresh = matches!((num(&claims, "iat"), num(&claims, "exp")),
            (Some(iat), Some(exp)) if iat <= now + SKEW && exp > now - SKEW
                && exp - iat <= TOKEN_LIFETIME && exp > iat);
        if !fresh {
            return Err(GrantError::invalid_grant(
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
                 timeframe. Check your iat and exp values in the JWT claim.",
            ));
        }
        if let Some(audience) = text(&claims, "target_audience") {
            // Key-file ID tokens name the account's email in `azp` (metadata-server and
            // generateIdToken ones its unique id).
            let token = self.mint_id_token(&account, audience, true, true)?;
            return Ok(Grant::IdToken(token));
        }
        let scopes: Vec<String> = text(&claims, "scope")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if scopes.is_empty() {
            return Err(GrantError::new(
                GrantErrorKind::InvalidScope,
                "Empty or missing scope not allowed.",
            ));
        }
        let (token, expires_in) =
            self.mint_access_token(&account, &scopes, Some(&key.key_id), TOKEN_LIFETIME)?;
        Ok(Grant::AccessToken { token, expires_in })
    }
}
