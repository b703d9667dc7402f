//! Abuse protection: rate limits, e-mail enumeration protection, and no secrets in logs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Builder, Server, message};
use gatehouse_identity::RateLimits;
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
    for body in [
        json!({"email": "e@example.com", "password": "wrong-one"}),
        json!({"email": "nobody@example.com", "password": "wrong-one"}),
    ] {
        let (st, b) = s.call("signInWithPassword", "k", body).await;
        assert_eq!(
            (st, message(&b).as_str()),
            (400, "INVALID_LOGIN_CREDENTIALS")
        );
    }
    let (st, b) = s
        .call(
            "sendOobCode",
            "k",
            json!({"requestType": "PASSWORD_RESET", "email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (_, b) = s
        .call(
            "createAuthUri",
            "k",
            json!({"identifier": "e@example.com", "continueUri": "http://localhost"}),
        )
        .await;
    assert!(
        b.get("registered").is_none() && b["sessionId"].is_string(),
        "{b}"
    );
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn passwords_and_tokens_never_reach_the_logs() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

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
