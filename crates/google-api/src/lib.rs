//! Google's REST API conventions, once, for every Google-shaped API crate (IAM, Secret
//! Manager, Identity Toolkit's routing, and the control-plane APIs after them).
//!
//! Owns: path templates with `resource:verb` custom methods and the route table ([`path`],
//! [`router`]); the error envelope `{"error":{code,message,status,details}}` and the canonical
//! [`Code`]s ([`error`]); body limits and JSON decoding with Google's wording ([`body`]);
//! caller authentication and permission checks ([`auth`]); the IAM policy mixin
//! ([`iam_policy`]); paging ([`page`]), field masks
//! ([`mask`]), etags ([`etag`]) and long-running operations ([`lro`], kept in the store).
//!
//! Must not: know any one API's resources, hold SQL, or define a wire shape that is not
//! Google's general convention (Firebase's error body stays in identity-http).

#![forbid(unsafe_code)]

pub mod auth;
pub mod body;
mod code;
pub mod error;
pub mod etag;
pub mod iam_policy;
pub mod lro;
pub mod mask;
pub mod page;
pub mod path;
pub mod router;

pub use auth::Caller;
pub use code::Code;
pub use error::ApiError;
pub use mask::{FieldMask, camel_case};
pub use page::{Page, PageRequest};
pub use path::{Captures, PathTemplate};
pub use router::{Api, Call, Miss, RouteTable};

/// A Google-shaped API's result.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;
