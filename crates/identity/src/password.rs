//! Password hashing: argon2id for our own hashes, and verification of imported hashes
//! (Firebase modified scrypt, standard scrypt, bcrypt, PBKDF2, HMAC, plain digests and the
//! emulator's `fakeHash:` strings). Accounts with an imported hash are rehashed to argon2id at
//! their first successful sign-in.

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use subtle::ConstantTimeEq;

/// Prefix of an imported (foreign) hash in the `password_hash` column.
const IMPORTED: &str = "import$";

/// argon2id with OWASP's m=12 MiB, t=3, p=1 (one of its equivalent recommended settings; the
/// smaller memory keeps a busy 2-core server well under 50 MB).
const M_COST: u32 = 12 * 1024;
const T_COST: u32 = 3;
const OUTPUT_LEN: usize = 32;

fn params() -> Params {
    Params::new(M_COST, T_COST, 1, Some(OUTPUT_LEN)).unwrap_or_default()
}

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
}

/// Working memory for argon2id at our parameters, reused across hashes so a busy server does not
/// allocate (and fragment) 12 MiB per request.
pub struct Scratch(Vec<argon2::Block>);

impl Default for Scratch {
    fn default() -> Self {
        Self(vec![argon2::Block::new(); params().block_count()])
    }
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch")
            .field("blocks", &self.0.len())
            .finish()
    }
}

fn phc(salt: &[u8], hash: &[u8]) -> String {
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    format!(
        "$argon2id$v=19$m={M_COST},t={T_COST},p=1${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(hash)
    )
}

/// Hashes `password` with argon2id into a PHC string, using `scratch` as working memory.
pub fn hash_with(scratch: &mut Scratch, password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let mut out = [0u8; OUTPUT_LEN];
    argon2()
        .hash_password_into_with_memory(
            password.as_bytes(),
            &salt,
            &mut out,
            scratch.0.as_mut_slice(),
        )
        .map_err(|e| e.to_string())?;
    Ok(phc(&salt, &out))
}

/// Hashes `password` with argon2id into a PHC string.
pub fn hash(password: &str) -> Result<String, String> {
    hash_with(&mut Scratch::default(), password)
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Wrong password.
    Mismatch,
    /// Right password, hash is current.
    Match,
    /// Right password, but the stored hash is foreign or weaker: rehash it.
    MatchRehash,
}

/// Checks `password` against a stored hash (ours or imported).
pub fn verify(password: &str, stored: &str) -> Check {
    verify_with(&mut Scratch::default(), password, stored)
}

/// [`verify`], using `scratch` as working memory when the hash has our current parameters.
pub fn verify_with(scratch: &mut Scratch, password: &str, stored: &str) -> Check {
    if let Some(json) = stored.strip_prefix(IMPORTED) {
        return match serde_json::from_str::<ImportedHash>(json) {
            Ok(imported) if imported.verify(password) => Check::MatchRehash,
            _ => Check::Mismatch,
        };
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Check::Mismatch;
    };
    let current = parsed.algorithm.as_str() == "argon2id"
        && parsed.params.get_decimal("m") == Some(M_COST)
        && parsed.params.get_decimal("t") == Some(T_COST)
        && parsed.params.get_decimal("p") == Some(1);
    if current && let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) {
        let mut salt_bytes = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
            return Check::Mismatch;
        };
        let expected = expected.as_bytes();
        let mut out = vec![0u8; expected.len()];
        let hasher = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(M_COST, T_COST, 1, Some(expected.len())).unwrap_or_default(),
        );
        if hasher
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                &mut out,
                scratch.0.as_mut_slice(),
            )
            .is_err()
        {
            return Check::Mismatch;
        }
        return if bool::from(out.as_slice().ct_eq(expected)) {
            Check::Match
        } else {
            Check::Mismatch
        };
    }
    // Another algorithm or older parameters: check generically, then ask for a rehash.
    if Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
    {
        Check::MatchRehash
    } else {
        Check::Mismatch
    }
}

