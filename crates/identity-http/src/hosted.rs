//! The hosted sign-in page and the browser client that opens it.
//!
//! `GET /__/auth/client.js` is a small sign-in client (popup with a redirect fallback, token
//! persistence and refresh, sign-out) for pages that use this server. `GET /__/auth/signin`
//! is the page it opens: e-mail and password sign-in and sign-up, password reset, and a
//! button per federated provider. It hands the result back only to an origin on the
//! project's authorized-domains list (`window.opener.postMessage` to exactly that origin, or
//! a redirect to a URL on it); anything else gets a visible refusal.
//!
//! A redirect hands the result back in the URL fragment together with the `nonce` the client
//! stored when it started the redirect; the client accepts a result only with the nonce it is
//! waiting for, so a result planted in a link (login CSRF) is ignored. A redirect sign-in
//! without a nonce is refused here.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gatehouse_identity::Identity;
use serde::Deserialize;
use serde_json::{Value, json};

const CLIENT_JS: &str = include_str!("../assets/client.js");
const SIGNIN_HTML: &str = include_str!("../assets/signin.html");
const PLACEHOLDER: &str = "\"__GATEHOUSE_CONFIG__\"";

pub fn router() -> Router<Identity> {
    Router::new()
        .route("/__/auth/client.js", get(client_js))
        .route("/__/auth/signin", get(signin))
        .route("/__/auth/federated/start", get(federated_start))
        .route("/__/auth/handler", get(federated_handler))
}

async fn client_js() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        CLIENT_JS,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SigninQuery {
    api_key: Option<String>,
    mode: Option<String>,
    origin: Option<String>,
    redirect_url: Option<String>,
    provider_id: Option<String>,
    nonce: Option<String>,
}

