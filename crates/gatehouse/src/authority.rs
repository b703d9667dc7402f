//! IAM as the identity server's authority: admin credentials are service-account tokens whose
//! account holds an admin role on the project; custom tokens may be signed with any enabled
//! key of one of the project's service accounts (its key file, or `signBlob` on Cloud Run).

use gatehouse_iam::{Iam, Principal, project_resource};
use gatehouse_identity::{Authority, AuthorityFuture};
use gatehouse_tokens::PublicKey;

/// The permission that makes a principal an Identity Platform admin (held by
/// `roles/firebaseauth.admin`, `roles/editor` and `roles/owner`).
const ADMIN_PERMISSION: &str = "firebaseauth.users.update";

/// [`Authority`] backed by IAM.
pub struct IamAuthority(pub Iam);

impl Authority for IamAuthority {
    fn is_admin<'a>(&'a self, bearer: &'a str, project_id: &'a str) -> AuthorityFuture<'a, bool> {
        Box::pin(async move {
            let audiences = [
                "https://identitytoolkit.googleapis.com/",
                "https://firebaseauth.googleapis.com/",
            ];
            let Ok(principal) = self.0.authenticate(bearer, &audiences).await else {
                return false;
            };
            if matches!(principal, Principal::Anonymous) {
                return false;
            }
            self.0
                .check(&principal, ADMIN_PERMISSION, &project_resource(project_id))
                .await
                .unwrap_or(false)
        })
    }

    fn custom_token_keys<'a>(
        &'a self,
        issuer: &'a str,
        project_id: &'a str,
    ) -> AuthorityFuture<'a, Vec<PublicKey>> {
        Box::pin(async move {
            let Ok(Some(account)) = self.0.account(issuer).await else {
                return Vec::new();
            };
            if account.disabled || account.project_id != project_id {
                return Vec::new();
            }
            let Ok(keys) = self.0.published_keys(&account.email).await else {
                return Vec::new();
            };
            keys.iter()
                .filter_map(|k| PublicKey::from_jwk(&k.jwk).ok())
                .collect()
        })
    }
}
