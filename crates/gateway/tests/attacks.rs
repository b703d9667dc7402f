//! The gateway as an attacker sees it: each test sends what an attacker would send and asserts
//! the safe answer, both what the client gets and the exact bytes the backend receives (issue
//! #14: smuggling through `Connection`, a HEAD answer leaking to another client, identity
//! headers in trailers and `X-Forwarded-Authorization`, `X-Forwarded-For`, the verified-token
//! cache across providers, non-UTF-8 paths, JWT dates and `crit`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{RawBackend, jwks_server, now, token};
use gatehouse_tokens::{SigningKey, b64url};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ISS: &str = "https://shared-issuer.example";

/// A gateway whose `/open/**` routes are open and whose `/a` and `/b` need a JWT from
/// providers `a` and `b`: same issuer, different key sets.
async fn gateway(backend: &str, jwks_a: &str, jwks_b: &str) -> String {
    let config = format!(
        r#"swagger: "2.0"
info: {{title: t, version: 1.0.0}}
host: api.example
x-google-backend:
  address: {backend}
securityDefinitions:
  a:
    type: oauth2
    flow: implicit
    authorizationUrl: ""
    x-google-issuer: "{ISS}"
    x-google-jwks_uri: "{jwks_a}"
    x-google-audiences: "x"
  b:
    type: oauth2
    flow: implicit
    authorizationUrl: ""
    x-google-issuer: "{ISS}"
    x-google-jwks_uri: "{jwks_b}"
    x-google-audiences: "x"
paths:
  /{{x=**}}:
    get: {{operationId: g}}
    post: {{operationId: p}}
    head: {{operationId: h}}
  /a:
    get:
      operationId: a
      security: [{{a: []}}]
  /b:
    get:
      operationId: b
      security: [{{b: []}}]
"#
    );
    common::serve_config(&config).await
}

struct World {
    gateway: String,
    backend: RawBackend,
    key_a: SigningKey,
}

async fn world() -> World {
    let (backend_url, backend) = RawBackend::start().await;
    let key_a = SigningKey::generate().unwrap();
    let key_b = SigningKey::generate().unwrap();
    let jwks_a = jwks_server(&[&key_a]).await;
    let jwks_b = jwks_server(&[&key_b]).await;
    let gateway = gateway(&backend_url, &jwks_a, &jwks_b).await;
    World {
        gateway,
        backend,
        key_a,
    }
}

/// Sends `raw` on a new connection and reads until the gateway closes it or `quiet` passes
/// without a byte.
async fn exchange(gateway: &str, raw: &[u8], quiet: Duration) -> String {
    let mut s = TcpStream::connect(gateway).await.unwrap();
    s.write_all(raw).await.unwrap();
    read_for(&mut s, quiet).await
}

