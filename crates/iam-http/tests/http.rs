//! The IAM API over HTTP (`oneshot` on the real router, a real SQLite store): routing of
//! `/v1` and `/v3`, `:verb` methods, Google's errors, and the requests an attacker would send.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

struct World {
    app: Router,
    token: String,
    email: String,
    _kit: gatehouse_world::World,
}

async fn world() -> World {
    let (kit, admin, token) =
        gatehouse_world::World::with_admin("iam-proj", "iam-admin", "roles/owner")
            .await
            .unwrap();
    World {
        app: gatehouse_iam_http::router(kit.iam.clone()),
        token,
        email: admin.email,
        _kit: kit,
    }
}

impl World {
    async fn send(
        &self,
        method: Method,
        uri: &str,
        auth: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let bearer = auth.map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| (header::AUTHORIZATION.as_str(), b))
            .into_iter()
            .collect();
        let r = gatehouse_testkit::send(&self.app, method, uri, &headers, body.to_owned())
            .await
            .unwrap();
        (r.status, r.json)
    }
}

#[tokio::test]
async fn accounts_keys_and_policies_on_v1_and_v3() {
    let w = world().await;
    let t = Some(w.token.as_str());
    let (s, v) = w
        .send(Method::GET, "/v1/projects/iam-proj/serviceAccounts", t, "")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["accounts"][0]["email"], w.email);
    let encoded = w.email.replace('@', "%40");
    let (s, v) = w
        .send(
            Method::GET,
            &format!("/v1/projects/-/serviceAccounts/{encoded}"),
            t,
            "",
        )
        .await;
    assert_eq!(
        (s, v["email"].as_str()),
        (StatusCode::OK, Some(w.email.as_str()))
    );
    let (s, v) = w
        .send(
            Method::GET,
            &format!("/v1/projects/-/serviceAccounts/{}/keys", w.email),
            t,
            "",
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = w
        .send(Method::POST, "/v3/projects/iam-proj:getIamPolicy", t, "{}")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["bindings"][0]["role"], "roles/owner");
    let (s, v) = w
        .send(
            Method::POST,
            "/v1/projects/iam-proj:testIamPermissions",
            t,
            r#"{"permissions":["iam.serviceAccounts.list","x.y.z"]}"#,
        )
        .await;
    assert_eq!(
        (s, v["permissions"].clone()),
        (StatusCode::OK, json!(["iam.serviceAccounts.list"]))
    );
    let (s, v) = w.send(Method::GET, "/oauth2/v3/certs", None, "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["keys"].is_array());
}

#[tokio::test]
async fn unknown_paths_anonymous_callers_and_bad_tokens() {
    let w = world().await;
    let t = Some(w.token.as_str());
    let (s, v) = w
        .send(
            Method::GET,
            "/v1/projects/iam-proj/serviceAccounts",
            None,
            "",
        )
        .await;
    assert_eq!(
        (s, v["error"]["status"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED"))
    );
    let (s, _) = w
        .send(
            Method::GET,
            "/v1/projects/iam-proj/serviceAccounts",
            Some("forged"),
            "",
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // An unknown path is 404 for anonymous callers, 401 for a bad token; /v3 names /v1.
    let (s, v) = w
        .send(Method::GET, "/v3/projects/iam-proj/nothing", None, "")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        v["error"]["message"],
        "The requested URL /v1/projects/iam-proj/nothing was not found on this server."
    );
    let (s, _) = w
        .send(
            Method::GET,
            "/v1/projects/iam-proj/nothing",
            Some("forged"),
            "",
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = w
        .send(Method::GET, "/v1/projects/iam-proj:getIamPolicy", t, "")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = w
        .send(Method::POST, "/token", None, "grant_type=nope")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = w.send(Method::GET, "/token", None, "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn attacker_requests_get_safe_answers() {
    let w = world().await;
    let t = Some(w.token.as_str());
    // An encoded separator cannot turn one account's path into another resource's.
    for uri in [
        format!("/v1/projects/-/serviceAccounts/{}%2Fkeys", w.email),
        "/v1/projects/-/serviceAccounts/..:getIamPolicy".to_owned(),
        format!("/robot/v1/metadata/x509/{}%2F..", w.email),
    ] {
        let (s, _) = w.send(Method::GET, &uri, t, "").await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}");
    }
    // Ambiguous or oversized policies are refused; the policy is unchanged.
    let dup = r#"{"policy":{"bindings":[]},"policy":{"bindings":[]}}"#;
    let (s, _) = w
        .send(Method::POST, "/v1/projects/iam-proj:setIamPolicy", t, dup)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let huge = format!(
        r#"{{"policy":{{"bindings":[]}},"pad":"{}"}}"#,
        "x".repeat(1024 * 1024)
    );
    let (s, _) = w
        .send(Method::POST, "/v1/projects/iam-proj:setIamPolicy", t, &huge)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, v) = w
        .send(Method::POST, "/v1/projects/iam-proj:getIamPolicy", t, "")
        .await;
    assert_eq!(v["bindings"][0]["role"], "roles/owner");
}
