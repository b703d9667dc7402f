//! The hosted action page that e-mailed links point at (`/__/auth/action`): verifies e-mail
//! addresses, resets passwords through a form, and hands e-mail sign-in links back to the app.
//!
//! The link's query is not signed, so its `continueUrl` is checked again here (http(s) on an
//! authorized domain, as `sendOobCode` checked it) and a code is checked before the page sends
//! anyone anywhere: an unknown, used or expired code gets an error page, never a redirect.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use gatehouse_identity::{Caller, Error, Identity, OobKind, ResetPasswordRequest, UpdateRequest};
use serde::Deserialize;

pub fn router() -> Router<Identity> {
    Router::new().route("/__/auth/action", get(show).post(submit))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionQuery {
    mode: Option<String>,
    oob_code: Option<String>,
    api_key: Option<String>,
    continue_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResetForm {
    oob_code: String,
    api_key: Option<String>,
    new_password: String,
    continue_url: Option<String>,
}

/// The caller an action link acts for: the project of the link's API key.
async fn action_caller(
    identity: &Identity,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    api_key: Option<&str>,
) -> Result<Caller, Error> {
    let ip = peer.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |c| c.0.0.ip());
    identity
        .authenticate(Some(api_key.unwrap_or("-")), None, None, None, ip)
        .await
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{t}</title><style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}\
         input,button{{font-size:1rem;padding:.5rem;margin:.25rem 0;width:100%;box-sizing:border-box}}</style></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    );
    (status, Html(html)).into_response()
}

/// Where the page may lead on after the code is used: the link's `continueUrl` if it is an
/// http(s) URL on an authorized domain of the caller's project.
async fn continue_to(
    identity: &Identity,
    caller: &Caller,
    continue_url: Option<&str>,
) -> Option<url::Url> {
    let wanted = continue_url.filter(|u| !u.is_empty())?;
    match identity
        .project_settings(caller)
        .await
        .check_continue_url(caller.project_id(), wanted)
    {
        Ok(url) => Some(url),
        Err(e) => {
            tracing::info!(error = %e, "action link with a continueUrl that is not allowed");
            None
        }
    }
}

/// A "Continue" link, as Firebase's action page shows after a verification or a reset.
fn continue_link(to: Option<&url::Url>) -> String {
    to.map(|u| format!("<p><a href=\"{}\">Continue</a></p>", escape(u.as_str())))
        .unwrap_or_default()
}

fn failure(e: &Error) -> Response {
    let text = match e {
        Error::Code {
            code: "INVALID_OOB_CODE" | "EXPIRED_OOB_CODE",
            ..
        } => "This link is invalid or has expired, or it has already been used.",
        Error::Code {
            code: "WEAK_PASSWORD",
            ..
        } => "The password must be at least 6 characters long.",
        Error::Code {
            code: "UNAUTHORIZED_DOMAIN",
            ..
        } => "This link leads to a page that this app does not allow. Ask for a new link.",
        _ => "Something went wrong. Please try again.",
    };
    page(
        StatusCode::BAD_REQUEST,
        "Try again",
        &format!("<p>{}</p>", escape(text)),
    )
}

