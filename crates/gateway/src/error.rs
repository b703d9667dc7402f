//! Locally generated responses, in Envoy's local-reply JSON: `{"code":N,"message":"..."}`.
//!
//! Owns only the shape of the gateway's own answers; which status a failure gets is decided
//! where it happens (`plan`, `upstream`, `h1`).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use crate::Body;

/// A response the gateway makes itself, with who caused it.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub status: u16,
    pub message: String,
    /// `WWW-Authenticate` value for authentication failures.
    pub www_authenticate: Option<String>,
}

impl GatewayError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            www_authenticate: None,
        }
    }

    pub fn not_found() -> Self {
        Self::new(404, "The current request is not defined by this API.")
    }

    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({"code": self.status, "message": self.message}).to_string();
        let mut res = Response::new(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed(),
        );
        *res.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(w) = self
            .www_authenticate
            .and_then(|w| HeaderValue::from_str(&w).ok())
        {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, w);
        }
        res
    }
}
