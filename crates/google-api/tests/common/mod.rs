//! One request through a router, as the tests send them (the testkit's `oneshot` call, with
//! the status and JSON body the assertions look at).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::Value;

/// Sends `method uri` with `headers` and `body`; the status and the JSON body (`null` if none).
pub async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let reply = gatehouse_testkit::send(app, method, uri, headers, body)
        .await
        .unwrap();
    (reply.status, reply.json)
}
