//! The browser end-to-end test: Debian's Chromium, driven by playwright-core
//! (`tests/browser/vote.e2e.mjs`), against the vote app on SQLite and the identity server's
//! hosted sign-in page — sign up in the popup, vote, see the tally and the recent votes
//! change, sign out; sign in by redirect; refresh the token; an unlisted origin refused; and
//! federated sign-in through the page's provider button at an upstream oidc-provider.
//! Screenshots land in `target/browser-artifacts/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use common::*;
use gatehouse_testkit::temp_dir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_vote_and_sign_out_in_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("tests/browser/vote.e2e.mjs");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).is_file(),
        "Chromium is required at {chromium}: apt-get install -y chromium"
    );
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "playwright-core is required: run tests/browser/setup.sh"
    );
    // The identity server with `oidc.corp`, an upstream oidc-provider, for scenario E.
    let idp = identity_with(true).await;
    let dir = temp_dir("vote-browser").unwrap();
    let vote = spawn_vote(&[
        (
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("votes.db").display()),
        ),
        ("GOOGLE_CLOUD_PROJECT", PROJECT.to_owned()),
        ("GATEHOUSE_IDENTITY_URL", idp.url.clone()),
        ("API_KEY", API_KEY.to_owned()),
    ])
    .await;
    let artifacts = root.join("target/browser-artifacts");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .env("VOTE_URL", format!("{}/", vote.url))
        .env("CHROMIUM", &chromium)
        .env("ARTIFACTS", &artifacts)
        .env("OIDC_PROVIDER_ID", "oidc.corp")
        .kill_on_drop(true)
        .output()
        .await
        .expect("node is required: apt-get install -y nodejs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser test failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for scenario in ["PASS A", "PASS B", "PASS C", "PASS D", "PASS E"] {
        assert!(stdout.contains(scenario), "{scenario} missing:\n{stdout}");
    }
    assert!(artifacts.join("vote.png").is_file());
}
