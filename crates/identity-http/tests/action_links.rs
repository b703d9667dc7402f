//! Attacks on e-mailed action links (issue 14, hole 3): an attacker asks for a code for the
//! victim's address with a `continueUrl` of their own, hoping the action page hands the live
//! code to them when the victim clicks the link. `sendOobCode` refuses such a `continueUrl`
//! (`UNAUTHORIZED_DOMAIN`, as Firebase), and the action page checks the code before it sends
//! anyone anywhere, and then only to an authorized domain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Server, message};
use serde_json::{Value, json};

const UNAUTHORIZED: &str = "UNAUTHORIZED_DOMAIN : Domain not allowlisted by project";

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A live code and its e-mailed link, through the admin API (`returnOobLink`).
async fn live_link(s: &Server, mut body: Value) -> (String, url::Url) {
    body["returnOobLink"] = json!(true);
    let (st, b) = s
        .admin("demo-project", "/accounts:sendOobCode", "owner", body)
        .await;
    assert_eq!(st, 200, "{b}");
    (
        b["oobCode"].as_str().unwrap().to_owned(),
        url::Url::parse(b["oobLink"].as_str().unwrap()).unwrap(),
    )
}

/// `link` with its `continueUrl` replaced (the link's query is not signed).
fn with_continue(link: &url::Url, continue_url: &str) -> String {
    let mut out = link.clone();
    let pairs: Vec<(String, String)> = link
        .query_pairs()
        .filter(|(k, _)| k != "continueUrl")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    out.query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair("continueUrl", continue_url);
    out.to_string()
}

#[tokio::test]
async fn send_oob_code_refuses_a_continue_url_off_the_authorized_domains() {
    let s = Server::dev().await;
    let victim = s.sign_up("victim@example.com", "secret1").await;
    let id_token = victim["idToken"].as_str().unwrap();
    let requests = [
        json!({"requestType": "EMAIL_SIGNIN", "email": "victim@example.com"}),
        json!({"requestType": "PASSWORD_RESET", "email": "victim@example.com"}),
        json!({"requestType": "VERIFY_EMAIL", "idToken": id_token}),
        json!({"requestType": "VERIFY_AND_CHANGE_EMAIL", "idToken": id_token, "newEmail": "new@example.com"}),
    ];
    let evil = [
        ("https://evil.example/steal", UNAUTHORIZED),
        ("https://localhost.evil.example/", UNAUTHORIZED),
        ("https://evil.example\\@localhost/", UNAUTHORIZED),
        ("https://localhost@evil.example/", UNAUTHORIZED),
        ("http://127.0.0.1:8080/", UNAUTHORIZED),
        (
            "javascript:alert(document.domain)//localhost",
            "INVALID_CONTINUE_URI",
        ),
        ("data:text/html,hi", "INVALID_CONTINUE_URI"),
        ("not a url", "INVALID_CONTINUE_URI"),
    ];
    for request in &requests {
        for (url, want) in evil {
            let mut body = request.clone();
            body["continueUrl"] = json!(url);
            let (st, b) = s.call("sendOobCode", "k", body.clone()).await;
            assert_eq!((st, message(&b).as_str()), (400, want), "{body}");
            // Admin callers too (the Admin SDK's generate*Link).
            body["returnOobLink"] = json!(true);
            let (st, b) = s
                .admin(
                    "demo-project",
                    "/accounts:sendOobCode",
                    "owner",
                    body.clone(),
                )
                .await;
            assert_eq!((st, message(&b).as_str()), (400, want), "admin {body}");
        }
    }
    // Firebase's default authorized domains: localhost and the project's hosting domains.
    for request in &requests[..3] {
        for url in [
            "http://localhost:3000/finish?x=1",
            "https://app.demo-project.web.app/",
        ] {
            let mut body = request.clone();
            body["continueUrl"] = json!(url);
            let (st, b) = s.call("sendOobCode", "k", body.clone()).await;
            assert_eq!(st, 200, "{body}: {b}");
        }
    }
    // Nothing was e-mailed or stored for the refused requests.
    for code in s.dev_oob_codes().await {
        let link = code["oobLink"].as_str().unwrap();
        assert!(
            !link.contains("evil") && !link.contains("javascript"),
            "{link}"
        );
    }
}

