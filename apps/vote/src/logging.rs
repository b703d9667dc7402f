//! Log entries as Cloud Logging reads them from a Cloud Run container: one JSON object per
//! line on stdout with `severity`, `message`, `timestamp` and, for request-scoped entries,
//! `logging.googleapis.com/trace` (`projects/<project>/traces/<trace id>`, from
//! `X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1`), as the sample's logger writes them.

use std::io::Write as _;

use serde_json::{Map, Value, json};

fn timestamp() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    crate::page::iso8601(i64::try_from(d.as_millis()).unwrap_or(0))
}

/// Writes one entry.
pub fn entry(severity: &str, message: &str, trace: Option<&str>, extra: Option<Value>) {
    let mut o = Map::new();
    o.insert("severity".into(), severity.into());
    o.insert("message".into(), message.into());
    o.insert("timestamp".into(), timestamp().into());
    if let Some(t) = trace {
        o.insert("logging.googleapis.com/trace".into(), t.into());
    }
    if let Some(Value::Object(more)) = extra {
        o.extend(more);
    }
    let mut line = Value::Object(o).to_string();
    line.push('\n');
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

pub fn info(message: &str) {
    entry("INFO", message, None, None);
}

pub fn error(message: &str) {
    entry("ERROR", message, None, None);
}

/// The trace field for a request, when it carries `X-Cloud-Trace-Context`.
pub fn trace_field(header: Option<&str>, project: Option<&str>) -> Option<String> {
    let trace = header?.split('/').next()?.trim();
    if trace.is_empty() {
        return None;
    }
    Some(format!(
        "projects/{}/traces/{trace}",
        project.unwrap_or("undefined")
    ))
}

/// A vote, as the `vote_inserted` entry carries it.
pub fn vote(candidate: &str, time_ms: i64, uid: &str) -> Value {
    json!({"vote": {"candidate": candidate, "time_cast": crate::page::iso8601(time_ms), "uid": uid}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_from_the_cloud_trace_header() {
        assert_eq!(
            trace_field(Some("abc/123;o=1"), Some("proj")).as_deref(),
            Some("projects/proj/traces/abc")
        );
        assert_eq!(trace_field(None, Some("proj")), None);
        assert_eq!(trace_field(Some(""), Some("proj")), None);
    }
}
