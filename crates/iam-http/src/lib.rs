//! HTTP for IAM, in Google's wire shapes:
//!
//! - the OAuth token endpoint (`POST /token`, also `/oauth2/v4/token`): the JWT-bearer grant;
//! - Google's ID-token certificates (`/oauth2/v1/certs` x509 map, `/oauth2/v3/certs` JWK set,
//!   OpenID discovery) and per-account public keys (`/robot/v1/metadata/{x509,jwk}/{email}`,
//!   `/service_accounts/v1/metadata/{x509,jwk}/{email}`);
//! - the IAM v1 API for service accounts, keys and their policies, project policies
//!   (`/v1/projects/{p}:getIamPolicy` …), and the IAM Credentials API
//!   (`…/serviceAccounts/{email}:generateIdToken` …) on the same paths;
//! - metadata servers ([`metadata`]), one per account.

#![forbid(unsafe_code)]

mod api;

pub use api::policy_verb;
pub mod metadata;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_iam::{Error, Iam, Principal};
use serde_json::{Value, json};

/// Google's JSON error body for `e`.
pub fn error_response(e: &Error) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = %e, "internal error");
    }
    let mut body =
        json!({"error": {"code": e.http_status(), "message": e.to_string(), "status": e.status()}});
    // Google attaches an ErrorInfo naming the permission to IAM denials.
    if let Error::PermissionDenied(m) = e
        && let Some(rest) = m.strip_prefix("Permission '")
        && let Some((permission, _)) = rest.split_once('\'')
    {
        let domain = match permission.split('.').next().unwrap_or_default() {
            "resourcemanager" => "cloudresourcemanager.googleapis.com".to_owned(),
            service => format!("{service}.googleapis.com"),
        };
        body["error"]["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "IAM_PERMISSION_DENIED",
            "domain": domain,
            "metadata": {"permission": permission},
        }]);
    }
    let mut res = (status, axum::Json(body)).into_response();
    if matches!(e, Error::Unauthenticated(_)) {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
        );
    }
    res
}

fn json_ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

/// A public document clients may cache for `max_age` seconds.
fn cacheable(body: String, max_age: i64) -> Response {
    let mut res = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "public, max-age={max_age}, must-revalidate, no-transform"
    )) {
        res.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    res
}

/// Who is calling: the bearer token's principal, anonymous without one. `audiences` are the
/// `aud` values self-signed JWTs may carry for the API being called.
pub async fn caller(
    iam: &Iam,
    headers: &HeaderMap,
    audiences: &[&str],
) -> Result<Principal, Error> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Principal::Anonymous);
    };
    let text = value.to_str().map_err(|_| Error::unauthenticated())?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(Error::unauthenticated)?;
    iam.authenticate(token, audiences).await
}

/// A request body of at most 1 MiB, or Google's error response.
pub async fn read_body(body: axum::body::Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, 1024 * 1024).await.map_err(|_| {
        error_response(&Error::InvalidArgument(
            "Request body too large or unreadable.".into(),
        ))
    })
}

/// The IAM HTTP API (everything but metadata servers), on one router.
pub fn router(iam: Iam) -> Router {
    Router::new().fallback(dispatch).with_state(iam)
}

async fn dispatch(State(iam): State<Iam>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    match route(&iam, &parts.method, &path, &query, &parts.headers, &body).await {
        Ok(res) => res,
        Err(e) => error_response(&e),
    }
}

async fn route(
    iam: &Iam,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Error> {
    let get = method == Method::GET;
    match path {
        "/token" | "/oauth2/v4/token" | "/o/oauth2/token" if method == Method::POST => {
            return Ok(token_endpoint(iam, headers, body).await);
        }
        "/oauth2/v1/certs" if get => {
            let (doc, age) = iam.id_token_certs()?;
            return Ok(cacheable(doc, age));
        }
        "/oauth2/v3/certs" if get => {
            let (doc, age) = iam.id_token_jwks()?;
            return Ok(cacheable(doc, age));
        }
        "/.well-known/openid-configuration" if get => {
            let base = iam.config().public_url.trim_end_matches('/');
            return Ok(json_ok(json!({
                "issuer": gatehouse_iam::ID_TOKEN_ISSUER,
                "jwks_uri": format!("{base}/oauth2/v3/certs"),
                "token_endpoint": format!("{base}/token"),
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "grant_types_supported": ["urn:ietf:params:oauth:grant-type:jwt-bearer"],
            })));
        }
        _ => {}
    }
    for (prefix, x509) in [
        ("/robot/v1/metadata/x509/", true),
        ("/service_accounts/v1/metadata/x509/", true),
        ("/robot/v1/metadata/jwk/", false),
        ("/service_accounts/v1/metadata/jwk/", false),
    ] {
        if let Some(email) = path.strip_prefix(prefix)
            && get
        {
            let email = percent_decode(email);
            let doc = if x509 {
                iam.public_x509(&email).await?
            } else {
                iam.public_jwks(&email).await?
            };
            return Ok(cacheable(doc.to_string(), 300));
        }
    }
    if let Some(rest) = path
        .strip_prefix("/v1/")
        .or_else(|| path.strip_prefix("/v3/"))
    {
        return api::v1(iam, method, rest, query, headers, body).await;
    }
    Err(Error::NotFound(format!(
        "The requested URL {path} was not found on this server."
    )))
}

async fn token_endpoint(iam: &Iam, headers: &HeaderMap, body: &Bytes) -> Response {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let base = iam.config().public_url.trim_end_matches('/');
    let own = vec![
        format!("{base}/token"),
        format!("http://{host}/token"),
        format!("https://{host}/token"),
    ];
    match iam.grant(&form, &own).await {
        Ok(g) => json_ok(g.0),
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(error = %e.description, "token endpoint failed");
            }
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
            (status, axum::Json(e.body())).into_response()
        }
    }
}

/// Decodes `%XX` escapes in a path segment.
pub(crate) fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_owned())
}
