//! The runner's control socket: a small JSON API on a unix socket in the data directory
//! (`<data_root>/run.sock`, mode 0600 — whoever may read the data directory may ask), which
//! `gatehouse run services list|describe` read. Services are described in the shape of Cloud
//! Run Admin API v2 `Service` resources, with the live instances added; secret values never
//! appear, only their references.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::{Runner, Service};

/// Where a data directory's control socket lives.
pub fn socket_path(data_root: &Path) -> PathBuf {
    data_root.join("run.sock")
}

/// A service as `gatehouse run services describe` shows it.
pub fn describe(runner: &Runner, service: &Service) -> Value {
    let spec = service.spec.load();
    let revision = service.revision.load();
    let base = format!(
        "projects/{}/locations/{}",
        runner.config.project, runner.config.region
    );
    let mut env: Vec<Value> = spec
        .env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    for (k, reference) in &spec.secrets {
        let (secret, version) = reference.split_once(':').unwrap_or((reference, "latest"));
        env.push(json!({"name": k, "valueSource": {"secretKeyRef": {"secret": secret, "version": version}}}));
    }
    let instances: Vec<Value> = revision
        .instances()
        .iter()
        .map(|i| {
            json!({
                "name": i.id,
                "port": i.port(),
                "ready": i.ready_addr().is_some(),
                "inFlight": i.in_flight(),
                "restarts": i.restarts(),
                "startTime": gatehouse_iam::rfc3339(i64::try_from(i.started_ms).unwrap_or(0)),
            })
        })
        .collect();
    let ready = instances.iter().any(|i| i["ready"] == true) || spec.min_instances == 0;
    json!({
        "name": service.resource,
        "uri": service.url,
        "latestCreatedRevision": format!("{base}/services/{}/revisions/{}", spec.name, revision.name),
        "latestReadyRevision": format!("{base}/services/{}/revisions/{}", spec.name, revision.name),
        "ingress": "INGRESS_TRAFFIC_ALL",
        "allowUnauthenticated": spec.allow_unauthenticated,
        "customAudiences": spec.custom_audiences,
        "template": {
            "serviceAccount": spec.service_account,
            "scaling": {"minInstanceCount": spec.min_instances, "maxInstanceCount": spec.max_instances},
            "maxInstanceRequestConcurrency": spec.concurrency,
            "idleTimeout": format!("{}s", spec.idle_timeout_secs),
            "containers": [{
                "command": spec.argv(),
                "env": env,
                "startupProbe": spec.health_check_path.as_ref().map_or_else(
                    || json!({"tcpSocket": {}}),
                    |p| json!({"httpGet": {"path": p}}),
                ),
            }],
            "volumes": spec.cloudsql_instances.iter().map(|c| json!({"name": "cloudsql", "cloudSqlInstance": {"instances": [c]}})).collect::<Vec<_>>(),
        },
        "terminalCondition": {"type": "Ready", "state": if ready { "CONDITION_SUCCEEDED" } else { "CONDITION_RECONCILING" }},
        "instances": instances,
        "logFile": crate::logs::log_path(&runner.config.data_root, &spec.name),
    })
}

fn not_found(name: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"code": 404, "message": format!("service {name} is not deployed here"), "status": "NOT_FOUND"}})),
    )
        .into_response()
}

async fn list(State(runner): State<Runner>) -> Json<Value> {
    let services: Vec<Value> = runner
        .services()
        .iter()
        .map(|s| describe(&runner, s))
        .collect();
    let sql: Vec<Value> = runner
        .sql_instances()
        .iter()
        .map(|i| {
            json!({
                "name": i.spec.name,
                "connectionName": i.connection_name,
                "socket": i.socket_dir.join(".s.PGSQL.5432"),
                "databases": i.spec.databases,
            })
        })
        .collect();
    Json(json!({"services": services, "sqlInstances": sql}))
}

async fn get_one(State(runner): State<Runner>, UrlPath(name): UrlPath<String>) -> Response {
    match runner.service(&name) {
        Some(s) => Json(describe(&runner, &s)).into_response(),
        None => not_found(&name),
    }
}

/// The control API.
pub fn router(runner: Runner) -> Router {
    router_with(runner, None, None)
}

