//! A metadata server for one service account, as GCE and Cloud Run serve it at
//! `metadata.google.internal`, so google-auth (Python, Node, Go) finds credentials through
//! `GCE_METADATA_HOST` unchanged.
//!
//! Owns: the `computeMetadata/v1` paths, their wire rules and the per-instance path token.
//! Must not: depend on the IAM HTTP API (`gatehouse-iam-http`) or serve anything but metadata;
//! tokens come from [`gatehouse_iam::Iam`] alone, and nothing here touches storage.
//!
//! Wire rules (spec §1): every request needs `Metadata-Flavor: Google` (else 403, as Google);
//! requests that went through a proxy (`X-Forwarded-For`) are refused; every response carries
//! `Metadata-Flavor: Google`; leaves are `application/text`, tokens and `?recursive=true`
//! documents `application/json`.
//!
//! A server on an address other processes can reach (the runner's fallback without network
//! namespaces) can demand a per-instance credential: with [`MetadataConfig::path_token`] set,
//! every path must start with `/<token>` (google-auth and friends build their URLs from
//! `GCE_METADATA_HOST`, so `host:port/<token>` there is all an instance needs); anything else
//! is refused before it is looked at.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_iam::{Iam, Result};
use serde_json::{Value, json};

/// What a metadata server says about its instance.
#[derive(Clone)]
pub struct MetadataConfig {
    /// The service account behind `default`.
    pub account: String,
    /// `instance/region` is `projects/{number}/regions/{region}`.
    pub region: String,
    /// `instance/id`.
    pub instance_id: String,
    /// Scopes reported for the account.
    pub scopes: Vec<String>,
    /// A credential every request's path must start with (`/<token>/computeMetadata/...`).
    pub path_token: Option<String>,
}

impl std::fmt::Debug for MetadataConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataConfig")
            .field("account", &self.account)
            .field("region", &self.region)
            .field("instance_id", &self.instance_id)
            .field("scopes", &self.scopes)
            .field(
                "path_token",
                &self.path_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `path` without its leading `/<token>`, if it starts with it (compared in constant time).
fn strip_token<'p>(path: &'p str, token: &str) -> Option<&'p str> {
    use subtle::ConstantTimeEq as _;
    let rest = path.strip_prefix('/')?;
    let (first, rest) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let same: bool = first.as_bytes().ct_eq(token.as_bytes()).into();
    same.then_some(if rest.is_empty() { "/" } else { rest })
}

impl MetadataConfig {
    /// A metadata server for `account` in `region`, with a random instance id.
    pub fn new(account: &str, region: &str) -> Self {
        use std::fmt::Write as _;
        let mut id = String::from("00");
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let _ = write!(id, "{:x}{:x}", seed, std::process::id());
        Self {
            account: account.to_owned(),
            region: region.to_owned(),
            instance_id: id,
            scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
            path_token: None,
        }
    }
}

/// A cached token and when it stops being handed out (epoch seconds).
type Cached = HashMap<String, (String, i64)>;

struct Server {
    iam: Iam,
    config: MetadataConfig,
    access: Mutex<Cached>,
    identity: Mutex<Cached>,
}

/// The metadata server's router.
pub fn router(iam: Iam, config: MetadataConfig) -> Router {
    let state = Arc::new(Server {
        iam,
        config,
        access: Mutex::new(HashMap::new()),
        identity: Mutex::new(HashMap::new()),
    });
    Router::new().fallback(handle).with_state(state)
}

fn flavored(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert("metadata-flavor", HeaderValue::from_static("Google"));
    h.insert(
        header::SERVER,
        HeaderValue::from_static("Metadata Server for VM"),
    );
    h.insert("x-xss-protection", HeaderValue::from_static("0"));
    h.insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
    res
}

fn text(body: impl Into<String>) -> Response {
    flavored(
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/text")],
            body.into(),
        )
            .into_response(),
    )
}

fn json_doc(v: Value) -> Response {
    flavored(
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response(),
    )
}

fn html_error(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html>\n<html lang=en>\n<meta charset=utf-8>\n<title>Error {code}</title>\n\
         <p><b>{code}.</b> <ins>That’s an error.</ins>\n<p>{message}  <ins>That’s all we know.</ins>\n",
        code = status.as_u16()
    );
    flavored(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
            body,
        )
            .into_response(),
    )
}

fn listing(entries: &[&str]) -> Response {
    let mut out = String::new();
    for e in entries {
        out.push_str(e);
        out.push('\n');
    }
    text(out)
}

