//! The IAM check in front of every call: resolve the project, decide on the resource (Google's
//! PERMISSION_DENIED wording, naming the resource as the caller did), then read the secret.

use gatehouse_iam::{Error, Principal, Result};
use gatehouse_store::SecretRecord;

use crate::rules::denied;
use crate::{SecretName, SecretView, Secrets};

impl Secrets {
    /// The project (id and number) for an id or number.
    pub(crate) async fn project(&self, id_or_number: &str) -> Result<(String, String)> {
        let p = self.iam.project(id_or_number).await?;
        Ok((p.project_id, p.project_number))
    }

    pub(crate) async fn require(
        &self,
        who: &Principal,
        permission: &str,
        resource: &str,
        shown: &str,
    ) -> Result<()> {
        if self.iam.check(who, permission, resource).await? {
            Ok(())
        } else {
            Err(denied(permission, shown))
        }
    }

    /// The stored secret, or Google's NOT_FOUND (`… not found{suffix}.`).
    pub(crate) async fn stored(
        &self,
        project_id: &str,
        number: &str,
        secret: &str,
        suffix: &str,
    ) -> Result<SecretRecord> {
        self.store.secret(project_id, secret).await?.ok_or_else(|| {
            Error::NotFound(format!(
                "Secret [projects/{number}/secrets/{secret}] not found{suffix}."
            ))
        })
    }

    /// A secret the caller may act on with `permission`, or Google's error.
    pub(crate) async fn secret_for(
        &self,
        who: &Principal,
        name: &str,
        permission: &str,
    ) -> Result<(SecretView, SecretName)> {
        let n = SecretName::parse(name)?;
        let (project_id, number) = self.project(&n.project).await?;
        let resource = format!("projects/{project_id}/secrets/{}", n.secret);
        self.require(who, permission, &resource, name).await?;
        let record = self.stored(&project_id, &number, &n.secret, "").await?;
        Ok((
            SecretView {
                record,
                project_number: number,
            },
            n,
        ))
    }
}
