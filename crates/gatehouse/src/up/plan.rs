//! The plan: what the manifest declares, as `(kind, name) → digest`, compared with what the
//! last run applied (create / update / delete, as `terraform plan` does).
//!
//! Digests are taken over each resource's serialized declaration (JSON), never over `Debug`
//! output, so they only change when the declaration does. Pure: reads the files the manifest
//! names (secret sources, API files) but changes nothing.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use sha2::Digest as _;

use super::manifest::Manifest;

/// The kinds of resource a manifest declares, in the order they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Identity,
    ServiceAccount,
    Secret,
    Binding,
    User,
    SqlInstance,
    Service,
    Api,
    Gateway,
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::Identity,
        Kind::ServiceAccount,
        Kind::Secret,
        Kind::Binding,
        Kind::User,
        Kind::SqlInstance,
        Kind::Service,
        Kind::Api,
        Kind::Gateway,
    ];

    /// The name stored in the state and shown in the plan.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Identity => "identity",
            Kind::ServiceAccount => "service_account",
            Kind::Secret => "secret",
            Kind::Binding => "binding",
            Kind::User => "user",
            Kind::SqlInstance => "sql_instance",
            Kind::Service => "service",
            Kind::Api => "api",
            Kind::Gateway => "gateway",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether this kind is state applied before anything starts (not a running component).
    pub(crate) fn is_persistent(self) -> bool {
        matches!(
            self,
            Kind::Identity | Kind::ServiceAccount | Kind::Secret | Kind::Binding | Kind::User
        )
    }

    /// Whether a running `up` cannot apply a change of this kind (it needs a restart).
    pub(crate) fn needs_restart(self) -> bool {
        matches!(
            self,
            Kind::Identity | Kind::SqlInstance | Kind::Gateway | Kind::User
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One resource: its kind and name.
pub(crate) type Key = (Kind, String);

/// What the manifest declares (or what was applied): key → digest.
pub(crate) type Desired = BTreeMap<Key, String>;

/// One line of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Create,
    Update,
    Delete,
}

impl Change {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Update => "update",
            Change::Delete => "delete",
        }
    }
}

/// A change to one resource.
pub(crate) type Step = (Change, Kind, String);

