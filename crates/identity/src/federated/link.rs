//! Finding, linking or creating the account of a verified provider identity, under
//! Firebase's "one account per e-mail" rules (see the module docs of `federated`).

use gatehouse_store::UserRecord;

use super::IdpProfile;
use crate::user::{new_account, new_local_id, stored_providers};
use crate::{Caller, Error, Identity, IssuedTokens, ProviderInfo, Result};

/// The result of a federated sign-in.
#[derive(Debug, Clone)]
pub struct IdpSignedIn {
    pub profile: IdpProfile,
    /// The account signed in to (or, with `need_confirmation`, the one holding the e-mail).
    pub user: UserRecord,
    pub tokens: Option<IssuedTokens>,
    pub is_new_user: bool,
    /// The e-mail belongs to another account and the provider cannot vouch for it.
    pub need_confirmation: bool,
    /// The upstream ID token, when one was given or obtained.
    pub oauth_id_token: Option<String>,
    pub oauth_access_token: Option<String>,
}

impl Identity {
    /// Finds, links or creates the account for a verified provider identity and issues our
    /// tokens (see the module docs for the rules).
    pub(crate) async fn sign_in_federated(
        &self,
        caller: &Caller,
        tenant: &str,
        profile: IdpProfile,
        link_to: Option<UserRecord>,
        trusted: bool,
    ) -> Result<IdpSignedIn> {
        // Two first sign-ins of one new identity race to create its account: the loser's
        // insert hits the unique identity or e-mail, and it starts over, finding the account.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .sign_in_federated_once(caller, tenant, profile.clone(), link_to.clone(), trusted)
                .await;
            match result {
                Err(Error::Code {
                    code: "EMAIL_EXISTS" | "FEDERATED_USER_ID_ALREADY_LINKED",
                    ..
                }) if link_to.is_none() && attempt < 3 => continue,
                other => return other,
            }
        }
    }

    async fn sign_in_federated_once(
        &self,
        caller: &Caller,
        tenant: &str,
        profile: IdpProfile,
        link_to: Option<UserRecord>,
        trusted: bool,
    ) -> Result<IdpSignedIn> {
        let project = caller.project.clone();
        let pid = project.project_id.as_str();
        self.inner.limits.sign_in(caller.ip)?;
        let now = self.now_ms();
        let entry = ProviderInfo {
            provider_id: profile.provider_id.clone(),
            raw_id: profile.raw_id.clone(),
            federated_id: Some(profile.federated_id()),
            email: profile.email.clone(),
            display_name: profile.display_name.clone(),
            photo_url: profile.photo_url.clone(),
            ..ProviderInfo::default()
        };
        let set_entry = |u: &mut UserRecord| -> Result<()> {
            let mut list = stored_providers(u);
            list.retain(|p| p.provider_id != entry.provider_id);
            list.push(entry.clone());
            u.providers =
                serde_json::to_string(&list).map_err(|e| Error::internal(e.to_string()))?;
            Ok(())
        };
        let linked = self
            .inner
            .store
            .user_id_by_identity(pid, tenant, &profile.provider_id, &profile.raw_id)
            .await?;
        let done = |user: UserRecord, is_new_user: bool| IdpSignedIn {
            profile: profile.clone(),
            user,
            tokens: None,
            is_new_user,
            need_confirmation: false,
            oauth_id_token: None,
            oauth_access_token: None,
        };
        let mut out = if let Some(target) = link_to {
            if linked.as_deref().is_some_and(|l| l != target.local_id) {
                return Err(Error::code("FEDERATED_USER_ID_ALREADY_LINKED"));
            }
            if target.disabled {
                return Err(Error::code("USER_DISABLED"));
            }
            if stored_providers(&target)
                .iter()
                .any(|p| p.provider_id == profile.provider_id && p.raw_id != profile.raw_id)
            {
                return Err(Error::code("PROVIDER_ALREADY_LINKED"));
            }
            // The identity's e-mail may not belong to another account (one account per e-mail).
            if let Some(e) = &profile.email
                && self
                    .email_taken(pid, tenant, e, Some(&target.local_id))
                    .await?
            {
                return Err(Error::code("EMAIL_EXISTS"));
            }
            let email_free = match &profile.email {
                Some(e) if target.email.is_none() => {
                    !self
                        .email_taken(pid, tenant, e, Some(&target.local_id))
                        .await?
                }
                _ => false,
            };
            let user = self
                .modify_user(pid, tenant, &target.local_id, |u| {
                    set_entry(u)?;
                    if email_free && u.email.is_none() {
                        u.email.clone_from(&profile.email);
                        u.email_verified = profile.email_verified;
                    }
                    if u.display_name.is_none() {
                        u.display_name.clone_from(&profile.display_name);
                    }
                    if u.photo_url.is_none() {
                        u.photo_url.clone_from(&profile.photo_url);
                    }
                    u.last_login_at = Some(now);
                    Ok(())
                })
                .await?;
            done(user, false)
        } else if let Some(local_id) = linked {
            let user = self
                .modify_user(pid, tenant, &local_id, |u| {
                    if u.disabled {
                        return Err(Error::code("USER_DISABLED"));
                    }
                    set_entry(u)?;
                    u.last_login_at = Some(now);
                    Ok(())
                })
                .await?;
            done(user, false)
        } else {
            let holder = match &profile.email {
                Some(e) if !self.settings(pid).await.sign_in.allow_duplicate_emails => {
                    self.first_user_by_email(pid, tenant, e).await?
                }
                _ => None,
            };
            let holds_identity = |u: &UserRecord| {
                stored_providers(u)
                    .iter()
                    .any(|p| p.provider_id == profile.provider_id && p.raw_id == profile.raw_id)
            };
            match holder {
                Some(existing) if holds_identity(&existing) => {
                    // Linked meanwhile (a concurrent first sign-in of this identity).
                    let user = self
                        .modify_user(pid, tenant, &existing.local_id, |u| {
                            if u.disabled {
                                return Err(Error::code("USER_DISABLED"));
                            }
                            u.last_login_at = Some(now);
                            Ok(())
                        })
                        .await?;
                    done(user, false)
                }
                Some(existing) if trusted && profile.email_verified => {
                    // The provider vouches for the address: link. An account that never proved
                    // it owns the address loses its password (and unverified e-mail state).
                    let verified_before = existing.email_verified;
                    let user = self
                        .modify_user(pid, tenant, &existing.local_id, |u| {
                            if u.disabled {
                                return Err(Error::code("USER_DISABLED"));
                            }
                            if !verified_before {
                                // Whoever registered the address without proving it loses
                                // every way in they set up: password, phone, other identities.
                                u.password_hash = None;
                                u.salt = None;
                                u.phone_number = None;
                                u.providers = "[]".into();
                                u.valid_since_secs = now / 1000;
                            }
                            u.email_verified = true;
                            set_entry(u)?;
                            u.last_login_at = Some(now);
                            Ok(())
                        })
                        .await?;
                    if !verified_before {
                        self.inner
                            .store
                            .delete_refresh_tokens(pid, tenant, &user.local_id)
                            .await?;
                    }
                    done(user, false)
                }
                Some(existing) => {
                    let mut o = done(existing, false);
                    o.need_confirmation = true;
                    return Ok(o);
                }
                None => {
                    let mut user = new_account(pid, tenant, new_local_id(), now, true);
                    user.email.clone_from(&profile.email);
                    user.email_unique = if self.settings(pid).await.sign_in.allow_duplicate_emails {
                        None
                    } else {
                        profile.email.clone()
                    };
                    user.email_verified = profile.email.is_some() && profile.email_verified;
                    user.display_name.clone_from(&profile.display_name);
                    user.photo_url.clone_from(&profile.photo_url);
                    set_entry(&mut user)?;
                    self.insert_user(&user).await?;
                    done(user, true)
                }
            }
        };
        out.tokens = Some(
            self.issue_tokens(&project, &out.user, &profile.provider_id, None)
                .await?,
        );
        Ok(out)
    }
}
