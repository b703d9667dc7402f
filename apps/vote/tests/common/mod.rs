//! Shared pieces of the vote app's tests: a real identity server in-process, ID tokens from
//! it over REST, the `vote` binary as a child process with its JSON log captured, and the
//! sample's tests as one function run against any deployment.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_identity::{Identity, IdentityOptions, ProjectConfig, RateLimits, SystemClock};
use gatehouse_store::Store;
use gatehouse_testkit::{FetchJson as _, TempDir, temp_dir};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};

pub const PROJECT: &str = "vote-proj";
pub const API_KEY: &str = "vote-api-key";
pub const OTHER_PROJECT: &str = "another-proj";
pub const OTHER_API_KEY: &str = "another-api-key";

/// An identity server for `PROJECT`, with 127.0.0.1 among its authorized domains.
pub struct Idp {
    pub url: String,
    _op: Option<Op>,
    _dir: TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub async fn identity() -> Idp {
    identity_with(false).await
}

/// An upstream OpenID provider: `tests/federated/op.mjs` (npm oidc-provider) on 127.0.0.1.
pub struct Op {
    pub issuer: String,
    _child: tokio::process::Child,
}

pub const OP_CLIENT_ID: &str = "vote-gatehouse";
pub const OP_CLIENT_SECRET: &str = "s3cret:&+ value";

/// Starts the upstream provider with our callback (`<identity>/__/auth/handler`) registered.
pub async fn start_op(identity_url: &str) -> Op {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert!(
        root.join("tests/federated/node_modules/oidc-provider")
            .is_dir(),
        "oidc-provider is required: run tests/federated/setup.sh"
    );
    let mut child = tokio::process::Command::new("node")
        .arg(root.join("tests/federated/op.mjs"))
        .args([
            "--port",
            "0",
            "--client-id",
            OP_CLIENT_ID,
            "--client-secret",
            OP_CLIENT_SECRET,
        ])
        .arg("--redirect-uri")
        .arg(format!("{identity_url}/__/auth/handler"))
        .arg("--watch-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node is required: apt-get install -y nodejs");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .expect("the OpenID provider starts within 120 s")
        .unwrap()
        .expect("the OpenID provider's ready line");
    let ready: Value = serde_json::from_str(&line).unwrap();
    Op {
        issuer: ready["issuer"].as_str().unwrap().to_owned(),
        _child: child,
    }
}

/// [`identity`], optionally with `oidc.corp` — an upstream oidc-provider — configured.
pub async fn identity_with(oidc: bool) -> Idp {
    let dir = temp_dir("vote-idp").unwrap();
    let store = Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("id.db").display()
    ))
    .await
    .unwrap();
    let mut project = ProjectConfig::development(PROJECT);
    project.settings.authorized_domains = Some(vec!["localhost".into(), "127.0.0.1".into()]);
    // A second project on the same server (same signing keys): its tokens differ only in
    // audience and issuer.
    let mut other = ProjectConfig::development(OTHER_PROJECT);
    other.api_keys = vec![OTHER_API_KEY.into()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let upstream = match oidc {
        true => {
            let op = start_op(&url).await;
            let mut corp = gatehouse_identity::IdpConfig::oidc(
                "corp",
                &op.issuer,
                OP_CLIENT_ID,
                secrecy::SecretString::from(OP_CLIENT_SECRET),
            );
            corp.display_name = "Corp".into();
            project.providers.push(corp);
            Some(op)
        }
        false => None,
    };
    let identity = Identity::new(IdentityOptions {
        store,
        clock: Arc::new(SystemClock),
        projects: vec![project, other],
        rate_limits: RateLimits::off(),
        smtp: None,
        public_url: url.clone(),
        key_rotation_secs: 3600,
        master_key: Arc::new(gatehouse_identity::MasterKey::generate().unwrap()),
        authority: None,
    })
    .await
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gatehouse_identity_http::serve(identity, listener, async {
        let _ = stopped.await;
    }));
    Idp {
        url,
        _op: upstream,
        _dir: dir,
        _stop: stop,
    }
}

/// A new user's ID token, from `accounts:signUp` as a web client gets it.
pub async fn id_token(idp: &Idp, email: &str) -> String {
    id_token_with(idp, email, API_KEY).await
}

/// [`id_token`] through another API key (another project's).
pub async fn id_token_with(idp: &Idp, email: &str, key: &str) -> String {
    let res: Value = reqwest::Client::new()
        .post(format!(
            "{}/identitytoolkit.googleapis.com/v1/accounts:signUp?key={key}",
            idp.url
        ))
        .json(&json!({"email": email, "password": "correct-horse-9", "returnSecureToken": true}))
        .fetch_json()
        .await
        .unwrap();
    res["idToken"].as_str().unwrap().to_owned()
}

