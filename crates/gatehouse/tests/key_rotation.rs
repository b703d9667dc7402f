//! Issue #16, scenario 3: signing-key rotation under load, revocation, and an identity outage,
//! across the three verifiers: the gateway (its JWKS cache), the vote app (`gatehouse-verify`)
//! and the identity server itself. Real `gatehouse` processes on 127.0.0.1; times compressed
//! with options an operator can set: `--key-rotation-secs 8` (the published keys' max-age is
//! then 1 s and the servers re-read their keys every second).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use gatehouse_testkit::{FetchJson, Spawned, temp_dir};
use serde_json::{Value, json};

const PROJECT: &str = "rot-proj";
const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
const X509: &str = "/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com";

fn identity(data_dir: &Path, listen: &str) -> Spawned {
    let args: Vec<String> = [
        "identity",
        "--project",
        PROJECT,
        "--listen",
        listen,
        "--rate-limits",
        "off",
        "--key-rotation-secs",
        "8",
        "--data-dir",
    ]
    .map(str::to_owned)
    .into_iter()
    .chain([data_dir.display().to_string()])
    .collect();
    Spawned::start(Path::new(BIN), &args).expect("gatehouse identity starts")
}

/// `gatehouse gateway` in front of the vote app, verifying the identity server's tokens.
fn gateway(dir: &Path, identity: &str, backend: &str) -> Spawned {
    let config = dir.join("openapi.yaml");
    std::fs::write(
        &config,
        format!(
            r#"swagger: "2.0"
info: {{title: vote, version: 1.0.0}}
host: vote.example
x-google-backend:
  address: {backend}
securityDefinitions:
  firebase:
    type: oauth2
    flow: implicit
    authorizationUrl: ""
    x-google-issuer: "https://securetoken.google.com/{PROJECT}"
    x-google-jwks_uri: "{identity}{X509}"
    x-google-audiences: "{PROJECT}"
security:
  - firebase: []
paths:
  /:
    get:
      operationId: page
"#
        ),
    )
    .unwrap();
    let args: Vec<String> = [
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--watch-secs",
        "0",
        "--config",
    ]
    .map(str::to_owned)
    .into_iter()
    .chain([config.display().to_string()])
    .collect();
    Spawned::start(Path::new(BIN), &args).expect("gatehouse gateway starts")
}

/// `gatehouse apps vote` on SQLite, verifying tokens with the identity server's keys.
struct Vote {
    child: Child,
    url: String,
}

impl Drop for Vote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vote(dir: &Path, identity: &str) -> Vote {
    let port = gatehouse_testkit::free_port().unwrap();
    let child = Command::new(BIN)
        .args(["apps", "vote"])
        .env("PORT", port.to_string())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("votes.db").display()),
        )
        .env("GOOGLE_CLOUD_PROJECT", PROJECT)
        .env("GATEHOUSE_IDENTITY_URL", identity)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "vote did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Vote { child, url }
}

struct Stack {
    dir: PathBuf,
    _tmp: gatehouse_testkit::TempDir,
    identity: Spawned,
    vote: Vote,
    gateway: Spawned,
    http: reqwest::Client,
}

fn stack(prefix: &str) -> Stack {
    let tmp = temp_dir(prefix).unwrap();
    let dir = tmp.path().to_path_buf();
    let identity = identity(&dir.join("identity"), "127.0.0.1:0");
    let vote = vote(&dir, &identity.url());
    let gateway = gateway(&dir, &identity.url(), &vote.url);
    Stack {
        dir,
        _tmp: tmp,
        identity,
        vote,
        gateway,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    }
}

/// A new user's (ID token, refresh token).
async fn sign_up(http: &reqwest::Client, identity: &str, email: &str) -> (String, String) {
    let res = http
        .post(format!(
            "{identity}/identitytoolkit.googleapis.com/v1/accounts:signUp?key=k"
        ))
        .json(&json!({"email": email, "password": "correct-horse-9", "returnSecureToken": true}))
        .fetch_json()
        .await
        .unwrap();
    (
        res["idToken"].as_str().unwrap().to_owned(),
        res["refreshToken"].as_str().unwrap().to_owned(),
    )
}

/// A new ID token from a refresh token (signed by the current key).
async fn refresh(http: &reqwest::Client, identity: &str, rt: &str) -> Result<String, String> {
    let res = http
        .post(format!(
            "{identity}/securetoken.googleapis.com/v1/token?key=k"
        ))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", rt)])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status();
    let body: Value = res.json().await.map_err(|e| e.to_string())?;
    match body["id_token"].as_str() {
        Some(t) if status.is_success() => Ok(t.to_owned()),
        _ => Err(format!("refresh: {status} {body}")),
    }
}

