//! CATS v DOGS — Google's `run/idp-sql` Cloud Run sample, with the Node version's observable
//! behaviour: `GET /` renders the tally, `POST /` casts a vote for the signed-in user (an
//! Identity Platform / Firebase ID token in `Authorization`), votes live in PostgreSQL (over
//! the Cloud SQL unix socket or TCP) or SQLite, and every log entry is one JSON line.
//!
//! Must not: know Gatehouse's internals: it speaks only public protocols (ID tokens checked
//! with `gatehouse-verify` as firebase-admin checks them, the Cloud Run contract), so it runs
//! unchanged against Google.

#![forbid(unsafe_code)]

pub mod config;
pub mod db;
pub mod logging;
pub mod page;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gatehouse_verify::{GOOGLE_KEYS_BASE, IdTokenVerifier};

use crate::db::{DbError, Votes};
use crate::page::ClientConfig;

/// The longest a request waits for the database: a connection within
/// [`db::ACQUIRE_TIMEOUT`], the statement within what is left. Past it the answer is a 503 (a
/// vote still being written is finished and logged, but not acknowledged).
pub const DB_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);

/// The page's sign-in client.
const APP_JS: &str = include_str!("../static/app.js");

/// What the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The process environment (credentials are read from it on each connection attempt).
    pub env: HashMap<String, String>,
    pub table: String,
    /// Use the sample's COUNT queries instead of the tally (benchmarks).
    pub count_mode: bool,
    pub project_id: Option<String>,
    pub verifier: Option<IdTokenVerifier>,
    pub client: Option<ClientConfig>,
}

impl Settings {
    /// From the environment: `TABLE`, `TALLY_MODE`, the project id (`GOOGLE_CLOUD_PROJECT` or
    /// the metadata server), `GATEHOUSE_IDENTITY_URL` (the identity server whose keys verify
    /// tokens and whose sign-in page the page uses; without it, Google's keys), `API_KEY`,
    /// `ID_TOKEN_ISSUER`.
    pub async fn from_env(env: HashMap<String, String>) -> Result<Self, String> {
        let table = config::table(&env)?;
        let count_mode = match env.get("TALLY_MODE").map(String::as_str) {
            None | Some("" | "tally") => false,
            Some("count") => true,
            Some(other) => return Err(format!("TALLY_MODE {other:?} must be tally or count")),
        };
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| e.to_string())?;
        let project_id = config::project_id(&env, &http).await;
        let identity = env
            .get("GATEHOUSE_IDENTITY_URL")
            .filter(|v| !v.is_empty())
            .cloned();
        let verifier = project_id.as_deref().map(|p| {
            let v = IdTokenVerifier::new(
                p,
                identity.as_deref().unwrap_or(GOOGLE_KEYS_BASE),
                http.clone(),
            );
            match env.get("ID_TOKEN_ISSUER").filter(|v| !v.is_empty()) {
                Some(iss) => v.with_issuer(iss),
                None => v,
            }
        });
        let client = match (&identity, &project_id) {
            (Some(url), Some(p)) => Some(ClientConfig {
                api_key: env.get("API_KEY").cloned().unwrap_or_default(),
                auth_url: env
                    .get("GATEHOUSE_IDENTITY_PUBLIC_URL")
                    .filter(|v| !v.is_empty())
                    .unwrap_or(url)
                    .trim_end_matches('/')
                    .to_owned(),
                project_id: p.clone(),
            }),
            _ => None,
        };
        Ok(Self {
            env,
            table,
            count_mode,
            project_id,
            verifier,
            client,
        })
    }
}

struct Inner {
    settings: Settings,
    votes: tokio::sync::OnceCell<Votes>,
}

/// The application.
#[derive(Clone)]
pub struct App(Arc<Inner>);

impl App {
    pub fn new(settings: Settings) -> Self {
        Self(Arc::new(Inner {
            settings,
            votes: tokio::sync::OnceCell::new(),
        }))
    }