/// The `vote` binary, running.
pub struct Vote {
    pub url: String,
    pub child: tokio::process::Child,
    pub log: Arc<Mutex<Vec<Value>>>,
}

impl Vote {
    /// Log entries so far.
    pub fn entries(&self) -> Vec<Value> {
        self.log.lock().unwrap().clone()
    }

    /// Waits for an entry matching `pred`.
    pub async fn wait_for(&self, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            if let Some(e) = self.entries().into_iter().find(|e| pred(e)) {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no such log entry; have {:#?}", self.entries());
    }
}

/// Starts `vote` with `env` (plus `PORT`) and waits until it listens.
pub async fn spawn_vote(env: &[(&str, String)]) -> Vote {
    let port = gatehouse_testkit::free_port().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vote"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().unwrap();
    let sink = log.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
            sink.lock().unwrap().push(v);
        }
    });
    let vote = Vote {
        url: format!("http://127.0.0.1:{port}"),
        child,
        log,
    };
    vote.wait_for(|e| e["message"] == format!("vote: listening on port {port}"))
        .await;
    vote
}

pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

pub async fn post(url: &str, auth: Option<&str>, body: &str, content_type: &str) -> Answer {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/"))
        .header("content-type", content_type)
        .header("x-cloud-trace-context", "trace0123/456;o=1")
        .body(body.to_owned());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let res = req.send().await.unwrap();
    Answer {
        status: res.status().as_u16(),
        content_type: res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
        body: res.text().await.unwrap(),
    }
}

