//! OpenAPI 2.0 + `x-google-*` → a compiled, validated service config.
//!
//! Every problem is reported with its location (`paths./hello.get.x-google-backend.deadline`);
//! a security-relevant key we do not support is a problem, never silently ignored.
//!
//! No I/O: OpenID discovery and JWKS fetches happen when a version is loaded (`reload`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use crate::template::{Template, precedence};

/// A problem found in a config, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub location: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// How the request path becomes the backend path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    AppendPathToAddress,
    ConstantAddress,
}

/// HTTP version towards a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    H2,
}

/// Where an operation's requests go.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    /// `scheme://host[:port]` (no path). `None`: the local backend (`--backend`).
    pub origin: Option<String>,
    /// Host name (no port) for the Host header of remote backends, ready to send.
    pub host: Option<http::HeaderValue>,
    /// The address path without a trailing `/`.
    pub path: String,
    pub translation: Translation,
    /// Audience of the gateway's ID token for this backend; `None`: no backend auth.
    pub jwt_audience: Option<String>,
    pub deadline: Duration,
    pub protocol: Protocol,
}

/// Where a JWT may be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtLocation {
    /// The name is ready for lookups (a request tries every location).
    Header {
        name: http::HeaderName,
        prefix: String,
    },
    Query {
        name: String,
    },
}

/// A JWT provider (`securityDefinitions` entry of type oauth2 with `x-google-issuer`).
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub name: String,
    pub issuer: String,
    /// `None`: resolve by OpenID discovery from the issuer.
    pub jwks_uri: Option<String>,
    /// Allowed audiences, already normalised; empty: any.
    pub audiences: Vec<String>,
    pub locations: Vec<JwtLocation>,
}

/// An API key definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKeyLocation {
    Query(String),
    Header(String),
}

/// One scheme of a requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// Index into [`ServiceConfig::providers`].
    Jwt(usize),
    ApiKey(ApiKeyLocation),
}

/// A compiled operation.
#[derive(Debug, Clone)]
pub struct Route {
    /// Upper-case method, or `*` for any.
    pub method: String,
    pub template: Template,
    pub operation_id: String,
    pub backend: Backend,
    /// Requirements, OR-ed; each is a list of schemes, AND-ed. Empty: no authentication.
    pub security: Vec<Vec<Scheme>>,
    /// The JWT providers any requirement names, each once, in order (derived from `security`
    /// when the config is compiled, so a request does not collect them).
    pub jwt_providers: Vec<usize>,
    /// An auto-generated CORS preflight route (no JWT or API-key checks).
    pub cors: bool,
}

/// The JWT providers `security` names, each once, in order.
pub fn jwt_providers(security: &[Vec<Scheme>]) -> Vec<usize> {
    let mut out = Vec::new();
    for req in security {
        for s in req {
            if let Scheme::Jwt(i) = s
                && !out.contains(i)
            {
                out.push(*i);
            }
        }
    }
    out
}

/// The compiled config a gateway serves.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub service_name: String,
    pub routes: Vec<Route>,
    pub providers: Vec<Provider>,
}

/// Strips one leading `http://`/`https://` and one trailing `/`, as ESPv2 compares audiences.
pub fn normalize_audience(aud: &str) -> String {
    let a = aud
        .strip_prefix("https://")
        .or_else(|| aud.strip_prefix("http://"))
        .unwrap_or(aud);
    a.strip_suffix('/').unwrap_or(a).to_owned()
}

/// Parses an OpenAPI document (YAML or JSON) into a JSON value.
pub fn parse_document(text: &str) -> Result<Value, Problem> {
    let trimmed = text.trim_start();
    let parsed = if trimmed.starts_with('{') {
        serde_json::from_str::<Value>(text).map_err(|e| e.to_string())
    } else {
        serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| Problem {
        location: "(document)".into(),
        message: format!("not valid YAML or JSON: {e}"),
    })
}

struct Ctx {
    problems: Vec<Problem>,
}

impl Ctx {
    fn problem(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            location: location.into(),
            message: message.into(),
        });
    }
}

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];

