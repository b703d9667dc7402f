//! JWT authentication as ESPv2's `jwt_authn` does it: token extraction, the check order, the
//! exact error messages, JWKS caching with refetch on an unknown `kid`, and a verified-token cache.
//!
//! Decides only whether credentials are good: no routing, and nothing of the request beyond the
//! headers and query it reads tokens from.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gatehouse_tokens::{SignatureError, numeric_date, parse_jwt};
pub use gatehouse_verify::RemoteKeys as Jwks;
use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use smallvec::SmallVec;

use crate::config::{JwtLocation, Provider, normalize_audience};

/// Clock skew allowed on `exp`/`nbf`, as Envoy's default.
const SKEW_SECS: i64 = 60;
const TOKEN_CACHE_MAX: usize = 10_000;

/// Why a request failed JWT authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    UnknownIssuer,
    Malformed,
    /// A part did not decode: the message names which.
    BadPart(&'static str),
    BadAlgorithm,
    Expired,
    NotYetValid,
    Audience,
    NoKey,
    BadSignature,
    JwksFetch,
}

impl AuthFailure {
    /// ESPv2's message.
    pub fn message(&self) -> &'static str {
        match self {
            Self::Missing => "Jwt is missing",
            Self::UnknownIssuer => "Jwt issuer is not configured",
            Self::Malformed => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            Self::BadPart(m) => m,
            Self::BadAlgorithm => "Jwt header [alg] is not supported",
            Self::Expired => "Jwt is expired",
            Self::NotYetValid => "Jwt not yet valid",
            Self::Audience => "Audiences in Jwt are not allowed",
            Self::NoKey => "Jwks doesn't have key to match kid or alg from Jwt",
            Self::BadSignature => "Jwt verification fails",
            Self::JwksFetch => "Jwks remote fetch is failed",
        }
    }

    /// 403 for audiences, 401 for everything else.
    pub fn status(&self) -> u16 {
        if *self == Self::Audience { 403 } else { 401 }
    }

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::UnknownIssuer => "unknown_issuer",
            Self::Malformed => "malformed",
            Self::BadPart(_) => "malformed",
            Self::BadAlgorithm => "bad_alg",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Audience => "audience",
            Self::NoKey => "no_key",
            Self::BadSignature => "bad_signature",
            Self::JwksFetch => "jwks_fetch",
        }
    }
}

/// A verified token, cached until it expires.
struct Verified {
    /// The providers (by index in the config) whose keys verified the token, each with the
    /// generation of its key set then ([`Jwks::generation`]). A cache hit counts only for one of
    /// them, and only while its keys are unchanged: two providers may share an issuer and still
    /// trust different key sets, and a key the issuer stops publishing (rotated out, revoked)
    /// must stop verifying the tokens it signed.
    providers: SmallVec<[(usize, u64); 2]>,
    exp: Option<i64>,
    nbf: Option<i64>,
    audiences: Vec<String>,
    /// The payload segment as the user-info header value: a cache hit clones a reference.
    payload: HeaderValue,
}

impl Verified {
    /// A cache hit for provider `id` whose usable keys are at `generation`: time and audience are
    /// checked again (they change with the clock and the route); `None` when this provider
    /// has not verified the token with these keys.
    fn hit(
        &self,
        id: usize,
        generation: u64,
        audiences: &[String],
        now: i64,
    ) -> Option<Result<HeaderValue, AuthFailure>> {
        if !self.providers.contains(&(id, generation)) {
            return None;
        }
        Some(
            check_time(self.exp, self.nbf, now)
                .and_then(|()| check_audience(audiences, &self.audiences))
                .map(|()| self.payload.clone()),
        )
    }
}

/// A token found in a request, or the answer the verified-token cache already has for it.
enum Found<'a> {
    Token(Cow<'a, str>),
    Checked(Result<HeaderValue, AuthFailure>),
}

/// JWT verification for all providers of a config.
pub struct Authenticator {
    providers: Vec<(Provider, Arc<Jwks>)>,
    /// Keyed by the token's bytes. Every key is made of token bytes only ([`TOKEN_BYTES`]), so a
    /// header whose whole rest after the prefix is a key holds exactly that token.
    verified: Mutex<HashMap<Box<[u8]>, Verified, foldhash::fast::RandomState>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("providers", &self.providers.len())
            .finish_non_exhaustive()
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn token_audiences(claims: &serde_json::Map<String, Value>) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(a)) => vec![normalize_audience(a)],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(normalize_audience)
            .collect(),
        _ => Vec::new(),
    }
}

