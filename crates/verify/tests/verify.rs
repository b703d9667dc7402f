//! Both verifiers against keys served over HTTP: Firebase ID tokens (the x509 map, as Google
//! and our identity server publish it) and upstream OpenID Connect ID tokens (a JWK set).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_tokens::{SigningKey, encode_rs256};
use gatehouse_verify::{IdTokenVerifier, OidcError, OidcVerifier, VerifyError};
use serde_json::{Value, json};

const NOW: i64 = 1_800_000_000;

/// Serves `body` at every path; returns the base URL.
async fn serve(body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move {
            (
                [
                    ("content-type", "application/json"),
                    ("cache-control", "max-age=60"),
                ],
                body,
            )
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn token(key: &SigningKey, claims: Value) -> String {
    encode_rs256(key, claims.as_object().unwrap()).unwrap()
}

#[tokio::test]
async fn firebase_id_tokens_as_firebase_admin_checks_them() {
    let key = SigningKey::generate().unwrap();
    let pem = key
        .certificate_pem("securetoken", NOW - 10, NOW + 3600)
        .unwrap();
    let base = serve(json!({ key.kid(): pem }).to_string()).await;
    let v = IdTokenVerifier::new("proj", &base, reqwest::Client::new());
    let good = json!({
        "iss": "https://securetoken.google.com/proj", "aud": "proj", "sub": "uid-1",
        "iat": NOW - 5, "exp": NOW + 3600, "auth_time": NOW - 5,
    });
    let ok = v.verify_at(&token(&key, good.clone()), NOW).await.unwrap();
    assert_eq!(ok.uid, "uid-1");

    let with = |k: &str, val: Value| {
        let mut c = good.clone();
        c[k] = val;
        c
    };
    let cases = [
        (with("aud", json!("other")), "Audience"),
        (
            with("iss", json!("https://securetoken.google.com/other")),
            "Issuer",
        ),
        (with("sub", json!("")), "Subject"),
        (with("sub", json!("x".repeat(129))), "Subject"),
        (with("exp", json!(NOW - 61)), "Expired"),
        (with("iat", json!(NOW + 3600)), "IssuedInFuture"),
    ];
    for (claims, want) in cases {
        let err = v
            .verify_at(&token(&key, claims.clone()), NOW)
            .await
            .unwrap_err();
        assert!(format!("{err:?}").starts_with(want), "{claims}: {err:?}");
    }
    // Another key with a kid the issuer does not publish; a tampered signature.
    let stranger = SigningKey::generate().unwrap();
    assert!(matches!(
        v.verify_at(&token(&stranger, good.clone()), NOW).await,
        Err(VerifyError::UnknownKey(_))
    ));
    let t = token(&key, good.clone());
    let (signed, _) = t.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{}", gatehouse_tokens::b64url(&[7u8; 256]));
    assert_eq!(v.verify_at(&forged, NOW).await, Err(VerifyError::Signature));
    assert_eq!(
        v.verify_at("iam-a-token", NOW).await,
        Err(VerifyError::Malformed)
    );
    // An unsigned token is refused before any key is looked at.
    let none = format!(
        "{}.{}.",
        gatehouse_tokens::b64url(br#"{"alg":"none","kid":"x"}"#),
        gatehouse_tokens::b64url(good.to_string().as_bytes())
    );
    assert!(matches!(
        v.verify_at(&none, NOW).await,
        Err(VerifyError::Algorithm(_) | VerifyError::Malformed)
    ));
}

#[tokio::test]
async fn upstream_oidc_tokens() {
    let key = SigningKey::generate().unwrap();
    let jwks = serve(json!({"keys": [key.public().jwk()]}).to_string()).await;
    let v = OidcVerifier::new(
        "https://op.example",
        "client-1",
        &jwks,
        reqwest::Client::new(),
    );
    let good = json!({
        "iss": "https://op.example", "aud": "client-1", "sub": "alice", "nonce": "n-1",
        "iat": NOW - 5, "exp": NOW + 300, "email": "alice@example.com",
    });
    let claims = v
        .verify(&token(&key, good.clone()), Some("n-1"), NOW)
        .await
        .unwrap();
    assert_eq!(claims["email"], "alice@example.com");
    let with = |k: &str, val: Value| {
        let mut c = good.clone();
        c[k] = val;
        c
    };
    assert!(matches!(
        v.verify(
            &token(&key, with("iss", json!("https://other.example"))),
            None,
            NOW
        )
        .await,
        Err(OidcError::Issuer { .. })
    ));
    assert!(matches!(
        v.verify(&token(&key, with("aud", json!("client-2"))), None, NOW)
            .await,
        Err(OidcError::Audience { .. })
    ));
    // Several audiences: azp must name us.
    let multi = with("aud", json!(["client-1", "client-2"]));
    assert!(matches!(
        v.verify(&token(&key, multi.clone()), None, NOW).await,
        Err(OidcError::Audience { .. })
    ));
    let mut with_azp = multi;
    with_azp["azp"] = json!("client-1");
    assert!(v.verify(&token(&key, with_azp), None, NOW).await.is_ok());
    assert_eq!(
        v.verify(&token(&key, good.clone()), Some("n-2"), NOW).await,
        Err(OidcError::Nonce)
    );
    assert_eq!(
        v.verify(&token(&key, good.clone()), Some("n-1"), NOW + 361)
            .await,
        Err(OidcError::Expired)
    );
    let stranger = SigningKey::generate().unwrap();
    assert_eq!(
        v.verify(&token(&stranger, good.clone()), None, NOW).await,
        Err(OidcError::UnknownKey)
    );
    let hs = format!(
        "{}.{}.c2ln",
        gatehouse_tokens::b64url(br#"{"alg":"HS256"}"#),
        gatehouse_tokens::b64url(good.to_string().as_bytes())
    );
    assert_eq!(
        v.verify(&hs, None, NOW).await,
        Err(OidcError::Algorithm("HS256".into()))
    );
}
