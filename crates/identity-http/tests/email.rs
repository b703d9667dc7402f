//! OOB e-mail over SMTP, the hosted action page, and code expiry and single use.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Builder, Server, message};
use gatehouse_identity::{SmtpConfig, SmtpSecurity};
use gatehouse_testkit::SmtpSink;
use serde_json::{Value, json};

fn link_in(mail: &str) -> String {
    // Quoted-printable may soft-wrap long lines; undo that first.
    let text = mail.replace("=\n", "").replace("=3D", "=");
    let start = text.find("http://").unwrap();
    text[start..].split_whitespace().next().unwrap().to_owned()
}

async fn with_smtp() -> (Server, SmtpSink) {
    let sink = SmtpSink::start().await.unwrap();
    let smtp = SmtpConfig {
        host: "127.0.0.1".into(),
        port: sink.port(),
        security: SmtpSecurity::None,
        username: None,
        password: None,
        from: "Gatehouse <noreply@example.com>".into(),
    };
    (
        Builder {
            smtp: Some(smtp),
            ..Builder::default()
        }
        .start()
        .await,
        sink,
    )
}

#[tokio::test]
async fn password_reset_mail_and_form() {
    let (s, sink) = with_smtp().await;
    s.sign_up("reset@example.com", "secret1").await;
    let (st, b) = s
        .call(
            "sendOobCode",
            "k",
            json!({"requestType": "PASSWORD_RESET", "email": "reset@example.com"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert!(
        b.get("oobCode").is_none(),
        "client calls never see the code"
    );
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["reset@example.com".to_owned()]);
    assert!(mails[0].data.contains("Subject: Reset your password"));
    let link = link_in(&mails[0].data);
    assert!(
        link.contains("/__/auth/action?mode=resetPassword&oobCode="),
        "{link}"
    );

    let page = s.http.get(&link).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<form") && html.contains("reset@example.com"));
    let url = url::Url::parse(&link).unwrap();
    let code = url
        .query_pairs()
        .find(|(k, _)| k == "oobCode")
        .unwrap()
        .1
        .into_owned();
    let res = s
        .http
        .post(format!("{}/__/auth/action", s.url))
        .form(&[
            ("oobCode", code.as_str()),
            ("apiKey", "k"),
            ("newPassword", "brand-new-1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.text().await.unwrap().contains("Password changed"));
    let (st, _) = s
        .call(
            "signInWithPassword",
            "k",
            json!({"email": "reset@example.com", "password": "brand-new-1"}),
        )
        .await;
    assert_eq!(st, 200);
    // Single use.
    let (st, b) = s
        .call(
            "resetPassword",
            "k",
            json!({"oobCode": code, "newPassword": "again-123"}),
        )
        .await;
    assert_eq!((st, message(&b).as_str()), (400, "INVALID_OOB_CODE"));
}

#[tokio::test]
async fn verify_email_through_the_action_page() {
    let (s, sink) = with_smtp().await;
    let b = s.sign_up("verify@example.com", "secret1").await;
    let (st, _) = s
        .call(
            "sendOobCode",
            "k",
            json!({"requestType": "VERIFY_EMAIL", "idToken": b["idToken"]}),
        )
        .await;
    assert_eq!(st, 200);
    let link = link_in(&sink.mails()[0].data);
    let res = s.http.get(&link).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.text().await.unwrap().contains("verified"));
    let (_, info) = s
        .call("lookup", "k", json!({"idToken": b["idToken"]}))
        .await;
    assert_eq!(info["users"][0]["emailVerified"], true);
    let again = s.http.get(&link).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 400);
}

#[tokio::test]
async fn codes_expire_after_an_hour() {
    let s = Server::dev().await;
    s.sign_up("exp@example.com", "secret1").await;
    let (_, b) = s
        .admin("demo-project", "/accounts:sendOobCode", "owner", json!({"requestType": "PASSWORD_RESET", "email": "exp@example.com", "returnOobLink": true}))
        .await;
    let code = b["oobCode"].as_str().unwrap().to_owned();
    assert!(b["oobLink"].as_str().unwrap().contains(&code));
    let listed: Value = s
        .get("/emulator/v1/projects/demo-project/oobCodes")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        listed["oobCodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["oobCode"] == code.as_str())
    );
    s.clock.advance(3_601_000);
    let (st, b) = s
        .call(
            "resetPassword",
            "k",
            json!({"oobCode": code, "newPassword": "secret9"}),
        )
        .await;
    assert_eq!((st, message(&b).as_str()), (400, "EXPIRED_OOB_CODE"));
}

#[tokio::test]
async fn email_link_sign_in_creates_verified_account() {
    let s = Server::dev().await;
    let (st, b) = s
        .call("sendOobCode", "k", json!({"requestType": "EMAIL_SIGNIN", "email": "Link@Example.com", "continueUrl": "http://localhost/done"}))
        .await;
    assert_eq!(st, 200, "{b}");
    let listed: Value = s
        .get("/emulator/v1/projects/demo-project/oobCodes")
        .await
        .json()
        .await
        .unwrap();
    let code = listed["oobCodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["email"] == "link@example.com")
        .unwrap()["oobCode"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, b) = s
        .call(
            "signInWithEmailLink",
            "k",
            json!({"email": "link@example.com", "oobCode": code}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["isNewUser"], true);
    let (_, methods) = s
        .call(
            "createAuthUri",
            "k",
            json!({"identifier": "link@example.com", "continueUri": "http://localhost"}),
        )
        .await;
    assert_eq!(methods["signinMethods"], json!(["emailLink"]));
}

#[tokio::test]
async fn verify_and_change_email_and_direct_email_change() {
    let s = Server::dev().await;
    let b = s.sign_up("old@example.com", "secret1").await;
    let token = b["idToken"].as_str().unwrap().to_owned();
    s.sign_up("taken@example.com", "secret1").await;
    let (st, out) = s
        .call("sendOobCode", "k", json!({"requestType": "VERIFY_AND_CHANGE_EMAIL", "idToken": token, "newEmail": "taken@example.com"}))
        .await;
    assert_eq!((st, message(&out).as_str()), (400, "EMAIL_EXISTS"));
    let (st, out) = s
        .call(
            "sendOobCode",
            "k",
            json!({"requestType": 7, "idToken": token, "newEmail": "New@Example.com"}),
        )
        .await;
    assert_eq!(st, 200, "{out}");
    let listed: Value = s
        .get("/emulator/v1/projects/demo-project/oobCodes")
        .await
        .json()
        .await
        .unwrap();
    let entry = listed["oobCodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["newEmail"] == "new@example.com")
        .unwrap()
        .clone();
    assert_eq!(entry["email"], "old@example.com");
    assert_eq!(entry["requestType"], "VERIFY_AND_CHANGE_EMAIL");
    assert!(
        entry["oobLink"]
            .as_str()
            .unwrap()
            .contains("mode=verifyAndChangeEmail")
    );
    s.clock.advance(2000);
    let (st, out) = s
        .call("update", "k", json!({"oobCode": entry["oobCode"]}))
        .await;
    assert_eq!(st, 200, "{out}");
    assert_eq!(out["email"], "new@example.com");
    assert_eq!(out["emailVerified"], true);
    // The change revoked the old session.
    let (st, out) = s.call("lookup", "k", json!({"idToken": token})).await;
    assert_eq!((st, message(&out).as_str()), (400, "TOKEN_EXPIRED"));
    let (st, _) = s
        .call(
            "signInWithPassword",
            "k",
            json!({"email": "new@example.com", "password": "secret1"}),
        )
        .await;
    assert_eq!(st, 200);

    // A direct change through accounts:update returns fresh tokens and resets verification.
    let (_, b) = s
        .call(
            "signInWithPassword",
            "k",
            json!({"email": "new@example.com", "password": "secret1"}),
        )
        .await;
    let (st, out) = s.call("update", "k", json!({"idToken": b["idToken"], "email": "newer@example.com", "returnSecureToken": true})).await;
    assert_eq!(st, 200, "{out}");
    assert_eq!(out["email"], "newer@example.com");
    assert_eq!(out["emailVerified"], false);
    let (st, _) = s
        .call("lookup", "k", json!({"idToken": out["idToken"]}))
        .await;
    assert_eq!(st, 200);
}