/// Compiles a parsed document. On any problem, returns all of them.
pub fn compile(doc: &Value) -> Result<ServiceConfig, Vec<Problem>> {
    let mut cx = Ctx {
        problems: Vec::new(),
    };
    let Some(root) = doc.as_object() else {
        return Err(vec![Problem {
            location: "(document)".into(),
            message: "must be an object".into(),
        }]);
    };
    match root.get("swagger").and_then(Value::as_str) {
        Some("2.0") => {}
        _ => cx.problem("swagger", "must be \"2.0\" (OpenAPI 2.0)"),
    }
    let service_name = root
        .get("host")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let base_path = root
        .get("basePath")
        .and_then(Value::as_str)
        .unwrap_or("/")
        .trim_end_matches('/')
        .to_owned();
    for key in root.keys().filter(|k| k.starts_with("x-google-")) {
        if !matches!(
            key.as_str(),
            "x-google-backend" | "x-google-allow" | "x-google-endpoints" | "x-google-management"
        ) {
            cx.problem(key.clone(), "unsupported x-google extension");
        }
    }
    if root.contains_key("x-google-management") {
        cx.problem(
            "x-google-management",
            "quota and metrics management is not supported by this gateway",
        );
    }

    // Providers and API-key schemes.
    let mut providers = Vec::new();
    let mut schemes: HashMap<String, Scheme> = HashMap::new();
    if let Some(defs) = root.get("securityDefinitions") {
        let Some(defs) = defs.as_object() else {
            cx.problem("securityDefinitions", "must be an object");
            return Err(cx.problems);
        };
        for (name, def) in defs {
            let loc = format!("securityDefinitions.{name}");
            match def.get("type").and_then(Value::as_str) {
                Some("oauth2") => {
                    if let Some(p) = compile_provider(&mut cx, &loc, name, def, &service_name) {
                        schemes.insert(name.clone(), Scheme::Jwt(providers.len()));
                        providers.push(p);
                    }
                }
                Some("apiKey") => {
                    let key_name = def.get("name").and_then(Value::as_str).unwrap_or_default();
                    match (def.get("in").and_then(Value::as_str), key_name) {
                        (_, "") => cx.problem(format!("{loc}.name"), "required"),
                        (Some("query"), n) => {
                            schemes.insert(
                                name.clone(),
                                Scheme::ApiKey(ApiKeyLocation::Query(n.to_owned())),
                            );
                        }
                        (Some("header"), n) => {
                            schemes.insert(
                                name.clone(),
                                Scheme::ApiKey(ApiKeyLocation::Header(n.to_ascii_lowercase())),
                            );
                        }
                        _ => cx.problem(format!("{loc}.in"), "must be \"query\" or \"header\""),
                    }
                }
                Some(other) => cx.problem(
                    format!("{loc}.type"),
                    format!("security scheme type {other:?} is not supported"),
                ),
                None => cx.problem(format!("{loc}.type"), "required"),
            }
        }
    }

    let top_backend = match root.get("x-google-backend") {
        Some(b) => compile_backend(
            &mut cx,
            "x-google-backend",
            b,
            Translation::AppendPathToAddress,
        ),
        None => None,
    };
    let top_security = match root.get("security") {
        Some(s) => compile_security(&mut cx, "security", s, &schemes),
        None => Vec::new(),
    };
    let allow_all = match root.get("x-google-allow").and_then(Value::as_str) {
        None | Some("configured") => false,
        Some("all") => true,
        Some(other) => {
            cx.problem(
                "x-google-allow",
                format!("must be \"configured\" or \"all\", not {other:?}"),
            );
            false
        }
    };
    let allow_cors = root
        .get("x-google-endpoints")
        .and_then(Value::as_array)
        .is_some_and(|list| {
            list.iter().any(|e| {
                e.get("name").and_then(Value::as_str) == Some(service_name.as_str())
                    && e.get("allowCors").and_then(Value::as_bool) == Some(true)
            })
        });

    let mut routes: Vec<Route> = Vec::new();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let paths = root
        .get("paths")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if paths.is_empty() {
        cx.problem("paths", "no operations defined");
    }
    for (path, item) in &paths {
        let loc = format!("paths.{path}");
        let full = format!("{base_path}{path}");
        let template = match Template::parse(&full) {
            Ok(t) => t,
            Err(e) => {
                cx.problem(loc, e.to_string());
                continue;
            }
        };
        let Some(item) = item.as_object() else {
            cx.problem(loc, "must be an object");
            continue;
        };
        for (method, op) in item {
            if method == "parameters" || method.starts_with("x-") {
                continue;
            }
            let oloc = format!("{loc}.{method}");
            if !METHODS.contains(&method.as_str()) {
                cx.problem(oloc, "unknown HTTP method");
                continue;
            }
            let upper = method.to_ascii_uppercase();
            // Templates that differ only in variable names are the same route.
            let shape = format!("{:?}:{:?}", template.segs, template.verb);
            if !seen.insert((upper.clone(), shape)) {
                cx.problem(
                    oloc.clone(),
                    format!("duplicate operation {upper} {}", template.display()),
                );
                continue;
            }
            for key in op
                .as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                if key.starts_with("x-google-")
                    && !matches!(key.as_str(), "x-google-backend" | "x-google-quota")
                {
                    cx.problem(format!("{oloc}.{key}"), "unsupported x-google extension");
                }
                if key == "x-google-quota" {
                    cx.problem(
                        format!("{oloc}.{key}"),
                        "quota is not supported by this gateway",
                    );
                }
            }
            let operation_id = op
                .get("operationId")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if operation_id.is_empty() {
                cx.problem(format!("{oloc}.operationId"), "required");
            }
            let backend = match op.get("x-google-backend") {
                Some(b) => compile_backend(
                    &mut cx,
                    &format!("{oloc}.x-google-backend"),
                    b,
                    Translation::ConstantAddress,
                ),
                None => top_backend.clone(),
            };
            let security = match op.get("security") {
                Some(s) => compile_security(&mut cx, &format!("{oloc}.security"), s, &schemes),
                None => top_security.clone(),
            };
            routes.push(Route {
                method: upper,
                template: template.clone(),
                operation_id,
                backend: backend.unwrap_or_else(local_backend),
                jwt_providers: jwt_providers(&security),
                security,
                cors: false,
            });
        }
    }
    if allow_cors {
        let mut by_template: BTreeMap<String, Route> = BTreeMap::new();
        for r in &routes {
            by_template
                .entry(r.template.display())
                .or_insert_with(|| r.clone());
        }
        for (_, r) in by_template {
            if !routes
                .iter()
                .any(|x| x.method == "OPTIONS" && x.template == r.template)
            {
                routes.push(Route {
                    method: "OPTIONS".into(),
                    operation_id: format!("ESPv2_Autogenerated_CORS_{}", r.operation_id),
                    security: Vec::new(),
                    jwt_providers: Vec::new(),
                    cors: true,
                    ..r
                });
            }
        }
    }
    if allow_all {
        let backend = top_backend.clone().map(|b| Backend {
            translation: Translation::AppendPathToAddress,
            ..b
        });
        if let Ok(t) = Template::parse("/**") {
            for m in ["GET", "DELETE", "PATCH", "POST", "PUT"] {
                routes.push(Route {
                    method: m.into(),
                    template: t.clone(),
                    operation_id: format!(
                        "Google_Autogenerated_Unrecognized_{}_Method_Call",
                        m[..1].to_owned() + &m[1..].to_ascii_lowercase()
                    ),
                    backend: backend.clone().unwrap_or_else(local_backend),
                    security: Vec::new(),
                    jwt_providers: Vec::new(),
                    cors: false,
                });
            }
        }
    }
    if !cx.problems.is_empty() {
        return Err(cx.problems);
    }
    routes.sort_by(|a, b| {
        precedence(&a.template, &b.template)
            .then_with(|| method_order(&a.method).cmp(&method_order(&b.method)))
    });
    Ok(ServiceConfig {
        service_name,
        routes,
        providers,
    })
}

