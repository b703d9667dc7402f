//! Signing keys held by the server: created and stored in the database, rotated on a schedule,
//! published (as a JWK set and an x509 certificate map) until every token they signed has
//! expired.
//!
//! Keys are grouped by [`Purpose`]. Per purpose the signer is the oldest key that has not
//! retired. The next key is created a quarter of a rotation period before the current one
//! retires, so it is published (and in every verifier's cache) before it signs anything. All
//! replicas read the same table and pick the same signer.
//!
//! Keys are stored sealed under the master key (see [`envelope`] and [`master`]), as Secret
//! Manager payloads are: a keyring cannot be loaded without the master key, and the database
//! alone (a copy, a backup, a dump) holds no usable private key. Rows stored in plaintext by
//! earlier versions are sealed when a keyring first loads with the master key, before anything
//! is signed.
//!
//! Must not: write SQL (that is `gatehouse-store`), speak HTTP (publication endpoints are the
//! HTTP crates'), or know what the keys sign (claims are the callers': identity, IAM).

#![forbid(unsafe_code)]

mod clock;
pub mod envelope;
pub mod master;
mod sealed;

pub use clock::{Clock, ManualClock, SystemClock};
pub use sealed::{rewrap_signing_keys, seal_plaintext_keys};

use std::sync::{Arc, RwLock};

use gatehouse_store::{SigningKeyRecord, Store};
use gatehouse_tokens::{Claims, SigningKey, Verifier, encode_rs256};
use serde_json::{Map, Value, json};

use envelope::Key;

/// Errors of the keyring.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] gatehouse_store::Error),
    #[error("signing key: {0}")]
    Key(String),
    /// The master key given is not the one the database's keys are wrapped with.
    #[error(
        "the master key does not match the one the stored keys are wrapped with \
         (stored key fingerprint {stored}, given {given}); every process on one database needs \
         the same master key"
    )]
    WrongMasterKey { stored: String, given: String },
}

/// The shortest rotation period accepted (shorter ones are raised to it): the published keys'
/// `max-age` is an eighth of the period, at least a second.
pub const MIN_ROTATION_SECS: i64 = 8;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a group of keys signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Purpose {
    /// The name stored with the keys.
    pub name: &'static str,
    /// How long a token signed for this purpose can live, in ms.
    pub max_token_ms: i64,
    /// The subject of the published certificates.
    pub cert_subject: &'static str,
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

    /// The current signer.
    pub fn signer(&self) -> &SigningKey {
        &self.signer
    }
}

/// The signing keys of a server, for a fixed list of purposes.
#[derive(Clone)]
pub struct Keyring {
    store: Store,
    clock: Arc<dyn Clock>,
    master: Arc<Key>,
    rotation_ms: i64,
    sets: Arc<Vec<(Purpose, RwLock<Arc<KeySet>>)>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("rotation_ms", &self.rotation_ms)
            .field("master_key", &self.master.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Loads the keys of every purpose from the store, creating the first ones if there are none.
    ///
    /// `master` must be the database's master key ([`Error::WrongMasterKey`] otherwise; a new
    /// database records it). Keys still stored in plaintext, of any purpose, are sealed under it
    /// first, in one transaction.
    pub async fn load(
        store: Store,
        clock: Arc<dyn Clock>,
        master: Arc<Key>,
        rotation_secs: i64,
        purposes: &[Purpose],
    ) -> Result<Self> {
        master::bind(&store, &master).await?;
        seal_plaintext_keys(&store, &master).await?;
        let rotation_ms = rotation_secs.max(MIN_ROTATION_SECS) * 1000;
        let mut sets = Vec::with_capacity(purposes.len());
        for p in purposes {
            let set = load_set(&store, clock.as_ref(), &master, rotation_ms, *p, None)
                .await?
                .ok_or_else(|| Error::Key("no signing key".into()))?;
            sets.push((*p, RwLock::new(Arc::new(set))));
        }
        Ok(Self {
            store,
            clock,
            master,
            rotation_ms,
            sets: Arc::new(sets),
        })
    }

    fn slot(&self, purpose: &Purpose) -> Option<&RwLock<Arc<KeySet>>> {
        self.sets
            .iter()
            .find(|(p, _)| p.name == purpose.name)
            .map(|(_, s)| s)
    }

    /// The current key set of a purpose the keyring was loaded with.
    pub fn current(&self, purpose: &Purpose) -> Result<Arc<KeySet>> {
        let slot = self
            .slot(purpose)
            .ok_or_else(|| Error::Key(format!("no keys for {}", purpose.name)))?;
        Ok(match slot.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        })
    }

    /// Signs `claims` (RS256) with the current signer of `purpose`.
    pub fn sign(&self, purpose: &Purpose, claims: &Claims) -> Result<String> {
        let set = self.current(purpose)?;
        encode_rs256(&set.signer, claims).map_err(|e| Error::Key(e.to_string()))
    }

    /// The JWK set document and its `max-age` in seconds.
    pub fn jwks(&self, purpose: &Purpose) -> Result<(String, i64)> {
        Ok((self.current(purpose)?.jwks.clone(), self.max_age_secs()))
    }

