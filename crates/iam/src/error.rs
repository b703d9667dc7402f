//! The crate's one error type: Google's canonical codes, with Google's wording for the
//! common cases.

/// Errors, with Google's canonical status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The HTTP status Google maps the canonical code to.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::InvalidArgument(_) | Self::FailedPrecondition(_) => 400,
            Self::Unauthenticated(_) => 401,
            Self::PermissionDenied(_) => 403,
            Self::NotFound(_) => 404,
            Self::AlreadyExists(_) | Self::Aborted(_) => 409,
            Self::Internal(_) => 500,
        }
    }

    /// The canonical code's name.
    pub fn status(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::FailedPrecondition(_) => "FAILED_PRECONDITION",
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::PermissionDenied(_) => "PERMISSION_DENIED",
            Self::NotFound(_) => "NOT_FOUND",
            Self::AlreadyExists(_) => "ALREADY_EXISTS",
            Self::Aborted(_) => "ABORTED",
            Self::Internal(_) => "INTERNAL",
        }
    }

    /// The permission-denied error Google gives for `permission` on `resource`.
    pub fn denied(permission: &str, resource: &str) -> Self {
        Self::PermissionDenied(format!(
            "Permission '{permission}' denied on resource '{resource}' (or it may not exist)."
        ))
    }

    /// The message Google gives when no credentials are sent.
    pub fn missing_credentials() -> Self {
        Self::Unauthenticated(
            "Request is missing required authentication credential. Expected OAuth 2 access \
             token, login cookie or other valid authentication credential. See \
             https://developers.google.com/identity/sign-in/web/devconsole-project."
                .into(),
        )
    }

    /// The message Google gives for bad credentials.
    pub fn unauthenticated() -> Self {
        Self::Unauthenticated(
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login \
             cookie or other valid authentication credential. See \
             https://developers.google.com/identity/sign-in/web/devconsole-project."
                .into(),
        )
    }
}

impl From<gatehouse_store::Error> for Error {
    fn from(e: gatehouse_store::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<gatehouse_keyring::Error> for Error {
    fn from(e: gatehouse_keyring::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
