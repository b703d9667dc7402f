//! `/v1/projects/…`: the IAM API (service accounts, keys, policies), Resource Manager's project
//! policy methods and the IAM Credentials methods, as one route table per API version prefix.

use std::sync::Arc;

use axum::Json;
use axum::http::Method;
use base64::Engine as _;
use gatehouse_google_api::iam_policy::{VERBS, policy_verb, strings};
use gatehouse_google_api::{Api, ApiError, Call, Caller};
use gatehouse_iam::{Error, Iam, account_resource, decode_bytes, project_resource};
use gatehouse_store::{ServiceAccountKeyRecord, ServiceAccountRecord};
use serde_json::{Value, json};

type Reply = Result<Json<Value>, ApiError>;

/// Adds the IAM, Resource Manager policy and IAM Credentials routes under `/{version}/`.
pub(crate) fn routes(mut api: Api<Iam>, version: &str) -> Api<Iam> {
    let project = format!("/{version}/projects/{{project}}");
    let accounts = format!("{project}/serviceAccounts");
    let account = format!("{accounts}/{{account}}");
    let keys = format!("{account}/keys");
    let key = format!("{keys}/{{key}}");
    for verb in VERBS {
        api = api
            .route(Method::POST, &format!("{project}:{verb}"), project_policy)
            .route(Method::POST, &format!("{account}:{verb}"), account_policy);
    }
    for verb in [
        "generateIdToken",
        "generateAccessToken",
        "signJwt",
        "signBlob",
    ] {
        api = api.route(Method::POST, &format!("{account}:{verb}"), credentials);
    }
    api.route(
        Method::GET,
        &format!("{account}:getIamPolicy"),
        account_policy,
    )
    .route(Method::POST, &format!("{account}:disable"), account_state)
    .route(Method::POST, &format!("{account}:enable"), account_state)
    .route(Method::GET, &accounts, list_accounts)
    .route(Method::POST, &accounts, create_account)
    .route(Method::GET, &account, get_account)
    .route(Method::DELETE, &account, delete_account)
    .route(Method::PATCH, &account, update_account)
    .route(Method::PUT, &account, update_account)
    .route(Method::GET, &keys, list_keys)
    .route(Method::POST, &keys, create_key)
    .route(Method::GET, &key, get_key)
    .route(Method::DELETE, &key, delete_key)
    .route(Method::POST, &format!("{key}:disable"), key_state)
    .route(Method::POST, &format!("{key}:enable"), key_state)
}

/// The caller of an IAM API request: anonymous without credentials, 401 for a bad token.
pub(crate) async fn any_caller(iam: &Iam, call: &Call) -> Result<Caller, ApiError> {
    let base = format!("{}/", iam.config().public_url.trim_end_matches('/'));
    let audiences = [
        "https://iam.googleapis.com/",
        "https://iamcredentials.googleapis.com/",
        "https://cloudresourcemanager.googleapis.com/",
        base.as_str(),
    ];
    Caller::from_headers(iam, &call.headers, &audiences).await
}

/// [`any_caller`], and 401 for anonymous callers.
async fn caller(iam: &Iam, call: &Call) -> Result<Caller, ApiError> {
    let who = any_caller(iam, call).await?;
    who.require_authenticated()?;
    Ok(who)
}

/// `projects/{project}/serviceAccounts/{account}` as the client wrote it.
fn account_name(call: &Call) -> String {
    format!(
        "projects/{}/serviceAccounts/{}",
        call.capture("project"),
        call.capture("account")
    )
}

/// The account and its resource, or (without permission) "may not exist": Google does not
/// tell callers without `permission` whether an account exists.
async fn account_for(
    iam: &Iam,
    who: &Caller,
    call: &Call,
    permission: &str,
) -> Result<(Arc<ServiceAccountRecord>, String), ApiError> {
    let account = iam
        .account(call.capture("account"))
        .await?
        .ok_or_else(|| Error::denied(permission, &account_name(call)))?;
    let resource = account_resource(&account.project_id, &account.email);
    who.require(permission, &resource).await?;
    Ok((account, resource))
}

async fn project_policy(iam: Iam, call: Call) -> Reply {
    let who = caller(&iam, &call).await?;
    let resource = project_resource(&iam.project(call.capture("project")).await?.project_id);
    let verb = call.verb().unwrap_or_default();
    Ok(Json(
        policy_verb(&who, &resource, verb, "resourcemanager.projects", &call).await?,
    ))
}

async fn account_policy(iam: Iam, call: Call) -> Reply {
    let who = caller(&iam, &call).await?;
    let verb = call.verb().unwrap_or_default();
    let perm = format!("iam.serviceAccounts.{verb}");
    let a = iam
        .account(call.capture("account"))
        .await?
        .ok_or_else(|| Error::denied(&perm, &account_name(&call)))?;
    let resource = account_resource(&a.project_id, &a.email);
    Ok(Json(
        policy_verb(&who, &resource, verb, "iam.serviceAccounts", &call).await?,
    ))
}

