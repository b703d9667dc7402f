//! Third-party key sets: a JWK set or Google's x509 certificate map, verifying the asymmetric
//! JWT algorithms gateways accept (RS256/384/512, PS256/384/512, ES256/384). HMAC and `none`
//! are never accepted against a published key set.

use std::collections::HashMap;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::PublicKeyComponents;
use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use serde_json::Value;

use crate::b64url_decode;
use crate::jwt::{Claims, Header};

/// Why a key set document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    #[error("not a JWK set or x509 certificate map")]
    Format,
    #[error("key {0} is malformed")]
    Key(String),
}

/// Why a token was refused by [`KeySet::verify`] (the signature step only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The `alg` is not one we accept.
    #[error("algorithm not accepted")]
    Algorithm,
    /// No key matches the token's `kid` and `alg`.
    #[error("no key matches kid or alg")]
    NoKey,
    /// A key matches but the signature is wrong.
    #[error("signature does not verify")]
    BadSignature,
}

fn algorithm(alg: &str) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match alg {
        "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
        "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
        "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
        "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
        "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
        "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
        "ES256" => &signature::ECDSA_P256_SHA256_FIXED,
        "ES384" => &signature::ECDSA_P384_SHA384_FIXED,
        _ => return None,
    })
}

const RSA_ALGS: [&str; 6] = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];

/// One public key with the algorithms it may verify.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    /// The `alg` the JWK pins, if any.
    alg: Option<String>,
    verifiers: HashMap<&'static str, ParsedPublicKey>,
}

/// A set of public keys as published by an issuer.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field(
                "kids",
                &self.keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn rsa_key(kid: Option<String>, alg: Option<String>, spki: &[u8]) -> Result<Key, KeySetError> {
    let bad = || KeySetError::Key(kid.clone().unwrap_or_default());
    let mut verifiers = HashMap::new();
    for name in RSA_ALGS {
        let Some(a) = algorithm(name) else { continue };
        verifiers.insert(name, ParsedPublicKey::new(a, spki).map_err(|_| bad())?);
    }
    Ok(Key {
        kid,
        alg,
        verifiers,
    })
}

fn ec_key(
    kid: Option<String>,
    alg: Option<String>,
    crv: &str,
    point: &[u8],
) -> Result<Key, KeySetError> {
    let bad = || KeySetError::Key(kid.clone().unwrap_or_default());
    let name = match crv {
        "P-256" => "ES256",
        "P-384" => "ES384",
        _ => return Err(bad()),
    };
    let a = algorithm(name).ok_or_else(bad)?;
    let mut verifiers = HashMap::new();
    verifiers.insert(name, ParsedPublicKey::new(a, point).map_err(|_| bad())?);
    Ok(Key {
        kid,
        alg,
        verifiers,
    })
}

