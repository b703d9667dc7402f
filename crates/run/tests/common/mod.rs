//! The runner tests' harness: a world with IAM, Secret Manager and a runner on a temporary data
//! directory, and a small real HTTP service (Python) as the workload.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use gatehouse_run::{IsolationMode, RunConfig, Runner, ServiceSpec};
use serde_json::Value;

pub const APP: &str = r#"
import http.server, json, os, sys
class H(JsonHandler):
    def do_GET(self):
        if self.path == "/crash":
            os._exit(3)
        if self.path.startswith("/slow"):
            import time
            time.sleep(int(self.path.split("ms=", 1)[1]) / 1000)
        if self.path.startswith("/idtoken"):
            import google.auth.transport.requests, google.oauth2.id_token
            aud = self.path.split("aud=", 1)[1]
            out = {"token": google.oauth2.id_token.fetch_id_token(google.auth.transport.requests.Request(), aud)}
        else:
            keys = ["K_SERVICE", "K_REVISION", "K_CONFIGURATION", "DB_PASS", "GCE_METADATA_HOST", "PORT", "GREETING"]
            out = {"env": {k: os.environ.get(k) for k in keys}, "headers": {k.lower(): v for k, v in self.headers.items()}, "pid": os.getpid()}
        self.reply(out)
    def log_message(self, *a):
        sys.stderr.write("request " + self.path + "\n")
serve(H)
"#;

/// The IAM compat suite's venv: its packages (google-auth) are what the workload imports.
fn site_packages() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/compat/iam/.venv/lib/python3.11/site-packages");
    assert!(
        p.join("google/auth").is_dir(),
        "the workload needs google-auth: run `tests/compat/setup.sh`"
    );
    p
}

/// The system's Python 3.11: instances run as their service's own unprivileged user, which
/// must be able to execute the interpreter (a Python under /root could not be).
pub fn python() -> PathBuf {
    let p = PathBuf::from("/usr/bin/python3.11");
    assert!(
        p.is_file(),
        "the workload needs /usr/bin/python3.11: apt-get install -y python3"
    );
    p
}

/// What every workload script starts with: google-auth from the compat venv, a handler base
/// that answers JSON (and logs nothing), and `serve(H)` on the runner's address and port.
const PRELUDE: &str = r#"
import http.server, json, os
class JsonHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, out):
        body = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
def serve(H):
    http.server.ThreadingHTTPServer((os.environ.get("GATEHOUSE_BIND_ADDR", "0.0.0.0"), int(os.environ["PORT"])), H).serve_forever()
"#;

/// Writes a workload script (after [`PRELUDE`]) that finds google-auth in the compat venv.
pub fn write_app(path: &std::path::Path, source: &str) {
    let prefix = format!(
        "import sys; sys.path.insert(0, {:?})\n{PRELUDE}",
        site_packages().display().to_string()
    );
    std::fs::write(path, format!("{prefix}{source}")).unwrap();
}

/// The world (IAM with a zero cache TTL, Secret Manager), a runner deploying into `run-proj`,
/// and the workload script in the world's directory.
pub struct World {
    pub kit: gatehouse_world::World,
    pub runner: Runner,
    pub app: PathBuf,
}

impl std::ops::Deref for World {
    type Target = gatehouse_world::World;

    fn deref(&self) -> &Self::Target {
        &self.kit
    }
}

pub async fn world() -> World {
    world_with(IsolationMode::Auto, Vec::new()).await
}

pub async fn world_with(isolation: IsolationMode, forward: Vec<std::net::SocketAddr>) -> World {
    let kit = gatehouse_world::World::builder()
        .project("run-proj")
        .build()
        .await
        .unwrap();
    let runner = Runner::new(
        kit.iam.clone(),
        Some(kit.secrets.clone()),
        RunConfig {
            isolation,
            forward,
            ..RunConfig::new(
                "run-proj",
                "us-central1",
                "127.0.0.1",
                kit.dir.path().join("data"),
            )
        },
    );
    let app = kit.dir.path().join("app.py");
    write_app(&app, APP);
    World { kit, runner, app }
}

pub fn spec(w: &World, yaml: &str) -> ServiceSpec {
    let py = python();
    ServiceSpec::parse(&format!(
        "command: [{:?}, {:?}]\n{yaml}",
        py.display().to_string(),
        w.app.display().to_string()
    ))
    .unwrap()
}

/// The secret `db-pass` in `run-proj` with one version.
pub async fn db_pass(w: &World, data: &[u8]) {
    w.add_secret("db-pass", data).await.unwrap();
}

pub async fn get(url: &str, headers: &[(&str, String)]) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(url);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Asks the workload (`GET /idtoken?aud=…` through `url`, the ingress) for an ID token from
/// its metadata endpoint via google-auth; checks it is for `email`.
pub async fn assert_instance_id_token(
    w: &World,
    url: &str,
    headers: &[(&str, String)],
    email: &str,
) {
    let (status, body) = get(
        &format!("{url}/idtoken?aud=https://callee.example"),
        headers,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let claims = w
        .iam
        .verify_id_token(
            body["token"].as_str().unwrap(),
            &["https://callee.example".into()],
        )
        .await
        .unwrap();
    assert_eq!(claims["email"], email);
}
