//! Signing keys: created and stored by the server, rotated on a schedule, published until
//! every token they signed has expired.
//!
//! Per purpose the signer is the oldest key that has not retired. The next key is created a
//! quarter of a rotation period before the current one retires, so it is published (and in
//! every verifier's cache) before it signs anything. All replicas read the same table and
//! pick the same signer.

use std::sync::{Arc, RwLock};

use gatehouse_store::{SigningKeyRecord, Store};
use gatehouse_tokens::{Claims, SigningKey, Verifier, encode_rs256};
use serde_json::{Map, Value, json};

use crate::{Clock, Error, Result};

/// What a key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// Firebase ID tokens (`securetoken@system.gserviceaccount.com`).
    IdToken,
    /// Session cookies (`identitytoolkit/v3/relyingparty/publicKeys`).
    SessionCookie,
}

impl KeyPurpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::IdToken => "id_token",
            Self::SessionCookie => "session_cookie",
        }
    }

    /// How long a token signed for this purpose can live, in ms.
    fn max_token_ms(self) -> i64 {
        match self {
            Self::IdToken => 3_600_000,
            Self::SessionCookie => 14 * 86_400_000,
        }
    }
}

/// The published keys of one purpose and its current signer.
#[derive(Debug)]
pub struct KeySet {
    signer: Arc<SigningKey>,
    /// The published key ids, in store order.
    kids: Vec<String>,
    verifier: Verifier,
    jwks: String,
    x509: String,
}

impl KeySet {
    /// The verifier over every published key.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The current signer's key id.
    pub fn signer_kid(&self) -> &str {
        self.signer.kid()
    }
}

/// All signing keys of the server.
#[derive(Clone)]
pub struct Keyring {
    store: Store,
    clock: Arc<dyn Clock>,
    rotation_ms: i64,
    id_tokens: Arc<RwLock<Arc<KeySet>>>,
    session_cookies: Arc<RwLock<Arc<KeySet>>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("rotation_ms", &self.rotation_ms)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Loads the keys from the store, creating the first ones if there are none.
    pub async fn load(store: Store, clock: Arc<dyn Clock>, rotation_secs: i64) -> Result<Self> {
        let rotation_ms = rotation_secs.max(60) * 1000;
        let missing = || Error::internal("no signing key");
        let id = load_set(
            &store,
            clock.as_ref(),
            rotation_ms,
            KeyPurpose::IdToken,
            None,
        )
        .await?
        .ok_or_else(missing)?;
        let session = load_set(
            &store,
            clock.as_ref(),
            rotation_ms,
            KeyPurpose::SessionCookie,
            None,
        )
        .await?
        .ok_or_else(missing)?;
        Ok(Self {
            store,
            clock,
            rotation_ms,
            id_tokens: Arc::new(RwLock::new(Arc::new(id))),
            session_cookies: Arc::new(RwLock::new(Arc::new(session))),
        })
    }

    fn slot(&self, purpose: KeyPurpose) -> &RwLock<Arc<KeySet>> {
        match purpose {
            KeyPurpose::IdToken => &self.id_tokens,
            KeyPurpose::SessionCookie => &self.session_cookies,
        }
    }

