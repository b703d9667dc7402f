//! Envelope encryption, shared by everything stored under the master key (Secret Manager
//! payloads, signing keys): each item has its own AES-256-GCM data key; data keys are wrapped
//! (AES-256-GCM) by the master key (the KEK). Ciphertexts are `nonce (12) || ciphertext ||
//! tag (16)`, with the item's name as associated data, so a ciphertext moved to another row does
//! not decrypt.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use sha2::Digest as _;
use zeroize::Zeroizing;

/// A 256-bit AES key.
pub struct Key {
    bytes: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key([REDACTED])")
    }
}

/// Why a key or ciphertext was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("a master key is 32 bytes, base64-encoded (got {0})")]
    BadMasterKey(String),
    #[error("decryption failed: wrong key or damaged data")]
    Decrypt,
    #[error("random number generator failed")]
    Random,
}

impl Key {
    /// A new random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(bytes.as_mut()).map_err(|_| CryptoError::Random)?;
        Ok(Self { bytes })
    }

    /// A master key from its base64 text (standard or URL-safe alphabet; surrounding whitespace
    /// ignored).
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let t = text.trim();
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(t))
                .map_err(|_| CryptoError::BadMasterKey("text that is not base64".into()))?,
        );
        let bytes: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::BadMasterKey(format!("{} bytes", raw.len())))?;
        Ok(Self {
            bytes: Zeroizing::new(bytes),
        })
    }

    /// The key as base64 (for writing a new master key file).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.bytes.as_ref()))
    }

    /// A public fingerprint: the first 8 bytes of SHA-256 of the key, hex.
    pub fn fingerprint(&self) -> String {
        let d = sha2::Sha256::digest(self.bytes.as_ref());
        d[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn aead(&self) -> Result<LessSafeKey, CryptoError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, self.bytes.as_ref()).map_err(|_| CryptoError::Decrypt)?;
        Ok(LessSafeKey::new(unbound))
    }

    /// Encrypts `plain` with `aad` bound in.
    pub fn seal(&self, plain: &[u8], aad: &str) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let mut data = plain.to_vec();
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut data,
            )
            .map_err(|_| CryptoError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Decrypts what [`Self::seal`] made with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Decrypt)?;
        let mut data = Zeroizing::new(body.to_vec());
        let n = self
            .aead()?
            .open_in_place(nonce, Aad::from(aad.as_bytes()), data.as_mut_slice())
            .map_err(|_| CryptoError::Decrypt)?
            .len();
        data.truncate(n);
        Ok(data)
    }

    /// Wraps `data_key` under this (master) key.
    pub fn wrap(&self, data_key: &Key, aad: &str) -> Result<Vec<u8>, CryptoError> {
        self.seal(data_key.bytes.as_ref(), aad)
    }

    /// Unwraps a data key wrapped by [`Self::wrap`].
    pub fn unwrap_key(&self, wrapped: &[u8], aad: &str) -> Result<Key, CryptoError> {
        let raw = self.open(wrapped, aad)?;
        let bytes: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(Key {
            bytes: Zeroizing::new(bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_wrap() {
        let master = Key::generate().unwrap();
        let data = Key::generate().unwrap();
        let wrapped = master.wrap(&data, "projects/p/secrets/s").unwrap();
        let back = master.unwrap_key(&wrapped, "projects/p/secrets/s").unwrap();
        let sealed = back
            .seal(b"hunter2", "projects/p/secrets/s/versions/1")
            .unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            data.open(&sealed, "projects/p/secrets/s/versions/1")
                .unwrap()
                .as_slice(),
            b"hunter2"
        );
        // Another name, another key, or a flipped bit: refused.
        assert!(
            data.open(&sealed, "projects/p/secrets/s/versions/2")
                .is_err()
        );
        assert!(
            Key::generate()
                .unwrap()
                .open(&sealed, "projects/p/secrets/s/versions/1")
                .is_err()
        );
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(data.open(&bad, "projects/p/secrets/s/versions/1").is_err());
        assert!(master.unwrap_key(&wrapped, "projects/p/secrets/t").is_err());
    }

    #[test]
    fn master_keys_from_text() {
        let k = Key::generate().unwrap();
        let again = Key::from_base64(&format!("  {}\n", k.to_base64().as_str())).unwrap();
        assert_eq!(k.fingerprint(), again.fingerprint());
        assert!(Key::from_base64("c2hvcnQ=").is_err());
        assert!(Key::from_base64("not base64!").is_err());
    }
}
