//! google.rpc.Code: the canonical error codes and the HTTP statuses Google maps them to.

use axum::http::StatusCode;

/// A canonical error code (google.rpc.Code), as Google's REST APIs report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// 400: the request is wrong whatever the state of the system.
    InvalidArgument,
    /// 400: the system is not in a state the operation needs.
    FailedPrecondition,
    /// 400: a value is past the valid range.
    OutOfRange,
    /// 401: no valid credentials.
    Unauthenticated,
    /// 403: credentials valid, permission missing.
    PermissionDenied,
    /// 404: the resource (or route) does not exist.
    NotFound,
    /// 409: concurrency conflict (etag mismatch, aborted transaction).
    Aborted,
    /// 409: the resource already exists.
    AlreadyExists,
    /// 429: quota or rate limit.
    ResourceExhausted,
    /// 499: the client cancelled.
    Cancelled,
    /// 500: our fault; the message says nothing internal.
    Internal,
    /// 501: not implemented by this server.
    Unimplemented,
    /// 503: try again later.
    Unavailable,
    /// 504: the deadline passed.
    DeadlineExceeded,
}

impl Code {
    /// Every code, for tests and tables.
    pub const ALL: [Code; 14] = [
        Code::InvalidArgument,
        Code::FailedPrecondition,
        Code::OutOfRange,
        Code::Unauthenticated,
        Code::PermissionDenied,
        Code::NotFound,
        Code::Aborted,
        Code::AlreadyExists,
        Code::ResourceExhausted,
        Code::Cancelled,
        Code::Internal,
        Code::Unimplemented,
        Code::Unavailable,
        Code::DeadlineExceeded,
    ];

    /// The HTTP status Google answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::NotFound => 404,
            Code::Aborted | Code::AlreadyExists => 409,
            Code::ResourceExhausted => 429,
            Code::Cancelled => 499,
            Code::Internal => 500,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::DeadlineExceeded => 504,
        }
    }

    /// [`Code::http_status`] as a [`StatusCode`].
    pub fn status_code(self) -> StatusCode {
        StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The code's name in the body's `status` field.
    pub fn name(self) -> &'static str {
        match self {
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::NotFound => "NOT_FOUND",
            Code::Aborted => "ABORTED",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::Cancelled => "CANCELLED",
            Code::Internal => "INTERNAL",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Unavailable => "UNAVAILABLE",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        }
    }

    /// The numeric google.rpc.Code (used in an operation's `error.code`).
    pub fn rpc_number(self) -> i32 {
        match self {
            Code::Cancelled => 1,
            Code::InvalidArgument => 3,
            Code::DeadlineExceeded => 4,
            Code::NotFound => 5,
            Code::AlreadyExists => 6,
            Code::PermissionDenied => 7,
            Code::ResourceExhausted => 8,
            Code::FailedPrecondition => 9,
            Code::Aborted => 10,
            Code::OutOfRange => 11,
            Code::Unimplemented => 12,
            Code::Internal => 13,
            Code::Unavailable => 14,
            Code::Unauthenticated => 16,
        }
    }

    /// The code named `name` (`"NOT_FOUND"`).
    pub fn from_name(name: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_status_mapping() {
        let table: Vec<(&str, u16, i32)> = Code::ALL
            .iter()
            .map(|c| (c.name(), c.http_status(), c.rpc_number()))
            .collect();
        assert_eq!(
            table,
            vec![
                ("INVALID_ARGUMENT", 400, 3),
                ("FAILED_PRECONDITION", 400, 9),
                ("OUT_OF_RANGE", 400, 11),
                ("UNAUTHENTICATED", 401, 16),
                ("PERMISSION_DENIED", 403, 7),
                ("NOT_FOUND", 404, 5),
                ("ABORTED", 409, 10),
                ("ALREADY_EXISTS", 409, 6),
                ("RESOURCE_EXHAUSTED", 429, 8),
                ("CANCELLED", 499, 1),
                ("INTERNAL", 500, 13),
                ("UNIMPLEMENTED", 501, 12),
                ("UNAVAILABLE", 503, 14),
                ("DEADLINE_EXCEEDED", 504, 4),
            ]
        );
        for c in Code::ALL {
            assert_eq!(Code::from_name(c.name()), Some(c));
            assert_eq!(c.status_code().as_u16(), c.http_status());
        }
        assert_eq!(Code::from_name("OK"), None);
    }
}
