//! Remote key sets, cached: fresh for their TTL, kept through an outage of the issuer for a
//! bounded time, refetched (single-flight, rate-limited) for an unknown `kid`.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gatehouse_tokens::KeySet;

/// How a [`RemoteKeys`] caches and refetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// The longest a fetched key set is used before it is fetched again, whatever the server's
    /// `Cache-Control: max-age` says (a shorter max-age wins). It is also the TTL when the
    /// server gives no max-age. A key the issuer stops publishing (rotated out or revoked)
    /// stops verifying within this time (or the max-age) while the issuer answers.
    pub max_ttl: Duration,
    /// How long past its TTL the last key set fetched keeps verifying while every fetch fails
    /// (the issuer is down or answers errors). After that, tokens are refused until a fetch
    /// succeeds.
    pub max_stale: Duration,
    /// The timeout of one fetch (connect, answer and body).
    pub fetch_timeout: Duration,
    /// At most one refetch for unknown `kid`s per this long.
    pub refetch_interval: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            max_ttl: Duration::from_secs(3600),
            max_stale: Duration::from_secs(3600),
            fetch_timeout: Duration::from_secs(5),
            refetch_interval: Duration::from_secs(1),
        }
    }
}

/// Retries after failed fetches wait this long at first, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// While fetches keep failing, at most one log line per this long.
const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    /// The last key set fetched, when, and for how long it is fresh.
    keys: Option<(Arc<KeySet>, Instant, Duration)>,
    /// When the last fetch started and ended, and whether it succeeded.
    last_fetch: Option<(Instant, Instant, bool)>,
    /// When the last unknown-`kid` refetch started.
    last_kid_fetch: Option<Instant>,
    /// While fetches fail: no new attempt before this.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Failures since the last success, and those not logged yet.
    failures: u64,
    unlogged: u64,
    last_log: Option<Instant>,
    /// A background refresh is queued or running.
    refreshing: bool,
    /// A hash of the last document fetched.
    body_hash: Option<u64>,
}

struct Inner {
    uri: String,
    client: reqwest::Client,
    options: CacheOptions,
    state: Mutex<State>,
    /// Held for the length of one fetch: fetches are one at a time.
    fetching: tokio::sync::Mutex<()>,
    /// Changes whenever a fetched document differs from the one before, or the keys go past
    /// their staleness bound ([`RemoteKeys::generation`]).
    generation: AtomicU64,
    /// When this was made: the origin of the two times below, in ms.
    origin: Instant,
    /// Until when the cached keys may be used without a look at the state (the TTL; with
    /// fetches failing, the staleness bound), and from when a background refresh is due.
    usable_until_ms: AtomicU64,
    refresh_at_ms: AtomicU64,
}

impl Inner {
    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }
}

/// The published keys of one issuer (a JWK set or an x509 certificate map).
///
/// - Fresh for the server's `Cache-Control: max-age`, at most [`CacheOptions::max_ttl`]; under
///   traffic the keys are refreshed in the background in the last quarter of that time, so
///   requests do not wait for fetches.
/// - When fetches fail, the last keys fetched keep verifying for up to
///   [`CacheOptions::max_stale`] past their TTL (stale-if-error); retries back off (1 s doubling
///   to 10 s) and run in the background, failures are logged at most once a minute. Only the
///   very first fetch, and the first after a success, make requests wait, one fetch shared by
///   all of them and never longer than [`CacheOptions::fetch_timeout`].
/// - A token whose `kid` is unknown triggers a refetch: one at a time, shared by every request
///   waiting for it, and at most one per [`CacheOptions::refetch_interval`] (a request that
///   finds the slot taken waits for the next one), so forged `kid`s cannot make it fetch more.
#[derive(Clone)]
pub struct RemoteKeys(Arc<Inner>);

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("uri", &self.0.uri)
            .field("options", &self.0.options)
            .finish_non_exhaustive()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    match state.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The `max-age` of a `Cache-Control` value.
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|d| {
        d.trim()
            .strip_prefix("max-age=")?
            .trim_matches('"')
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    })
}

impl RemoteKeys {
    /// Keys from `uri`, with the default [`CacheOptions`].
    pub fn new(uri: String, client: reqwest::Client) -> Self {
        Self::with_options(uri, client, CacheOptions::default())
    }

    pub fn with_options(uri: String, client: reqwest::Client, options: CacheOptions) -> Self {
        Self(Arc::new(Inner {
            uri,
            client,
            options,
            state: Mutex::new(State {
                backoff: FIRST_BACKOFF,
                ..State::default()
            }),
            fetching: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            origin: Instant::now(),
            usable_until_ms: AtomicU64::new(0),
            refresh_at_ms: AtomicU64::new(0),
        }))
    }

