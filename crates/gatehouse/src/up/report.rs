//! What `up` tells the person (or script) running it, on stdout: the plan, a progress line
//! per component as it starts, the URL table and the next steps — or, with `--output json`,
//! the same as JSON lines with stable machine keys (`identity`, `iam`, `service:hello`,
//! `sql:votes-db`, `gateway:api-gateway`).
//!
//! Formatting only: it must not start or change anything.

use std::collections::BTreeMap;
use std::path::Path;

use super::args::Output;
use super::manifest::Manifest;
use super::plan::{Change, Step};

/// One started component, as the URL table and the JSON report show it.
#[derive(Debug, Clone)]
pub(crate) struct Component {
    /// The stable machine key: `identity`, `iam`, `service:NAME`, `sql:NAME`, `gateway:NAME`.
    pub(crate) key: String,
    /// The table's label: `identity`, `iam + secrets`, `service NAME`, ...
    pub(crate) label: String,
    pub(crate) url: String,
    pub(crate) notes: String,
}

/// Where `up` reports to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Report {
    pub(crate) output: Output,
}

impl Report {
    fn json(self) -> bool {
        self.output == Output::Json
    }

    /// The plan.
    pub(crate) fn plan(self, changes: &[Step]) {
        if self.json() {
            let list: Vec<serde_json::Value> = changes
                .iter()
                .map(|(c, kind, name)| {
                    serde_json::json!({"change": c.as_str(), "kind": kind.as_str(), "name": name})
                })
                .collect();
            crate::say(&serde_json::json!({"plan": list}).to_string());
        } else {
            crate::say(&plan_text(changes));
        }
    }

    /// The persistent changes are applied: a line each (text only).
    pub(crate) fn applied_persistent(self, changes: &[Step]) {
        if self.json() {
            return;
        }
        for (change, kind, name) in changes {
            if kind.is_persistent() {
                crate::say(&format!("  applied {} {kind} {name}", change.as_str()));
            }
        }
    }

    /// A component is up (text only: the JSON report lists them all at the end).
    pub(crate) fn started(self, c: &Component) {
        if !self.json() {
            crate::say(&format!("  started {:<24} {}", c.label, c.url));
        }
    }

    /// A notice for the person (in JSON mode, to the log).
    pub(crate) fn notice(self, text: &str) {
        if self.json() {
            tracing::warn!("{text}");
        } else {
            crate::say(text);
        }
    }

    /// Everything is up: the URL table (or the JSON report).
    pub(crate) fn ready(self, components: &[Component], ready_ms: u64, data_dir: &Path) {
        if self.json() {
            let urls: serde_json::Map<String, serde_json::Value> = components
                .iter()
                .map(|c| {
                    (
                        c.key.clone(),
                        serde_json::json!({"url": c.url, "notes": c.notes}),
                    )
                })
                .collect();
            crate::say(
                &serde_json::json!({"ready_ms": ready_ms, "components": urls, "data_dir": data_dir})
                    .to_string(),
            );
            return;
        }
        let mut rows: Vec<[String; 3]> = vec![["COMPONENT".into(), "URL".into(), "NOTES".into()]];
        rows.extend(
            components
                .iter()
                .map(|c| [c.label.clone(), c.url.clone(), c.notes.clone()]),
        );
        crate::say(&format!("\n{}", crate::table(&rows)));
        crate::say(&format!(
            "Ready in {ready_ms} ms. Logs: {}. Ctrl-C or `{} down --data-dir {}` stops everything.",
            data_dir.join("logs").display(),
            exe(),
            data_dir.display()
        ));
    }

    /// Changes applied by the running `up` (a second `up` on the same data directory).
    pub(crate) fn applied(self, report: &[&str]) {
        if self.json() {
            crate::say(&serde_json::json!({"applied": report}).to_string());
        } else if report.is_empty() {
            crate::say("Applied to the running gatehouse: no changes.");
        } else {
            crate::say(&format!(
                "Applied to the running gatehouse:\n  {}",
                report.join("\n  ")
            ));
        }
    }
}

