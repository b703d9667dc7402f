//! The attack corpus (`tests/adversarial/`) against an in-process gateway in front of a
//! recording backend: every HTTP case gets the safe answer on the client side and the backend
//! never sees the smuggled request; every JWT case is refused and never reaches the backend.
//! This runner holds the gateway's trusted signing key, so it also runs the cases that need it
//! (wrong issuer/audience, dates, `crit`, oversize); crates/gatehouse/tests/adversarial.rs runs
//! the rest against the whole `gatehouse up` stack.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{RawBackend, jwks_server, now, token};
use gatehouse_testkit::adversarial::{self, CANARY_PATH, Expect, Material};
use gatehouse_tokens::SigningKey;
use serde_json::json;

const ISS: &str = "https://issuer.adversarial.example";
const AUD: &str = "adversarial-aud";

async fn gateway(backend: &str, jwks: &str) -> String {
    let config = format!(
        r#"swagger: "2.0"
info: {{title: t, version: 1.0.0}}
host: api.example
x-google-backend:
  address: {backend}
securityDefinitions:
  fb:
    type: oauth2
    flow: implicit
    authorizationUrl: ""
    x-google-issuer: "{ISS}"
    x-google-jwks_uri: "{jwks}"
    x-google-audiences: "{AUD}"
paths:
  /open:
    get: {{operationId: g}}
    post: {{operationId: p}}
    head: {{operationId: h}}
  /secure:
    get:
      operationId: s
      security: [{{fb: []}}]
"#
    );
    common::serve_config(&config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_corpus_gets_the_safe_answer_and_nothing_is_smuggled() {
    let (backend_url, backend) = RawBackend::start().await;
    let key = SigningKey::generate().unwrap();
    let gw = gateway(&backend_url, &jwks_server(&[&key]).await).await;
    let cases = adversarial::http_cases().unwrap();
    let mut failures = Vec::new();
    let mut jobs = Vec::new();
    for case in cases {
        let gw = gw.clone();
        jobs.push(tokio::spawn(async move {
            let raw = case.render("api.example", "/open").unwrap();
            let expect = case.expect_on("gateway");
            let enough = if expect == Expect::Two { 2 } else { 1 };
            let answers = adversarial::send_raw(&gw, &raw, case.head, enough)
                .await
                .unwrap();
            (case.name, answers.check(expect))
        }));
    }
    let total = jobs.len();
    for j in jobs {
        let (name, result) = j.await.unwrap();
        if let Err(e) = result {
            failures.push(format!("{name}: {e}"));
        }
    }
    let canary: Vec<_> = backend
        .seen()
        .into_iter()
        .filter(|s| s.path.contains(CANARY_PATH) || s.path.contains("canary"))
        .collect();
    assert!(canary.is_empty(), "smuggled to the backend: {canary:#?}");
    assert!(
        failures.is_empty(),
        "{} of {total}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn jwt_corpus_is_refused_and_never_reaches_the_backend() {
    let (backend_url, backend) = RawBackend::start().await;
    let key = SigningKey::generate().unwrap();
    let attacker = SigningKey::generate().unwrap();
    let attacker_jwks = jwks_server(&[&attacker]).await;
    let gw = gateway(&backend_url, &jwks_server(&[&key]).await).await;
    let http = reqwest::Client::new();
    let call = |t: String| {
        let http = http.clone();
        let url = format!("http://{gw}/secure");
        async move {
            http.get(url)
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let base = token(
        &key,
        json!({"iss": ISS, "aud": AUD, "sub": "user-1", "iat": now(), "exp": now() + 3600}),
    );
    // Control: the base token passes, so every refusal below is the mutation's doing.
    assert_eq!(call(base.clone()).await, 200);
    let before = backend.seen().len();
    let jwk = key.public().jwk();
    let material = Material {
        base: &base,
        trusted_public_jwk: &jwk,
        trusted: Some(&key),
        attacker: &attacker,
        attacker_jwks_url: &attacker_jwks,
        attacker_x5u_url: &attacker_jwks,
    };
    let mut failures = Vec::new();
    let cases = adversarial::jwt_cases().unwrap();
    for case in &cases {
        let t = case.build(&material).unwrap();
        let status = call(t).await;
        if !(400..500).contains(&status) {
            failures.push(format!("{}: {status}", case.name));
        }
    }
    assert!(failures.is_empty(), "accepted:\n{}", failures.join("\n"));
    assert_eq!(backend.seen().len(), before, "{:#?}", backend.seen());
}