/// A hash imported through `accounts:batchCreate`, kept until the first successful sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedHash {
    /// Algorithm name as on the wire (`SCRYPT`, `BCRYPT`, `HMAC_SHA256`, ...).
    pub alg: String,
    /// The hash bytes (standard base64). For BCRYPT, the modular-crypt string as text bytes.
    pub hash: String,
    /// The salt bytes (standard base64).
    #[serde(default)]
    pub salt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt_separator: Option<String>,
    #[serde(default)]
    pub rounds: u32,
    #[serde(default)]
    pub memory_cost: u32,
    #[serde(default)]
    pub cpu_mem_cost: u64,
    #[serde(default)]
    pub parallelization: u32,
    #[serde(default)]
    pub block_size: u32,
    #[serde(default)]
    pub dk_len: u32,
    /// `SALT_AND_PASSWORD`, `PASSWORD_AND_SALT`, or empty (unspecified: both are tried).
    #[serde(default)]
    pub order: String,
}

impl ImportedHash {
    /// The string stored in the `password_hash` column.
    pub fn to_stored(&self) -> String {
        format!(
            "{IMPORTED}{}",
            serde_json::to_string(self).unwrap_or_default()
        )
    }

    /// Checks the parameters of an import before anything is stored. Returns the problem, if any.
    pub fn validate(&self) -> Result<(), String> {
        let b64 = |v: &Option<String>| {
            v.as_deref()
                .map(|s| STANDARD.decode(s).is_ok())
                .unwrap_or(true)
        };
        match self.alg.as_str() {
            "SCRYPT" => {
                if self.signer_key.is_none() {
                    return Err("Signer key is required for SCRYPT.".into());
                }
                if !(1..=8).contains(&self.rounds) {
                    return Err("Rounds value must be between 1 and 8.".into());
                }
                if !(1..=14).contains(&self.memory_cost) {
                    return Err("Memory cost must be between 1 and 14.".into());
                }
            }
            "STANDARD_SCRYPT" => {
                if !self.cpu_mem_cost.is_power_of_two()
                    || self.cpu_mem_cost < 2
                    || self.cpu_mem_cost > (1 << 20)
                {
                    return Err("cpuMemCost must be a power of two between 2 and 2^20.".into());
                }
                if self.block_size == 0
                    || self.parallelization == 0
                    || self.dk_len == 0
                    || self.dk_len > 1024
                {
                    return Err("blockSize, parallelization and dkLen must be positive.".into());
                }
            }
            "BCRYPT" => {}
            "HMAC_SHA512" | "HMAC_SHA256" | "HMAC_SHA1" | "HMAC_MD5" => {
                if self.signer_key.is_none() {
                    return Err("Signer key is required for HMAC.".into());
                }
            }
            "MD5" | "SHA1" | "SHA256" | "SHA512" => {
                if self.rounds > 8192 {
                    return Err("Rounds value must be between 0 and 8192.".into());
                }
            }
            "PBKDF_SHA1" | "PBKDF2_SHA256" => {
                if self.rounds > 120_000 || self.rounds == 0 {
                    return Err("Rounds value must be between 1 and 120000.".into());
                }
            }
            other => return Err(format!("Unsupported hash algorithm {other}.")),
        }
        if !b64(&self.signer_key) || !b64(&self.salt_separator) {
            return Err("Hash parameters must be base64 encoded.".into());
        }
        Ok(())
    }

