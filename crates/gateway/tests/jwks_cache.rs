//! The gateway's JWKS cache under an issuer outage, a hanging issuer, key removal and forged
//! `kid`s (issue #16, scenario 3): a real gateway on 127.0.0.1 and a real JWKS server whose keys
//! and health the test changes. Times are compressed with the gateway's own options (the cache
//! duration and staleness bound an operator sets with `--jwks-cache-duration-secs` and
//! `--jwks-max-stale-secs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use common::{Health, Issuer, copy_key, now, token};
use gatehouse_gateway::{CacheOptions, Gateway, GatewayOptions};
use gatehouse_tokens::SigningKey;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const ISS: &str = "https://issuer.example";

struct World {
    url: String,
    issuer: Issuer,
    key: SigningKey,
    http: reqwest::Client,
    _gw: Arc<Gateway>,
}

/// A gateway whose one route needs a token of `ISS`, with JWKS cache duration `ttl` and
/// staleness bound `max_stale`.
async fn world(ttl: Duration, max_stale: Duration) -> World {
    let key = SigningKey::generate().unwrap();
    let (issuer, jwks_url) = Issuer::start(&key).await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = l.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(l, Router::new().fallback(|| async { "ok" }))
            .await
            .unwrap()
    });
    let config = format!(
        r#"
swagger: "2.0"
info: {{title: t, version: 1.0.0}}
host: api.example
x-google-backend:
  address: http://{backend}
securityDefinitions:
  jwt:
    type: oauth2
    flow: implicit
    authorizationUrl: ""
    x-google-issuer: "{ISS}"
    x-google-jwks_uri: "{jwks_url}"
    x-google-audiences: "aud-1"
security:
  - jwt: []
paths:
  /x:
    get:
      operationId: x
"#
    );
    let options = GatewayOptions {
        threads: Some(2),
        jwks: CacheOptions {
            max_ttl: ttl,
            max_stale,
            ..CacheOptions::default()
        },
        ..GatewayOptions::default()
    };
    let gw = Gateway::new(&config, None, options, None).await.unwrap();
    let addr = common::serve(&gw).await;
    World {
        url: format!("http://{addr}/x"),
        issuer,
        key,
        http: reqwest::Client::new(),
        _gw: gw,
    }
}

static SERIAL: AtomicUsize = AtomicUsize::new(0);

/// A new valid token of `key` (never seen before: it is not in the verified-token cache).
fn fresh(key: &SigningKey) -> String {
    token(
        key,
        json!({"iss": ISS, "aud": "aud-1", "exp": now() + 600, "n": SERIAL.fetch_add(1, Ordering::SeqCst)}),
    )
}