    /// For a cache of verified tokens, on its hot path: the key set's [`RemoteKeys::generation`]
    /// while its keys may be used without a fetch (within their TTL, or while fetches fail
    /// within the staleness bound); `None` when a verification must go through
    /// [`RemoteKeys::keys`] (which refetches). Starts a background refresh when one is due.
    pub fn usable_generation(&self) -> Option<u64> {
        let now = self.0.ms(Instant::now());
        if now >= self.0.usable_until_ms.load(Ordering::Acquire) {
            return None;
        }
        if now >= self.0.refresh_at_ms.load(Ordering::Relaxed) {
            self.refresh_in_background();
        }
        Some(self.0.generation.load(Ordering::Acquire))
    }

    /// Changes whenever the published keys change (a key added, rotated out or revoked) and
    /// when the cached keys go past their staleness bound. A cache of tokens verified with
    /// these keys is valid only while the generation is the one it verified under.
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    /// Fetches the key set now (one fetch at a time). On failure the previous keys stay.
    pub async fn fetch(&self) -> Result<Arc<KeySet>, String> {
        let _one = self.0.fetching.lock().await;
        self.0.fetch_locked().await
    }

    /// The keys to verify with; `None` when there are none to use (never fetched, or stale
    /// past [`CacheOptions::max_stale`] while the issuer is failing).
    pub async fn keys(&self) -> Option<Arc<KeySet>> {
        let now = Instant::now();
        let (cached, failing) = {
            let st = lock(&self.0.state);
            (st.keys.clone(), st.retry_at.is_some())
        };
        match cached {
            Some((keys, at, ttl)) if now.duration_since(at) < ttl => {
                if now.duration_since(at) >= ttl - ttl / 4 {
                    self.refresh_in_background();
                }
                Some(keys)
            }
            Some((keys, at, ttl)) => {
                if failing {
                    self.refresh_in_background();
                    return self.0.within_stale(keys, at, ttl);
                }
                match self.0.shared_fetch(now).await {
                    Ok(fresh) => Some(fresh),
                    Err(_) => self.0.within_stale(keys, at, ttl),
                }
            }
            None if failing => {
                self.refresh_in_background();
                None
            }
            None => self.0.shared_fetch(now).await.ok(),
        }
    }

    /// For a token whose `kid` is unknown: the keys after a refetch that started after this
    /// call (or the cached ones if they have the `kid` by then); `None` when that fetch failed. Refetches are rate-limited as described on
    /// [`RemoteKeys`]; this waits at most one interval plus one fetch.
    pub async fn refetch_for_unknown_kid(&self, kid: &str) -> Option<Arc<KeySet>> {
        let arrived = Instant::now();
        loop {
            // Also while fetches are failing: a key the issuer made while it could not be
            // reached (a restarted issuer signs with a new key at once) verifies as soon as the
            // issuer answers again, not at the next background retry.
            if let Some((keys, _, _)) = &lock(&self.0.state).keys
                && keys.has_kid(kid)
            {
                return Some(keys.clone());
            }
            let _one = self.0.fetching.lock().await;
            let wait = {
                let mut st = lock(&self.0.state);
                if let Some((keys, _, _)) = &st.keys
                    && keys.has_kid(kid)
                {
                    return Some(keys.clone());
                }
                if let Some((started, _, ok)) = st.last_fetch
                    && started >= arrived
                {
                    // A fetch made after this token arrived: its keys are the answer.
                    return if ok {
                        st.keys.as_ref().map(|k| k.0.clone())
                    } else {
                        None
                    };
                }
                let interval = self.0.options.refetch_interval;
                match st.last_kid_fetch.map(|t| t.elapsed()) {
                    Some(since) if since < interval => interval - since,
                    _ => {
                        st.last_kid_fetch = Some(Instant::now());
                        Duration::ZERO
                    }
                }
            };
            if wait.is_zero() {
                return self.0.fetch_locked().await.ok();
            }
            drop(_one);
            tokio::time::sleep(wait).await;
        }
    }

    /// Starts a background refresh unless one is queued or running, or failed fetches are
    /// backing off.
    fn refresh_in_background(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut st = lock(&self.0.state);
            if st.refreshing || st.retry_at.is_some_and(|t| Instant::now() < t) {
                return;
            }
            st.refreshing = true;
        }
        let inner = self.0.clone();
        runtime.spawn(async move {
            let queued = Instant::now();
            let _one = inner.fetching.lock().await;
            let fetched_meanwhile = lock(&inner.state)
                .last_fetch
                .is_some_and(|(started, _, _)| started >= queued);
            if !fetched_meanwhile {
                let _ = inner.fetch_locked().await;
            }
            lock(&inner.state).refreshing = false;
        });
    }
}

