//! Production-mode projects: registered API keys only, admin credential, signed custom tokens,
//! no emulator routes; and the development-only unsigned-token opt-in.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Builder, NOW_MS, header, message, payload};
use gatehouse_identity::{CUSTOM_TOKEN_AUDIENCE, ProjectConfig};
use gatehouse_tokens::{SigningKey, encode_rs256, encode_unsigned};
use serde_json::{Map, Value, json};

const SA: &str = "svc@prod-project.iam.gserviceaccount.com";

fn prod(trusted: &SigningKey) -> ProjectConfig {
    let mut p = ProjectConfig::production("prod-project");
    p.api_keys = vec!["prod-key".into()];
    p.admin_key = Some("s3cret-admin-key".to_owned().into());
    p.custom_token_signers
        .insert(SA.into(), vec![trusted.public().clone()]);
    p
}

fn custom_claims(iss: &str, iat: i64) -> Map<String, Value> {
    let Value::Object(m) = json!({
        "aud": CUSTOM_TOKEN_AUDIENCE, "iss": iss, "sub": iss, "iat": iat, "exp": iat + 3600,
        "uid": "custom-user-1", "claims": {"tier": "gold"}
    }) else {
        unreachable!()
    };
    m
}

/// A kid-less RS256 token, as the Admin SDKs make custom tokens.
fn kidless_rs256(key: &SigningKey, claims: &Map<String, Value>) -> String {
    use gatehouse_tokens::b64url;
    let h = b64url(json!({"alg": "RS256", "typ": "JWT"}).to_string().as_bytes());
    let p = b64url(Value::Object(claims.clone()).to_string().as_bytes());
    let sig = key.sign_rs256(format!("{h}.{p}").as_bytes()).unwrap();
    format!("{h}.{p}.{}", b64url(&sig))
}

#[tokio::test]
async fn api_keys_and_admin_credentials_are_enforced() {
    let trusted = SigningKey::generate().unwrap();
    let s = Builder::default().project(prod(&trusted)).start().await;
    let body = json!({"email": "p@example.com", "password": "secret1", "returnSecureToken": true});

    let (st, b) = s.call("signUp", "unregistered", body.clone()).await;
    assert_eq!(st, 400, "{b}");
    assert!(message(&b).contains("API key not valid"), "{b}");
    assert_eq!(b["error"]["status"], "INVALID_ARGUMENT");

    let url = format!(
        "{}/identitytoolkit.googleapis.com/v1/accounts:signUp",
        s.url
    );
    let res = s.http.post(url).json(&body).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 403);

    let (st, b) = s.call("signUp", "prod-key", body).await;
    assert_eq!(st, 200, "{b}");

    // `Bearer owner` means nothing in production; the configured admin key does.
    let (st, b) = s
        .admin(
            "prod-project",
            "/accounts:lookup",
            "owner",
            json!({"email": ["p@example.com"]}),
        )
        .await;
    assert_eq!(st, 401, "{b}");
    assert_eq!(b["error"]["status"], "UNAUTHENTICATED");
    let (st, b) = s
        .admin(
            "prod-project",
            "/accounts:lookup",
            "s3cret-admin-key",
            json!({"email": ["p@example.com"]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["users"][0]["email"], "p@example.com");

    // The emulator's helper routes are off.
    for path in [
        "/emulator/v1/projects/prod-project/oobCodes",
        "/emulator/v1/projects/prod-project/config",
    ] {
        assert_eq!(s.get(path).await.status().as_u16(), 404, "{path}");
    }
    let res = s
        .http
        .delete(format!(
            "{}/emulator/v1/projects/prod-project/accounts",
            s.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
}

#[tokio::test]
async fn production_custom_tokens_must_be_signed_by_a_trusted_key() {
    let trusted = SigningKey::generate().unwrap();
    let stranger = SigningKey::generate().unwrap();
    let s = Builder::default().project(prod(&trusted)).start().await;
    let now = NOW_MS / 1000;
    let claims = custom_claims(SA, now);

    let cases = [
        ("unsigned", encode_unsigned(&claims)),
        ("stranger", kidless_rs256(&stranger, &claims)),
        (
            "expired",
            kidless_rs256(&trusted, &custom_claims(SA, now - 7200)),
        ),
        (
            "unknown issuer",
            kidless_rs256(&trusted, &custom_claims("x@y.iam.gserviceaccount.com", now)),
        ),
        ("json", r#"{"uid":"u1"}"#.to_owned()),
        ("garbage", "a.b.c".to_owned()),
    ];
    for (name, token) in cases {
        let (st, b) = s
            .call("signInWithCustomToken", "prod-key", json!({"token": token}))
            .await;
        assert_eq!(st, 400, "{name}: {b}");
        assert!(
            message(&b).starts_with("INVALID_CUSTOM_TOKEN"),
            "{name}: {b}"
        );
    }

    let (st, b) = s
        .call(
            "signInWithCustomToken",
            "prod-key",
            json!({"token": kidless_rs256(&trusted, &claims)}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["isNewUser"], true);
    let id = payload(b["idToken"].as_str().unwrap());
    assert_eq!(id["sub"], "custom-user-1");
    assert_eq!(id["tier"], "gold");
    assert_eq!(id["firebase"]["sign_in_provider"], "custom");
    // Also with a kid header naming the key.
    let with_kid = encode_rs256(
        &SigningKey::from_pkcs8("k1".into(), trusted.pkcs8_der()).unwrap(),
        &claims,
    )
    .unwrap();
    let (st, b) = s
        .call(
            "signInWithCustomToken",
            "prod-key",
            json!({"token": with_kid}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["isNewUser"], false);
}

#[tokio::test]
async fn development_accepts_unsigned_custom_tokens_but_still_signs_id_tokens() {
    let s = Builder::default().start().await;
    let token = encode_unsigned(&custom_claims(
        "firebase-auth-emulator@example.com",
        NOW_MS / 1000,
    ));
    let (st, b) = s
        .call("signInWithCustomToken", "anything", json!({"token": token}))
        .await;
    assert_eq!(st, 200, "{b}");
    let id = b["idToken"].as_str().unwrap();
    assert_eq!(header(id)["alg"], "RS256");
    assert!(header(id)["kid"].is_string());
}

#[tokio::test]
async fn unsigned_id_tokens_are_opt_in_and_refused_in_production() {
    let mut dev = ProjectConfig::development("node-admin");
    dev.unsigned_id_tokens = true;
    let s = Builder::default().project(dev).start().await;
    let b = s.sign_up("n@example.com", "secret1").await;
    let token = b["idToken"].as_str().unwrap();
    assert_eq!(header(token)["alg"], "none");
    assert!(token.ends_with('.'));
    let (st, b) = s.call("lookup", "k", json!({"idToken": token})).await;
    assert_eq!(st, 200, "{b}");

    let mut bad = ProjectConfig::production("p");
    bad.unsigned_id_tokens = true;
    let dir = gatehouse_testkit::temp_dir("gh-prod").unwrap();
    let store = gatehouse_store::Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("x.db").display()
    ))
    .await
    .unwrap();
    let err = gatehouse_identity::Identity::new(gatehouse_identity::IdentityOptions {
        store,
        clock: std::sync::Arc::new(gatehouse_identity::SystemClock),
        projects: vec![bad],
        rate_limits: gatehouse_identity::RateLimits::off(),
        smtp: None,
        public_url: "http://x".into(),
        key_rotation_secs: 3600,
        master_key: std::sync::Arc::new(gatehouse_identity::MasterKey::generate().unwrap()),
        authority: None,
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("refused in production"), "{err}");
}