async fn read_for(s: &mut TcpStream, quiet: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(quiet, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status(res: &str) -> u16 {
    res.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

const SHORT: Duration = Duration::from_millis(400);

/// Hole 1: `Connection: content-length` must not strip the backend request's framing; the
/// body `GET /admin …` with a forged user-info header must stay a body.
#[tokio::test]
async fn connection_header_cannot_remove_framing() {
    let w = world().await;
    let smuggled =
        "GET /admin HTTP/1.1\r\nHost: a\r\nX-Apigateway-Api-Userinfo: eyJzdWIiOiJhZG1pbiJ9\r\n\r\n";
    for connection in [
        "content-length",
        "Content-Length, keep-alive",
        "host, content-length",
    ] {
        let req = format!(
            "POST /open HTTP/1.1\r\nHost: api.example\r\nConnection: {connection}\r\nContent-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        );
        let res = exchange(&w.gateway, req.as_bytes(), SHORT).await;
        assert_eq!(status(&res), 200, "{res}");
        assert!(res.contains("served POST /open"), "{res}");
    }
    // A chunked body named in Connection is framed by the gateway too.
    let req = format!(
        "POST /open HTTP/1.1\r\nHost: api.example\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
        smuggled.len()
    );
    let res = exchange(&w.gateway, req.as_bytes(), SHORT).await;
    assert_eq!(status(&res), 200, "{res}");
    // The backend records a request before it answers it.
    let seen = w.backend.seen();
    assert_eq!(seen.len(), 4, "{seen:#?}");
    for s in &seen {
        assert_eq!((s.method.as_str(), s.path.as_str()), ("POST", "/open"));
        assert_eq!(s.body, smuggled.as_bytes());
        assert!(s.header("host").is_some(), "{s:?}");
    }
    assert!(seen.iter().all(|s| s.path != "/admin"));
}

/// Hole 2: HEAD overridden to GET must not leave the GET body on a pooled connection for the
/// next client; and a pooled connection with unexpected bytes is never handed on.
#[tokio::test]
async fn head_override_and_stray_bytes_never_reach_another_client() {
    let w = world().await;
    // The attacker: HEAD, sent upstream as GET; reads the head and leaves.
    let res = exchange(
        &w.gateway,
        b"HEAD /leak HTTP/1.1\r\nHost: api.example\r\nX-HTTP-Method-Override: GET\r\n\r\n",
        Duration::from_millis(50),
    )
    .await;
    assert_eq!(status(&res), 200, "{res}");
    assert!(
        !res.contains("victim"),
        "a HEAD answer carries no body: {res}"
    );
    // The victim, right after, on its own connection. The pause is a window for a wrong
    // reuse of the attacker's upstream connection: what would be awaited is an event that must
    // not happen, and the gateway exposes no pool state to wait on.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let res = exchange(
        &w.gateway,
        b"GET /mine HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n",
        SHORT,
    )
    .await;
    assert!(res.contains("served GET /mine"), "{res}");
    assert!(!res.contains("victim"), "another client's bytes: {res}");

    // A backend that sends bytes after a complete response: the connection is not pooled.
    let mut a = TcpStream::connect(&w.gateway).await.unwrap();
    a.write_all(b"GET /extra HTTP/1.1\r\nHost: api.example\r\n\r\n")
        .await
        .unwrap();
    let first = read_for(&mut a, Duration::from_millis(200)).await;
    assert!(first.ends_with("ok"), "{first}");
    drop(a);
    // A window in which a wrongly pooled connection would be handed on (no pool state to await).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let res = exchange(
        &w.gateway,
        b"GET /next HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n",
        SHORT,
    )
    .await;
    assert!(res.contains("served GET /next"), "{res}");
    assert!(!res.contains("victim"), "{res}");
}

/// Hole 8: a client's `X-Forwarded-Authorization` never reaches a backend, and neither do
/// chunk extensions or trailers (which could carry `X-Apigateway-Api-Userinfo`).
#[tokio::test]
async fn identity_headers_cannot_be_smuggled_in_trailers_or_forwarded_authorization() {
    let w = world().await;
    let res = exchange(
        &w.gateway,
        b"GET /open HTTP/1.1\r\nHost: api.example\r\nX-Forwarded-Authorization: Bearer forged\r\nConnection: close\r\n\r\n",
        SHORT,
    )
    .await;
    assert_eq!(status(&res), 200, "{res}");
    let body = "hello, backend";
    let req = format!(
        "POST /open HTTP/1.1\r\nHost: api.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;ext=\"x-apigateway-api-userinfo\"\r\n{}\r\n{:x}\r\n{}\r\n0\r\nX-Apigateway-Api-Userinfo: eyJzdWIiOiJmb3JnZWQifQ\r\nX-Endpoint-API-UserInfo: forged\r\n\r\n",
        &body[..5],
        body.len() - 5,
        &body[5..]
    );
    let res = exchange(&w.gateway, req.as_bytes(), SHORT).await;
    assert_eq!(status(&res), 200, "{res}");
    // The backend records a request before it answers it.
    let seen = w.backend.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0].header("x-forwarded-authorization"), None);
    assert_eq!(seen[1].body, body.as_bytes());
    assert!(seen[1].trailers.is_empty(), "{:?}", seen[1].trailers);
    let raw = String::from_utf8_lossy(&w.backend.raw()).to_ascii_lowercase();
    assert!(!raw.contains("forged"), "{raw}");
    assert!(!raw.contains("eyjzdwiioijmb3jnzwqifq"), "{raw}");
    assert!(!raw.contains("ext="), "{raw}");
}

