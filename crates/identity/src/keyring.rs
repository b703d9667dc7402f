//! The identity server's signing keys: Firebase ID tokens and session cookies, each its own
//! rotating key set (see `gatehouse_keyring`).

use std::sync::Arc;

use gatehouse_keyring::Purpose;
use gatehouse_store::Store;
use gatehouse_tokens::Claims;

pub use gatehouse_keyring::KeySet;
/// The database's master key, which the signing keys are sealed under.
pub use gatehouse_keyring::envelope::Key as MasterKey;

use crate::{Clock, Error, Result};

/// What a key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// Firebase ID tokens (`securetoken@system.gserviceaccount.com`).
    IdToken,
    /// Session cookies (`identitytoolkit/v3/relyingparty/publicKeys`).
    SessionCookie,
}

const ID_TOKEN: Purpose = Purpose {
    name: "id_token",
    max_token_ms: 3_600_000,
    cert_subject: "securetoken.system.gserviceaccount.com",
};
const SESSION_COOKIE: Purpose = Purpose {
    name: "session_cookie",
    max_token_ms: 14 * 86_400_000,
    cert_subject: "securetoken.system.gserviceaccount.com",
};

impl KeyPurpose {
    /// The keyring purpose: its name in the `signing_keys` table, token lifetime, certificate
    /// subject.
    pub const fn spec(self) -> &'static Purpose {
        match self {
            Self::IdToken => &ID_TOKEN,
            Self::SessionCookie => &SESSION_COOKIE,
        }
    }
}

fn internal(e: gatehouse_keyring::Error) -> Error {
    match e {
        gatehouse_keyring::Error::Store(s) => Error::from(s),
        other => Error::internal(other.to_string()),
    }
}

/// All signing keys of the identity server.
#[derive(Debug, Clone)]
pub struct Keyring(gatehouse_keyring::Keyring);

impl Keyring {
    /// Loads the keys from the store (sealed under `master_key`, the database's master key),
    /// creating the first ones if there are none.
    pub async fn load(
        store: Store,
        clock: Arc<dyn Clock>,
        master_key: Arc<MasterKey>,
        rotation_secs: i64,
    ) -> Result<Self> {
        gatehouse_keyring::Keyring::load(
            store,
            clock,
            master_key,
            rotation_secs,
            &[ID_TOKEN, SESSION_COOKIE],
        )
        .await
        .map(Self)
        .map_err(internal)
    }

    /// The current key set of a purpose.
    pub fn current(&self, purpose: KeyPurpose) -> Result<Arc<KeySet>> {
        self.0.current(purpose.spec()).map_err(internal)
    }

    /// Signs `claims` with the current signer of `purpose`.
    pub fn sign(&self, purpose: KeyPurpose, claims: &Claims) -> Result<String> {
        self.0.sign(purpose.spec(), claims).map_err(internal)
    }

    /// The JWK set document and its `max-age` in seconds.
    pub fn jwks(&self, purpose: KeyPurpose) -> Result<(String, i64)> {
        self.0.jwks(purpose.spec()).map_err(internal)
    }

    /// The `{kid: PEM certificate}` document and its `max-age` in seconds.
    pub fn x509(&self, purpose: KeyPurpose) -> Result<(String, i64)> {
        self.0.x509(purpose.spec()).map_err(internal)
    }

    /// How often [`Keyring::reload`] should run (see `gatehouse_keyring::Keyring::reload_interval`).
    pub fn reload_interval(&self) -> std::time::Duration {
        self.0.reload_interval()
    }

    /// Re-reads the keys from the store (other replicas may have rotated), creating the next key
    /// when the current one retires soon.
    pub async fn reload(&self) -> Result<()> {
        self.0.reload().await.map_err(internal)
    }
}
