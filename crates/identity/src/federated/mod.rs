//! Federated sign-in with OpenID Connect providers (Google is one, preconfigured by its
//! issuer): the authorization-code flow with PKCE for the hosted sign-in page, and
//! `accounts:signInWithIdp` for the SDKs' `signInWithCredential` / popup / redirect paths.
//!
//! Either way an upstream ID token is verified against the provider's published keys (issuer,
//! audience = our client id, expiry, nonce), then the user is found by the provider identity,
//! linked, or created, under Firebase's default "one account per e-mail" rules:
//!
//! - a known provider identity signs in to its account;
//! - with `idToken` (linking), the identity is added to that account, unless it belongs to
//!   another (`FEDERATED_USER_ID_ALREADY_LINKED`);
//! - an e-mail that already has an account: when the provider is trusted for its e-mails
//!   (Google, or a provider configured so) and says the address is verified, the identity is
//!   linked to that account — and if the account had not verified the address, its password is
//!   removed, so whoever set it cannot keep access. Otherwise the answer is `needConfirmation`
//!   (the SDKs' `auth/account-exists-with-different-credential`): the user must sign in the
//!   old way and link;
//! - anything else creates an account.
//!
//! Development projects keep the emulator's fake identity provider: an unsigned JWT or plain
//! JSON claims as `id_token` is accepted for a provider that has no configuration. Production
//! projects only accept tokens of configured, enabled providers, verified.
//!
//! By concern: `config` (a provider's configuration), `discovery` (OpenID discovery, the
//! provider's key set, the outbound HTTP client), `flow` (the authorization-code flow of the
//! hosted sign-in page), `idp` (`accounts:signInWithIdp`, the provider's claims, the
//! `VerifyAssertionResponse`) and `link` (finding, linking or creating the account).

mod config;
mod discovery;
mod flow;
mod idp;
mod link;

pub use config::IdpConfig;
pub(crate) use discovery::Federation;
pub use flow::ReturnTo;
pub use idp::{IdpProfile, SignInWithIdpRequest};
pub use link::IdpSignedIn;

use crate::session::token_hash;
use crate::{Identity, ProjectConfig};

/// Google's issuer.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

impl Identity {
    /// The enabled providers of a project, in configuration order.
    pub fn providers(&self, project: &ProjectConfig) -> Vec<IdpConfig> {
        project
            .providers
            .iter()
            .filter(|p| p.enabled)
            .cloned()
            .collect()
    }

    fn provider<'a>(&self, project: &'a ProjectConfig, provider_id: &str) -> Option<&'a IdpConfig> {
        project
            .providers
            .iter()
            .find(|p| p.provider_id == provider_id)
    }
}

/// The name of the cookie binding the flow with this `state` to the browser that started it.
pub fn binding_cookie(state: &str) -> String {
    let h = token_hash(state);
    format!("gatehouse_idp_{}", &h[..h.len().min(16)])
}

/// `application/x-www-form-urlencoded` encoding of a client credential for HTTP Basic
/// (RFC 6749 §2.3.1).
fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
