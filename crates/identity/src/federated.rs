//! Federated sign-in with OpenID Connect providers (Google is one, preconfigured by its
//! issuer): the authorization-code flow with PKCE for the hosted sign-in page, and
//! `accounts:signInWithIdp` for the SDKs' `signInWithCredential` / popup / redirect paths.
//!
//! Either way an upstream ID token is verified against the provider's published keys (issuer,
//! audience = our client id, expiry, nonce), then the user is found by the provider identity,
//! linked, or created, under Firebase's default "one account per e-mail" rules:
//!
//! - a known provider identity signs in to its account;
//! - with `idToken` (linking), the identity is added to that account, unless it belongs to
//!   another (`FEDERATED_USER_ID_ALREADY_LINKED`);
//! - an e-mail that already has an account: when the provider is trusted for its e-mails
//!   (Google, or a provider configured so) and says the address is verified, the identity is
//!   linked to that account — and if the account had not verified the address, its password is
//!   removed, so whoever set it cannot keep access. Otherwise the answer is `needConfirmation`
//!   (the SDKs' `auth/account-exists-with-different-credential`): the user must sign in the
//!   old way and link;
//! - anything else creates an account.
//!
//! Development projects keep the emulator's fake identity provider: an unsigned JWT or plain
//! JSON claims as `id_token` is accepted for a provider that has no configuration. Production
//! projects only accept tokens of configured, enabled providers, verified.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_store::UserRecord;
use gatehouse_verify::OidcVerifier;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::Mode;
use crate::session::{random_token, token_hash};
use crate::user::{new_account, new_local_id, normalize_email, stored_providers};
use crate::{Caller, Error, Identity, IssuedTokens, ProjectConfig, ProviderInfo, Result};

/// Google's issuer.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
/// Google's access-token introspection.
const GOOGLE_TOKENINFO: &str = "https://oauth2.googleapis.com/tokeninfo";
/// How long a sign-in started on the hosted page may take.
const FLOW_TTL_MS: i64 = 10 * 60 * 1000;
/// How long a provider's discovery document is trusted.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

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

/// A provider's endpoints and keys, from its discovery document.
struct Discovered {
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: Option<String>,
    verifier: OidcVerifier,
    at: Instant,
}

/// Outbound side of federation: the HTTP client and discovered providers.
pub(crate) struct Federation {
    http: reqwest::Client,
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

    async fn discover(&self, project: &str, idp: &IdpConfig) -> Result<Arc<Discovered>> {
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

/// What the upstream provider says about the user.
#[derive(Debug, Clone, Default)]
pub struct IdpProfile {
    pub provider_id: String,
    /// The provider's subject.
    pub raw_id: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub display_name: Option<String>,
    pub photo_url: Option<String>,
    /// All claims, for `rawUserInfo`.
    pub claims: Map<String, Value>,
}

impl IdpProfile {
    fn from_claims(provider_id: &str, claims: Map<String, Value>) -> Result<Self> {
        let text = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let raw_id = text("sub").ok_or_else(|| {
            Error::detail(
                "INVALID_IDP_RESPONSE",
                "the provider's token has no subject",
            )
        })?;
        let email = text("email").and_then(|e| normalize_email(&e).ok());
        let email_verified = match claims.get("email_verified") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            _ => false,
        };
        Ok(Self {
            provider_id: provider_id.to_owned(),
            raw_id,
            email,
            email_verified,
            display_name: text("name"),
            photo_url: text("picture"),
            claims,
        })
    }

    /// `federatedId`: Google's form for google.com, the subject otherwise.
    pub fn federated_id(&self) -> String {
        if self.provider_id == "google.com" {
            format!("{GOOGLE_ISSUER}/{}", self.raw_id)
        } else {
            self.raw_id.clone()
        }
    }
}

/// The result of a federated sign-in.
#[derive(Debug, Clone)]
pub struct IdpSignedIn {
    pub profile: IdpProfile,
    /// The account signed in to (or, with `need_confirmation`, the one holding the e-mail).
    pub user: UserRecord,
    pub tokens: Option<IssuedTokens>,
    pub is_new_user: bool,
    /// The e-mail belongs to another account and the provider cannot vouch for it.
    pub need_confirmation: bool,
    /// The upstream ID token, when one was given or obtained.
    pub oauth_id_token: Option<String>,
    pub oauth_access_token: Option<String>,
}

/// `accounts:signInWithIdp`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SignInWithIdpRequest {
    pub request_uri: Option<String>,
    pub post_body: Option<String>,
    pub id_token: Option<String>,
    pub return_idp_credential: Option<bool>,
    pub return_secure_token: Option<bool>,
    pub session_id: Option<String>,
    pub tenant_id: Option<String>,
}