    /// Whether `password` matches.
    pub fn verify(&self, password: &str) -> bool {
        let Ok(expected) = STANDARD.decode(&self.hash) else {
            return false;
        };
        let salt = STANDARD.decode(&self.salt).unwrap_or_default();
        let key = self
            .signer_key
            .as_deref()
            .and_then(|k| STANDARD.decode(k).ok())
            .unwrap_or_default();
        let pw = password.as_bytes();
        let eq = |computed: &[u8]| {
            computed.len() == expected.len() && bool::from(computed.ct_eq(&expected))
        };
        match self.alg.as_str() {
            "SCRYPT" => {
                let sep = self
                    .salt_separator
                    .as_deref()
                    .and_then(|s| STANDARD.decode(s).ok())
                    .unwrap_or_default();
                firebase_scrypt(pw, &salt, &sep, &key, self.rounds, self.memory_cost)
                    .is_some_and(|h| eq(&h))
            }
            "STANDARD_SCRYPT" => {
                let log_n = self.cpu_mem_cost.trailing_zeros() as u8;
                let Ok(params) = scrypt::Params::new(
                    log_n,
                    self.block_size,
                    self.parallelization,
                    self.dk_len as usize,
                ) else {
                    return false;
                };
                let mut out = vec![0u8; self.dk_len as usize];
                scrypt::scrypt(pw, &salt, &params, &mut out).is_ok() && eq(&out)
            }
            "BCRYPT" => match std::str::from_utf8(&expected) {
                Ok(text) => bcrypt::verify(password, text).unwrap_or(false),
                Err(_) => false,
            },
            "PBKDF2_SHA256" | "PBKDF_SHA1" => {
                let mut out = vec![0u8; expected.len().clamp(1, 128)];
                if self.alg == "PBKDF2_SHA256" {
                    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(pw, &salt, self.rounds, &mut out);
                } else {
                    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(pw, &salt, self.rounds, &mut out);
                }
                eq(&out)
            }
            alg @ ("HMAC_SHA512" | "HMAC_SHA256" | "HMAC_SHA1" | "HMAC_MD5") => self
                .orders()
                .iter()
                .any(|salt_first| eq(&hmac_digest(alg, &key, &ordered(pw, &salt, *salt_first)))),
            alg @ ("MD5" | "SHA1" | "SHA256" | "SHA512") => {
                self.orders().iter().any(|salt_first| {
                    let mut digest = plain_digest(alg, &ordered(pw, &salt, *salt_first));
                    for _ in 1..self.rounds.max(1) {
                        digest = plain_digest(alg, &digest);
                    }
                    eq(&digest)
                })
            }
            _ => false,
        }
    }

    fn orders(&self) -> &'static [bool] {
        match self.order.as_str() {
            "SALT_AND_PASSWORD" => &[true],
            "PASSWORD_AND_SALT" => &[false],
            _ => &[true, false],
        }
    }
}

fn ordered(pw: &[u8], salt: &[u8], salt_first: bool) -> Vec<u8> {
    if salt_first {
        [salt, pw].concat()
    } else {
        [pw, salt].concat()
    }
}

fn hmac_digest(alg: &str, key: &[u8], msg: &[u8]) -> Vec<u8> {
    macro_rules! mac {
        ($d:ty) => {
            match Hmac::<$d>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(msg);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        };
    }
    match alg {
        "HMAC_SHA512" => mac!(sha2::Sha512),
        "HMAC_SHA256" => mac!(sha2::Sha256),
        "HMAC_SHA1" => mac!(sha1::Sha1),
        _ => mac!(md5::Md5),
    }
}

fn plain_digest(alg: &str, msg: &[u8]) -> Vec<u8> {
    match alg {
        "SHA512" => sha2::Sha512::digest(msg).to_vec(),
        "SHA256" => sha2::Sha256::digest(msg).to_vec(),
        "SHA1" => sha1::Sha1::digest(msg).to_vec(),
        _ => md5::Md5::digest(msg).to_vec(),
    }
}

/// Firebase's modified scrypt: `AES-256-CTR(key = scrypt(pw, salt‖sep, 2^mem_cost, rounds, 1)[..32], iv = 0)`
/// applied to the signer key.
pub fn firebase_scrypt(
    password: &[u8],
    salt: &[u8],
    separator: &[u8],
    signer_key: &[u8],
    rounds: u32,
    mem_cost: u32,
) -> Option<Vec<u8>> {
    use aes::cipher::{KeyIvInit, StreamCipher};
    let params = scrypt::Params::new(u8::try_from(mem_cost).ok()?, rounds, 1, 64).ok()?;
    let mut derived = [0u8; 64];
    scrypt::scrypt(password, &[salt, separator].concat(), &params, &mut derived).ok()?;
    let mut out = signer_key.to_vec();
    let mut cipher =
        ctr::Ctr128BE::<aes::Aes256>::new_from_slices(&derived[..32], &[0u8; 16]).ok()?;
    cipher.apply_keystream(&mut out);
    Some(out)
}

