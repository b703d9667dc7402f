//! The hosted action page that e-mailed links point at (`/__/auth/action`): verifies e-mail
//! addresses, resets passwords through a form, and hands e-mail sign-in links back to the app.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use gatehouse_identity::{Caller, Error, Identity, ResetPasswordRequest, UpdateRequest};
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
                Ok(_) => page(
                    StatusCode::OK,
                    "Email verified",
                    "<p>Your email address has been verified. You can close this page.</p>",
                ),
                Err(e) => failure(&e),
            }
        }
        Some("resetPassword") => {
            let check = ResetPasswordRequest {
                oob_code: Some(code.clone()),
                ..ResetPasswordRequest::default()
            };
            match identity.reset_password(&caller, check).await {
                Ok(info) => page(
                    StatusCode::OK,
                    "Reset your password",
                    &format!(
                        "<p>for <strong>{}</strong></p><form method=\"post\">\
                         <input type=\"hidden\" name=\"oobCode\" value=\"{}\">\
                         <input type=\"hidden\" name=\"apiKey\" value=\"{}\">\
                         <label>New password<input type=\"password\" name=\"newPassword\" minlength=\"6\" required autocomplete=\"new-password\"></label>\
                         <button type=\"submit\">Save</button></form>",
                        escape(&info.email),
                        escape(&code),
                        escape(q.api_key.as_deref().unwrap_or_default())
                    ),
                ),
                Err(e) => failure(&e),
            }
        }
        Some("signIn") => match q
            .continue_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
        {
            Some(mut url) => {
                url.query_pairs_mut()
                    .append_pair("mode", "signIn")
                    .append_pair("oobCode", &code)
                    .append_pair("apiKey", q.api_key.as_deref().unwrap_or_default());
                Redirect::to(url.as_str()).into_response()
            }
            None => page(
                StatusCode::OK,
                "Sign in",
                "<p>Open this link on the device where you asked to sign in.</p>",
            ),
        },
        _ => failure(&Error::code("INVALID_OOB_CODE")),
    }
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
        Ok(_) => page(
            StatusCode::OK,
            "Password changed",
            "<p>You can now sign in with your new password.</p>",
        ),
        Err(e) => failure(&e),
    }
}
