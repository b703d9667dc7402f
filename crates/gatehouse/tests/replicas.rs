//! Two identity replicas and two gateways against one PostgreSQL behave as one: a user who
//! signed in through one replica refreshes through the other; tokens from either pass both
//! gateways (each fetching the keys from a different replica); a revocation through one
//! replica is honoured by the other.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use gatehouse_testkit::{PgCluster, Spawned, temp_dir};
use serde_json::{Value, json};

fn gatehouse(args: &[String]) -> Spawned {
    Spawned::start(Path::new(env!("CARGO_BIN_EXE_gatehouse")), args).expect("gatehouse starts")
}

/// Replicas on one database share its master key.
fn identity(url: &str, dir: &Path, master_key: &Path) -> Spawned {
    common::identity("rep-proj", dir, Some((url, master_key)))
}

fn post(url: &str, body: Value, bearer: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::blocking::Client::new().post(url).json(&body);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let res = req.send().unwrap();
    (res.status().as_u16(), res.json().unwrap_or(Value::Null))
}

fn refresh(identity: &str, token: &str) -> (u16, Value) {
    let res = reqwest::blocking::Client::new()
        .post(format!(
            "{identity}/securetoken.googleapis.com/v1/token?key=k"
        ))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
        .send()
        .unwrap();
    (res.status().as_u16(), res.json().unwrap_or(Value::Null))
}

#[test]
fn identity_and_gateway_replicas_on_one_postgres() {
    let pg = PgCluster::start().expect("ephemeral PostgreSQL");
    let url = pg.create_database("replicas").unwrap();
    let dir = temp_dir("replicas").unwrap();
    let master_key = common::master_key(dir.path());
    let a = identity(&url, &dir.path().join("a"), &master_key);
    let b = identity(&url, &dir.path().join("b"), &master_key);
    let (a, b) = (a.url(), b.url());

    // A backend for the gateways.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, gatehouse_hello::router()).await });
        format!("http://{addr}")
    });
    let gateway = |jwks_from: &str, name: &str| {
        let config = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "swagger: '2.0'\ninfo: {{title: t, version: '1'}}\nsecurityDefinitions:\n  firebase:\n    authorizationUrl: ''\n    flow: implicit\n    type: oauth2\n    x-google-issuer: https://securetoken.google.com/rep-proj\n    x-google-jwks_uri: {jwks_from}/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com\n    x-google-audiences: rep-proj\npaths:\n  /hello:\n    get:\n      operationId: hello\n      security: [{{firebase: []}}]\n      responses: {{'200': {{description: ok}}}}\n      x-google-backend: {{address: '{backend}'}}\n"
            ),
        )
        .unwrap();
        gatehouse(&[
            "gateway".into(),
            "--config".into(),
            config.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ])
    };
    let g1 = gateway(&a, "g1");
    let g2 = gateway(&b, "g2");
    let http = reqwest::blocking::Client::new();
    let through = |g: &Spawned, token: &str| {
        http.get(format!("{}/hello", g.url()))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };

    // Signed up through A, refreshed through B.
    let (status, up) = post(
        &format!("{a}/identitytoolkit.googleapis.com/v1/accounts:signUp?key=k"),
        json!({"email": "rep@example.com", "password": "correct-horse-1", "returnSecureToken": true}),
        None,
    );
    assert_eq!(status, 200, "{up}");
    let (status, refreshed) = refresh(&b, up["refreshToken"].as_str().unwrap());
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(refreshed["user_id"], up["localId"]);
    let from_b = refreshed["id_token"].as_str().unwrap().to_owned();
    let from_a = up["idToken"].as_str().unwrap().to_owned();
    for token in [&from_a, &from_b] {
        assert_eq!(through(&g1, token), 200);
        assert_eq!(through(&g2, token), 200);
    }
    // B verifies A's token (lookup), and the other way round.
    let (status, _) = post(
        &format!("{b}/identitytoolkit.googleapis.com/v1/accounts:lookup?key=k"),
        json!({"idToken": from_a}),
        None,
    );
    assert_eq!(status, 200);

    // Revoked through A (the Admin SDK's revokeRefreshTokens: validSince = now) …
    // validSince has second resolution and the replicas are separate processes on the system
    // clock (no clock to inject): the token must be from an earlier second than the revocation.
    std::thread::sleep(Duration::from_millis(1100));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (status, body) = post(
        &format!("{a}/identitytoolkit.googleapis.com/v1/projects/rep-proj/accounts:update"),
        json!({"localId": up["localId"], "validSince": now.to_string()}),
        Some("owner"),
    );
    assert_eq!(status, 200, "{body}");
    // … is honoured by B: the refresh token and the ID tokens are refused.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = refresh(&b, up["refreshToken"].as_str().unwrap());
        let (lookup, _) = post(
            &format!("{b}/identitytoolkit.googleapis.com/v1/accounts:lookup?key=k"),
            json!({"idToken": from_b}),
            None,
        );
        if status == 400 && lookup == 400 {
            let why = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                why == "TOKEN_EXPIRED" || why == "INVALID_REFRESH_TOKEN",
                "{body}"
            );
            break;
        }
        assert!(
            Instant::now() < until,
            "replica B still accepts revoked tokens ({status}, {lookup})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(rt);
}
