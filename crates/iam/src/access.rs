//! Policies (read cached, written with etags, edited one binding at a time) and permission
//! checks: a resource's policy or an ancestor's grants the permission. Every decision about a
//! caller is audited.

use std::sync::Arc;

use serde_json::json;

use crate::{
    Error, Iam, Policy, Principal, Result, ancestors, policy, project_resource, resource_project,
    roles,
};

impl Iam {
    /// A resource's policy and its write count (cached).
    pub async fn policy(&self, resource: &str) -> Result<Arc<(Policy, i64)>> {
        if let Some(hit) = self.inner.policies.get(resource) {
            return Ok(hit);
        }
        let found = match self.inner.store.iam_policy(resource).await? {
            Some((text, writes)) => (Policy::from_store(&text)?, writes),
            None => (Policy::default(), 0),
        };
        let found = Arc::new(found);
        self.inner.policies.put(resource, found.clone());
        Ok(found)
    }

    /// Replaces a resource's policy. With `etag` the write happens only if the policy is still
    /// the one the caller read (else ABORTED, as Google). Service accounts named as members
    /// must exist. Returns the new write count.
    pub async fn set_policy(
        &self,
        resource: &str,
        policy: &Policy,
        etag: Option<&str>,
    ) -> Result<i64> {
        let expected = etag.map(policy::parse_etag).transpose()?;
        let is_project =
            resource_project(resource).is_some_and(|p| resource == project_resource(p));
        if is_project
            && policy.bindings.iter().any(|b| {
                b.members
                    .iter()
                    .any(|m| m == "allUsers" || m == "allAuthenticatedUsers")
            })
        {
            return Err(Error::InvalidArgument(
                "Project does not support allUsers and allAuthenticatedUsers as members in a \
                 Binding of a Policy."
                    .into(),
            ));
        }
        for b in &policy.bindings {
            for m in &b.members {
                if let Some(email) = m.strip_prefix("serviceAccount:")
                    && email.ends_with(".iam.gserviceaccount.com")
                    && self.account(email).await?.is_none()
                {
                    return Err(Error::InvalidArgument(format!(
                        "Service account {email} does not exist."
                    )));
                }
            }
        }
        let result = match self
            .inner
            .store
            .put_iam_policy(resource, &policy.to_store(), expected, self.now_ms())
            .await
        {
            Err(gatehouse_store::Error::Conflict(_)) => Err(Error::Aborted(
                "There were concurrent policy changes. Please retry the whole \
                 read-modify-write with exponential backoff."
                    .into(),
            )),
            other => other.map_err(Error::from),
        };
        self.inner.policies.forget(resource);
        result
    }

    /// Adds (or removes) one binding with a read-modify-write that retries on concurrent
    /// changes. Returns whether the policy changed.
    pub async fn edit_binding(
        &self,
        resource: &str,
        role: &str,
        member: &str,
        add: bool,
    ) -> Result<bool> {
        if !roles::exists(role) {
            return Err(Error::InvalidArgument(format!(
                "Role ({role}) does not exist in the resource's hierarchy."
            )));
        }
        // Validates the member's form.
        Policy::from_json(&json!({"bindings": [{"role": role, "members": [member]}]}))?;
        for _ in 0..5 {
            self.inner.policies.forget(resource);
            let current = self.policy(resource).await?;
            let mut next = current.0.clone();
            let changed = if add {
                next.add(role, member)
            } else {
                next.remove(role, member)
            };
            if !changed {
                return Ok(false);
            }
            match self
                .set_policy(resource, &next, Some(&policy::etag(current.1)))
                .await
            {
                Ok(_) => return Ok(true),
                Err(Error::Aborted(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Aborted("too many concurrent policy changes".into()))
    }

    /// Whether `principal` holds `permission` on `resource` (its own policy or its project's).
    /// Every decision goes to the audit log.
    pub async fn check(
        &self,
        principal: &Principal,
        permission: &str,
        resource: &str,
    ) -> Result<bool> {
        let allowed = self.evaluate(principal, permission, resource).await?;
        self.audit(principal, permission, resource, allowed).await;
        Ok(allowed)
    }

    /// Whether anyone at all (`allUsers`) holds `permission` on `resource`. A property of the
    /// resource's policies rather than a decision about a caller, so it is not audited.
    pub async fn is_public(&self, permission: &str, resource: &str) -> Result<bool> {
        self.evaluate(&Principal::Anonymous, permission, resource)
            .await
    }

    /// The decision itself: the resource's policy or an ancestor's grants `permission`.
    async fn evaluate(
        &self,
        principal: &Principal,
        permission: &str,
        resource: &str,
    ) -> Result<bool> {
        if matches!(principal, Principal::Local) {
            return Ok(true);
        }
        for r in ancestors(resource) {
            if self.policy(r).await?.0.allows(principal, permission) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Like [`Self::check`], failing with Google's PERMISSION_DENIED.
    pub async fn require(
        &self,
        principal: &Principal,
        permission: &str,
        resource: &str,
    ) -> Result<()> {
        if self.check(principal, permission, resource).await? {
            Ok(())
        } else {
            Err(Error::denied(permission, resource))
        }
    }

    /// The subset of `permissions` the principal holds on `resource`.
    pub async fn test_permissions(
        &self,
        principal: &Principal,
        resource: &str,
        permissions: &[String],
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for p in permissions {
            if p.contains('*') {
                return Err(Error::InvalidArgument(format!(
                    "Permission {p} is not valid: wildcards are not allowed."
                )));
            }
            if roles::known_permission(p) && self.check(principal, p, resource).await? {
                out.push(p.clone());
            }
        }
        Ok(out)
    }
}