/// The page with its configuration; `<`, `>` and `&` are escaped so nothing in it can end the
/// script element.
pub(crate) fn render(config: &Value, status: StatusCode) -> Response {
    let json = config
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    let html = SIGNIN_HTML.replacen(PLACEHOLDER, &json, 1);
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The page may carry tokens; it is never cached, framed or leaked as a referrer.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// The page showing only an error.
pub(crate) fn refusal(message: &str, status: StatusCode) -> Response {
    render(&json!({"error": message}), status)
}

/// An http(s) URL's origin (`scheme://host[:port]`) and host.
fn origin_of(url: &str) -> Option<(String, String)> {
    let u = url::Url::parse(url).ok()?;
    if !matches!(u.scheme(), "http" | "https") {
        return None;
    }
    let host = u.host_str()?.to_owned();
    Some((u.origin().ascii_serialization(), host))
}

/// Checks where the page would hand a result to: `origin`, and in redirect mode `redirectUrl`,
/// must be http(s) on an authorized domain (and the redirect on that same origin).
pub(crate) async fn check_return(
    identity: &Identity,
    caller: &gatehouse_identity::Caller,
    mode: &str,
    origin: Option<&str>,
    redirect_url: Option<&str>,
) -> Result<(String, Option<String>), String> {
    let origin = origin
        .filter(|o| !o.is_empty())
        .ok_or("The sign-in page was opened without the origin of the page to return to.")?;
    let (origin, host) = origin_of(origin)
        .ok_or_else(|| format!("The origin {origin:?} is not an http(s) origin."))?;
    let settings = identity.project_settings(caller).await;
    let project = caller.project_id();
    if !settings.is_authorized_host(project, &host) {
        return Err(format!(
            "This domain ({host}) is not authorized to run this operation. Add it to the authorized domains of project {project}."
        ));
    }
    let redirect = if mode == "redirect" {
        let r = redirect_url
            .filter(|r| !r.is_empty())
            .ok_or("Redirect sign-in needs the URL to return to (redirectUrl).")?;
        let (r_origin, _) =
            origin_of(r).ok_or_else(|| format!("The redirect URL {r:?} is not an http(s) URL."))?;
        if r_origin != origin || r.contains('#') {
            return Err(format!(
                "The redirect URL {r:?} must be on the page's origin {origin} and carry no fragment."
            ));
        }
        Some(r.to_owned())
    } else {
        None
    };
    Ok((origin, redirect))
}

/// The nonce a redirect sign-in must carry: what the client generates (16 to 128 URL-safe
/// characters), so it can travel in a query and a fragment as it is.
fn valid_nonce(nonce: &str) -> bool {
    (16..=128).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A sign-in request checked: the caller of its API key, the mode, where the result may go,
/// and (redirect mode) the nonce to hand back with it. A problem is the refusal page to answer
/// with.
struct Checked {
    caller: gatehouse_identity::Caller,
    api_key: String,
    mode: &'static str,
    origin: String,
    redirect: Option<String>,
    nonce: Option<String>,
}

async fn check_request(
    identity: &Identity,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    q: &SigninQuery,
) -> Result<Checked, Response> {
    let ip = peer.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |c| c.0.0.ip());
    let Some(api_key) = q.api_key.clone().filter(|k| !k.is_empty()) else {
        return Err(refusal(
            "The sign-in page was opened without an API key.",
            StatusCode::BAD_REQUEST,
        ));
    };
    let caller = identity
        .authenticate(Some(&api_key), None, None, None, ip)
        .await
        .map_err(|e| {
            refusal(
                &format!("This API key cannot be used to sign in: {e}"),
                StatusCode::BAD_REQUEST,
            )
        })?;
    let mode = match q.mode.as_deref() {
        None | Some("" | "popup") => "popup",
        Some("redirect") => "redirect",
        Some(other) => {
            return Err(refusal(
                &format!("Unknown sign-in mode {other:?} (popup or redirect)."),
                StatusCode::BAD_REQUEST,
            ));
        }
    };
    let (origin, redirect) = check_return(
        identity,
        &caller,
        mode,
        q.origin.as_deref(),
        q.redirect_url.as_deref(),
    )
    .await
    .map_err(|message| refusal(&message, StatusCode::FORBIDDEN))?;
    let nonce = match (mode, q.nonce.as_deref()) {
        ("redirect", Some(n)) if valid_nonce(n) => Some(n.to_owned()),
        ("redirect", _) => {
            return Err(refusal(
                "Redirect sign-in needs the nonce of the page that started it (16 to 128 \
                 characters A-Z, a-z, 0-9, - and _); start the sign-in from the app again.",
                StatusCode::BAD_REQUEST,
            ));
        }
        _ => None,
    };
    Ok(Checked {
        caller,
        api_key,
        mode,
        origin,
        redirect,
        nonce,
    })
}

async fn signin(
    State(identity): State<Identity>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    Query(q): Query<SigninQuery>,
) -> Response {
    let checked = match check_request(&identity, peer, &q).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let config = json!({
        "apiKey": checked.api_key,
        "projectId": checked.caller.project_id(),
        "mode": checked.mode,
        "origin": checked.origin,
        "redirectUrl": checked.redirect,
        "nonce": checked.nonce,
        "providerId": q.provider_id,
        "providers": providers(&identity, &checked),
        "result": null,
        "error": null,
    });
    render(&config, StatusCode::OK)
}

/// The project's enabled providers, each with the URL that starts its sign-in.
fn providers(identity: &Identity, checked: &Checked) -> Vec<Value> {
    identity
        .providers(&checked.caller.project)
        .into_iter()
        .map(|p| {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("providerId", &p.provider_id)
                .append_pair("apiKey", &checked.api_key)
                .append_pair("mode", checked.mode)
                .append_pair("origin", &checked.origin);
            if let Some(r) = &checked.redirect {
                q.append_pair("redirectUrl", r);
            }
            if let Some(n) = &checked.nonce {
                q.append_pair("nonce", n);
            }
            json!({
                "providerId": p.provider_id,
                "displayName": p.display_name,
                "startUrl": format!("/__/auth/federated/start?{}", q.finish()),
            })
        })
        .collect()
}

/// `GET /__/auth/federated/start`: checks where the result will go, records the flow and
/// sends the browser to the provider.
async fn federated_start(
    State(identity): State<Identity>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    Query(q): Query<SigninQuery>,
) -> Response {
    let Checked {
        caller,
        api_key,
        mode,
        origin,
        redirect: redirect_url,
        nonce,
    } = match check_request(&identity, peer, &q).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let Some(provider_id) = q.provider_id.clone().filter(|p| !p.is_empty()) else {
        return refusal("No identity provider was named.", StatusCode::BAD_REQUEST);
    };
    let return_to = gatehouse_identity::ReturnTo {
        api_key,
        mode: mode.to_owned(),
        origin,
        redirect_url,
        nonce,
    };
    match identity
        .start_federated(&caller, &provider_id, return_to)
        .await
    {
        Ok((url, cookie, binding)) => {
            let mut res = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(&url) {
                res.headers_mut().insert(header::LOCATION, v);
            }
            // Binds the flow to this browser; sent back on the provider's top-level redirect.
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{cookie}={binding}; Path=/__/auth/handler; Max-Age=600; HttpOnly; SameSite=Lax"
            )) {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(e) => refusal(&describe(&e), StatusCode::BAD_REQUEST),
    }
}

#[derive(Debug, Deserialize)]
struct HandlerQuery {
    state: Option<String>,
    code: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn describe(e: &gatehouse_identity::Error) -> String {
    match e {
        gatehouse_identity::Error::Code {
            detail: Some(d), ..
        } => d.clone(),
        gatehouse_identity::Error::Internal(_) => "The sign-in failed on the server.".into(),
        other => other.to_string(),
    }
}

/// `GET /__/auth/handler`: the provider's redirect back. The flow named by `state` says where
/// the result goes; the page delivers it there.
async fn federated_handler(
    State(identity): State<Identity>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: axum::http::HeaderMap,
    Query(q): Query<HandlerQuery>,
) -> Response {
    let ip = peer.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |c| c.0.0.ip());
    let Some(state) = q.state.as_deref().filter(|s| !s.is_empty()) else {
        return refusal(
            "The provider's answer carries no state; start the sign-in again.",
            StatusCode::BAD_REQUEST,
        );
    };
    let upstream_error = q.error.as_deref().map(|e| match &q.error_description {
        Some(d) => format!("{e} ({d})"),
        None => e.to_owned(),
    });
    let cookie_name = gatehouse_identity::binding_cookie(state);
    let binding = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == cookie_name)
        .map(|(_, value)| value.to_owned());
    let (return_to, result) = identity
        .finish_federated(
            state,
            binding.as_deref(),
            q.code.as_deref(),
            q.iss.as_deref(),
            upstream_error.as_deref(),
            ip,
        )
        .await;
    let Some(to) = return_to else {
        let message = result
            .err()
            .map_or_else(|| "Unknown sign-in.".into(), |e| describe(&e));
        return refusal(&message, StatusCode::BAD_REQUEST);
    };
    let out = match result {
        Ok(out) if out.need_confirmation => {
            return refusal(
                &format!(
                    "An account already exists with the e-mail address {}. Sign in to it the way \
                     you did before, then link {} from there.",
                    out.user.email.as_deref().unwrap_or("given by the provider"),
                    out.profile.provider_id
                ),
                StatusCode::CONFLICT,
            );
        }
        Ok(out) => out,
        Err(e) => {
            tracing::info!(error = %e, "federated sign-in refused");
            return refusal(&describe(&e), StatusCode::BAD_REQUEST);
        }
    };
    let Some(tokens) = &out.tokens else {
        return refusal(
            "The sign-in produced no tokens.",
            StatusCode::INTERNAL_SERVER_ERROR,
        );
    };
    let config = json!({
        "apiKey": to.api_key,
        "projectId": out.user.project_id,
        "mode": to.mode,
        "origin": to.origin,
        "redirectUrl": to.redirect_url,
        "nonce": to.nonce,
        "providerId": null,
        "providers": [],
        "result": {
            "idToken": tokens.id_token,
            "refreshToken": tokens.refresh_token,
            "expiresIn": tokens.expires_in.to_string(),
            "localId": out.user.local_id,
            "email": out.user.email,
            "displayName": out.user.display_name,
            "photoUrl": out.user.photo_url,
            "isNewUser": out.is_new_user,
            "providerId": out.profile.provider_id,
        },
        "error": null,
    });
    render(&config, StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::valid_nonce;

    #[test]
    fn nonces_are_16_to_128_url_safe_characters() {
        assert!(valid_nonce("Yq3-_vJc8kQ2xN5t"));
        assert!(valid_nonce(&"a".repeat(128)));
        for bad in [
            "",
            "short",
            &"a".repeat(129),
            "Yq3-_vJc8kQ2xN5t=",
            "Yq3-_vJc8kQ2xN5t#x",
            "Yq3 _vJc8kQ2xN5t",
        ] {
            assert!(!valid_nonce(bad), "{bad:?}");
        }
    }
}
