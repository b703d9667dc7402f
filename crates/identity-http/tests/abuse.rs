//! Abuse protection: rate limits, e-mail enumeration protection, and no secrets in logs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Builder, Server, message};
use gatehouse_identity::{ProjectConfig, RateLimits};
use serde_json::json;

#[tokio::test]
async fn per_ip_and_per_account_limits() {
    let limits = RateLimits {
        sign_up_per_ip_per_min: 3,
        failed_sign_in_per_account: 3,
        ..RateLimits::off()
    };
    let s = Builder {
        limits,
        ..Builder::default()
    }
    .start()
    .await;
    for i in 0..3 {
        s.sign_up(&format!("l{i}@example.com"), "secret1").await;
    }
    let (st, b) = s
        .call(
            "signUp",
            "k",
            json!({"email": "l9@example.com", "password": "secret1"}),
        )
        .await;
    assert_eq!(
        (st, message(&b).as_str()),
        (400, "TOO_MANY_ATTEMPTS_TRY_LATER")
    );

    for _ in 0..3 {
        let (_, b) = s
            .call(
                "signInWithPassword",
                "k",
                json!({"email": "l0@example.com", "password": "wrong-one"}),
            )
            .await;
        assert_eq!(message(&b), "INVALID_PASSWORD");
    }
    // Locked now, even with the right password; other accounts are unaffected.
    let (_, b) = s
        .call(
            "signInWithPassword",
            "k",
            json!({"email": "l0@example.com", "password": "secret1"}),
        )
        .await;
    assert_eq!(message(&b), "TOO_MANY_ATTEMPTS_TRY_LATER");
    let (st, _) = s
        .call(
            "signInWithPassword",
            "k",
            json!({"email": "l1@example.com", "password": "secret1"}),
        )
        .await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn behind_a_proxy_limits_apply_per_forwarded_client() {
    let limits = RateLimits {
        sign_up_per_ip_per_min: 2,
        ..RateLimits::off()
    };
    let s = Builder {
        limits,
        proxy_hops: 1,
        ..Builder::default()
    }
    .start()
    .await;
    let url = format!(
        "{}/identitytoolkit.googleapis.com/v1/accounts:signUp?key=k",
        s.url
    );
    let sign_up = |client: &'static str| {
        let req = s
            .http
            .post(&url)
            .header("x-forwarded-for", format!("198.51.100.1, {client}"))
            .json(&json!({}));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(sign_up("203.0.113.1").await, 200);
    assert_eq!(sign_up("203.0.113.1").await, 200);
    assert_eq!(sign_up("203.0.113.1").await, 400);
    // Another client behind the same proxy has its own budget.
    assert_eq!(sign_up("203.0.113.2").await, 200);
}

/// What a caller with API key `key` learns about `e@example.com` (registered, password
/// `secret1`) and `nobody@example.com` (not registered) with enumeration protection on:
/// nothing.
async fn assert_enumeration_protected(s: &Server, key: &str) {
    for body in [
        json!({"email": "e@example.com", "password": "wrong-one"}),
        json!({"email": "nobody@example.com", "password": "wrong-one"}),
    ] {
        let (st, b) = s.call("signInWithPassword", key, body).await;
        assert_eq!(
            (st, message(&b).as_str()),
            (400, "INVALID_LOGIN_CREDENTIALS")
        );
    }
    let (st, b) = s
        .call(
            "sendOobCode",
            key,
            json!({"requestType": "PASSWORD_RESET", "email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    for who in ["e@example.com", "nobody@example.com"] {
        let (st, b) = s
            .call(
                "createAuthUri",
                key,
                json!({"identifier": who, "continueUri": "http://localhost"}),
            )
            .await;
        assert_eq!(st, 200, "{b}");
        assert!(
            b.get("registered").is_none()
                && b.get("signinMethods").is_none()
                && b.get("allProviders").is_none()
                && b["sessionId"].is_string(),
            "{who}: {b}"
        );
    }
}

#[tokio::test]
async fn email_enumeration_protection() {
    let s = Server::dev().await;
    s.sign_up("e@example.com", "secret1").await;
    let res = s
        .http
        .patch(format!(
            "{}/emulator/v1/projects/demo-project/config",
            s.url
        ))
        .json(&json!({"emailPrivacyConfig": {"enableImprovedEmailPrivacy": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_enumeration_protected(&s, "k").await;
}

/// Issue 14, hole 14: a production project says nothing about which addresses have accounts
/// unless its operator turns protection off, as new Identity Platform projects do.
#[tokio::test]
async fn production_projects_protect_against_enumeration_by_default() {
    let mut p = ProjectConfig::production("demo-project");
    p.api_keys = vec!["pk".into()];
    let s = Builder::default().project(p).start().await;
    let (st, b) = s
        .call(
            "signUp",
            "pk",
            json!({"email": "e@example.com", "password": "secret1"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_enumeration_protected(&s, "pk").await;
}

#[tokio::test]
async fn enumeration_protection_can_be_turned_off_and_development_keeps_the_emulators_default() {
    let mut off = ProjectConfig::production("demo-project");
    off.api_keys = vec!["pk".into()];
    off.settings
        .email_privacy_config
        .enable_improved_email_privacy = false;
    for (s, key) in [
        (Builder::default().project(off).start().await, "pk"),
        (Server::dev().await, "k"),
    ] {
        let (st, b) = s
            .call(
                "signInWithPassword",
                key,
                json!({"email": "nobody@example.com", "password": "wrong-one"}),
            )
            .await;
        assert_eq!((st, message(&b).as_str()), (400, "EMAIL_NOT_FOUND"));
        let (_, b) = s
            .call(
                "createAuthUri",
                key,
                json!({"identifier": "nobody@example.com", "continueUri": "http://localhost"}),
            )
            .await;
        assert_eq!(b["registered"], false, "{b}");
    }
}

#[tokio::test]
async fn passwords_and_tokens_never_reach_the_logs() {
    let (captured, _guard) = common::capture_logs(tracing::Level::TRACE);

    let s = Server::dev().await;
    let b = s.sign_up("log@example.com", "hunter2-password").await;
    let id_token = b["idToken"].as_str().unwrap().to_owned();
    let refresh = b["refreshToken"].as_str().unwrap().to_owned();
    s.refresh("secret-api-key-123", &refresh).await;
    s.call(
        "signInWithPassword",
        "secret-api-key-123",
        json!({"email": "log@example.com", "password": "wrong-password-x"}),
    )
    .await;
    s.call("lookup", "k", json!({"idToken": id_token})).await;
    let (_, sent) = s
        .admin("demo-project", "/accounts:sendOobCode", "owner", json!({"requestType": "PASSWORD_RESET", "email": "log@example.com", "returnOobLink": true}))
        .await;
    let code = sent["oobCode"].as_str().unwrap().to_owned();

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("request"), "the access log ran: {text}");
    for secret in [
        "hunter2-password",
        "wrong-password-x",
        id_token.as_str(),
        refresh.as_str(),
        "secret-api-key-123",
        code.as_str(),
    ] {
        assert!(!text.contains(secret), "log leaked {secret}");
    }
}
