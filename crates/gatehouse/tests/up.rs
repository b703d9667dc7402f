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

use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

struct Up {
    child: Child,
    /// The components' URLs by machine key (`identity`, `iam`, `service:hello`, ...).
    urls: HashMap<String, String>,
    /// The JSON report of the components (`--output json`).
    components: Value,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
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
    // The logs' place is decided by `up`, not by the environment the tests run in.
    c.env_remove("GATEHOUSE_LOG");
    c
}

/// Runs a command to its end; it must succeed (its stderr is the failure message).
fn succeeded(mut c: impl std::borrow::BorrowMut<Command>) -> std::process::Output {
    let c = c.borrow_mut();
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Collects a child's output lines; `ready` is sent the first line for which `is_ready` holds.
fn collect(
    out: impl std::io::Read + Send + 'static,
    is_ready: fn(&str) -> bool,
    ready: std::sync::mpsc::Sender<String>,
) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if is_ready(&line) {
                let _ = ready.send(line.clone());
            }
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Starts `up` and waits until it reports its components: with `--output json`, read from
/// the JSON report; in text mode, until "Ready in".
fn start_up(manifest: &Path, data: &Path, json: bool) -> Up {
    let mut child = gatehouse(&["up", "-f"])
        .arg(manifest)
        .arg("--data-dir")
        .arg(data)
        .args(if json { &["--output", "json"][..] } else { &[] })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let is_ready: fn(&str) -> bool = if json {
        |l| l.starts_with('{') && l.contains("\"components\"")
    } else {
        |l| l.starts_with("Ready in")
    };
    let stdout = collect(child.stdout.take().unwrap(), is_ready, tx);
    let (etx, _) = std::sync::mpsc::channel();
    let stderr = collect(child.stderr.take().unwrap(), |_| false, etx);
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| {
            panic!(
                "up did not get ready:\n{:#?}\n{:#?}",
                stdout.lock().unwrap(),
                stderr.lock().unwrap()
            )
        });
    let components = if json {
        serde_json::from_str::<Value>(&line).unwrap()["components"].clone()
    } else {
        Value::Null
    };
    let urls = components
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v["url"].as_str().unwrap().to_owned()))
        .collect();
    Up {
        child,
        urls,
        components,
        stdout,
        stderr,
    }
}

