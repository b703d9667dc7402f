//! Prometheus metrics: requests by operation and status, authentication failures by reason,
//! and upstream latency per operation.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Default)]
struct Inner {
    /// Count per operation and status.
    requests: HashMap<String, HashMap<u16, u64>>,
    auth_failures: HashMap<&'static str, u64>,
    /// (count, sum of seconds) per operation.
    upstream: HashMap<String, (u64, f64)>,
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
        // Looked up by `&str` first: no allocation once an operation has been seen.
        self.with(|i| {
            let per_status = match i.requests.get_mut(operation) {
                Some(m) => m,
                None => i.requests.entry(operation.to_owned()).or_default(),
            };
            *per_status.entry(status).or_default() += 1;
        });
    }

    pub(crate) fn auth_failure(&self, reason: &'static str) {
        self.with(|i| *i.auth_failures.entry(reason).or_default() += 1);
    }

    pub(crate) fn upstream_latency(&self, operation: &str, d: Duration) {
        self.with(|i| {
            let e = match i.upstream.get_mut(operation) {
                Some(e) => e,
                None => i.upstream.entry(operation.to_owned()).or_default(),
            };
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
        // Sorted, so the exposition is stable.
        let requests: BTreeMap<(&str, u16), u64> = i
            .requests
            .iter()
            .flat_map(|(op, m)| m.iter().map(move |(s, n)| ((op.as_str(), *s), *n)))
            .collect();
        for ((op, status), n) in requests {
            let _ = writeln!(
                out,
                "gatehouse_gateway_requests_total{{operation=\"{op}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP gatehouse_gateway_auth_failures_total Rejected credentials by reason.\n",
        );
        out.push_str("# TYPE gatehouse_gateway_auth_failures_total counter\n");
        let failures: BTreeMap<&str, u64> = i.auth_failures.iter().map(|(r, n)| (*r, *n)).collect();
        for (reason, n) in failures {
            let _ = writeln!(
                out,
                "gatehouse_gateway_auth_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP gatehouse_gateway_upstream_seconds Time to the backend's response headers.\n",
        );
        out.push_str("# TYPE gatehouse_gateway_upstream_seconds summary\n");
        let upstream: BTreeMap<&str, (u64, f64)> =
            i.upstream.iter().map(|(o, v)| (o.as_str(), *v)).collect();
        for (op, (count, sum)) in upstream {
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