impl KeySet {
    /// Parses a JWK set (`{"keys":[...]}`) or an x509 map (`{"<kid>":"-----BEGIN CERTIFICATE-----..."}`).
    /// Keys of types we do not verify with (`oct`, `OKP`) are skipped; a malformed RSA or EC key
    /// fails the whole set, as jwt_verify_lib does.
    pub fn from_json(bytes: &[u8]) -> Result<Self, KeySetError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|_| KeySetError::Format)?;
        let Value::Object(map) = doc else {
            return Err(KeySetError::Format);
        };
        let mut keys = Vec::new();
        if let Some(Value::Array(list)) = map.get("keys") {
            for jwk in list {
                let field = |n: &str| jwk.get(n).and_then(Value::as_str);
                let kid = field("kid").map(str::to_owned);
                let alg = field("alg").map(str::to_owned);
                let bad = || KeySetError::Key(kid.clone().unwrap_or_default());
                match field("kty") {
                    Some("RSA") => {
                        let n = field("n").and_then(b64url_decode).ok_or_else(bad)?;
                        let e = field("e").and_then(b64url_decode).ok_or_else(bad)?;
                        let strip = |b: &[u8]| {
                            b.iter()
                                .position(|x| *x != 0)
                                .map_or(Vec::new(), |i| b[i..].to_vec())
                        };
                        let (n, e) = (strip(&n), strip(&e));
                        let spki = PublicKeyComponents {
                            n: n.as_slice(),
                            e: e.as_slice(),
                        }
                        .as_der()
                        .map_err(|_| bad())?;
                        keys.push(rsa_key(kid.clone(), alg, spki.as_ref())?);
                    }
                    Some("EC") => {
                        let x = field("x").and_then(b64url_decode).ok_or_else(bad)?;
                        let y = field("y").and_then(b64url_decode).ok_or_else(bad)?;
                        let point = [&[4u8][..], &x, &y].concat();
                        keys.push(ec_key(
                            kid.clone(),
                            alg,
                            field("crv").unwrap_or_default(),
                            &point,
                        )?);
                    }
                    Some(_) => {}
                    None => return Err(bad()),
                }
            }
            return Ok(Self { keys });
        }
        if map.is_empty()
            || !map
                .values()
                .all(|v| v.as_str().is_some_and(|s| !s.is_empty()))
        {
            return Err(KeySetError::Format);
        }
        for (kid, pem) in &map {
            let bad = || KeySetError::Key(kid.clone());
            let der = pem_body(pem.as_str().unwrap_or_default()).ok_or_else(bad)?;
            let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|_| bad())?;
            let spki = cert.public_key();
            let oid = spki.algorithm.algorithm.to_id_string();
            match oid.as_str() {
                "1.2.840.113549.1.1.1" => keys.push(rsa_key(Some(kid.clone()), None, spki.raw)?),
                "1.2.840.10045.2.1" => {
                    let curve = spki
                        .algorithm
                        .parameters
                        .as_ref()
                        .and_then(|p| p.as_oid().ok())
                        .map(|o| o.to_id_string())
                        .unwrap_or_default();
                    let crv = match curve.as_str() {
                        "1.2.840.10045.3.1.7" => "P-256",
                        "1.3.132.0.34" => "P-384",
                        _ => return Err(bad()),
                    };
                    keys.push(ec_key(
                        Some(kid.clone()),
                        None,
                        crv,
                        &spki.subject_public_key.data,
                    )?);
                }
                _ => return Err(bad()),
            }
        }
        Ok(Self { keys })
    }

    /// Whether any key carries this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks the signature of `signed` (`header.payload`) with the keys that match the header:
    /// same `kid` (or either side without one) and same `alg` (or a key without one).
    pub fn verify(&self, header: &Header, signed: &[u8], sig: &[u8]) -> Result<(), SignatureError> {
        let name = algorithm(&header.alg)
            .map(|_| header.alg.as_str())
            .ok_or(SignatureError::Algorithm)?;
        let mut matched = false;
        for key in &self.keys {
            let kid_ok = match (&header.kid, &key.kid) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            let alg_ok = key.alg.as_deref().is_none_or(|a| a == name);
            if !(kid_ok && alg_ok) {
                continue;
            }
            let Some(v) = key.verifiers.get(name) else {
                continue;
            };
            matched = true;
            if v.verify_sig(signed, sig).is_ok() {
                return Ok(());
            }
        }
        Err(if matched {
            SignatureError::BadSignature
        } else {
            SignatureError::NoKey
        })
    }
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// A JWT split into its parts, with header and claims decoded; signature not yet checked.
#[derive(Debug, Clone)]
pub struct ParsedJwt<'a> {
    pub header: Header,
    pub claims: Claims,
    /// `header.payload`, the signed bytes.
    pub signed: &'a str,
    /// The payload segment exactly as received.
    pub payload: &'a str,
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWS; `None` when it is not `header.payload.signature` with JSON
/// header and payload.
pub fn parse_jwt(token: &str) -> Option<ParsedJwt<'_>> {
    let (signed, sig) = token.rsplit_once('.')?;
    let (h, p) = signed.split_once('.')?;
    if p.contains('.') {
        return None;
    }
    let header = Header::decode(h)?;
    let claims: Claims = serde_json::from_slice(&b64url_decode(p)?).ok()?;
    Some(ParsedJwt {
        header,
        claims,
        signed,
        payload: p,
        signature: b64url_decode(sig)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;
    use serde_json::json;

    #[test]
    fn jwk_set_and_x509_map_verify_rs256() {
        let key = SigningKey::generate().unwrap();
        let claims = json!({"iss": "i", "sub": "s"}).as_object().unwrap().clone();
        let token = crate::encode_rs256(&key, &claims).unwrap();
        let jwt = parse_jwt(&token).unwrap();
        let jwks = KeySet::from_json(json!({"keys": [key.public().jwk()]}).to_string().as_bytes())
            .unwrap();
        assert_eq!(
            jwks.verify(&jwt.header, jwt.signed.as_bytes(), &jwt.signature),
            Ok(())
        );
        let pem = key
            .certificate_pem("x", 1_700_000_000, 1_800_000_000)
            .unwrap();
        let x509 = KeySet::from_json(json!({ key.kid(): pem }).to_string().as_bytes()).unwrap();
        assert_eq!(
            x509.verify(&jwt.header, jwt.signed.as_bytes(), &jwt.signature),
            Ok(())
        );
        assert!(x509.has_kid(key.kid()));

        let mut bad = jwt.signature.clone();
        bad[0] ^= 1;
        assert_eq!(
            jwks.verify(&jwt.header, jwt.signed.as_bytes(), &bad),
            Err(SignatureError::BadSignature)
        );
        let other = Header {
            kid: Some("nope".into()),
            ..jwt.header.clone()
        };
        assert_eq!(
            jwks.verify(&other, jwt.signed.as_bytes(), &jwt.signature),
            Err(SignatureError::NoKey)
        );
        for alg in ["HS256", "none", "EdDSA"] {
            let h = Header {
                alg: alg.into(),
                ..jwt.header.clone()
            };
            assert_eq!(
                jwks.verify(&h, jwt.signed.as_bytes(), &jwt.signature),
                Err(SignatureError::Algorithm)
            );
        }
    }

    #[test]
    fn rejects_malformed_documents() {
        assert!(KeySet::from_json(b"[]").is_err());
        assert!(KeySet::from_json(b"{}").is_err());
        assert!(KeySet::from_json(br#"{"keys":[{"kty":"RSA","n":"AQAB"}]}"#).is_err());
        assert!(KeySet::from_json(br#"{"a":"not a cert"}"#).is_err());
        assert!(
            KeySet::from_json(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#)
                .unwrap()
                .is_empty()
        );
        assert!(parse_jwt("a.b").is_none());
        assert!(parse_jwt("a.b.c.d").is_none());
    }
}