    /// The database, connected (and the schema created) on first use; a failure is not kept,
    /// so the next request tries again.
    pub async fn votes(&self) -> Result<&Votes, DbError> {
        let s = &self.0.settings;
        self.0
            .votes
            .get_or_try_init(|| async {
                let target = config::db_target(&s.env).map_err(DbError::Failed)?;
                Votes::open(&target, &s.table, s.count_mode).await
            })
            .await
    }

    /// Closes the pool, if one was opened.
    pub async fn close(&self) {
        if let Some(v) = self.0.votes.get() {
            v.close().await;
        }
    }

    /// The routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(index).post(vote))
            .route("/config.js", get(config_js))
            .route("/app.js", get(app_js))
            .fallback(not_found)
            .method_not_allowed_fallback(not_found)
            .with_state(self.clone())
    }

    fn trace(&self, headers: &HeaderMap) -> Option<String> {
        logging::trace_field(
            headers
                .get("x-cloud-trace-context")
                .and_then(|v| v.to_str().ok()),
            self.0.settings.project_id.as_deref(),
        )
    }
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `work` within [`DB_DEADLINE`]; running out of time counts as the database being unavailable.
async fn in_time<T>(work: impl Future<Output = Result<T, DbError>>) -> Result<T, DbError> {
    tokio::time::timeout(DB_DEADLINE, work)
        .await
        .unwrap_or_else(|_| {
            Err(DbError::Unavailable(format!(
                "no answer from the database within {} ms",
                DB_DEADLINE.as_millis()
            )))
        })
}

/// The status for a database error: 503 (with `Retry-After`) when a retry may work, else 500.
fn db_failure(e: &DbError, body: &'static str) -> Response {
    if e.is_unavailable() {
        let mut res = html(StatusCode::SERVICE_UNAVAILABLE, body.into());
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        res
    } else {
        html(StatusCode::INTERNAL_SERVER_ERROR, body.into())
    }
}

async fn index(State(app): State<App>, headers: HeaderMap) -> Response {
    let tally = in_time(async {
        match app.votes().await {
            Ok(v) => v.tally().await,
            Err(e) => Err(e),
        }
    })
    .await;
    match tally {
        Ok(t) => html(
            StatusCode::OK,
            page::render(&t, app.0.settings.client.as_ref()),
        ),
        Err(e) => {
            logging::entry(
                "ERROR",
                &format!("Error when querying the Cloud SQL database: {e}"),
                app.trace(&headers).as_deref(),
                None,
            );
            db_failure(&e, "Unable to load page; see logs for more details.")
        }
    }
}

