//! Prometheus metrics, kept in a `prometheus-client` registry and served in its text format:
//! requests by operation and status, authentication failures by reason, and latency histograms
//! (seconds) per operation for whole requests and for backends.
//!
//! Owns the metric families and [`OperationMetrics`], the per-operation handles the request
//! path uses. Handles are resolved when a config version is loaded, so counting a request is a
//! few atomic operations: no lock, no map lookup, no allocation. Knows nothing of HTTP.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Upper bounds of the latency buckets, in seconds (and in nanoseconds, which is what an
/// observation is compared with).
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 60.0,
];
const BUCKET_NANOS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    10_000_000_000,
    60_000_000_000,
];

/// How many statuses are counted through a resolved handle ([`common_index`]); others go
/// through the family's map.
const COMMON_STATUSES: usize = 20;

/// The handle slot of a common status (a jump table, not a search).
fn common_index(status: u16) -> Option<usize> {
    let i = match status {
        200 => 0,
        201 => 1,
        202 => 2,
        204 => 3,
        301 => 4,
        302 => 5,
        304 => 6,
        400 => 7,
        401 => 8,
        403 => 9,
        404 => 10,
        405 => 11,
        408 => 12,
        413 => 13,
        429 => 14,
        499 => 15,
        500 => 16,
        502 => 17,
        503 => 18,
        504 => 19,
        _ => return None,
    };
    Some(i)
}

/// An operation ID as a label value (shared, so resolving a handle copies no string).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Operation(Arc<str>);

impl EncodeLabelValue for Operation {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, &self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    operation: Operation,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: Operation,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// A latency histogram with fixed buckets whose observations are atomic increments
/// (`prometheus-client`'s own histogram takes a lock per observation).
#[derive(Debug, Clone, Default)]
pub(crate) struct LatencyHistogram(Arc<HistogramCells>);

#[derive(Debug, Default)]
struct HistogramCells {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BUCKET_NANOS
            .iter()
            .position(|b| nanos <= *b)
            .unwrap_or(BUCKETS.len());
        if let Some(cell) = self.0.buckets.get(i) {
            cell.fetch_add(1, Ordering::Relaxed);
        }
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let mut buckets = [(f64::INFINITY, 0u64); BUCKETS.len() + 1];
        let mut count = 0;
        for (i, cell) in self.0.buckets.iter().enumerate() {
            let n = cell.load(Ordering::Relaxed);
            count += n;
            if let Some(b) = buckets.get_mut(i) {
                *b = (BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), n);
            }
        }
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    request_seconds: Family<OperationLabels, LatencyHistogram>,
    upstream_seconds: Family<OperationLabels, LatencyHistogram>,
    /// Requests answered before a route was found.
    unrouted: OperationMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        let request_seconds = Family::<OperationLabels, LatencyHistogram>::default();
        let upstream_seconds = Family::<OperationLabels, LatencyHistogram>::default();
        // Counters get `_total` appended by the encoder.
        registry.register(
            "gatehouse_gateway_requests",
            "Requests by operation and status",
            requests.clone(),
        );
        registry.register(
            "gatehouse_gateway_auth_failures",
            "Rejected credentials by reason",
            auth_failures.clone(),
        );
        registry.register(
            "gatehouse_gateway_request_seconds",
            "Time from a request's head to its answer (to the end of the relayed body on the HTTP/1.1 fast path), as in the access log",
            request_seconds.clone(),
        );
        registry.register(
            "gatehouse_gateway_upstream_seconds",
            "Time to the backend's response headers",
            upstream_seconds.clone(),
        );
        let mut me = Self {
            registry,
            requests,
            auth_failures,
            request_seconds,
            upstream_seconds,
            unrouted: OperationMetrics::placeholder(),
        };
        me.unrouted = me.operation("");
        me
    }
}

impl Metrics {
    /// The handles of one operation, resolved once per config version. Series appear in the
    /// exposition when first counted.
    pub(crate) fn operation(&self, operation: &str) -> OperationMetrics {
        OperationMetrics {
            operation: Operation(Arc::from(operation)),
            requests: self.requests.clone(),
            request_seconds_family: self.request_seconds.clone(),
            upstream_seconds_family: self.upstream_seconds.clone(),
            statuses: Default::default(),
            request_seconds: OnceLock::new(),
            upstream_seconds: OnceLock::new(),
        }
    }

    /// The handles for requests the gateway answers before routing them.
    pub(crate) fn unrouted(&self) -> &OperationMetrics {
        &self.unrouted
    }

    /// Counts a rejected credential (not on the path of an accepted request).
    pub(crate) fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The exposition, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        out
    }

    /// The content type of [`Metrics::render`]'s output.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";
}

/// One operation's metric handles, each resolved on first use and then shared with the
/// family, so a count survives config versions.
pub(crate) struct OperationMetrics {
    operation: Operation,
    requests: Family<RequestLabels, Counter>,
    request_seconds_family: Family<OperationLabels, LatencyHistogram>,
    upstream_seconds_family: Family<OperationLabels, LatencyHistogram>,
    statuses: [OnceLock<Counter>; COMMON_STATUSES],
    request_seconds: OnceLock<LatencyHistogram>,
    upstream_seconds: OnceLock<LatencyHistogram>,
}

