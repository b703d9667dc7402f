//! Applying the persistent part of a manifest, in dependency order: the project, service
//! accounts, secrets, bindings (and removing what the last run applied and the manifest no
//! longer declares), users; and preparing a declared service for the runner.
//!
//! Talks to the components' Rust APIs (IAM, Secret Manager, identity) as the local owner; it
//! must not start servers or print to the terminal.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context as _;
use gatehouse_iam::{Iam, Principal};
use gatehouse_identity::{Caller, Identity, LookupRequest, SignUpRequest, UpdateRequest};
use gatehouse_secrets::{NewPayload, Secrets};

use super::manifest::{Manifest, fill};
use super::plan::{Desired, Kind};

/// A random password of `n` characters from an alphabet without look-alikes.
fn random_password(n: usize) -> String {
    use rand::Rng as _;
    const A: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(A[rng.random_range(0..A.len())]))
        .collect()
}

/// Applies the persistent part of the manifest: the project, service accounts (removed ones
/// deleted), secrets (a new version when the value changed), bindings (removed ones revoked).
/// `have` is what the last run applied.
pub(crate) async fn apply_persistent(
    m: &Manifest,
    iam: &Iam,
    secrets: &Secrets,
    values: &mut BTreeMap<String, String>,
    want: &Desired,
    have: &Desired,
) -> anyhow::Result<()> {
    let local = Principal::Local;
    let project = m.project.id.clone();
    iam.project(&project)
        .await
        .with_context(|| format!("project {project}"))?;
    for a in &m.service_accounts {
        let email = m.account_email(&a.name);
        if iam
            .account(&email)
            .await
            .with_context(|| format!("service_accounts {}", a.name))?
            .is_none()
        {
            iam.create_account(
                &project,
                &a.name,
                a.display_name.as_deref().unwrap_or(""),
                "",
            )
            .await
            .with_context(|| format!("service_accounts {}", a.name))?;
        }
    }
    for s in &m.secrets {
        let name = format!("projects/{project}/secrets/{}", s.name);
        let current = secrets
            .access(&local, &format!("{name}/versions/latest"))
            .await
            .ok();
        let value: Option<String> = match (&s.from_file, &s.from_env, &s.value, &s.json, s.generate)
        {
            (Some(f), ..) => Some(
                std::fs::read_to_string(m.path(f))
                    .with_context(|| format!("secrets {}: reading {}", s.name, f.display()))?,
            ),
            (_, Some(v), ..) => Some(
                std::env::var(v).with_context(|| format!("secrets {}: ${v} is not set", s.name))?,
            ),
            (_, _, Some(v), ..) => Some(fill(v, values)),
            (_, _, _, Some(j), _) => Some(fill(&j.to_string(), values)),
            // Generated once; kept across runs.
            (.., Some(n)) => current.is_none().then(|| random_password(n)),
            _ => None,
        };
        if current.is_none() && secrets.get_secret(&local, &name).await.is_err() {
            secrets
                .create_secret(
                    &local,
                    &project,
                    &s.name,
                    &serde_json::json!({"replication": {"automatic": {}}}),
                )
                .await
                .with_context(|| format!("secrets {}", s.name))?;
        }
        if let Some(v) = value
            && current
                .as_ref()
                .is_none_or(|c| c.data.as_slice() != v.as_bytes())
        {
            secrets
                .add_version(
                    &local,
                    &name,
                    NewPayload {
                        data: v.as_bytes(),
                        crc32c: None,
                    },
                )
                .await
                .with_context(|| format!("secrets {}", s.name))?;
        }
        if let Ok(a) = secrets
            .access(&local, &format!("{name}/versions/latest"))
            .await
            && let Ok(text) = String::from_utf8(a.data.to_vec())
        {
            values.insert(format!("secrets.{}", s.name), text);
        }
    }
    // Bindings: added, and those of the last run that are gone, removed.
    let gone = |kind: Kind| {
        have.keys()
            .filter(move |(k, n)| *k == kind && !want.contains_key(&(kind, n.clone())))
            .map(|(_, n)| n)
    };
    for name in gone(Kind::Binding) {
        let mut parts = name.splitn(3, ' ');
        if let (Some(r), Some(role), Some(member)) = (parts.next(), parts.next(), parts.next())
            && let Err(e) = iam.edit_binding(r, role, member, false).await
        {
            tracing::warn!(binding = name, error = %e, "could not revoke a removed binding");
        }
    }
    for b in &m.bindings {
        iam.edit_binding(
            &m.resource_name(&b.resource),
            &b.role,
            &m.member(&b.member),
            true,
        )
        .await
        .with_context(|| format!("bindings {} {} {}", b.resource, b.role, b.member))?;
    }
    for name in gone(Kind::ServiceAccount) {
        if let Err(e) = iam.delete_account(name).await {
            tracing::warn!(account = name, error = %e, "could not delete a removed service account");
        }
    }
    Ok(())
}