/// Where the hosted page returns a finished sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnTo {
    pub api_key: String,
    pub mode: String,
    pub origin: String,
    pub redirect_url: Option<String>,
    /// Redirect mode: the nonce of the page that started the sign-in, handed back with the
    /// result so that page can tell it from a result planted in a link (login CSRF).
    #[serde(default)]
    pub nonce: Option<String>,
}

/// A code flow in progress (stored by the hash of its `state`).
#[derive(Serialize, Deserialize)]
struct Flow {
    provider_id: String,
    /// Hash of the value of the cookie set on the browser that started the flow: the callback
    /// must come from that browser (no login CSRF with someone else's callback URL).
    binding_hash: String,
    verifier: String,
    nonce: String,
    redirect_uri: String,
    return_to: ReturnTo,
}

fn sha256_b64url(text: &str) -> String {
    use sha2::Digest as _;
    gatehouse_tokens::b64url(&sha2::Sha256::digest(text.as_bytes()))
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Claims of an unsigned JWT (`alg: none`) or of plain JSON: the emulator's fake IdP.
fn fake_claims(token: &str) -> Option<Map<String, Value>> {
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(token.trim()) {
        return Some(m);
    }
    let mut parts = token.trim().split('.');
    let (h, p) = (parts.next()?, parts.next()?);
    let header: Value = serde_json::from_slice(&gatehouse_tokens::b64url_decode(h)?).ok()?;
    if header.get("alg").and_then(Value::as_str) != Some("none") {
        return None;
    }
    match serde_json::from_slice(&gatehouse_tokens::b64url_decode(p)?).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

impl Identity {
    /// The enabled providers of a project, in configuration order.
    pub fn providers(&self, project: &ProjectConfig) -> Vec<IdpConfig> {
        project
            .providers
            .iter()
            .filter(|p| p.enabled)
            .cloned()
            .collect()
    }

    fn provider<'a>(&self, project: &'a ProjectConfig, provider_id: &str) -> Option<&'a IdpConfig> {
        project
            .providers
            .iter()
            .find(|p| p.provider_id == provider_id)
    }

    /// Starts the authorization-code flow: records the flow and returns the provider's
    /// authorization URL (with our callback `<public url>/__/auth/handler` as `redirect_uri`)
    /// and the browser binding: a cookie name and value the callback must present.
    pub async fn start_federated(
        &self,
        caller: &Caller,
        provider_id: &str,
        return_to: ReturnTo,
    ) -> Result<(String, String, String)> {
        let project = caller.project.clone();
        let idp = self
            .provider(&project, provider_id)
            .filter(|p| p.enabled)
            .ok_or_else(|| {
                Error::detail(
                    "OPERATION_NOT_ALLOWED",
                    format!("The identity provider {provider_id} is not enabled for this project."),
                )
            })?;
        let d = self
            .inner
            .federation
            .discover(&project.project_id, idp)
            .await?;
        let state = random_token(32);
        let nonce = random_token(32);
        let verifier = random_token(48);
        let binding = random_token(24);
        let redirect_uri = format!("{}/__/auth/handler", self.inner.public_url);
        let flow = Flow {
            provider_id: provider_id.to_owned(),
            binding_hash: token_hash(&binding),
            verifier: verifier.clone(),
            nonce: nonce.clone(),
            redirect_uri: redirect_uri.clone(),
            return_to,
        };
        let now = self.now_ms();
        self.inner
            .store
            .insert_idp_flow(
                &gatehouse_store::IdpFlowRecord {
                    state_hash: token_hash(&state),
                    project_id: project.project_id.clone(),
                    data: serde_json::to_string(&flow)
                        .map_err(|e| Error::internal(e.to_string()))?,
                    expires_at: now + FLOW_TTL_MS,
                },
                now,
            )
            .await?;
        let mut url = url::Url::parse(&d.authorization_endpoint)
            .map_err(|e| Error::internal(format!("authorization endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &idp.client_id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("scope", &idp.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &sha256_b64url(&verifier))
            .append_pair("code_challenge_method", "S256");
        Ok((url.into(), binding_cookie(&state), binding))
    }

    /// Finishes the flow at our callback: the `state` must be one we issued and not used, the
    /// code is exchanged (with the PKCE verifier), the ID token verified with the flow's nonce.
    /// Returns where to deliver the result (when the state was known) and the result.
    /// `iss` is the callback's RFC 9207 issuer parameter, when the provider sends one: it must
    /// be the flow's provider (mix-up protection).
    pub async fn finish_federated(
        &self,
        state: &str,
        binding: Option<&str>,
        code: Option<&str>,
        iss: Option<&str>,
        upstream_error: Option<&str>,
        ip: std::net::IpAddr,
    ) -> (Option<ReturnTo>, Result<IdpSignedIn>) {
        let record = match self.inner.store.take_idp_flow(&token_hash(state)).await {
            Ok(Some(r)) if r.expires_at >= self.now_ms() => r,
            Ok(Some(_)) => {
                return (
                    None,
                    Err(Error::detail(
                        "INVALID_IDP_RESPONSE",
                        "This sign-in took too long; start again.",
                    )),
                );
            }
            Ok(None) => {
                return (
                    None,
                    Err(Error::detail(
                        "INVALID_IDP_RESPONSE",
                        "Unknown or already used sign-in state; start again.",
                    )),
                );
            }
            Err(e) => return (None, Err(e.into())),
        };
        let Ok(flow) = serde_json::from_str::<Flow>(&record.data) else {
            return (None, Err(Error::internal("unreadable sign-in flow")));
        };
        let return_to = flow.return_to.clone();
        let result = async {
            if binding.map(token_hash).as_deref() != Some(flow.binding_hash.as_str()) {
                return Err(Error::detail(
                    "INVALID_IDP_RESPONSE",
                    "This sign-in was started in another browser (or its cookie was blocked); start it again here.",
                ));
            }
            if let Some(e) = upstream_error {
                return Err(Error::detail(
                    "INVALID_IDP_RESPONSE",
                    format!("The provider did not sign you in: {e}"),
                ));
            }
            let code = code
                .filter(|c| !c.is_empty())
                .ok_or_else(|| Error::detail("INVALID_IDP_RESPONSE", "The provider sent no code."))?;
            let project = self
                .inner
                .projects
                .get(&record.project_id)
                .cloned()
                .ok_or_else(|| Error::internal("the flow's project is gone"))?;
            let idp = self
                .provider(&project, &flow.provider_id)
                .filter(|p| p.enabled)
                .ok_or_else(|| Error::code("OPERATION_NOT_ALLOWED"))?
                .clone();
            if let Some(i) = iss
                && i.trim_end_matches('/') != idp.issuer.trim_end_matches('/')
            {
                return Err(Error::detail(
                    "INVALID_IDP_RESPONSE",
                    format!("The answer came from {i}, not from {}.", idp.issuer),
                ));
            }
            let d = self.inner.federation.discover(&project.project_id, &idp).await?;
            let res = self
                .inner
                .federation
                .http
                .post(&d.token_endpoint)
                .basic_auth(
                    form_encode(&idp.client_id),
                    Some(form_encode(idp.client_secret.expose_secret())),
                )
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", flow.redirect_uri.as_str()),
                    ("code_verifier", flow.verifier.as_str()),
                    ("client_id", idp.client_id.as_str()),
                ])
                .send()
                .await
                .map_err(|e| {
                    tracing::warn!(provider = idp.provider_id, error = %e, "token endpoint unreachable");
                    Error::detail("INVALID_IDP_RESPONSE", "The provider could not be reached.")
                })?;
            let status = res.status();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                let why = body
                    .get("error_description")
                    .or_else(|| body.get("error"))
                    .and_then(Value::as_str)
                    .unwrap_or("refused");
                return Err(Error::detail(
                    "INVALID_IDP_RESPONSE",
                    format!("The provider refused the sign-in code: {why}"),
                ));
            }
            let id_token = body
                .get("id_token")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Error::detail("INVALID_IDP_RESPONSE", "The provider returned no ID token.")
                })?
                .to_owned();
            let claims = d
                .verifier
                .verify(&id_token, Some(&flow.nonce), self.now_secs())
                .await
                .map_err(|e| Error::detail("INVALID_IDP_RESPONSE", e.to_string()))?;
            let profile = IdpProfile::from_claims(&idp.provider_id, claims)?;
            let caller = Caller {
                project,
                privileged: false,
                ip,
            };
            let mut out = self
                .sign_in_federated(&caller, "", profile, None, idp.trusted_email)
                .await?;
            out.oauth_id_token = Some(id_token);
            out.oauth_access_token = body
                .get("access_token")
                .and_then(Value::as_str)
                .map(str::to_owned);
            Ok(out)
        }
        .await;
        (Some(return_to), result)
    }

    /// `accounts:signInWithIdp`.
    pub async fn sign_in_with_idp(
        &self,
        caller: &Caller,
        req: SignInWithIdpRequest,
    ) -> Result<IdpSignedIn> {
        let request_uri = req
            .request_uri
            .as_deref()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| Error::code("MISSING_REQUEST_URI"))?;
        if url::Url::parse(request_uri).is_err() {
            return Err(Error::code("INVALID_REQUEST_URI"));
        }
        let post_body = req
            .post_body
            .as_deref()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| Error::code("MISSING_POST_BODY"))?;
        let params: HashMap<String, String> = url::form_urlencoded::parse(post_body.as_bytes())
            .into_owned()
            .collect();
        let provider_id = params
            .get("providerId")
            .filter(|p| !p.is_empty())
            .cloned()
            .ok_or_else(|| {
                Error::detail(
                    "INVALID_CREDENTIAL_OR_PROVIDER_ID",
                    "Invalid IdP response/credential: missing providerId",
                )
            })?;
        let project = caller.project.clone();
        let tenant = req.tenant_id.clone().unwrap_or_default();
        let id_token = params.get("id_token").filter(|t| !t.is_empty());
        let access_token = params.get("access_token").filter(|t| !t.is_empty());
        let nonce = params.get("nonce").filter(|n| !n.is_empty());
        let idp = self.provider(&project, &provider_id).cloned();
        if let Some(p) = &idp
            && !p.enabled
        {
            return Err(Error::code("OPERATION_NOT_ALLOWED"));
        }
        let (claims, trusted) = match (&idp, id_token, access_token) {
            (Some(idp), Some(token), _) => {
                let d = self
                    .inner
                    .federation
                    .discover(&project.project_id, idp)
                    .await?;
                // The nonce in the token is the raw nonce or its SHA-256 (as Apple and the
                // SDKs' hashed-nonce pattern use).
                let claims = d
                    .verifier
                    .verify(token, None, self.now_secs())
                    .await
                    .map_err(|e| Error::detail("INVALID_IDP_RESPONSE", e.to_string()))?;
                if let Some(n) = nonce {
                    let got = claims.get("nonce").and_then(Value::as_str);
                    if got != Some(n.as_str()) && got != Some(sha256_hex(n).as_str()) {
                        return Err(Error::detail(
                            "INVALID_IDP_RESPONSE",
                            "the nonce in the ID token does not match the one given",
                        ));
                    }
                }
                (claims, idp.trusted_email)
            }
            (Some(idp), None, Some(access)) => {
                // An access token says nothing about which client it was issued to; only
                // Google's can be checked (its tokeninfo endpoint names the client), so other
                // providers must send their ID token.
                if idp.provider_id != "google.com" {
                    return Err(Error::detail(
                        "INVALID_IDP_RESPONSE",
                        format!(
                            "{provider_id} accepts an id_token only (an access token cannot be tied to this client)"
                        ),
                    ));
                }
                let info = self.google_token_info(access).await?;
                let client_ok = [info.get("aud"), info.get("azp")]
                    .iter()
                    .flatten()
                    .any(|v| v.as_str() == Some(idp.client_id.as_str()));
                if !client_ok {
                    return Err(Error::detail(
                        "INVALID_IDP_RESPONSE",
                        "the access token was issued to another client",
                    ));
                }
                let d = self
                    .inner
                    .federation
                    .discover(&project.project_id, idp)
                    .await?;
                let userinfo = d.userinfo_endpoint.clone().ok_or_else(|| {
                    Error::detail(
                        "INVALID_IDP_RESPONSE",
                        "the provider has no userinfo endpoint",
                    )
                })?;
                let res = self
                    .inner
                    .federation
                    .http
                    .get(&userinfo)
                    .bearer_auth(access)
                    .send()
                    .await
                    .map_err(|e| Error::detail("INVALID_IDP_RESPONSE", e.to_string()))?;
                if !res.status().is_success() {
                    return Err(Error::detail(
                        "INVALID_IDP_RESPONSE",
                        format!("the provider refused the access token ({})", res.status()),
                    ));
                }
                match res.json::<Value>().await {
                    Ok(Value::Object(m)) => (m, idp.trusted_email),
                    _ => {
                        return Err(Error::detail(
                            "INVALID_IDP_RESPONSE",
                            "the provider's userinfo answer is not a JSON object",
                        ));
                    }
                }
            }
            (None, Some(token), _) if project.mode == Mode::Development => {
                // The emulator's fake IdP: claims taken as given.
                let claims = fake_claims(token)
                    .or_else(|| gatehouse_tokens::parse_jwt(token).map(|j| j.claims))
                    .ok_or_else(|| {
                        Error::detail(
                            "INVALID_IDP_RESPONSE",
                            "(( Failed to parse id_token as JWT or JSON. ))",
                        )
                    })?;
                (claims, false)
            }
            (None, _, _) => {
                return Err(Error::detail(
                    "INVALID_PROVIDER_ID",
                    format!(
                        "the identity provider {provider_id} is not configured for this project"
                    ),
                ));
            }
            (Some(_), None, None) => {
                return Err(Error::detail(
                    "INVALID_IDP_RESPONSE",
                    "postBody needs an id_token or an access_token",
                ));
            }
        };
        let profile = IdpProfile::from_claims(&provider_id, claims)?;
        let link_to = match req.id_token.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => Some(self.verify_id_token(caller, t).await?.0),
            None => None,
        };
        let mut out = self
            .sign_in_federated(caller, &tenant, profile, link_to, trusted)
            .await?;
        out.oauth_id_token = id_token.cloned();
        out.oauth_access_token = access_token.cloned();
        Ok(out)
    }

    /// Google's description of one of its access tokens (`aud`, `azp`, `scope`, `exp`).
    async fn google_token_info(&self, access: &str) -> Result<Map<String, Value>> {
        let res = self
            .inner
            .federation
            .http
            .get(format!(
                "{GOOGLE_TOKENINFO}?access_token={}",
                form_encode(access)
            ))
            .send()
            .await
            .map_err(|e| {
                Error::detail("INVALID_IDP_RESPONSE", format!("Google's tokeninfo: {e}"))
            })?;
        if !res.status().is_success() {
            return Err(Error::detail(
                "INVALID_IDP_RESPONSE",
                "Google does not know this access token",
            ));
        }
        match res.json::<Value>().await {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(Error::detail(
                "INVALID_IDP_RESPONSE",
                "unreadable tokeninfo answer",
            )),
        }
    }

    /// Finds, links or creates the account for a verified provider identity and issues our
    /// tokens (see the module docs for the rules).
    pub(crate) async fn sign_in_federated(
        &self,
        caller: &Caller,
        tenant: &str,
        profile: IdpProfile,
        link_to: Option<UserRecord>,
        trusted: bool,
    ) -> Result<IdpSignedIn> {
        // Two first sign-ins of one new identity race to create its account: the loser's
        // insert hits the unique identity or e-mail, and it starts over, finding the account.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .sign_in_federated_once(caller, tenant, profile.clone(), link_to.clone(), trusted)
                .await;
            match result {
                Err(Error::Code {
                    code: "EMAIL_EXISTS" | "FEDERATED_USER_ID_ALREADY_LINKED",
                    ..
                }) if link_to.is_none() && attempt < 3 => continue,
                other => return other,
            }
        }
    }

    async fn sign_in_federated_once(
        &self,
        caller: &Caller,
        tenant: &str,
        profile: IdpProfile,
        link_to: Option<UserRecord>,
        trusted: bool,
    ) -> Result<IdpSignedIn> {
        let project = caller.project.clone();
        let pid = project.project_id.as_str();
        self.inner.limits.sign_in(caller.ip)?;
        let now = self.now_ms();
        let entry = ProviderInfo {
            provider_id: profile.provider_id.clone(),
            raw_id: profile.raw_id.clone(),
            federated_id: Some(profile.federated_id()),
            email: profile.email.clone(),
            display_name: profile.display_name.clone(),
            photo_url: profile.photo_url.clone(),
            ..ProviderInfo::default()
        };
        let set_entry = |u: &mut UserRecord| -> Result<()> {
            let mut list = stored_providers(u);
            list.retain(|p| p.provider_id != entry.provider_id);
            list.push(entry.clone());
            u.providers =
                serde_json::to_string(&list).map_err(|e| Error::internal(e.to_string()))?;
            Ok(())
        };
        let linked = self
            .inner
            .store
            .user_id_by_identity(pid, tenant, &profile.provider_id, &profile.raw_id)
            .await?;
        let done = |user: UserRecord, is_new_user: bool| IdpSignedIn {
            profile: profile.clone(),
            user,
            tokens: None,
            is_new_user,
            need_confirmation: false,
            oauth_id_token: None,
            oauth_access_token: None,
        };
        let mut out = if let Some(target) = link_to {
            if linked.as_deref().is_some_and(|l| l != target.local_id) {
                return Err(Error::code("FEDERATED_USER_ID_ALREADY_LINKED"));
            }
            if target.disabled {
                return Err(Error::code("USER_DISABLED"));
            }
            if stored_providers(&target)
                .iter()
                .any(|p| p.provider_id == profile.provider_id && p.raw_id != profile.raw_id)
            {
                return Err(Error::code("PROVIDER_ALREADY_LINKED"));
            }
            // The identity's e-mail may not belong to another account (one account per e-mail).
            if let Some(e) = &profile.email
                && self
                    .email_taken(pid, tenant, e, Some(&target.local_id))
                    .await?
            {
                return Err(Error::code("EMAIL_EXISTS"));
            }
            let email_free = match &profile.email {
                Some(e) if target.email.is_none() => {
                    !self
                        .email_taken(pid, tenant, e, Some(&target.local_id))
                        .await?
                }
                _ => false,
            };
            let user = self
                .modify_user(pid, tenant, &target.local_id, |u| {
                    set_entry(u)?;
                    if email_free && u.email.is_none() {
                        u.email.clone_from(&profile.email);
                        u.email_verified = profile.email_verified;
                    }
                    if u.display_name.is_none() {
                        u.display_name.clone_from(&profile.display_name);
                    }
                    if u.photo_url.is_none() {
                        u.photo_url.clone_from(&profile.photo_url);
                    }
                    u.last_login_at = Some(now);
                    Ok(())
                })
                .await?;
            done(user, false)
        } else if let Some(local_id) = linked {
            let user = self
                .modify_user(pid, tenant, &local_id, |u| {
                    if u.disabled {
                        return Err(Error::code("USER_DISABLED"));
                    }
                    set_entry(u)?;
                    u.last_login_at = Some(now);
                    Ok(())
                })
                .await?;
            done(user, false)
        } else {
            let holder = match &profile.email {
                Some(e) if !self.settings(pid).await.sign_in.allow_duplicate_emails => {
                    self.first_user_by_email(pid, tenant, e).await?
                }
                _ => None,
            };
            let holds_identity = |u: &UserRecord| {
                stored_providers(u)
                    .iter()
                    .any(|p| p.provider_id == profile.provider_id && p.raw_id == profile.raw_id)
            };
            match holder {
                Some(existing) if holds_identity(&existing) => {
                    // Linked meanwhile (a concurrent first sign-in of this identity).
                    let user = self
                        .modify_user(pid, tenant, &existing.local_id, |u| {
                            if u.disabled {
                                return Err(Error::code("USER_DISABLED"));
                            }
                            u.last_login_at = Some(now);
                            Ok(())
                        })
                        .await?;
                    done(user, false)
                }
                Some(existing) if trusted && profile.email_verified => {
                    // The provider vouches for the address: link. An account that never proved
                    // it owns the address loses its password (and unverified e-mail state).
                    let verified_before = existing.email_verified;
                    let user = self
                        .modify_user(pid, tenant, &existing.local_id, |u| {
                            if u.disabled {
                                return Err(Error::code("USER_DISABLED"));
                            }
                            if !verified_before {
                                // Whoever registered the address without proving it loses
                                // every way in they set up: password, phone, other identities.
                                u.password_hash = None;
                                u.salt = None;
                                u.phone_number = None;
                                u.providers = "[]".into();
                                u.valid_since_secs = now / 1000;
                            }
                            u.email_verified = true;
                            set_entry(u)?;
                            u.last_login_at = Some(now);
                            Ok(())
                        })
                        .await?;
                    if !verified_before {
                        self.inner
                            .store
                            .delete_refresh_tokens(pid, tenant, &user.local_id)
                            .await?;
                    }
                    done(user, false)
                }
                Some(existing) => {
                    let mut o = done(existing, false);
                    o.need_confirmation = true;
                    return Ok(o);
                }
                None => {
                    let mut user = new_account(pid, tenant, new_local_id(), now, true);
                    user.email.clone_from(&profile.email);
                    user.email_unique = if self.settings(pid).await.sign_in.allow_duplicate_emails {
                        None
                    } else {
                        profile.email.clone()
                    };
                    user.email_verified = profile.email.is_some() && profile.email_verified;
                    user.display_name.clone_from(&profile.display_name);
                    user.photo_url.clone_from(&profile.photo_url);
                    set_entry(&mut user)?;
                    self.insert_user(&user).await?;
                    done(user, true)
                }
            }
        };
        out.tokens = Some(
            self.issue_tokens(&project, &out.user, &profile.provider_id, None)
                .await?,
        );
        Ok(out)
    }

    /// The response of `accounts:signInWithIdp` (`VerifyAssertionResponse`).
    pub fn idp_response(&self, out: &IdpSignedIn, return_credential: bool) -> Value {
        let p = &out.profile;
        let mut v = json!({
            "kind": "identitytoolkit#VerifyAssertionResponse",
            "providerId": p.provider_id,
            "federatedId": p.federated_id(),
            "localId": out.user.local_id,
            "emailVerified": p.email_verified,
            "rawUserInfo": Value::Object(p.claims.clone()).to_string(),
            "isNewUser": out.is_new_user,
        });
        let set = |v: &mut Value, k: &str, x: &Option<String>| {
            if let Some(x) = x {
                v[k] = json!(x);
            }
        };
        set(&mut v, "email", &p.email);
        set(&mut v, "displayName", &p.display_name);
        set(&mut v, "fullName", &p.display_name);
        set(&mut v, "photoUrl", &p.photo_url);
        if let Some(first) = p.claims.get("given_name").and_then(Value::as_str) {
            v["firstName"] = json!(first);
        }
        if let Some(last) = p.claims.get("family_name").and_then(Value::as_str) {
            v["lastName"] = json!(last);
        }
        if out.need_confirmation {
            v["needConfirmation"] = json!(true);
            v.as_object_mut().map(|o| o.remove("localId"));
            if let Some(email) = &out.user.email {
                v["email"] = json!(email);
            }
            if return_credential {
                v["errorMessage"] = json!("FEDERATED_USER_ID_ALREADY_LINKED");
            }
        }
        if return_credential || !out.need_confirmation {
            set(&mut v, "oauthIdToken", &out.oauth_id_token);
            set(&mut v, "oauthAccessToken", &out.oauth_access_token);
        }
        if let Some(t) = &out.tokens {
            v["idToken"] = json!(t.id_token);
            v["refreshToken"] = json!(t.refresh_token);
            v["expiresIn"] = json!(t.expires_in.to_string());
        }
        v
    }
}

/// The name of the cookie binding the flow with this `state` to the browser that started it.
pub fn binding_cookie(state: &str) -> String {
    let h = token_hash(state);
    format!("gatehouse_idp_{}", &h[..h.len().min(16)])
}

/// `application/x-www-form-urlencoded` encoding of a client credential for HTTP Basic
/// (RFC 6749 §2.3.1).
fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_idp_tokens() {
        let json = r#"{"sub":"123","email":"a@b.c"}"#;
        assert_eq!(fake_claims(json).unwrap()["sub"], "123");
        let unsigned = format!(
            "{}.{}.",
            gatehouse_tokens::b64url(br#"{"alg":"none"}"#),
            gatehouse_tokens::b64url(json.as_bytes())
        );
        assert_eq!(fake_claims(&unsigned).unwrap()["email"], "a@b.c");
        let signed = format!(
            "{}.{}.c2ln",
            gatehouse_tokens::b64url(br#"{"alg":"RS256"}"#),
            gatehouse_tokens::b64url(json.as_bytes())
        );
        assert!(fake_claims(&signed).is_none());
    }

    #[test]
    fn provider_ids_and_pkce() {
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
        // RFC 7636 appendix B.
        assert_eq!(
            sha256_b64url("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
