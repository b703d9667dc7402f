//! CORS (issue 14, hole 11). A production server answers cross-origin calls only from pages on
//! an authorized domain of one of its projects, and never with credentials: a page elsewhere
//! cannot read what the API answers (a password check, a lookup, a token). A development
//! server keeps the emulator's openness, and says so at start when it listens beyond loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Builder, Server};
use gatehouse_identity::ProjectConfig;
use reqwest::Method;
use reqwest::header::HeaderMap;

const SIGN_UP: &str = "/identitytoolkit.googleapis.com/v1/accounts:signUp?key=pk";

fn production(domains: Option<Vec<&str>>) -> ProjectConfig {
    let mut p = ProjectConfig::production("demo-project");
    p.api_keys = vec!["pk".into()];
    p.settings.authorized_domains = domains.map(|d| d.into_iter().map(str::to_owned).collect());
    p
}

/// A preflight and then the real call, from a page at `origin`: the headers of each answer.
async fn from_origin(s: &Server, origin: &str) -> (HeaderMap, HeaderMap) {
    let preflight = s
        .http
        .request(Method::OPTIONS, format!("{}{SIGN_UP}", s.url))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-client-version",
        )
        .header("access-control-request-private-network", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 204);
    let call = s
        .http
        .post(format!("{}{SIGN_UP}", s.url))
        .header("origin", origin)
        .json(&serde_json::json!({"returnSecureToken": true}))
        .send()
        .await
        .unwrap();
    (preflight.headers().clone(), call.headers().clone())
}

fn varies_by_origin(h: &HeaderMap) -> bool {
    h.get_all("vary")
        .iter()
        .any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("origin"))
}

#[tokio::test]
async fn production_answers_no_foreign_origin() {
    let s = Builder::default().project(production(None)).start().await;
    for evil in [
        "https://evil.example",
        "https://localhost.evil.example",
        "https://demo-project.web.app.evil.example",
        "null",
        "file://",
        "http://127.0.0.1:8080",
    ] {
        let (preflight, call) = from_origin(&s, evil).await;
        for (what, h) in [("preflight", &preflight), ("call", &call)] {
            assert!(
                h.get("access-control-allow-origin").is_none(),
                "{evil} {what}: {h:?}"
            );
            assert!(
                h.get("access-control-allow-credentials").is_none(),
                "{evil} {what}"
            );
            assert!(
                h.get("access-control-allow-private-network").is_none(),
                "{evil} {what}"
            );
        }
    }
    // Firebase's default authorized domains; the answer varies by origin, and has no credentials.
    for good in [
        "http://localhost:5000",
        "https://demo-project.web.app",
        "https://eu.demo-project.firebaseapp.com",
    ] {
        let (preflight, call) = from_origin(&s, good).await;
        for (what, h) in [("preflight", &preflight), ("call", &call)] {
            assert_eq!(h["access-control-allow-origin"], good, "{good} {what}");
            assert!(
                h.get("access-control-allow-credentials").is_none(),
                "{good} {what}: the API uses no cookies"
            );
            assert!(varies_by_origin(h), "{good} {what}");
        }
        assert_eq!(
            preflight["access-control-allow-headers"],
            "content-type,x-client-version"
        );
    }
}

#[tokio::test]
async fn production_follows_the_configured_authorized_domains() {
    let s = Builder::default()
        .project(production(Some(vec!["votes.example.com", "10.0.0.7"])))
        .start()
        .await;
    let (_, call) = from_origin(&s, "https://eu.votes.example.com").await;
    assert_eq!(
        call["access-control-allow-origin"],
        "https://eu.votes.example.com"
    );
    let (_, call) = from_origin(&s, "http://10.0.0.7:8080").await;
    assert_eq!(call["access-control-allow-origin"], "http://10.0.0.7:8080");
    for refused in ["http://localhost:5000", "https://demo-project.web.app"] {
        let (preflight, call) = from_origin(&s, refused).await;
        assert!(preflight.get("access-control-allow-origin").is_none());
        assert!(call.get("access-control-allow-origin").is_none());
    }
}

#[tokio::test]
async fn development_reflects_any_origin_without_credentials() {
    let s = Server::dev().await;
    for origin in ["http://localhost:5173", "https://anything.example"] {
        let (preflight, call) = from_origin(&s, origin).await;
        for h in [&preflight, &call] {
            assert_eq!(h["access-control-allow-origin"], origin);
            assert!(h.get("access-control-allow-credentials").is_none());
        }
        assert_eq!(
            preflight["access-control-allow-headers"],
            "content-type,x-client-version"
        );
        assert_eq!(preflight["access-control-allow-private-network"], "true");
    }
}

/// What `serve` logs when it starts on `addr` with `project` (and stops at once).
async fn start_log(project: ProjectConfig, addr: &str) -> String {
    let (captured, _guard) = common::capture_logs(tracing::Level::INFO);
    let (identity, _clock, _dir) = Builder::default()
        .project(project)
        .build("http://127.0.0.1:9099")
        .await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    gatehouse_identity_http::serve(identity, listener, async {})
        .await
        .unwrap();
    String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
}

#[tokio::test]
async fn development_beyond_loopback_warns_at_start() {
    let log = start_log(ProjectConfig::development("demo-project"), "0.0.0.0:0").await;
    assert!(
        log.contains("WARN") && log.contains("any web origin"),
        "a loud warning: {log}"
    );
    let log = start_log(ProjectConfig::development("demo-project"), "127.0.0.1:0").await;
    assert!(!log.contains("any web origin"), "{log}");
    let log = start_log(production(None), "0.0.0.0:0").await;
    assert!(!log.contains("any web origin"), "{log}");
}
