//! Long-running operations over HTTP: a service starts, updates and finishes operations; clients
//! get, list, wait for, cancel and delete them; they survive a restart of the store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use gatehouse_google_api::lro::{self, Operations, OperationsHost};
use gatehouse_google_api::{Api, ApiError, Call, Code};
use gatehouse_store::Store;
use gatehouse_testkit::{TempDir, temp_dir};
use serde_json::{Value, json};

/// A host whose callers are allowed what their `x-allow` header lists.
#[derive(Clone)]
struct Host(Operations);

impl OperationsHost for Host {
    fn operations(&self) -> &Operations {
        &self.0
    }

    async fn authorize(
        &self,
        call: &Call,
        permission: &str,
        project: &str,
    ) -> Result<(), ApiError> {
        let allowed = call
            .headers
            .get("x-allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if allowed
            .split(',')
            .any(|a| a == format!("{project}:{permission}"))
        {
            Ok(())
        } else {
            Err(ApiError::new(
                Code::PermissionDenied,
                format!("Permission '{permission}' denied"),
            ))
        }
    }

    fn permission_family(&self) -> &str {
        "example.operations"
    }
}

async fn store(dir: &TempDir) -> Store {
    Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("ops.db").display()
    ))
    .await
    .unwrap()
}

fn router(ops: &Operations) -> Router {
    let api = lro::mount(Api::new(), "v2");
    assert!(api.check().is_ok());
    api.into_router(Host(ops.clone()))
}

const ALL: &str = "projects/p:example.operations.get,projects/p:example.operations.list,\
                   projects/p:example.operations.cancel,projects/p:example.operations.delete";

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    allow: &str,
    body: &str,
) -> (StatusCode, Value) {
    let r = gatehouse_testkit::send(app, method, uri, &[("x-allow", allow)], body.to_owned())
        .await
        .unwrap();
    (r.status, r.json)
}

#[tokio::test]
async fn lifecycle_over_http_and_across_a_restart() {
    let dir = temp_dir("lro").unwrap();
    let ops = Operations::new(store(&dir).await);
    let app = router(&ops);
    let parent = "projects/p/locations/us-central1";
    let op = ops.start(parent, json!({"step": "create"})).await.unwrap();
    assert!(op.name.starts_with(&format!("{parent}/operations/")));
    let uri = format!("/v2/{}", op.name);

    let (s, v) = send(&app, Method::GET, &uri, ALL, "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!({"name": op.name, "metadata": {"step": "create"}}));

    assert!(
        ops.set_metadata(&op.name, &json!({"step": "deploy"}))
            .await
            .unwrap()
    );
    assert!(
        ops.finish(&op.name, Ok(json!({"name": "projects/p/things/t"})))
            .await
            .unwrap()
    );
    // A second outcome is ignored.
    assert!(
        !ops.finish(&op.name, Err(ApiError::new(Code::Internal, "late")))
            .await
            .unwrap()
    );
    let (_, v) = send(&app, Method::GET, &uri, ALL, "").await;
    assert_eq!(
        v,
        json!({"name": op.name, "metadata": {"step": "deploy"}, "done": true,
               "response": {"name": "projects/p/things/t"}})
    );

    // A failing operation carries a google.rpc.Status with the numeric code.
    let bad = ops.start(parent, json!({})).await.unwrap();
    ops.finish(&bad.name, Err(ApiError::invalid_argument("no such image")))
        .await
        .unwrap();

    // The store is reopened: everything is still there.
    drop(app);
    let ops = Operations::new(store(&dir).await);
    let app = router(&ops);
    let (s, v) = send(
        &app,
        Method::GET,
        &format!("/v2/{parent}/operations"),
        ALL,
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let listed = v["operations"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed[1]["error"],
        json!({"code": 3, "message": "no such image"})
    );

    let (s, _) = send(&app, Method::DELETE, &uri, ALL, "").await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = send(&app, Method::GET, &uri, ALL, "").await;
    assert_eq!(
        (s, v["error"]["status"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );
}

#[tokio::test]
async fn wait_returns_when_done_and_cancel_ends_with_cancelled() {
    let dir = temp_dir("lro-wait").unwrap();
    let ops = Operations::new(store(&dir).await);
    let app = router(&ops);
    let op = ops
        .start("projects/p/locations/l", json!({}))
        .await
        .unwrap();
    let uri = format!("/v2/{}", op.name);

    // A zero timeout answers at once with the running operation.
    let (s, v) = send(
        &app,
        Method::POST,
        &format!("{uri}:wait"),
        ALL,
        r#"{"timeout":"0s"}"#,
    )
    .await;
    assert_eq!((s, v.get("done")), (StatusCode::OK, None));

    // A waiter sees the outcome whenever it lands (before or after it started waiting).
    let waiter = {
        let app = app.clone();
        let uri = format!("{uri}:wait");
        tokio::spawn(
            async move { send(&app, Method::POST, &uri, ALL, r#"{"timeout":"30s"}"#).await },
        )
    };
    ops.finish(&op.name, Ok(json!({"ok": true}))).await.unwrap();
    let (s, v) = waiter.await.unwrap();
    assert_eq!((s, &v["response"]), (StatusCode::OK, &json!({"ok": true})));

    let running = ops
        .start("projects/p/locations/l", json!({}))
        .await
        .unwrap();
    let (s, _) = send(
        &app,
        Method::POST,
        &format!("/v2/{}:cancel", running.name),
        ALL,
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let got = ops.get(&running.name).await.unwrap().to_json();
    assert_eq!(got["error"]["code"], 1);
    // The service's late result does not overwrite the cancellation.
    assert!(!ops.finish(&running.name, Ok(json!({}))).await.unwrap());

    let (s, _) = send(
        &app,
        Method::POST,
        &format!("{uri}:wait"),
        ALL,
        r#"{"timeout":"soon"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        lro::duration(&json!("1.5s")).unwrap(),
        Duration::from_millis(1500)
    );
}

#[tokio::test]
async fn operations_need_permission_on_their_project() {
    let dir = temp_dir("lro-authz").unwrap();
    let ops = Operations::new(store(&dir).await);
    let app = router(&ops);
    let op = ops
        .start("projects/p/locations/l", json!({}))
        .await
        .unwrap();
    let uri = format!("/v2/{}", op.name);
    // Rights on another project, or another verb, are not enough.
    for allow in [
        "",
        "projects/q:example.operations.get",
        "projects/p:example.operations.list",
    ] {
        let (s, _) = send(&app, Method::GET, &uri, allow, "").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{allow}");
    }
    let (s, _) = send(
        &app,
        Method::DELETE,
        &uri,
        "projects/p:example.operations.get",
        "",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(ops.get(&op.name).await.is_ok());
    // An operation name smuggled through an encoded separator never matches.
    let (s, _) = send(
        &app,
        Method::GET,
        "/v2/projects/p/locations/l/operations/a%2F..%2Fb",
        ALL,
        "",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A page token of project p does not open project q's list.
    for _ in 0..3 {
        ops.start("projects/p/locations/l", json!({}))
            .await
            .unwrap();
    }
    let (_, v) = send(
        &app,
        Method::GET,
        "/v2/projects/p/locations/l/operations?pageSize=1",
        ALL,
        "",
    )
    .await;
    let token = v["nextPageToken"].as_str().unwrap().to_owned();
    let q_all = ALL.replace("projects/p", "projects/q");
    let (s, _) = send(
        &app,
        Method::GET,
        &format!("/v2/projects/q/locations/l/operations?pageToken={token}"),
        &q_all,
        "",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}
