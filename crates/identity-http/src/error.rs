//! The one error type of the Identity Toolkit HTTP surface, and its Firebase-shaped body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gatehouse_identity::Error;
use serde_json::json;

/// An identity error on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl ApiError {
    /// `413` for a request body over `limit` bytes, in the Firebase body (Google's wording;
    /// Google's APIs say `INVALID_ARGUMENT`).
    pub fn too_large(limit: usize) -> Response {
        let message = format!("Request payload size exceeds the limit: {limit} bytes.");
        envelope(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid",
            Some("INVALID_ARGUMENT"),
            message,
        )
    }

    /// `408` for a request body that did not arrive in time (the connection closes).
    pub fn body_timeout() -> Response {
        let message = "The request body was not received in time.".to_owned();
        let mut res = envelope(
            StatusCode::REQUEST_TIMEOUT,
            "invalid",
            Some("INVALID_ARGUMENT"),
            message,
        );
        res.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        res
    }
}

/// The Firebase error body: `{"error":{code,message,errors:[{message,reason,domain}],status}}`.
fn envelope(
    status: StatusCode,
    reason: &str,
    status_text: Option<&str>,
    message: String,
) -> Response {
    let item = json!({"message": message, "reason": reason, "domain": "global"});
    let mut error = json!({"code": status.as_u16(), "message": message, "errors": [item]});
    if let Some(s) = status_text {
        error["status"] = json!(s);
    }
    (status, Json(json!({ "error": error }))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.0.message();
        let (status, reason, status_text) = match &self.0 {
            Error::Code { .. } => (StatusCode::BAD_REQUEST, "invalid", None),
            Error::InvalidArgument(_) => {
                (StatusCode::BAD_REQUEST, "invalid", Some("INVALID_ARGUMENT"))
            }
            Error::PermissionDenied(_) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                Some("PERMISSION_DENIED"),
            ),
            Error::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "authError",
                Some("UNAUTHENTICATED"),
            ),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "notFound", Some("NOT_FOUND")),
            Error::NotImplemented(_) => (
                StatusCode::NOT_IMPLEMENTED,
                "unimplemented",
                Some("NOT_IMPLEMENTED"),
            ),
            Error::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "backendError",
                Some("UNAVAILABLE"),
            ),
            Error::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internalError",
                    Some("INTERNAL"),
                )
            }
        };
        let mut item = json!({"message": message, "reason": reason, "domain": "global"});
        if matches!(self.0, Error::Unauthenticated(_)) {
            item["location"] = json!("Authorization");
            item["locationType"] = json!("header");
        }
        let mut error = json!({"code": status.as_u16(), "message": message, "errors": [item]});
        if let Some(s) = status_text {
            error["status"] = json!(s);
        }
        (status, Json(json!({ "error": error }))).into_response()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_refused_write_is_a_503_that_says_why_and_nothing_internal() {
        let message = gatehouse_identity::unwritable_message(gatehouse_store::Unwritable::Full);
        let res = ApiError(Error::Unavailable(message)).into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["status"], "UNAVAILABLE");
        assert_eq!(body["error"]["code"], 503);
        assert_eq!(body["error"]["errors"][0]["reason"], "backendError");
        let text = body["error"]["message"].as_str().unwrap();
        assert!(text.starts_with("The server's storage is full"), "{text}");
        assert!(
            !text.contains("SQLITE") && !text.contains("database"),
            "{text}"
        );
    }
}
