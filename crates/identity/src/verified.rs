//! A cache of tokens whose signature and claims have already been checked.
//!
//! Verifying RS256 costs tens of microseconds; clients present the same ID token for up to an
//! hour. Only the signature and the issuer/audience/expiry checks are cached — the account
//! checks (exists, enabled, not revoked) run on every request. An entry holds only while the
//! key set that verified it is the current one: a key that is rotated out or revoked must stop
//! verifying the tokens it signed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use gatehouse_keyring::KeySet;

use gatehouse_tokens::Claims;
use serde_json::Value;

const MAX_ENTRIES: usize = 50_000;

struct Entry {
    issuer: String,
    audience: String,
    exp: i64,
    claims: Claims,
    /// The key set the token was verified with.
    keys: Weak<KeySet>,
}

#[derive(Default)]
pub(crate) struct VerifiedTokens {
    entries: Mutex<HashMap<String, Entry>>,
}

impl VerifiedTokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        match self.entries.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The claims of `token` if it was verified for this issuer and audience and is unexpired.
    pub(crate) fn get(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        now_secs: i64,
        keys: &Arc<KeySet>,
    ) -> Option<Claims> {
        let entries = self.lock();
        let e = entries.get(token)?;
        (e.issuer == issuer
            && e.audience == audience
            && e.exp > now_secs
            && std::ptr::eq(e.keys.as_ptr(), Arc::as_ptr(keys)))
        .then(|| e.claims.clone())
    }

    pub(crate) fn put(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        claims: &Claims,
        keys: &Arc<KeySet>,
    ) {
        let Some(exp) = claims.get("exp").and_then(Value::as_i64) else {
            return;
        };
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            token.to_owned(),
            Entry {
                issuer: issuer.to_owned(),
                audience: audience.to_owned(),
                exp,
                claims: claims.clone(),
                keys: Arc::downgrade(keys),
            },
        );
    }
}
