//! The identity error: Firebase error codes plus the few protocol-level failures. Statuses and
//! the Firebase error body are `gatehouse-identity-http`'s (`ApiError`).

/// An identity failure, in the vocabulary of the Identity Toolkit API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A business error, by Firebase code: `message` is `CODE` or `CODE : detail`.
    #[error("{code}")]
    Code {
        code: &'static str,
        detail: Option<String>,
    },
    /// Malformed request (bad JSON, wrong types): `INVALID_ARGUMENT`.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No or unusable credentials: `PERMISSION_DENIED`.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Bad OAuth credentials: `UNAUTHENTICATED`.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The operation or project does not exist: `NOT_FOUND`.
    #[error("not found: {0}")]
    NotFound(String),
    /// A documented operation this server does not offer: `NOT_IMPLEMENTED`.
    #[error("not implemented: {0}")]
    NotImplemented(String),
    /// The state store refuses writes (storage full, read-only or failing): `UNAVAILABLE`,
    /// safe to retry once space is freed. The message is for the client; reads still work.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Our fault: `INTERNAL`, with no detail for the client; the text is for the log.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A bare Firebase error code.
    pub fn code(code: &'static str) -> Self {
        Self::Code { code, detail: None }
    }

    /// A Firebase error code with a detail (`CODE : detail`).
    pub fn detail(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Code {
            code,
            detail: Some(detail.into()),
        }
    }

    pub(crate) fn internal(text: impl Into<String>) -> Self {
        Self::Internal(text.into())
    }

    pub(crate) fn invalid_argument(text: impl Into<String>) -> Self {
        Self::InvalidArgument(text.into())
    }

    /// The Firebase `message` string.
    pub fn message(&self) -> String {
        match self {
            Self::Code { code, detail: None } => (*code).to_owned(),
            Self::Code {
                code,
                detail: Some(d),
            } => format!("{code} : {d}"),
            Self::InvalidArgument(m)
            | Self::PermissionDenied(m)
            | Self::Unauthenticated(m)
            | Self::NotFound(m)
            | Self::NotImplemented(m)
            | Self::Unavailable(m) => m.clone(),
            Self::Internal(_) => "Internal error encountered.".to_owned(),
        }
    }

    /// Whether this is the given business code.
    pub fn is(&self, wanted: &str) -> bool {
        matches!(self, Self::Code { code, .. } if *code == wanted)
    }
}

impl From<gatehouse_store::Error> for Error {
    fn from(e: gatehouse_store::Error) -> Self {
        match e {
            gatehouse_store::Error::Unwritable(why, cause) => {
                // The cause (SQL error text) is for the log only.
                tracing::error!(error = %cause, "storage {why}: write refused");
                Self::Unavailable(unwritable_message(why))
            }
            gatehouse_store::Error::Unreachable(cause) => {
                tracing::error!(error = %cause, "database unreachable: request refused");
                Self::Unavailable(UNREACHABLE.to_owned())
            }
            e => Self::Internal(e.to_string()),
        }
    }
}

/// What a client is told when the database cannot be reached.
pub const UNREACHABLE: &str =
    "The server's database cannot be reached right now (it is restarting or down). Retry later.";

/// What a client is told when the store refuses a write.
pub fn unwritable_message(why: gatehouse_store::Unwritable) -> String {
    format!(
        "The server's storage {why}: writes are refused until an operator frees space; \
         reads and existing sessions are still served. Retry later."
    )
}
