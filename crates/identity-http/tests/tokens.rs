//! Token lifetimes, revocation, key rotation and publication, session cookies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Builder, Server, header, message, payload};
use gatehouse_testkit::FetchJson as _;
use gatehouse_tokens::{PublicKey, Verifier};
use serde_json::{Value, json};

async fn jwks(s: &Server) -> Verifier {
    let res = s
        .get("/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com")
        .await;
    assert!(
        res.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    let doc: Value = res.json().await.unwrap();
    Verifier::new(
        doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| PublicKey::from_jwk(k).unwrap()),
    )
}

#[tokio::test]
async fn id_tokens_expire_after_an_hour_and_refresh_keeps_auth_time() {
    let s = Server::dev().await;
    let b = s.sign_up("t@example.com", "secret1").await;
    let token = b["idToken"].as_str().unwrap().to_owned();
    let refresh = b["refreshToken"].as_str().unwrap().to_owned();
    let claims = payload(&token);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(claims["iss"], "https://securetoken.google.com/demo-project");
    assert_eq!(claims["aud"], "demo-project");

    s.clock.advance(3_601_000);
    let (st, b) = s.call("lookup", "k", json!({"idToken": token})).await;
    assert_eq!((st, message(&b).as_str()), (400, "INVALID_ID_TOKEN"), "{b}");

    let (st, b) = s.refresh("k", &refresh).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["token_type"], "Bearer");
    assert_eq!(b["expires_in"], "3600");
    assert_eq!(b["id_token"], b["access_token"]);
    let fresh = payload(b["id_token"].as_str().unwrap());
    assert_eq!(fresh["auth_time"], claims["auth_time"]);
    assert!(fresh["iat"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());
    let (st, _) = s
        .call("lookup", "k", json!({"idToken": b["id_token"]}))
        .await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn revocation_password_change_disable_and_delete_stop_refresh() {
    let s = Server::dev().await;
    for (i, action) in ["revoke", "password", "disable", "delete"]
        .iter()
        .enumerate()
    {
        let email = format!("r{i}@example.com");
        let b = s.sign_up(&email, "secret1").await;
        let uid = b["localId"].as_str().unwrap().to_owned();
        let refresh = b["refreshToken"].as_str().unwrap().to_owned();
        let token = b["idToken"].as_str().unwrap().to_owned();
        s.clock.advance(2000);
        let (st, out) = match *action {
            "revoke" => {
                let now = common::NOW_MS / 1000 + 1_000;
                s.admin(
                    "demo-project",
                    "/accounts:update",
                    "owner",
                    json!({"localId": uid, "validSince": now}),
                )
                .await
            }
            "password" => {
                s.call(
                    "update",
                    "k",
                    json!({"idToken": token, "password": "secret2", "returnSecureToken": true}),
                )
                .await
            }
            "disable" => {
                s.admin(
                    "demo-project",
                    "/accounts:update",
                    "owner",
                    json!({"localId": uid, "disableUser": true}),
                )
                .await
            }
            _ => {
                s.admin(
                    "demo-project",
                    "/accounts:delete",
                    "owner",
                    json!({"localId": uid}),
                )
                .await
            }
        };
        assert_eq!(st, 200, "{action}: {out}");
        let (st, b) = s.refresh("k", &refresh).await;
        assert_eq!(st, 400, "{action}: {b}");
        let expected = match *action {
            "disable" => "USER_DISABLED",
            "delete" => "INVALID_REFRESH_TOKEN",
            _ => "INVALID_REFRESH_TOKEN",
        };
        assert_eq!(message(&b), expected, "{action}");
        if *action == "password" {
            // The token the update returned works; the old one is revoked.
            let (st, _) = s
                .call("lookup", "k", json!({"idToken": out["idToken"]}))
                .await;
            assert_eq!(st, 200);
            let (st, b) = s.call("lookup", "k", json!({"idToken": token})).await;
            assert_eq!((st, message(&b).as_str()), (400, "TOKEN_EXPIRED"));
            let (st, _) = s.refresh("k", out["refreshToken"].as_str().unwrap()).await;
            assert_eq!(st, 200);
        }
    }
}

#[tokio::test]
async fn keys_rotate_and_retired_keys_stay_published_until_their_tokens_expire() {
    let s = Builder {
        rotation_secs: 600,
        ..Builder::default()
    }
    .start()
    .await;
    let first = s.sign_up("k@example.com", "secret1").await;
    let first_token = first["idToken"].as_str().unwrap().to_owned();
    let kid1 = header(&first_token)["kid"].as_str().unwrap().to_owned();
    assert!(jwks(&s).await.knows(&kid1));

    // A quarter period before retirement the next key is created and published, not yet used.
    s.clock.advance(460_000);
    s.identity.housekeeping().await.unwrap();
    let doc: Value = s
        .get("/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["keys"].as_array().unwrap().len(), 2, "{doc}");
    let b = s
        .call(
            "signInWithPassword",
            "k",
            json!({"email": "k@example.com", "password": "secret1"}),
        )
        .await
        .1;
    assert_eq!(header(b["idToken"].as_str().unwrap())["kid"], kid1.as_str());

    // After retirement the new key signs; the old one is still published and verifies.
    s.clock.advance(200_000);
    s.identity.housekeeping().await.unwrap();
    let b = s
        .call(
            "signInWithPassword",
            "k",
            json!({"email": "k@example.com", "password": "secret1"}),
        )
        .await
        .1;
    let kid2 = header(b["idToken"].as_str().unwrap())["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(kid1, kid2);
    let v = jwks(&s).await;
    assert!(v.knows(&kid1) && v.knows(&kid2));
    let x509: Value = s
        .get("/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        x509[&kid1]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert!(x509[&kid2].is_string());

    // Once every token the old key signed has expired, it is no longer published.
    s.clock.advance(2 * 3_600_000);
    s.identity.housekeeping().await.unwrap();
    let v = jwks(&s).await;
    assert!(!v.knows(&kid1));
}

#[tokio::test]
async fn session_cookies_are_signed_with_their_own_published_keys() {
    let s = Server::dev().await;
    let b = s.sign_up("c@example.com", "secret1").await;
    let (st, out) = s
        .admin(
            "demo-project",
            ":createSessionCookie",
            "owner",
            json!({"idToken": b["idToken"], "validDuration": 3600}),
        )
        .await;
    assert_eq!(st, 200, "{out}");
    let cookie = out["sessionCookie"].as_str().unwrap();
    let claims = payload(cookie);
    assert_eq!(
        claims["iss"],
        "https://session.firebase.google.com/demo-project"
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    let kid = header(cookie)["kid"].as_str().unwrap().to_owned();
    let x509: Value = s
        .get("/identitytoolkit/v3/relyingparty/publicKeys")
        .await
        .json()
        .await
        .unwrap();
    assert!(x509[&kid].is_string(), "{x509}");
    assert!(
        !jwks(&s).await.knows(&kid),
        "session keys are separate from ID-token keys"
    );

    let (st, out) = s
        .admin(
            "demo-project",
            ":createSessionCookie",
            "owner",
            json!({"idToken": b["idToken"], "validDuration": "1"}),
        )
        .await;
    assert_eq!((st, message(&out).as_str()), (400, "INVALID_DURATION"));
}

#[tokio::test]
async fn discovery_document_points_at_the_jwks() {
    let s = Server::dev().await;
    let doc: Value = s
        .get("/securetoken.google.com/demo-project/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], "https://securetoken.google.com/demo-project");
    let jwks_url = doc["jwks_uri"].as_str().unwrap();
    let keys: Value = s.http.get(jwks_url).fetch_json().await.unwrap();
    assert!(!keys["keys"].as_array().unwrap().is_empty());
}