/// `gatehouse down` on `data`, then waits for `up` to exit successfully.
fn stop_up(mut up: Up, data: &Path) -> Up {
    succeeded(gatehouse(&["down", "--data-dir"]).arg(data));
    // `down` returns once the control socket is gone, which `up` removes on its way out.
    let status = up.child.wait().unwrap();
    assert!(status.success(), "up exited with {status}");
    up
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
    let dir = tempfile::tempdir().unwrap();
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
    assert!(!data.exists(), "--dry-run wrote {}", data.display());

    let up = start_up(&manifest, &data, true);
    let identity = up.urls["identity"].clone();
    let gateway = up.urls["gateway:api-gateway"].clone();
    let hello = up.urls["service:hello"].clone();
    let vote = up.urls["service:vote"].clone();
    let http = reqwest::blocking::Client::new();

    // With PostgreSQL installed, the votes are in the managed instance, not in SQLite files.
    if Path::new("/usr/lib/postgresql/15/bin/initdb").is_file() {
        let sql = &up.components["sql:votes-db"];
        assert_eq!(
            sql["notes"], "demo-project:us-central1:votes-db",
            "{}",
            up.components
        );
        let socket = PathBuf::from(sql["url"].as_str().unwrap());
        assert!(
            socket.exists(),
            "no PostgreSQL socket at {}",
            socket.display()
        );
        assert!(
            !data.join("sqlite").exists(),
            "the SQLite fallback was used although PostgreSQL is installed"
        );
        let described = gatehouse(&["run", "services", "describe", "vote", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        let described: Value = serde_json::from_slice(&described.stdout).unwrap();
        assert_eq!(
            described["template"]["volumes"][0]["cloudSqlInstance"]["instances"][0], "votes-db",
            "{described}"
        );
    } else {
        assert!(up.components.get("sql:votes-db").is_none());
        assert!(data.join("sqlite").join("vote").is_dir());
    }

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
    let other = succeeded(
        gatehouse(&["iam", "--data-dir"])
            .arg(&data)
            .args(["print-id-token", "--audience", &hello, "--service-account"])
            .arg("vote-identity@demo-project.iam.gserviceaccount.com"),
    );
    let other = String::from_utf8(other.stdout).unwrap();
    let direct = http
        .get(format!("{hello}/"))
        .bearer_auth(other.trim())
        .send()
        .unwrap();
    assert_eq!(direct.status(), 403);
    // A user created with the CLI signs in with it too.
    succeeded(gatehouse(&[
        "auth",
        "--identity-url",
        &identity,
        "users",
        "create",
        "--email",
        "grace@example.com",
        "--password",
        "s3cret-pw-1",
    ]));
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
    let custom = succeeded(
        gatehouse(&[
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
        .arg(&data),
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
    // Requests are flowing before the change...
    let wait_for_ok = |more: u64| {
        let target = ok.load(Ordering::Relaxed) + more;
        let until = Instant::now() + Duration::from_secs(20);
        while ok.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < until, "requests stopped succeeding");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for_ok(10);
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
    // ...and after it.
    wait_for_ok(10);
    stop.store(true, Ordering::Relaxed);
    loop_thread.join().unwrap();
    assert!(ok.load(Ordering::Relaxed) >= 20);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the rollout"
    );

    // gatehouse down stops it.
    let up = stop_up(up, &data);
    let printed = up.stdout.lock().unwrap().join("\n");
    assert!(printed.contains("\"service:vote\""), "{printed}");
}

/// `--dry-run` prints the plan and writes nothing: no data directory, database or demo files,
/// in text and in JSON.
#[test]
fn dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let text = succeeded(gatehouse(&["up", "--dry-run", "--data-dir"]).arg(&data));
    let plan = String::from_utf8_lossy(&text.stdout);
    assert!(plan.contains("+ create service hello"), "{plan}");
    let json = gatehouse(&["up", "--dry-run", "--output", "json", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(json.status.success());
    let plan: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        plan["plan"]
            .as_array()
            .unwrap()
            .contains(&json!({"change": "create", "kind": "gateway", "name": "api-gateway"})),
        "{plan}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "--dry-run wrote into {}",
        dir.path().display()
    );
}

/// Flags with a fixed set of values refuse anything else before doing anything, and so does
/// the manifest's SMTP security.
#[test]
fn unknown_flag_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--log-format", "yaml", "up", "--dry-run"][..],
        &["identity", "--project", "p", "--rate-limits", "sometimes"],
        &[
            "identity",
            "--project",
            "p",
            "--smtp-host",
            "h",
            "--smtp-security",
            "ssl",
        ],
        &["up", "--dry-run", "--output", "yaml"],
    ] {
        let out = gatehouse(args)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("invalid value"), "{args:?}: {err}");
    }
    let manifest = dir.path().join("gatehouse.yaml");
    std::fs::write(
        &manifest,
        "project: {id: p}\nidentity:\n  smtp: {host: smtp.example.com, security: ssl}\n",
    )
    .unwrap();
    let out = gatehouse(&["up", "--dry-run", "-f"])
        .arg(&manifest)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("ssl"), "{err}");
    assert!(!dir.path().join("data").exists());
}

