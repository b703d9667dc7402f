//! The google.iam.v1 IAMPolicy mixin every resource with a policy serves:
//! `:getIamPolicy`, `:setIamPolicy`, `:testIamPermissions`, and the Policy message's JSON.

use gatehouse_iam::Policy;
use gatehouse_iam::policy::etag;
use serde_json::{Value, json};

use crate::{ApiError, Call, Caller, Code};

/// The mixin's verbs.
pub const VERBS: [&str; 3] = ["getIamPolicy", "setIamPolicy", "testIamPermissions"];

/// Google's JSON for `policy` after `writes` writes (`google/iam/v1/policy.proto`): version 1,
/// the etag, and the bindings when there are any.
pub fn policy_json(policy: &Policy, writes: i64) -> Value {
    let mut v = json!({"version": 1, "etag": etag(writes)});
    if !policy.bindings.is_empty() {
        v["bindings"] = json!(
            policy
                .bindings
                .iter()
                .map(|b| json!({"role": b.role, "members": b.members}))
                .collect::<Vec<_>>()
        );
    }
    v
}

/// Strings from a JSON array, or a comma-separated string (some clients send one).
pub fn strings(v: Option<&Value>) -> Vec<String> {
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

/// Runs mixin `verb` on `resource` for `caller`; `prefix` names the permission family
/// (`resourcemanager.projects`, `iam.serviceAccounts`, `secretmanager.secrets`, …).
pub async fn policy_verb(
    caller: &Caller,
    resource: &str,
    verb: &str,
    prefix: &str,
    call: &Call,
) -> Result<Value, ApiError> {
    let iam = caller.iam();
    match verb {
        "getIamPolicy" => {
            caller
                .require(&format!("{prefix}.getIamPolicy"), resource)
                .await?;
            let b = call.json()?;
            let requested = b
                .pointer("/options/requestedPolicyVersion")
                .and_then(Value::as_i64)
                .or_else(|| {
                    call.param("options.requestedPolicyVersion")
                        .and_then(|v| v.parse().ok())
                })
                .unwrap_or(0);
            if !matches!(requested, 0 | 1 | 3) {
                return Err(ApiError::invalid_argument(format!(
                    "Invalid requested policy version {requested}."
                )));
            }
            let current = iam.policy(resource).await?;
            Ok(policy_json(&current.0, current.1))
        }
        "setIamPolicy" => {
            caller
                .require(&format!("{prefix}.setIamPolicy"), resource)
                .await?;
            let b = call.json()?;
            let p = b
                .get("policy")
                .ok_or_else(|| ApiError::invalid_argument("policy is required."))?;
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
            Ok(policy_json(&next, writes))
        }
        "testIamPermissions" => {
            let b = call.json()?;
            let asked = strings(b.get("permissions"));
            let held = iam
                .test_permissions(caller.principal(), resource, &asked)
                .await?;
            let mut out = json!({});
            if !held.is_empty() {
                out["permissions"] = json!(held);
            }
            Ok(out)
        }
        _ => Err(ApiError::new(
            Code::NotFound,
            format!("Unknown method :{verb}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_shows_version_etag_and_its_bindings() {
        assert_eq!(
            policy_json(&Policy::default(), 0),
            json!({"version": 1, "etag": "ACAB"})
        );
        let mut p = Policy::default();
        p.add("roles/run.invoker", "user:b@example.com");
        p.add("roles/run.invoker", "allUsers");
        p.add("roles/owner", "user:a@example.com");
        assert_eq!(
            policy_json(&p, 1),
            json!({
                "version": 1,
                "etag": "AAAAAAAAAAE=",
                "bindings": [
                    {"role": "roles/owner", "members": ["user:a@example.com"]},
                    {"role": "roles/run.invoker", "members": ["allUsers", "user:b@example.com"]},
                ],
            })
        );
    }
}
