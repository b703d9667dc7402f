//! The master key (KEK) a database's keys are wrapped with: a check value only that key opens is
//! stored once, and every process checks its key against it before reading or writing anything
//! under it. Secret Manager's data keys and the signing keys share the one master key.

use gatehouse_store::Store;

use crate::envelope::Key;
use crate::{Error, Result};

/// What the check value encrypts (kept from the first version that stored one).
const CHECK_TEXT: &[u8] = b"gatehouse secrets master key check";
const CHECK_AAD: &str = "gatehouse/secrets_master";

/// Whether `master` opens the stored `check` value.
pub fn opens_check(master: &Key, check: &[u8]) -> bool {
    master
        .open(check, CHECK_AAD)
        .is_ok_and(|t| t.as_slice() == CHECK_TEXT)
}

/// A new check value for `master`.
pub fn check_value(master: &Key) -> Result<Vec<u8>> {
    master
        .seal(CHECK_TEXT, CHECK_AAD)
        .map_err(|e| Error::Key(format!("sealing the master key check: {e}")))
}

/// Checks that `master` is the key the database is under; on a database with none yet it is
/// recorded. Fails with [`Error::WrongMasterKey`] before anything is written.
pub async fn bind(store: &Store, master: &Key) -> Result<()> {
    for _ in 0..3 {
        match store.master_key_check().await? {
            Some((stored, check)) => {
                return if opens_check(master, &check) {
                    Ok(())
                } else {
                    Err(Error::WrongMasterKey {
                        stored,
                        given: master.fingerprint(),
                    })
                };
            }
            None => match store
                .init_master_key_check(&master.fingerprint(), &check_value(master)?)
                .await
            {
                Ok(()) => return Ok(()),
                // Another process recorded one at the same moment: check against it.
                Err(gatehouse_store::Error::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            },
        }
    }
    Err(Error::Key("the master key check row keeps changing".into()))
}