/// `gatehouse down` fails when no `up` runs, and when the one that runs does not stop.
#[test]
fn down_fails_when_the_stack_does_not_stop() {
    let dir = tempfile::tempdir().unwrap();
    let out = gatehouse(&["down", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no gatehouse process is running"), "{err}");

    // A control socket that says "stopping" and stays.
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("run.sock")).unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).unwrap();
        let body = r#"{"stopping":true}"#;
        write!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    let out = gatehouse(&["down", "--timeout", "1", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    server.join().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not stop"), "{err}");
}

/// A manifest without fixed ports: the second start listens where the first did (key files'
/// `token_uri` stays valid, and `gatehouse iam` puts it there by default); a user's changed
/// password is planned and applied; the terminal shows the plan, progress and URL table while
/// the logs go to `<data-dir>/logs/`.
#[test]
fn ports_are_kept_across_restarts_and_logs_go_to_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let demo = repo_root().join("examples/demo");
    std::fs::copy(demo.join("openapi.yaml"), dir.path().join("openapi.yaml")).unwrap();
    let manifest = dir.path().join("gatehouse.yaml");
    std::fs::write(
        &manifest,
        "project: {id: ports-project}\n\
         identity: {port: 0, api_keys: [demo-api-key], users: [{email: u@example.com, password: first-password-1}]}\n\
         service_accounts: [{name: apigw-sa}]\n\
         bindings: [{resource: services/hello, role: roles/run.invoker, member: 'serviceAccount:apigw-sa'}]\n\
         services: [{name: hello, command: [gatehouse, apps, hello]}]\n\
         apis: [{name: hello-api, openapi: openapi.yaml}]\n\
         gateways: [{name: gw, api: hello-api, service_account: apigw-sa}]\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let first = start_up(&manifest, &data, true);
    let urls = first.urls.clone();
    for key in ["identity", "iam", "service:hello", "gateway:gw"] {
        assert!(urls.contains_key(key), "{key}: {:?}", first.components);
    }
    sign_in(&urls["identity"], "u@example.com", "first-password-1");
    stop_up(first, &data);

    // The user's password changes in the manifest: planned as an update, and applied.
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("first-password-1", "second-password-2"),
    )
    .unwrap();
    let second = start_up(&manifest, &data, false);
    let printed = second.stdout.lock().unwrap().join("\n");
    for (key, url) in &urls {
        assert!(
            printed.contains(url.as_str()),
            "{key} moved from {url}:\n{printed}"
        );
    }
    assert!(
        printed.contains(
            "Plan:\n  ~ update user u@example.com\n0 to create, 1 to update, 0 to delete."
        ),
        "{printed}"
    );
    assert!(
        printed.contains("  applied update user u@example.com"),
        "{printed}"
    );
    sign_in(&urls["identity"], "u@example.com", "second-password-2");
    assert!(printed.contains("started service hello"), "{printed}");
    // No log lines on the terminal: they are in the log file.
    let stderr = second.stderr.lock().unwrap().join("\n");
    assert!(
        !printed
            .lines()
            .chain(stderr.lines())
            .any(|l| l.starts_with('{')),
        "log lines on the terminal:\n{printed}\n{stderr}"
    );
    let log = std::fs::read_to_string(data.join("logs/gatehouse-up.log")).unwrap();
    assert!(log.contains("\"listening\""), "{log}");

    // A key file made now names the running IAM server.
    let key_file = dir.path().join("key.json");
    succeeded(
        gatehouse(&["iam", "--data-dir"])
            .arg(&data)
            .args(["service-accounts", "keys", "create"])
            .arg(&key_file)
            .args([
                "--iam-account",
                "apigw-sa@ports-project.iam.gserviceaccount.com",
            ]),
    );
    let key: Value = serde_json::from_slice(&std::fs::read(&key_file).unwrap()).unwrap();
    assert!(
        key["token_uri"]
            .as_str()
            .unwrap()
            .starts_with(urls["iam"].as_str()),
        "{key}"
    );

    // `up -f` on the running stack's data directory hands it the manifest: a new service is
    // deployed live (and its port kept); an identity change needs a restart and is refused.
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace(
            "services: [{name: hello, command: [gatehouse, apps, hello]}]",
            "services: [{name: hello, command: [gatehouse, apps, hello]}, \
             {name: hello2, command: [gatehouse, apps, hello], allow_unauthenticated: true}]",
        ),
    )
    .unwrap();
    let live = succeeded(
        gatehouse(&["up", "--output", "json", "-f"])
            .arg(&manifest)
            .arg("--data-dir")
            .arg(&data),
    );
    let applied: Value = serde_json::from_slice(&live.stdout).unwrap();
    let line = applied["applied"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|l| l.starts_with("service hello2: revision"))
        .unwrap_or_else(|| panic!("{applied}"))
        .to_owned();
    let url = line.rsplit(' ').next().unwrap();
    let hello2 = reqwest::blocking::get(format!("{url}/")).unwrap();
    assert_eq!(hello2.status(), 200);
    let kept: Value =
        serde_json::from_slice(&std::fs::read(data.join("ports.json")).unwrap()).unwrap();
    assert_eq!(
        format!("http://127.0.0.1:{}", kept["ports"]["service:hello2"]),
        url
    );
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("[demo-api-key]", "[other-key]")).unwrap();
    let refused = gatehouse(&["up", "-f"])
        .arg(&manifest)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("need a restart") && err.contains("update identity ports-project"),
        "{err}"
    );
    stop_up(second, &data);
}
