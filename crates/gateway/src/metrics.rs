//! Prometheus metrics: requests by operation and status, authentication failures by reason,
//! and upstream latency per operation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    auth_failures: BTreeMap<String, u64>,
    /// (count, sum of seconds) per operation.
    upstream: BTreeMap<String, (u64, f64)>,
}

/// The gateway's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        if let Ok(mut g) = self.inner.lock() {
            f(&mut g);
        }
    }

    pub(crate) fn request(&self, operation: &str, status: u16) {
        self.with(|i| {
            *i.requests
                .entry((operation.to_owned(), status))
                .or_default() += 1
        });
    }

    pub(crate) fn auth_failure(&self, reason: &str) {
        self.with(|i| *i.auth_failures.entry(reason.to_owned()).or_default() += 1);
    }

    pub(crate) fn upstream_latency(&self, operation: &str, d: Duration) {
        self.with(|i| {
            let e = i.upstream.entry(operation.to_owned()).or_default();
            e.0 += 1;
            e.1 += d.as_secs_f64();
        });
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(i) = self.inner.lock() else { return out };
        out.push_str("# HELP gatehouse_gateway_requests_total Requests by operation and status.\n");
        out.push_str("# TYPE gatehouse_gateway_requests_total counter\n");
        for ((op, status), n) in &i.requests {
            let _ = writeln!(
                out,
                "gatehouse_gateway_requests_total{{operation=\"{op}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP gatehouse_gateway_auth_failures_total Rejected credentials by reason.\n",
        );
        out.push_str("# TYPE gatehouse_gateway_auth_failures_total counter\n");
        for (reason, n) in &i.auth_failures {
            let _ = writeln!(
                out,
                "gatehouse_gateway_auth_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP gatehouse_gateway_upstream_seconds Time to the backend's response headers.\n",
        );
        out.push_str("# TYPE gatehouse_gateway_upstream_seconds summary\n");
        for (op, (count, sum)) in &i.upstream {
            let _ = writeln!(
                out,
                "gatehouse_gateway_upstream_seconds_count{{operation=\"{op}\"}} {count}"
            );
            let _ = writeln!(
                out,
                "gatehouse_gateway_upstream_seconds_sum{{operation=\"{op}\"}} {sum}"
            );
        }
        out
    }
}
