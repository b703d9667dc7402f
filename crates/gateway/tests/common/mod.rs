//! Helpers shared by the gateway's integration tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use gatehouse_tokens::{SigningKey, encode_rs256};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves `gw` on a fresh 127.0.0.1 port for the rest of the test; the address.
pub async fn serve(gw: &Arc<gatehouse_gateway::Gateway>) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let served = gw.clone();
    tokio::spawn(async move {
        gatehouse_gateway::serve(served, l, std::future::pending())
            .await
            .unwrap();
    });
    addr
}

/// `claims` (a JSON object) signed by `key` as an RS256 JWT.
pub fn token(key: &SigningKey, claims: Value) -> String {
    let Value::Object(m) = claims else {
        unreachable!()
    };
    encode_rs256(key, &m).unwrap()
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// One request as a raw backend parsed it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A keep-alive HTTP/1.1 backend that records every request and every byte it receives.
/// `GET /leak` answers its head at once and its body 100 ms later, the body being a complete
/// second response; `GET /extra` answers `ok` and then, 50 ms later, bytes nobody asked for.
#[derive(Clone, Default)]
pub struct RawBackend {
    seen: Arc<Mutex<Vec<Seen>>>,
    raw: Arc<Mutex<Vec<u8>>>,
}

pub const LEAK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\nvictim's secret";

impl RawBackend {
    pub async fn start() -> (String, Self) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let me = Self::default();
        let b = me.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                tokio::spawn(b.clone().serve(s));
            }
        });
        (format!("http://{addr}"), me)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn raw(&self) -> Vec<u8> {
        self.raw.lock().unwrap().clone()
    }

    async fn fill(&self, s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
        let mut tmp = [0u8; 8192];
        match s.read(&mut tmp).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                self.raw.lock().unwrap().extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    async fn line(&self, s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                let line = buf[..i].to_vec();
                buf.drain(..i + 2);
                return Some(line);
            }
            if !self.fill(s, buf).await {
                return None;
            }
        }
    }

    async fn serve(self, mut s: TcpStream) {
        let mut buf = Vec::new();
        loop {
            // The head.
            let (mut seen, len) = loop {
                let mut raw = [httparse::EMPTY_HEADER; 64];
                let mut r = httparse::Request::new(&mut raw);
                match r.parse(&buf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let seen = Seen {
                            method: r.method.unwrap().to_owned(),
                            path: r.path.unwrap().to_owned(),
                            headers: r
                                .headers
                                .iter()
                                .map(|h| {
                                    (
                                        h.name.to_ascii_lowercase(),
                                        String::from_utf8_lossy(h.value).into_owned(),
                                    )
                                })
                                .collect(),
                            body: Vec::new(),
                            trailers: Vec::new(),
                        };
                        break (seen, n);
                    }
                    Ok(httparse::Status::Partial) => {
                        if !self.fill(&mut s, &mut buf).await {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            };
            buf.drain(..len);
            // The body, framed as this backend reads it.
            if seen
                .header("transfer-encoding")
                .is_some_and(|v| v.contains("chunked"))
            {
                loop {
                    let Some(line) = self.line(&mut s, &mut buf).await else {
                        return;
                    };
                    let size = String::from_utf8_lossy(&line);
                    let size =
                        usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
                    if size == 0 {
                        loop {
                            let Some(t) = self.line(&mut s, &mut buf).await else {
                                return;
                            };
                            if t.is_empty() {
                                break;
                            }
                            let t = String::from_utf8_lossy(&t).into_owned();
                            let (k, v) = t.split_once(':').unwrap();
                            seen.trailers
                                .push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                        }
                        break;
                    }
                    while buf.len() < size + 2 {
                        if !self.fill(&mut s, &mut buf).await {
                            return;
                        }
                    }
                    seen.body.extend_from_slice(&buf[..size]);
                    buf.drain(..size + 2);
                }
            } else if let Some(n) = seen.header("content-length") {
                let n: usize = n.trim().parse().unwrap();
                while buf.len() < n {
                    if !self.fill(&mut s, &mut buf).await {
                        return;
                    }
                }
                seen.body = buf.drain(..n).collect();
            }
            self.seen.lock().unwrap().push(seen.clone());
            // The answer.
            let ok = match (seen.method.as_str(), seen.path.as_str()) {
                ("GET", "/leak") => {
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", LEAK.len());
                    if s.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    s.write_all(LEAK).await
                }
                ("GET", "/extra") => {
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    s.write_all(LEAK).await
                }
                (m, p) => {
                    let body = format!("served {m} {p}");
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    let mut out = head.into_bytes();
                    if m != "HEAD" {
                        out.extend_from_slice(body.as_bytes());
                    }
                    s.write_all(&out).await
                }
            };
            if ok.is_err() {
                return;
            }
        }
    }
}

/// How a test JWKS server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    /// Answers 503.
    Down,
    /// Accepts the request and never answers.
    Hang,
}

/// A JWKS server whose keys and health a test changes, counting the times it was asked.
#[derive(Clone)]
pub struct Issuer {
    pub keys: Arc<Mutex<Vec<SigningKey>>>,
    health: Arc<Mutex<Health>>,
    hits: Arc<std::sync::atomic::AtomicUsize>,
}

impl Issuer {
    /// Serves `key` on 127.0.0.1; the issuer and its JWKS URL.
    pub async fn start(key: &SigningKey) -> (Self, String) {
        let issuer = Self {
            keys: Arc::new(Mutex::new(vec![copy_key(key)])),
            health: Arc::new(Mutex::new(Health::Up)),
            hits: Arc::default(),
        };
        let app = Router::new()
            .route("/jwks", axum::routing::get(issuer_jwks))
            .with_state(issuer.clone());
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (issuer, format!("http://{addr}/jwks"))
    }

    pub fn set(&self, h: Health) {
        *self.health.lock().unwrap() = h;
    }

    /// How many times the JWKS was asked for.
    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn issuer_jwks(
    axum::extract::State(i): axum::extract::State<Issuer>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    i.hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let health = *i.health.lock().unwrap();
    match health {
        Health::Down => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
        Health::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "late".into_response()
        }
        Health::Up => {
            let keys: Vec<Value> = i
                .keys
                .lock()
                .unwrap()
                .iter()
                .map(|k| k.public().jwk())
                .collect();
            axum::Json(json!({ "keys": keys })).into_response()
        }
    }
}

/// A second handle on the same key.
pub fn copy_key(k: &SigningKey) -> SigningKey {
    SigningKey::from_pkcs8(k.kid().into(), k.pkcs8_der()).unwrap()
}

/// A JWKS server for `keys`.
pub async fn jwks_server(keys: &[&SigningKey]) -> String {
    let body = json!({"keys": keys.iter().map(|k| k.public().jwk()).collect::<Vec<_>>()});
    let app = Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let body = body.clone();
            async move { axum::Json(body) }
        }),
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}/jwks")
}

/// Serves `config` with a real gateway on 127.0.0.1:0; returns its `host:port`.
pub async fn serve_config(config: &str) -> String {
    let gw = gatehouse_gateway::Gateway::new(
        config,
        None,
        gatehouse_gateway::GatewayOptions::default(),
        None,
    )
    .await
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        gatehouse_gateway::serve(gw, l, std::future::pending())
            .await
            .unwrap();
    });
    addr.to_string()
}
