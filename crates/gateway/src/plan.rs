//! What a request becomes before it leaves the gateway: routing by method and path template,
//! authentication (JWT providers and API keys), path translation, and the headers a backend
//! gets (hop-by-hop fields removed, identity and forwarding headers written by the gateway).
//!
//! Owns [`plan`] and the hop-by-hop rule. Does no I/O with clients or backends (only the
//! JWKS and ID-token caches behind `auth` and `identity` may fetch): how a plan is carried out is
//! `h1` and `upstream`'s business.

use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, Uri, header};
use http_body_util::BodyExt;

use crate::config::{ApiKeyLocation, Protocol, Route, Scheme, Translation};
use crate::metrics::OperationMetrics;
use crate::{Body, Gateway, GatewayError, Loaded};

// Statics, not consts: a const is built and dropped again at every use, per header.
pub(crate) static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];
static USERINFO: [HeaderName; 2] = [
    HeaderName::from_static("x-apigateway-api-userinfo"),
    HeaderName::from_static("x-endpoint-api-userinfo"),
];
static METHOD_OVERRIDE: HeaderName = HeaderName::from_static("x-http-method-override");
static FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static FORWARDED_AUTHORIZATION: HeaderName = HeaderName::from_static("x-forwarded-authorization");
static ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");

/// Fields that `Connection` can never remove: message framing, which the gateway writes
/// itself from what it parsed, and `Host`. Letting a client name `Content-Length` there
/// would strip the backend request's framing while its body is still relayed (smuggling).
pub(crate) fn connection_may_remove(name: &[u8]) -> bool {
    ![&b"content-length"[..], b"transfer-encoding", b"host"]
        .iter()
        .any(|p| name.eq_ignore_ascii_case(p))
}

/// Whether a field name (any case) is one of [`HOP_BY_HOP`]; by length first, since this runs
/// for every field of every response.
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        2 => is(b"te"),
        7 => is(b"trailer") || is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        16 => is(b"proxy-connection"),
        17 => is(b"transfer-encoding"),
        19 => is(b"proxy-authorization"),
        _ => false,
    }
}

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first: most messages carry none, and a removal is a lookup each.
    if !headers.keys().any(|k| is_hop_by_hop(k.as_str().as_bytes())) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<String> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty() && connection_may_remove(s.as_bytes()))
            .collect();
        for h in listed {
            headers.remove(h.as_str());
        }
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
}

fn realm(req_headers: &HeaderMap, uri: &Uri) -> String {
    let host = req_headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let mut target = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    if target.len() > 256 {
        let mut cut = 256;
        while !target.is_char_boundary(cut) {
            cut -= 1;
        }
        target.truncate(cut);
    }
    format!("http://{host}{target}")
}

fn api_key_present(
    route: &Route,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<Option<String>> {
    // Locations of every API-key scheme the route names; None if the route has none.
    let mut locations = Vec::new();
    for req in &route.security {
        for s in req {
            if let Scheme::ApiKey(loc) = s
                && !locations.contains(loc)
            {
                locations.push(loc.clone());
            }
        }
    }
    if locations.is_empty() {
        return None;
    }
    // Query locations first, in order, then headers.
    for loc in &locations {
        if let (ApiKeyLocation::Query(name), Some(q)) = (loc, query)
            && let Some((_, v)) =
                url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name.as_str())
        {
            return Some(Some(v.into_owned()));
        }
    }
    for loc in &locations {
        if let ApiKeyLocation::Header(name) = loc
            && let Some(v) = headers.get(name.as_str()).and_then(|v| v.to_str().ok())
        {
            return Some(Some(v.to_owned()));
        }
    }
    Some(None)
}

/// Whether every requirement needs an API key (then a missing key fails the request).
fn key_required(route: &Route) -> bool {
    !route.security.is_empty()
        && route
            .security
            .iter()
            .all(|r| r.iter().any(|s| matches!(s, Scheme::ApiKey(_))))
}

/// Builds the backend path and query.
fn translate(route: &Route, path: &str, query: Option<&str>, vars: &[(String, String)]) -> String {
    let base = route.backend.path.as_str();
    match route.backend.translation {
        Translation::AppendPathToAddress => {
            let mut out =
                String::with_capacity(base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
            out.push_str(base);
            out.push_str(path);
            if let Some(q) = query {
                out.push('?');
                out.push_str(q);
            }
            out
        }
        Translation::ConstantAddress => {
            let mut out = if base.is_empty() {
                "/".to_owned()
            } else {
                base.to_owned()
            };
            let mut params: Vec<String> = query
                .filter(|q| !q.is_empty())
                .map(|q| vec![q.to_owned()])
                .unwrap_or_default();
            params.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
            if !params.is_empty() {
                out.push('?');
                out.push_str(&params.join("&"));
            }
            out
        }
    }
}

/// The backend's path and query: most often the client's own, shared rather than copied.
pub(crate) enum Target {
    Same(http::uri::PathAndQuery),
    Built(String),
}

impl Target {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Same(p) => p.as_str(),
            Self::Built(s) => s,
        }
    }
}

