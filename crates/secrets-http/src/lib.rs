//! The Secret Manager v1 REST API as `secretmanager.googleapis.com` serves it (the paths and
//! proto3 JSON the `google-cloud-secret-manager` REST transport uses), over
//! [`gatehouse_secrets::Secrets`].
//!
//! Owns: Secret Manager's route table and its resources' proto3 JSON ([`wire`], which the CLI
//! prints too). Google's conventions (routing, the error envelope and statuses, callers,
//! paging, the IAM policy mixin) come from `gatehouse-google-api`.
//!
//! Must not: decide access or store anything (that is `gatehouse-secrets`), or depend on the
//! IAM HTTP API.

#![forbid(unsafe_code)]

pub mod wire;

use axum::Json;
use axum::http::Method;
use gatehouse_google_api::iam_policy::policy_verb;
use gatehouse_google_api::{Api, ApiError, Call, Caller, Miss, PageRequest};
use gatehouse_secrets::{NewPayload, Secrets};
use serde_json::{Value, json};

/// Most entries one list page holds.
const MAX_PAGE: usize = 25_000;

type Reply = Result<Json<Value>, ApiError>;

/// The Secret Manager router (`/v1/projects/{p}/secrets…`).
pub fn router(secrets: Secrets) -> axum::Router {
    api().into_router(secrets)
}

/// Secret Manager's route table.
fn api() -> Api<Secrets> {
    const SECRETS: &str = "/v1/projects/{project}/secrets";
    const SECRET: &str = "/v1/projects/{project}/secrets/{secret}";
    const VERSIONS: &str = "/v1/projects/{project}/secrets/{secret}/versions";
    const VERSION: &str = "/v1/projects/{project}/secrets/{secret}/versions/{version}";
    Api::new()
        .route(Method::GET, SECRETS, list_secrets)
        .route(Method::POST, SECRETS, create_secret)
        .route(Method::GET, SECRET, get_secret)
        .route(Method::PATCH, SECRET, update_secret)
        .route(Method::DELETE, SECRET, delete_secret)
        .route(Method::POST, &format!("{SECRET}:addVersion"), add_version)
        .route(Method::GET, &format!("{SECRET}:getIamPolicy"), policy)
        .route(Method::POST, &format!("{SECRET}:getIamPolicy"), policy)
        .route(Method::POST, &format!("{SECRET}:setIamPolicy"), policy)
        .route(
            Method::POST,
            &format!("{SECRET}:testIamPermissions"),
            policy,
        )
        .route(Method::GET, VERSIONS, list_versions)
        .route(Method::GET, VERSION, get_version)
        .route(Method::GET, &format!("{VERSION}:access"), access)
        .route(Method::POST, &format!("{VERSION}:enable"), set_state)
        .route(Method::POST, &format!("{VERSION}:disable"), set_state)
        .route(Method::POST, &format!("{VERSION}:destroy"), set_state)
        .on_miss(|secrets: Secrets, call: Call, _: Miss| async move {
            // Credentials are checked before the path, as before the table existed.
            caller(&secrets, &call).await?;
            Err(ApiError::no_such_url(call.uri.path()))
        })
}

/// Whether `path` is one of Secret Manager's (for a control plane that serves several APIs on
/// one listener).
pub fn handles(path: &str) -> bool {
    path.strip_prefix("/v1/projects/")
        .and_then(|r| r.split_once('/'))
        .is_some_and(|(_, rest)| rest == "secrets" || rest.starts_with("secrets/"))
}

/// The authenticated caller (anonymous callers get 401).
async fn caller(secrets: &Secrets, call: &Call) -> Result<Caller, ApiError> {
    let base = format!(
        "{}/",
        secrets.iam().config().public_url.trim_end_matches('/')
    );
    Caller::authenticated(
        secrets.iam(),
        &call.headers,
        &["https://secretmanager.googleapis.com/", base.as_str()],
    )
    .await
}

fn secret_name(call: &Call) -> String {
    format!(
        "projects/{}/secrets/{}",
        call.capture("project"),
        call.capture("secret")
    )
}

fn version_name(call: &Call) -> String {
    format!("{}/versions/{}", secret_name(call), call.capture("version"))
}

/// One page of `items` under `field`, with Google's `nextPageToken` / `totalSize` (which
/// Google leaves at 0 when a filter is set).
fn page(items: Vec<Value>, field: &str, call: &Call, list: &str, filter: Option<&str>) -> Reply {
    let context = format!("{list}\n{}", filter.unwrap_or_default());
    let request = PageRequest::parse(
        call.param("pageSize"),
        call.param("pageToken"),
        &context,
        MAX_PAGE,
    )?;
    let page = request.page(items);
    let mut out = json!({});
    if filter.is_none() {
        out["totalSize"] = json!(page.total);
    }
    if !page.items.is_empty() {
        out[field] = json!(page.items);
    }
    if let Some(token) = page.next_page_token {
        out["nextPageToken"] = json!(token);
    }
    Ok(Json(out))
}

fn filter(call: &Call) -> Option<&str> {
    call.param("filter").filter(|f| !f.trim().is_empty())
}

