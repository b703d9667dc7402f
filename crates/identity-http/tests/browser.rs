//! Login CSRF against the hosted-page client (issue 14, hole 16), in Debian's Chromium driven
//! by playwright-core (`tests/browser/login_csrf.e2e.mjs`): a link carrying an attacker's
//! sign-in result in its fragment does not sign the victim in, a genuine redirect sign-in
//! still works (once), and a look-alike message from outside the popup is ignored.
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM`) and `tests/browser/setup.sh` run once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Builder;
use gatehouse_identity::ProjectConfig;
use serde_json::json;

/// Serves the app: one page that loads the identity server's client as `window.auth`.
async fn app(identity_url: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>app</title>\
         <script src=\"{identity_url}/__/auth/client.js\"></script></head><body>\
         <script>window.auth = GatehouseAuth.initialize({{ apiKey: 'k', authUrl: '{identity_url}' }});</script>\
         </body></html>"
    );
    let router = axum::Router::new().route(
        "/app",
        axum::routing::get(move || async move { axum::response::Html(html) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/app", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    (url, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_sign_in_result_does_not_sign_the_victim_in() {
    let mut project = ProjectConfig::development("demo-project");
    project.settings.authorized_domains = Some(vec!["127.0.0.1".into()]);
    let s = Builder::default().project(project).start().await;
    let attacker = s.sign_up("attacker@example.com", "attacker-pw-1").await;
    s.sign_up("victim@example.com", "victim-pw-1").await;
    let (app_url, _stop) = app(&s.url).await;
    let planted = json!({
        "idToken": attacker["idToken"],
        "refreshToken": attacker["refreshToken"],
        "expiresIn": "3600",
        "localId": attacker["localId"],
        "email": "attacker@example.com",
        "isNewUser": false,
    });

    gatehouse_testkit::run_in_chromium(
        "crates/identity-http/tests/browser/login_csrf.e2e.mjs",
        &[
            ("APP_URL", &app_url),
            ("ATTACKER_RESULT", &planted.to_string()),
            ("VICTIM_EMAIL", "victim@example.com"),
            ("VICTIM_PASSWORD", "victim-pw-1"),
        ],
        &["PASS forged", "PASS genuine", "PASS popup"],
    )
    .await
    .unwrap();
}
