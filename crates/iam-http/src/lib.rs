//! HTTP for IAM, in Google's wire shapes:
//!
//! - the OAuth token endpoint (`POST /token`, also `/oauth2/v4/token`): the JWT-bearer grant;
//! - Google's ID-token certificates (`/oauth2/v1/certs` x509 map, `/oauth2/v3/certs` JWK set,
//!   OpenID discovery) and per-account public keys (`/robot/v1/metadata/{x509,jwk}/{email}`,
//!   `/service_accounts/v1/metadata/{x509,jwk}/{email}`);
//! - the IAM v1 API for service accounts, keys and their policies, project policies
//!   (`/v1/projects/{p}:getIamPolicy` …), and the IAM Credentials API
//!   (`…/serviceAccounts/{email}:generateIdToken` …) on the same paths ([`api`]).
//!
//! Owns: IAM's route table and its resources' JSON, the OAuth token endpoint's bodies and
//! statuses (`token`), the x509 map and JWK set of an account's published keys.
//! Google's conventions (routing, the error envelope and the status of each `gatehouse-iam`
//! error, callers, the IAM policy mixin and the Policy message) come from
//! `gatehouse-google-api`.
//!
//! Must not: decide access or validate grants (that is `gatehouse-iam`), write SQL, or serve
//! metadata servers (`gatehouse-metadata`).

#![forbid(unsafe_code)]

mod api;
mod token;

use axum::Json;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_google_api::{Api, ApiError, Call, Miss};
use gatehouse_iam::{Iam, PublishedKey};
use serde_json::{Value, json};

/// The IAM HTTP API (everything but metadata servers), on one router.
pub fn router(iam: Iam) -> axum::Router {
    table().into_router(iam)
}

fn table() -> Api<Iam> {
    let mut api = Api::new();
    for path in ["/token", "/oauth2/v4/token", "/o/oauth2/token"] {
        api = api.route(Method::POST, path, token::token_endpoint);
    }
    api = api
        .route(Method::GET, "/oauth2/v1/certs", x509_certs)
        .route(Method::GET, "/oauth2/v3/certs", jwks_certs)
        .route(Method::GET, "/.well-known/openid-configuration", discovery);
    for base in ["/robot/v1/metadata", "/service_accounts/v1/metadata"] {
        api = api
            .route(Method::GET, &format!("{base}/x509/{{email}}"), account_x509)
            .route(Method::GET, &format!("{base}/jwk/{{email}}"), account_jwks);
    }
    for version in ["v1", "v3"] {
        api = api::routes(api, version);
    }
    api.on_miss(miss)
}

/// Google's 404; under `/v1/projects/` (and `/v3/`) a bad token is 401 first, and the message
/// names the `/v1/` path.
async fn miss(iam: Iam, call: Call, _: Miss) -> Result<Response, ApiError> {
    let path = call.uri.path();
    let Some(rest) = path
        .strip_prefix("/v1/")
        .or_else(|| path.strip_prefix("/v3/"))
    else {
        return Err(ApiError::no_such_url(path));
    };
    if rest.starts_with("projects/") {
        api::any_caller(&iam, &call).await?;
    }
    Err(ApiError::no_such_url(&format!("/v1/{rest}")))
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

async fn x509_certs(iam: Iam, _: Call) -> Result<Response, ApiError> {
    let (doc, age) = iam.id_token_certs()?;
    Ok(cacheable(doc, age))
}

async fn jwks_certs(iam: Iam, _: Call) -> Result<Response, ApiError> {
    let (doc, age) = iam.id_token_jwks()?;
    Ok(cacheable(doc, age))
}

async fn discovery(iam: Iam, _: Call) -> Result<Response, ApiError> {
    let base = iam.config().public_url.trim_end_matches('/');
    Ok(Json(json!({
        "issuer": gatehouse_iam::ID_TOKEN_ISSUER,
        "jwks_uri": format!("{base}/oauth2/v3/certs"),
        "token_endpoint": format!("{base}/token"),
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "grant_types_supported": ["urn:ietf:params:oauth:grant-type:jwt-bearer"],
    }))
    .into_response())
}

async fn account_x509(iam: Iam, call: Call) -> Result<Response, ApiError> {
    let keys = iam.published_keys(call.capture("email")).await?;
    Ok(cacheable(x509_map(&keys).to_string(), 300))
}

async fn account_jwks(iam: Iam, call: Call) -> Result<Response, ApiError> {
    let keys = iam.published_keys(call.capture("email")).await?;
    Ok(cacheable(jwk_set(&keys).to_string(), 300))
}

/// An account's keys as Google's `{kid: PEM certificate}` map.
fn x509_map(keys: &[PublishedKey]) -> Value {
    Value::Object(
        keys.iter()
            .map(|k| (k.key_id.clone(), Value::String(k.certificate.clone())))
            .collect(),
    )
}

/// An account's keys as a JWK set (`{"keys": [...]}`).
fn jwk_set(keys: &[PublishedKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_table_parses() {
        assert_eq!(table().check(), Ok(()));
    }

    #[test]
    fn account_keys_are_served_as_an_x509_map_and_a_jwk_set() {
        let key = |id: &str| PublishedKey {
            key_id: id.into(),
            certificate: format!("-----BEGIN CERTIFICATE-----\n{id}\n"),
            jwk: json!({"kid": id, "kty": "RSA"}),
        };
        let keys = [key("b"), key("a")];
        assert_eq!(
            x509_map(&keys).to_string(),
            r#"{"a":"-----BEGIN CERTIFICATE-----\na\n","b":"-----BEGIN CERTIFICATE-----\nb\n"}"#
        );
        assert_eq!(
            jwk_set(&keys),
            json!({"keys": [{"kid": "b", "kty": "RSA"}, {"kid": "a", "kty": "RSA"}]})
        );
        assert_eq!(x509_map(&[]).to_string(), "{}");
        assert_eq!(jwk_set(&[]).to_string(), r#"{"keys":[]}"#);
    }
}
