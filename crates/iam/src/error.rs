//! The crate's one error type: one variant per Google canonical code, with Google's wording
//! for the common cases. Statuses and error bodies are the HTTP crates' (`gatehouse-google-api`
//! maps these errors to its `ApiError`).

/// Errors, by Google's canonical code.
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
    /// The store refuses writes (storage full, read-only or failing); safe to retry later.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
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
        match e {
            gatehouse_store::Error::Unwritable(why, cause) => {
                // The cause (SQL error text) is for the log only.
                tracing::error!(error = %cause, "storage {why}: write refused");
                Self::Unavailable(format!(
                    "The server's storage {why}: writes are refused until an operator frees \
                     space; reads are still served. Retry later."
                ))
            }
            gatehouse_store::Error::Unreachable(cause) => {
                tracing::error!(error = %cause, "database unreachable: request refused");
                Self::Unavailable(
                    "The server's database cannot be reached right now (it is restarting or \
                     down). Retry later."
                        .into(),
                )
            }
            e => Self::Internal(e.to_string()),
        }
    }
}

impl From<gatehouse_keyring::Error> for Error {
    fn from(e: gatehouse_keyring::Error) -> Self {
        match e {
            gatehouse_keyring::Error::Store(e) => e.into(),
            e => Self::Internal(e.to_string()),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