/// A request that passed routing and authentication, ready for its backend.
pub(crate) struct Plan<'a> {
    pub op: &'a str,
    /// The operation's metric handles.
    pub metrics: &'a OperationMetrics,
    pub method: Method,
    /// `scheme://host[:port]` of the backend.
    pub origin: &'a str,
    /// Path and query for the backend.
    pub target: Target,
    /// The headers for the backend (hop-by-hop removed, gateway headers added).
    pub headers: HeaderMap,
    pub protocol: Protocol,
    pub deadline: std::time::Duration,
}

/// The gateway's own answer, counted and logged.
pub(crate) fn local(m: &OperationMetrics, started: Instant, e: GatewayError) -> Response<Body> {
    m.record(e.status, started);
    e.into_response()
}

/// Routes and authenticates a request and prepares what goes to the backend; `Err` is the
/// gateway's own answer (already counted and logged). Takes the headers out of `parts`.
pub(crate) async fn plan<'a>(
    gw: &'a Gateway,
    loaded: &'a Loaded,
    parts: &mut http::request::Parts,
    peer: &HeaderValue,
    started: Instant,
) -> Result<Plan<'a>, Response<Body>> {
    // One pass over the names finds what needs work; most requests need none of it.
    let (mut underscore, mut override_method, mut identity) = (false, false, false);
    for k in parts.headers.keys() {
        underscore |= k.as_str().contains('_');
        override_method |= *k == METHOD_OVERRIDE;
        identity |= *k == FORWARDED_AUTHORIZATION || USERINFO.contains(k);
    }
    // X-HTTP-Method-Override re-selects the route.
    if override_method
        && let Some(m) = parts
            .headers
            .remove(&METHOD_OVERRIDE)
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok())
    {
        parts.method = m;
    }
    if underscore {
        return Err(local(
            gw.metrics.unrouted(),
            started,
            GatewayError::new(
                400,
                "Bad Request: header names with underscores are not allowed",
            ),
        ));
    }
    let raw_path = parts.uri.path();
    let query = parts.uri.query();
    let path = match crate::template::normalize(raw_path) {
        Ok(p) => p,
        Err(msg) => {
            return Err(local(
                gw.metrics.unrouted(),
                started,
                GatewayError::new(400, msg),
            ));
        }
    };
    let method = parts.method.as_str();
    let chosen = loaded
        .config
        .routes
        .iter()
        .zip(&loaded.operations)
        .find_map(|(route, m)| {
            if route.method == method || route.method == "*" {
                route.template.matches(&path).map(|vars| (route, m, vars))
            } else {
                None
            }
        });
    let Some((route, metrics, vars)) = chosen else {
        if path == "/healthz" && parts.method == Method::GET {
            return Err(Response::new(
                http_body_util::Full::new(Bytes::from_static(b"{}"))
                    .map_err(|n| match n {})
                    .boxed(),
            ));
        }
        let err = match loaded
            .config
            .routes
            .iter()
            .find(|r| r.template.matches(&path).is_some())
        {
            Some(r) => GatewayError::new(
                405,
                format!(
                    "The current request is matched to the defined url template \"{}\" but its http method is not allowed",
                    r.template.display()
                ),
            ),
            None => GatewayError::not_found(),
        };
        return Err(local(gw.metrics.unrouted(), started, err));
    };
    let op = route.operation_id.as_str();
    let headers = &mut parts.headers;
    // Client-supplied identity headers never reach a backend: the user info the gateway
    // writes after checking a token, and the caller's original credentials, which the gateway
    // alone moves to X-Forwarded-Authorization when it authenticates to the backend (stricter
    // than ESPv2, which passes a client's own X-Forwarded-Authorization through).
    if identity {
        for h in &USERINFO {
            headers.remove(h);
        }
        headers.remove(&FORWARDED_AUTHORIZATION);
    }
    let mut payload = None;
    if !route.cors {
        if !route.jwt_providers.is_empty() {
            match loaded
                .auth
                .authenticate(&route.jwt_providers, headers, query)
                .await
            {
                Ok(p) => payload = Some(p),
                Err(f) => {
                    gw.metrics.auth_failure(f.reason());
                    let mut e = GatewayError::new(f.status(), f.message());
                    let mut w = format!("Bearer realm=\"{}\"", realm(headers, &parts.uri));
                    if f != crate::auth::AuthFailure::Missing {
                        w.push_str(", error=\"invalid_token\"");
                    }
                    e.www_authenticate = Some(w);
                    return Err(local(metrics, started, e));
                }
            }
        }
        match api_key_present(route, headers, query) {
            Some(None) if key_required(route) => {
                gw.metrics.auth_failure("api_key_missing");
                let e = GatewayError::new(
                    401,
                    "UNAUTHENTICATED: Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                );
                return Err(local(metrics, started, e));
            }
            Some(Some(key)) => {
                if let Some(valid) = &gw.options.api_keys
                    && !valid.contains(&key)
                {
                    gw.metrics.auth_failure("api_key_invalid");
                    let e = GatewayError::new(
                        400,
                        "INVALID_ARGUMENT: API key not valid. Please pass a valid API key.",
                    );
                    return Err(local(metrics, started, e));
                }
            }
            _ => {}
        }
    }

    // Where it goes.
    let origin = route
        .backend
        .origin
        .as_deref()
        .unwrap_or_else(|| gw.options.local_backend.trim_end_matches('/'));
    let target = match parts.uri.path_and_query() {
        // Appended to an empty address path, unchanged by normalisation: the client's own.
        Some(pq)
            if route.backend.translation == Translation::AppendPathToAddress
                && route.backend.path.is_empty()
                && path == pq.path() =>
        {
            Target::Same(pq.clone())
        }
        _ => Target::Built(translate(route, &path, query, &vars)),
    };
    strip_hop_by_hop(headers);
    // The path changed if it was translated (anything but appending to an empty address path)
    // or normalised; only then does the backend get the original.
    let translated = !(route.backend.translation == Translation::AppendPathToAddress
        && route.backend.path.is_empty());
    if (translated || path != raw_path)
        && let Ok(v) = HeaderValue::from_str(parts.uri.path_and_query().map_or("/", |p| p.as_str()))
    {
        headers.insert(ORIGINAL_PATH.clone(), v);
    }
    if let Some(host) = &route.backend.host {
        headers.insert(header::HOST, host.clone());
    }
    if let Some(v) = payload {
        for h in &USERINFO {
            headers.insert(h.clone(), v.clone());
        }
    }
    append_forwarded_for(headers, peer);
    if let (Some(aud), Some(tokens)) = (&route.backend.jwt_audience, &gw.id_tokens) {
        match tokens.token(aud).await {
            Ok(t) => {
                if let Some(original) = headers.remove(header::AUTHORIZATION) {
                    headers.insert(FORWARDED_AUTHORIZATION.clone(), original);
                }
                if let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}")) {
                    headers.insert(header::AUTHORIZATION, v);
                }
            }
            Err(e) => {
                tracing::error!(audience = %aud, error = &e as &(dyn std::error::Error + 'static), "no ID token for the backend");
                let err = GatewayError::new(500, format!("Token not found for audience: {aud}"));
                return Err(local(metrics, started, err));
            }
        }
    }
    Ok(Plan {
        op,
        metrics,
        method: parts.method.clone(),
        origin,
        target,
        headers: std::mem::take(headers),
        protocol: route.backend.protocol,
        deadline: route.backend.deadline,
    })
}

