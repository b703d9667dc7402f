//! The attack corpus (`tests/adversarial/`) against the whole `gatehouse up` stack in
//! production mode: the identity server, the gateway, the run ingress of a public service (the
//! CATS v DOGS app, whose own token check is attacked through it) and of a private one
//! (`hello`). Every HTTP case gets the safe answer on every listener; every JWT case the runner
//! can build without the listener's private key is refused by every listener that checks
//! tokens, after the unmodified base token was accepted there (the control). The cases that
//! need the private key run in crates/gateway/tests/adversarial.rs.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_testkit::adversarial::{self, Expect, Material};
use gatehouse_testkit::temp_dir;
use gatehouse_tokens::SigningKey;
use serde_json::{Value, json};

const API_KEY: &str = "adv-api-key";
const PASSWORD: &str = "adversarial-horse-battery";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gatehouse() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
}

/// The demo's architecture in production mode: passwords and keys from files, the vote app on
/// SQLite (its database is not what is attacked here).
fn manifest(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("ada.txt"), PASSWORD).unwrap();
    std::fs::copy(
        repo_root().join("examples/demo/openapi.yaml"),
        dir.join("openapi.yaml"),
    )
    .unwrap();
    // Instances may run as a user of their own: the vote database's folder is open to it.
    let votes_dir = dir.join("votes");
    std::fs::create_dir_all(&votes_dir).unwrap();
    std::fs::set_permissions(
        &votes_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let votes = votes_dir.join("votes.db");
    let text = format!(
        r#"project: {{id: adv-project, mode: production, region: us-central1}}
identity:
  port: 0
  api_keys: [{API_KEY}]
  authorized_domains: [localhost, 127.0.0.1]
  users:
    - {{email: ada@example.com, password_secret: "ada-password:latest"}}
service_accounts:
  - {{name: vote-identity}}
  - {{name: apigw-sa}}
secrets:
  - {{name: ada-password, from_file: ./ada.txt}}
bindings:
  - {{resource: services/hello, role: roles/run.invoker, member: "serviceAccount:apigw-sa"}}
services:
  - name: vote
    command: [gatehouse, apps, vote]
    service_account: vote-identity
    allow_unauthenticated: true
    env:
      DATABASE_URL: "sqlite://{votes}"
      GOOGLE_CLOUD_PROJECT: ${{project.id}}
      GATEHOUSE_IDENTITY_URL: ${{identity.url}}
      API_KEY: ${{identity.api_key}}
  - name: hello
    command: [gatehouse, apps, hello]
    allow_unauthenticated: false
apis:
  - {{name: hello-api, openapi: openapi.yaml}}
gateways:
  - {{name: api-gateway, api: hello-api, service_account: apigw-sa, port: 0}}
"#,
        votes = votes.display()
    );
    let path = dir.join("gatehouse.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start(dir: &Path) -> (Up, HashMap<String, String>, PathBuf, PathBuf) {
    let data = dir.join("data");
    let key = dir.join("master.key");
    let made = gatehouse()
        .args(["secrets", "generate-master-key"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let manifest = manifest(dir);
    // `gatehouse apps …` in the services' commands is this binary.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_gatehouse")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = gatehouse()
        .args(["up", "-f"])
        .arg(&manifest)
        .arg("--data-dir")
        .arg(&data)
        .arg("--master-key-file")
        .arg(&key)
        .env("PATH", path)
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
    let up = Up(child);
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
    (up, urls, data, key)
}

fn authority(url: &str) -> String {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

/// A listener under attack: its address, a path that exists there, and its name in the
/// corpus's `expect_on`.
struct Target {
    name: &'static str,
    url: String,
    path: &'static str,
}

#[test]
fn the_corpus_against_the_production_stack() {
    let dir = temp_dir("adversarial-up").unwrap();
    let (_up, urls, data, master_key) = start(dir.path());
    let identity = urls["identity"].clone();
    let gateway = urls["gateway api-gateway"].clone();
    let vote = urls["service vote"].clone();
    let hello = urls["service hello"].clone();
    let targets = [
        Target {
            name: "identity",
            url: identity.clone(),
            path: "/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com",
        },
        Target {
            name: "gateway",
            url: gateway.clone(),
            path: "/hello",
        },
        Target {
            name: "ingress",
            url: vote.clone(),
            path: "/",
        },
        Target {
            name: "ingress",
            url: hello.clone(),
            path: "/",
        },
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();

    // HTTP: every case on every listener, concurrently.
    let cases = adversarial::http_cases().unwrap();
    let mut failures = Vec::new();
    rt.block_on(async {
        let mut jobs = Vec::new();
        for t in &targets {
            for case in &cases {
                let (case, addr, path, name) = (case.clone(), authority(&t.url), t.path, t.name);
                jobs.push(tokio::spawn(async move {
                    let raw = case.render(&addr, path).unwrap();
                    let expect = case.expect_on(name);
                    let enough = if expect == Expect::Two { 2 } else { 1 };
                    let answers = adversarial::send_raw(&addr, &raw, case.head, enough)
                        .await
                        .unwrap();
                    (
                        format!("{name} {addr} {}", case.name),
                        answers.check(expect),
                    )
                }));
            }
        }
        for j in jobs {
            let (what, result) = j.await.unwrap();
            if let Err(e) = result {
                failures.push(format!("{what}: {e}"));
            }
        }
    });
    assert!(failures.is_empty(), "HTTP corpus:\n{}", failures.join("\n"));
    let logs = std::fs::read_to_string(data.join("logs/hello.log")).unwrap_or_default();
    assert!(
        !logs.contains(adversarial::CANARY_PATH),
        "a smuggled request reached hello"
    );

    // JWT: base tokens the listeners accept.
    let http = reqwest::blocking::Client::new();
    let signed_in: Value = http
        .post(format!(
            "{identity}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key={API_KEY}"
        ))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD, "returnSecureToken": true}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let firebase = signed_in["idToken"].as_str().expect("sign-in").to_owned();
    let printed = gatehouse()
        .args(["iam", "--data-dir"])
        .arg(&data)
        .arg("--master-key-file")
        .arg(&master_key)
        .args(["print-id-token", "--audience", &hello, "--service-account"])
        .arg("apigw-sa@adv-project.iam.gserviceaccount.com")
        .output()
        .unwrap();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let iam_token = String::from_utf8(printed.stdout).unwrap().trim().to_owned();

    // Each check: the listener's answer to a token (status).
    type Check = Box<dyn Fn(&str) -> u16>;
    let client = http.clone();
    let id = identity.clone();
    let lookup: Check = Box::new(move |t| {
        client
            .post(format!(
                "{id}/identitytoolkit.googleapis.com/v1/accounts:lookup?key={API_KEY}"
            ))
            .json(&json!({"idToken": t}))
            .send()
            .unwrap()
            .status()
            .as_u16()
    });
    let bearer = |url: String, post: bool| -> Check {
        let client = http.clone();
        Box::new(move |t| {
            let req = if post {
                client.post(&url).form(&[("team", "CATS")])
            } else {
                client.get(&url)
            };
            req.bearer_auth(t).send().unwrap().status().as_u16()
        })
    };
    let firebase_jwk = jwk_for(
        &http,
        &format!("{identity}/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com"),
        &firebase,
    );
    let iam_jwk = jwk_for(
        &http,
        &format!("{}/oauth2/v3/certs", urls["iam + secrets"]),
        &iam_token,
    );
    let listeners: Vec<(&str, &str, &Value, Check)> = vec![
        ("identity accounts:lookup", &firebase, &firebase_jwk, lookup),
        (
            "gateway /hello",
            &firebase,
            &firebase_jwk,
            bearer(format!("{gateway}/hello"), false),
        ),
        (
            "vote app POST /",
            &firebase,
            &firebase_jwk,
            bearer(format!("{vote}/"), true),
        ),
        (
            "hello ingress",
            &iam_token,
            &iam_jwk,
            bearer(format!("{hello}/"), false),
        ),
    ];
    let attacker = SigningKey::generate().unwrap();
    let jwt_cases = adversarial::jwt_cases().unwrap();
    let mut ran = 0;
    for (name, base, jwk, check) in &listeners {
        assert_eq!(
            check(base),
            200,
            "control: {name} refuses its own base token"
        );
        let material = Material {
            base,
            trusted_public_jwk: jwk,
            trusted: None,
            attacker: &attacker,
            attacker_jwks_url: "http://127.0.0.1:9/jwks",
            attacker_x5u_url: "http://127.0.0.1:9/x5u",
        };
        for case in jwt_cases.iter().filter(|c| !c.needs_trusted_key()) {
            let t = case.build(&material).unwrap();
            let status = check(&t);
            ran += 1;
            if !(400..500).contains(&status) {
                failures.push(format!("{name} {}: {status}", case.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "JWT corpus accepted:\n{}",
        failures.join("\n")
    );
    assert!(ran >= 4 * 20, "{ran}");
}

/// The published JWK whose `kid` signed `token`.
fn jwk_for(http: &reqwest::blocking::Client, url: &str, token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    let header: Value =
        serde_json::from_slice(&gatehouse_tokens::b64url_decode(header).unwrap()).unwrap();
    let set: Value = http.get(url).send().unwrap().json().unwrap();
    set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .cloned()
        .unwrap_or_else(|| panic!("{url} does not publish {}", header["kid"]))
}