async fn list_secrets(secrets: Secrets, call: Call) -> Reply {
    let who = caller(&secrets, &call).await?;
    let project = call.capture("project");
    let filter = filter(&call);
    let list: Vec<Value> = secrets
        .list_secrets(who.principal(), project, filter)
        .await?
        .iter()
        .map(wire::secret)
        .collect();
    page(
        list,
        "secrets",
        &call,
        &format!("projects/{project}/secrets"),
        filter,
    )
}

async fn create_secret(secrets: Secrets, call: Call) -> Reply {
    let who = caller(&secrets, &call).await?;
    let id = call.param("secretId").unwrap_or_default();
    let created = secrets
        .create_secret(who.principal(), call.capture("project"), id, &call.json()?)
        .await?;
    Ok(Json(wire::secret(&created)))
}

async fn get_secret(secrets: Secrets, call: Call) -> Reply {
    let who = caller(&secrets, &call).await?;
    let secret = secrets
        .get_secret(who.principal(), &secret_name(&call))
        .await?;
    Ok(Json(wire::secret(&secret)))
}

async fn update_secret(secrets: Secrets, call: Call) -> Reply {
    let who = caller(&secrets, &call).await?;
    let mask: Vec<String> = call
        .param("updateMask")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect();
    let updated = secrets
        .update_secret(who.principal(), &secret_name(&call), &call.json()?, &mask)
        .await?;
    Ok(Json(wire::secret(&updated)))
}

async fn delete_secret(secrets: Secrets, call: Call) -> Reply {
    let who = caller(&secrets, &call).await?;
    secrets
        .delete_secret(who.principal(), &secret_name(&call), call.param("etag"))
        .await?;
    Ok(Json(json!({})))
}

async fn add_version(secrets: Secrets, call: Call) -> Reply {
    let who = caller(&secrets, &call).await?;
    let b = call.json()?;
    let data_text = b
        .pointer("/payload/data")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let data = gatehouse_iam::decode_bytes(data_text)?;
    let crc = match b.pointer("/payload/dataCrc32c") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            s.parse::<i64>()
                .map_err(|_| ApiError::invalid_argument(format!("Invalid dataCrc32c: {s}")))?,
        ),
        Some(Value::Number(n)) => n.as_i64(),
        Some(other) => {
            return Err(ApiError::invalid_argument(format!(
                "Invalid dataCrc32c: {other}"
            )));
        }
    };
    let version = secrets
        .add_version(
            who.principal(),
            &secret_name(&call),
            NewPayload {
                data: &data,
                crc32c: crc,
            },
        )
        .await?;
    Ok(Json(wire::version(&version)))
}

/// getIamPolicy / setIamPolicy / testIamPermissions on a secret.
async fn policy(secrets: Secrets, call: Call) -> Reply {
    let who = caller(&secrets, &call).await?;
    let verb = call.verb().unwrap_or_default().to_owned();
    // Existence (and the right to know it) first, then the policy call's own permission.
    let resource = if verb == "testIamPermissions" {
        format!(
            "projects/{}/secrets/{}",
            secrets
                .iam()
                .project(call.capture("project"))
                .await?
                .project_id,
            call.capture("secret")
        )
    } else {
        let perm = format!("secretmanager.secrets.{verb}");
        secrets
            .policy_resource(who.principal(), &secret_name(&call), &perm)
            .await?
    };
    Ok(Json(
        policy_verb(&who, &resource, &verb, "secretmanager.secrets", &call).await?,
    ))
}

async fn list_versions(secrets: Secrets, call: Call) -> Reply {
    let who = caller(&secrets, &call).await?;
    let name = secret_name(&call);
    let filter = filter(&call);
    let list: Vec<Value> = secrets
        .list_versions(who.principal(), &name, filter)
        .await?
        .iter()
        .map(wire::version)
        .collect();
    page(list, "versions", &call, &format!("{name}/versions"), filter)
}

async fn get_version(secrets: Secrets, call: Call) -> Reply {
    let who = caller(&secrets, &call).await?;
    let version = secrets
        .get_version(who.principal(), &version_name(&call))
        .await?;
    Ok(Json(wire::version(&version)))
}

async fn access(secrets: Secrets, call: Call) -> Reply {
    let who = caller(&secrets, &call).await?;
    let a = secrets
        .access(who.principal(), &version_name(&call))
        .await?;
    Ok(Json(wire::accessed(&a)))
}

/// `:enable`, `:disable`, `:destroy` on a version.
async fn set_state(secrets: Secrets, call: Call) -> Reply {
    let who = caller(&secrets, &call).await?;
    let state = match call.verb() {
        Some("enable") => "ENABLED",
        Some("disable") => "DISABLED",
        _ => "DESTROYED",
    };
    let b = call.json()?;
    let etag = b
        .get("etag")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty());
    let version = secrets
        .set_state(who.principal(), &version_name(&call), state, etag)
        .await?;
    Ok(Json(wire::version(&version)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_table_parses() {
        assert_eq!(api().check(), Ok(()));
        assert!(handles("/v1/projects/p/secrets"));
        assert!(handles("/v1/projects/p/secrets/s:addVersion"));
        assert!(!handles("/v1/projects/p/serviceAccounts"));
    }
}
