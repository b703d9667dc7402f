//! `gatehouse up` with the demo manifest, end to end: the second seed (a user signs in over
//! REST; the gateway refuses no token with 401, the private backend refuses a direct call with
//! 403, the gateway with the token answers 200 and the backend saw the user's claims), the
//! first seed in Chromium (sign in on the voting page, vote, see the tally), an unchanged
//! manifest planning no changes, an edited OpenAPI file rolling out under a request loop with
//! zero failures, and `gatehouse down`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_testkit::TempDir;
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

struct Up {
    child: Child,
    urls: HashMap<String, String>,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gatehouse(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    c.args(args);
    c
}

/// Starts `up` and reads its URL table.
fn start_up(manifest: &Path, data: &Path) -> Up {
    let mut child = gatehouse(&["up", "-f"])
        .arg(manifest)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with("Ready in") {
                let _ = tx.send(());
            }
            sink.lock().unwrap().push(line);
        }
    });
    rx.recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("up did not get ready: {:#?}", lines.lock().unwrap()));
    let mut urls = HashMap::new();
    for line in lines.lock().unwrap().iter() {
        let cols: Vec<&str> = line
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        if cols.len() >= 2 && cols[1].starts_with("http://") {
            urls.insert(cols[0].to_owned(), cols[1].to_owned());
        }
    }
    Up {
        child,
        urls,
        stdout: lines,
    }
}

/// The demo manifest with ports chosen by the system (tests run side by side).
fn demo_copy(dir: &Path) -> PathBuf {
    let demo = repo_root().join("examples/demo");
    let text = std::fs::read_to_string(demo.join("gatehouse.yaml"))
        .unwrap()
        .replace("port: 9099", "port: 0")
        .replace("port: 8080", "port: 0");
    std::fs::write(dir.join("gatehouse.yaml"), text).unwrap();
    std::fs::copy(demo.join("openapi.yaml"), dir.join("openapi.yaml")).unwrap();
    dir.join("gatehouse.yaml")
}

