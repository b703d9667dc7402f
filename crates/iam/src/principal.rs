//! Who is asking: the principal a decision is about.

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials.
    Anonymous,
    /// A service account (by its email and unique id).
    ServiceAccount { email: String, unique_id: String },
    /// A user (by email).
    User { email: String },
    /// The local administrator: the `gatehouse` CLI working on the database, as a project
    /// owner's `gcloud` would. Holds every permission; its decisions are audited too.
    Local,
}

impl Principal {
    /// The member string that names this principal (`serviceAccount:…`, `user:…`,
    /// `allUsers` for anonymous callers).
    pub fn member(&self) -> String {
        match self {
            Self::Anonymous => "allUsers".to_owned(),
            Self::ServiceAccount { email, .. } => format!("serviceAccount:{email}"),
            Self::User { email } => format!("user:{email}"),
            Self::Local => "local:admin".to_owned(),
        }
    }
}
