//! `hello`: the second seed's backend. Deployed private (only the gateway's service account may
//! invoke it), it answers every request with a greeting and what it learned about the caller:
//! the end user the gateway authenticated (`X-Apigateway-Api-Userinfo`, base64url JSON claims)
//! and the service account that invoked it (the ID token Cloud Run checked, signature removed).
//!
//! Must not: know Gatehouse's internals (it depends on no Gatehouse crate and reads only what
//! the gateway and the Cloud Run contract hand every backend), or check tokens itself (the
//! gateway and the ingress did).

#![forbid(unsafe_code)]

use std::io::Write as _;

use axum::Json;
use axum::Router;
use axum::extract::Request;
use axum::http::HeaderMap;
use base64::Engine as _;
use serde_json::{Value, json};

fn b64_json(text: &str) -> Option<Value> {
    let t = text.trim().trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The claims of the bearer token in `name` (already verified upstream; not re-checked here).
fn bearer_claims(headers: &HeaderMap, name: &str) -> Option<Value> {
    let v = headers.get(name)?.to_str().ok()?;
    let token = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    b64_json(token.split('.').nth(1)?)
}

async fn hello(req: Request) -> Json<Value> {
    let headers = req.headers();
    let user = headers
        .get("x-apigateway-api-userinfo")
        .and_then(|v| v.to_str().ok())
        .and_then(b64_json);
    let invoker = bearer_claims(headers, "x-serverless-authorization")
        .or_else(|| bearer_claims(headers, "authorization"))
        .and_then(|c| c.get("email").cloned());
    let who = user
        .as_ref()
        .and_then(|u| u.get("email").or_else(|| u.get("sub")))
        .and_then(Value::as_str)
        .unwrap_or("world")
        .to_owned();
    let line = json!({
        "severity": "INFO",
        "message": format!("hello {who}"),
        "path": req.uri().path(),
    });
    let _ = writeln!(std::io::stdout().lock(), "{line}");
    Json(json!({
        "message": format!("Hello, {who}!"),
        "path": req.uri().path(),
        "method": req.method().as_str(),
        "user": user,
        "invoker": invoker,
        "revision": std::env::var("K_REVISION").ok(),
    }))
}

/// The routes: every path answers.
pub fn router() -> Router {
    Router::new().fallback(hello)
}

/// The address to listen on: what the runner says in `GATEHOUSE_BIND_ADDR` (its namespace's
/// `0.0.0.0`, or `127.0.0.1` when it has no namespaces to give), else `0.0.0.0` as a Cloud Run
/// container binds. The headers this app trusts are safe only if nobody reaches it around the
/// ingress.
pub fn bind_addr(value: Option<&str>) -> std::net::IpAddr {
    value
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

/// Serves on `GATEHOUSE_BIND_ADDR` (default `0.0.0.0`) port `port` until SIGTERM / Ctrl-C.
pub async fn serve(port: u16) -> std::io::Result<()> {
    let addr = bind_addr(std::env::var("GATEHOUSE_BIND_ADDR").ok().as_deref());
    let listener = tokio::net::TcpListener::bind((addr, port)).await?;
    let line = json!({"severity": "INFO", "message": format!("hello: listening on port {port}")});
    let _ = writeln!(std::io::stdout().lock(), "{line}");
    axum::serve(listener, router())
        .with_graceful_shutdown(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_testkit::FetchJson as _;

    #[test]
    fn binds_where_the_runner_says() {
        assert_eq!(bind_addr(None).to_string(), "0.0.0.0");
        assert_eq!(bind_addr(Some("127.0.0.1")).to_string(), "127.0.0.1");
        assert_eq!(bind_addr(Some("nonsense")).to_string(), "0.0.0.0");
    }

    #[tokio::test]
    async fn shows_the_user_and_the_invoker() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router()).await });
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let user =
            b64(json!({"sub": "u1", "email": "ada@example.com", "profile": "a-user-profile"}));
        let invoker = format!(
            "Bearer {}.{}.SIGNATURE_REMOVED_BY_GOOGLE",
            b64(json!({"alg": "RS256"})),
            b64(json!({"email": "apigw-sa@p.iam.gserviceaccount.com"}))
        );
        let v: Value = reqwest::Client::new()
            .get(format!("{url}/hello"))
            .header("x-apigateway-api-userinfo", user)
            .header("x-serverless-authorization", invoker)
            .fetch_json()
            .await
            .unwrap();
        assert_eq!(v["message"], "Hello, ada@example.com!");
        assert_eq!(v["user"]["profile"], "a-user-profile");
        assert_eq!(v["invoker"], "apigw-sa@p.iam.gserviceaccount.com");
        assert_eq!(v["path"], "/hello");
    }
}
