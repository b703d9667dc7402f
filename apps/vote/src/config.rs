//! Configuration from the environment, as the sample reads it: database credentials from
//! `CLOUD_SQL_CREDENTIALS_SECRET` (the secret's JSON, which Cloud Run injects) or the four
//! variables, a unix socket under `DB_SOCKET_PATH` (default `/cloudsql`) or TCP through
//! `DB_HOST`; plus `DATABASE_URL` (`sqlite://…` or `postgres://…`) to override all of that for
//! local use, and the identity settings the page and the token check need.

use std::collections::HashMap;

use serde_json::Value;

/// Where the votes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// A SQLite file (created when missing).
    Sqlite(String),
    /// A `postgres://` URL.
    PostgresUrl(String),
    /// PostgreSQL over the Cloud SQL unix socket directory.
    PostgresSocket {
        dir: String,
        user: String,
        password: String,
        database: String,
    },
    /// PostgreSQL over TCP (`DB_HOST` = `host:port`).
    PostgresTcp {
        host: String,
        port: u16,
        user: String,
        password: String,
        database: String,
    },
}

/// The database credentials, from the secret or from the environment. The messages are the
/// sample's.
pub fn db_target(env: &HashMap<String, String>) -> Result<DbTarget, String> {
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    if let Some(url) = get("DATABASE_URL") {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            return Ok(DbTarget::Sqlite(path.to_owned()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DbTarget::PostgresUrl(url));
        }
        return Err("DATABASE_URL must start with sqlite:// or postgres://".into());
    }
    let creds: HashMap<String, String> = match get("CLOUD_SQL_CREDENTIALS_SECRET") {
        Some(secret) => {
            let v: Value = serde_json::from_str(&secret).map_err(|e| {
                format!(
                    "Unable to parse secret from Secret Manager. Make sure that the secret is JSON formatted: {e}"
                )
            })?;
            let Value::Object(map) = v else {
                return Err("Unable to parse secret from Secret Manager. Make sure that the secret is JSON formatted: not a JSON object".into());
            };
            map.into_iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k, s)),
                    Value::Number(n) => Some((k, n.to_string())),
                    _ => None,
                })
                .collect()
        }
        None => {
            crate::logging::info(
                "CLOUD_SQL_CREDENTIALS_SECRET env var not set. Defaulting to environment variables.",
            );
            let mut m = HashMap::new();
            for key in [
                "DB_USER",
                "DB_PASSWORD",
                "DB_NAME",
                "CLOUD_SQL_CONNECTION_NAME",
            ] {
                let v = get(key).ok_or_else(|| format!("{key} needs to be set."))?;
                m.insert(key.to_owned(), v);
            }
            m
        }
    };
    // The sample does not check the secret's keys; a missing one is an empty value here, and
    // the connection then fails with PostgreSQL's own message.
    let field = |k: &str| creds.get(k).cloned().unwrap_or_default();
    if let Some(host) = get("DB_HOST") {
        let (h, p) = host.rsplit_once(':').unwrap_or((host.as_str(), "5432"));
        let port = p
            .parse()
            .map_err(|_| format!("DB_HOST {host:?} must be host:port"))?;
        return Ok(DbTarget::PostgresTcp {
            host: h.to_owned(),
            port,
            user: field("DB_USER"),
            password: field("DB_PASSWORD"),
            database: field("DB_NAME"),
        });
    }
    let root = get("DB_SOCKET_PATH").unwrap_or_else(|| "/cloudsql".into());
    Ok(DbTarget::PostgresSocket {
        dir: format!(
            "{}/{}",
            root.trim_end_matches('/'),
            field("CLOUD_SQL_CONNECTION_NAME")
        ),
        user: field("DB_USER"),
        password: field("DB_PASSWORD"),
        database: field("DB_NAME"),
    })
}