fn method_order(m: &str) -> (bool, String) {
    (m == "*", m.to_owned())
}

fn local_backend() -> Backend {
    Backend {
        origin: None,
        host: None,
        path: String::new(),
        translation: Translation::AppendPathToAddress,
        jwt_audience: None,
        deadline: Duration::from_secs(15),
        protocol: Protocol::Http1,
    }
}

fn compile_backend(cx: &mut Ctx, loc: &str, v: &Value, default: Translation) -> Option<Backend> {
    let Some(m) = v.as_object() else {
        cx.problem(loc, "must be an object");
        return None;
    };
    for key in m.keys() {
        if !matches!(
            key.as_str(),
            "address"
                | "path_translation"
                | "jwt_audience"
                | "disable_auth"
                | "deadline"
                | "protocol"
        ) {
            cx.problem(format!("{loc}.{key}"), "unknown x-google-backend field");
        }
    }
    let address = m.get("address").and_then(Value::as_str).unwrap_or_default();
    if address.is_empty() {
        cx.problem(format!("{loc}.address"), "required");
        return None;
    }
    let with_scheme = if address.contains("://") {
        address.to_owned()
    } else {
        format!("https://{address}")
    };
    let url = match url::Url::parse(&with_scheme) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
        Ok(u) if matches!(u.scheme(), "grpc" | "grpcs") => {
            cx.problem(
                format!("{loc}.address"),
                "gRPC backends are not supported by this gateway",
            );
            return None;
        }
        _ => {
            cx.problem(
                format!("{loc}.address"),
                format!("not a valid http(s) URL: {address:?}"),
            );
            return None;
        }
    };
    let host = url.host_str().unwrap_or_default().to_owned();
    let origin = match url.port() {
        Some(p) => format!("{}://{host}:{p}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    };
    let translation = match m.get("path_translation").map(|t| t.as_str()) {
        None => default,
        Some(Some("APPEND_PATH_TO_ADDRESS")) => Translation::AppendPathToAddress,
        Some(Some("CONSTANT_ADDRESS")) => Translation::ConstantAddress,
        Some(_) => {
            cx.problem(
                format!("{loc}.path_translation"),
                "must be APPEND_PATH_TO_ADDRESS or CONSTANT_ADDRESS",
            );
            default
        }
    };
    let disable_auth = match m.get("disable_auth") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            cx.problem(format!("{loc}.disable_auth"), "must be a boolean");
            false
        }
    };
    let jwt_audience = match m.get("jwt_audience") {
        Some(Value::String(_)) if disable_auth => {
            cx.problem(
                format!("{loc}.jwt_audience"),
                "cannot be combined with disable_auth: true",
            );
            None
        }
        Some(Value::String(a)) => Some(a.clone()),
        Some(_) => {
            cx.problem(format!("{loc}.jwt_audience"), "must be a string");
            None
        }
        None if disable_auth => None,
        // As Service Management fills it: the address, verbatim.
        None => Some(address.to_owned()),
    };
    let deadline = match m.get("deadline") {
        None => Duration::from_secs(15),
        Some(v) => match v.as_f64() {
            Some(d) if d > 0.0 && d.is_finite() => {
                Duration::from_millis((d * 1000.0).round() as u64)
            }
            Some(_) => Duration::from_secs(15),
            None => {
                cx.problem(format!("{loc}.deadline"), "must be a number of seconds");
                Duration::from_secs(15)
            }
        },
    };
    let protocol = match m.get("protocol").map(|p| p.as_str()) {
        None | Some(Some("http/1.1")) => Protocol::Http1,
        Some(Some("h2")) => Protocol::H2,
        Some(_) => {
            cx.problem(format!("{loc}.protocol"), "must be \"http/1.1\" or \"h2\"");
            Protocol::Http1
        }
    };
    Some(Backend {
        origin: Some(origin),
        // A URL's host is always a valid header value.
        host: http::HeaderValue::from_str(&host).ok(),
        path: url.path().trim_end_matches('/').to_owned(),
        translation,
        jwt_audience,
        deadline,
        protocol,
    })
}

