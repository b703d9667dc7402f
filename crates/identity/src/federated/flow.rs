//! The authorization-code flow with PKCE behind the hosted sign-in page: started here with a
//! browser-bound `state`, finished at our callback by exchanging the code and verifying the
//! provider's ID token with the flow's nonce.

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{IdpProfile, IdpSignedIn, binding_cookie, form_encode};
use crate::session::{random_token, token_hash};
use crate::{Caller, Error, Identity, Result};

/// How long a sign-in started on the hosted page may take.
const FLOW_TTL_MS: i64 = 10 * 60 * 1000;

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

impl Identity {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge() {
        // RFC 7636 appendix B.
        assert_eq!(
            sha256_b64url("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
