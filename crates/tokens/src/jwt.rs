//! Compact JWS (JWT) encoding and RS256-only verification.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::keys::{KeyError, PublicKey, SigningKey};
use crate::{b64url, b64url_decode};

/// A JWT payload: a JSON object.
pub type Claims = Map<String, Value>;

/// The JOSE header fields we look at.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Header {
    /// Signature algorithm.
    pub alg: String,
    /// Key id, if any.
    #[serde(default)]
    pub kid: Option<String>,
    /// Type, if any.
    #[serde(default)]
    pub typ: Option<String>,
    /// Critical extensions (RFC 7515 §4.1.11). Gatehouse understands none, so a header that
    /// carries `crit` at all is refused when it is decoded.
    #[serde(default)]
    pub crit: Option<Value>,
}

impl Header {
    /// Decodes a base64url JOSE header, refusing one with critical extensions: a recipient
    /// must reject a token whose `crit` lists anything it does not understand.
    pub fn decode(segment: &str) -> Option<Self> {
        let header: Self = serde_json::from_slice(&b64url_decode(segment)?).ok()?;
        header.crit.is_none().then_some(header)
    }
}

/// A NumericDate claim (RFC 7519 §2) as whole seconds: `Ok(None)` when absent, `Err` when it
/// is present but not an integer. A string, float, boolean or out-of-range `exp`/`nbf` must
/// never read as "absent" (that would make a token that never expires).
pub fn numeric_date(claims: &Claims, name: &str) -> Result<Option<i64>, VerifyError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or(VerifyError::Malformed),
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a well-formed JWT")]
    Malformed,
    #[error("algorithm {0:?} is not accepted (RS256 only)")]
    Algorithm(String),
    #[error("no kid in the header")]
    MissingKid,
    #[error("kid does not name a known key")]
    UnknownKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token was issued in the future")]
    IssuedInFuture,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("missing or invalid subject")]
    Subject,
}

/// Signs `claims` with `key` as an RS256 JWT whose header carries the key id.
pub fn encode_rs256(key: &SigningKey, claims: &Claims) -> Result<String, KeyError> {
    let header = serde_json::json!({"alg": "RS256", "kid": key.kid(), "typ": "JWT"});
    let mut token = b64url(header.to_string().as_bytes());
    token.push('.');
    token.push_str(&b64url(
        Value::Object(claims.clone()).to_string().as_bytes(),
    ));
    let sig = key.sign_rs256(token.as_bytes())?;
    token.push('.');
    token.push_str(&b64url(&sig));
    Ok(token)
}

/// An unsigned (`alg: none`) JWT with an empty signature segment, as the Firebase emulator issues.
pub fn encode_unsigned(claims: &Claims) -> String {
    let header = serde_json::json!({"alg": "none", "typ": "JWT"});
    format!(
        "{}.{}.",
        b64url(header.to_string().as_bytes()),
        b64url(Value::Object(claims.clone()).to_string().as_bytes())
    )
}

/// Splits and decodes a JWT without checking anything but its shape.
/// Only for tokens whose trust comes from elsewhere (or for reading a header before verifying).
pub fn decode_unverified(token: &str) -> Result<(Header, Claims), VerifyError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed);
    };
    let header = Header::decode(h).ok_or(VerifyError::Malformed)?;
    let claims: Claims = b64url_decode(p)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(VerifyError::Malformed)?;
    Ok((header, claims))
}

/// Verifies RS256 JWTs against a fixed set of public keys, chosen by `kid`.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    keys: HashMap<String, PublicKey>,
}

