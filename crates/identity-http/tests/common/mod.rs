//! In-process test servers: the real `serve` on 127.0.0.1:0 over a real store.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use gatehouse_identity::{
    Identity, IdentityOptions, ManualClock, ProjectConfig, RateLimits, SmtpConfig,
};
use gatehouse_store::Store;
use gatehouse_testkit::{TempDir, temp_dir};
use serde_json::{Value, json};

pub const NOW_MS: i64 = 1_800_000_000_000;

pub struct Server {
    pub url: String,
    pub identity: Identity,
    pub clock: Arc<ManualClock>,
    pub http: reqwest::Client,
    _dir: Option<TempDir>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

pub struct Builder {
    pub projects: Vec<ProjectConfig>,
    pub limits: RateLimits,
    pub smtp: Option<SmtpConfig>,
    pub database_url: Option<String>,
    pub rotation_secs: i64,
    pub proxy_hops: usize,
    /// `HttpOptions::read_timeout` (`None`: its default).
    pub read_timeout: Option<std::time::Duration>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            projects: vec![ProjectConfig::development("demo-project")],
            limits: RateLimits::off(),
            smtp: None,
            database_url: None,
            rotation_secs: 21_600,
            proxy_hops: 0,
            read_timeout: None,
        }
    }
}

impl Builder {
    pub fn project(mut self, p: ProjectConfig) -> Self {
        self.projects = vec![p];
        self
    }

    /// The identity service this builder describes, not yet served; links point at
    /// `public_url`.
    pub async fn build(self, public_url: &str) -> (Identity, Arc<ManualClock>, TempDir) {
        let dir = temp_dir("gatehouse-it").unwrap();
        let url = self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("db.sqlite").display()
            )
        });
        let store = Store::connect(&url).await.unwrap();
        let clock = Arc::new(ManualClock::new(NOW_MS));
        let identity = Identity::new(IdentityOptions {
            store,
            clock: clock.clone(),
            projects: self.projects,
            rate_limits: self.limits,
            smtp: self.smtp,
            public_url: public_url.to_owned(),
            key_rotation_secs: self.rotation_secs,
            master_key: Arc::new(gatehouse_identity::MasterKey::generate().unwrap()),
            authority: None,
        })
        .await
        .unwrap();
        (identity, clock, dir)
    }

    pub async fn start(self) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy_hops = self.proxy_hops;
        let read_timeout = self.read_timeout;
        let (identity, clock, dir) = self.build(&format!("http://{addr}")).await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = identity.clone();
        let mut options = gatehouse_identity_http::HttpOptions {
            proxy_hops,
            ..Default::default()
        };
        if let Some(t) = read_timeout {
            options.read_timeout = t;
        }
        tokio::spawn(async move {
            gatehouse_identity_http::serve_with(served, options, listener, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Server {
            url: format!("http://{addr}"),
            identity,
            clock,
            http: reqwest::Client::new(),
            _dir: Some(dir),
            _shutdown: tx,
        }
    }
}

impl Server {
    pub async fn dev() -> Self {
        Builder::default().start().await
    }

    /// POST a client call (`?key=`) and return (status, body).
    pub async fn call(&self, op: &str, key: &str, body: Value) -> (u16, Value) {
        let url = format!(
            "{}/identitytoolkit.googleapis.com/v1/accounts:{op}?key={key}",
            self.url
        );
        let res = self.http.post(url).json(&body).send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// POST an admin call (`Authorization: Bearer`) under `/v1/projects/{p}/...`.
    pub async fn admin(
        &self,
        project: &str,
        path: &str,
        bearer: &str,
        body: Value,
    ) -> (u16, Value) {
        let url = format!(
            "{}/identitytoolkit.googleapis.com/v1/projects/{project}{path}",
            self.url
        );
        let res = self
            .http
            .post(url)
            .bearer_auth(bearer)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn refresh(&self, key: &str, refresh_token: &str) -> (u16, Value) {
        let url = format!("{}/securetoken.googleapis.com/v1/token?key={key}", self.url);
        let res = self
            .http
            .post(url)
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn sign_up(&self, email: &str, password: &str) -> Value {
        let (s, b) = self
            .call(
                "signUp",
                "k",
                json!({"email": email, "password": password, "returnSecureToken": true}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b
    }

    /// The live codes of `demo-project`, as the emulator's `/oobCodes` route lists them.
    pub async fn dev_oob_codes(&self) -> Vec<Value> {
        let listed: Value = self
            .get("/emulator/v1/projects/demo-project/oobCodes")
            .await
            .json()
            .await
            .unwrap();
        listed["oobCodes"].as_array().unwrap().clone()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
    }
}

/// The Firebase error message of a response body.
pub fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The decoded payload of a JWT.
pub fn payload(token: &str) -> Value {
    use base64::Engine as _;
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

/// The decoded header of a JWT.
pub fn header(token: &str) -> Value {
    use base64::Engine as _;
    let p = token.split('.').next().unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

/// A log sink for `tracing_subscriber::fmt().with_writer(..)`: everything written, in memory.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures this thread's log lines (JSON, `level` and up) until the guard is dropped.
pub fn capture_logs(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_writer(move || sink.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}