fn digest(parts: &[&str]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The digest of a declaration's JSON serialization.
fn digest_of(value: &impl Serialize) -> anyhow::Result<String> {
    Ok(digest(&[&serde_json::to_string(value)?]))
}

/// What the manifest declares, as `(kind, name) → digest`.
pub(crate) fn desired(m: &Manifest) -> anyhow::Result<Desired> {
    let mut out = Desired::new();
    out.insert(
        (Kind::Identity, m.project.id.clone()),
        digest_of(&(
            &m.identity.api_keys,
            &m.identity.authorized_domains,
            &m.identity.providers,
        ))?,
    );
    for a in &m.service_accounts {
        out.insert(
            (Kind::ServiceAccount, m.account_email(&a.name)),
            digest(&[a.display_name.as_deref().unwrap_or("")]),
        );
    }
    for s in &m.secrets {
        let source = match (&s.from_file, &s.from_env, &s.value, &s.json, s.generate) {
            (Some(f), ..) => format!(
                "file:{}",
                std::fs::read_to_string(m.path(f))
                    .map(|t| digest(&[&t]))
                    .unwrap_or_default()
            ),
            (_, Some(v), ..) => format!(
                "env:{v}:{}",
                std::env::var(v).map(|t| digest(&[&t])).unwrap_or_default()
            ),
            (_, _, Some(v), ..) => format!("value:{}", digest(&[v])),
            (_, _, _, Some(j), _) => format!("json:{}", digest(&[&j.to_string()])),
            (.., Some(n)) => format!("generate:{n}"),
            _ => String::new(),
        };
        out.insert((Kind::Secret, s.name.clone()), digest(&[&source]));
    }
    for b in &m.bindings {
        out.insert(
            (
                Kind::Binding,
                format!(
                    "{} {} {}",
                    m.resource_name(&b.resource),
                    b.role,
                    m.member(&b.member)
                ),
            ),
            "-".into(),
        );
    }
    for u in &m.identity.users {
        // The password (inline, or the secret reference) is part of the user: changing it is
        // a change to apply.
        out.insert(
            (Kind::User, u.email.clone()),
            digest_of(&(&u.display_name, &u.password, &u.password_secret))?,
        );
    }
    for q in &m.sql_instances {
        out.insert((Kind::SqlInstance, q.name.clone()), digest_of(q)?);
    }
    for s in &m.services {
        out.insert((Kind::Service, s.name.clone()), digest_of(s)?);
    }
    for a in &m.apis {
        let text = std::fs::read_to_string(m.path(&a.openapi)).unwrap_or_default();
        out.insert((Kind::Api, a.name.clone()), digest(&[&text]));
    }
    for g in &m.gateways {
        out.insert(
            (Kind::Gateway, g.name.clone()),
            digest_of(&(&g.api, &g.service_account, g.port))?,
        );
    }
    Ok(out)
}

/// The state as stored: `(kind, name, digest)` rows. Rows of a kind this version does not
/// know are dropped (they plan nothing).
pub(crate) fn from_rows(rows: &[(String, String, String)]) -> Desired {
    rows.iter()
        .filter_map(|(k, n, d)| Some(((Kind::parse(k)?, n.clone()), d.clone())))
        .collect()
}

/// The state to store.
pub(crate) fn to_rows(applied: &Desired) -> Vec<(String, String, String)> {
    applied
        .iter()
        .map(|((k, n), d)| (k.as_str().to_owned(), n.clone(), d.clone()))
        .collect()
}

/// Compares the manifest with what was applied.
pub(crate) fn plan(want: &Desired, have: &Desired) -> Vec<Step> {
    let mut out = Vec::new();
    for ((kind, name), d) in want {
        match have.get(&(*kind, name.clone())) {
            None => out.push((Change::Create, *kind, name.clone())),
            Some(old) if old != d => out.push((Change::Update, *kind, name.clone())),
            Some(_) => {}
        }
    }
    for (kind, name) in have.keys() {
        if !want.contains_key(&(*kind, name.clone())) {
            out.push((Change::Delete, *kind, name.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::path::Path;

    use super::*;

    const BASE: &str = "project: {id: p}\n\
        identity:\n  users:\n    - {email: a@example.com, password: first-password}\n\
        services:\n  - {name: hello, command: [hello]}\n";

    fn parse(text: &str) -> Manifest {
        Manifest::parse(text, Path::new("/nonexistent"), "test").unwrap()
    }

    #[test]
    fn an_unchanged_manifest_plans_nothing_and_a_fresh_state_creates_all() {
        let want = desired(&parse(BASE)).unwrap();
        assert!(plan(&want, &want).is_empty());
        let all = plan(&want, &Desired::new());
        assert!(all.iter().all(|(c, ..)| *c == Change::Create));
        assert!(all.contains(&(Change::Create, Kind::Service, "hello".into())));
        // The stored rows read back as the same state.
        assert_eq!(from_rows(&to_rows(&want)), want);
    }

    #[test]
    fn a_changed_password_or_service_is_an_update_a_removed_one_a_delete() {
        let before = desired(&parse(BASE)).unwrap();
        let after = desired(&parse(&BASE.replace("first-password", "second-password"))).unwrap();
        assert_eq!(
            plan(&after, &before),
            vec![(Change::Update, Kind::User, "a@example.com".into())]
        );
        let after = desired(&parse(&BASE.replace("[hello]", "[hello, --loud]"))).unwrap();
        assert_eq!(
            plan(&after, &before),
            vec![(Change::Update, Kind::Service, "hello".into())]
        );
        let without = BASE.replace("services:\n  - {name: hello, command: [hello]}\n", "");
        let after = desired(&parse(&without)).unwrap();
        assert_eq!(
            plan(&after, &before),
            vec![(Change::Delete, Kind::Service, "hello".into())]
        );
    }

    #[test]
    fn unknown_kinds_in_the_state_are_ignored() {
        let rows = vec![("widget".to_owned(), "w".to_owned(), "d".to_owned())];
        assert!(from_rows(&rows).is_empty());
    }
}