async fn list_accounts(iam: Iam, call: Call) -> Reply {
    let who = caller(&iam, &call).await?;
    let project = iam.project(call.capture("project")).await?.project_id;
    who.require("iam.serviceAccounts.list", &project_resource(&project))
        .await?;
    let list: Vec<Value> = iam
        .accounts(&project)
        .await?
        .iter()
        .map(account_json)
        .collect();
    let mut out = json!({});
    if !list.is_empty() {
        out["accounts"] = json!(list);
    }
    Ok(Json(out))
}

async fn create_account(iam: Iam, call: Call) -> Reply {
    let who = caller(&iam, &call).await?;
    let project = iam.project(call.capture("project")).await?.project_id;
    who.require("iam.serviceAccounts.create", &project_resource(&project))
        .await?;
    let b = call.json()?;
    let id = b
        .get("accountId")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid_argument("accountId is required."))?;
    let sa = b.get("serviceAccount").cloned().unwrap_or(json!({}));
    let text = |k: &str| sa.get(k).and_then(Value::as_str).unwrap_or_default();
    let a = iam
        .create_account(&project, id, text("displayName"), text("description"))
        .await?;
    Ok(Json(account_json(&a)))
}

async fn get_account(iam: Iam, call: Call) -> Reply {
    let who = caller(&iam, &call).await?;
    let (a, _) = account_for(&iam, &who, &call, "iam.serviceAccounts.get").await?;
    Ok(Json(account_json(&a)))
}

async fn delete_account(iam: Iam, call: Call) -> Reply {
    let who = caller(&iam, &call).await?;
    let (a, _) = account_for(&iam, &who, &call, "iam.serviceAccounts.delete").await?;
    iam.delete_account(&a.email).await?;
    Ok(Json(json!({})))
}

async fn update_account(iam: Iam, call: Call) -> Reply {
    let who = caller(&iam, &call).await?;
    let (a, _) = account_for(&iam, &who, &call, "iam.serviceAccounts.update").await?;
    let b = call.json()?;
    // PATCH sends {serviceAccount, updateMask}; PUT the account itself.
    let sa = b.get("serviceAccount").unwrap_or(&b);
    let field = |k: &str| sa.get(k).and_then(Value::as_str);
    let updated = iam
        .update_account(&a.email, field("displayName"), field("description"))
        .await?;
    Ok(Json(account_json(&updated)))
}

/// `:disable` / `:enable` on an account.
async fn account_state(iam: Iam, call: Call) -> Reply {
    let who = caller(&iam, &call).await?;
    let disable = call.verb() == Some("disable");
    let perm = if disable {
        "iam.serviceAccounts.disable"
    } else {
        "iam.serviceAccounts.enable"
    };
    let (a, _) = account_for(&iam, &who, &call, perm).await?;
    iam.set_account_disabled(&a.email, disable).await?;
    Ok(Json(json!({})))
}

async fn list_keys(iam: Iam, call: Call) -> Reply {
    let who = caller(&iam, &call).await?;
    let (a, _) = account_for(&iam, &who, &call, "iam.serviceAccountKeys.list").await?;
    let wanted = call.params("keyTypes");
    let list: Vec<Value> = iam
        .keys(&a.email)
        .await?
        .iter()
        .filter(|k| wanted.is_empty() || wanted.contains(&k.managed))
        .map(|k| key_json(k, &a.project_id))
        .collect();
    Ok(Json(json!({ "keys": list })))
}

async fn create_key(iam: Iam, call: Call) -> Reply {
    let who = caller(&iam, &call).await?;
    let (a, _) = account_for(&iam, &who, &call, "iam.serviceAccountKeys.create").await?;
    let b = call.json()?;
    if let Some(t) = b.get("privateKeyType").and_then(Value::as_str)
        && t != "TYPE_GOOGLE_CREDENTIALS_FILE"
        && t != "TYPE_UNSPECIFIED"
    {
        return Err(ApiError::invalid_argument(format!(
            "Private key type {t} is not supported; use TYPE_GOOGLE_CREDENTIALS_FILE."
        )));
    }
    if let Some(alg) = b.get("keyAlgorithm").and_then(Value::as_str)
        && alg != "KEY_ALG_RSA_2048"
        && alg != "KEY_ALG_UNSPECIFIED"
    {
        return Err(ApiError::invalid_argument(format!(
            "Key algorithm {alg} is not supported; use KEY_ALG_RSA_2048."
        )));
    }
    let (record, file) = iam.create_key(&a.email).await?;
    let mut v = key_json(&record, &a.project_id);
    v["privateKeyType"] = json!("TYPE_GOOGLE_CREDENTIALS_FILE");
    v["privateKeyData"] = json!(base64::engine::general_purpose::STANDARD.encode(file.to_string()));
    Ok(Json(v))
}