async fn handle(State(s): State<Arc<Server>>, req: Request) -> Response {
    let path = match &s.config.path_token {
        None => req.uri().path().to_owned(),
        Some(token) => match strip_token(req.uri().path(), token) {
            Some(rest) => rest.to_owned(),
            None => {
                return html_error(
                    StatusCode::FORBIDDEN,
                    "Your client does not have permission to get URL from this server. \
                     This metadata endpoint belongs to one instance.",
                );
            }
        },
    };
    let flavor_ok = req
        .headers()
        .get("metadata-flavor")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("Google"))
        || req
            .headers()
            .get("x-google-metadata-request")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("True"));
    if req.headers().contains_key("x-forwarded-for") {
        return html_error(
            StatusCode::FORBIDDEN,
            "Your client does not have permission to get URL from this server. \
             Requests with X-Forwarded-For are refused.",
        );
    }
    // The root answers without the header: it is what clients ping to detect the server.
    if path == "/" {
        return text("computeMetadata/\n");
    }
    if !flavor_ok {
        return html_error(
            StatusCode::FORBIDDEN,
            &format!(
                "Your client does not have permission to get URL <code>{path}</code> from this \
                 server. Missing Metadata-Flavor:Google header."
            ),
        );
    }
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let recursive = param("recursive").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let Some(rest) = path.strip_prefix("/computeMetadata/v1") else {
        return html_error(
            StatusCode::NOT_FOUND,
            "The requested URL was not found on this server.",
        );
    };
    let rest = rest.trim_start_matches('/');
    match s
        .answer(rest, recursive, param("audience"), param("scopes"))
        .await
    {
        Ok(Some(res)) => res,
        Ok(None) => html_error(
            StatusCode::NOT_FOUND,
            &format!("The requested URL <code>{path}</code> was not found on this server."),
        ),
        Err(e) => {
            tracing::warn!(error = %e, path, "metadata request failed");
            html_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The metadata server could not answer.",
            )
        }
    }
}

impl Server {
    async fn account_json(&self) -> Result<Value> {
        Ok(json!({
            "aliases": ["default"],
            "email": self.config.account,
            "scopes": self.config.scopes,
        }))
    }

    async fn project(&self) -> Result<(String, String)> {
        let a = self.iam.require_account(&self.config.account).await?;
        let p = self.iam.project(&a.project_id).await?;
        Ok((p.project_id, p.project_number))
    }

    async fn instance_json(&self) -> Result<Value> {
        let (_, number) = self.project().await?;
        Ok(json!({
            "id": self.config.instance_id,
            "region": format!("projects/{number}/regions/{}", self.config.region),
            "zone": format!("projects/{number}/zones/{}-1", self.config.region),
            "serviceAccounts": {
                "default": self.account_json().await?,
                self.config.account.clone(): self.account_json().await?,
            },
        }))
    }