/// Appends the peer address to `X-Forwarded-For`, as Envoy does: a client can prepend what it
/// likes, but the last entry, the one a backend should trust, is always the gateway's peer.
/// Several client fields are joined into one.
fn append_forwarded_for(headers: &mut HeaderMap, peer: &HeaderValue) {
    let mut values = headers.get_all(&FORWARDED_FOR).iter();
    let Some(first) = values.next() else {
        headers.insert(FORWARDED_FOR.clone(), peer.clone());
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v.as_bytes());
    }
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(peer.as_bytes());
    let value = HeaderValue::from_bytes(&joined).unwrap_or_else(|_| peer.clone());
    headers.insert(FORWARDED_FOR.clone(), value);
}

/// The peer address as a header value, without going through `format!`: made once per client
/// connection and passed to [`plan`].
pub(crate) fn peer_header(ip: std::net::IpAddr) -> HeaderValue {
    use std::io::Write as _;
    if let std::net::IpAddr::V4(v4) = ip {
        // Dotted decimal by hand: the formatting machinery costs more than the rest of this
        // header on every request.
        let mut buf = [0u8; 15];
        let mut n = 0;
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                buf[n] = b'.';
                n += 1;
            }
            if octet >= 100 {
                buf[n] = b'0' + octet / 100;
                n += 1;
            }
            if octet >= 10 {
                buf[n] = b'0' + octet / 10 % 10;
                n += 1;
            }
            buf[n] = b'0' + octet % 10;
            n += 1;
        }
        return HeaderValue::from_bytes(&buf[..n])
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    }
    let mut buf = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{ip}");
    let n = cursor.position() as usize;
    HeaderValue::from_bytes(&buf[..n]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn hop_by_hop_names_match_in_any_case_and_nothing_else() {
        for n in &super::HOP_BY_HOP {
            assert!(super::is_hop_by_hop(n.as_str().as_bytes()), "{n}");
            assert!(super::is_hop_by_hop(
                n.as_str().to_ascii_uppercase().as_bytes()
            ));
        }
        for n in [
            "t",
            "tee",
            "content-length",
            "host",
            "connectionx",
            "keep-alivex",
            "trailers",
        ] {
            assert!(!super::is_hop_by_hop(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn peer_addresses_are_written_as_display_writes_them() {
        for o in 0..=255u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(o, 0, o, 255 - o));
            assert_eq!(super::peer_header(ip).as_bytes(), ip.to_string().as_bytes());
        }
        for s in ["::1", "fe80::1", "2001:db8::ff00:42:8329", "::ffff:1.2.3.4"] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(super::peer_header(ip).to_str().unwrap(), ip.to_string());
        }
    }
}