/// The plan as text.
pub(crate) fn plan_text(changes: &[Step]) -> String {
    if changes.is_empty() {
        return "Plan: no changes. The manifest matches what is applied.".into();
    }
    let mut lines = vec!["Plan:".to_owned()];
    let (mut c, mut u, mut d) = (0, 0, 0);
    for (change, kind, name) in changes {
        let sign = match change {
            Change::Create => {
                c += 1;
                "+ create"
            }
            Change::Update => {
                u += 1;
                "~ update"
            }
            Change::Delete => {
                d += 1;
                "- delete"
            }
        };
        lines.push(format!("  {sign} {kind} {name}"));
    }
    lines.push(format!("{c} to create, {u} to update, {d} to delete."));
    lines.join("\n")
}

/// This binary, as the person can run it: `gatehouse` when that is what `PATH` finds, else
/// its full path (the demo runs from `target/`, which is not on `PATH`).
pub(crate) fn exe() -> String {
    let Ok(me) = std::env::current_exe() else {
        return "gatehouse".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::canonicalize(dir.join("gatehouse")).ok() == std::fs::canonicalize(&me).ok()
        })
    });
    if on_path {
        "gatehouse".into()
    } else {
        me.display().to_string()
    }
}

/// The demo's next steps, with this run's URLs.
pub(crate) fn demo_steps(m: &Manifest, values: &BTreeMap<String, String>, data: &Path) -> String {
    let get = |k: &str| values.get(k).cloned().unwrap_or_default();
    let key = m
        .identity
        .api_keys
        .first()
        .cloned()
        .unwrap_or_else(|| "any".into());
    let user = m.identity.users.first();
    let (email, password) = user.map_or(("ada@example.com".into(), "correct-horse".into()), |u| {
        (u.email.clone(), u.password.clone().unwrap_or_default())
    });
    format!(
        "\nNext steps\n\
         1. The first seed: open {vote}/ , sign in (or sign up), vote.\n\
         2. The second seed:\n\
         \x20  TOKEN=$(curl -s '{identity_url}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key={key}' \\\n\
         \x20    -H 'content-type: application/json' -d '{{\"email\":\"{email}\",\"password\":\"{password}\",\"returnSecureToken\":true}}' | sed -E 's/.*\"idToken\": *\"([^\"]+)\".*/\\1/')\n\
         \x20  curl -i {gw}/hello                                   # 401: no token\n\
         \x20  curl -i {hello}/                                     # 401: the backend is private\n\
         \x20  curl -i {hello}/ -H \"Authorization: Bearer $({exe} iam --data-dir {data} print-id-token --audience {hello} --service-account vote-identity@{project}.iam.gserviceaccount.com)\"   # 403: only the gateway's account may invoke it\n\
         \x20  curl -s {gw}/hello -H \"Authorization: Bearer $TOKEN\"  # 200, with the user's claims",
        vote = get("services.vote.url"),
        identity_url = get("identity.url"),
        gw = get("gateways.api-gateway.url"),
        hello = get("services.hello.url"),
        exe = exe(),
        data = data.display(),
        project = m.project.id,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::super::plan::Kind;
    use super::*;

    #[test]
    fn the_plan_counts_each_change() {
        let text = plan_text(&[
            (Change::Create, Kind::Service, "a".into()),
            (Change::Update, Kind::Secret, "b".into()),
            (Change::Delete, Kind::Gateway, "c".into()),
            (Change::Create, Kind::User, "d".into()),
        ]);
        assert!(text.contains("  + create service a"), "{text}");
        assert!(text.contains("  ~ update secret b"), "{text}");
        assert!(text.contains("  - delete gateway c"), "{text}");
        assert!(
            text.ends_with("2 to create, 1 to update, 1 to delete."),
            "{text}"
        );
        assert!(plan_text(&[]).starts_with("Plan: no changes."));
    }
}
