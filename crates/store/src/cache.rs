//! A short-lived read cache of accounts by id.
//!
//! Every write through this process invalidates the entry it touches, so one process always
//! reads its own writes. Writes by other replicas become visible within the TTL, which bounds
//! how stale a cached account can be (default 1 s; 0 turns the cache off).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::UserRecord;

type Key = (String, String, String);

const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
pub(crate) struct UserCache {
    ttl_ms: AtomicU64,
    entries: Mutex<HashMap<Key, (Instant, UserRecord)>>,
}

impl UserCache {
    pub(crate) fn new(ttl_ms: u64) -> Self {
        Self {
            ttl_ms: AtomicU64::new(ttl_ms),
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn set_ttl(&self, ttl_ms: u64) {
        self.ttl_ms.store(ttl_ms, Ordering::Relaxed);
        self.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Instant, UserRecord)>> {
        match self.entries.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub(crate) fn get(&self, project: &str, tenant: &str, id: &str) -> Option<UserRecord> {
        let ttl = self.ttl_ms.load(Ordering::Relaxed);
        if ttl == 0 {
            return None;
        }
        let key = (project.to_owned(), tenant.to_owned(), id.to_owned());
        let entries = self.lock();
        let (at, user) = entries.get(&key)?;
        (at.elapsed().as_millis() < u128::from(ttl)).then(|| user.clone())
    }

    pub(crate) fn put(&self, user: &UserRecord) {
        if self.ttl_ms.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        let key = (
            user.project_id.clone(),
            user.tenant_id.clone(),
            user.local_id.clone(),
        );
        entries.insert(key, (Instant::now(), user.clone()));
    }

    pub(crate) fn forget(&self, project: &str, tenant: &str, id: &str) {
        self.lock()
            .remove(&(project.to_owned(), tenant.to_owned(), id.to_owned()));
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}
