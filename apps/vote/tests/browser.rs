//! The browser end-to-end test: Debian's Chromium, driven by playwright-core
//! (`tests/browser/vote.e2e.mjs`), against the vote app on SQLite and the identity server's
//! hosted sign-in page — sign up in the popup, vote, see the tally and the recent votes
//! change, sign out; sign in by redirect; refresh the token; an unlisted origin refused; and
//! federated sign-in through the page's provider button at an upstream oidc-provider.
//! Screenshots land in `target/browser-artifacts/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use gatehouse_testkit::{run_in_chromium, temp_dir, workspace_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_vote_and_sign_out_in_chromium() {
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
    let artifacts = workspace_root().join("target/browser-artifacts");
    run_in_chromium(
        "tests/browser/vote.e2e.mjs",
        &[
            ("VOTE_URL", &format!("{}/", vote.url)),
            ("ARTIFACTS", &artifacts.display().to_string()),
            ("OIDC_PROVIDER_ID", "oidc.corp"),
        ],
        &["PASS A", "PASS B", "PASS C", "PASS D", "PASS E"],
    )
    .await
    .unwrap();
    assert!(artifacts.join("vote.png").is_file());
}
