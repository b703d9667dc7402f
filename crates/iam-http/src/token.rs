//! The OAuth token endpoint (`POST /token`): the JWT-bearer grant in OAuth's wire, whose
//! errors are `{"error","error_description"}` rather than Google's API envelope.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_google_api::{ApiError, Call};
use gatehouse_iam::{Grant, GrantError, GrantErrorKind, Iam};
use serde_json::{Value, json};

pub(crate) async fn token_endpoint(iam: Iam, call: Call) -> Result<Response, ApiError> {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&call.body).unwrap_or_default();
    let host = call
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let base = iam.config().public_url.trim_end_matches('/');
    let own = vec![
        format!("{base}/token"),
        format!("http://{host}/token"),
        format!("https://{host}/token"),
    ];
    Ok(match iam.grant(&form, &own).await {
        Ok(g) => Json(grant_body(&g)).into_response(),
        Err(e) => {
            let status = status(&e);
            if status.is_server_error() {
                tracing::error!(error = %e.description, "token endpoint failed");
            }
            (status, Json(error_body(&e))).into_response()
        }
    })
}

/// A grant's body: `{"id_token"}`, or `{"access_token","expires_in","token_type"}`.
fn grant_body(grant: &Grant) -> Value {
    match grant {
        Grant::IdToken(token) => json!({ "id_token": token }),
        Grant::AccessToken { token, expires_in } => json!({
            "access_token": token,
            "expires_in": expires_in,
            "token_type": "Bearer",
        }),
    }
}

/// 500 for our failures, 400 for everything the client sent.
fn status(e: &GrantError) -> StatusCode {
    match e.kind {
        GrantErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        GrantErrorKind::InvalidRequest
        | GrantErrorKind::InvalidGrant
        | GrantErrorKind::UnsupportedGrantType
        | GrantErrorKind::InvalidScope => StatusCode::BAD_REQUEST,
    }
}

fn error_body(e: &GrantError) -> Value {
    json!({"error": e.kind.code(), "error_description": e.description})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_in_oauths_shapes() {
        assert_eq!(
            grant_body(&Grant::IdToken("t".into())).to_string(),
            r#"{"id_token":"t"}"#
        );
        assert_eq!(
            grant_body(&Grant::AccessToken {
                token: "ya29.x".into(),
                expires_in: 3599
            })
            .to_string(),
            r#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#
        );
    }

    #[test]
    fn refusals_are_400_and_our_failures_500() {
        let e = |kind| GrantError {
            kind,
            description: "d".into(),
        };
        for (kind, code) in [
            (GrantErrorKind::InvalidRequest, "invalid_request"),
            (GrantErrorKind::InvalidGrant, "invalid_grant"),
            (
                GrantErrorKind::UnsupportedGrantType,
                "unsupported_grant_type",
            ),
            (GrantErrorKind::InvalidScope, "invalid_scope"),
        ] {
            assert_eq!(status(&e(kind)), StatusCode::BAD_REQUEST);
            assert_eq!(
                error_body(&e(kind)),
                json!({"error": code, "error_description": "d"})
            );
        }
        let internal = e(GrantErrorKind::Internal);
        assert_eq!(status(&internal), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error_body(&internal)["error"], "internal_failure");
    }
}
