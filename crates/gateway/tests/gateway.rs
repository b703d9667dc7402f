//! The gateway end to end: real echo backends and a real JWKS server on 127.0.0.1, tokens
//! signed by keys the test makes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::routing::any;
use common::{Health, Issuer, now, token};
use gatehouse_gateway::{Gateway, GatewayOptions};
use gatehouse_tokens::SigningKey;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

async fn spawn(app: Router) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(l, app).await.unwrap();
    });
    format!("http://{addr}")
}

/// Echoes the request as JSON; `/slow` sleeps 2 s first.
async fn echo(req: Request) -> axum::Json<Value> {
    if req.uri().path().contains("slow") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let headers: Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or_default())))
        .collect();
    axum::Json(
        json!({"method": req.method().as_str(), "RequestURI": req.uri().path_and_query().map(|p| p.as_str()), "headers": headers}),
    )
}

struct World {
    gateway: String,
    backend: String,
    issuer: Issuer,
    key: SigningKey,
    http: reqwest::Client,
    gw: Arc<Gateway>,
}

const ISS: &str = "https://issuer.example";

async fn world(extra_paths: &str, backend_auth: bool) -> World {
    let key = SigningKey::generate().unwrap();
    let (issuer, jwks_url) = Issuer::start(&key).await;
    let backend = spawn(Router::new().fallback(any(echo))).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        format!("http://{a}")
    };
    let config = format!(
        r#"
swagger: "2.0"
info: {{title: t, version: 1.0.0}}
host: api.example
x-google-backend:
  address: {backend}
securityDefinitions:
  jwt:
    type: oauth2
    flow: implicit
    authorizationUrl: ""
    x-google-issuer: "{ISS}"
    x-google-jwks_uri: "{jwks_url}"
    x-google-audiences: "aud-1, https://aud-2/"
security:
  - jwt: []
paths:
  /v1/shelves:
    get:
      operationId: listShelves
    post:
      operationId: createShelf
  /v1/shelves/{{shelf}}:
    get:
      operationId: getShelf
      x-google-backend:
        address: {backend}/dynamic/getshelf
  /open:
    get:
      operationId: open
      security: []
  /slow:
    get:
      operationId: slow
      security: []
      x-google-backend:
        address: {backend}
        path_translation: APPEND_PATH_TO_ADDRESS
        deadline: 0.5
  /dead:
    get:
      operationId: dead
      security: []
      x-google-backend:
        address: {dead}
{extra_paths}
"#
    );
    let source = if backend_auth {
        // A token endpoint as Google's OAuth server would be, minting "id tokens" that name the audience.
        let tokens = spawn(Router::new().route(
            "/token",
            axum::routing::post(|body: String| async move {
                let params: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
                let assertion = &params.iter().find(|(k, _)| k == "assertion").unwrap().1;
                let claims: Value = serde_json::from_slice(&gatehouse_tokens::b64url_decode(assertion.split('.').nth(1).unwrap()).unwrap()).unwrap();
                axum::Json(json!({"id_token": format!("idtoken-for-{}", claims["target_audience"].as_str().unwrap())}))
            }),
        ))
        .await;
        let sa = SigningKey::generate().unwrap();
        let dir = gatehouse_testkit::temp_dir("gw-sa").unwrap();
        let pem = {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD.encode(sa.pkcs8_der());
            let lines: Vec<String> = b64
                .as_bytes()
                .chunks(64)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                lines.join("\n")
            )
        };
        let file = dir.path().join("sa.json");
        std::fs::write(&file, json!({"type": "service_account", "client_email": "gw@p.iam.gserviceaccount.com", "private_key_id": sa.kid(), "private_key": pem, "token_uri": format!("{tokens}/token")}).to_string()).unwrap();
        let source = gatehouse_gateway::identity::TokenSource::from_key_file(&file).unwrap();
        std::mem::forget(dir);
        Some(source)
    } else {
        None
    };
    let gw = Gateway::new(&config, None, GatewayOptions::default(), source)
        .await
        .unwrap();
    let addr = common::serve(&gw).await;
    World {
        gateway: format!("http://{addr}"),
        backend,
        issuer,
        key,
        http: reqwest::Client::new(),
        gw,
    }
}

