//! Envelope encryption of payloads: every secret has its own AES-256-GCM data key, wrapped by the
//! master key. The primitive ([`Key`]: seal, open, wrap, unwrap) lives in
//! `gatehouse_keyring::envelope`, shared with the signing keys stored under the same master key;
//! this module adds Secret Manager's checksum.

pub use gatehouse_keyring::envelope::{CryptoError, Key};

/// CRC32C (Castagnoli), as Secret Manager's `dataCrc32c`.
pub fn crc32c(data: &[u8]) -> u32 {
    const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    CRC.checksum(data)
}

/// The associated data a secret's data key is wrapped with: the key opens for that secret only.
pub(crate) fn key_aad(project_id: &str, secret_id: &str) -> String {
    format!("projects/{project_id}/secrets/{secret_id}")
}

/// The associated data a payload is sealed with: the ciphertext opens for that version only.
pub(crate) fn payload_aad(project_id: &str, secret_id: &str, version: i64) -> String {
    format!("projects/{project_id}/secrets/{secret_id}/versions/{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_value() {
        // RFC 3720 test vector: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }
}
