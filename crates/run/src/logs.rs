//! A service's log: what its instances print and what the runner does with them, one JSON
//! object per line in `<data_root>/logs/<service>.log` (rotated to `.log.1`), as Cloud Run
//! sends container output to Cloud Logging. A line the program prints as a JSON object is kept
//! as `jsonPayload`, with its `severity` and `message` lifted out (Cloud Run's structured
//! logging); any other line is a `textPayload`-style `message` with severity `DEFAULT`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Map, Value, json};

/// Rotate when the file passes this size.
const MAX_BYTES: u64 = 16 << 20;

/// Appends a service's log lines to its file.
#[derive(Debug)]
pub struct LogSink {
    path: PathBuf,
    file: Mutex<Option<(std::fs::File, u64)>>,
}

/// The file a service's log is written to.
pub fn log_path(data_root: &Path, service: &str) -> PathBuf {
    data_root.join("logs").join(format!("{service}.log"))
}

fn now_rfc3339() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    gatehouse_iam::rfc3339(ms)
}

impl LogSink {
    /// A sink for `service`; the directory is created when missing.
    pub fn open(data_root: &Path, service: &str) -> std::io::Result<Self> {
        let path = log_path(data_root, service);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self {
            path,
            file: Mutex::new(None),
        })
    }

    /// One line an instance printed.
    pub fn app_line(&self, revision: &str, instance: &str, stream: &str, line: &str) {
        let mut entry = Map::new();
        entry.insert("timestamp".into(), now_rfc3339().into());
        let parsed = serde_json::from_str::<Value>(line.trim())
            .ok()
            .and_then(|v| match v {
                Value::Object(o) => Some(o),
                _ => None,
            });
        match parsed {
            Some(mut payload) => {
                let severity = payload
                    .remove("severity")
                    .and_then(|v| v.as_str().map(str::to_ascii_uppercase))
                    .unwrap_or_else(|| "DEFAULT".into());
                entry.insert("severity".into(), severity.into());
                if let Some(m) = payload.remove("message") {
                    entry.insert(
                        "message".into(),
                        match m {
                            Value::String(s) => Value::String(s),
                            other => Value::String(other.to_string()),
                        },
                    );
                }
                // Cloud Logging's special fields become the entry's own.
                for (field, as_name) in [
                    ("logging.googleapis.com/trace", "trace"),
                    ("logging.googleapis.com/spanId", "spanId"),
                ] {
                    if let Some(v) = payload.remove(field) {
                        entry.insert(as_name.into(), v);
                    }
                }
                if !payload.is_empty() {
                    entry.insert("jsonPayload".into(), Value::Object(payload));
                }
            }
            None => {
                entry.insert("severity".into(), "DEFAULT".into());
                entry.insert("message".into(), line.into());
            }
        }
        entry.insert("revision".into(), revision.into());
        entry.insert("instance".into(), instance.into());
        entry.insert("stream".into(), stream.into());
        self.write(&Value::Object(entry));
    }

    /// Something the runner did (an instance started, exited, was scaled down…).
    pub fn event(&self, severity: &str, revision: &str, instance: Option<&str>, message: &str) {
        let mut entry = json!({
            "timestamp": now_rfc3339(),
            "severity": severity,
            "message": message,
            "revision": revision,
            "stream": "runner",
        });
        if let (Some(i), Some(o)) = (instance, entry.as_object_mut()) {
            o.insert("instance".into(), i.into());
        }
        self.write(&entry);
    }

    fn write(&self, entry: &Value) {
        let mut line = entry.to_string();
        line.push('\n');
        let Ok(mut guard) = self.file.lock() else {
            return;
        };
        if guard.as_ref().is_some_and(|(_, n)| *n >= MAX_BYTES) {
            *guard = None;
            let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
        }
        if guard.is_none() {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => {
                    let len = f.metadata().map_or(0, |m| m.len());
                    *guard = Some((f, len));
                }
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot write the service log");
                    return;
                }
            }
        }
        if let Some((f, n)) = guard.as_mut() {
            // One write per line: lines from concurrent writers never interleave.
            if f.write_all(line.as_bytes()).is_ok() {
                *n += line.len() as u64;
            }
        }
    }
}

/// The last `limit` entries of a service's log (the rotated file first), oldest first.
pub fn tail(data_root: &Path, service: &str, limit: usize) -> std::io::Result<Vec<String>> {
    let path = log_path(data_root, service);
    let mut lines: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut found = false;
    for p in [path.with_extension("log.1"), path] {
        match std::fs::read_to_string(&p) {
            Ok(text) => {
                found = true;
                for l in text.lines().filter(|l| !l.is_empty()) {
                    if lines.len() == limit {
                        lines.pop_front();
                    }
                    if limit > 0 {
                        lines.push_back(l.to_owned());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if !found {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no log for service {service} under {}", data_root.display()),
        ));
    }
    Ok(lines.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_and_plain_lines() {
        let dir = std::env::temp_dir().join(format!("gh-logs-{}", std::process::id()));
        let sink = LogSink::open(&dir, "svc").unwrap();
        sink.app_line("svc-00001-abc", "svc-00001-abc-0", "stdout", "hello there");
        sink.app_line(
            "svc-00001-abc",
            "svc-00001-abc-0",
            "stderr",
            r#"{"severity":"warning","message":"careful","user":7,"logging.googleapis.com/trace":"projects/p/traces/t"}"#,
        );
        sink.event("INFO", "svc-00001-abc", None, "revision serving");
        let lines = tail(&dir, "svc", 10).unwrap();
        assert_eq!(lines.len(), 3);
        let v: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(v[0]["severity"], "DEFAULT");
        assert_eq!(v[0]["message"], "hello there");
        assert_eq!(v[0]["instance"], "svc-00001-abc-0");
        assert_eq!(v[1]["severity"], "WARNING");
        assert_eq!(v[1]["message"], "careful");
        assert_eq!(v[1]["jsonPayload"]["user"], 7);
        assert_eq!(v[1]["trace"], "projects/p/traces/t");
        assert_eq!(v[2]["stream"], "runner");
        assert_eq!(tail(&dir, "svc", 1).unwrap().len(), 1);
        assert!(tail(&dir, "nope", 1).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
