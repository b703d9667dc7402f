//! One request through an axum router (`oneshot`), as the router tests send them.

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt as _;

/// What a router answered.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body as JSON (`null` when it is empty or not JSON).
    pub json: Value,
}

/// Sends `method uri` with `headers` and `body` through `app`.
pub async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> anyhow::Result<Reply> {
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(body.into())
        .with_context(|| format!("building a request for {uri}"))?;
    let res = app
        .clone()
        .oneshot(req)
        .await
        .context("the router failed")?;
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .context("reading the response body")?;
    Ok(Reply {
        status,
        headers,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    })
}