impl fmt::Debug for OperationMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperationMetrics")
            .field("operation", &self.operation.0)
            .finish_non_exhaustive()
    }
}

impl OperationMetrics {
    /// Handles not connected to any registry (replaced before use).
    fn placeholder() -> Self {
        OperationMetrics {
            operation: Operation(Arc::from("")),
            requests: Family::default(),
            request_seconds_family: Family::default(),
            upstream_seconds_family: Family::default(),
            statuses: Default::default(),
            request_seconds: OnceLock::new(),
            upstream_seconds: OnceLock::new(),
        }
    }

    fn labels(&self) -> OperationLabels {
        OperationLabels {
            operation: self.operation.clone(),
        }
    }

    /// Counts and logs one finished request.
    pub(crate) fn record(&self, status: u16, started: Instant) {
        let elapsed = started.elapsed();
        match common_index(status).and_then(|i| self.statuses.get(i)) {
            Some(cell) => {
                cell.get_or_init(|| {
                    self.requests
                        .get_or_create(&self.status_labels(status))
                        .clone()
                })
                .inc();
            }
            None => {
                self.requests
                    .get_or_create(&self.status_labels(status))
                    .inc();
            }
        }
        self.request_seconds
            .get_or_init(|| {
                self.request_seconds_family
                    .get_or_create(&self.labels())
                    .clone()
            })
            .observe(elapsed);
        tracing::info!(target: "gatehouse::access", operation = &*self.operation.0, status, micros = elapsed.as_micros() as u64, "request");
    }

    fn status_labels(&self, status: u16) -> RequestLabels {
        RequestLabels {
            operation: self.operation.clone(),
            status,
        }
    }

    /// Records the time a backend took to answer with its response head.
    pub(crate) fn upstream(&self, d: Duration) {
        self.upstream_seconds
            .get_or_init(|| {
                self.upstream_seconds_family
                    .get_or_create(&self.labels())
                    .clone()
            })
            .observe(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
    }

    #[test]
    fn requests_are_counted_by_operation_and_status_across_config_versions() {
        let m = Metrics::default();
        let started = Instant::now();
        let v1 = m.operation("hello");
        v1.record(200, started);
        v1.record(200, started);
        v1.record(418, started);
        // A new config version resolves new handles onto the same series.
        let v2 = m.operation("hello");
        v2.record(200, started);
        m.unrouted().record(404, started);
        let text = m.render();
        let ok = r#"gatehouse_gateway_requests_total{operation="hello",status="200"} "#;
        assert_eq!(sample(&text, ok), Some("3"), "{text}");
        let odd = r#"gatehouse_gateway_requests_total{operation="hello",status="418"} "#;
        assert_eq!(sample(&text, odd), Some("1"), "{text}");
        let unrouted = r#"gatehouse_gateway_requests_total{operation="",status="404"} "#;
        assert_eq!(sample(&text, unrouted), Some("1"), "{text}");
        let count = r#"gatehouse_gateway_request_seconds_count{operation="hello"} "#;
        assert_eq!(sample(&text, count), Some("4"), "{text}");
    }

    #[test]
    fn latency_histograms_have_cumulative_buckets_sum_and_count() {
        let m = Metrics::default();
        let op = m.operation("slow");
        op.upstream(Duration::from_micros(200));
        op.upstream(Duration::from_millis(30));
        op.upstream(Duration::from_secs(100));
        let text = m.render();
        let bucket = |le: &str| {
            let p = format!(
                r#"gatehouse_gateway_upstream_seconds_bucket{{le="{le}",operation="slow"}} "#
            );
            let q = format!(
                r#"gatehouse_gateway_upstream_seconds_bucket{{operation="slow",le="{le}"}} "#
            );
            sample(&text, &p)
                .or_else(|| sample(&text, &q))
                .map(str::to_owned)
        };
        assert_eq!(bucket("0.0001").as_deref(), Some("0"), "{text}");
        assert_eq!(bucket("0.00025").as_deref(), Some("1"), "{text}");
        assert_eq!(bucket("0.05").as_deref(), Some("2"), "{text}");
        assert_eq!(bucket("60.0").as_deref(), Some("2"), "{text}");
        assert_eq!(bucket("+Inf").as_deref(), Some("3"), "{text}");
        let count = r#"gatehouse_gateway_upstream_seconds_count{operation="slow"} "#;
        assert_eq!(sample(&text, count), Some("3"), "{text}");
        let sum = r#"gatehouse_gateway_upstream_seconds_sum{operation="slow"} "#;
        let sum: f64 = sample(&text, sum).unwrap().parse().unwrap();
        assert!((sum - 100.0302).abs() < 1e-6, "{sum}");
        assert!(
            text.contains("# TYPE gatehouse_gateway_upstream_seconds histogram"),
            "{text}"
        );
    }

    #[test]
    fn auth_failures_are_counted_by_reason() {
        let m = Metrics::default();
        m.auth_failure("missing");
        m.auth_failure("missing");
        m.auth_failure("expired");
        let text = m.render();
        let missing = r#"gatehouse_gateway_auth_failures_total{reason="missing"} "#;
        assert_eq!(sample(&text, missing), Some("2"), "{text}");
        assert!(!text.contains("operation=\"never\""));
    }
}
