//! The vote app end to end: the sample's tests against the real binary on SQLite, its
//! configuration errors and log shape, a graceful SIGTERM, and — under the runner — on a
//! managed PostgreSQL instance over the Cloud SQL unix socket with its credentials from
//! Secret Manager.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use gatehouse_testkit::temp_dir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_tests_on_sqlite_with_logs_and_graceful_stop() {
    let idp = identity().await;
    let dir = temp_dir("vote-sqlite").unwrap();
    let db = dir.path().join("votes.db");
    let env = [
        ("DATABASE_URL", format!("sqlite://{}", db.display())),
        ("GOOGLE_CLOUD_PROJECT", PROJECT.to_owned()),
        ("GATEHOUSE_IDENTITY_URL", idp.url.clone()),
        ("API_KEY", API_KEY.to_owned()),
    ];
    let mut vote = spawn_vote(&env).await;
    sample_tests(&vote.url, &idp, "sqlite-voter@example.com").await;

    // One JSON line per entry, the trace from X-Cloud-Trace-Context with the project.
    let inserted = vote.wait_for(|e| e["message"] == "vote_inserted").await;
    assert_eq!(inserted["severity"], "INFO");
    assert_eq!(
        inserted["logging.googleapis.com/trace"],
        format!("projects/{PROJECT}/traces/trace0123")
    );
    assert_eq!(inserted["vote"]["candidate"], "DOGS");
    assert!(inserted["timestamp"].as_str().unwrap().ends_with('Z'));
    let refused = vote
        .wait_for(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Error with authentication: "))
        })
        .await;
    assert_eq!(refused["severity"], "ERROR");

    // The page's client configuration and script.
    let config = reqwest::get(format!("{}/config.js", vote.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        config.contains(&format!("\"authUrl\":\"{}\"", idp.url)),
        "{config}"
    );
    assert!(config.contains(&format!("\"apiKey\":\"{API_KEY}\"")));
    let html = page(&vote.url).await;
    assert!(html.contains(&format!(
        "<script src=\"{}/__/auth/client.js\"></script>",
        idp.url
    )));
    let res = reqwest::Client::new()
        .put(format!("{}/", vote.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("Cannot PUT /"));

    // A token of another project is refused.
    let other = id_token_with(&idp, "elsewhere@example.com", OTHER_API_KEY).await;
    let claims = gatehouse_tokens_claims(&other);
    assert_eq!(
        claims["aud"], OTHER_PROJECT,
        "the token really is another project's"
    );
    let a = post(
        &vote.url,
        Some(&format!("Bearer {other}")),
        "team=CATS",
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_eq!(a.status, 403);

    // The votes survive a restart (the tally is kept in the file, not recounted).
    let pid = nix::unistd::Pid::from_raw(vote.child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), vote.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "SIGTERM ends the process cleanly: {status}"
    );
    let messages: Vec<String> = vote
        .entries()
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect();
    assert!(messages.contains(&"vote: received SIGTERM".to_owned()));
    assert_eq!(
        messages.last().map(String::as_str),
        Some("DB connection closed.")
    );
    let again = spawn_vote(&env).await;
    let html = page(&again.url).await;
    assert!(html.contains("DOGS are winning by 4 votes."), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_have_the_sample_messages() {
    // No credentials at all: it still listens; each request is a 500 with the sample's text.
    let vote = spawn_vote(&[("GOOGLE_CLOUD_PROJECT", PROJECT.to_owned())]).await;
    vote.wait_for(|e| {
        e["message"].as_str().is_some_and(|m| {
            m.starts_with("Error while connecting to the Cloud SQL database.")
                && m.ends_with("DB_USER needs to be set.")
        })
    })
    .await;
    let res = reqwest::get(format!("{}/", vote.url)).await.unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(
        res.text().await.unwrap(),
        "Unable to load page; see logs for more details."
    );
    vote.wait_for(|e| {
        e["message"] == "Error when querying the Cloud SQL database: DB_USER needs to be set."
    })
    .await;

    let vote = spawn_vote(&[("CLOUD_SQL_CREDENTIALS_SECRET", "{not json".to_owned())]).await;
    vote.wait_for(|e| {
        e["message"].as_str().is_some_and(|m| {
            m.contains("Unable to parse secret from Secret Manager. Make sure that the secret is JSON formatted: ")
        })
    })
    .await;
    // Without a project id no token can verify: 403, as the sample answers.
    let idp = identity().await;
    let token = id_token(&idp, "no-project@example.com").await;
    let a = post(
        &vote.url,
        Some(&format!("Bearer {token}")),
        "team=CATS",
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_eq!(a.status, 403);
}

/// A JWT's payload, unverified.
fn gatehouse_tokens_claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// As the seed deploys it: a service under the runner with its own account, its database
/// credentials in a secret only that account may read (`CLOUD_SQL_CREDENTIALS_SECRET`), its
/// votes on a managed PostgreSQL instance over the Cloud SQL unix socket (`DB_SOCKET_PATH`),
/// and its project id from the metadata server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_runner_on_managed_postgres_with_the_credentials_secret() {
    let idp = identity().await;
    let (world, service) = on_managed_postgres(&idp).await;
    let runner = &world.runner;
    sample_tests(&service.url, &idp, "pg-voter@example.com").await;

    // The app's JSON lines reached the service log as structured entries, with the trace
    // under the project the metadata server named.
    let data_root = runner.config().data_root.clone();
    let mut found = None;
    for _ in 0..100 {
        let lines = gatehouse_run::logs::tail(&data_root, "idp-sql", 10_000).unwrap();
        found = lines
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|e| e["message"] == "vote_inserted");
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let entry = found.expect("a vote_inserted entry in the service log");
    assert_eq!(entry["severity"], "INFO");
    assert_eq!(
        entry["trace"],
        format!("projects/{PROJECT}/traces/trace0123")
    );
    assert_eq!(entry["jsonPayload"]["vote"]["candidate"], "DOGS");
    runner.shutdown().await;
}
