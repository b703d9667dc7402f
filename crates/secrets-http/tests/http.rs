//! Secret Manager over HTTP (`oneshot` on the real router, a real SQLite store): the wire
//! answers the google-cloud-secret-manager client relies on, and the requests an attacker
//! would send.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use serde_json::Value;

struct World {
    app: Router,
    token: String,
    _kit: gatehouse_world::World,
}

async fn world() -> World {
    let (kit, _, token) =
        gatehouse_world::World::with_admin("sec-proj", "sm-admin", "roles/secretmanager.admin")
            .await
            .unwrap();
    World {
        app: gatehouse_secrets_http::router(kit.secrets.clone()),
        token,
        _kit: kit,
    }
}

impl World {
    async fn send(
        &self,
        method: Method,
        uri: &str,
        body: impl Into<Body>,
        auth: bool,
    ) -> (StatusCode, Option<String>, Value) {
        let bearer = format!("Bearer {}", self.token);
        let headers = [(header::AUTHORIZATION.as_str(), bearer.as_str())];
        let headers = if auth { &headers[..] } else { &[] };
        let r = gatehouse_testkit::send(&self.app, method, uri, headers, body)
            .await
            .unwrap();
        let challenge = r
            .headers
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned());
        (r.status, challenge, r.json)
    }

    async fn create(&self, id: &str) {
        let (s, _, v) = self
            .send(
                Method::POST,
                &format!("/v1/projects/sec-proj/secrets?secretId={id}"),
                r#"{"replication":{"automatic":{}}}"#,
                true,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
}

#[tokio::test]
async fn the_wire_of_the_happy_path() {
    let w = world().await;
    w.create("db-password").await;
    let (s, _, v) = w
        .send(
            Method::POST,
            "/v1/projects/sec-proj/secrets/db-password:addVersion",
            r#"{"payload":{"data":"aHVudGVyMg=="}}"#,
            true,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _, v) = w
        .send(
            Method::GET,
            "/v1/projects/sec-proj/secrets/db-password/versions/latest:access",
            "",
            true,
        )
        .await;
    assert_eq!(
        (s, v["payload"]["data"].as_str()),
        (StatusCode::OK, Some("aHVudGVyMg=="))
    );
    let (s, _, v) = w
        .send(
            Method::GET,
            "/v1/projects/sec-proj/secrets/db-password:getIamPolicy",
            "",
            true,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn anonymous_and_unknown_requests() {
    let w = world().await;
    let (s, challenge, v) = w
        .send(Method::GET, "/v1/projects/sec-proj/secrets", "", false)
        .await;
    assert_eq!(
        (s, v["error"]["status"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED"))
    );
    assert!(challenge.unwrap().starts_with("Bearer"));
    // Credentials are checked before the path: an anonymous probe learns nothing about routes.
    let (s, _, _) = w
        .send(
            Method::GET,
            "/v1/projects/sec-proj/secrets/x:nope",
            "",
            false,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, v) = w
        .send(
            Method::GET,
            "/v1/projects/sec-proj/secrets/x:nope",
            "",
            true,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        v["error"]["message"],
        "The requested URL /v1/projects/sec-proj/secrets/x:nope was not found on this server."
    );
    let (s, _, _) = w
        .send(Method::PUT, "/v1/projects/sec-proj/secrets/x", "{}", true)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn attacker_requests_get_safe_answers() {
    let w = world().await;
    w.create("a").await;
    // Encoded separators and dot segments do not reach the domain as part of a name.
    for uri in [
        "/v1/projects/sec-proj/secrets/a%2Fversions%2F1:access",
        "/v1/projects/sec-proj/secrets/..",
        "/v1/projects/sec-proj%2Fsecrets%2Fa/secrets/a",
    ] {
        let (s, _, _) = w.send(Method::GET, uri, "", true).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}");
    }
    // Oversized and ambiguous bodies are refused before anything is stored.
    let huge = format!(
        "{{\"payload\":{{\"data\":\"{}\"}}}}",
        "A".repeat(1024 * 1024)
    );
    let (s, _, _) = w
        .send(
            Method::POST,
            "/v1/projects/sec-proj/secrets/a:addVersion",
            huge,
            true,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let dup = r#"{"payload":{"data":"eA=="},"payload":{"data":"eQ=="}}"#;
    let (s, _, v) = w
        .send(
            Method::POST,
            "/v1/projects/sec-proj/secrets/a:addVersion",
            dup,
            true,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid JSON payload received.")
    );
    let (_, _, v) = w
        .send(
            Method::GET,
            "/v1/projects/sec-proj/secrets/a/versions",
            "",
            true,
        )
        .await;
    assert_eq!(v["totalSize"], 0, "{v}");
    // A page token is bound to its list: the secrets list's token does not page versions.
    w.create("b").await;
    let (_, _, v) = w
        .send(
            Method::GET,
            "/v1/projects/sec-proj/secrets?pageSize=1",
            "",
            true,
        )
        .await;
    let token = v["nextPageToken"].as_str().unwrap().to_owned();
    let first = v["secrets"][0]["name"].as_str().unwrap().to_owned();
    let (s, _, v) = w
        .send(
            Method::GET,
            &format!("/v1/projects/sec-proj/secrets?pageSize=1&pageToken={token}"),
            "",
            true,
        )
        .await;
    let second = v["secrets"][0]["name"].as_str().unwrap_or_default();
    assert_eq!(s, StatusCode::OK);
    assert!(second.ends_with("/secrets/a") || second.ends_with("/secrets/b"));
    assert_ne!(second, first);
    assert!(v.get("nextPageToken").is_none());
    let (s, _, v) = w
        .send(
            Method::GET,
            &format!("/v1/projects/sec-proj/secrets/a/versions?pageToken={token}"),
            "",
            true,
        )
        .await;
    assert_eq!(
        (s, v["error"]["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Invalid page token."))
    );
}
