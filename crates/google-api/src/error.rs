//! The one error type of Google-shaped APIs and its wire body:
//! `{"error":{"code","message","status","details":[…]}}`.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Code;

/// The `WWW-Authenticate` challenge Google sends with 401s.
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"https://accounts.google.com/\"";

/// An error on its way to a client of a Google-shaped API.
#[derive(Debug, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    code: Code,
    message: String,
    details: Vec<Value>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ApiError {
    /// An error with `code` and the client-visible `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
            source: None,
        }
    }

    /// 400 INVALID_ARGUMENT.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// 404 for a path no route matches, in the wording Google's front end uses.
    pub fn no_such_url(path: &str) -> Self {
        Self::new(
            Code::NotFound,
            format!("The requested URL {path} was not found on this server."),
        )
    }

    /// 409 ABORTED for a stale etag.
    pub fn etag_mismatch() -> Self {
        Self::new(
            Code::Aborted,
            "The etag provided does not match the current etag of the resource.",
        )
    }

    /// 500 INTERNAL; `cause` goes to the log, never to the client.
    pub fn internal(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            code: Code::Internal,
            message: "Internal error encountered.".into(),
            details: Vec::new(),
            source: Some(Box::new(cause)),
        }
    }

    /// Adds an entry to `details` (an `ErrorInfo`, `BadRequest`, … with its `@type`).
    pub fn with_detail(mut self, detail: Value) -> Self {
        self.details.push(detail);
        self
    }

    /// Adds a google.rpc.ErrorInfo detail.
    pub fn with_error_info(self, reason: &str, domain: &str, metadata: Value) -> Self {
        self.with_detail(json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": domain,
            "metadata": metadata,
        }))
    }

    /// The canonical code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The client-visible message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The body's `error` object (also an operation's `error`, with the numeric code there).
    pub fn body(&self) -> Value {
        let mut error = json!({
            "code": self.code.http_status(),
            "message": self.message,
            "status": self.code.name(),
        });
        if !self.details.is_empty() {
            error["details"] = json!(self.details);
        }
        json!({ "error": error })
    }
}

impl From<gatehouse_iam::Error> for ApiError {
    /// The IAM crate's errors, with the `ErrorInfo` Google attaches to IAM denials.
    fn from(e: gatehouse_iam::Error) -> Self {
        use gatehouse_iam::Error as E;
        let code = match &e {
            E::InvalidArgument(_) => Code::InvalidArgument,
            E::FailedPrecondition(_) => Code::FailedPrecondition,
            E::Unauthenticated(_) => Code::Unauthenticated,
            E::PermissionDenied(_) => Code::PermissionDenied,
            E::NotFound(_) => Code::NotFound,
            E::AlreadyExists(_) => Code::AlreadyExists,
            E::Aborted(_) => Code::Aborted,
            E::Unavailable(_) => Code::Unavailable,
            E::Internal(_) => Code::Internal,
        };
        let mut out = Self::new(code, e.to_string());
        if let E::PermissionDenied(m) = &e
            && let Some(rest) = m.strip_prefix("Permission '")
            && let Some((permission, _)) = rest.split_once('\'')
        {
            let domain = match permission.split('.').next().unwrap_or_default() {
                "resourcemanager" => "cloudresourcemanager.googleapis.com".to_owned(),
                service => format!("{service}.googleapis.com"),
            };
            out = out.with_error_info(
                "IAM_PERMISSION_DENIED",
                &domain,
                json!({ "permission": permission }),
            );
        }
        out.source = Some(Box::new(e));
        out
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status_code();
        if status.is_server_error() {
            match &self.source {
                Some(cause) => tracing::error!(error = %cause, "internal error"),
                None => tracing::error!(error = %self.message, "internal error"),
            }
        }
        let mut res = (status, axum::Json(self.body())).into_response();
        if self.code == Code::Unauthenticated {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(BEARER_CHALLENGE),
            );
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_iam::Error as IamError;

    async fn parts(e: ApiError) -> (u16, Option<String>, Value) {
        let res = e.into_response();
        let status = res.status().as_u16();
        let challenge = res
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        (
            status,
            challenge,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn iam_denial_names_the_permission() {
        let e = ApiError::from(IamError::denied(
            "secretmanager.secrets.get",
            "projects/p/secrets/s",
        ));
        let (status, challenge, body) = parts(e).await;
        assert_eq!(status, 403);
        assert_eq!(challenge, None);
        assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
        assert_eq!(body["error"]["code"], 403);
        let info = &body["error"]["details"][0];
        assert_eq!(info["reason"], "IAM_PERMISSION_DENIED");
        assert_eq!(info["domain"], "secretmanager.googleapis.com");
        assert_eq!(info["metadata"]["permission"], "secretmanager.secrets.get");
        let rm = ApiError::from(IamError::denied("resourcemanager.projects.get", "p"));
        assert_eq!(
            parts(rm).await.2["error"]["details"][0]["domain"],
            "cloudresourcemanager.googleapis.com"
        );
    }

    #[tokio::test]
    async fn unauthenticated_carries_the_challenge_and_no_details() {
        let (status, challenge, body) =
            parts(ApiError::from(IamError::missing_credentials())).await;
        assert_eq!(status, 401);
        assert_eq!(challenge.as_deref(), Some(BEARER_CHALLENGE));
        assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
        assert!(body["error"].get("details").is_none());
    }

    #[tokio::test]
    async fn internal_hides_its_cause() {
        let cause = std::io::Error::other("disk /var/lib/secret failed");
        let e = ApiError::internal(cause);
        assert!(std::error::Error::source(&e).is_some());
        let (status, _, body) = parts(e).await;
        assert_eq!(status, 500);
        assert_eq!(body["error"]["message"], "Internal error encountered.");
        assert!(!body.to_string().contains("/var/lib"));
    }

    #[tokio::test]
    async fn every_iam_error_has_googles_status_and_name() {
        for (e, status, name) in [
            (
                IamError::InvalidArgument("m".into()),
                400,
                "INVALID_ARGUMENT",
            ),
            (
                IamError::FailedPrecondition("m".into()),
                400,
                "FAILED_PRECONDITION",
            ),
            (
                IamError::Unauthenticated("m".into()),
                401,
                "UNAUTHENTICATED",
            ),
            (
                IamError::PermissionDenied("m".into()),
                403,
                "PERMISSION_DENIED",
            ),
            (IamError::NotFound("m".into()), 404, "NOT_FOUND"),
            (IamError::AlreadyExists("m".into()), 409, "ALREADY_EXISTS"),
            (IamError::Aborted("m".into()), 409, "ABORTED"),
            (IamError::Unavailable("m".into()), 503, "UNAVAILABLE"),
            (IamError::Internal("m".into()), 500, "INTERNAL"),
        ] {
            let (got, _, body) = parts(ApiError::from(e)).await;
            assert_eq!((got, &body["error"]["status"]), (status, &json!(name)));
            assert_eq!(body["error"]["code"], status);
        }
    }

    #[tokio::test]
    async fn every_code_has_its_status_and_name() {
        for code in Code::ALL {
            let (status, _, body) = parts(ApiError::new(code, "m")).await;
            assert_eq!(status, code.http_status());
            assert_eq!(body["error"]["status"], code.name());
            assert_eq!(body["error"]["message"], "m");
        }
    }
}