impl Verifier {
    /// A verifier trusting exactly `keys`.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| (k.kid().to_owned(), k)).collect(),
        }
    }

    /// Whether a key with this id is trusted.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Checks the signature only: RS256, a known `kid`, a valid signature. Returns header and claims.
    pub fn verify_signature(&self, token: &str) -> Result<(Header, Claims), VerifyError> {
        let (header, _) = decode_unverified(token)?;
        if header.alg != "RS256" {
            return Err(VerifyError::Algorithm(header.alg));
        }
        let kid = header.kid.as_deref().ok_or(VerifyError::MissingKid)?;
        let key = self.keys.get(kid).ok_or(VerifyError::UnknownKey)?;
        verify_with_key(token, key)
    }

    /// Full check of a Firebase-style token: signature, `exp` (with `leeway` seconds), `iat` not in
    /// the future, `iss`, `aud`, and a non-empty `sub` of at most 128 characters.
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        now_secs: i64,
        leeway: i64,
    ) -> Result<Claims, VerifyError> {
        let (_, claims) = self.verify_signature(token)?;
        check_claims(&claims, issuer, audience, now_secs, leeway)?;
        Ok(claims)
    }
}

/// Checks an RS256 signature with one given key, whatever the token's `kid` says (for issuers
/// that sign without a `kid`, such as Admin-SDK custom tokens). Returns header and claims.
pub fn verify_with_key(token: &str, key: &PublicKey) -> Result<(Header, Claims), VerifyError> {
    let (header, claims) = decode_unverified(token)?;
    if header.alg != "RS256" {
        return Err(VerifyError::Algorithm(header.alg));
    }
    let (signed, sig) = token.rsplit_once('.').ok_or(VerifyError::Malformed)?;
    let sig = b64url_decode(sig).ok_or(VerifyError::Malformed)?;
    if !key.verify_rs256(signed.as_bytes(), &sig) {
        return Err(VerifyError::BadSignature);
    }
    Ok((header, claims))
}