fn compile_provider(
    cx: &mut Ctx,
    loc: &str,
    name: &str,
    def: &Value,
    service_name: &str,
) -> Option<Provider> {
    let Some(m) = def.as_object() else {
        cx.problem(loc, "must be an object");
        return None;
    };
    for key in m.keys().filter(|k| k.starts_with("x-google-")) {
        if !matches!(
            key.as_str(),
            "x-google-issuer"
                | "x-google-jwks_uri"
                | "x-google-audiences"
                | "x-google-jwt-locations"
        ) {
            cx.problem(
                format!("{loc}.{key}"),
                "unsupported x-google extension on a security definition",
            );
        }
    }
    let Some(issuer) = m
        .get("x-google-issuer")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        cx.problem(
            format!("{loc}.x-google-issuer"),
            "required for oauth2 security definitions",
        );
        return None;
    };
    let jwks_uri = match m.get("x-google-jwks_uri") {
        None => None,
        Some(Value::String(u)) if url::Url::parse(u).is_ok() => Some(u.clone()),
        Some(_) => {
            cx.problem(
                format!("{loc}.x-google-jwks_uri"),
                "must be an absolute URL",
            );
            None
        }
    };
    let audiences = match m.get("x-google-audiences") {
        None => vec![normalize_audience(&format!("https://{service_name}"))],
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(normalize_audience)
            .collect(),
        Some(_) => {
            cx.problem(
                format!("{loc}.x-google-audiences"),
                "must be a comma-separated string",
            );
            Vec::new()
        }
    };
    let locations = match m.get("x-google-jwt-locations") {
        None => vec![
            JwtLocation::Header {
                name: http::header::AUTHORIZATION,
                prefix: "Bearer ".into(),
            },
            JwtLocation::Header {
                name: http::HeaderName::from_static("x-goog-iap-jwt-assertion"),
                prefix: String::new(),
            },
            JwtLocation::Query {
                name: "access_token".into(),
            },
        ],
        Some(Value::Array(list)) => {
            let mut out = Vec::new();
            for (i, l) in list.iter().enumerate() {
                let lloc = format!("{loc}.x-google-jwt-locations[{i}]");
                let Some(lm) = l.as_object() else {
                    cx.problem(lloc, "must be an object");
                    continue;
                };
                for key in lm.keys() {
                    if !matches!(key.as_str(), "header" | "query" | "value_prefix") {
                        cx.problem(format!("{lloc}.{key}"), "unknown field");
                    }
                }
                match (
                    lm.get("header").and_then(Value::as_str),
                    lm.get("query").and_then(Value::as_str),
                ) {
                    (Some(h), None) => match http::HeaderName::from_bytes(h.as_bytes()) {
                        Ok(name) => out.push(JwtLocation::Header {
                            name,
                            prefix: lm
                                .get("value_prefix")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                        }),
                        Err(_) => cx.problem(format!("{lloc}.header"), "not a valid header name"),
                    },
                    (None, Some(q)) => {
                        if lm.contains_key("value_prefix") {
                            cx.problem(
                                format!("{lloc}.value_prefix"),
                                "not allowed for query locations",
                            );
                        }
                        out.push(JwtLocation::Query { name: q.to_owned() });
                    }
                    _ => cx.problem(lloc, "needs exactly one of header or query"),
                }
            }
            out
        }
        Some(_) => {
            cx.problem(format!("{loc}.x-google-jwt-locations"), "must be a list");
            Vec::new()
        }
    };
    Some(Provider {
        name: name.to_owned(),
        issuer: issuer.to_owned(),
        jwks_uri,
        audiences,
        locations,
    })
}