#[tokio::test]
async fn the_action_page_checks_the_code_before_it_redirects() {
    let s = Server::dev().await;
    let http = no_redirects();
    // A made-up code with the attacker's continueUrl: an error page, no redirect.
    for mode in [
        "signIn",
        "resetPassword",
        "verifyEmail",
        "verifyAndChangeEmail",
        "nonsense",
    ] {
        let res = http
            .get(format!(
                "{}/__/auth/action?mode={mode}&oobCode=made-up&apiKey=k&continueUrl=https%3A%2F%2Fevil.example%2Fsteal",
                s.url
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 400, "{mode}");
        assert!(res.headers().get("location").is_none(), "{mode}");
        assert!(
            !res.text().await.unwrap().contains("evil.example"),
            "{mode}"
        );
    }

    // A live sign-in code whose link was edited to point elsewhere: never handed over.
    let (code, link) = live_link(
        &s,
        json!({"requestType": "EMAIL_SIGNIN", "email": "victim@example.com", "continueUrl": "http://localhost:3000/finish"}),
    )
    .await;
    for evil in [
        "https://evil.example/steal",
        "javascript:alert(1)",
        "https://localhost.evil.example/",
    ] {
        let res = http.get(with_continue(&link, evil)).send().await.unwrap();
        let location = res.headers().get("location").cloned();
        let html = res.text().await.unwrap();
        assert!(location.is_none(), "{evil}: redirected to {location:?}");
        assert!(!html.contains(&code), "{evil}: the page shows the code");
    }
    // A password-reset code is not a sign-in code: no redirect either.
    s.sign_up("victim@example.com", "secret1").await;
    let (other, reset_link) = live_link(
        &s,
        json!({"requestType": "PASSWORD_RESET", "email": "victim@example.com"}),
    )
    .await;
    let mut forged = reset_link.clone();
    forged
        .query_pairs_mut()
        .append_pair("continueUrl", "http://localhost:3000/finish");
    let forged = forged
        .to_string()
        .replace("mode=resetPassword", "mode=signIn");
    let res = http.get(forged).send().await.unwrap();
    assert!(res.headers().get("location").is_none());
    assert!(!res.text().await.unwrap().contains(&other));

    // The genuine link: to the app's own handler, with the code, and the code still works there.
    let res = http.get(link.as_str()).send().await.unwrap();
    assert!(res.status().is_redirection(), "{}", res.status());
    let to = url::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(to.origin().ascii_serialization(), "http://localhost:3000");
    assert_eq!(to.path(), "/finish");
    assert!(
        to.query_pairs()
            .any(|(k, v)| k == "oobCode" && v == code.as_str())
    );
    let (st, b) = s
        .call(
            "signInWithEmailLink",
            "k",
            json!({"email": "victim@example.com", "oobCode": code}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
}

#[tokio::test]
async fn after_verifying_the_page_links_on_only_to_an_authorized_domain() {
    let s = Server::dev().await;
    let http = no_redirects();
    let b = s.sign_up("v@example.com", "secret1").await;
    let (_, link) = live_link(
        &s,
        json!({"requestType": "VERIFY_EMAIL", "email": "v@example.com", "idToken": b["idToken"], "continueUrl": "http://localhost:3000/verified"}),
    )
    .await;
    let res = http.get(link.as_str()).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("verified"), "{html}");
    assert!(
        html.contains("href=\"http://localhost:3000/verified\""),
        "a Continue link, as Firebase shows: {html}"
    );

    let b = s.sign_up("w@example.com", "secret1").await;
    let (_, link) = live_link(
        &s,
        json!({"requestType": "VERIFY_EMAIL", "email": "w@example.com", "idToken": b["idToken"]}),
    )
    .await;
    let res = http
        .get(with_continue(&link, "https://evil.example/phish"))
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("location").is_none());
    let html = res.text().await.unwrap();
    assert!(html.contains("verified"), "the code itself is fine: {html}");
    assert!(!html.contains("evil.example"), "{html}");
}