/// The votes table's name (`TABLE`, default `pet_votes`); it is spliced into SQL, so only a
/// plain identifier is accepted.
pub fn table(env: &HashMap<String, String>) -> Result<String, String> {
    let t = env
        .get("TABLE")
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or_else(|| "pet_votes".into());
    let ok = t.len() <= 48
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(t)
    } else {
        Err(format!(
            "TABLE {t:?} must be a lower-case SQL identifier (letters, digits, _)"
        ))
    }
}

/// The project id: `GOOGLE_CLOUD_PROJECT`, else the metadata server's (as google-auth-library
/// finds it on Cloud Run), else none.
pub async fn project_id(env: &HashMap<String, String>, http: &reqwest::Client) -> Option<String> {
    if let Some(p) = env.get("GOOGLE_CLOUD_PROJECT").filter(|v| !v.is_empty()) {
        return Some(p.clone());
    }
    let host = env
        .get("GCE_METADATA_HOST")
        .cloned()
        .unwrap_or_else(|| "metadata.google.internal".into());
    let res = http
        .get(format!(
            "http://{host}/computeMetadata/v1/project/project-id"
        ))
        .header("Metadata-Flavor", "Google")
        .timeout(std::time::Duration::from_millis(500))
        .send()
        .await
        .ok()?;
    if !res.status().is_success() {
        return None;
    }
    res.text().await.ok().filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn credentials_as_the_sample_reads_them() {
        assert_eq!(
            db_target(&env(&[])).unwrap_err(),
            "DB_USER needs to be set."
        );
        assert_eq!(
            db_target(&env(&[("DB_USER", "u")])).unwrap_err(),
            "DB_PASSWORD needs to be set."
        );
        assert_eq!(
            db_target(&env(&[("DB_USER", "u"), ("DB_PASSWORD", "p")])).unwrap_err(),
            "DB_NAME needs to be set."
        );
        assert_eq!(
            db_target(&env(&[
                ("DB_USER", "u"),
                ("DB_PASSWORD", "p"),
                ("DB_NAME", "d")
            ]))
            .unwrap_err(),
            "CLOUD_SQL_CONNECTION_NAME needs to be set."
        );
        assert!(
            db_target(&env(&[("CLOUD_SQL_CREDENTIALS_SECRET", "{nope")]))
                .unwrap_err()
                .starts_with("Unable to parse secret from Secret Manager. Make sure that the secret is JSON formatted: ")
        );
        let secret = r#"{"CLOUD_SQL_CONNECTION_NAME":"p:r:i","DB_NAME":"votes","DB_USER":"u","DB_PASSWORD":"pw"}"#;
        assert_eq!(
            db_target(&env(&[
                ("CLOUD_SQL_CREDENTIALS_SECRET", secret),
                ("DB_SOCKET_PATH", "/tmp/cs/")
            ]))
            .unwrap(),
            DbTarget::PostgresSocket {
                dir: "/tmp/cs/p:r:i".into(),
                user: "u".into(),
                password: "pw".into(),
                database: "votes".into()
            }
        );
        assert!(matches!(
            db_target(&env(&[("CLOUD_SQL_CREDENTIALS_SECRET", secret)])).unwrap(),
            DbTarget::PostgresSocket { dir, .. } if dir == "/cloudsql/p:r:i"
        ));
        assert!(matches!(
            db_target(&env(&[("CLOUD_SQL_CREDENTIALS_SECRET", secret), ("DB_HOST", "127.0.0.1:5433")])).unwrap(),
            DbTarget::PostgresTcp { host, port: 5433, .. } if host == "127.0.0.1"
        ));
        assert_eq!(
            db_target(&env(&[("DATABASE_URL", "sqlite:///tmp/v.db")])).unwrap(),
            DbTarget::Sqlite("/tmp/v.db".into())
        );
        assert_eq!(table(&env(&[])).unwrap(), "pet_votes");
        assert!(table(&env(&[("TABLE", "x; drop table y")])).is_err());
    }
}