/// The emulator's fake hash: `fakeHash:salt=<salt>:password=<password>`. Returns the password it encodes.
pub fn fake_hash_password<'a>(hash: &'a str, salt: &str) -> Option<&'a str> {
    let rest = hash.strip_prefix("fakeHash:salt=")?;
    let (hash_salt, password) = rest.split_once(":password=")?;
    (hash_salt == salt || salt.is_empty()).then_some(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firebase_scrypt_published_vector() {
        let signer = STANDARD
            .decode("jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA==")
            .unwrap();
        let salt = STANDARD.decode("42xEC+ixf3L2lw==").unwrap();
        let sep = STANDARD.decode("Bw==").unwrap();
        let h = firebase_scrypt(b"user1password", &salt, &sep, &signer, 8, 14).unwrap();
        assert_eq!(
            STANDARD.encode(h),
            "lSrfV15cpx95/sZS2W9c9Kp6i/LVgQNDNC/qzrCnh1SAyZvqmZqAjTdn3aoItz+VHjoZilo78198JAdRuid5lQ=="
        );
    }

    #[test]
    fn argon2_round_trip() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=12288,t=3,p=1$"), "{h}");
        // The PHC string is standard: the generic verifier accepts it too.
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &PasswordHash::new(&h).unwrap())
                .is_ok()
        );
        assert_eq!(verify("correct horse", &h), Check::Match);
        assert_eq!(verify("wrong horse", &h), Check::Mismatch);
        assert_eq!(verify("x", "not a hash"), Check::Mismatch);
        // Hashes with older parameters still verify, and ask to be rehashed.
        use argon2::password_hash::{PasswordHasher, SaltString};
        let old = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(19 * 1024, 2, 1, None).unwrap(),
        )
        .hash_password(
            b"pw123456",
            &SaltString::encode_b64(b"0123456789abcdef").unwrap(),
        )
        .unwrap()
        .to_string();
        assert_eq!(verify("pw123456", &old), Check::MatchRehash);
        assert_eq!(verify("pw1234567", &old), Check::Mismatch);
    }

    #[test]
    fn imported_hashes_verify_and_ask_for_rehash() {
        let salt = b"NaCl";
        let key = b"signer";
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(b"hunter2NaCl");
        let imported = ImportedHash {
            alg: "HMAC_SHA256".into(),
            hash: STANDARD.encode(mac.finalize().into_bytes()),
            salt: STANDARD.encode(salt),
            signer_key: Some(STANDARD.encode(key)),
            salt_separator: None,
            rounds: 0,
            memory_cost: 0,
            cpu_mem_cost: 0,
            parallelization: 0,
            block_size: 0,
            dk_len: 0,
            order: String::new(),
        };
        assert!(imported.validate().is_ok());
        let stored = imported.to_stored();
        assert_eq!(verify("hunter2", &stored), Check::MatchRehash);
        assert_eq!(verify("hunter3", &stored), Check::Mismatch);

        let mut out = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(b"pw123456", salt, 1000, &mut out);
        let pb = ImportedHash {
            alg: "PBKDF2_SHA256".into(),
            hash: STANDARD.encode(out),
            rounds: 1000,
            ..imported.clone()
        };
        assert!(pb.verify("pw123456"));
        assert!(!pb.verify("pw1234567"));

        let bc = bcrypt::hash("s3cret", 4).unwrap();
        let b = ImportedHash {
            alg: "BCRYPT".into(),
            hash: STANDARD.encode(bc.as_bytes()),
            ..imported.clone()
        };
        assert!(b.verify("s3cret"));
        assert!(!b.verify("s3cre7"));

        let params = scrypt::Params::new(10, 8, 1, 32).unwrap();
        let mut sc = [0u8; 32];
        scrypt::scrypt(b"pw", salt, &params, &mut sc).unwrap();
        let s = ImportedHash {
            alg: "STANDARD_SCRYPT".into(),
            hash: STANDARD.encode(sc),
            cpu_mem_cost: 1024,
            block_size: 8,
            parallelization: 1,
            dk_len: 32,
            ..imported
        };
        assert!(s.validate().is_ok());
        assert!(s.verify("pw"));
        assert!(!s.verify("pW"));
    }

    #[test]
    fn fake_hash() {
        assert_eq!(
            fake_hash_password("fakeHash:salt=beach:password=hawaii", "beach"),
            Some("hawaii")
        );
        assert_eq!(
            fake_hash_password("fakeHash:salt=beach:password=hawaii", "other"),
            None
        );
    }
}