fn compile_security(
    cx: &mut Ctx,
    loc: &str,
    v: &Value,
    schemes: &HashMap<String, Scheme>,
) -> Vec<Vec<Scheme>> {
    let Some(list) = v.as_array() else {
        cx.problem(loc, "must be a list of requirement objects");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, req) in list.iter().enumerate() {
        let Some(m) = req.as_object() else {
            cx.problem(format!("{loc}[{i}]"), "must be an object");
            continue;
        };
        let mut all: Vec<Scheme> = Vec::new();
        for name in m.keys() {
            match schemes.get(name) {
                Some(s) => all.push(s.clone()),
                None => cx.problem(
                    format!("{loc}[{i}].{name}"),
                    "names no securityDefinitions entry",
                ),
            }
        }
        if all.iter().filter(|s| matches!(s, Scheme::Jwt(_))).count() > 1 {
            cx.problem(format!("{loc}[{i}]"), "requiring two JWT providers together (AND) is not supported; list them as separate requirements (OR)");
        }
        if !all.is_empty() {
            out.push(all);
        }
    }
    out
}

/// Every problem of a document, for `gatehouse gateway validate`.
pub fn validate(text: &str) -> Vec<Problem> {
    match parse_document(text) {
        Ok(doc) => compile(&doc).err().unwrap_or_default(),
        Err(p) => vec![p],
    }
}
