//! `accounts:signInWithIdp`: the SDKs hand us a provider's ID token (or Google access token),
//! which is verified and turned into the provider's profile of the user. The
//! `VerifyAssertionResponse` built from the outcome is `gatehouse-identity-http`'s.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{GOOGLE_ISSUER, IdpSignedIn, form_encode};
use crate::config::Mode;
use crate::user::normalize_email;
use crate::{Caller, Error, Identity, Result};

/// Google's access-token introspection.
const GOOGLE_TOKENINFO: &str = "https://oauth2.googleapis.com/tokeninfo";

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
    pub(super) fn from_claims(provider_id: &str, claims: Map<String, Value>) -> Result<Self> {
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
}
