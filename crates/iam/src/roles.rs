//! The predefined roles and their permissions (from Google's role definitions; see
//! `../shared/specs/iam-metadata-secrets.md` §7.3). A role not listed here cannot be granted.

/// Every permission some predefined role grants, for the basic roles' patterns.
const ALL: &[&str] = &[
    "run.routes.invoke",
    "run.jobs.run",
    "run.services.get",
    "run.services.list",
    "run.services.create",
    "run.services.update",
    "run.services.delete",
    "run.services.getIamPolicy",
    "run.services.setIamPolicy",
    "secretmanager.locations.get",
    "secretmanager.locations.list",
    "secretmanager.secrets.get",
    "secretmanager.secrets.list",
    "secretmanager.secrets.create",
    "secretmanager.secrets.update",
    "secretmanager.secrets.delete",
    "secretmanager.secrets.getIamPolicy",
    "secretmanager.secrets.setIamPolicy",
    "secretmanager.versions.get",
    "secretmanager.versions.list",
    "secretmanager.versions.add",
    "secretmanager.versions.access",
    "secretmanager.versions.enable",
    "secretmanager.versions.disable",
    "secretmanager.versions.destroy",
    "cloudsql.instances.connect",
    "cloudsql.instances.get",
    "cloudsql.instances.list",
    "iam.serviceAccounts.get",
    "iam.serviceAccounts.list",
    "iam.serviceAccounts.create",
    "iam.serviceAccounts.update",
    "iam.serviceAccounts.delete",
    "iam.serviceAccounts.disable",
    "iam.serviceAccounts.enable",
    "iam.serviceAccounts.actAs",
    "iam.serviceAccounts.getIamPolicy",
    "iam.serviceAccounts.setIamPolicy",
    "iam.serviceAccounts.getAccessToken",
    "iam.serviceAccounts.getOpenIdToken",
    "iam.serviceAccounts.implicitDelegation",
    "iam.serviceAccounts.signBlob",
    "iam.serviceAccounts.signJwt",
    "iam.serviceAccountKeys.get",
    "iam.serviceAccountKeys.list",
    "iam.serviceAccountKeys.create",
    "iam.serviceAccountKeys.delete",
    "iam.serviceAccountKeys.disable",
    "iam.serviceAccountKeys.enable",
    "firebaseauth.users.get",
    "firebaseauth.users.create",
    "firebaseauth.users.update",
    "firebaseauth.users.delete",
    "firebaseauth.configs.get",
    "firebaseauth.configs.update",
    "resourcemanager.projects.get",
    "resourcemanager.projects.list",
    "resourcemanager.projects.getIamPolicy",
    "resourcemanager.projects.setIamPolicy",
];

const PROJECT_READ: [&str; 2] = [
    "resourcemanager.projects.get",
    "resourcemanager.projects.list",
];

/// The permissions of a predefined role; `None` if the role does not exist.
pub fn permissions(role: &str) -> Option<Vec<&'static str>> {
    let with_project = |list: &[&'static str]| {
        let mut v = list.to_vec();
        v.extend(PROJECT_READ);
        v
    };
    Some(match role {
        "roles/owner" => ALL.to_vec(),
        // Everything but changing who may do what.
        "roles/editor" => ALL
            .iter()
            .copied()
            .filter(|p| !p.ends_with(".setIamPolicy"))
            .collect(),
        "roles/viewer" => ALL
            .iter()
            .copied()
            .filter(|p| p.ends_with(".get") || p.ends_with(".list") || p.ends_with(".getIamPolicy"))
            .filter(|p| !p.starts_with("secretmanager.versions.access"))
            .collect(),
        "roles/run.invoker" => vec!["run.routes.invoke", "run.jobs.run"],
        "roles/run.admin" => ALL
            .iter()
            .copied()
            .filter(|p| p.starts_with("run."))
            .collect(),
        "roles/run.viewer" => vec!["run.services.get", "run.services.list"],
        "roles/secretmanager.secretAccessor" => with_project(&["secretmanager.versions.access"]),
        "roles/secretmanager.secretVersionAdder" => with_project(&["secretmanager.versions.add"]),
        "roles/secretmanager.secretVersionManager" => with_project(&[
            "secretmanager.versions.add",
            "secretmanager.versions.enable",
            "secretmanager.versions.disable",
            "secretmanager.versions.destroy",
            "secretmanager.versions.get",
            "secretmanager.versions.list",
        ]),
        "roles/secretmanager.viewer" => with_project(&[
            "secretmanager.locations.get",
            "secretmanager.locations.list",
            "secretmanager.secrets.get",
            "secretmanager.secrets.getIamPolicy",
            "secretmanager.secrets.list",
            "secretmanager.versions.get",
            "secretmanager.versions.list",
        ]),
        "roles/secretmanager.admin" => with_project(
            &ALL.iter()
                .copied()
                .filter(|p| p.starts_with("secretmanager."))
                .collect::<Vec<_>>(),
        ),
        "roles/cloudsql.client" => vec!["cloudsql.instances.connect", "cloudsql.instances.get"],
        "roles/cloudsql.admin" => ALL
            .iter()
            .copied()
            .filter(|p| p.starts_with("cloudsql."))
            .collect(),
        "roles/iam.serviceAccountTokenCreator" => with_project(&[
            "iam.serviceAccounts.get",
            "iam.serviceAccounts.getAccessToken",
            "iam.serviceAccounts.getOpenIdToken",
            "iam.serviceAccounts.implicitDelegation",
            "iam.serviceAccounts.list",
            "iam.serviceAccounts.signBlob",
            "iam.serviceAccounts.signJwt",
        ]),
        "roles/iam.serviceAccountOpenIdTokenCreator" => vec!["iam.serviceAccounts.getOpenIdToken"],
        "roles/iam.serviceAccountUser" => with_project(&[
            "iam.serviceAccounts.actAs",
            "iam.serviceAccounts.get",
            "iam.serviceAccounts.list",
        ]),
        "roles/iam.serviceAccountAdmin" => with_project(
            &ALL.iter()
                .copied()
                .filter(|p| {
                    p.starts_with("iam.serviceAccounts.")
                        && !matches!(
                            *p,
                            "iam.serviceAccounts.actAs"
                                | "iam.serviceAccounts.getAccessToken"
                                | "iam.serviceAccounts.getOpenIdToken"
                                | "iam.serviceAccounts.implicitDelegation"
                                | "iam.serviceAccounts.signBlob"
                                | "iam.serviceAccounts.signJwt"
                        )
                })
                .collect::<Vec<_>>(),
        ),
        "roles/iam.serviceAccountKeyAdmin" => with_project(
            &ALL.iter()
                .copied()
                .filter(|p| p.starts_with("iam.serviceAccountKeys."))
                .chain(["iam.serviceAccounts.get", "iam.serviceAccounts.list"])
                .collect::<Vec<_>>(),
        ),
        "roles/firebaseauth.admin" => ALL
            .iter()
            .copied()
            .filter(|p| p.starts_with("firebaseauth."))
            .collect(),
        "roles/firebaseauth.viewer" => vec!["firebaseauth.users.get", "firebaseauth.configs.get"],
        _ => return None,
    })
}