/// The control API; with `shutdown`, `POST /v1/shutdown` (what `gatehouse down` calls)
/// notifies it.
pub fn router_with(
    runner: Runner,
    shutdown: Option<Arc<tokio::sync::Notify>>,
    extra: Option<Router>,
) -> Router {
    let mut r = Router::new()
        .route("/v1/services", get(list))
        .route("/v1/services/{name}", get(get_one))
        .with_state(runner);
    if let Some(n) = shutdown {
        r = r.route(
            "/v1/shutdown",
            axum::routing::post(move || {
                let n = n.clone();
                async move {
                    n.notify_waiters();
                    n.notify_one();
                    Json(json!({"stopping": true}))
                }
            }),
        );
    }
    if let Some(extra) = extra {
        r = r.merge(extra);
    }
    r
}

/// Serves the control API on `<data_root>/run.sock`. Refuses when another live process serves
/// the same directory; a socket left behind by a process that died is replaced.
pub async fn serve(runner: Runner) -> std::io::Result<tokio::task::JoinHandle<()>> {
    serve_with(runner, None, None).await
}

/// [`serve`] with `POST /v1/shutdown` notifying `shutdown`.
pub async fn serve_with(
    runner: Runner,
    shutdown: Option<Arc<tokio::sync::Notify>>,
    extra: Option<Router>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = socket_path(&runner.config.data_root);
    if path.exists() {
        if tokio::net::UnixStream::connect(&path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "another gatehouse process is running services from {} (its control socket {} answers)",
                    runner.config.data_root.display(),
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let app = router_with(runner, shutdown, extra);
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}

/// `GET path` on a data directory's control socket: the status and JSON body.
pub async fn query(data_root: &Path, path: &str) -> std::io::Result<(u16, Value)> {
    request(data_root, "GET", path).await
}

/// `method path` on a data directory's control socket: the status and JSON body (HTTP/1.1
/// over the unix socket, spoken by hyper).
pub async fn request(data_root: &Path, method: &str, path: &str) -> std::io::Result<(u16, Value)> {
    use http_body_util::BodyExt as _;
    let socket = socket_path(data_root);
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "no gatehouse process is running services from {} ({}: {e}); start one with \
                 `gatehouse run deploy` or `gatehouse up`",
                    data_root.display(),
                    socket.display()
                ),
            )
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let method = hyper::Method::from_bytes(method.as_bytes()).map_err(std::io::Error::other)?;
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "gatehouse")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(std::io::Error::other)?;
    let answer = sender
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    let status = answer.status().as_u16();
    let body = answer
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    drop(sender);
    connection.abort();
    let value = serde_json::from_slice(&body).map_err(std::io::Error::other)?;
    Ok((status, value))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// The client reads what the server sends, whatever its framing: a large body goes out
    /// chunked, a small one with a length.
    #[tokio::test]
    async fn the_client_reads_chunked_and_sized_answers() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u32> = (0..20_000).collect();
        let app = Router::new()
            .route(
                "/big",
                get(move || {
                    let big = big.clone();
                    async move {
                        // Several pieces, no length known up front: sent chunked.
                        let bytes = serde_json::to_vec(&json!({"n": big})).unwrap();
                        let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
                            bytes.chunks(4096).map(|c| Ok(c.to_vec())).collect();
                        let body = axum::body::Body::from_stream(futures::stream::iter(pieces));
                        (StatusCode::OK, body)
                    }
                }),
            )
            .route("/gone", get(|| async { not_found("x") }));
        let listener = tokio::net::UnixListener::bind(socket_path(dir.path())).unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let (status, v) = query(dir.path(), "/big").await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(v["n"].as_array().unwrap().len(), 20_000);
        assert_eq!(v["n"][19_999], 19_999);
        let (status, v) = request(dir.path(), "GET", "/gone").await.unwrap();
        assert_eq!(status, 404);
        assert_eq!(v["error"]["status"], "NOT_FOUND");
        server.abort();
        // Nobody listening: the error says how to start one.
        let err = query(dir.path(), "/big").await.unwrap_err();
        assert!(err.to_string().contains("gatehouse up"), "{err}");
    }
}