async fn show(
    State(identity): State<Identity>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    Query(q): Query<ActionQuery>,
) -> Response {
    let Some(code) = q.oob_code.clone().filter(|c| !c.is_empty()) else {
        return failure(&Error::code("INVALID_OOB_CODE"));
    };
    let caller = match action_caller(&identity, peer, q.api_key.as_deref()).await {
        Ok(c) => c,
        Err(e) => return failure(&e),
    };
    match q.mode.as_deref() {
        Some("verifyEmail" | "verifyAndChangeEmail") => {
            let req = UpdateRequest {
                oob_code: Some(code),
                ..UpdateRequest::default()
            };
            match identity.update(&caller, req).await {
                Ok(_) => {
                    let to = continue_to(&identity, &caller, q.continue_url.as_deref()).await;
                    page(
                        StatusCode::OK,
                        "Email verified",
                        &format!(
                            "<p>Your email address has been verified. You can close this page.</p>{}",
                            continue_link(to.as_ref())
                        ),
                    )
                }
                Err(e) => failure(&e),
            }
        }
        Some("resetPassword") => {
            let check = ResetPasswordRequest {
                oob_code: Some(code.clone()),
                ..ResetPasswordRequest::default()
            };
            match identity.reset_password(&caller, check).await {
                Ok(info) if info.request_type == OobKind::PasswordReset => {
                    let to = continue_to(&identity, &caller, q.continue_url.as_deref()).await;
                    page(
                        StatusCode::OK,
                        "Reset your password",
                        &format!(
                            "<p>for <strong>{}</strong></p><form method=\"post\">\
                             <input type=\"hidden\" name=\"oobCode\" value=\"{}\">\
                             <input type=\"hidden\" name=\"apiKey\" value=\"{}\">\
                             <input type=\"hidden\" name=\"continueUrl\" value=\"{}\">\
                             <label>New password<input type=\"password\" name=\"newPassword\" minlength=\"6\" required autocomplete=\"new-password\"></label>\
                             <button type=\"submit\">Save</button></form>",
                            escape(&info.email),
                            escape(&code),
                            escape(q.api_key.as_deref().unwrap_or_default()),
                            escape(to.as_ref().map_or("", url::Url::as_str)),
                        ),
                    )
                }
                Ok(_) => failure(&Error::code("INVALID_OOB_CODE")),
                Err(e) => failure(&e),
            }
        }
        Some("signIn") => sign_in_link(&identity, &caller, &q, code).await,
        _ => failure(&Error::code("INVALID_OOB_CODE")),
    }
}

/// An e-mail sign-in link: the app's own page (the link's `continueUrl`) completes the sign-in
/// with the code, as Firebase's action handler does. The code must be a live sign-in code and
/// the page on an authorized domain before the code leaves this page.
async fn sign_in_link(
    identity: &Identity,
    caller: &Caller,
    q: &ActionQuery,
    code: String,
) -> Response {
    let check = ResetPasswordRequest {
        oob_code: Some(code.clone()),
        ..ResetPasswordRequest::default()
    };
    match identity.reset_password(caller, check).await {
        Ok(info) if info.request_type == OobKind::EmailSignin => {}
        Ok(_) => return failure(&Error::code("INVALID_OOB_CODE")),
        Err(e) => return failure(&e),
    }
    if q.continue_url.as_deref().is_none_or(str::is_empty) {
        return page(
            StatusCode::OK,
            "Sign in",
            "<p>Open this link on the device where you asked to sign in.</p>",
        );
    }
    let Some(mut url) = continue_to(identity, caller, q.continue_url.as_deref()).await else {
        return failure(&Error::code("UNAUTHORIZED_DOMAIN"));
    };
    url.query_pairs_mut()
        .append_pair("mode", "signIn")
        .append_pair("oobCode", &code)
        .append_pair("apiKey", q.api_key.as_deref().unwrap_or_default());
    Redirect::to(url.as_str()).into_response()
}

async fn submit(
    State(identity): State<Identity>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    Form(form): Form<ResetForm>,
) -> Response {
    let caller = match action_caller(&identity, peer, form.api_key.as_deref()).await {
        Ok(c) => c,
        Err(e) => return failure(&e),
    };
    let req = ResetPasswordRequest {
        oob_code: Some(form.oob_code),
        new_password: Some(form.new_password),
        ..ResetPasswordRequest::default()
    };
    match identity.reset_password(&caller, req).await {
        Ok(_) => {
            let to = continue_to(&identity, &caller, form.continue_url.as_deref()).await;
            page(
                StatusCode::OK,
                "Password changed",
                &format!(
                    "<p>You can now sign in with your new password.</p>{}",
                    continue_link(to.as_ref())
                ),
            )
        }
        Err(e) => failure(&e),
    }
}