    /// The current key set of a purpose.
    pub fn current(&self, purpose: KeyPurpose) -> Arc<KeySet> {
        match self.slot(purpose).read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Signs `claims` with the current signer of `purpose`.
    pub fn sign(&self, purpose: KeyPurpose, claims: &Claims) -> Result<String> {
        let set = self.current(purpose);
        encode_rs256(&set.signer, claims).map_err(|e| Error::internal(e.to_string()))
    }

    /// The JWK set document and its `max-age` in seconds.
    pub fn jwks(&self, purpose: KeyPurpose) -> (String, i64) {
        (self.current(purpose).jwks.clone(), self.max_age_secs())
    }

    /// The `{kid: PEM certificate}` document and its `max-age` in seconds.
    pub fn x509(&self, purpose: KeyPurpose) -> (String, i64) {
        (self.current(purpose).x509.clone(), self.max_age_secs())
    }

    /// Clients may cache published keys this long: well under the pre-publication window, so a
    /// new key is in every cache before it signs.
    fn max_age_secs(&self) -> i64 {
        (self.rotation_ms / 8 / 1000).clamp(60, 3600)
    }

    /// Re-reads the keys from the store (other replicas may have rotated), creating the next key
    /// when the current one retires soon. Unchanged key sets are kept as they are.
    pub async fn reload(&self) -> Result<()> {
        for purpose in [KeyPurpose::IdToken, KeyPurpose::SessionCookie] {
            let current = self.current(purpose);
            let set = load_set(
                &self.store,
                self.clock.as_ref(),
                self.rotation_ms,
                purpose,
                Some(&current),
            )
            .await?;
            if let Some(set) = set
                && let Ok(mut guard) = self.slot(purpose).write()
            {
                *guard = Arc::new(set);
            }
        }
        Ok(())
    }
}

/// Loads the published keys of `purpose`; `None` when they are exactly `current`'s.
async fn load_set(
    store: &Store,
    clock: &dyn Clock,
    rotation_ms: i64,
    purpose: KeyPurpose,
    current: Option<&KeySet>,
) -> Result<Option<KeySet>> {
    let now = clock.now_ms();
    let mut records = store.signing_keys(purpose.as_str(), now).await?;
    let newest_retire = records.iter().map(|r| r.retire_at).max();
    let due = match newest_retire {
        None => true,
        Some(retire) => retire - now < rotation_ms / 4,
    };
    if due {
        let key = SigningKey::generate().map_err(|e| Error::internal(e.to_string()))?;
        // A brand-new key starts signing now only if nothing else can.
        let start = newest_retire.map_or(now, |r| r.max(now));
        let record = SigningKeyRecord {
            kid: key.kid().to_owned(),
            purpose: purpose.as_str().to_owned(),
            private_der: key.pkcs8_der().to_vec(),
            created_at: start,
            retire_at: start + rotation_ms,
            expires_at: start + rotation_ms + purpose.max_token_ms() + 600_000,
        };
        store.insert_signing_key(&record).await?;
        tracing::info!(
            kid = record.kid,
            purpose = purpose.as_str(),
            "created signing key"
        );
        records = store.signing_keys(purpose.as_str(), now).await?;
    }
    if let Some(current) = current
        && current.kids.iter().eq(records.iter().map(|r| &r.kid))
        && current.signer.kid()
            == pick_signer(&records, now)
                .map(|r| r.kid.as_str())
                .unwrap_or_default()
    {
        return Ok(None);
    }
    build_set(&records, now).map(Some)
}

/// The signer: the oldest key that has started and not yet retired; else the newest one.
fn pick_signer(records: &[SigningKeyRecord], now: i64) -> Option<&SigningKeyRecord> {
    records
        .iter()
        .filter(|r| r.created_at <= now && r.retire_at > now)
        .min_by_key(|r| (r.created_at, r.kid.clone()))
        .or_else(|| records.iter().max_by_key(|r| r.created_at))
}

fn build_set(records: &[SigningKeyRecord], now: i64) -> Result<KeySet> {
    let mut keys = Vec::with_capacity(records.len());
    for r in records {
        let key = SigningKey::from_pkcs8(r.kid.clone(), &r.private_der)
            .map_err(|e| Error::internal(e.to_string()))?;
        keys.push((r, Arc::new(key)));
    }
    let signer_kid = pick_signer(records, now)
        .map(|r| r.kid.clone())
        .ok_or_else(|| Error::internal("no signing key"))?;
    let signer = keys
        .iter()
        .find(|(r, _)| r.kid == signer_kid)
        .map(|(_, k)| k.clone())
        .ok_or_else(|| Error::internal("no signing key"))?;
    let verifier = Verifier::new(keys.iter().map(|(_, k)| k.public().clone()));
    let jwks =
        json!({"keys": keys.iter().map(|(_, k)| k.public().jwk()).collect::<Vec<_>>()}).to_string();
    let mut x509 = Map::new();
    for (r, k) in &keys {
        let pem = k
            .certificate_pem(
                "securetoken.system.gserviceaccount.com",
                r.created_at / 1000 - 86_400,
                r.expires_at / 1000 + 86_400,
            )
            .map_err(|e| Error::internal(e.to_string()))?;
        x509.insert(r.kid.clone(), Value::String(pem));
    }
    Ok(KeySet {
        signer,
        kids: records.iter().map(|r| r.kid.clone()).collect(),
        verifier,
        jwks,
        x509: Value::Object(x509).to_string(),
    })
}