/// Hole 9: the peer address is appended to `X-Forwarded-For`, never replaced by the client's.
#[tokio::test]
async fn forwarded_for_ends_with_the_real_peer() {
    let w = world().await;
    let res = exchange(
        &w.gateway,
        b"GET /open HTTP/1.1\r\nHost: api.example\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 198.51.100.1\r\nConnection: close\r\n\r\n",
        SHORT,
    )
    .await;
    assert_eq!(status(&res), 200, "{res}");
    let seen = w.backend.seen();
    assert_eq!(
        seen[0].header("x-forwarded-for"),
        Some("203.0.113.9, 198.51.100.1, 127.0.0.1")
    );
    let n = seen[0]
        .headers
        .iter()
        .filter(|(k, _)| k == "x-forwarded-for")
        .count();
    assert_eq!(n, 1);
}

async fn get_with(gateway: &str, path: &str, token: &str) -> String {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    // An unknown kid may wait up to a second for the next JWKS refetch slot.
    exchange(gateway, req.as_bytes(), Duration::from_secs(3)).await
}

/// Hole 10: a token verified for provider `a` is not accepted from the cache for provider `b`,
/// which shares `a`'s issuer but trusts other keys.
#[tokio::test]
async fn verified_token_cache_is_per_provider() {
    let w = world().await;
    let t = token(
        &w.key_a,
        json!({"iss": ISS, "sub": "u", "aud": "x", "iat": now(), "exp": now() + 600}),
    );
    let res = get_with(&w.gateway, "/a", &t).await;
    assert_eq!(status(&res), 200, "{res}");
    let res = get_with(&w.gateway, "/b", &t).await;
    assert_eq!(status(&res), 401, "{res}");
    // And the other way round, with the cache filled by b's refusal first.
    let t2 = token(
        &w.key_a,
        json!({"iss": ISS, "sub": "v", "aud": "x", "iat": now(), "exp": now() + 600}),
    );
    assert_eq!(status(&get_with(&w.gateway, "/b", &t2).await), 401);
    assert_eq!(status(&get_with(&w.gateway, "/a", &t2).await), 200);
    assert_eq!(status(&get_with(&w.gateway, "/b", &t2).await), 401);
}

/// The verified-token cache answers a header straight away only when the whole value after
/// `Bearer ` is a token it verified for this provider: anything longer, shorter or padded
/// is extracted and checked as before, and a decoded query token (which may hold bytes a
/// header token cannot) never becomes a cache entry the header path would trust.
#[tokio::test]
async fn verified_token_cache_answers_only_the_exact_token() {
    let w = world().await;
    let t = token(
        &w.key_a,
        json!({"iss": ISS, "sub": "u", "aud": "x", "iat": now(), "exp": now() + 600}),
    );
    assert_eq!(status(&get_with(&w.gateway, "/a", &t).await), 200);
    // Longer or shorter by one token byte: another token, with a signature that fails.
    let res = get_with(&w.gateway, "/a", &format!("{t}A")).await;
    assert_eq!(status(&res), 401, "{res}");
    let res = get_with(&w.gateway, "/a", &t[..t.len() - 1]).await;
    assert_eq!(status(&res), 401, "{res}");
    // Envoy's extraction still applies: leading non-token bytes are skipped, the token ends
    // at the first non-token byte.
    assert_eq!(
        status(&get_with(&w.gateway, "/a", &format!(" {t}")).await),
        200
    );
    assert_eq!(
        status(&get_with(&w.gateway, "/a", &format!("{t} x")).await),
        200
    );
    // Still per provider on the fast path.
    assert_eq!(status(&get_with(&w.gateway, "/b", &t).await), 401);
    // A query token with a trailing space decodes to bytes no header token has; refused, and
    // the exact header form of it is refused too (nothing was cached for it).
    let t2 = token(
        &w.key_a,
        json!({"iss": ISS, "sub": "w", "aud": "x", "iat": now(), "exp": now() + 600}),
    );
    let req = format!(
        "GET /a?access_token={t2}%20 HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n"
    );
    let res = exchange(&w.gateway, req.as_bytes(), SHORT).await;
    assert_eq!(status(&res), 401, "{res}");
    assert_eq!(status(&get_with(&w.gateway, "/a", &t2).await), 200);
}

