//! Projects (created on first use) and service accounts: create, read (cached), update,
//! disable, delete.

use std::sync::Arc;

use gatehouse_store::{ProjectRecord, ServiceAccountRecord};
use sha2::Digest as _;

use crate::resource::valid_account_id;
use crate::{Error, Iam, Result, account_resource, valid_project_id};

/// `n` random digits starting with 1 (the shape of Google's unique ids).
fn random_digits(n: usize) -> String {
    use rand::Rng as _;
    let mut rng = rand::rng();
    let mut s = String::from("1");
    s.extend((1..n).map(|_| char::from(b'0' + rng.random_range(0..10u8))));
    s
}

impl Iam {
    /// The project with this id (created on first use, with a stable 12-digit number).
    pub async fn project(&self, project_id: &str) -> Result<ProjectRecord> {
        if let Some(p) = self.inner.store.project(project_id).await? {
            return Ok(p);
        }
        if !valid_project_id(project_id) {
            return Err(Error::InvalidArgument(format!(
                "Invalid project id: {project_id}"
            )));
        }
        let digest = sha2::Sha256::digest(project_id.as_bytes());
        let mut n: u64 = 0;
        for b in &digest[..8] {
            n = (n << 8) | u64::from(*b);
        }
        let number = format!("{}", 100_000_000_000 + n % 900_000_000_000);
        Ok(self
            .inner
            .store
            .ensure_project(project_id, &number, self.now_ms())
            .await?)
    }

    // ------------------------------------------------------------------ accounts

    /// Creates `account_id@project.iam.gserviceaccount.com`.
    pub async fn create_account(
        &self,
        project: &str,
        account_id: &str,
        display_name: &str,
        description: &str,
    ) -> Result<ServiceAccountRecord> {
        if !valid_account_id(account_id) {
            return Err(Error::InvalidArgument(format!(
                "Invalid account id {account_id:?}: 6 to 30 lower-case letters, digits or hyphens, \
                 starting with a letter."
            )));
        }
        let project = self.project(project).await?;
        let email = format!(
            "{account_id}@{}.iam.gserviceaccount.com",
            project.project_id
        );
        let record = ServiceAccountRecord {
            email: email.clone(),
            project_id: project.project_id.clone(),
            account_id: account_id.to_owned(),
            unique_id: random_digits(21),
            display_name: display_name.to_owned(),
            description: description.to_owned(),
            disabled: false,
            created_at: self.now_ms(),
        };
        match self.inner.store.insert_service_account(&record).await {
            Ok(()) => {}
            Err(gatehouse_store::Error::Conflict(_)) => {
                return Err(Error::AlreadyExists(format!(
                    "Service account {account_id} already exists within project projects/{}.",
                    project.project_id
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.inner.accounts.forget(&email);
        Ok(record)
    }

    /// A service account by email or unique id (cached).
    pub async fn account(&self, email_or_id: &str) -> Result<Option<Arc<ServiceAccountRecord>>> {
        if let Some(hit) = self.inner.accounts.get(email_or_id) {
            return Ok(hit);
        }
        let found = self
            .inner
            .store
            .service_account(email_or_id)
            .await?
            .map(Arc::new);
        self.inner.accounts.put(email_or_id, found.clone());
        Ok(found)
    }

    /// A service account that must exist.
    pub async fn require_account(&self, email_or_id: &str) -> Result<Arc<ServiceAccountRecord>> {
        self.account(email_or_id).await?.ok_or_else(|| {
            Error::NotFound(format!(
                "Service account projects/-/serviceAccounts/{email_or_id} does not exist."
            ))
        })
    }

    /// A project's service accounts.
    pub async fn accounts(&self, project: &str) -> Result<Vec<ServiceAccountRecord>> {
        let project = self.project(project).await?;
        Ok(self
            .inner
            .store
            .service_accounts(&project.project_id)
            .await?)
    }

    /// Disables or enables an account: its keys and tokens stop (or start again) working.
    pub async fn set_account_disabled(&self, email: &str, disabled: bool) -> Result<()> {
        let mut a = (*self.require_account(email).await?).clone();
        a.disabled = disabled;
        self.inner.store.update_service_account(&a).await?;
        self.forget_account(&a);
        Ok(())
    }

    /// Updates display name and description.
    pub async fn update_account(
        &self,
        email: &str,
        display_name: Option<&str>,
        description: Option<&str>,
    ) -> Result<ServiceAccountRecord> {
        let mut a = (*self.require_account(email).await?).clone();
        if let Some(d) = display_name {
            a.display_name = d.to_owned();
        }
        if let Some(d) = description {
            a.description = d.to_owned();
        }
        self.inner.store.update_service_account(&a).await?;
        self.forget_account(&a);
        Ok(a)
    }

    /// Deletes an account with its keys and its policy.
    pub async fn delete_account(&self, email: &str) -> Result<()> {
        let a = self.require_account(email).await?;
        let keys = self.inner.store.service_account_keys(&a.email).await?;
        let resource = account_resource(&a.project_id, &a.email);
        self.inner
            .store
            .delete_service_account(&a.email, &resource)
            .await?;
        for k in keys {
            self.inner.keys.forget(&k.key_id);
        }
        self.inner.policies.forget(&resource);
        self.forget_account(&a);
        Ok(())
    }

    fn forget_account(&self, a: &ServiceAccountRecord) {
        self.inner.accounts.forget(&a.email);
        self.inner.accounts.forget(&a.unique_id);
    }
}
