//! `/v1/projects/…`: the IAM API (service accounts, keys, policies), Resource Manager's project
//! policy methods and the IAM Credentials methods, dispatched by path and `:verb`.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use base64::Engine as _;
use gatehouse_iam::{
    Error, Iam, Policy, Principal, account_resource, decode_bytes, project_resource,
};
use gatehouse_store::{ServiceAccountKeyRecord, ServiceAccountRecord};
use serde_json::{Value, json};

use crate::{caller, json_ok, percent_decode};

fn body_json(body: &Bytes) -> Result<Value, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| Error::InvalidArgument(format!("Invalid JSON payload received. {e}")))
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
fn duration_secs(v: &Value) -> Result<i64, Error> {
    let bad = || Error::InvalidArgument(format!("Invalid duration: {v}"));
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

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s.split(',').map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn not_found(path: &str) -> Error {
    Error::NotFound(format!(
        "The requested URL /v1/{path} was not found on this server."
    ))
}

/// Fails anonymous callers with 401 before any permission check.
fn authenticated(p: &Principal) -> Result<(), Error> {
    if matches!(p, Principal::Anonymous) {
        return Err(Error::missing_credentials());
    }
    Ok(())
}

pub(crate) async fn v1(
    iam: &Iam,
    method: &Method,
    rest: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Error> {
    let Some(after) = rest.strip_prefix("projects/") else {
        return Err(not_found(rest));
    };
    let base = format!("{}/", iam.config().public_url.trim_end_matches('/'));
    let audiences = [
        "https://iam.googleapis.com/",
        "https://iamcredentials.googleapis.com/",
        "https://cloudresourcemanager.googleapis.com/",
        base.as_str(),
    ];
    let who = caller(iam, headers, &audiences).await?;
    // projects/{p}:verb — project policy.
    let (project, tail) = match after.split_once('/') {
        Some((p, t)) => (p.to_owned(), Some(t)),
        None => (after.to_owned(), None),
    };
    let Some(tail) = tail else {
        let (project, verb) = project
            .split_once(':')
            .map(|(p, v)| (p.to_owned(), v.to_owned()))
            .ok_or_else(|| not_found(rest))?;
        if method != Method::POST {
            return Err(not_found(rest));
        }
        authenticated(&who)?;
        let resource = project_resource(&iam.project(&project).await?.project_id);
        return policy_verb(
            iam,
            &who,
            &resource,
            &verb,
            "resourcemanager.projects",
            body,
            query,
        )
        .await;
    };
    let Some(sa_path) = tail.strip_prefix("serviceAccounts") else {
        return Err(not_found(rest));
    };
    authenticated(&who)?;
    // projects/{p}/serviceAccounts
    if sa_path.is_empty() {
        let project = iam.project(&project).await?.project_id;
        let resource = project_resource(&project);
        return match *method {
            Method::GET => {
                iam.require(&who, "iam.serviceAccounts.list", &resource)
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
                Ok(json_ok(out))
            }
            Method::POST => {
                iam.require(&who, "iam.serviceAccounts.create", &resource)
                    .await?;
                let b = body_json(body)?;
                let id = b
                    .get("accountId")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::InvalidArgument("accountId is required.".into()))?;
                let sa = b.get("serviceAccount").cloned().unwrap_or(json!({}));
                let text = |k: &str| sa.get(k).and_then(Value::as_str).unwrap_or_default();
                let a = iam
                    .create_account(&project, id, text("displayName"), text("description"))
                    .await?;
                Ok(json_ok(account_json(&a)))
            }
            _ => Err(not_found(rest)),
        };
    }
    let sa_path = sa_path.strip_prefix('/').ok_or_else(|| not_found(rest))?;
    let (account_part, key_part) = match sa_path.split_once("/keys") {
        Some((a, k)) => (a, Some(k)),
        None => (sa_path, None),
    };
    let (account_ref, verb) = match (key_part, account_part.split_once(':')) {
        (None, Some((a, v))) => (percent_decode(a), Some(v.to_owned())),
        _ => (percent_decode(account_part), None),
    };
    let name = format!("projects/{project}/serviceAccounts/{account_ref}");
    // IAM Credentials: `projects/-/serviceAccounts/{id}:verb`; the caller's rights decide.
    if let Some(v) = verb.as_deref()
        && matches!(
            v,
            "generateIdToken" | "generateAccessToken" | "signJwt" | "signBlob"
        )
    {
        if method != Method::POST {
            return Err(not_found(rest));
        }
        return credentials(iam, &who, &name, v, body).await;
    }
    // Everything else needs the account; without permission it "may not exist".
    let account = iam.account(&account_ref).await?;
    let resource_for = |a: &ServiceAccountRecord| account_resource(&a.project_id, &a.email);
    let denied_or_missing = |perm: &str| Error::denied(perm, &name);
    match (key_part, verb.as_deref()) {
        (None, None) => {
            let perm = match *method {
                Method::GET => "iam.serviceAccounts.get",
                Method::DELETE => "iam.serviceAccounts.delete",
                Method::PATCH | Method::PUT => "iam.serviceAccounts.update",
                _ => return Err(not_found(rest)),
            };
            let a = account.ok_or_else(|| denied_or_missing(perm))?;
            iam.require(&who, perm, &resource_for(&a)).await?;
            match *method {
                Method::GET => Ok(json_ok(account_json(&a))),
                Method::DELETE => {
                    iam.delete_account(&a.email).await?;
                    Ok(json_ok(json!({})))
                }
                _ => {
                    let b = body_json(body)?;
                    // PATCH sends {serviceAccount, updateMask}; PUT the account itself.
                    let sa = b.get("serviceAccount").unwrap_or(&b);
                    let field = |k: &str| sa.get(k).and_then(Value::as_str);
                    let updated = iam
                        .update_account(&a.email, field("displayName"), field("description"))
                        .await?;
                    Ok(json_ok(account_json(&updated)))
                }
            }
        }
        (None, Some(v)) => {
            if method != Method::POST && !(v == "getIamPolicy" && method == Method::GET) {
                return Err(not_found(rest));
            }
            match v {
                "disable" | "enable" => {
                    let perm = if v == "disable" {
                        "iam.serviceAccounts.disable"
                    } else {
                        "iam.serviceAccounts.enable"
                    };
                    let a = account.ok_or_else(|| denied_or_missing(perm))?;
                    iam.require(&who, perm, &resource_for(&a)).await?;
                    iam.set_account_disabled(&a.email, v == "disable").await?;
                    Ok(json_ok(json!({})))
                }
                "getIamPolicy" | "setIamPolicy" | "testIamPermissions" => {
                    let perm = format!("iam.serviceAccounts.{v}");
                    let a = account.ok_or_else(|| denied_or_missing(&perm))?;
                    policy_verb(
                        iam,
                        &who,
                        &resource_for(&a),
                        v,
                        "iam.serviceAccounts",
                        body,
                        query,
                    )
                    .await
                }
                _ => Err(not_found(rest)),
            }
        }
        (Some(keys), _) => {
            let keys = keys.strip_prefix('/').unwrap_or(keys);
            let (key_id, key_verb) = match keys.split_once(':') {
                Some((k, v)) => (k, Some(v)),
                None => (keys, None),
            };
            let perm = match (key_id.is_empty(), key_verb, method) {
                (true, None, &Method::GET) => "iam.serviceAccountKeys.list",
                (true, None, &Method::POST) => "iam.serviceAccountKeys.create",
                (false, None, &Method::GET) => "iam.serviceAccountKeys.get",
                (false, None, &Method::DELETE) => "iam.serviceAccountKeys.delete",
                (false, Some("disable"), &Method::POST) => "iam.serviceAccountKeys.disable",
                (false, Some("enable"), &Method::POST) => "iam.serviceAccountKeys.enable",
                _ => return Err(not_found(rest)),
            };
            let a = account.ok_or_else(|| denied_or_missing(perm))?;
            iam.require(&who, perm, &resource_for(&a)).await?;
            let project = a.project_id.clone();
            match perm {
                "iam.serviceAccountKeys.list" => {
                    let wanted = query_values(query, "keyTypes");
                    let list: Vec<Value> = iam
                        .keys(&a.email)
                        .await?
                        .iter()
                        .filter(|k| wanted.is_empty() || wanted.contains(&k.managed))
                        .map(|k| key_json(k, &project))
                        .collect();
                    Ok(json_ok(json!({ "keys": list })))
                }
                "iam.serviceAccountKeys.create" => {
                    let b = body_json(body)?;
                    if let Some(t) = b.get("privateKeyType").and_then(Value::as_str)
                        && t != "TYPE_GOOGLE_CREDENTIALS_FILE"
                        && t != "TYPE_UNSPECIFIED"
                    {
                        return Err(Error::InvalidArgument(format!(
                            "Private key type {t} is not supported; use TYPE_GOOGLE_CREDENTIALS_FILE."
                        )));
                    }
                    if let Some(alg) = b.get("keyAlgorithm").and_then(Value::as_str)
                        && alg != "KEY_ALG_RSA_2048"
                        && alg != "KEY_ALG_UNSPECIFIED"
                    {
                        return Err(Error::InvalidArgument(format!(
                            "Key algorithm {alg} is not supported; use KEY_ALG_RSA_2048."
                        )));
                    }
                    let (record, file) = iam.create_key(&a.email).await?;
                    let mut v = key_json(&record, &project);
                    v["privateKeyType"] = json!("TYPE_GOOGLE_CREDENTIALS_FILE");
                    v["privateKeyData"] =
                        json!(base64::engine::general_purpose::STANDARD.encode(file.to_string()));
                    Ok(json_ok(v))
                }
                "iam.serviceAccountKeys.get" => {
                    let k = iam
                        .keys(&a.email)
                        .await?
                        .into_iter()
                        .find(|k| k.key_id == key_id)
                        .ok_or_else(|| {
                            Error::NotFound(format!("Service account key {key_id} does not exist."))
                        })?;
                    Ok(json_ok(key_json(&k, &project)))
                }
                "iam.serviceAccountKeys.delete" => {
                    iam.delete_key(&a.email, key_id).await?;
                    Ok(json_ok(json!({})))
                }
                _ => {
                    iam.set_key_disabled(&a.email, key_id, key_verb == Some("disable"))
                        .await?;
                    Ok(json_ok(json!({})))
                }
            }
        }
    }
}

fn query_values(query: &str, name: &str) -> Vec<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// getIamPolicy / setIamPolicy / testIamPermissions on `resource`; `prefix` names the
/// permission family (`resourcemanager.projects`, `iam.serviceAccounts`, …).
pub async fn policy_verb(
    iam: &Iam,
    who: &Principal,
    resource: &str,
    verb: &str,
    prefix: &str,
    body: &Bytes,
    query: &str,
) -> Result<Response, Error> {
    match verb {
        "getIamPolicy" => {
            iam.require(who, &format!("{prefix}.getIamPolicy"), resource)
                .await?;
            let b = body_json(body)?;
            let requested = b
                .pointer("/options/requestedPolicyVersion")
                .and_then(Value::as_i64)
                .or_else(|| {
                    query_values(query, "options.requestedPolicyVersion")
                        .first()
                        .and_then(|v| v.parse().ok())
                })
                .unwrap_or(0);
            if !matches!(requested, 0 | 1 | 3) {
                return Err(Error::InvalidArgument(format!(
                    "Invalid requested policy version {requested}."
                )));
            }
            let current = iam.policy(resource).await?;
            Ok(json_ok(current.0.to_json(current.1)))
        }
        "setIamPolicy" => {
            iam.require(who, &format!("{prefix}.setIamPolicy"), resource)
                .await?;
            let b = body_json(body)?;
            let p = b
                .get("policy")
                .ok_or_else(|| Error::InvalidArgument("policy is required.".into()))?;
            let mask = b
                .get("updateMask")
                .and_then(Value::as_str)
                .map(|m| m.split(',').map(str::trim).collect::<Vec<_>>());
            let etag = p.get("etag").and_then(Value::as_str);
            let next = if mask
                .as_ref()
                .is_some_and(|m| !m.contains(&"bindings") && !m.contains(&"policy.bindings"))
            {
                // Nothing this server stores is in the mask: the bindings stay as they are.
                iam.policy(resource).await?.0.clone()
            } else {
                Policy::from_json(p)?
            };
            let writes = iam.set_policy(resource, &next, etag).await?;
            Ok(json_ok(next.to_json(writes)))
        }
        "testIamPermissions" => {
            let b = body_json(body)?;
            let asked = strings(b.get("permissions"));
            let held = iam.test_permissions(who, resource, &asked).await?;
            let mut out = json!({});
            if !held.is_empty() {
                out["permissions"] = json!(held);
            }
            Ok(json_ok(out))
        }
        _ => Err(Error::NotFound(format!("Unknown method :{verb}"))),
    }
}

async fn credentials(
    iam: &Iam,
    who: &Principal,
    name: &str,
    verb: &str,
    body: &Bytes,
) -> Result<Response, Error> {
    let b = body_json(body)?;
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
            Ok(json_ok(json!({ "token": token })))
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
            Ok(json_ok(json!({"accessToken": token, "expireTime": expire})))
        }
        "signJwt" => {
            let payload = b
                .get("payload")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::InvalidArgument("payload is required.".into()))?;
            let signed = iam.sign_jwt(who, name, &delegates, payload).await?;
            Ok(json_ok(
                json!({"keyId": signed.key_id, "signedJwt": signed.signed_jwt}),
            ))
        }
        _ => {
            let payload = b
                .get("payload")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::InvalidArgument("payload is required.".into()))?;
            let (key_id, sig) = iam
                .sign_blob(who, name, &delegates, &decode_bytes(payload)?)
                .await?;
            Ok(json_ok(json!({
                "keyId": key_id,
                "signedBlob": base64::engine::general_purpose::STANDARD.encode(sig),
            })))
        }
    }
}