    /// The `{kid: PEM certificate}` document and its `max-age` in seconds.
    pub fn x509(&self, purpose: &Purpose) -> Result<(String, i64)> {
        Ok((self.current(purpose)?.x509.clone(), self.max_age_secs()))
    }

    /// Clients may cache published keys this long: half the pre-publication window (a quarter
    /// of the rotation period), so a new key is in every cache before it signs. It is also how
    /// long a revoked key keeps verifying at a verifier after it leaves the published set.
    pub fn max_age_secs(&self) -> i64 {
        (self.rotation_ms / 8 / 1000).clamp(1, 3600)
    }

    /// How often the keys should be re-read from the store ([`Keyring::reload`]): an eighth of
    /// the rotation period, between 1 and 5 s, so the next key is created (and published)
    /// within the pre-publication window and a key revoked by another process
    /// (`gatehouse identity signing-keys revoke`) leaves the published set within 5 s.
    pub fn reload_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis((self.rotation_ms / 8).clamp(1000, 5000) as u64)
    }

    /// Re-reads the keys from the store (other replicas may have rotated), creating the next key
    /// when the current one retires soon. Unchanged key sets are kept as they are.
    pub async fn reload(&self) -> Result<()> {
        for (purpose, slot) in self.sets.iter() {
            let current = match slot.read() {
                Ok(guard) => guard.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            let set = load_set(
                &self.store,
                self.clock.as_ref(),
                &self.master,
                self.rotation_ms,
                *purpose,
                Some(&current),
            )
            .await?;
            if let Some(set) = set
                && let Ok(mut guard) = slot.write()
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
    master: &Key,
    rotation_ms: i64,
    purpose: Purpose,
    current: Option<&KeySet>,
) -> Result<Option<KeySet>> {
    let now = clock.now_ms();
    let mut records = store.signing_keys(purpose.name, now).await?;
    let newest_retire = records.iter().map(|r| r.retire_at).max();
    let due = match newest_retire {
        None => true,
        Some(retire) => retire - now < rotation_ms / 4,
    };
    if due {
        let key = SigningKey::generate().map_err(|e| Error::Key(e.to_string()))?;
        // A brand-new key starts signing now only if nothing else can.
        let start = newest_retire.map_or(now, |r| r.max(now));
        let (wrapped_key, sealed_pkcs8) =
            sealed::seal(master, key.kid(), purpose.name, key.pkcs8_der())?;
        let record = SigningKeyRecord {
            kid: key.kid().to_owned(),
            purpose: purpose.name.to_owned(),
            wrapped_key,
            sealed_pkcs8,
            created_at: start,
            retire_at: start + rotation_ms,
            expires_at: start + rotation_ms + purpose.max_token_ms + 600_000,
        };
        match store
            .insert_signing_key(&record, &master.fingerprint())
            .await
        {
            Err(gatehouse_store::Error::Conflict("master key")) => {
                return Err(Error::Key(
                    "the master key was rotated while this process ran; restart it with the \
                     new master key"
                        .into(),
                ));
            }
            other => other?,
        }
        tracing::info!(
            kid = record.kid,
            purpose = purpose.name,
            "created signing key"
        );
        records = store.signing_keys(purpose.name, now).await?;
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
    build_set(master, &records, now, purpose).map(Some)
}

/// The signer: the oldest key that has started and not yet retired; else the newest one.
fn pick_signer(records: &[SigningKeyRecord], now: i64) -> Option<&SigningKeyRecord> {
    records
        .iter()
        .filter(|r| r.created_at <= now && r.retire_at > now)
        .min_by_key(|r| (r.created_at, r.kid.clone()))
        .or_else(|| records.iter().max_by_key(|r| r.created_at))
}

fn build_set(
    master: &Key,
    records: &[SigningKeyRecord],
    now: i64,
    purpose: Purpose,
) -> Result<KeySet> {
    let mut keys = Vec::with_capacity(records.len());
    for r in records {
        keys.push((r, Arc::new(sealed::open(master, r)?)));
    }
    let signer_kid = pick_signer(records, now)
        .map(|r| r.kid.clone())
        .ok_or_else(|| Error::Key("no signing key".into()))?;
    let signer = keys
        .iter()
        .find(|(r, _)| r.kid == signer_kid)
        .map(|(_, k)| k.clone())
        .ok_or_else(|| Error::Key("no signing key".into()))?;
    let verifier = Verifier::new(keys.iter().map(|(_, k)| k.public().clone()));
    let jwks =
        json!({"keys": keys.iter().map(|(_, k)| k.public().jwk()).collect::<Vec<_>>()}).to_string();
    let mut x509 = Map::new();
    for (r, k) in &keys {
        let pem = k
            .certificate_pem(
                purpose.cert_subject,
                r.created_at / 1000 - 86_400,
                r.expires_at / 1000 + 86_400,
            )
            .map_err(|e| Error::Key(e.to_string()))?;
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