    async fn answer(
        &self,
        rest: &str,
        recursive: bool,
        audience: Option<&str>,
        scopes: Option<&str>,
    ) -> Result<Option<Response>> {
        let trimmed = rest.trim_end_matches('/');
        let (project_id, number) = self.project().await?;
        Ok(Some(match trimmed {
            "" if recursive => json_doc(json!({
                "instance": self.instance_json().await?,
                "project": {"projectId": project_id, "numericProjectId": number.parse::<u64>().unwrap_or_default()},
                "universe": {"universeDomain": "googleapis.com"},
            })),
            "" => listing(&["instance/", "project/", "universe/"]),
            "project" if recursive => json_doc(
                json!({"projectId": project_id, "numericProjectId": number.parse::<u64>().unwrap_or_default()}),
            ),
            "project" => listing(&["numeric-project-id", "project-id"]),
            "project/project-id" => text(project_id),
            "project/numeric-project-id" => text(number),
            "universe" => listing(&["universe-domain"]),
            "universe/universe-domain" => text("googleapis.com"),
            "instance" if recursive => json_doc(self.instance_json().await?),
            "instance" => listing(&["id", "region", "service-accounts/", "zone"]),
            "instance/id" => text(self.config.instance_id.clone()),
            "instance/region" => text(format!("projects/{number}/regions/{}", self.config.region)),
            "instance/zone" => text(format!("projects/{number}/zones/{}-1", self.config.region)),
            "instance/service-accounts" if recursive => json_doc(json!({
                "default": self.account_json().await?,
                self.config.account.clone(): self.account_json().await?,
            })),
            "instance/service-accounts" => {
                listing(&["default/", &format!("{}/", self.config.account)])
            }
            other => {
                let Some(acct_path) = other.strip_prefix("instance/service-accounts/") else {
                    return Ok(None);
                };
                let (who, leaf) = acct_path.split_once('/').unwrap_or((acct_path, ""));
                if who != "default" && who != self.config.account {
                    return Ok(None);
                }
                match leaf {
                    "" if recursive => json_doc(self.account_json().await?),
                    "" => listing(&["aliases", "email", "identity", "scopes", "token"]),
                    "email" => text(self.config.account.clone()),
                    "aliases" => text("default\n"),
                    "scopes" => {
                        let mut out = self.config.scopes.join("\n");
                        out.push('\n');
                        text(out)
                    }
                    "token" => {
                        let scopes: Vec<String> = match scopes {
                            Some(s) if !s.trim().is_empty() => s
                                .split(',')
                                .map(|x| x.trim().to_owned())
                                .filter(|x| !x.is_empty())
                                .collect(),
                            _ => self.config.scopes.clone(),
                        };
                        match self.access_token(&scopes).await? {
                            Some((token, expires_in)) => json_doc(json!({
                                "access_token": token,
                                "expires_in": expires_in,
                                "token_type": "Bearer",
                            })),
                            None => return Ok(None),
                        }
                    }
                    "identity" => {
                        let Some(aud) = audience.filter(|a| !a.is_empty()) else {
                            return Ok(Some(flavored(
                                (
                                    StatusCode::BAD_REQUEST,
                                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                                    "non-empty audience parameter required",
                                )
                                    .into_response(),
                            )));
                        };
                        match self.id_token(aud).await? {
                            Some(t) => text(t),
                            None => return Ok(None),
                        }
                    }
                    _ => return Ok(None),
                }
            }
        }))
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default()
    }

    /// The account, unless it is gone or disabled.
    async fn enabled_account(&self) -> Result<Option<Arc<gatehouse_store::ServiceAccountRecord>>> {
        Ok(self
            .iam
            .account(&self.config.account)
            .await?
            .filter(|a| !a.disabled))
    }

    /// An access token for the account, reused until 5 minutes before it expires (as the real
    /// server does). `None` if the account is gone or disabled.
    async fn access_token(&self, scopes: &[String]) -> Result<Option<(String, i64)>> {
        let key = scopes.join(" ");
        let now = Self::now();
        if let Ok(cache) = self.access.lock()
            && let Some((t, until)) = cache.get(&key)
            && *until > now
        {
            return Ok(Some((t.clone(), *until + 300 - now)));
        }
        let Some(a) = self.enabled_account().await? else {
            return Ok(None);
        };
        let (token, expires_in) = self.iam.mint_access_token(&a, scopes, None, 3600)?;
        if let Ok(mut cache) = self.access.lock() {
            cache.insert(key, (token.clone(), now + expires_in - 300));
        }
        Ok(Some((token, expires_in)))
    }

    /// An ID token for `audience`, reused until 5 minutes before it expires.
    async fn id_token(&self, audience: &str) -> Result<Option<String>> {
        let now = Self::now();
        if let Ok(cache) = self.identity.lock()
            && let Some((t, until)) = cache.get(audience)
            && *until > now
        {
            return Ok(Some(t.clone()));
        }
        let Some(a) = self.enabled_account().await? else {
            return Ok(None);
        };
        let token = self.iam.mint_id_token(&a, audience, true, false)?;
        if let Ok(mut cache) = self.identity.lock() {
            cache.insert(audience.to_owned(), (token.clone(), now + 3600 - 300));
        }
        Ok(Some(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_token_is_required_and_stripped() {
        let t = "s3cr3tT0ken";
        assert_eq!(strip_token("/s3cr3tT0ken", t), Some("/"));
        assert_eq!(strip_token("/s3cr3tT0ken/", t), Some("/"));
        assert_eq!(
            strip_token("/s3cr3tT0ken/computeMetadata/v1/x", t),
            Some("/computeMetadata/v1/x")
        );
        for wrong in [
            "/",
            "",
            "/computeMetadata/v1/instance/service-accounts/default/token",
            "/s3cr3tT0ke/computeMetadata/v1",
            "/s3cr3tT0kenX/computeMetadata/v1",
            "//s3cr3tT0ken/computeMetadata/v1",
        ] {
            assert_eq!(strip_token(wrong, t), None, "{wrong}");
        }
        let mut c = MetadataConfig::new("a@p.iam.gserviceaccount.com", "r");
        c.path_token = Some(t.into());
        assert!(!format!("{c:?}").contains(t));
    }
}
