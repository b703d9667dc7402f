//! IAM policies (`google/iam/v1/policy.proto`): bindings of roles to members, their
//! validation, etags for read-modify-write, and who a member is. The Policy message's JSON
//! is `gatehouse-google-api`'s (`iam_policy::policy_json`).

use base64::Engine as _;
use serde_json::{Value, json};

use crate::{Error, Principal, Result, roles};

/// One binding: a role and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub role: String,
    pub members: Vec<String>,
}

/// A policy as stored: bindings, normalised (one binding per role, members sorted, no
/// duplicates).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub bindings: Vec<Binding>,
}

/// The etag of a policy after `writes` writes (base64 bytes, as Google sends them).
pub fn etag(writes: i64) -> String {
    if writes == 0 {
        return "ACAB".to_owned();
    }
    base64::engine::general_purpose::STANDARD.encode(writes.to_be_bytes())
}

/// The write count an etag stands for.
pub fn parse_etag(etag: &str) -> Result<i64> {
    if etag == "ACAB" {
        return Ok(0);
    }
    base64::engine::general_purpose::STANDARD
        .decode(etag)
        .ok()
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(i64::from_be_bytes)
        .ok_or_else(|| Error::InvalidArgument(format!("Invalid etag: {etag}")))
}

/// Whether a member string has a form Gatehouse understands.
fn valid_member(m: &str) -> bool {
    if m == "allUsers" || m == "allAuthenticatedUsers" {
        return true;
    }
    let Some((kind, rest)) = m.split_once(':') else {
        return false;
    };
    match kind {
        "user" | "serviceAccount" | "group" => {
            let mut parts = rest.split('@');
            matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(d), None) if !a.is_empty() && d.contains('.'))
        }
        "domain" => rest.contains('.') && !rest.contains('@'),
        "deleted" => !rest.is_empty(),
        _ => false,
    }
}

/// Whether `member` names `principal`.
pub fn matches(member: &str, principal: &Principal) -> bool {
    match member {
        "allUsers" => true,
        "allAuthenticatedUsers" => !matches!(principal, Principal::Anonymous),
        _ => {
            let Some((kind, who)) = member.split_once(':') else {
                return false;
            };
            match (kind, principal) {
                ("serviceAccount", Principal::ServiceAccount { email, .. }) => {
                    who.eq_ignore_ascii_case(email)
                }
                ("user", Principal::User { email }) => who.eq_ignore_ascii_case(email),
                ("domain", Principal::User { email }) => email
                    .rsplit_once('@')
                    .is_some_and(|(_, d)| d.eq_ignore_ascii_case(who)),
                _ => false,
            }
        }
    }
}

