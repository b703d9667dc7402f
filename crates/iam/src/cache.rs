//! A short-lived per-process cache: replicas sharing a database agree within its TTL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A short-lived per-process cache.
pub(crate) struct Ttl<V> {
    ttl: Duration,
    map: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Ttl<V> {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<V> {
        let map = self.map.lock().ok()?;
        map.get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    pub(crate) fn put(&self, key: &str, v: V) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() > 50_000 {
                map.clear();
            }
            map.insert(key.to_owned(), (Instant::now(), v));
        }
    }

    pub(crate) fn forget(&self, key: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_for_the_ttl_and_can_be_forgotten() {
        let cache = Ttl::new(Duration::from_secs(3600));
        assert_eq!(cache.get("a"), None);
        cache.put("a", 1);
        assert_eq!(cache.get("a"), Some(1));
        cache.put("a", 2);
        assert_eq!(cache.get("a"), Some(2));
        cache.forget("a");
        assert_eq!(cache.get("a"), None);
    }

    #[test]
    fn a_zero_ttl_caches_nothing() {
        let cache = Ttl::new(Duration::ZERO);
        cache.put("a", 1);
        assert_eq!(cache.get("a"), None);
    }
}
