//! Abuse limits: fixed-window counters per client IP and per account.
//!
//! In-process by design: each replica limits what it sees. Exceeding a limit is
//! `TOO_MANY_ATTEMPTS_TRY_LATER`, as Firebase says it.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::RateLimits;
use crate::{Error, Result};

const MINUTE: Duration = Duration::from_secs(60);

/// A set of fixed-window counters.
#[derive(Debug)]
struct Window<K> {
    limit: u32,
    period: Duration,
    counts: Mutex<HashMap<K, (u32, Instant)>>,
}

impl<K: Hash + Eq + Clone> Window<K> {
    fn new(limit: u32, period: Duration) -> Self {
        Self {
            limit,
            period,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one event; `false` when the key is over its limit.
    fn hit(&self, key: &K) -> bool {
        if self.limit == 0 {
            return true;
        }
        let now = Instant::now();
        let mut counts = match self.counts.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let entry = counts.entry(key.clone()).or_insert((0, now));
        if now.duration_since(entry.1) >= self.period {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
        entry.0 <= self.limit
    }

    /// Takes back one event counted by [`Window::hit`].
    fn undo(&self, key: &K) {
        let mut counts = match self.counts.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(entry) = counts.get_mut(key) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }

    fn shrink(&self) {
        let mut counts = match self.counts.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let period = self.period;
        counts.retain(|_, (_, start)| start.elapsed() < period);
    }
}

/// All abuse limits of the identity server.
#[derive(Debug)]
pub struct Limits {
    sign_up: Window<IpAddr>,
    sign_in: Window<IpAddr>,
    failed_password: Window<String>,
    refresh: Window<IpAddr>,
    oob_ip: Window<IpAddr>,
    oob_email: Window<String>,
    last_key_reload: AtomicU64,
    started: Instant,
}

fn too_many() -> Error {
    Error::code("TOO_MANY_ATTEMPTS_TRY_LATER")
}

impl Limits {
    /// Limits with the given quotas.
    pub fn new(q: RateLimits) -> Self {
        Self {
            sign_up: Window::new(q.sign_up_per_ip_per_min, MINUTE),
            sign_in: Window::new(q.sign_in_per_ip_per_min, MINUTE),
            failed_password: Window::new(q.failed_sign_in_per_account, 10 * MINUTE),
            refresh: Window::new(q.refresh_per_ip_per_min, MINUTE),
            oob_ip: Window::new(q.oob_per_ip_per_min, MINUTE),
            oob_email: Window::new(q.oob_per_email_per_hour, 60 * MINUTE),
            last_key_reload: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    pub(crate) fn sign_up(&self, ip: IpAddr) -> Result<()> {
        if self.sign_up.hit(&ip) {
            Ok(())
        } else {
            Err(too_many())
        }
    }

    pub(crate) fn sign_in(&self, ip: IpAddr) -> Result<()> {
        if self.sign_in.hit(&ip) {
            Ok(())
        } else {
            Err(too_many())
        }
    }

    /// Counts a password attempt on an account as a failure until it succeeds
    /// ([`Limits::password_matched`]); refuses it once the account has had too many recent
    /// failures. Counted before the password is checked, so a flood of concurrent guesses
    /// cannot all pass the check while none has failed yet.
    pub(crate) fn password_attempt(&self, account: &str) -> Result<()> {
        if self.failed_password.hit(&account.to_owned()) {
            Ok(())
        } else {
            Err(too_many())
        }
    }

    /// The attempt counted by [`Limits::password_attempt`] had the right password.
    pub(crate) fn password_matched(&self, account: &str) {
        self.failed_password.undo(&account.to_owned());
    }

    pub(crate) fn refresh(&self, ip: IpAddr) -> Result<()> {
        if self.refresh.hit(&ip) {
            Ok(())
        } else {
            Err(too_many())
        }
    }

    pub(crate) fn send_oob(&self, ip: IpAddr, email: &str) -> Result<()> {
        if self.oob_ip.hit(&ip) && self.oob_email.hit(&email.to_owned()) {
            Ok(())
        } else {
            Err(too_many())
        }
    }

    /// At most one signing-key reload per second triggered by unknown `kid`s.
    pub(crate) fn allow_key_reload(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_key_reload.load(Ordering::Relaxed);
        now.saturating_sub(last) >= 1000
            && self
                .last_key_reload
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Forgets expired windows (bounds memory).
    pub(crate) fn shrink(&self) {
        self.sign_up.shrink();
        self.sign_in.shrink();
        self.failed_password.shrink();
        self.refresh.shrink();
        self.oob_ip.shrink();
        self.oob_email.shrink();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_and_lock() {
        let w = Window::new(2, MINUTE);
        assert!(w.hit(&1));
        assert!(w.hit(&1));
        assert!(!w.hit(&1));
        assert!(w.hit(&2));
        // An undone event frees its place.
        w.undo(&2);
        assert!(w.hit(&2));
        assert!(w.hit(&2));
        assert!(!w.hit(&2));
        let off = Window::new(0, MINUTE);
        for _ in 0..100 {
            assert!(off.hit(&1));
        }
    }
}
