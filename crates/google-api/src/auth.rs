//! Who is calling and whether they may: Bearer access tokens and self-signed JWTs through
//! [`gatehouse_iam::Iam::authenticate`], then `iam.require(permission, resource)`, as one
//! value every API crate uses.

use axum::http::{HeaderMap, header};
use gatehouse_iam::{Error as IamError, Iam, Principal};

use crate::ApiError;

/// The principal behind a request's `Authorization` header (anonymous without one).
/// `audiences` are the `aud` values self-signed JWTs may carry for the API being called.
pub async fn principal(
    iam: &Iam,
    headers: &HeaderMap,
    audiences: &[&str],
) -> Result<Principal, IamError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Principal::Anonymous);
    };
    let text = value.to_str().map_err(|_| IamError::unauthenticated())?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(IamError::unauthenticated)?;
    iam.authenticate(token, audiences).await
}

/// An authenticated (or anonymous) caller of a Google-shaped API, with the IAM it is checked
/// against.
#[derive(Clone)]
pub struct Caller {
    iam: Iam,
    principal: Principal,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// Resolves the caller of a request; a bad token is 401.
    pub async fn from_headers(
        iam: &Iam,
        headers: &HeaderMap,
        audiences: &[&str],
    ) -> Result<Self, ApiError> {
        let principal = principal(iam, headers, audiences).await?;
        Ok(Self {
            iam: iam.clone(),
            principal,
        })
    }

    /// [`Caller::from_headers`], then 401 (Google's "missing credential" wording) for
    /// anonymous callers.
    pub async fn authenticated(
        iam: &Iam,
        headers: &HeaderMap,
        audiences: &[&str],
    ) -> Result<Self, ApiError> {
        let caller = Self::from_headers(iam, headers, audiences).await?;
        caller.require_authenticated()?;
        Ok(caller)
    }

    /// Who is calling.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The IAM the caller is checked against.
    pub fn iam(&self) -> &Iam {
        &self.iam
    }

    /// 401 for anonymous callers.
    pub fn require_authenticated(&self) -> Result<(), ApiError> {
        if matches!(self.principal, Principal::Anonymous) {
            return Err(IamError::missing_credentials().into());
        }
        Ok(())
    }

    /// 403 (with IAM's ErrorInfo) unless the caller holds `permission` on `resource`.
    pub async fn require(&self, permission: &str, resource: &str) -> Result<(), ApiError> {
        Ok(self
            .iam
            .require(&self.principal, permission, resource)
            .await?)
    }
}
