//! RSA key pairs: generation, signing, and their public forms (JWK, x509 certificate).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, KeyPair as _, ParsedPublicKey};
use serde_json::json;
use zeroize::Zeroizing;

use crate::b64url;

/// Errors about keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("could not generate an RSA key")]
    Generate,
    #[error("the private key is not a usable RSA PKCS#8 key")]
    BadPrivateKey,
    #[error("the public key is not a usable RSA key")]
    BadPublicKey,
    #[error("signing failed")]
    Sign,
    #[error("certificate generation failed: {0}")]
    Certificate(String),
}

/// A private RSA key that signs RS256 JWTs, with its key id and published forms.
pub struct SigningKey {
    kid: String,
    pkcs8: Zeroizing<Vec<u8>>,
    pair: KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a new RSA-2048 key with a random key id.
    pub fn generate() -> Result<Self, KeyError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
        let der = pair.as_der().map_err(|_| KeyError::Generate)?;
        let mut id = [0u8; 20];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| KeyError::Generate)?;
        let kid = id.iter().map(|b| format!("{b:02x}")).collect::<String>();
        Self::from_pkcs8(kid, der.as_ref())
    }

    /// Loads a key from PKCS#8 DER.
    pub fn from_pkcs8(kid: String, pkcs8: &[u8]) -> Result<Self, KeyError> {
        let pair = KeyPair::from_pkcs8(pkcs8).map_err(|_| KeyError::BadPrivateKey)?;
        let public_key = pair.public_key();
        let n = public_key
            .modulus()
            .big_endian_without_leading_zero()
            .to_vec();
        let e = public_key
            .exponent()
            .big_endian_without_leading_zero()
            .to_vec();
        let public = PublicKey::from_components(kid.clone(), &n, &e)?;
        Ok(Self {
            kid,
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            pair,
            public,
        })
    }

    /// The key id (`kid` header).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// PKCS#8 DER of the private key, for storage.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// RSASSA-PKCS1-v1_5 SHA-256 signature over `message`.
    pub fn sign_rs256(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair
            .sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
            .map_err(|_| KeyError::Sign)?;
        Ok(sig)
    }

    /// A self-signed x509 certificate (PEM) for this key, as Google publishes for its token keys.
    /// `common_name` is the subject, e.g. `securetoken.system.gserviceaccount.com`;
    /// validity runs from `not_before` to `not_after` (epoch seconds).
    pub fn certificate_pem(
        &self,
        common_name: &str,
        not_before: i64,
        not_after: i64,
    ) -> Result<String, KeyError> {
        let key = rcgen::KeyPair::try_from(self.pkcs8.as_slice())
            .map_err(|e| KeyError::Certificate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let (y, m, d) = civil_from_days(not_before.div_euclid(86_400));
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = civil_from_days(not_after.div_euclid(86_400));
        params.not_after = rcgen::date_time_ymd(y, m, d);
        let mut serial = [0u8; 8];
        aws_lc_rs::rand::fill(&mut serial).map_err(|_| KeyError::Certificate("rng".into()))?;
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params
            .self_signed(&key)
            .map_err(|e| KeyError::Certificate(e.to_string()))?;
        Ok(cert.pem())
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y as i32, m as u8, d as u8)
}

/// A public RSA key that verifies RS256 signatures, with its key id.
#[derive(Clone)]
pub struct PublicKey {
    kid: String,
    n: Vec<u8>,
    e: Vec<u8>,
    parsed: ParsedPublicKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Builds a key from its big-endian modulus and exponent.
    pub fn from_components(kid: String, n: &[u8], e: &[u8]) -> Result<Self, KeyError> {
        let n = strip_zeros(n).to_vec();
        let e = strip_zeros(e).to_vec();
        let spki = PublicKeyComponents {
            n: n.as_slice(),
            e: e.as_slice(),
        }
        .as_der()
        .map_err(|_| KeyError::BadPublicKey)?;
        let parsed = ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, spki.as_ref())
            .map_err(|_| KeyError::BadPublicKey)?;
        Ok(Self { kid, n, e, parsed })
    }

    /// Builds a key from a JWK object (`kty` RSA, `n`, `e`, `kid`).
    pub fn from_jwk(jwk: &serde_json::Value) -> Result<Self, KeyError> {
        let field = |name: &str| jwk.get(name).and_then(serde_json::Value::as_str);
        if field("kty") != Some("RSA") {
            return Err(KeyError::BadPublicKey);
        }
        if let Some(alg) = field("alg")
            && alg != "RS256"
        {
            return Err(KeyError::BadPublicKey);
        }
        let kid = field("kid").unwrap_or_default().to_owned();
        let n = field("n")
            .and_then(crate::b64url_decode)
            .ok_or(KeyError::BadPublicKey)?;
        let e = field("e")
            .and_then(crate::b64url_decode)
            .ok_or(KeyError::BadPublicKey)?;
        Self::from_components(kid, &n, &e)
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key as a JWK object (`{"kty":"RSA","alg":"RS256","use":"sig","kid","n","e"}`).
    pub fn jwk(&self) -> serde_json::Value {
        json!({
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": b64url(&self.n),
            "e": b64url(&self.e),
        })
    }

    /// Checks an RSASSA-PKCS1-v1_5 SHA-256 signature.
    pub fn verify_rs256(&self, message: &[u8], sig: &[u8]) -> bool {
        self.parsed.verify_sig(message, sig).is_ok()
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn sign_verify_and_jwk_round_trip() {
        let key = SigningKey::generate().unwrap();
        let sig = key.sign_rs256(b"hello").unwrap();
        assert!(key.public().verify_rs256(b"hello", &sig));
        assert!(!key.public().verify_rs256(b"hellO", &sig));
        let again = PublicKey::from_jwk(&key.public().jwk()).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert!(again.verify_rs256(b"hello", &sig));
        let reloaded = SigningKey::from_pkcs8(key.kid().into(), key.pkcs8_der()).unwrap();
        assert!(reloaded.public().verify_rs256(b"hello", &sig));
    }

    #[test]
    fn certificate_is_pem() {
        let key = SigningKey::generate().unwrap();
        let pem = key
            .certificate_pem(
                "securetoken.system.gserviceaccount.com",
                1_700_000_000,
                1_700_400_000,
            )
            .unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn debug_hides_private_material() {
        let key = SigningKey::generate().unwrap();
        let text = format!("{key:?}");
        assert!(text.contains(key.kid()));
        assert!(!text.contains("pkcs8"));
    }
}