/// Creates the manifest's users that do not exist yet, and sets the password and display
/// name of those in `changed` (their declaration changed since the last run).
pub(crate) async fn create_users(
    m: &Manifest,
    identity: &Identity,
    secrets: &Secrets,
    changed: &BTreeSet<String>,
) -> anyhow::Result<()> {
    let project = &m.project.id;
    let caller = Caller {
        project: identity.project(project).context("the identity project")?,
        privileged: true,
        ip: std::net::IpAddr::from([127, 0, 0, 1]),
    };
    for u in &m.identity.users {
        let password = match (&u.password, &u.password_secret) {
            (Some(p), _) => p.clone(),
            (_, Some(r)) => {
                let a = secrets
                    .resolve_for(&Principal::Local, project, r)
                    .await
                    .with_context(|| format!("identity.users {}", u.email))?;
                String::from_utf8_lossy(&a.data).trim_end().to_owned()
            }
            _ => continue,
        };
        let req = SignUpRequest {
            email: Some(u.email.clone()),
            password: Some(password.clone()),
            display_name: u.display_name.clone(),
            ..SignUpRequest::default()
        };
        match identity.sign_up(&caller, req).await {
            Ok(_) => {}
            Err(gatehouse_identity::Error::Code {
                code: "EMAIL_EXISTS",
                ..
            }) if changed.contains(&u.email) => {
                update_user(
                    identity,
                    &caller,
                    &u.email,
                    password,
                    u.display_name.clone(),
                )
                .await
                .with_context(|| format!("identity.users {}", u.email))?;
            }
            Err(gatehouse_identity::Error::Code {
                code: "EMAIL_EXISTS",
                ..
            }) => {}
            Err(e) => return Err(e).with_context(|| format!("identity.users {}", u.email)),
        }
    }
    Ok(())
}

/// Sets an existing user's password and display name.
async fn update_user(
    identity: &Identity,
    caller: &Caller,
    email: &str,
    password: String,
    display_name: Option<String>,
) -> anyhow::Result<()> {
    let found = identity
        .lookup(
            caller,
            LookupRequest {
                email: vec![email.to_owned()],
                ..LookupRequest::default()
            },
        )
        .await?;
    let user = found.first().context("the user is gone")?;
    identity
        .update(
            caller,
            UpdateRequest {
                local_id: Some(user.local_id.clone()),
                password: Some(password),
                display_name,
                ..UpdateRequest::default()
            },
        )
        .await?;
    Ok(())
}

/// A manifest service as the runner deploys it: `${...}` filled, short account names expanded,
/// `gatehouse` as the program meaning this binary, SQLite instead of a SQL instance that could
/// not be started.
pub(crate) fn prepare_spec(
    m: &Manifest,
    s: &gatehouse_run::ServiceSpec,
    values: &BTreeMap<String, String>,
    data_dir: &Path,
    sqlite_fallback: &BTreeSet<String>,
) -> anyhow::Result<gatehouse_run::ServiceSpec> {
    let mut spec = s.clone();
    for v in spec.env.values_mut() {
        *v = fill(v, values);
    }
    if spec
        .service_account
        .as_deref()
        .is_some_and(|a| !a.contains('@'))
    {
        spec.service_account = spec.service_account.as_deref().map(|a| m.account_email(a));
    }
    if let gatehouse_run::spec::Command::List(list) = &mut spec.command
        && list.first().map(String::as_str) == Some("gatehouse")
        && let Ok(exe) = std::env::current_exe()
    {
        list[0] = exe.display().to_string();
    }
    let uses_fallback = spec
        .cloudsql_instances
        .iter()
        .any(|c| sqlite_fallback.contains(c.rsplit(':').next().unwrap_or(c)));
    if uses_fallback {
        spec.cloudsql_instances.clear();
        spec.secrets
            .retain(|k, _| k != "CLOUD_SQL_CREDENTIALS_SECRET");
        // A directory per service: as root the service runs as a user of its own, and its
        // database file and journals must be that user's.
        let dir = data_dir.join("sqlite").join(&spec.name);
        std::fs::create_dir_all(&dir)?;
        let db = dir.join(format!("{}.db", spec.name));
        let before = data_dir.join("sqlite").join(format!("{}.db", spec.name));
        if before.is_file() && !db.exists() {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::rename(
                    format!("{}{suffix}", before.display()),
                    format!("{}{suffix}", db.display()),
                );
            }
        }
        if let Some((uid, gid)) = gatehouse_run::isolation::service_user(&m.project.id, &spec.name)
        {
            for path in std::iter::once(dir.clone())
                .chain(std::fs::read_dir(&dir)?.flatten().map(|e| e.path()))
            {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
            }
        }
        spec.env
            .insert("DATABASE_URL".into(), format!("sqlite://{}", db.display()));
    }
    Ok(spec)
}