fn sign_in(identity: &str, email: &str, password: &str) -> String {
    let res: Value = reqwest::blocking::Client::new()
        .post(format!(
            "{identity}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=demo-api-key"
        ))
        .json(&json!({"email": email, "password": password, "returnSecureToken": true}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    res["idToken"]
        .as_str()
        .unwrap_or_else(|| panic!("sign-in failed: {res}"))
        .to_owned()
}

#[test]
fn the_demo_walks_both_seeds() {
    let dir = TempDir::new("up-demo").unwrap();
    let manifest = demo_copy(dir.path());
    let data = dir.path().join("data");
    let dry = gatehouse(&["up", "--dry-run", "-f"])
        .arg(&manifest)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(dry.status.success());
    let plan = String::from_utf8_lossy(&dry.stdout);
    assert!(
        plan.contains("+ create service vote") && plan.contains("+ create gateway api-gateway"),
        "{plan}"
    );

    let up = start_up(&manifest, &data);
    let identity = up.urls["identity"].clone();
    let gateway = up.urls["gateway api-gateway"].clone();
    let hello = up.urls["service hello"].clone();
    let vote = up.urls["service vote"].clone();
    let http = reqwest::blocking::Client::new();

    // The second seed.
    let token = sign_in(&identity, "ada@example.com", "correct-horse-battery");
    assert_eq!(
        http.get(format!("{gateway}/hello"))
            .send()
            .unwrap()
            .status(),
        401
    );
    // The backend directly: private (401 without a token), and only the gateway's account may
    // invoke it (403 for another account's valid ID token).
    assert_eq!(http.get(format!("{hello}/")).send().unwrap().status(), 401);
    let other = gatehouse(&["iam", "--data-dir"])
        .arg(&data)
        .args(["print-id-token", "--audience", &hello, "--service-account"])
        .arg("vote-identity@demo-project.iam.gserviceaccount.com")
        .output()
        .unwrap();
    assert!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let other = String::from_utf8(other.stdout).unwrap();
    let direct = http
        .get(format!("{hello}/"))
        .bearer_auth(other.trim())
        .send()
        .unwrap();
    assert_eq!(direct.status(), 403);
    // A user created with the CLI signs in with it too.
    let created = gatehouse(&[
        "auth",
        "--identity-url",
        &identity,
        "users",
        "create",
        "--email",
        "grace@example.com",
        "--password",
        "s3cret-pw-1",
    ])
    .output()
    .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let cli_token = gatehouse(&[
        "auth",
        "--identity-url",
        &identity,
        "sign-in",
        "--email",
        "grace@example.com",
        "--password",
        "s3cret-pw-1",
    ])
    .output()
    .unwrap();
    assert!(cli_token.status.success());
    let grace = String::from_utf8(cli_token.stdout).unwrap();
    let res: Value = http
        .get(format!("{gateway}/hello"))
        .bearer_auth(grace.trim())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(res["user"]["email"], "grace@example.com");
    // The seed's custom token with an extra claim, signed by a service account through IAM.
    let custom = gatehouse(&[
        "auth",
        "custom-token",
        "--uid",
        "u-custom",
        "--claims",
        r#"{"profile":"a-user-profile"}"#,
        "--service-account",
        "apigw-sa@demo-project.iam.gserviceaccount.com",
        "--data-dir",
    ])
    .arg(&data)
    .output()
    .unwrap();
    assert!(
        custom.status.success(),
        "{}",
        String::from_utf8_lossy(&custom.stderr)
    );
    let custom = String::from_utf8(custom.stdout).unwrap();
    let signed_in: Value = http
        .post(format!("{identity}/identitytoolkit.googleapis.com/v1/accounts:signInWithCustomToken?key=demo-api-key"))
        .json(&json!({"token": custom.trim(), "returnSecureToken": true}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let res: Value = http
        .get(format!("{gateway}/hello"))
        .bearer_auth(
            signed_in["idToken"]
                .as_str()
                .unwrap_or_else(|| panic!("{signed_in}")),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(res["user"]["sub"], "u-custom");
    assert_eq!(res["user"]["profile"], "a-user-profile");
    let res = http
        .get(format!("{gateway}/hello"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().unwrap();
    assert_eq!(body["user"]["email"], "ada@example.com", "{body}");
    assert_eq!(
        body["invoker"], "apigw-sa@demo-project.iam.gserviceaccount.com",
        "{body}"
    );

    // The first seed, in Chromium.
    let out = Command::new("node")
        .arg(repo_root().join("tests/browser/vote.e2e.mjs"))
        .env("VOTE_URL", format!("{vote}/"))
        .env("ARTIFACTS", repo_root().join("target/browser-artifacts/up"))
        .output()
        .expect("node is installed");
    assert!(
        out.status.success(),
        "browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // An unchanged manifest plans no changes.
    let again = gatehouse(&["up", "--dry-run", "-f"])
        .arg(&manifest)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&again.stdout);
    assert!(plan.contains("Plan: no changes."), "{plan}");

    // An edited OpenAPI file rolls out while requests keep flowing.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let loop_thread = {
        let (stop, ok, failed, gateway, token) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            gateway.clone(),
            token.clone(),
        );
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::new();
            while !stop.load(Ordering::Relaxed) {
                match http
                    .get(format!("{gateway}/hello"))
                    .bearer_auth(&token)
                    .send()
                {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let openapi = dir.path().join("openapi.yaml");
    let text = std::fs::read_to_string(&openapi).unwrap();
    let added = text.replace(
        "paths:\n",
        "paths:\n  /hello2:\n    get:\n      security:\n        - firebase: []\n      operationId: hello2\n      responses:\n        '200':\n          description: Success\n      x-google-backend:\n        address: '${services.hello.url}'\n",
    );
    std::fs::write(&openapi, added).unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http
            .get(format!("{gateway}/hello2"))
            .bearer_auth(&token)
            .send()
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < until,
            "the new API config did not roll out"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    loop_thread.join().unwrap();
    assert!(ok.load(Ordering::Relaxed) > 10);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the rollout"
    );

    // gatehouse down stops it.
    let mut up = up;
    let down = gatehouse(&["down", "--data-dir"])
        .arg(dir.path().join("data"))
        .status()
        .unwrap();
    assert!(down.success());
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = up.child.try_wait().unwrap() {
            assert!(status.success(), "up exited with {status}");
            break;
        }
        assert!(
            Instant::now() < until,
            "up did not stop after gatehouse down"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let printed = up.stdout.lock().unwrap().join("\n");
    assert!(printed.contains("service vote"), "{printed}");
}