impl Authenticator {
    pub fn new(providers: Vec<(Provider, Arc<Jwks>)>) -> Self {
        Self {
            providers,
            verified: Mutex::new(HashMap::default()),
        }
    }

    /// Fetches every provider's keys once (a failure is logged; requests then get
    /// `Jwks remote fetch is failed` until a fetch succeeds).
    pub async fn prefetch(&self) {
        for (p, jwks) in &self.providers {
            if let Err(e) = jwks.fetch().await {
                tracing::warn!(provider = %p.name, error = %e, "initial JWKS fetch failed");
            }
        }
    }

    /// The tokens in a provider's locations: slices of the header values, decoded copies from
    /// the query. A header that is `<prefix><token>` with a token this provider verified before
    /// is answered from the cache at once: the common case skips the byte-by-byte token scan.
    fn extract<'a>(
        &self,
        (id, provider): (usize, &Provider),
        headers: &'a HeaderMap,
        query: Option<&'a str>,
        now: i64,
    ) -> SmallVec<[Found<'a>; 2]> {
        let mut found = SmallVec::new();
        for loc in &provider.locations {
            match loc {
                JwtLocation::Header { name, prefix } => {
                    for v in headers.get_all(name) {
                        let v = v.as_bytes();
                        if let Some(checked) = v
                            .strip_prefix(prefix.as_bytes())
                            .and_then(|rest| self.cached(id, provider, rest, now))
                        {
                            found.push(Found::Checked(checked));
                        } else if prefix.is_empty() {
                            if let Ok(t) = std::str::from_utf8(v.trim_ascii()) {
                                found.push(Found::Token(Cow::Borrowed(t)));
                            }
                        } else if let Some(t) = after_prefix(v, prefix.as_bytes()) {
                            found.push(Found::Token(Cow::Borrowed(t)));
                        }
                    }
                }
                JwtLocation::Query { name } => {
                    if let Some(q) = query {
                        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
                            if k == name.as_str() {
                                found.push(Found::Token(v));
                            }
                        }
                    }
                }
            }
        }
        found
    }

    /// The cache's answer for `token` and provider `id`, if it has one and the provider's keys
    /// may be used without a fetch (see [`Jwks::usable_generation`]).
    fn cached(
        &self,
        id: usize,
        provider: &Provider,
        token: &[u8],
        now: i64,
    ) -> Option<Result<HeaderValue, AuthFailure>> {
        let generation = self.providers.get(id)?.1.usable_generation()?;
        let cache = self.verified.lock().ok()?;
        cache
            .get(token)?
            .hit(id, generation, &provider.audiences, now)
    }

    /// Authenticates with any of `provider_ids` (OR). Returns the payload segment of the token that
    /// passed, or ESPv2's aggregated failure.
    pub async fn authenticate(
        &self,
        provider_ids: &[usize],
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<HeaderValue, AuthFailure> {
        let mut failures = Vec::new();
        for &id in provider_ids {
            let Some((provider, jwks)) = self.providers.get(id) else {
                continue;
            };
            match self
                .check_provider(id, provider, jwks, headers, query)
                .await
            {
                Ok(payload) => return Ok(payload),
                Err(f) => failures.push(f),
            }
        }
        Err(aggregate(failures))
    }

    async fn check_provider(
        &self,
        id: usize,
        provider: &Provider,
        jwks: &Jwks,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<HeaderValue, AuthFailure> {
        let now = now_secs();
        let tokens = self.extract((id, provider), headers, query, now);
        if tokens.is_empty() {
            return Err(AuthFailure::Missing);
        }
        let mut payload = None;
        for found in tokens {
            payload = Some(match found {
                Found::Checked(checked) => checked?,
                Found::Token(token) => self.check_token(id, provider, jwks, &token, now).await?,
            });
        }
        payload.ok_or(AuthFailure::Missing)
    }

    async fn check_token(
        &self,
        id: usize,
        provider: &Provider,
        jwks: &Jwks,
        token: &str,
        now: i64,
    ) -> Result<HeaderValue, AuthFailure> {
        // Cache hit for this provider: re-check time and audience; skip parsing and the
        // signature. A token verified only by another provider is checked in full.
        if let Some(checked) = self.cached(id, provider, token.as_bytes(), now) {
            return checked;
        }
        let jwt = match parse_jwt(token) {
            Some(j) => j,
            None => return Err(diagnose(token)),
        };
        if !KNOWN_ALGS.contains(&jwt.header.alg.as_str()) {
            return Err(AuthFailure::BadAlgorithm);
        }
        if jwt.claims.get("iss").and_then(Value::as_str) != Some(provider.issuer.as_str()) {
            return Err(AuthFailure::UnknownIssuer);
        }
        // A date that is present but not an integer must not read as "no expiry".
        let exp = numeric_date(&jwt.claims, "exp")
            .map_err(|_| AuthFailure::BadPart("Jwt payload exp field is not an integer"))?;
        let nbf = numeric_date(&jwt.claims, "nbf")
            .map_err(|_| AuthFailure::BadPart("Jwt payload nbf field is not an integer"))?;
        check_time(exp, nbf, now)?;
        let audiences = token_audiences(&jwt.claims);
        check_audience(&provider.audiences, &audiences)?;
        let generation = jwks.generation();
        let keys = jwks.keys().await.ok_or(AuthFailure::JwksFetch)?;
        let mut result = keys.verify(&jwt.header, jwt.signed.as_bytes(), &jwt.signature);
        if result == Err(SignatureError::NoKey)
            && let Some(kid) = &jwt.header.kid
            && !keys.has_kid(kid)
            && let Some(fresh) = jwks.refetch_for_unknown_kid(kid).await
        {
            result = fresh.verify(&jwt.header, jwt.signed.as_bytes(), &jwt.signature);
        }
        match result {
            Ok(()) => {}
            // HMAC or EdDSA: a JWKS of asymmetric keys has nothing to match.
            Err(SignatureError::Algorithm) => return Err(AuthFailure::NoKey),
            Err(SignatureError::NoKey) => return Err(AuthFailure::NoKey),
            Err(SignatureError::BadSignature) => return Err(AuthFailure::BadSignature),
        }
        // A verified payload is base64url; anything a header cannot carry is refused.
        let payload = HeaderValue::from_str(jwt.payload)
            .map_err(|_| AuthFailure::BadPart("Jwt payload is an invalid Base64"))?;
        // Only tokens made of token bytes are cached (a query parameter is decoded and could
        // hold anything): the header fast path in `extract` relies on it.
        if token.bytes().all(is_token_byte)
            && let Ok(mut cache) = self.verified.lock()
        {
            if cache.len() >= TOKEN_CACHE_MAX {
                cache.clear();
            }
            match cache.get_mut(token.as_bytes()) {
                Some(v) => {
                    v.providers.retain(|(p, _)| *p != id);
                    v.providers.push((id, generation));
                }
                None => {
                    cache.insert(
                        token.as_bytes().into(),
                        Verified {
                            providers: smallvec::smallvec![(id, generation)],
                            exp,
                            nbf,
                            audiences,
                            payload: payload.clone(),
                        },
                    );
                }
            }
        }
        Ok(payload)
    }
}

/// Bytes a token may contain (base64url, base64 and the dots), as a table: tokens are long.
static TOKEN_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'=' | b'+' | b'/');
        b += 1;
    }
    t
};

