//! CORS for the identity API.
//!
//! The REST API uses no cookies, so no answer ever carries `Access-Control-Allow-Credentials`.
//! A server with a production project answers cross-origin calls only from pages whose host is
//! on the authorized domains of one of its projects (the list the hosted page and `continueUrl`
//! use); a page elsewhere cannot read what the API says. A server with development projects
//! only keeps the emulator's openness (every origin reflected, Private Network Access granted),
//! and [`warn_if_exposed`] says so at start when it listens beyond loopback.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gatehouse_identity::Identity;

/// Who may read an answer.
enum Grant {
    /// This origin, reflected.
    Origin(HeaderValue),
    /// Anyone (`*`): a development server called without an `Origin`.
    Any,
    /// Nobody cross-origin: no CORS headers at all.
    Nobody,
}

/// Answers preflights (204) and adds the CORS headers the caller's origin is granted.
pub(crate) async fn cors(State(identity): State<Identity>, req: Request, next: Next) -> Response {
    let grant = match req.headers().get(header::ORIGIN) {
        Some(origin) if allowed(&identity, origin).await => Grant::Origin(origin.clone()),
        Some(_) => Grant::Nobody,
        None if identity.serves_production() => Grant::Nobody,
        None => Grant::Any,
    };
    let requested = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned();
    let private = req
        .headers()
        .contains_key("access-control-request-private-network");
    let mut res = if req.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let h = res.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    let allow_origin = match grant {
        Grant::Origin(origin) => origin,
        Grant::Any => HeaderValue::from_static("*"),
        Grant::Nobody => return res,
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
    );
    if let Some(requested) = requested {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
    }
    if private {
        h.insert(
            "access-control-allow-private-network",
            HeaderValue::from_static("true"),
        );
    }
    res
}

/// Whether a page at `origin` may read answers: any origin on a development server; on a
/// production server an http(s) origin whose host is an authorized domain of some project.
async fn allowed(identity: &Identity, origin: &HeaderValue) -> bool {
    if !identity.serves_production() {
        return true;
    }
    let host = origin
        .to_str()
        .ok()
        .and_then(|o| url::Url::parse(o).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .and_then(|u| u.host_str().map(str::to_owned));
    match host {
        Some(host) => identity.is_authorized_host_of_any_project(&host).await,
        None => false,
    }
}

/// Logs, loudly, what a server with development projects relaxes when it listens on `addr`
/// beyond loopback.
pub(crate) fn warn_if_exposed(identity: &Identity, addr: SocketAddr) {
    let projects = identity.development_projects();
    if addr.ip().is_loopback() || projects.is_empty() {
        return;
    }
    if identity.serves_production() {
        tracing::warn!(
            %addr,
            ?projects,
            "development-mode projects on a non-loopback address: for them any API key is \
             accepted, `Bearer owner` is an admin and the /emulator routes are on"
        );
    } else {
        tracing::warn!(
            %addr,
            ?projects,
            "DEVELOPMENT MODE on a non-loopback address: any web origin may call this identity \
             server and read its answers (CORS reflects every origin and grants Private Network \
             Access), any API key is accepted, `Bearer owner` is an admin and the /emulator \
             routes are on. Serve projects as ID:production for anything others can reach"
        );
    }
}
