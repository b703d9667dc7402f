//! The hosted sign-in page and its client: served only for an origin on the project's
//! authorized domains (a refusal is a visible error), redirect targets on that origin, the
//! configuration escaped into the page, and the authorized-domains setting itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Builder, Server};
use gatehouse_identity::ProjectConfig;
use serde_json::{Value, json};

/// `GET /v1/projects` as the Firebase JS SDK calls it.
async fn get_projects(s: &Server) -> Value {
    let res = s
        .http
        .get(format!(
            "{}/identitytoolkit.googleapis.com/v1/projects?key=k",
            s.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn server() -> Server {
    Builder::default()
        .project(ProjectConfig::development("demo-project"))
        .start()
        .await
}

async fn signin(s: &Server, query: &str) -> (u16, String, reqwest::header::HeaderMap) {
    auth_page(s, &format!("signin?{query}")).await
}

/// `GET /__/auth/<page>`: status, body and headers.
async fn auth_page(s: &Server, page: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let res = s
        .http
        .get(format!("{}/__/auth/{page}", s.url))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, res.text().await.unwrap(), headers)
}

/// The configuration the server put into the page.
fn config(html: &str) -> Value {
    let start = html.find("const CONFIG = ").expect("the config script") + "const CONFIG = ".len();
    let end = start + html[start..].find(";\n").unwrap();
    serde_json::from_str(&html[start..end]).unwrap()
}

#[tokio::test]
async fn only_authorized_origins_get_the_page() {
    let s = server().await;
    // Firebase's defaults: localhost and the project's hosting domains.
    let (status, html, headers) =
        signin(&s, "apiKey=k&mode=popup&origin=http://localhost:5000").await;
    assert_eq!(status, 200);
    let c = config(&html);
    assert_eq!(c["origin"], "http://localhost:5000");
    assert_eq!(c["mode"], "popup");
    assert_eq!(c["projectId"], "demo-project");
    assert_eq!(c["error"], Value::Null);
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["content-security-policy"], "frame-ancestors 'none'");
    let (status, _, _) = signin(&s, "apiKey=k&origin=https://app.demo-project.web.app").await;
    assert_eq!(status, 200, "subdomains of an authorized domain");

    for (query, why) in [
        ("apiKey=k&origin=https://evil.example", "not authorized"),
        ("apiKey=k&origin=http://127.0.0.1:8080", "not authorized"),
        (
            "apiKey=k&origin=https://localhost.evil.example",
            "not authorized",
        ),
        (
            "apiKey=k&origin=javascript:alert(1)",
            "not an http(s) origin",
        ),
        ("apiKey=k", "without the origin"),
        ("origin=http://localhost", "without an API key"),
        (
            "apiKey=k&mode=redirect&origin=http://localhost",
            "redirectUrl",
        ),
        (
            "apiKey=k&mode=redirect&origin=http://localhost&redirectUrl=https://evil.example/",
            "must be on the page's origin",
        ),
        (
            "apiKey=k&mode=sideways&origin=http://localhost",
            "Unknown sign-in mode",
        ),
    ] {
        let (status, html, _) = signin(&s, query).await;
        assert!(status == 403 || status == 400, "{query}: {status}");
        let c = config(&html);
        assert!(
            c["error"].as_str().is_some_and(|e| e.contains(why)),
            "{query}: {c}"
        );
        assert_eq!(c.get("apiKey"), None, "a refusal carries nothing else");
    }

    // Redirect mode on the same origin.
    let (status, html, _) = signin(
        &s,
        "apiKey=k&mode=redirect&origin=http://localhost:5000&redirectUrl=http%3A%2F%2Flocalhost%3A5000%2Fvote%3Fa%3D1&nonce=n0nce-from-the-app-123",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        config(&html)["redirectUrl"],
        "http://localhost:5000/vote?a=1"
    );

    // Nothing from the query can end the script element.
    let (_, html, _) = signin(
        &s,
        "apiKey=k&origin=http://localhost&providerId=%3C/script%3E%3Cscript%3Ealert(1)%3C/script%3E",
    )
    .await;
    assert!(!html.contains("</script><script>alert(1)"));
    assert_eq!(
        config(&html)["providerId"],
        "</script><script>alert(1)</script>"
    );
}

#[tokio::test]
async fn authorized_domains_are_a_project_setting() {
    let s = server().await;
    let body = get_projects(&s).await;
    assert_eq!(
        body["authorizedDomains"],
        json!([
            "localhost",
            "demo-project.firebaseapp.com",
            "demo-project.web.app"
        ])
    );
    let res = s
        .http
        .patch(format!(
            "{}/emulator/v1/projects/demo-project/config",
            s.url
        ))
        .json(&json!({"authorizedDomains": ["127.0.0.1", "votes.example.com"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = get_projects(&s).await;
    assert_eq!(
        body["authorizedDomains"],
        json!(["127.0.0.1", "votes.example.com"])
    );
    assert_eq!(
        signin(&s, "apiKey=k&origin=http://127.0.0.1:8080").await.0,
        200
    );
    assert_eq!(
        signin(&s, "apiKey=k&origin=https://eu.votes.example.com")
            .await
            .0,
        200
    );
    assert_eq!(signin(&s, "apiKey=k&origin=http://localhost").await.0, 403);
    // An IP address matches only itself.
    assert_eq!(
        signin(&s, "apiKey=k&origin=http://10.127.0.0.1").await.0,
        403
    );

    let res = s
        .http
        .get(format!("{}/__/auth/client.js", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/javascript")
    );
    assert!(res.text().await.unwrap().contains("GatehouseAuth"));
}

/// Issue 14, hole 16 (login CSRF), the server's half: the page hands a redirect result back
/// only with the nonce of the page that started the redirect, so the client can tell a result
/// it asked for from one an attacker planted in a link.
#[tokio::test]
async fn redirect_sign_in_needs_the_starting_pages_nonce_and_echoes_it() {
    let mut p = ProjectConfig::development("demo-project");
    p.providers.push(gatehouse_identity::IdpConfig::oidc(
        "corp",
        "https://op.example",
        "client",
        secrecy::SecretString::from("secret"),
    ));
    let s = Builder::default().project(p).start().await;
    let redirect = "apiKey=k&mode=redirect&origin=http://localhost:5000&redirectUrl=http%3A%2F%2Flocalhost%3A5000%2Fapp";
    for (path, extra) in [
        ("signin", ""),
        ("signin", "&nonce="),
        ("signin", "&nonce=short"),
        (
            "signin",
            "&nonce=%3Cscript%3Ealert(1)%3C%2Fscript%3Exxxxxxxx",
        ),
        ("federated/start", "&providerId=oidc.corp"),
    ] {
        let (status, html, _) = auth_page(&s, &format!("{path}?{redirect}{extra}")).await;
        assert_eq!(status, 400, "{path}{extra}");
        let c = config(&html);
        assert!(
            c["error"].as_str().is_some_and(|e| e.contains("nonce")),
            "{path}{extra}: {c}"
        );
    }

    let nonce = "Yq3-_vJc8kQ2xN5tW7zA9b";
    let (status, html, _) = signin(&s, &format!("{redirect}&nonce={nonce}")).await;
    assert_eq!(status, 200, "{html}");
    let c = config(&html);
    assert_eq!(c["nonce"], nonce);
    // The provider buttons carry it on through the provider's round trip.
    let start = c["providers"][0]["startUrl"].as_str().unwrap();
    assert!(start.contains(&format!("nonce={nonce}")), "{start}");

    // Popups answer by postMessage to the opener's origin and need none.
    let (status, _, _) = signin(&s, "apiKey=k&mode=popup&origin=http://localhost:5000").await;
    assert_eq!(status, 200);
}