async fn get(w: &World, path: &str, headers: &[(&str, String)]) -> (u16, HeaderMap, Value) {
    let mut req = w.http.get(format!("{}{path}", w.gateway));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

fn good(w: &World) -> String {
    token(
        &w.key,
        json!({"iss": ISS, "sub": "u1", "aud": "aud-1", "iat": now(), "exp": now() + 600}),
    )
}

#[tokio::test]
async fn jwt_checks_and_error_bodies() {
    let w = world("", false).await;
    let (st, h, b) = get(&w, "/v1/shelves?key=k", &[]).await;
    assert_eq!(
        (st, b.clone()),
        (401, json!({"code": 401, "message": "Jwt is missing"}))
    );
    let www = h["www-authenticate"].to_str().unwrap();
    assert!(
        www.starts_with("Bearer realm=\"http://") && www.ends_with("/v1/shelves?key=k\""),
        "{www}"
    );

    let t = good(&w);
    let (st, _, b) = get(
        &w,
        "/v1/shelves",
        &[("authorization", format!("Bearer {t}"))],
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let payload = t.split('.').nth(1).unwrap();
    assert_eq!(b["headers"]["x-apigateway-api-userinfo"], payload);
    assert_eq!(b["headers"]["x-endpoint-api-userinfo"], payload);
    assert_eq!(b["headers"]["authorization"], format!("Bearer {t}"));
    assert_eq!(b["RequestURI"], "/v1/shelves");

    // The verified-token cache hands back the user info it stored: a second caller's token,
    // then the first one again (a cache hit), each reach the backend with their own identity.
    let other = token(
        &w.key,
        json!({"iss": ISS, "sub": "u2", "aud": "aud-1", "iat": now(), "exp": now() + 600}),
    );
    for (tok, sub) in [(&other, "u2"), (&t, "u1"), (&other, "u2"), (&t, "u1")] {
        let (st, _, b) = get(
            &w,
            "/v1/shelves",
            &[("authorization", format!("Bearer {tok}"))],
        )
        .await;
        assert_eq!(st, 200, "{b}");
        let info = b["headers"]["x-apigateway-api-userinfo"].as_str().unwrap();
        assert_eq!(info, tok.split('.').nth(1).unwrap(), "{sub}");
        assert_eq!(b["headers"]["x-endpoint-api-userinfo"], info);
    }

    let cases = [
        (
            json!({"iss": ISS, "aud": "other", "exp": now() + 600}),
            403,
            "Audiences in Jwt are not allowed",
        ),
        (
            json!({"iss": ISS, "exp": now() + 600}),
            403,
            "Audiences in Jwt are not allowed",
        ),
        (
            json!({"iss": ISS, "aud": "aud-2", "exp": now() - 120}),
            401,
            "Jwt is expired",
        ),
        (
            json!({"iss": ISS, "aud": "aud-2", "nbf": now() + 120}),
            401,
            "Jwt not yet valid",
        ),
        (
            json!({"iss": "https://elsewhere", "aud": "aud-1"}),
            401,
            "Jwt issuer is not configured",
        ),
    ];
    for (claims, status, message) in cases {
        let t = token(&w.key, claims.clone());
        let (st, h, b) = get(
            &w,
            "/v1/shelves",
            &[("authorization", format!("Bearer {t}"))],
        )
        .await;
        assert_eq!(
            (st, b["message"].as_str().unwrap()),
            (status, message),
            "{claims}"
        );
        assert!(
            h["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("error=\"invalid_token\"")
        );
    }
    // https://aud-2/ normalises to aud-2; an audience list passes if any entry is allowed.
    let t = token(
        &w.key,
        json!({"iss": ISS, "aud": ["x", "https://aud-2"], "exp": now() + 60}),
    );
    assert_eq!(
        get(
            &w,
            "/v1/shelves",
            &[("authorization", format!("Bearer {t}"))]
        )
        .await
        .0,
        200
    );
    // Other locations.
    assert_eq!(
        get(&w, &format!("/v1/shelves?access_token={}", good(&w)), &[])
            .await
            .0,
        200
    );
    assert_eq!(
        get(&w, "/v1/shelves", &[("x-goog-iap-jwt-assertion", good(&w))])
            .await
            .0,
        200
    );
    // Forgeries.
    let other = SigningKey::generate().unwrap();
    let forged = token(
        &SigningKey::from_pkcs8(w.key.kid().into(), other.pkcs8_der()).unwrap(),
        json!({"iss": ISS, "aud": "aud-1"}),
    );
    let (st, _, b) = get(
        &w,
        "/v1/shelves",
        &[("authorization", format!("Bearer {forged}"))],
    )
    .await;
    assert_eq!(
        (st, b["message"].as_str().unwrap()),
        (401, "Jwt verification fails")
    );
    let (st, _, b) = get(
        &w,
        "/v1/shelves",
        &[("authorization", "Bearer a.b.c".into())],
    )
    .await;
    assert_eq!(
        (st, b["message"].as_str().unwrap()),
        (401, "Jwt header is an invalid Base64url encoded")
    );
    let none =
        gatehouse_tokens::encode_unsigned(json!({"iss": ISS, "aud": "aud-1"}).as_object().unwrap());
    let (st, _, _) = get(
        &w,
        "/v1/shelves",
        &[("authorization", format!("Bearer {none}"))],
    )
    .await;
    assert_eq!(st, 401);
}

#[tokio::test]
async fn rotation_and_jwks_outage() {
    let w = world("", false).await;
    let t = good(&w);
    assert_eq!(
        get(
            &w,
            "/v1/shelves",
            &[("authorization", format!("Bearer {t}"))]
        )
        .await
        .0,
        200
    );
    // The issuer rotates: the new kid is unknown, so the gateway refetches.
    let next = SigningKey::generate().unwrap();
    w.issuer
        .keys
        .lock()
        .unwrap()
        .push(SigningKey::from_pkcs8(next.kid().into(), next.pkcs8_der()).unwrap());
    let t2 = token(
        &next,
        json!({"iss": ISS, "aud": "aud-1", "exp": now() + 600}),
    );
    assert_eq!(
        get(
            &w,
            "/v1/shelves",
            &[("authorization", format!("Bearer {t2}"))]
        )
        .await
        .0,
        200
    );
    // JWKS down: cached keys keep serving, for cached and new tokens alike.
    w.issuer.set(Health::Down);
    let t3 = token(
        &next,
        json!({"iss": ISS, "aud": "aud-1", "exp": now() + 600, "n": 3}),
    );
    assert_eq!(
        get(
            &w,
            "/v1/shelves",
            &[("authorization", format!("Bearer {t2}"))]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        get(
            &w,
            "/v1/shelves",
            &[("authorization", format!("Bearer {t3}"))]
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn routing_translation_and_backend_failures() {
    let w = world("", false).await;
    let auth = [("authorization", format!("Bearer {}", good(&w)))];
    let (st, _, b) = get(&w, "/v1/shelves/42?x=1", &auth).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["RequestURI"], "/dynamic/getshelf?x=1&shelf=42");
    let (st, _, b) = get(&w, "/nothing", &auth).await;
    assert_eq!(
        (st, b),
        (
            404,
            json!({"code": 404, "message": "The current request is not defined by this API."})
        )
    );
    let res = w
        .http
        .delete(format!("{}/v1/shelves/", w.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 405);
    let b: Value = res.json().await.unwrap();
    assert_eq!(
        b["message"],
        "The current request is matched to the defined url template \"/v1/shelves\" but its http method is not allowed"
    );
    // No auth on the open route; a spoofed user-info header is stripped.
    let (st, _, b) = get(
        &w,
        "/open",
        &[("x-endpoint-api-userinfo", "spoofed".into())],
    )
    .await;
    assert_eq!(st, 200);
    assert!(b["headers"].get("x-endpoint-api-userinfo").is_none(), "{b}");
    let (st, _, b) = get(&w, "/slow", &[]).await;
    assert_eq!(
        (st, b["message"].as_str().unwrap()),
        (504, "upstream request timeout")
    );
    let (st, _, b) = get(&w, "/dead", &[]).await;
    assert_eq!(st, 503);
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .starts_with("upstream connect error or disconnect/reset before headers")
    );
    assert_eq!(get(&w, "/healthz", &[]).await.0, 200);
}

#[tokio::test]
async fn backend_identity_replaces_authorization() {
    let w = world("", true).await;
    let t = good(&w);
    let (st, _, b) = get(
        &w,
        "/v1/shelves/7",
        &[
            ("authorization", format!("Bearer {t}")),
            ("x-forwarded-authorization", "Bearer spoofed".into()),
        ],
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        b["headers"]["authorization"],
        format!("Bearer idtoken-for-{}/dynamic/getshelf", w.backend)
    );
    assert_eq!(
        b["headers"]["x-forwarded-authorization"],
        format!("Bearer {t}")
    );
}

#[tokio::test]
async fn config_swap_validates_first_and_can_be_rolled_back() {
    let w = world("", false).await;
    let bad = "swagger: \"2.0\"\nhost: x\npaths:\n  /a:\n    get:\n      operationId: a\n      x-google-backend:\n        address: http://127.0.0.1:1\n        protocol: grpc\n";
    assert!(w.gw.apply(bad).await.is_err());
    assert_eq!(w.gw.active().version, 1);
    let good_cfg = format!(
        "swagger: \"2.0\"\nhost: x\nx-google-backend:\n  address: {}\npaths:\n  /only:\n    get:\n      operationId: only\n",
        w.backend
    );
    assert_eq!(w.gw.apply(&good_cfg).await.unwrap(), 2);
    assert_eq!(get(&w, "/only", &[]).await.0, 200);
    assert_eq!(get(&w, "/open", &[]).await.0, 404);
    assert_eq!(w.gw.restore(1).await, Some(1));
    assert_eq!(w.gw.restore(99).await, None);
    assert_eq!(get(&w, "/open", &[]).await.0, 200);
}

#[tokio::test]
async fn concurrent_reloads_are_applied_one_at_a_time_with_distinct_versions() {
    let w = world("", false).await;
    let cfg = |n: usize| {
        format!(
            "swagger: \"2.0\"\nhost: x\nx-google-backend:\n  address: {}\npaths:\n  /v{n}:\n    get:\n      operationId: v{n}\n",
            w.backend
        )
    };
    let texts: Vec<String> = (0..8).map(cfg).collect();
    let bad = "swagger: \"2.0\"\npaths: [";
    let applied = futures::future::join_all(texts.iter().map(|t| w.gw.apply(t))).await;
    let refused = futures::future::join_all((0..3).map(|_| w.gw.apply(bad))).await;
    assert!(refused.iter().all(Result::is_err));
    let mut versions: Vec<u64> = applied.into_iter().map(Result::unwrap).collect();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (2..10).collect::<Vec<_>>(),
        "one version number each"
    );
    // The last one asked for is the one active: requests are applied in order.
    assert_eq!(w.gw.active().version, 9);
    assert_eq!(get(&w, "/v7", &[]).await.0, 200);
    assert_eq!(get(&w, "/v6", &[]).await.0, 404);
    let status = w.gw.reload_status().borrow().clone();
    assert_eq!(status.attempts, 11);
    assert!(
        status
            .last_error
            .is_some_and(|e| e.contains("invalid config"))
    );
    // Without a file, a reload is refused and changes nothing.
    assert!(matches!(
        w.gw.reload().await,
        Err(gatehouse_gateway::LoadError::NoFile)
    ));
    assert_eq!(w.gw.active().version, 9);
}

#[test]
fn validate_reports_every_problem_with_its_location() {
    let doc = r#"
swagger: "2.0"
host: x
securityDefinitions:
  j:
    type: oauth2
    x-google-issuer: i
    x-google-jwt-locations:
      - query: q
        value_prefix: p
      - header: h
        bogus: 1
      - header: "x token"
paths:
  /a:
    get:
      operationId: a
      security: [{nope: []}]
      x-google-backend: {address: "http://h", path_translation: SIDEWAYS, protocol: grpc}
  /b:
    get:
      operationId: b
      x-google-backend: {address: "http://h", jwt_audience: a, disable_auth: true}
"#;
    let problems = gatehouse_gateway::validate(doc);
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    for want in [
        "securityDefinitions.j.x-google-jwt-locations[0].value_prefix",
        "securityDefinitions.j.x-google-jwt-locations[1].bogus",
        // A name no request can carry would silently never find a token.
        "securityDefinitions.j.x-google-jwt-locations[2].header",
        "paths./a.get.security[0].nope",
        "paths./a.get.x-google-backend.path_translation",
        "paths./a.get.x-google-backend.protocol",
        "paths./b.get.x-google-backend.jwt_audience",
    ] {
        assert!(
            text.iter().any(|t| t.starts_with(want)),
            "missing {want} in {text:#?}"
        );
    }
}
