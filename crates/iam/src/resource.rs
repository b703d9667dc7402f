//! Resource names: projects, service accounts, and the hierarchy policies are inherited
//! through; Google's id rules.

/// The resource name of a project.
pub fn project_resource(project: &str) -> String {
    format!("projects/{project}")
}

/// The resource name of a service account.
pub fn account_resource(project: &str, email: &str) -> String {
    format!("projects/{project}/serviceAccounts/{email}")
}

/// A resource and the resources above it whose policies also apply, nearest first:
/// `projects/p/secrets/s/versions/3` → itself, `projects/p/secrets/s`, `projects/p`.
pub fn ancestors(resource: &str) -> impl Iterator<Item = &str> {
    let segments = resource.split('/').count();
    let mut ends: Vec<usize> = resource
        .match_indices('/')
        .map(|(i, _)| i)
        .enumerate()
        // The slash after an even number of segments ends a `collection/id` prefix.
        .filter(|(n, _)| (n + 1).is_multiple_of(2))
        .map(|(_, i)| i)
        .collect();
    ends.reverse();
    let own = segments.is_multiple_of(2).then_some(resource);
    own.into_iter()
        .chain(ends.into_iter().map(move |i| &resource[..i]))
        .filter(|r| r.starts_with("projects/"))
}

/// The project a resource name belongs to (`projects/{p}/…`).
pub fn resource_project(resource: &str) -> Option<&str> {
    let rest = resource.strip_prefix("projects/")?;
    Some(rest.split('/').next().unwrap_or(rest)).filter(|p| !p.is_empty())
}

/// Google's rules for account ids: 6–30 characters, lower-case letters, digits and hyphens,
/// starting with a letter and not ending with a hyphen.
pub(crate) fn valid_account_id(id: &str) -> bool {
    let b = id.as_bytes();
    (6..=30).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.last() != Some(&b'-')
}

/// Project ids: 6–30 characters of lower-case letters, digits and hyphens, starting with a
/// letter (Google's rule; `demo-*` ids as the Firebase emulators use are fine).
pub fn valid_project_id(id: &str) -> bool {
    valid_account_id(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ancestors() {
        let a: Vec<&str> = ancestors("projects/p/secrets/s/versions/3").collect();
        assert_eq!(
            a,
            [
                "projects/p/secrets/s/versions/3",
                "projects/p/secrets/s",
                "projects/p"
            ]
        );
        let a: Vec<&str> = ancestors("projects/p/locations/l/services/hello").collect();
        assert_eq!(
            a,
            [
                "projects/p/locations/l/services/hello",
                "projects/p/locations/l",
                "projects/p"
            ]
        );
        assert_eq!(ancestors("projects/p").collect::<Vec<_>>(), ["projects/p"]);
        assert_eq!(
            ancestors("projects/p/serviceAccounts/a@b.c").collect::<Vec<_>>(),
            ["projects/p/serviceAccounts/a@b.c", "projects/p"]
        );
    }

    #[test]
    fn names_and_projects() {
        assert_eq!(project_resource("p-1"), "projects/p-1");
        assert_eq!(
            account_resource("p-1", "a@p-1.iam.gserviceaccount.com"),
            "projects/p-1/serviceAccounts/a@p-1.iam.gserviceaccount.com"
        );
        assert_eq!(resource_project("projects/p-1/secrets/s"), Some("p-1"));
        assert_eq!(resource_project("projects/p-1"), Some("p-1"));
        assert_eq!(resource_project("projects/"), None);
        assert_eq!(resource_project("folders/f"), None);
    }

    #[test]
    fn id_rules() {
        assert!(valid_project_id("demo-project"));
        assert!(valid_account_id("vote-app"));
        assert!(valid_account_id(&format!("a{}", "b".repeat(29))));
        assert!(!valid_account_id(&format!("a{}", "b".repeat(30))));
        assert!(!valid_account_id("short"));
        assert!(!valid_account_id("1starts-with-digit"));
        assert!(!valid_account_id("Upper-case"));
        assert!(!valid_account_id("ends-with-"));
        assert!(!valid_account_id("under_score"));
    }
}
