//! Public keys: the JWK set and x509 certificate map of the ID-token keys, the session-cookie
//! keys, and an OpenID discovery document.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gatehouse_identity::{Identity, KeyPurpose};
use serde_json::json;

pub fn router() -> Router<Identity> {
    Router::new()
        .route(
            "/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com",
            get(id_token_x509),
        )
        .route(
            "/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com",
            get(id_token_jwks),
        )
        .route(
            "/identitytoolkit/v3/relyingparty/publicKeys",
            get(session_x509),
        )
        .route("/.well-known/openid-configuration", get(discovery_default))
        .route(
            "/securetoken.google.com/{project}/.well-known/openid-configuration",
            get(discovery),
        )
}

fn cacheable(body: String, max_age: i64) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "public, max-age={max_age}, must-revalidate, no-transform"
    )) {
        h.insert(header::CACHE_CONTROL, v);
    }
    res
}

fn published(doc: gatehouse_identity::Result<(String, i64)>) -> Response {
    match doc {
        Ok((body, age)) => cacheable(body, age),
        Err(e) => crate::ApiError(e).into_response(),
    }
}

async fn id_token_x509(State(identity): State<Identity>) -> Response {
    published(identity.keyring().x509(KeyPurpose::IdToken))
}

async fn id_token_jwks(State(identity): State<Identity>) -> Response {
    published(identity.keyring().jwks(KeyPurpose::IdToken))
}

async fn session_x509(State(identity): State<Identity>) -> Response {
    published(identity.keyring().x509(KeyPurpose::SessionCookie))
}

async fn discovery_default(State(identity): State<Identity>) -> Response {
    let project = identity.default_project().to_owned();
    discovery(State(identity), Path(project)).await
}

async fn discovery(State(identity): State<Identity>, Path(project): Path<String>) -> Response {
    let Some(config) = identity.project(&project) else {
        return crate::ApiError(gatehouse_identity::Error::NotFound("Not Found".into()))
            .into_response();
    };
    let base = identity.public_url();
    let doc = json!({
        "issuer": config.issuer,
        "jwks_uri": format!("{base}/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    cacheable(doc.to_string(), 3600)
}
