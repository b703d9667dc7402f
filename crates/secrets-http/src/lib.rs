//! The Secret Manager v1 REST API as `secretmanager.googleapis.com` serves it (the paths and
//! proto3 JSON the `google-cloud-secret-manager` REST transport uses), over
//! [`gatehouse_secrets::Secrets`]. Errors are Google's `{"error":{"code","message","status"}}`.

#![forbid(unsafe_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use gatehouse_iam::Error;
use gatehouse_iam_http::{caller, error_response, policy_verb};
use gatehouse_secrets::{NewPayload, Secrets};
use serde_json::{Value, json};

/// Most entries one list page holds.
const MAX_PAGE: usize = 25_000;

/// The Secret Manager router (`/v1/projects/{p}/secrets…`).
pub fn router(secrets: Secrets) -> Router {
    Router::new().fallback(dispatch).with_state(secrets)
}

/// Whether `path` is one of Secret Manager's (for a control plane that serves several APIs on
/// one listener).
pub fn handles(path: &str) -> bool {
    path.strip_prefix("/v1/projects/")
        .and_then(|r| r.split_once('/'))
        .is_some_and(|(_, rest)| rest == "secrets" || rest.starts_with("secrets/"))
}

async fn dispatch(State(secrets): State<Secrets>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match gatehouse_iam_http::read_body(body).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    match route(
        &secrets,
        &parts.method,
        parts.uri.path(),
        &query,
        &parts.headers,
        &body,
    )
    .await
    {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) => error_response(&e),
    }
}

fn body_json(body: &Bytes) -> Result<Value, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| Error::InvalidArgument(format!("Invalid JSON payload received. {e}")))
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn not_found(path: &str) -> Error {
    Error::NotFound(format!(
        "The requested URL {path} was not found on this server."
    ))
}

/// One page of `items` under `field`, with Google's `nextPageToken` / `totalSize` (which
/// Google leaves at 0 when a filter is set).
fn page(
    items: Vec<Value>,
    field: &str,
    query: &[(String, String)],
    filtered: bool,
) -> Result<Value, Error> {
    let size = match param(query, "pageSize") {
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| Error::InvalidArgument(format!("Invalid pageSize: {s}")))?,
        None => MAX_PAGE,
    };
    let size = if size == 0 {
        MAX_PAGE
    } else {
        size.min(MAX_PAGE)
    };
    let start = match param(query, "pageToken").filter(|t| !t.is_empty()) {
        Some(t) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.strip_prefix("offset:")
                    .and_then(|n| n.parse::<usize>().ok())
            })
            .ok_or_else(|| Error::InvalidArgument("Invalid page token.".into()))?,
        None => 0,
    };
    let total = items.len();
    let chunk: Vec<Value> = items.into_iter().skip(start).take(size).collect();
    let mut out = json!({});
    if !filtered {
        out["totalSize"] = json!(total);
    }
    if !chunk.is_empty() {
        out[field] = json!(chunk);
    }
    if start + size < total {
        out["nextPageToken"] = json!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(format!("offset:{}", start + size))
        );
    }
    Ok(out)
}