/// Hole 13: `exp`/`nbf` that are not integers do not make a token immortal, and a `crit`
/// header is refused (RFC 7519 NumericDate, RFC 7515 §4.1.11).
#[tokio::test]
async fn jwt_dates_must_be_integers_and_crit_is_refused() {
    let w = world().await;
    let past = now() - 3600;
    for (claims, why) in [
        (
            json!({"iss": ISS, "sub": "u", "exp": past.to_string()}),
            "string exp",
        ),
        (
            json!({"iss": ISS, "sub": "u", "exp": past as f64 + 0.5}),
            "float exp",
        ),
        (json!({"iss": ISS, "sub": "u", "exp": [past]}), "array exp"),
        (json!({"iss": ISS, "sub": "u", "exp": null}), "null exp"),
        (
            json!({"iss": ISS, "sub": "u", "exp": now() + 600, "nbf": (now() + 3600).to_string()}),
            "string nbf",
        ),
        (json!({"iss": ISS, "sub": "u", "exp": 1e300}), "huge exp"),
    ] {
        let res = get_with(&w.gateway, "/a", &token(&w.key_a, claims)).await;
        assert_eq!(status(&res), 401, "{why}: {res}");
    }
    // `crit`: signed by the trusted key, refused all the same.
    let header = json!({"alg": "RS256", "kid": w.key_a.kid(), "typ": "JWT", "crit": ["exp"]});
    let claims = json!({"iss": ISS, "sub": "u", "aud": "x", "exp": now() + 600});
    let signed = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = w.key_a.sign_rs256(signed.as_bytes()).unwrap();
    let t = format!("{signed}.{}", b64url(&sig));
    let res = get_with(&w.gateway, "/a", &t).await;
    assert_eq!(status(&res), 401, "{res}");
    assert!(res.contains("crit"), "{res}");
    // The same token without `crit` passes: the refusal is about `crit` alone.
    let ok = token(&w.key_a, claims);
    assert_eq!(status(&get_with(&w.gateway, "/a", &ok).await), 200);
    assert!(w.backend.seen().iter().all(|s| s.path == "/a"));
}

/// Hole 12 and friends: heads that used to panic or be read two ways get a 400 and a closed
/// connection; the gateway keeps serving.
#[tokio::test]
async fn bad_paths_and_ambiguous_heads_get_400() {
    let w = world().await;
    let bad: [&[u8]; 7] = [
        b"GET /%\xc3\xa9 HTTP/1.1\r\nHost: api.example\r\n\r\n",
        b"GET /a%\xf0\x9f\x98\x80b HTTP/1.1\r\nHost: api.example\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\nHost: api.example\r\n\r\n",
        b"GET /open HTTP/1.1\r\nHost: api.example\r\nHost: evil.example\r\n\r\n",
        b"GET /open HTTP/1.1\r\n\r\n",
        b"POST /open HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /open HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ];
    for raw in bad {
        let res = exchange(&w.gateway, raw, SHORT).await;
        assert_eq!(status(&res), 400, "{}: {res}", String::from_utf8_lossy(raw));
    }
    assert!(w.backend.seen().is_empty(), "{:#?}", w.backend.seen());
    let res = exchange(
        &w.gateway,
        b"GET /still-up HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n",
        SHORT,
    )
    .await;
    assert!(res.contains("served GET /still-up"), "{res}");
}