fn is_token_byte(b: u8) -> bool {
    TOKEN_BYTES[b as usize]
}

/// The token after the first `prefix` in a header value, as Envoy extracts it: non-token
/// bytes after the prefix are skipped, the token runs to the first non-token byte.
fn after_prefix<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a str> {
    let at = if value.starts_with(prefix) {
        0
    } else {
        value.windows(prefix.len()).position(|w| w == prefix)?
    };
    let rest = &value[at + prefix.len()..];
    let start = rest.iter().position(|b| is_token_byte(*b))?;
    let rest = &rest[start..];
    let end = rest
        .iter()
        .position(|b| !is_token_byte(*b))
        .unwrap_or(rest.len());
    // Token bytes are ASCII.
    std::str::from_utf8(&rest[..end]).ok()
}

/// The algorithms jwt_verify_lib parses; others are "not supported".
const KNOWN_ALGS: [&str; 13] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "HS256",
    "HS384", "HS512", "EdDSA",
];

/// jwt_verify_lib's message for a token that does not parse.
fn diagnose(token: &str) -> AuthFailure {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return AuthFailure::Malformed;
    }
    let json = |p: &str| {
        gatehouse_tokens::b64url_decode(p)
            .map(|b| serde_json::from_slice::<serde_json::Map<String, Value>>(&b).is_ok())
    };
    match json(parts[0]) {
        None => return AuthFailure::BadPart("Jwt header is an invalid Base64url encoded"),
        Some(false) => return AuthFailure::BadPart("Jwt header is an invalid JSON"),
        Some(true) => {}
    }
    let crit = gatehouse_tokens::b64url_decode(parts[0])
        .and_then(|b| serde_json::from_slice::<serde_json::Map<String, Value>>(&b).ok())
        .is_some_and(|h| h.contains_key("crit"));
    if crit {
        return AuthFailure::BadPart("Jwt header [crit] names an extension that is not supported");
    }
    match json(parts[1]) {
        None => return AuthFailure::BadPart("Jwt payload is an invalid Base64url encoded"),
        Some(false) => return AuthFailure::BadPart("Jwt payload is an invalid JSON"),
        Some(true) => {}
    }
    if gatehouse_tokens::b64url_decode(parts[2]).is_none() {
        return AuthFailure::BadPart("Jwt signature is an invalid Base64url encoded");
    }
    AuthFailure::Malformed
}