/// The time, audience, issuer and subject checks of [`Verifier::verify`], on already-trusted claims.
pub fn check_claims(
    claims: &Claims,
    issuer: &str,
    audience: &str,
    now_secs: i64,
    leeway: i64,
) -> Result<(), VerifyError> {
    match numeric_date(claims, "exp")? {
        Some(exp) if exp.saturating_add(leeway) > now_secs => {}
        Some(_) => return Err(VerifyError::Expired),
        None => return Err(VerifyError::Malformed),
    }
    match numeric_date(claims, "iat")? {
        Some(iat) if iat <= now_secs.saturating_add(leeway) => {}
        Some(_) => return Err(VerifyError::IssuedInFuture),
        None => return Err(VerifyError::Malformed),
    }
    if numeric_date(claims, "nbf")?.is_some_and(|nbf| nbf > now_secs.saturating_add(leeway)) {
        return Err(VerifyError::NotYetValid);
    }
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(VerifyError::Issuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(VerifyError::Audience);
    }
    match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() && sub.chars().count() <= 128 => Ok(()),
        _ => Err(VerifyError::Subject),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(now: i64) -> Claims {
        let Value::Object(map) = json!({
            "iss": "https://securetoken.google.com/p1", "aud": "p1", "sub": "u1",
            "iat": now, "exp": now + 3600,
        }) else {
            unreachable!()
        };
        map
    }

    /// Signs `header` and `claims` as given (no `kid` injection), for tokens we never mint.
    fn signed(key: &SigningKey, header: Value, claims: &Claims) -> String {
        let mut t = b64url(header.to_string().as_bytes());
        t.push('.');
        t.push_str(&b64url(
            Value::Object(claims.clone()).to_string().as_bytes(),
        ));
        let sig = key.sign_rs256(t.as_bytes()).unwrap();
        format!("{t}.{}", b64url(&sig))
    }

    #[test]
    fn crit_and_non_integer_dates_are_refused() {
        let key = SigningKey::generate().unwrap();
        let v = Verifier::new([key.public().clone()]);
        let now = 1_700_000_000;
        let (iss, aud) = ("https://securetoken.google.com/p1", "p1");
        let good = claims(now);
        let header = json!({"alg": "RS256", "kid": key.kid(), "typ": "JWT"});
        assert!(
            v.verify(&signed(&key, header.clone(), &good), iss, aud, now, 0)
                .is_ok()
        );
        // RFC 7515 §4.1.11: a `crit` we do not understand (any) is refused, even when signed.
        let crit = json!({"alg": "RS256", "kid": key.kid(), "crit": ["b64"], "b64": false});
        assert_eq!(
            v.verify(&signed(&key, crit, &good), iss, aud, now, 0),
            Err(VerifyError::Malformed)
        );
        // A date that is not an integer is not "absent".
        for (name, value) in [
            ("exp", json!((now - 10).to_string())),
            ("exp", json!(now as f64 + 0.5)),
            ("exp", json!(null)),
            ("iat", json!("0")),
            ("nbf", json!((now + 999).to_string())),
        ] {
            let mut c = good.clone();
            c.insert(name.into(), value);
            assert_eq!(
                v.verify(&signed(&key, header.clone(), &c), iss, aud, now, 0),
                Err(VerifyError::Malformed),
                "{name}"
            );
        }
        let mut early = good.clone();
        early.insert("nbf".into(), json!(now + 999));
        assert_eq!(
            v.verify(&signed(&key, header, &early), iss, aud, now, 0),
            Err(VerifyError::NotYetValid)
        );
    }

    #[test]
    fn round_trip_and_claim_checks() {
        let key = SigningKey::generate().unwrap();
        let v = Verifier::new([key.public().clone()]);
        let now = 1_800_000_000;
        let t = encode_rs256(&key, &claims(now)).unwrap();
        let iss = "https://securetoken.google.com/p1";
        assert_eq!(v.verify(&t, iss, "p1", now, 0).unwrap()["sub"], "u1");
        assert_eq!(v.verify(&t, iss, "p2", now, 0), Err(VerifyError::Audience));
        assert_eq!(v.verify(&t, "x", "p1", now, 0), Err(VerifyError::Issuer));
        assert_eq!(
            v.verify(&t, iss, "p1", now + 3600, 0),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            v.verify(&t, iss, "p1", now - 100, 5),
            Err(VerifyError::IssuedInFuture)
        );
    }

    #[test]
    fn refuses_none_unknown_keys_tampering_and_hs256() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let v = Verifier::new([key.public().clone()]);
        let now = 1_800_000_000;
        let c = claims(now);
        assert_eq!(
            v.verify_signature(&encode_unsigned(&c)).unwrap_err(),
            VerifyError::Algorithm("none".into())
        );
        assert_eq!(
            v.verify_signature(&encode_rs256(&other, &c).unwrap())
                .unwrap_err(),
            VerifyError::UnknownKey
        );
        // Same kid, other key: the signature must fail.
        let forged = encode_rs256(
            &SigningKey::from_pkcs8(key.kid().into(), other.pkcs8_der()).unwrap(),
            &c,
        )
        .unwrap();
        assert_eq!(
            v.verify_signature(&forged).unwrap_err(),
            VerifyError::BadSignature
        );
        // Tampered payload.
        let good = encode_rs256(&key, &c).unwrap();
        let mut parts: Vec<&str> = good.split('.').collect();
        let mut c2 = c.clone();
        c2.insert("sub".into(), json!("admin"));
        let p2 = b64url(Value::Object(c2).to_string().as_bytes());
        parts[1] = &p2;
        assert_eq!(
            v.verify_signature(&parts.join(".")).unwrap_err(),
            VerifyError::BadSignature
        );
        // HS256 with the public key as secret.
        let h = b64url(
            json!({"alg":"HS256","kid":key.kid(),"typ":"JWT"})
                .to_string()
                .as_bytes(),
        );
        let hs = format!("{h}.{}.{}", parts[1], b64url(b"whatever"));
        assert_eq!(
            v.verify_signature(&hs).unwrap_err(),
            VerifyError::Algorithm("HS256".into())
        );
        for junk in ["", "a", "a.b", "a.b.c", "a.b.c.d", "..", "eyJ.eyJ.x"] {
            assert!(v.verify_signature(junk).is_err(), "{junk}");
        }
    }
}