impl Inner {
    /// A fetch for a caller that arrived at `arrived`, shared: if a fetch ended while the caller
    /// waited for the lock, its result is the caller's too.
    async fn shared_fetch(&self, arrived: Instant) -> Result<Arc<KeySet>, String> {
        let _one = self.fetching.lock().await;
        {
            let st = lock(&self.state);
            if let Some((keys, at, ttl)) = &st.keys
                && at.elapsed() < *ttl
            {
                return Ok(keys.clone());
            }
            if let Some((_, finished, false)) = st.last_fetch
                && finished >= arrived
            {
                return Err("the fetch shared with other requests failed".into());
            }
        }
        self.fetch_locked().await
    }

    /// Stale keys while within the staleness bound.
    fn within_stale(&self, keys: Arc<KeySet>, at: Instant, ttl: Duration) -> Option<Arc<KeySet>> {
        if at.elapsed() < ttl + self.options.max_stale {
            return Some(keys);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut st = lock(&self.state);
        if st.last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            st.last_log = Some(Instant::now());
            tracing::error!(
                uri = %self.uri,
                max_stale_secs = self.options.max_stale.as_secs(),
                "the cached keys are past their staleness bound and the issuer still fails: \
                 tokens are refused until a fetch succeeds"
            );
        }
        None
    }

    /// Fetches the key set; the caller holds `fetching`.
    async fn fetch_locked(&self) -> Result<Arc<KeySet>, String> {
        let started = Instant::now();
        let result = self.get().await;
        let mut st = lock(&self.state);
        st.last_fetch = Some((started, Instant::now(), result.is_ok()));
        match result {
            Ok((keys, ttl, hash)) => {
                if st.body_hash.replace(hash) != Some(hash) {
                    self.generation.fetch_add(1, Ordering::AcqRel);
                }
                let keys = Arc::new(keys);
                st.keys = Some((keys.clone(), started, ttl));
                self.refresh_at_ms
                    .store(self.ms(started + ttl - ttl / 4), Ordering::Relaxed);
                self.usable_until_ms
                    .store(self.ms(started + ttl), Ordering::Release);
                if st.retry_at.take().is_some() {
                    tracing::info!(
                        uri = %self.uri,
                        failures = st.failures,
                        "JWKS fetch succeeded again"
                    );
                }
                st.backoff = FIRST_BACKOFF;
                st.failures = 0;
                st.unlogged = 0;
                st.last_log = None;
                Ok(keys)
            }
            Err(e) => {
                if let Some((_, at, ttl)) = &st.keys {
                    let bound = *at + *ttl + self.options.max_stale;
                    self.usable_until_ms
                        .store(self.ms(bound), Ordering::Release);
                }
                st.retry_at = Some(Instant::now() + st.backoff);
                st.backoff = (st.backoff * 2).min(MAX_BACKOFF);
                st.failures += 1;
                st.unlogged += 1;
                if st.last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    let cached_age = st.keys.as_ref().map(|k| k.1.elapsed().as_secs());
                    tracing::warn!(
                        uri = %self.uri,
                        error = %e,
                        failures = st.unlogged,
                        cached_keys_age_secs = cached_age,
                        max_stale_secs = self.options.max_stale.as_secs(),
                        "JWKS fetch failed; the cached keys keep verifying up to the staleness bound"
                    );
                    st.unlogged = 0;
                    st.last_log = Some(Instant::now());
                }
                Err(e)
            }
        }
    }

    async fn get(&self) -> Result<(KeySet, Duration, u64), String> {
        let res = self
            .client
            .get(&self.uri)
            .timeout(self.options.fetch_timeout)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !res.status().is_success() {
            return Err(format!("JWKS answered {}", res.status()));
        }
        let ttl = res
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .map_or(self.options.max_ttl, |a| a.min(self.options.max_ttl))
            .max(Duration::from_secs(1));
        let body = res.bytes().await.map_err(|e| e.without_url().to_string())?;
        let keys = KeySet::from_json(&body).map_err(|e| e.to_string())?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut hasher);
        Ok((keys, ttl, hasher.finish()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=60, must-revalidate"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(max_age("no-cache"), None);
        assert_eq!(max_age("max-age=x"), None);
    }
}
