//! Remote key sets, cached.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use gatehouse_tokens::KeySet;

/// Cache lifetime when the server says nothing.
const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// At most one unknown-`kid` refetch per key set per this long.
const REFETCH_INTERVAL: Duration = Duration::from_secs(1);

/// The published keys of one issuer (a JWK set or an x509 certificate map), cached for the
/// `Cache-Control: max-age` the server gives (5 minutes when it gives none), refreshed when
/// stale — the stale keys keep serving if the refresh fails — and refetched (at most once a
/// second) for a token whose `kid` is unknown.
pub struct RemoteKeys {
    uri: String,
    client: reqwest::Client,
    state: RwLock<Option<(Arc<KeySet>, Instant, Duration)>>,
    last_refetch: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl RemoteKeys {
    pub fn new(uri: String, client: reqwest::Client) -> Self {
        Self {
            uri,
            client,
            state: RwLock::new(None),
            last_refetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self) -> Option<(Arc<KeySet>, bool)> {
        let guard = self.state.read().ok()?;
        let (keys, at, ttl) = guard.as_ref()?;
        Some((keys.clone(), at.elapsed() < *ttl))
    }

    /// Fetches the key set now. On failure the previous keys stay.
    pub async fn fetch(&self) -> Result<Arc<KeySet>, String> {
        let _one = self.fetching.lock().await;
        self.fetch_locked().await
    }

    /// [`RemoteKeys::fetch`] with the fetch lock already held.
    async fn fetch_locked(&self) -> Result<Arc<KeySet>, String> {
        let res = self
            .client
            .get(&self.uri)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("JWKS answered {}", res.status()));
        }
        let ttl = res
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split(',')
                    .find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok())
            })
            .map_or(DEFAULT_TTL, |s| Duration::from_secs(s.clamp(1, 86_400)));
        let body = res.bytes().await.map_err(|e| e.to_string())?;
        let keys = Arc::new(KeySet::from_json(&body).map_err(|e| e.to_string())?);
        if let Ok(mut state) = self.state.write() {
            *state = Some((keys.clone(), Instant::now(), ttl));
        }
        Ok(keys)
    }

    /// The keys to verify with: cached ones while fresh; refreshed when stale (the stale keys keep
    /// serving if the refresh fails).
    pub async fn keys(&self) -> Option<Arc<KeySet>> {
        match self.cached() {
            Some((keys, true)) => Some(keys),
            Some((keys, false)) => match self.fetch().await {
                Ok(fresh) => Some(fresh),
                Err(e) => {
                    tracing::warn!(uri = %self.uri, error = %e, "JWKS refresh failed; keeping the cached keys");
                    // Do not hammer a dead server: treat the old keys as fresh for a while.
                    if let Ok(mut state) = self.state.write()
                        && let Some(s) = state.as_mut()
                    {
                        s.1 = Instant::now();
                        s.2 = Duration::from_secs(5);
                    }
                    Some(keys)
                }
            },
            None => match self.fetch().await {
                Ok(keys) => Some(keys),
                Err(e) => {
                    tracing::warn!(uri = %self.uri, error = %e, "JWKS fetch failed");
                    None
                }
            },
        }
    }

    /// For a token whose `kid` is unknown: refetch, at most once per second. Concurrent callers
    /// queue behind one fetch and then see its keys.
    pub async fn refetch_for_unknown_kid(&self, kid: &str) -> Option<Arc<KeySet>> {
        let _one = self.fetching.lock().await;
        if let Some((keys, _)) = self.cached()
            && keys.has_kid(kid)
        {
            return Some(keys);
        }
        {
            let Ok(mut last) = self.last_refetch.lock() else {
                return None;
            };
            if last.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
                return None;
            }
            *last = Some(Instant::now());
        }
        self.fetch_locked().await.ok()
    }
}