/// The predefined roles.
pub const ROLES: &[&str] = &[
    "roles/owner",
    "roles/editor",
    "roles/viewer",
    "roles/run.invoker",
    "roles/run.admin",
    "roles/run.viewer",
    "roles/secretmanager.secretAccessor",
    "roles/secretmanager.secretVersionAdder",
    "roles/secretmanager.secretVersionManager",
    "roles/secretmanager.viewer",
    "roles/secretmanager.admin",
    "roles/cloudsql.client",
    "roles/cloudsql.admin",
    "roles/iam.serviceAccountTokenCreator",
    "roles/iam.serviceAccountOpenIdTokenCreator",
    "roles/iam.serviceAccountUser",
    "roles/iam.serviceAccountAdmin",
    "roles/iam.serviceAccountKeyAdmin",
    "roles/firebaseauth.admin",
    "roles/firebaseauth.viewer",
];

type Table = std::collections::HashMap<&'static str, std::collections::HashSet<&'static str>>;

/// Role → permission set, built once.
static TABLE: std::sync::LazyLock<Table> = std::sync::LazyLock::new(|| {
    ROLES
        .iter()
        .map(|r| (*r, permissions(r).unwrap_or_default().into_iter().collect()))
        .collect()
});

/// Whether `role` grants `permission`.
pub fn grants(role: &str, permission: &str) -> bool {
    TABLE.get(role).is_some_and(|p| p.contains(permission))
}

/// Whether a role exists.
pub fn exists(role: &str) -> bool {
    TABLE.contains_key(role)
}

/// Whether a permission is one the system knows (testIamPermissions rejects others).
pub fn known_permission(permission: &str) -> bool {
    ALL.contains(&permission)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predefined_roles() {
        assert!(grants("roles/run.invoker", "run.routes.invoke"));
        assert!(!grants("roles/run.invoker", "run.services.delete"));
        assert!(grants(
            "roles/secretmanager.secretAccessor",
            "secretmanager.versions.access"
        ));
        assert!(!grants(
            "roles/secretmanager.secretAccessor",
            "secretmanager.secrets.get"
        ));
        assert!(grants(
            "roles/secretmanager.admin",
            "secretmanager.secrets.setIamPolicy"
        ));
        assert!(grants(
            "roles/iam.serviceAccountTokenCreator",
            "iam.serviceAccounts.signBlob"
        ));
        assert!(grants(
            "roles/owner",
            "resourcemanager.projects.setIamPolicy"
        ));
        assert!(!grants(
            "roles/editor",
            "resourcemanager.projects.setIamPolicy"
        ));
        assert!(grants("roles/editor", "secretmanager.versions.access"));
        assert!(!grants("roles/viewer", "secretmanager.versions.access"));
        assert!(grants("roles/viewer", "secretmanager.secrets.get"));
        assert!(grants(
            "roles/firebaseauth.admin",
            "firebaseauth.users.create"
        ));
        assert!(grants(
            "roles/cloudsql.client",
            "cloudsql.instances.connect"
        ));
        assert!(permissions("roles/made.up").is_none());
        for r in ROLES {
            assert!(
                exists(r) && permissions(r).is_some_and(|p| !p.is_empty()),
                "{r}"
            );
        }
    }
}