async fn get_key(iam: Iam, call: Call) -> Reply {
    let who = caller(&iam, &call).await?;
    let (a, _) = account_for(&iam, &who, &call, "iam.serviceAccountKeys.get").await?;
    let key_id = call.capture("key");
    let k = iam
        .keys(&a.email)
        .await?
        .into_iter()
        .find(|k| k.key_id == key_id)
        .ok_or_else(|| Error::NotFound(format!("Service account key {key_id} does not exist.")))?;
    Ok(Json(key_json(&k, &a.project_id)))
}

async fn delete_key(iam: Iam, call: Call) -> Reply {
    let who = caller(&iam, &call).await?;
    let (a, _) = account_for(&iam, &who, &call, "iam.serviceAccountKeys.delete").await?;
    iam.delete_key(&a.email, call.capture("key")).await?;
    Ok(Json(json!({})))
}

/// `:disable` / `:enable` on a key.
async fn key_state(iam: Iam, call: Call) -> Reply {
    let who = caller(&iam, &call).await?;
    let disable = call.verb() == Some("disable");
    let perm = if disable {
        "iam.serviceAccountKeys.disable"
    } else {
        "iam.serviceAccountKeys.enable"
    };
    let (a, _) = account_for(&iam, &who, &call, perm).await?;
    iam.set_key_disabled(&a.email, call.capture("key"), disable)
        .await?;
    Ok(Json(json!({})))
}

fn account_json(a: &ServiceAccountRecord) -> Value {
    let mut v = json!({
        "name": account_resource(&a.project_id, &a.email),
        "projectId": a.project_id,
        "uniqueId": a.unique_id,
        "email": a.email,
        "oauth2ClientId": a.unique_id,
        "etag": base64::engine::general_purpose::STANDARD.encode(a.created_at.to_be_bytes()),
    });
    if !a.display_name.is_empty() {
        v["displayName"] = json!(a.display_name);
    }
    if !a.description.is_empty() {
        v["description"] = json!(a.description);
    }
    if a.disabled {
        v["disabled"] = json!(true);
    }
    v
}

fn key_json(k: &ServiceAccountKeyRecord, project: &str) -> Value {
    let mut v = json!({
        "name": format!("{}/keys/{}", account_resource(project, &k.email), k.key_id),
        "validAfterTime": gatehouse_iam::rfc3339(k.created_at),
        "validBeforeTime": gatehouse_iam::rfc3339(k.expires_at),
        "keyAlgorithm": "KEY_ALG_RSA_2048",
        "keyOrigin": "GOOGLE_PROVIDED",
        "keyType": k.managed,
    });
    if k.disabled {
        v["disabled"] = json!(true);
    }
    v
}

/// `"3600s"` (or a bare number) as seconds.
fn duration_secs(v: &Value) -> Result<i64, ApiError> {
    let bad = || ApiError::invalid_argument(format!("Invalid duration: {v}"));
    match v {
        Value::String(s) => s
            .strip_suffix('s')
            .unwrap_or(s)
            .parse::<f64>()
            .map(|f| f as i64)
            .map_err(|_| bad()),
        Value::Number(n) => n.as_i64().ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// A JSON boolean that some clients send as a string (`"true"`).
fn flag(v: Option<&Value>, default: bool) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => default,
    }
}

/// IAM Credentials: `projects/-/serviceAccounts/{id}:verb`; the caller's rights decide.
async fn credentials(iam: Iam, call: Call) -> Reply {
    let caller = caller(&iam, &call).await?;
    let who = caller.principal();
    let name = account_name(&call);
    let name = name.as_str();
    let verb = call.verb().unwrap_or_default();
    let b = call.json()?;
    let delegates = strings(b.get("delegates"));
    match verb {
        "generateIdToken" => {
            let audience = b
                .get("audience")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let token = iam
                .generate_id_token(
                    who,
                    name,
                    &delegates,
                    audience,
                    flag(b.get("includeEmail"), false),
                    flag(b.get("useEmailAzp"), false),
                )
                .await?;
            Ok(Json(json!({ "token": token })))
        }
        "generateAccessToken" => {
            let lifetime = b
                .get("lifetime")
                .map(duration_secs)
                .transpose()?
                .unwrap_or(3600);
            let (token, expire) = iam
                .generate_access_token(who, name, &delegates, &strings(b.get("scope")), lifetime)
                .await?;
            Ok(Json(json!({"accessToken": token, "expireTime": expire})))
        }
        "signJwt" => {
            let payload = b
                .get("payload")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid_argument("payload is required."))?;
            let signed = iam.sign_jwt(who, name, &delegates, payload).await?;
            Ok(Json(
                json!({"keyId": signed.key_id, "signedJwt": signed.signed_jwt}),
            ))
        }
        _ => {
            let payload = b
                .get("payload")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid_argument("payload is required."))?;
            let (key_id, sig) = iam
                .sign_blob(who, name, &delegates, &decode_bytes(payload)?)
                .await?;
            Ok(Json(json!({
                "keyId": key_id,
                "signedBlob": base64::engine::general_purpose::STANDARD.encode(sig),
            })))
        }
    }
}