fn kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The three verifiers' answers for `token`: gateway, vote app, identity (accounts:lookup).
async fn verify_everywhere(s: &StackUrls, http: &reqwest::Client, token: &str) -> [u16; 3] {
    let status =
        |r: Result<reqwest::Response, reqwest::Error>| r.map(|r| r.status().as_u16()).unwrap_or(0);
    let gw = http
        .get(format!("{}/", s.gateway))
        .bearer_auth(token)
        .send()
        .await;
    let vote = http
        .post(format!("{}/", s.vote))
        .bearer_auth(token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("team=DOGS")
        .send()
        .await;
    let lookup = http
        .post(format!(
            "{}/identitytoolkit.googleapis.com/v1/accounts:lookup?key=k",
            s.identity
        ))
        .json(&json!({"idToken": token}))
        .send()
        .await;
    [status(gw), status(vote), status(lookup)]
}

#[derive(Clone)]
struct StackUrls {
    gateway: String,
    vote: String,
    identity: String,
}

impl Stack {
    fn urls(&self) -> StackUrls {
        StackUrls {
            gateway: self.gateway.url(),
            vote: self.vote.url.clone(),
            identity: self.identity.url(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_fails_no_valid_request_at_gateway_vote_and_identity() {
    let s = stack("keyrot-load");
    let urls = s.urls();
    let (first, _) = sign_up(&s.http, &urls.identity, "first@example.com").await;
    assert_eq!(verify_everywhere(&urls, &s.http, &first).await, [200; 3]);
    let stop = Instant::now() + Duration::from_secs(19);
    let failures = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..4 {
        let (urls, http, failures, first) = (
            urls.clone(),
            s.http.clone(),
            failures.clone(),
            first.clone(),
        );
        tasks.spawn(async move {
            let (mut token, rt) =
                sign_up(&http, &urls.identity, &format!("w{w}@example.com")).await;
            let mut kids = BTreeSet::new();
            let mut n = 0;
            let mut refreshed = Instant::now();
            while Instant::now() < stop {
                if refreshed.elapsed() > Duration::from_millis(700) {
                    token = refresh(&http, &urls.identity, &rt).await.unwrap();
                    refreshed = Instant::now();
                }
                kids.insert(kid(&token));
                // The newest token, and the very first (signed by the first key, which stays
                // published for its lifetime).
                for t in [&token, &first] {
                    let got = verify_everywhere(&urls, &http, t).await;
                    if got != [200; 3] {
                        failures.fetch_add(1, Ordering::SeqCst);
                        eprintln!("kid {}: {got:?}", kid(t));
                    }
                    n += 1;
                }
            }
            (n, kids)
        });
    }
    let mut requests = 0;
    let mut kids = BTreeSet::new();
    while let Some(r) = tasks.join_next().await {
        let (n, k) = r.unwrap();
        requests += n;
        kids.extend(k);
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0, "of {requests} rounds");
    assert!(requests > 40, "{requests}");
    // 19 s with an 8 s period: tokens of at least three keys were used.
    assert!(kids.len() >= 3, "{kids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_verifying_everywhere_within_the_cache_ttl() {
    let s = stack("keyrot-revoke");
    let urls = s.urls();
    let (token, rt) = sign_up(&s.http, &urls.identity, "ada@example.com").await;
    let revoked = kid(&token);
    assert_eq!(verify_everywhere(&urls, &s.http, &token).await, [200; 3]);
    let out = Command::new(BIN)
        .args(["identity", "--data-dir"])
        .arg(s.dir.join("identity"))
        .args(["signing-keys", "revoke", &revoked])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let at = Instant::now();
    let listed = Command::new(BIN)
        .args(["identity", "--data-dir"])
        .arg(s.dir.join("identity"))
        .args(["signing-keys", "list"])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == revoked.as_str())
        .unwrap();
    assert_eq!(row["published"], false, "{row}");
    // Each verifier refuses the token within the servers' key reload (1 s) plus the max-age
    // (1 s), with a second of slack; once refused, it stays refused.
    let mut refused: [Option<Duration>; 3] = [None; 3];
    while at.elapsed() < Duration::from_secs(5) {
        let got = verify_everywhere(&urls, &s.http, &token).await;
        for (i, st) in got.into_iter().enumerate() {
            match (st, refused[i]) {
                (200, None) => {}
                (401 | 400 | 403, None) => refused[i] = Some(at.elapsed()),
                (401 | 400 | 403, Some(_)) => {}
                other => panic!("verifier {i}: {other:?} at {:?}", at.elapsed()),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, r) in refused.iter().enumerate() {
        let r = r.unwrap_or_else(|| panic!("verifier {i} still accepts the revoked key"));
        assert!(
            r <= Duration::from_secs(3),
            "verifier {i} refused after {r:?}"
        );
    }
    // The user signs in again with the next key.
    let next = refresh(&s.http, &urls.identity, &rt).await.unwrap();
    assert_ne!(kid(&next), revoked);
    assert_eq!(verify_everywhere(&urls, &s.http, &next).await, [200; 3]);
    let log = s.identity.log().join("\n");
    assert!(!log.contains(&token), "a token reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_identity_down_the_gateway_and_vote_keep_verifying_past_the_cache_ttl() {
    let s = stack("keyrot-outage");
    let urls = s.urls();
    // Distinct tokens (none is in the gateway's verified-token cache when it is used).
    let mut tokens = Vec::new();
    for i in 0..24 {
        tokens.push(
            sign_up(&s.http, &urls.identity, &format!("u{i}@example.com"))
                .await
                .0,
        );
    }
    assert_eq!(
        verify_everywhere(&urls, &s.http, &tokens[0]).await,
        [200; 3]
    );
    let Stack {
        identity,
        gateway,
        vote,
        http,
        ..
    } = s;
    drop(identity); // SIGKILL
    let down = Instant::now();
    // 8 s: eight times the keys' max-age.
    let mut used = 0;
    for t in &tokens[1..] {
        let gw = http
            .get(format!("{}/", urls.gateway))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        assert_eq!(gw.status(), 200, "gateway at {:?}", down.elapsed());
        let v = http
            .post(format!("{}/", vote.url))
            .bearer_auth(t)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("team=CATS")
            .send()
            .await
            .unwrap();
        assert_eq!(v.status(), 200, "vote at {:?}", down.elapsed());
        used += 1;
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    assert!(
        down.elapsed() > Duration::from_secs(7),
        "{:?}",
        down.elapsed()
    );
    assert_eq!(used, 23);
    // Failed fetches are logged, not once per request.
    let warned = gateway
        .log()
        .iter()
        .filter(|l| l.contains("JWKS fetch failed"))
        .count();
    assert!((1..=2).contains(&warned), "{warned} warnings");
}
