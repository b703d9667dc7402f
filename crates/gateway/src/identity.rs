//! The gateway's own identity towards backends: Google-style ID tokens per audience, from a
//! service-account key (JWT-bearer grant at the key's `token_uri`) or from a metadata server
//! (`GCE_METADATA_HOST`), cached and refreshed a minute before they expire.
//!
//! Mints only the gateway's own tokens; a caller's credentials are never sent from here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use gatehouse_tokens::{Claims, SigningKey, encode_rs256};
use serde_json::{Value, json};

/// Where ID tokens come from.
pub enum TokenSource {
    /// A service-account JSON key.
    ServiceAccount {
        email: String,
        key: Box<SigningKey>,
        token_uri: String,
    },
    /// A metadata server (`host:port`).
    Metadata { host: String },
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ServiceAccount {
                email, token_uri, ..
            } => f
                .debug_struct("ServiceAccount")
                .field("email", email)
                .field("token_uri", token_uri)
                .finish_non_exhaustive(),
            Self::Metadata { host } => f.debug_struct("Metadata").field("host", host).finish(),
        }
    }
}

impl TokenSource {
    /// Loads a service-account key file.
    pub fn from_key_file(path: &std::path::Path) -> Result<Self, KeyFileError> {
        let at = || path.to_path_buf();
        let text = std::fs::read_to_string(path)
            .map_err(|source| KeyFileError::Read { path: at(), source })?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|source| KeyFileError::Parse { path: at(), source })?;
        let field = |n: &str| v.get(n).and_then(Value::as_str).map(str::to_owned);
        let missing = |field: &'static str| KeyFileError::Missing { path: at(), field };
        let email = field("client_email").ok_or_else(|| missing("client_email"))?;
        let token_uri = field("token_uri").ok_or_else(|| missing("token_uri"))?;
        let pem = field("private_key").ok_or_else(|| missing("private_key"))?;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|source| KeyFileError::NotPem { path: at(), source })?;
        let key = SigningKey::from_pkcs8(field("private_key_id").unwrap_or_default(), &der)
            .map_err(|source| KeyFileError::Key { path: at(), source })?;
        Ok(Self::ServiceAccount {
            email,
            key: Box::new(key),
            token_uri,
        })
    }
}

/// Why a service-account key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("reading {}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {}", path.display())]
    Parse {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} has no {field}", path.display())]
    Missing {
        path: std::path::PathBuf,
        field: &'static str,
    },
    #[error("the private_key in {} is not PEM", path.display())]
    NotPem {
        path: std::path::PathBuf,
        #[source]
        source: base64::DecodeError,
    },
    #[error("the private_key in {} is not a usable RSA key", path.display())]
    Key {
        path: std::path::PathBuf,
        #[source]
        source: gatehouse_tokens::KeyError,
    },
}

/// Why no ID token could be had for a backend.
#[derive(Debug, thiserror::Error)]
pub enum IdTokenError {
    #[error("building the JWT-bearer claims")]
    Claims,
    #[error("signing the JWT-bearer assertion")]
    Sign(#[source] gatehouse_tokens::KeyError),
    #[error("asking for an ID token")]
    Request(#[source] reqwest::Error),
    #[error("the {by} answered {status}")]
    Refused {
        by: &'static str,
        status: reqwest::StatusCode,
    },
    #[error("{0}")]
    Unusable(&'static str),
}

/// Cached ID tokens per audience.
#[derive(Debug)]
pub struct IdTokens {
    source: TokenSource,
    client: reqwest::Client,
    cache: Mutex<HashMap<String, (String, Instant)>>,
}

fn token_lifetime(token: &str) -> Duration {
    // Use the token's own `exp` when readable; else Google's 3599 s.
    let exp = token
        .split('.')
        .nth(1)
        .and_then(gatehouse_tokens::b64url_decode)
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|c| c.get("exp").and_then(Value::as_i64));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match exp {
        Some(e) if e > now => Duration::from_secs((e - now) as u64),
        _ => Duration::from_secs(3599),
    }
}

impl IdTokens {
    pub fn new(source: TokenSource, client: reqwest::Client) -> Self {
        Self {
            source,
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// An ID token for `audience`, from the cache while it has more than a minute left.
    pub async fn token(&self, audience: &str) -> Result<String, IdTokenError> {
        if let Ok(cache) = self.cache.lock()
            && let Some((token, until)) = cache.get(audience)
            && Instant::now() + Duration::from_secs(60) < *until
        {
            return Ok(token.clone());
        }
        let token = self.fetch(audience).await?;
        let until = Instant::now() + token_lifetime(&token);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(audience.to_owned(), (token.clone(), until));
        }
        Ok(token)
    }

    async fn fetch(&self, audience: &str) -> Result<String, IdTokenError> {
        match &self.source {
            TokenSource::ServiceAccount {
                email,
                key,
                token_uri,
            } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let Value::Object(claims) = json!({
                    "iss": email, "sub": email, "aud": token_uri, "iat": now, "exp": now + 3600,
                    "target_audience": audience,
                }) else {
                    return Err(IdTokenError::Claims);
                };
                let claims: Claims = claims;
                let assertion = encode_rs256(key, &claims).map_err(IdTokenError::Sign)?;
                let res = self
                    .client
                    .post(token_uri)
                    .form(&[
                        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                        ("assertion", assertion.as_str()),
                    ])
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .map_err(IdTokenError::Request)?;
                if !res.status().is_success() {
                    return Err(IdTokenError::Refused {
                        by: "token endpoint",
                        status: res.status(),
                    });
                }
                let body: Value = res.json().await.map_err(IdTokenError::Request)?;
                body.get("id_token")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or(IdTokenError::Unusable("no id_token in the answer"))
            }
            TokenSource::Metadata { host } => {
                let query: String = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("audience", audience)
                    .append_pair("format", "full")
                    .finish();
                let url = format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/identity?{query}"
                );
                let res = self
                    .client
                    .get(url)
                    .header("Metadata-Flavor", "Google")
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .map_err(IdTokenError::Request)?;
                if !res.status().is_success() {
                    return Err(IdTokenError::Refused {
                        by: "metadata server",
                        status: res.status(),
                    });
                }
                let token = res
                    .text()
                    .await
                    .map_err(IdTokenError::Request)?
                    .trim()
                    .to_owned();
                if token.is_empty() || token.chars().any(|c| c.is_control()) {
                    return Err(IdTokenError::Unusable(
                        "the metadata server returned an unusable token",
                    ));
                }
                Ok(token)
            }
        }
    }
}