async fn route(
    secrets: &Secrets,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, Error> {
    let rest = path.strip_prefix("/v1/").ok_or_else(|| not_found(path))?;
    let base = format!(
        "{}/",
        secrets.iam().config().public_url.trim_end_matches('/')
    );
    let who = caller(
        secrets.iam(),
        headers,
        &["https://secretmanager.googleapis.com/", base.as_str()],
    )
    .await?;
    if matches!(who, gatehouse_iam::Principal::Anonymous) {
        return Err(Error::missing_credentials());
    }
    // projects/{p}/secrets[/{s}[:verb | /versions[/{v}[:verb]]]]
    let segs: Vec<&str> = rest.split('/').collect();
    let get = method == Method::GET;
    let post = method == Method::POST;
    match segs.as_slice() {
        ["projects", p, "secrets"] => {
            if get {
                let filter = param(query, "filter").filter(|f| !f.trim().is_empty());
                let list: Vec<Value> = secrets
                    .list_secrets(&who, p, filter)
                    .await?
                    .iter()
                    .map(|s| s.to_json())
                    .collect();
                page(list, "secrets", query, filter.is_some())
            } else if post {
                let id = param(query, "secretId").unwrap_or_default();
                Ok(secrets
                    .create_secret(&who, p, id, &body_json(body)?)
                    .await?
                    .to_json())
            } else {
                Err(not_found(path))
            }
        }
        ["projects", p, "secrets", s] => {
            let (secret, verb) = match s.split_once(':') {
                Some((s, v)) => (s, Some(v)),
                None => (*s, None),
            };
            let name = format!("projects/{p}/secrets/{secret}");
            match (verb, method) {
                (None, &Method::GET) => Ok(secrets.get_secret(&who, &name).await?.to_json()),
                (None, &Method::PATCH) => {
                    let mask: Vec<String> = param(query, "updateMask")
                        .unwrap_or_default()
                        .split(',')
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                        .collect();
                    Ok(secrets
                        .update_secret(&who, &name, &body_json(body)?, &mask)
                        .await?
                        .to_json())
                }
                (None, &Method::DELETE) => {
                    secrets
                        .delete_secret(&who, &name, param(query, "etag"))
                        .await?;
                    Ok(json!({}))
                }
                (Some("addVersion"), &Method::POST) => {
                    let b = body_json(body)?;
                    let data_text = b
                        .pointer("/payload/data")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let data = gatehouse_iam::decode_bytes(data_text)?;
                    let crc = match b.pointer("/payload/dataCrc32c") {
                        None | Some(Value::Null) => None,
                        Some(Value::String(s)) => Some(s.parse::<i64>().map_err(|_| {
                            Error::InvalidArgument(format!("Invalid dataCrc32c: {s}"))
                        })?),
                        Some(Value::Number(n)) => n.as_i64(),
                        Some(other) => {
                            return Err(Error::InvalidArgument(format!(
                                "Invalid dataCrc32c: {other}"
                            )));
                        }
                    };
                    Ok(secrets
                        .add_version(
                            &who,
                            &name,
                            NewPayload {
                                data: &data,
                                crc32c: crc,
                            },
                        )
                        .await?
                        .to_json())
                }
                (Some(v @ ("getIamPolicy" | "setIamPolicy" | "testIamPermissions")), m)
                    if m == Method::POST || (v == "getIamPolicy" && m == Method::GET) =>
                {
                    // Existence (and the right to know it) first, then the policy call's own
                    // permission.
                    let perm = if v == "testIamPermissions" {
                        "secretmanager.secrets.get".to_owned()
                    } else {
                        format!("secretmanager.secrets.{v}")
                    };
                    let resource = if v == "testIamPermissions" {
                        format!(
                            "projects/{}/secrets/{secret}",
                            secrets.iam().project(p).await?.project_id
                        )
                    } else {
                        secrets.policy_resource(&who, &name, &perm).await?
                    };
                    let q = query
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join("&");
                    let res = policy_verb(
                        secrets.iam(),
                        &who,
                        &resource,
                        v,
                        "secretmanager.secrets",
                        body,
                        &q,
                    )
                    .await?;
                    response_json(res).await
                }
                _ => Err(not_found(path)),
            }
        }
        ["projects", p, "secrets", s, "versions"] if get => {
            let name = format!("projects/{p}/secrets/{s}");
            let filter = param(query, "filter").filter(|f| !f.trim().is_empty());
            let list: Vec<Value> = secrets
                .list_versions(&who, &name, filter)
                .await?
                .iter()
                .map(|v| v.to_json())
                .collect();
            page(list, "versions", query, filter.is_some())
        }
        ["projects", p, "secrets", s, "versions", v] => {
            let (version, verb) = match v.split_once(':') {
                Some((v, verb)) => (v, Some(verb)),
                None => (*v, None),
            };
            let name = format!("projects/{p}/secrets/{s}/versions/{version}");
            match (verb, method) {
                (None, &Method::GET) => Ok(secrets.get_version(&who, &name).await?.to_json()),
                (Some("access"), &Method::GET) => {
                    let a = secrets.access(&who, &name).await?;
                    Ok(json!({
                        "name": a.name,
                        "payload": {
                            "data": base64::engine::general_purpose::STANDARD.encode(a.data.as_slice()),
                            "dataCrc32c": a.crc32c.to_string(),
                        },
                    }))
                }
                (Some(verb @ ("enable" | "disable" | "destroy")), &Method::POST) => {
                    let state = match verb {
                        "enable" => "ENABLED",
                        "disable" => "DISABLED",
                        _ => "DESTROYED",
                    };
                    let b = body_json(body)?;
                    let etag = b
                        .get("etag")
                        .and_then(Value::as_str)
                        .filter(|e| !e.is_empty());
                    Ok(secrets.set_state(&who, &name, state, etag).await?.to_json())
                }
                _ => Err(not_found(path)),
            }
        }
        _ => Err(not_found(path)),
    }
}

/// The JSON body of a response made by the IAM layer.
async fn response_json(res: Response) -> Result<Value, Error> {
    let bytes = axum::body::to_bytes(res.into_body(), 1024 * 1024)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Internal(e.to_string()))
}