/// The `team` of a form or JSON body; `None` unless it is there exactly once, as a string.
fn team(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if json {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        return v.get("team")?.as_str().map(str::to_owned);
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    let mut teams = pairs.into_iter().filter(|(k, _)| k == "team");
    let first = teams.next()?.1;
    teams.next().is_none().then_some(first)
}

async fn vote(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let trace = app.trace(&headers);
    // As the sample: no header (or an empty one) is 401; whatever follows the first space is
    // the token. A header with nothing after the space is 403 here (the sample fails with 500).
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    if auth.is_empty() {
        return plain(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let token = auth.split(' ').nth(1).unwrap_or("");
    let verified = match &app.0.settings.verifier {
        None => Err("no project id is configured (set GOOGLE_CLOUD_PROJECT)".to_owned()),
        Some(_) if token.is_empty() => Err("no token after the scheme".to_owned()),
        Some(v) => v.verify(token).await.map_err(|e| e.to_string()),
    };
    let uid = match verified {
        Ok(t) => t.uid,
        Err(e) => {
            logging::entry(
                "ERROR",
                &format!("Error with authentication: {e}"),
                trace.as_deref(),
                None,
            );
            return plain(StatusCode::FORBIDDEN, "Forbidden");
        }
    };
    let team = match team(&headers, &body) {
        Some(t) if t == "CATS" || t == "DOGS" => t,
        _ => return html(StatusCode::BAD_REQUEST, "Invalid team specified.".into()),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    // The write and its log line run to completion even if the client goes away meanwhile
    // (the request future may be dropped; a stored vote is always logged).
    let task = {
        let (app, team, uid, trace) = (app.clone(), team.clone(), uid.clone(), trace.clone());
        tokio::spawn(async move {
            let stored = match app.votes().await {
                Ok(v) => v.vote(&team, now, &uid).await,
                Err(e) => Err(e),
            };
            if stored.is_ok() {
                logging::entry(
                    "INFO",
                    "vote_inserted",
                    trace.as_deref(),
                    Some(logging::vote(&team, now, &uid)),
                );
            }
            stored
        })
    };
    // The answer waits for the commit: a 200 means the vote is stored.
    let stored = in_time(async {
        task.await
            .unwrap_or_else(|e| Err(DbError::Failed(e.to_string())))
    })
    .await;
    match stored {
        Ok(()) => html(
            StatusCode::OK,
            format!("Successfully voted for {team} at {}", page::js_date(now)),
        ),
        Err(e) => {
            logging::entry(
                "ERROR",
                &format!("Error while attempting to submit vote: {e}"),
                trace.as_deref(),
                None,
            );
            db_failure(&e, "Unable to cast vote; see logs for more details.")
        }
    }
}

fn javascript(body: String) -> Response {
    let mut res = body.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=UTF-8"),
    );
    res
}

async fn config_js(State(app): State<App>) -> Response {
    match &app.0.settings.client {
        Some(c) => javascript(page::config_js(c)),
        None => javascript(
            "const config = null; // set GATEHOUSE_IDENTITY_URL and GOOGLE_CLOUD_PROJECT for sign-in\n"
                .into(),
        ),
    }
}

async fn app_js() -> Response {
    javascript(APP_JS.to_owned())
}

async fn not_found(req: Request) -> Response {
    let path = page::escape(req.uri().path());
    html(
        StatusCode::NOT_FOUND,
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Error</title>\n</head>\n<body>\n<pre>Cannot {} {path}</pre>\n</body>\n</html>\n",
            req.method()
        ),
    )
}

/// The server, configured from the environment, until SIGTERM / Ctrl-C (what `vote` and
/// `gatehouse apps vote` run).
pub async fn run_from_env() -> std::process::ExitCode {
    let env: HashMap<String, String> = std::env::vars().collect();
    let port: u16 = env.get("PORT").and_then(|p| p.parse().ok()).unwrap_or(8080);
    // Where the runner says (`GATEHOUSE_BIND_ADDR`: its namespace's 0.0.0.0, or 127.0.0.1
    // without one), else 0.0.0.0 as on Cloud Run.
    let host: std::net::IpAddr = env
        .get("GATEHOUSE_BIND_ADDR")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let settings = match Settings::from_env(env).await {
        Ok(s) => s,
        Err(e) => {
            logging::error(&format!("vote: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    let app = App::new(settings);
    if let Err(e) = app.votes().await {
        // As the sample: keep serving; each request retries and answers 500 meanwhile.
        logging::error(&format!(
            "Error while connecting to the Cloud SQL database. Check that your username and password are correct, that the Cloud SQL proxy is running (locally), and that the PostgreSQL instance/database exists and is ready for use: {e}"
        ));
    }
    let listener = match tokio::net::TcpListener::bind((host, port)).await {
        Ok(l) => l,
        Err(e) => {
            logging::error(&format!("vote: cannot listen on port {port}: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    logging::info(&format!("vote: listening on port {port}"));
    let served = axum::serve(listener, app.router())
        .with_graceful_shutdown(async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return std::future::pending().await,
                };
            tokio::select! {
                _ = term.recv() => logging::info("vote: received SIGTERM"),
                _ = tokio::signal::ctrl_c() => logging::info("vote: received SIGINT"),
            }
        })
        .await;
    // In-flight requests have their answers; now the pool.
    app.close().await;
    logging::info("DB connection closed.");
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            logging::error(&format!("vote: {e}"));
            std::process::ExitCode::FAILURE
        }
    }
}