impl Policy {
    /// Parses and validates a policy from a `setIamPolicy` body's `policy`.
    pub fn from_json(v: &Value) -> Result<Self> {
        let bad = |m: String| Error::InvalidArgument(m);
        if !v.is_object() {
            return Err(bad("Invalid JSON payload: policy must be an object".into()));
        }
        if let Some(version) = v.get("version")
            && !matches!(version.as_i64(), Some(0 | 1 | 3))
        {
            return Err(bad(format!("Invalid policy version: {version}")));
        }
        let mut out = Policy::default();
        let list = match v.get("bindings") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return Err(bad("Invalid JSON payload: bindings must be a list".into())),
        };
        for b in list {
            let role = b
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("Every binding needs a role".into()))?;
            if !roles::exists(role) {
                return Err(bad(format!(
                    "Role ({role}) does not exist in the resource's hierarchy."
                )));
            }
            if b.get("condition").is_some_and(|c| !c.is_null()) {
                return Err(bad(
                    "Conditional role bindings are not supported by Gatehouse.".into(),
                ));
            }
            let members: Vec<String> = match b.get("members") {
                Some(Value::Array(m)) => m
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| bad("Members must be strings".into()))
                    })
                    .collect::<Result<_>>()?,
                _ => Vec::new(),
            };
            if members.is_empty() {
                return Err(bad(format!("The binding for {role} has no members.")));
            }
            for m in &members {
                if !valid_member(m) {
                    return Err(bad(format!(
                        "Invalid member type: {m}. Members must be allUsers, allAuthenticatedUsers, \
                         user:, serviceAccount:, group:, domain: or deleted:."
                    )));
                }
            }
            for m in members {
                out.add(role, &m);
            }
        }
        Ok(out)
    }

    /// Adds `member` to `role` (no-op if present). Returns whether it changed.
    pub fn add(&mut self, role: &str, member: &str) -> bool {
        let b = match self.bindings.iter_mut().position(|b| b.role == role) {
            Some(i) => &mut self.bindings[i],
            None => {
                self.bindings.push(Binding {
                    role: role.to_owned(),
                    members: Vec::new(),
                });
                self.bindings.sort_by(|a, b| a.role.cmp(&b.role));
                let i = self
                    .bindings
                    .iter()
                    .position(|b| b.role == role)
                    .unwrap_or_default();
                &mut self.bindings[i]
            }
        };
        if b.members.iter().any(|m| m == member) {
            return false;
        }
        b.members.push(member.to_owned());
        b.members.sort();
        true
    }

    /// Removes `member` from `role`. Returns whether it changed.
    pub fn remove(&mut self, role: &str, member: &str) -> bool {
        let mut changed = false;
        for b in &mut self.bindings {
            if b.role == role {
                let before = b.members.len();
                b.members.retain(|m| m != member);
                changed |= b.members.len() != before;
            }
        }
        self.bindings.retain(|b| !b.members.is_empty());
        changed
    }

    /// Whether some binding grants `permission` to `principal`.
    pub fn allows(&self, principal: &Principal, permission: &str) -> bool {
        self.bindings.iter().any(|b| {
            roles::grants(&b.role, permission) && b.members.iter().any(|m| matches(m, principal))
        })
    }

    /// The stored form.
    pub fn to_store(&self) -> String {
        json!(
            self.bindings
                .iter()
                .map(|b| json!({"role": b.role, "members": b.members}))
                .collect::<Vec<_>>()
        )
        .to_string()
    }

    /// Reads the stored form.
    pub fn from_store(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text).map_err(|e| Error::Internal(e.to_string()))?;
        let mut out = Policy::default();
        for b in v.as_array().into_iter().flatten() {
            let role = b.get("role").and_then(Value::as_str).unwrap_or_default();
            for m in b
                .get("members")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(m) = m.as_str() {
                    out.add(role, m);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(email: &str) -> Principal {
        Principal::ServiceAccount {
            email: email.into(),
            unique_id: "1".into(),
        }
    }

    #[test]
    fn parse_validate_and_evaluate() {
        let p = Policy::from_json(&json!({"bindings": [
            {"role": "roles/run.invoker", "members": ["serviceAccount:gw@p.iam.gserviceaccount.com"]},
            {"role": "roles/run.invoker", "members": ["user:a@example.com", "serviceAccount:gw@p.iam.gserviceaccount.com"]},
            {"role": "roles/secretmanager.secretAccessor", "members": ["allAuthenticatedUsers"]}
        ]}))
        .unwrap();
        assert_eq!(p.bindings.len(), 2);
        assert_eq!(p.bindings[0].members.len(), 2);
        assert!(p.allows(&sa("GW@p.iam.gserviceaccount.com"), "run.routes.invoke"));
        assert!(!p.allows(&sa("other@p.iam.gserviceaccount.com"), "run.routes.invoke"));
        assert!(!p.allows(&Principal::Anonymous, "secretmanager.versions.access"));
        assert!(p.allows(
            &sa("x@p.iam.gserviceaccount.com"),
            "secretmanager.versions.access"
        ));
        assert_eq!(Policy::from_store(&p.to_store()).unwrap(), p);

        for bad in [
            json!({"bindings": [{"role": "roles/nope", "members": ["allUsers"]}]}),
            json!({"bindings": [{"role": "roles/owner", "members": []}]}),
            json!({"bindings": [{"role": "roles/owner", "members": ["bob"]}]}),
            json!({"bindings": [{"role": "roles/owner", "members": ["principal://x"]}]}),
            json!({"bindings": [{"role": "roles/owner", "members": ["allUsers"], "condition": {"expression": "true"}}]}),
            json!({"version": 2}),
        ] {
            assert!(Policy::from_json(&bad).is_err(), "{bad}");
        }
        let open = Policy::from_json(
            &json!({"bindings": [{"role": "roles/run.invoker", "members": ["allUsers"]}]}),
        )
        .unwrap();
        assert!(open.allows(&Principal::Anonymous, "run.routes.invoke"));
    }

    #[test]
    fn etags_round_trip() {
        for n in [0, 1, 2, 1_000_000] {
            assert_eq!(parse_etag(&etag(n)).unwrap(), n);
        }
        assert_eq!(etag(0), "ACAB");
        assert!(parse_etag("!!").is_err());
    }
}