async fn call(w: &World, token: &str) -> (u16, String) {
    let res = w
        .http
        .get(&w.url)
        .bearer_auth(token)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    (
        status,
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_outage_is_bridged_by_the_cached_keys_up_to_the_staleness_bound() {
    let ttl = Duration::from_secs(1);
    let max_stale = Duration::from_secs(4);
    let w = world(ttl, max_stale).await;
    assert_eq!(call(&w, &fresh(&w.key)).await.0, 200);
    let fetched = Instant::now();
    w.issuer.set(Health::Down);
    // Past the TTL, up to the bound: every valid token verifies (new ones, not cached).
    let mut verified = 0;
    while fetched.elapsed() < ttl + max_stale - Duration::from_millis(700) {
        let (st, msg) = call(&w, &fresh(&w.key)).await;
        assert_eq!(st, 200, "{msg} at {:?}", fetched.elapsed());
        verified += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(verified > 20);
    // Fetches during the outage back off (1 s doubling): not one per request.
    assert!(w.issuer.hits() <= 6, "{} JWKS fetches", w.issuer.hits());
    // Past the bound the keys are not used any more, not even for a token verified before.
    let before = fresh(&w.key);
    assert_eq!(call(&w, &before).await.0, 200);
    tokio::time::sleep(
        (ttl + max_stale + Duration::from_millis(300)).saturating_sub(fetched.elapsed()),
    )
    .await;
    assert_eq!(
        call(&w, &fresh(&w.key)).await,
        (401, "Jwks remote fetch is failed".into())
    );
    assert_eq!(
        call(&w, &before).await,
        (401, "Jwks remote fetch is failed".into())
    );
    // The issuer is back: tokens verify again once a retry (at most 10 s apart) succeeds.
    w.issuer.set(Health::Up);
    let back = Instant::now();
    loop {
        let (st, _) = call(&w, &fresh(&w.key)).await;
        if st == 200 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(12), "not back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Found by the long-form run: an issuer that comes back signs with a key made while it was
/// down; its tokens must verify at once, not after the next background retry (up to 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_made_during_an_outage_verifies_as_soon_as_the_issuer_is_back() {
    let w = world(Duration::from_secs(1), Duration::from_secs(600)).await;
    assert_eq!(call(&w, &fresh(&w.key)).await.0, 200);
    w.issuer.set(Health::Down);
    // 4 s of traffic: failed retries back off (next retry about 8 s after the outage began).
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(4) {
        assert_eq!(call(&w, &fresh(&w.key)).await.0, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let next = SigningKey::generate().unwrap();
    w.issuer.keys.lock().unwrap().push(copy_key(&next));
    w.issuer.set(Health::Up);
    let (st, msg) = call(&w, &fresh(&next)).await;
    assert_eq!(st, 200, "{msg}");
    assert_eq!(call(&w, &fresh(&w.key)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_issuer_does_not_hold_requests() {
    let w = world(Duration::from_secs(1), Duration::from_secs(600)).await;
    assert_eq!(call(&w, &fresh(&w.key)).await.0, 200);
    w.issuer.set(Health::Hang);
    // 30 requests at a time for 8 s (the fetch timeout is 5 s): every one verified, none held
    // longer than one fetch timeout.
    let stop = Instant::now() + Duration::from_secs(8);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let http = w.http.clone();
        let url = w.url.clone();
        let key = copy_key(&w.key);
        tasks.spawn(async move {
            let mut n = 0;
            let mut slowest = Duration::ZERO;
            while Instant::now() < stop {
                let t = Instant::now();
                let res = http
                    .get(&url)
                    .bearer_auth(fresh(&key))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status().as_u16(), 200);
                slowest = slowest.max(t.elapsed());
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (n, slowest)
        });
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        let (n, slowest) = r.unwrap();
        total += n;
        assert!(slowest < Duration::from_millis(5_500), "held {slowest:?}");
    }
    assert!(total > 300, "{total}");
    // One fetch at a time, backing off: a handful of attempts, not one per request.
    assert!(w.issuer.hits() <= 4, "{} JWKS fetches", w.issuer.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_from_the_jwks_stops_verifying_within_the_cache_duration() {
    let ttl = Duration::from_secs(2);
    let w = world(ttl, Duration::from_secs(600)).await;
    let next = SigningKey::generate().unwrap();
    w.issuer.keys.lock().unwrap().push(copy_key(&next));
    // A token verified (and cached) before the removal.
    let old = fresh(&w.key);
    assert_eq!(call(&w, &old).await.0, 200);
    assert_eq!(call(&w, &fresh(&next)).await.0, 200);
    w.issuer
        .keys
        .lock()
        .unwrap()
        .retain(|k| k.kid() != w.key.kid());
    let removed = Instant::now();
    let mut refused_at = None;
    while removed.elapsed() < ttl * 2 {
        let (st, _) = call(&w, &old).await;
        match (st, refused_at) {
            (200, None) => {}
            (401, None) => refused_at = Some(removed.elapsed()),
            (401, Some(_)) => {}
            other => panic!("{other:?} at {:?}", removed.elapsed()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused_at = refused_at.expect("the removed key still verifies");
    assert!(
        refused_at <= ttl + Duration::from_millis(300),
        "{refused_at:?}"
    );
    assert_eq!(
        call(&w, &old).await,
        (
            401,
            "Jwks doesn't have key to match kid or alg from Jwt".into()
        )
    );
    assert_eq!(
        call(&w, &fresh(&w.key)).await,
        (
            401,
            "Jwks doesn't have key to match kid or alg from Jwt".into()
        )
    );
    // The key that stays keeps verifying, cached or not.
    assert_eq!(call(&w, &fresh(&next)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_kids_cannot_force_jwks_fetches_and_a_rotated_key_still_verifies() {
    let w = world(Duration::from_secs(300), Duration::from_secs(600)).await;
    assert_eq!(call(&w, &fresh(&w.key)).await.0, 200);
    let base = w.issuer.hits();
    // The attacker: tokens with the right issuer and audience, signed by its own key under a
    // new random kid each time, 40 at a time for 3 s.
    let own = Arc::new(SigningKey::generate().unwrap());
    let started = Instant::now();
    let stop = started + Duration::from_secs(3);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let http = w.http.clone();
        let url = w.url.clone();
        let own = own.clone();
        tasks.spawn(async move {
            let mut n = 0;
            while Instant::now() < stop {
                let forged = SigningKey::from_pkcs8(
                    format!("forged-{}", SERIAL.fetch_add(1, Ordering::SeqCst)),
                    own.pkcs8_der(),
                )
                .unwrap();
                let res = http
                    .get(&url)
                    .bearer_auth(fresh(&forged))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status().as_u16(), 401);
                n += 1;
            }
            n
        });
    }
    // Mid-attack the issuer rotates: a token of the new key verifies at once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let next = SigningKey::generate().unwrap();
    w.issuer.keys.lock().unwrap().push(copy_key(&next));
    let (st, msg) = call(&w, &fresh(&next)).await;
    assert_eq!(st, 200, "{msg}");
    let mut forged = 0;
    while let Some(n) = tasks.join_next().await {
        forged += n.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let fetches = w.issuer.hits() - base;
    assert!(forged >= 80, "{forged}");
    // At most one refetch a second (plus the one in progress when the attack ends).
    assert!(
        (fetches as f64) <= secs.ceil() + 1.0,
        "{fetches} JWKS fetches for {forged} forged tokens in {secs:.1} s"
    );
}
