//! Request decoding: credentials, client address, and lenient JSON or form bodies.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Uri, header};
use gatehouse_identity::Error;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// What every identity request carries besides its body.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub api_key: Option<String>,
    pub bearer: Option<String>,
    pub ip: IpAddr,
}

impl Credentials {
    /// Reads `?key=`, `x-goog-api-key`, `Authorization: Bearer` and the client address: the peer
    /// address, or with `proxy_hops` > 0 the address that many hops from the right of
    /// `X-Forwarded-For` (the one our own load balancer saw).
    pub fn from_parts(
        uri: &Uri,
        headers: &HeaderMap,
        peer: Option<&ConnectInfo<SocketAddr>>,
        proxy_hops: usize,
    ) -> Self {
        let api_key = uri
            .query()
            .and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "key")
                    .map(|(_, v)| v.into_owned())
            })
            .or_else(|| {
                headers
                    .get("x-goog-api-key")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            });
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_owned())
            });
        let peer_ip = peer.map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |c| c.0.ip());
        let ip = forwarded_client(headers, proxy_hops).unwrap_or(peer_ip);
        Self {
            api_key,
            bearer,
            ip,
        }
    }
}

/// The client address `hops` entries from the right of `X-Forwarded-For`, if there is one.
fn forwarded_client(headers: &HeaderMap, hops: usize) -> Option<IpAddr> {
    if hops == 0 {
        return None;
    }
    let chain: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let index = chain.len().checked_sub(hops)?;
    chain[index].parse().ok()
}

/// A query-string parameter.
pub fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    })
}

/// Parses a request body into a JSON object: JSON, or a form for `application/x-www-form-urlencoded`.
/// Keys are camel-cased recursively (clients send either case). DELETE bodies are ignored.
pub fn body_object(
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Map<String, Value>, Error> {
    if *method == Method::DELETE
        || *method == Method::GET
        || body.iter().all(u8::is_ascii_whitespace)
    {
        return Ok(Map::new());
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"))
        && !body.trim_ascii_start().starts_with(b"{");
    let value = if is_form {
        Value::Object(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect(),
        )
    } else {
        serde_json::from_slice::<Value>(body)
            .map_err(|e| Error::InvalidArgument(format!("Invalid JSON payload received. {e}")))?
    };
    match camel_keys(value) {
        Value::Object(map) => Ok(map),
        _ => Err(Error::InvalidArgument(
            "Invalid JSON payload received. Expected an object.".into(),
        )),
    }
}

/// Decodes a body object into a request type, turning type errors into `INVALID_ARGUMENT`.
pub fn decode<T: DeserializeOwned>(map: Map<String, Value>) -> Result<T, Error> {
    serde_json::from_value(Value::Object(map))
        .map_err(|e| Error::InvalidArgument(format!("Invalid JSON payload received. {e}")))
}

fn camel_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (to_camel(&k), camel_keys(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(camel_keys).collect()),
        other => other,
    }
}

/// `grant_type` → `grantType`; leading underscores are dropped, not a word boundary
/// (`_x` → `x`).
fn to_camel(key: &str) -> String {
    gatehouse_google_api::camel_case(key.trim_start_matches('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_casing() {
        assert_eq!(to_camel("grant_type"), "grantType");
        assert_eq!(to_camel("idToken"), "idToken");
        assert_eq!(to_camel("_x"), "x");
        let v = camel_keys(
            serde_json::json!({"local_id": ["a"], "provider_user_info": [{"raw_id": "r"}]}),
        );
        assert_eq!(
            v,
            serde_json::json!({"localId": ["a"], "providerUserInfo": [{"rawId": "r"}]})
        );
    }

    #[test]
    fn forwarded_for_hops() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.7".parse().unwrap());
        assert_eq!(forwarded_client(&h, 0), None);
        assert_eq!(forwarded_client(&h, 1), Some("10.0.0.7".parse().unwrap()));
        assert_eq!(
            forwarded_client(&h, 2),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(forwarded_client(&h, 3), None);
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(forwarded_client(&h, 1), None);
    }

    #[test]
    fn bodies() {
        let h = HeaderMap::new();
        assert!(body_object(&Method::POST, &h, b"").unwrap().is_empty());
        assert!(body_object(&Method::POST, &h, b"{").is_err());
        assert!(body_object(&Method::POST, &h, b"[1]").is_err());
        let mut form = HeaderMap::new();
        form.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let m = body_object(
            &Method::POST,
            &form,
            b"grant_type=refresh_token&refresh_token=abc",
        )
        .unwrap();
        assert_eq!(m["grantType"], "refresh_token");
    }
}
