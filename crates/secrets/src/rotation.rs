//! Master-key rotation: every data key (the secrets' and the signing keys') re-wrapped from the
//! old master key to the new one in one transaction.

use gatehouse_iam::{Error, Result};
use gatehouse_store::{Rewrapped, Store};

use crate::crypto::key_aad;
use crate::rules::internal;
use crate::{Key, Secrets};

impl Secrets {
    /// Re-wraps every data key from `old` to `new` in one transaction: the secrets' data keys
    /// and the signing keys' (payloads and private keys are not re-encrypted; signing keys still
    /// in plaintext are sealed first). `old` must be the current master key. Returns how many
    /// secrets and signing keys there are.
    pub async fn rotate_master_key(store: &Store, old: &Key, new: &Key) -> Result<(usize, usize)> {
        let Some((key_id, check)) = store.master_key_check().await? else {
            return Err(Error::FailedPrecondition(
                "nothing has been stored under a master key yet; there is nothing to rotate".into(),
            ));
        };
        if !gatehouse_keyring::master::opens_check(old, &check) {
            return Err(Error::FailedPrecondition(format!(
                "the old master key is not the current one (stored key fingerprint {key_id})"
            )));
        }
        for _ in 0..3 {
            let all = store.all_secrets().await?;
            let mut rewrapped = Rewrapped::default();
            for s in &all {
                let aad = key_aad(&s.project_id, &s.secret_id);
                let data_key = old.unwrap_key(&s.wrapped_key, &aad).map_err(internal)?;
                rewrapped.secrets.push((
                    s.project_id.clone(),
                    s.secret_id.clone(),
                    new.wrap(&data_key, &aad).map_err(internal)?,
                ));
            }
            rewrapped.signing_keys = gatehouse_keyring::rewrap_signing_keys(store, old, new)
                .await
                .map_err(internal)?;
            let new_check = gatehouse_keyring::master::check_value(new).map_err(internal)?;
            match store
                .rewrap_master_key(&key_id, &new.fingerprint(), &new_check, &rewrapped)
                .await
            {
                Ok(()) => return Ok((all.len(), rewrapped.signing_keys.len())),
                // A secret or signing key was created meanwhile: read again.
                Err(gatehouse_store::Error::Conflict(
                    "secrets changed during rotation" | "signing keys changed during rotation",
                )) => {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Aborted(
            "secrets kept changing during the rotation; try again".into(),
        ))
    }
}
