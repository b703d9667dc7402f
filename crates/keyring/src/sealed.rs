//! Signing keys at rest, as Secret Manager stores payloads: the PKCS#8 DER sealed (AES-256-GCM)
//! under a data key of its own, the data key wrapped by the master key. The associated data
//! names the key (and its purpose), so a sealed key copied to another row does not open.

use gatehouse_store::{SealedSigningKey, SigningKeyRecord, Store};
use gatehouse_tokens::SigningKey;
use zeroize::Zeroizing;

use crate::envelope::Key;
use crate::{Error, Result};

fn data_key_aad(kid: &str) -> String {
    format!("signing_keys/{kid}")
}

fn pkcs8_aad(kid: &str, purpose: &str) -> String {
    format!("signing_keys/{kid}/{purpose}")
}

fn crypto(what: &str, kid: &str) -> impl FnOnce(crate::envelope::CryptoError) -> Error {
    let what = format!("{what} signing key {kid}");
    move |e| Error::Key(format!("{what}: {e}"))
}

/// Seals `pkcs8` under a new data key wrapped by `master`: (wrapped data key, sealed PKCS#8).
pub(crate) fn seal(
    master: &Key,
    kid: &str,
    purpose: &str,
    pkcs8: &[u8],
) -> Result<(Vec<u8>, Vec<u8>)> {
    let data_key = Key::generate().map_err(crypto("sealing", kid))?;
    let wrapped = master
        .wrap(&data_key, &data_key_aad(kid))
        .map_err(crypto("sealing", kid))?;
    let sealed = data_key
        .seal(pkcs8, &pkcs8_aad(kid, purpose))
        .map_err(crypto("sealing", kid))?;
    Ok((wrapped, sealed))
}

/// Opens a stored key with `master`.
pub(crate) fn open(master: &Key, r: &SigningKeyRecord) -> Result<SigningKey> {
    let data_key = master
        .unwrap_key(&r.wrapped_key, &data_key_aad(&r.kid))
        .map_err(crypto("opening", &r.kid))?;
    let pkcs8 = data_key
        .open(&r.sealed_pkcs8, &pkcs8_aad(&r.kid, &r.purpose))
        .map_err(crypto("opening", &r.kid))?;
    SigningKey::from_pkcs8(r.kid.clone(), &pkcs8).map_err(|e| Error::Key(e.to_string()))
}

/// Seals every key still stored in plaintext (rows from before migration 0006) under `master`,
/// in one transaction. Returns how many were sealed.
pub async fn seal_plaintext_keys(store: &Store, master: &Key) -> Result<usize> {
    for _ in 0..3 {
        let plain = store.plaintext_signing_keys().await?;
        if plain.is_empty() {
            return Ok(0);
        }
        let mut sealed: Vec<SealedSigningKey> = Vec::with_capacity(plain.len());
        for row in plain {
            let der = Zeroizing::new(row.private_der);
            // Only a usable key is worth keeping; a damaged row stops the start here.
            SigningKey::from_pkcs8(row.kid.clone(), &der)
                .map_err(|e| Error::Key(format!("stored signing key {}: {e}", row.kid)))?;
            let (wrapped, sealed_der) = seal(master, &row.kid, &row.purpose, &der)?;
            sealed.push((row.kid, wrapped, sealed_der));
        }
        match store
            .seal_plaintext_signing_keys(&master.fingerprint(), &sealed)
            .await
        {
            Ok(()) => {
                tracing::info!(
                    count = sealed.len(),
                    master_key = master.fingerprint(),
                    "sealed plaintext signing keys under the master key"
                );
                return Ok(sealed.len());
            }
            // Another process sealed some meanwhile: read again.
            Err(gatehouse_store::Error::Conflict("signing keys changed while sealing")) => {}
            Err(gatehouse_store::Error::Conflict(_)) => {
                return Err(Error::Key(
                    "the database is under another master key than this process's".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Key(
        "signing keys kept changing while they were sealed; try again".into(),
    ))
}

/// Every stored signing key's data key, unwrapped with `old` and wrapped with `new`: (kid, new
/// wrapped key), for [`Store::rewrap_master_key`]. Keys still in plaintext are sealed under
/// `old` first. `old` must be the current master key.
pub async fn rewrap_signing_keys(
    store: &Store,
    old: &Key,
    new: &Key,
) -> Result<Vec<(String, Vec<u8>)>> {
    seal_plaintext_keys(store, old).await?;
    let mut out = Vec::new();
    for r in store.all_signing_keys().await? {
        let aad = data_key_aad(&r.kid);
        let data_key = old
            .unwrap_key(&r.wrapped_key, &aad)
            .map_err(crypto("unwrapping", &r.kid))?;
        let wrapped = new
            .wrap(&data_key, &aad)
            .map_err(crypto("wrapping", &r.kid))?;
        out.push((r.kid, wrapped));
    }
    Ok(out)
}