fn check_time(exp: Option<i64>, nbf: Option<i64>, now: i64) -> Result<(), AuthFailure> {
    if let Some(nbf) = nbf
        && now + SKEW_SECS < nbf
    {
        return Err(AuthFailure::NotYetValid);
    }
    if let Some(exp) = exp
        && exp != 0
        && now > exp + SKEW_SECS
    {
        return Err(AuthFailure::Expired);
    }
    Ok(())
}

fn check_audience(allowed: &[String], token: &[String]) -> Result<(), AuthFailure> {
    if allowed.is_empty() || token.iter().any(|a| allowed.contains(a)) {
        Ok(())
    } else {
        Err(AuthFailure::Audience)
    }
}

/// ESPv2's OR aggregation: the first failure that is neither "missing" nor "unknown issuer";
/// else "unknown issuer"; else "missing".
fn aggregate(failures: Vec<AuthFailure>) -> AuthFailure {
    if let Some(f) = failures
        .iter()
        .find(|f| !matches!(f, AuthFailure::Missing | AuthFailure::UnknownIssuer))
    {
        return f.clone();
    }
    if failures.contains(&AuthFailure::UnknownIssuer) {
        return AuthFailure::UnknownIssuer;
    }
    AuthFailure::Missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregation_prefers_real_failures() {
        use AuthFailure::*;
        assert_eq!(aggregate(vec![Missing, Audience, UnknownIssuer]), Audience);
        assert_eq!(aggregate(vec![Missing, UnknownIssuer]), UnknownIssuer);
        assert_eq!(aggregate(vec![Missing]), Missing);
        assert_eq!(aggregate(vec![]), Missing);
    }

    #[test]
    fn token_after_prefix() {
        assert_eq!(after_prefix(b"Bearer abc.def", b"Bearer "), Some("abc.def"));
        assert_eq!(
            after_prefix(b"x, Bearer  \"a.b\" tail", b"Bearer "),
            Some("a.b")
        );
        assert_eq!(after_prefix(b"Basic abc", b"Bearer "), None);
        assert_eq!(after_prefix(b"Bearer ", b"Bearer "), None);
        assert_eq!(after_prefix(b"Bearer a+/=b c", b"Bearer "), Some("a+/=b"));
    }

    #[test]
    fn time_and_audience() {
        assert!(check_time(Some(100), None, 150).is_ok());
        assert_eq!(check_time(Some(100), None, 161), Err(AuthFailure::Expired));
        assert_eq!(
            check_time(None, Some(300), 200),
            Err(AuthFailure::NotYetValid)
        );
        assert!(check_time(Some(0), None, 1_000_000).is_ok());
        let allowed = vec![normalize_audience("https://admin.cloud.goog/")];
        assert!(check_audience(&allowed, &[normalize_audience("admin.cloud.goog")]).is_ok());
        assert_eq!(check_audience(&allowed, &[]), Err(AuthFailure::Audience));
        assert!(check_audience(&[], &[]).is_ok());
    }
}
