//! JWT parsing and verification. Tokens come from the input as text, or are valid tokens signed
//! by a fixed key (made once per process) with the input's edits applied, or such tokens with
//! the input as their header or payload. The parsers agree with each other, a present
//! NumericDate is never read as absent, and nothing the fixed key did not sign ever verifies.
//!
//! Input: one mode byte, then the text (mode 0), or an index byte and 4-byte edits (mode 1:
//! op, position as big-endian u16, byte), or the header or payload JSON (modes 2 and 3).
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use gatehouse_tokens::{
    Claims, Header, SigningKey, Verifier, b64url, b64url_decode, decode_unverified, numeric_date,
    parse_jwt, verify_with_key,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const KID: &str = "fuzz-key";
const ISS: &str = "https://securetoken.google.com/fuzz";
const AUD: &str = "fuzz";
const NOW: i64 = 1_800_000_000;

struct Fixture {
    key: SigningKey,
    verifier: Verifier,
    /// Tokens to mutate: signed by the key, and forgeries with its kid signed by another key.
    tokens: Vec<String>,
    /// Signing input → signature, for everything the key signed.
    signed: HashMap<String, Vec<u8>>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let pkcs8 = SigningKey::generate().unwrap().pkcs8_der().to_vec();
        let key = SigningKey::from_pkcs8(KID.into(), &pkcs8).unwrap();
        let other = SigningKey::generate().unwrap();
        let verifier = Verifier::new([key.public().clone()]);
        let claim_sets = [
            json!({"iss": ISS, "aud": AUD, "sub": "u1", "iat": NOW - 10, "exp": NOW + 3600}),
            json!({"iss": ISS, "aud": [AUD, "x"], "sub": "u2", "iat": NOW, "exp": NOW + 1, "nbf": NOW}),
            json!({"iss": ISS, "aud": AUD, "sub": "u3", "iat": NOW, "exp": NOW - 1}),
            json!({"iss": ISS, "aud": AUD, "sub": "u4", "iat": NOW, "exp": "9999999999"}),
        ];
        let mut tokens = Vec::new();
        let mut signed = HashMap::new();
        for c in claim_sets {
            let header = json!({"alg": "RS256", "kid": KID, "typ": "JWT"});
            let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(c.to_string().as_bytes()));
            let sig = key.sign_rs256(input.as_bytes()).unwrap();
            tokens.push(format!("{input}.{}", b64url(&sig)));
            signed.insert(input.clone(), sig);
            let forged = other.sign_rs256(input.as_bytes()).unwrap();
            tokens.push(format!("{input}.{}", b64url(&forged)));
        }
        Fixture { key, verifier, tokens, signed }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = match mode % 4 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => {
            let Some((&pick, edits)) = rest.split_first() else {
                return;
            };
            let mut t = f.tokens[usize::from(pick) % f.tokens.len()]
                .clone()
                .into_bytes();
            for e in edits.chunks_exact(4) {
                let at = usize::from(u16::from_be_bytes([e[1], e[2]])) % (t.len() + 1);
                match e[0] % 3 {
                    0 if at < t.len() => t[at] = e[3],
                    1 => t.insert(at, e[3]),
                    _ if at < t.len() => {
                        t.remove(at);
                    }
                    _ => {}
                }
            }
            String::from_utf8_lossy(&t).into_owned()
        }
        m => {
            let base = &f.tokens[usize::from(rest.first().copied().unwrap_or(0)) % f.tokens.len()];
            let parts: Vec<&str> = base.split('.').collect();
            let segment = b64url(rest.get(1..).unwrap_or_default());
            if m == 2 {
                format!("{segment}.{}.{}", parts[1], parts[2])
            } else {
                format!("{}.{segment}.{}", parts[0], parts[2])
            }
        }
    };
    check(f, &token);
});

fn check(f: &Fixture, token: &str) {
    let parsed = parse_jwt(token);
    let unverified = decode_unverified(token);
    if let Some(p) = &parsed {
        assert_eq!(Some(p.signed), token.rsplit_once('.').map(|(s, _)| s));
        assert!(p.header.crit.is_none(), "crit accepted");
        let (h, _) = p.signed.split_once('.').unwrap();
        assert_eq!(Header::decode(h).as_ref(), Some(&p.header));
        let (uh, uc) = unverified
            .as_ref()
            .expect("parse_jwt accepts what decode_unverified refuses");
        assert_eq!((uh, uc), (&p.header, &p.claims));
    }
    if let Ok((header, claims)) = &unverified {
        assert!(header.crit.is_none(), "crit accepted");
        check_dates(claims);
    }

    let by_kid = f.verifier.verify_signature(token);
    if let Ok((header, claims)) = &by_kid {
        assert_eq!(header.alg, "RS256");
        assert_eq!(header.kid.as_deref(), Some(KID));
        let (input, sig) = token.rsplit_once('.').unwrap();
        let Some(expected) = f.signed.get(input) else {
            panic!("a token the key never signed verifies: {token:?}");
        };
        assert_eq!(
            b64url_decode(sig).as_ref(),
            Some(expected),
            "another signature verifies"
        );
        check_dates(claims);
    }
    // With the key given directly, the same tokens verify (the kid only chooses the key).
    let direct = verify_with_key(token, f.key.public());
    if by_kid.is_ok() {
        assert_eq!(direct, by_kid);
    }
    if let Ok((h, _)) = &direct {
        let (input, _) = token.rsplit_once('.').unwrap();
        assert!(
            f.signed.contains_key(input),
            "a token the key never signed verifies"
        );
        if h.kid.as_deref() == Some(KID) {
            assert!(by_kid.is_ok());
        }
    }

    if let Ok(claims) = f.verifier.verify(token, ISS, AUD, NOW, 0) {
        assert!(
            by_kid.is_ok(),
            "verify accepts what verify_signature refuses"
        );
        let date = |n: &str| claims.get(n).and_then(Value::as_i64);
        assert!(
            date("exp").is_some_and(|e| e > NOW),
            "expired or no exp: {claims:?}"
        );
        assert!(date("iat").is_some_and(|i| i <= NOW), "iat: {claims:?}");
        assert!(
            claims
                .get("nbf")
                .is_none_or(|_| date("nbf").is_some_and(|n| n <= NOW)),
            "nbf"
        );
        assert_eq!(claims.get("iss").and_then(Value::as_str), Some(ISS));
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => a == AUD,
            Some(Value::Array(l)) => l.iter().any(|a| a.as_str() == Some(AUD)),
            _ => false,
        };
        assert!(aud_ok, "aud: {claims:?}");
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        assert!(
            !sub.is_empty() && sub.chars().count() <= 128,
            "sub: {claims:?}"
        );
    }
}

/// A present NumericDate is an integer or an error, never "absent" (issue #14, hole 13).
fn check_dates(claims: &Claims) {
    for name in ["exp", "nbf", "iat"] {
        match numeric_date(claims, name) {
            Ok(None) => assert!(
                !claims.contains_key(name),
                "{name} present but read as absent"
            ),
            Ok(Some(n)) => assert_eq!(claims.get(name).and_then(Value::as_i64), Some(n)),
            Err(_) => assert!(claims.get(name).and_then(Value::as_i64).is_none()),
        }
    }
}