pub async fn page(url: &str) -> String {
    let res = reqwest::get(format!("{url}/")).await.unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

const FORM: &str = "application/x-www-form-urlencoded";

/// The sample's unit and system tests, and the behaviour its spec describes, against `url`.
pub async fn sample_tests(url: &str, idp: &Idp, email: &str) {
    let html = page(url).await;
    assert!(html.contains("<title>CATS v DOGS</title>"));
    assert!(html.contains("CATS and DOGS are evenly matched!"));
    assert!(html.contains("<h3>0 votes</h3>"));

    // Unit tests: no token → 401, a bad token → 403.
    let a = post(url, None, "team=DOGS", FORM).await;
    assert_eq!((a.status, a.body.as_str()), (401, "Unauthorized"));
    assert!(a.content_type.starts_with("text/plain"));
    let a = post(url, Some("Bearer iam-a-token"), "team=DOGS", FORM).await;
    assert_eq!((a.status, a.body.as_str()), (403, "Forbidden"));
    let a = post(url, Some("Bearer"), "team=DOGS", FORM).await;
    assert_eq!(
        a.status, 403,
        "a scheme without a token is refused, not a 500"
    );
    // Auth comes before the body: an invalid team without a token is 401.
    assert_eq!(post(url, None, "team=cats", FORM).await.status, 401);

    // System test: a real ID token from our identity server.
    let token = id_token(idp, email).await;
    let bearer = format!("Bearer {token}");
    let a = post(url, Some(&bearer), "team=DOGS", FORM).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.body.starts_with("Successfully voted for DOGS at ")
            && a.body.ends_with(" GMT+0000 (Coordinated Universal Time)"),
        "{}",
        a.body
    );
    assert!(a.content_type.starts_with("text/html"));
    for bad in [
        "team=cats",
        "",
        "team=%20CATS",
        "team=CATS&team=CATS",
        "team=BIRDS",
    ] {
        let a = post(url, Some(&bearer), bad, FORM).await;
        assert_eq!(
            (a.status, a.body.as_str()),
            (400, "Invalid team specified."),
            "{bad}"
        );
    }
    // JSON bodies are accepted, as by the Node sample's express.json().
    let a = post(url, Some(&bearer), r#"{"team":"CATS"}"#, "application/json").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let html = page(url).await;
    assert!(html.contains("CATS and DOGS are evenly matched!"), "{html}");
    assert_eq!(html.matches("<h3>1 votes</h3>").count(), 2);
    assert!(html.contains("🐶"));

    for _ in 0..5 {
        assert_eq!(
            post(url, Some(&bearer), "team=DOGS", FORM).await.status,
            200
        );
    }
    let html = page(url).await;
    assert!(html.contains("DOGS are winning by 5 votes."), "{html}");
    assert!(html.contains("<h3>6 votes</h3>") && html.contains("<h3>1 votes</h3>"));
    assert!(html.contains("<div class=\"card-panel teal lighten-4\" id=\"dogsCard\">"));
    // The five most recent votes, newest first: all DOGS now.
    assert_eq!(
        html.matches("<li class=\"collection-item avatar\">")
            .count(),
        5
    );
    assert_eq!(html.matches("<b>DOGS</b>").count(), 5);
    assert_eq!(html.matches("<b>CATS</b>").count(), 0);
    let a = post(url, Some(&bearer), "team=CATS", FORM).await;
    assert_eq!(a.status, 200);
    let html = page(url).await;
    let first = html.find("<li class=\"collection-item avatar\">").unwrap();
    assert!(
        html[first..].find("<b>CATS</b>") < html[first..].find("<b>DOGS</b>"),
        "the newest vote is listed first"
    );
    assert!(html.contains("DOGS are winning by 4 votes."));
}

/// The managed instance the seed's vote service uses, and its credentials.
pub const SQL_INSTANCE: &str = "idp-sql-instance";
pub const DB_USER: &str = "vote-user";
pub const DB_PASSWORD: &str = "s3cret-Pw";

/// As the seed deploys it: a service under the runner with its own account, its database
/// credentials in a secret only that account may read (`CLOUD_SQL_CREDENTIALS_SECRET`), its
/// votes on a managed PostgreSQL instance over the Cloud SQL unix socket (`DB_SOCKET_PATH`),
/// and its project id from the metadata server.
pub async fn on_managed_postgres(
    idp: &Idp,
) -> (OnPostgres, std::sync::Arc<gatehouse_run::Service>) {
    use gatehouse_run::{ServiceSpec, SqlInstanceSpec, SqlUser};

    let world = gatehouse_world::World::builder()
        .project(PROJECT)
        .build()
        .await
        .unwrap();
    let runner = gatehouse_run::Runner::new(
        world.iam.clone(),
        Some(world.secrets.clone()),
        gatehouse_run::RunConfig {
            // The identity server, reachable from inside the instance's namespace.
            forward: vec![idp.url.trim_start_matches("http://").parse().unwrap()],
            ..gatehouse_run::RunConfig::new(
                PROJECT,
                "us-central1",
                "127.0.0.1",
                world.dir.path().join("data"),
            )
        },
    );
    let iam = &world.iam;
    let sa = iam
        .create_account(PROJECT, "idp-sql-identity", "", "")
        .await
        .unwrap();
    let member = format!("serviceAccount:{}", sa.email);
    world
        .add_secret("db-pass", DB_PASSWORD.as_bytes())
        .await
        .unwrap();
    world
        .add_secret(
            "idp-sql-secrets",
            serde_json::json!({
                "CLOUD_SQL_CONNECTION_NAME": format!("{PROJECT}:us-central1:{SQL_INSTANCE}"),
                "DB_NAME": "votes",
                "DB_USER": DB_USER,
                "DB_PASSWORD": DB_PASSWORD,
            })
            .to_string()
            .as_bytes(),
        )
        .await
        .unwrap();
    iam.edit_binding(
        &format!("projects/{PROJECT}/secrets/idp-sql-secrets"),
        "roles/secretmanager.secretAccessor",
        &member,
        true,
    )
    .await
    .unwrap();
    iam.edit_binding(
        &format!("projects/{PROJECT}"),
        "roles/cloudsql.client",
        &member,
        true,
    )
    .await
    .unwrap();
    runner
        .start_sql(SqlInstanceSpec {
            name: SQL_INSTANCE.into(),
            databases: vec!["votes".into()],
            users: vec![SqlUser {
                name: DB_USER.into(),
                password_secret: "db-pass:latest".into(),
            }],
            tcp_port: None,
        })
        .await
        .expect("PostgreSQL 15 starts (apt-get install -y postgresql-15)");
    let spec = ServiceSpec::parse(&format!(
        "name: idp-sql\ncommand: [{:?}]\nservice_account: {}\nallow_unauthenticated: true\n\
         secrets: {{CLOUD_SQL_CREDENTIALS_SECRET: 'idp-sql-secrets:latest'}}\n\
         cloudsql_instances: ['{PROJECT}:us-central1:{SQL_INSTANCE}']\n\
         env: {{GATEHOUSE_IDENTITY_URL: {:?}, API_KEY: {API_KEY}}}\n",
        env!("CARGO_BIN_EXE_vote"),
        sa.email,
        idp.url
    ))
    .unwrap();
    let service = runner.deploy(spec).await.unwrap();
    (OnPostgres { world, runner }, service)
}

/// The IAM + Secret Manager world and the runner [`on_managed_postgres`] deployed on.
pub struct OnPostgres {
    pub world: gatehouse_world::World,
    pub runner: gatehouse_run::Runner,
}
