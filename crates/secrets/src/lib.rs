//! Secret Manager: secrets and their versions, with Google's semantics (`latest`, aliases,
//! states, CRC32C, etags, error wording), envelope encryption at rest, and IAM checks on every
//! call (every access audited, never the payload).
//!
//! Payloads are encrypted before they reach the store: AES-256-GCM under a data key per secret,
//! data keys wrapped by the master key given at start (see [`crypto`]).
//!
//! By concern: `secrets` and `versions` (the API's methods), `access` (the IAM check in front
//! of each), `view` (names and what callers get back), `rules` (ids, labels, etags), `filter`
//! (list filters), [`crypto`] (envelope encryption and checksums), `rotation` (master-key
//! rotation).
//!
//! Answers leave as typed views ([`SecretView`], [`VersionView`], [`Accessed`]); errors are
//! `gatehouse-iam`'s, by canonical code.
//!
//! Must not: speak HTTP, know HTTP statuses or the proto3 JSON of the resources (that is
//! `gatehouse-secrets-http`), write SQL (that is `gatehouse-store`), make access decisions of
//! its own (every check goes through `gatehouse-iam`, which audits it), or log a payload.

#![forbid(unsafe_code)]

pub mod crypto;

mod access;
mod filter;
mod rotation;
mod rules;
mod secrets;
mod versions;
mod view;

use std::sync::Arc;

use gatehouse_iam::{Error, Iam, Result};
use gatehouse_keyring::Clock;
use gatehouse_store::Store;

pub use crypto::{Key, crc32c};
pub use view::{Accessed, NewPayload, SecretName, SecretView, VersionView};

/// Largest payload Secret Manager accepts.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// The Secret Manager service.
#[derive(Clone)]
pub struct Secrets {
    store: Store,
    iam: Iam,
    master: Arc<Key>,
    /// The IAM service's clock: secrets, versions and audit records share one time.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("master", &self.master.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Opens Secret Manager over `store` with `master`. The first start records which master
    /// key the data is under; later starts with another key fail here, before anything is
    /// written. Times (`createTime`, `destroyTime`) come from `iam`'s clock.
    pub async fn new(store: Store, iam: Iam, master: impl Into<Arc<Key>>) -> Result<Self> {
        let master = master.into();
        match gatehouse_keyring::master::bind(&store, &master).await {
            Ok(()) => {}
            Err(gatehouse_keyring::Error::WrongMasterKey { stored, given }) => {
                return Err(Error::FailedPrecondition(format!(
                    "the secrets master key does not match the one the secrets are stored under \
                     (stored key fingerprint {stored}, given {given})"
                )));
            }
            Err(gatehouse_keyring::Error::Store(e)) => return Err(e.into()),
            Err(e) => return Err(rules::internal(e)),
        }
        let clock = iam.clock().clone();
        Ok(Self {
            store,
            iam,
            master,
            clock,
        })
    }

    /// The IAM service the checks go through.
    pub fn iam(&self) -> &Iam {
        &self.iam
    }
}

impl Secrets {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}
