//! A service's ingress: the invoker check Cloud Run's front end does, then a proxy to a ready
//! instance of the serving revision.
//!
//! Private services need a Google-style ID token (`X-Serverless-Authorization` first, else
//! `Authorization`) whose audience is the service URL (with or without a trailing slash) or a
//! custom audience, from a principal holding `run.routes.invoke`. Missing or invalid → 401 with
//! `WWW-Authenticate`; valid but not allowed → 403; both with Google's HTML bodies and before
//! the process sees anything. The checked token reaches the app with its signature replaced by
//! `SIGNATURE_REMOVED_BY_GOOGLE`, as Cloud Run does.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use gatehouse_iam::{Iam, Principal};

use crate::Service;

pub(crate) struct Shared {
    iam: Iam,
    resource: String,
}

impl Shared {
    pub(crate) fn new(iam: Iam, resource: String) -> Self {
        Self { iam, resource }
    }
}

/// Serves the ingress until `stop` turns true; then stops accepting, lets the requests in
/// flight get their answers and closes idle connections.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    service: Weak<Service>,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = Router::new().fallback(
        move |ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request| {
            let (service, shared) = (service.clone(), shared.clone());
            async move { handle(service, shared, peer, req).await }
        },
    );
    let _ = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop.wait_for(|stop| *stop).await;
    })
    .await;
}

fn page(status: StatusCode, path: &str) -> Response {
    let (title, h1, h2) = if status == StatusCode::UNAUTHORIZED {
        (
            "401 Unauthorized",
            "Error: Unauthorized",
            format!(
                "Your client does not have permission to the requested URL <code>{path}</code>."
            ),
        )
    } else {
        (
            "403 Forbidden",
            "Error: Forbidden",
            format!(
                "Your client does not have permission to get URL <code>{path}</code> from this server."
            ),
        )
    };
    let body = format!(
        "\n<html><head>\n<meta http-equiv=\"content-type\" content=\"text/html;charset=utf-8\">\n\
         <title>{title}</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n<h1>{h1}</h1>\n\
         <h2>{h2}</h2>\n<h2></h2>\n</body></html>\n"
    );
    let mut res = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
        body,
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "Bearer error=\"invalid_token\" error_description=\"The access token could not be verified\"",
            ),
        );
    }
    res
}

fn bearer(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?
        .trim();
    (!t.is_empty()).then(|| t.to_owned())
}

const SERVERLESS_AUTHORIZATION: HeaderName = HeaderName::from_static("x-serverless-authorization");

/// The invoker check. `Ok(None)`: let the request through as it is; `Ok(Some(header))`: let
/// it through with that header's token signature removed.
async fn authorize(
    shared: &Shared,
    service: &Service,
    headers: &HeaderMap,
    path: &str,
) -> Result<Option<HeaderName>, Response> {
    let public = shared
        .iam
        .is_public("run.routes.invoke", &shared.resource)
        .await
        .unwrap_or(false);
    if public {
        return Ok(None);
    }
    // Only X-Serverless-Authorization is checked when both are present.
    let (name, token) = match bearer(headers, &SERVERLESS_AUTHORIZATION) {
        Some(t) => (SERVERLESS_AUTHORIZATION, t),
        None => match bearer(headers, &header::AUTHORIZATION) {
            Some(t) => (header::AUTHORIZATION, t),
            None => {
                // An anonymous caller of a private service: recorded as the denial it is.
                let _ = shared
                    .iam
                    .check(&Principal::Anonymous, "run.routes.invoke", &shared.resource)
                    .await;
                return Err(page(StatusCode::UNAUTHORIZED, path));
            }
        },
    };
    let mut audiences = vec![service.url.clone(), format!("{}/", service.url)];
    audiences.extend(service.spec.load().custom_audiences.iter().cloned());
    let claims = shared
        .iam
        .verify_id_token(&token, &audiences)
        .await
        .map_err(|_| page(StatusCode::UNAUTHORIZED, path))?;
    let email = claims
        .get("email")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let principal = if email.ends_with(".gserviceaccount.com") {
        Principal::ServiceAccount {
            email,
            unique_id: claims
                .get("sub")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned(),
        }
    } else if email.is_empty() {
        // No email claim (includeEmail false): the account by its unique id.
        let sub = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        match shared.iam.account(sub).await {
            Ok(Some(a)) => Principal::ServiceAccount {
                email: a.email.clone(),
                unique_id: a.unique_id.clone(),
            },
            _ => return Err(page(StatusCode::FORBIDDEN, path)),
        }
    } else {
        Principal::User { email }
    };
    match shared
        .iam
        .check(&principal, "run.routes.invoke", &shared.resource)
        .await
    {
        Ok(true) => Ok(Some(name)),
        _ => Err(page(StatusCode::FORBIDDEN, path)),
    }
}

/// How long a request waits for an instance with room (Cloud Run queues pending requests
/// while it starts instances, then answers 429).
const PENDING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

async fn handle(
    service: Weak<Service>,
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request,
) -> Response {
    let Some(service) = service.upgrade() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "service stopped").into_response();
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let verified = match authorize(&shared, &service, req.headers(), &path).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    let (mut parts, body) = req.into_parts();
    if let Some(name) = verified
        && let Some(v) = parts.headers.get(&name).and_then(|v| v.to_str().ok())
        && let Some((signed, _)) = v.rsplit_once('.')
        && let Ok(v) = HeaderValue::from_str(&format!("{signed}.SIGNATURE_REMOVED_BY_GOOGLE"))
    {
        parts.headers.insert(name, v);
    }
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    let forwarded = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prior) => format!("{prior}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        parts.headers.insert("x-forwarded-for", v);
    }
    parts
        .headers
        .insert("x-forwarded-proto", HeaderValue::from_static("http"));
    // The revision stays alive (and its instances running) while this request uses it.
    let revision = service.revision.load_full();
    let Some(lease) = revision.acquire(PENDING_TIMEOUT).await else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "The request was aborted because there was no available instance.",
        )
            .into_response();
    };
    let Ok(uri) = format!("http://127.0.0.1:{}{path}", lease.port).parse::<Uri>() else {
        return (StatusCode::BAD_REQUEST, "bad request path").into_response();
    };
    parts.uri = uri;
    // Connections are made where the instance lives (inside its namespace), pooled per instance.
    let Some(client) = lease.instance.client() else {
        return (StatusCode::BAD_GATEWAY, "the instance did not answer").into_response();
    };
    let res = client.request(Request::from_parts(parts, body)).await;
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(service = %service.spec.load().name, error = %e, "instance unreachable");
            return (StatusCode::BAD_GATEWAY, "the instance did not answer").into_response();
        }
    };
    let (mut parts, body) = res.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    // Keep the revision referenced and the instance counted busy until the body is sent.
    let body = Body::new(http_body_util::BodyExt::map_frame(body, move |f| {
        let _keep = (&revision, &lease);
        f
    }));
    Response::from_parts(parts, body)
}
