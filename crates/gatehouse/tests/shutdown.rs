//! Scenario 8 of issue 16, graceful shutdown of the real binary: SIGTERM to `gatehouse
//! identity` while keep-alive clients sign in (each sign-in an argon2 check, so requests are
//! in flight when the signal lands). Every request sent before the signal gets its 200, new
//! connections are refused once the listener is closed, and the process exits within a bound.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use gatehouse_testkit::{Spawned, TempDir};
use serde_json::json;

fn identity(dir: &TempDir) -> Spawned {
    common::identity("sd-proj", dir.path(), None)
}

/// Keep-alive clients asking for the published keys (answered at once, so connections are
/// mostly between two requests when SIGTERM lands), three times: a connection must not be
/// closed under a request the client sent before the signal.
#[test]
fn sigterm_to_identity_serves_requests_already_sent_on_idle_connections() {
    for _ in 0..3 {
        let dir = gatehouse_testkit::temp_dir("shutdown-identity-fast").unwrap();
        let mut server = identity(&dir);
        let request = format!(
            "GET /robot/v1/metadata/x509/securetoken@system.gserviceaccount.com HTTP/1.1\r\n\
             host: {}\r\n\r\n",
            server.addr
        );
        let addr = server.addr.parse().unwrap();
        let report = gatehouse_testkit::drain(
            addr,
            request.as_bytes(),
            32,
            Duration::from_millis(700),
            || server.terminate().unwrap(),
        );
        assert!(server.wait_exit(Duration::from_secs(30)).unwrap().is_some());
        assert!(
            report.failed_before.is_empty(),
            "requests sent before SIGTERM failed: {report:?}"
        );
    }
}

#[test]
fn sigterm_to_identity_under_load_answers_every_request_sent_before_it() {
    let dir = gatehouse_testkit::temp_dir("shutdown-identity").unwrap();
    let mut server = identity(&dir);
    let body =
        json!({"email": "ada@example.com", "password": "pw-shutdown-1", "returnSecureToken": true})
            .to_string();
    let res = reqwest::blocking::Client::new()
        .post(format!(
            "{}/identitytoolkit.googleapis.com/v1/accounts:signUp?key=k",
            server.url()
        ))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);

    let request = format!(
        "POST /identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=k HTTP/1.1\r\n\
         host: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    let addr = server.addr.parse().unwrap();
    let mut signalled = None;
    let report = gatehouse_testkit::drain(
        addr,
        request.as_bytes(),
        8,
        Duration::from_millis(1500),
        || {
            signalled = Some(Instant::now());
            server.terminate().unwrap();
        },
    );
    let status = server.wait_exit(Duration::from_secs(30)).unwrap();
    let stopped_in = signalled.unwrap().elapsed();
    assert!(
        status.is_some(),
        "identity still running 30 s after SIGTERM"
    );
    assert!(report.sent_before >= 8, "{report:?}");
    assert!(
        report.failed_before.is_empty(),
        "requests sent before SIGTERM failed: {report:?}"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "a connection was accepted after the stop"
    );
    assert!(stopped_in < Duration::from_secs(10), "{stopped_in:?}");
}

const SLOW_SERVICE: &str = r#"import http.server, os, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        time.sleep(0.3)
        self.send_response(200)
        self.send_header("content-length", "5")
        self.end_headers()
        self.wfile.write(b"slept")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// `gatehouse down` while keep-alive clients call a service through the stack's gateway: every
/// request sent before `down` was run gets its 200 (the gateway drains, then the service's
/// ingress, then its instances), the gateway refuses new connections afterwards, and `up` exits
/// successfully.
#[test]
fn down_under_load_answers_every_request_sent_before_it() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};

    let python = gatehouse_testkit::require_program("python3", "apt-get install -y python3")
        .unwrap()
        .display()
        .to_string();
    let dir = gatehouse_testkit::temp_dir("shutdown-up").unwrap();
    // The service answers 300 ms after each request, so requests are in flight at `down`;
    // like most servers it dies at once on SIGTERM (the runner must drain it first).
    std::fs::write(dir.path().join("slow.py"), SLOW_SERVICE).unwrap();
    std::fs::write(
        dir.path().join("openapi.yaml"),
        "swagger: '2.0'\ninfo: {title: t, version: 1.0.0}\npaths:\n  /hello:\n    get:\n      operationId: hello\n      x-google-backend:\n        address: '${services.hello.url}'\n",
    )
    .unwrap();
    let manifest = dir.path().join("gatehouse.yaml");
    let slow = dir.path().join("slow.py").display().to_string();
    std::fs::write(
        &manifest,
        format!(
            "project: {{id: down-project}}\n\
         identity: {{port: 0}}\n\
         service_accounts: [{{name: apigw-sa}}]\n\
         bindings: [{{resource: services/hello, role: roles/run.invoker, member: 'serviceAccount:apigw-sa'}}]\n\
         services: [{{name: hello, command: [{python}, {slow}], min_instances: 1, concurrency: 100}}]\n\
         apis: [{{name: hello-api, openapi: openapi.yaml}}]\n\
         gateways: [{{name: gw, port: 0, api: hello-api, service_account: apigw-sa}}]\n",
        )
    )
    .unwrap();
    let data = dir.path().join("data");
    let bin = Path::new(env!("CARGO_BIN_EXE_gatehouse"));
    // `gatehouse apps hello` in the service's command is this binary.
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut up = Command::new(bin)
        .args(["up", "--output", "json", "-f"])
        .arg(&manifest)
        .arg("--data-dir")
        .arg(&data)
        .env("PATH", &path)
        .env_remove("GATEHOUSE_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = up.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with('{') && line.contains("\"components\"") {
                let _ = tx.send(line);
            }
        }
    });
    let Ok(line) = rx.recv_timeout(Duration::from_secs(120)) else {
        let _ = up.kill();
        panic!("up did not get ready");
    };
    let report: serde_json::Value = serde_json::from_str(&line).unwrap();
    let gateway = report["components"]["gateway:gw"]["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_owned();
    let addr = gateway.parse().unwrap();

    let request = format!("GET /hello HTTP/1.1\r\nhost: {gateway}\r\n\r\n");
    let mut down = None;
    let mut signalled = None;
    let report = gatehouse_testkit::drain(
        addr,
        request.as_bytes(),
        16,
        Duration::from_millis(1500),
        || {
            signalled = Some(Instant::now());
            down = Some(
                Command::new(bin)
                    .args(["down", "--data-dir"])
                    .arg(&data)
                    .output(),
            );
        },
    );
    let down = down.unwrap().unwrap();
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = up.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = up.kill();
            panic!("up still running 30 s after down");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stopped_in = signalled.unwrap().elapsed();
    assert!(status.success(), "up exited with {status}");
    assert!(report.sent_before >= 16, "{report:?}");
    assert!(
        report.failed_before.is_empty(),
        "requests sent before down failed: {report:?}"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the gateway accepted a connection after down"
    );
    assert!(stopped_in < Duration::from_secs(20), "{stopped_in:?}");
}
