//! Where Identity Toolkit and emulator paths keep their project, tenant and operation: Google
//! path templates (`gatehouse-google-api`'s route table, with the any-verb `:*` extension);
//! the handlers in `routes` dispatch on the operation's name.

use std::sync::LazyLock;

use gatehouse_google_api::RouteTable;
use gatehouse_google_api::path::TemplateError;

/// Where an Identity Toolkit path keeps its project, tenant and operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Toolkit {
    /// `v1/{op}` (`v1/accounts:signUp`, `v1/projects`).
    Bare,
    /// `v1/projects/{project}:{op}`.
    ProjectVerb,
    /// `v1/projects/{project}/{op}`.
    Project,
    /// `v1/projects/{project}/tenants/{tenant}:{op}`.
    TenantVerb,
    /// `v1/projects/{project}/tenants/{tenant}/{op}`.
    Tenant,
    /// `v2/projects/{project}/config`.
    Config,
}

pub(crate) static TOOLKIT: LazyLock<Result<RouteTable<Toolkit>, TemplateError>> =
    LazyLock::new(|| {
        const V1: &str = "/identitytoolkit.googleapis.com/v1";
        let mut t = RouteTable::new();
        t.add(None, &format!("{V1}/{{op}}"), Toolkit::Bare)?
            .add(None, &format!("{V1}/{{op}}:*"), Toolkit::Bare)?
            .add(
                None,
                &format!("{V1}/projects/{{project}}:*"),
                Toolkit::ProjectVerb,
            )?
            .add(
                None,
                &format!("{V1}/projects/{{project}}/{{op}}"),
                Toolkit::Project,
            )?
            .add(
                None,
                &format!("{V1}/projects/{{project}}/{{op}}:*"),
                Toolkit::Project,
            )?
            .add(
                None,
                &format!("{V1}/projects/{{project}}/tenants/{{tenant}}:*"),
                Toolkit::TenantVerb,
            )?
            .add(
                None,
                &format!("{V1}/projects/{{project}}/tenants/{{tenant}}/{{op}}"),
                Toolkit::Tenant,
            )?
            .add(
                None,
                &format!("{V1}/projects/{{project}}/tenants/{{tenant}}/{{op}}:*"),
                Toolkit::Tenant,
            )?
            .add(
                None,
                "/identitytoolkit.googleapis.com/v2/projects/{project}/config",
                Toolkit::Config,
            )?;
        Ok(t)
    });

/// `/emulator/v1/projects/{project}[/tenants/{tenant}]/{what}`; the flag says whether a
/// tenant is in the path.
pub(crate) static EMULATOR: LazyLock<Result<RouteTable<bool>, TemplateError>> =
    LazyLock::new(|| {
        let mut t = RouteTable::new();
        t.add(None, "/emulator/v1/projects/{project}/{what}", false)?
            .add(
                None,
                "/emulator/v1/projects/{project}/tenants/{tenant}/{what}",
                true,
            )?;
        Ok(t)
    });

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    fn toolkit(method: Method, path: &str) -> Option<(Toolkit, Vec<(String, String)>)> {
        let table = TOOLKIT.as_ref().ok()?;
        let found = table.find(&method, path).ok()?;
        let captures = found
            .captures
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Some((*found.handler, captures))
    }

    #[test]
    fn toolkit_paths_resolve_project_tenant_and_operation() {
        let base = "/identitytoolkit.googleapis.com";
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            toolkit(Method::POST, &format!("{base}/v1/accounts:signUp")),
            Some((Toolkit::Bare, pairs(&[("op", "accounts")])))
        );
        assert_eq!(
            toolkit(Method::GET, &format!("{base}/v1/projects")),
            Some((Toolkit::Bare, pairs(&[("op", "projects")])))
        );
        assert_eq!(
            toolkit(
                Method::POST,
                &format!("{base}/v1/projects/p:createSessionCookie")
            ),
            Some((Toolkit::ProjectVerb, pairs(&[("project", "p")])))
        );
        assert_eq!(
            toolkit(
                Method::POST,
                &format!("{base}/v1/projects/p/accounts:lookup")
            ),
            Some((
                Toolkit::Project,
                pairs(&[("project", "p"), ("op", "accounts")])
            ))
        );
        assert_eq!(
            toolkit(Method::POST, &format!("{base}/v1/projects/p/tenants/t:x")),
            Some((
                Toolkit::TenantVerb,
                pairs(&[("project", "p"), ("tenant", "t")])
            ))
        );
        assert_eq!(
            toolkit(
                Method::POST,
                &format!("{base}/v1/projects/p/tenants/t/accounts")
            ),
            Some((
                Toolkit::Tenant,
                pairs(&[("project", "p"), ("tenant", "t"), ("op", "accounts")])
            ))
        );
        assert_eq!(
            toolkit(Method::PATCH, &format!("{base}/v2/projects/p/config")),
            Some((Toolkit::Config, pairs(&[("project", "p")])))
        );
        for miss in [
            "/v1/projects/p",
            "/v1/projects/p/tenants/t",
            "/v1/projects/p%2Ftenants%2Ft/accounts:lookup",
            "/v1/projects/../accounts:lookup",
            "/v2/projects/p/other",
            "/v3/accounts:signUp",
        ] {
            assert_eq!(
                toolkit(Method::POST, &format!("{base}{miss}")),
                None,
                "{miss}"
            );
        }
        assert!(EMULATOR.is_ok());
    }
}
