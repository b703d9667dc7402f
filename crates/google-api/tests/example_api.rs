//! A small Google-shaped API built on the crate, exercised over HTTP with `oneshot`: routing
//! with custom methods, errors, bodies, paging, masks, etags and `validateOnly`, and the
//! requests an attacker would send.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use gatehouse_google_api::{Api, ApiError, Call, Code, FieldMask, PageRequest, etag};
use serde_json::{Value, json};

type Things = Arc<Mutex<BTreeMap<String, Value>>>;

fn with<T>(things: &Things, f: impl FnOnce(&mut BTreeMap<String, Value>) -> T) -> T {
    let mut guard = things.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut guard)
}

fn stamped(mut v: Value) -> Value {
    v["etag"] = json!(etag::of(&v));
    v
}

async fn list(things: Things, call: Call) -> Result<axum::Json<Value>, ApiError> {
    let parent = call.capture("parent").to_owned();
    let req = PageRequest::parse(call.param("pageSize"), call.param("pageToken"), &parent, 3)?;
    let all: Vec<Value> = with(&things, |t| {
        t.iter()
            .filter(|(k, _)| k.starts_with(&format!("{parent}/")))
            .map(|(_, v)| v.clone())
            .collect()
    });
    let page = req.page(all);
    let mut out = json!({ "things": page.items });
    if let Some(t) = page.next_page_token {
        out["nextPageToken"] = json!(t);
    }
    Ok(axum::Json(out))
}

async fn create(things: Things, call: Call) -> Result<axum::Json<Value>, ApiError> {
    let mut body = call.json()?;
    let id = call.param("thingId").unwrap_or_default();
    if id.is_empty() {
        return Err(ApiError::invalid_argument("thingId is required."));
    }
    let name = format!("{}/things/{id}", call.capture("parent"));
    body["name"] = json!(name);
    let thing = stamped(body);
    if !call.validate_only() {
        with(&things, |t| t.insert(name, thing.clone()));
    }
    Ok(axum::Json(thing))
}

async fn get(things: Things, call: Call) -> Result<axum::Json<Value>, ApiError> {
    let name = call.capture("name");
    with(&things, |t| t.get(name).cloned())
        .map(axum::Json)
        .ok_or_else(|| ApiError::new(Code::NotFound, format!("{name} not found.")))
}

async fn patch(things: Things, call: Call) -> Result<axum::Json<Value>, ApiError> {
    let name = call.capture("name").to_owned();
    let body = call.json()?;
    let mask = FieldMask::parse(call.param("updateMask").unwrap_or_default())?;
    mask.check(&["labels", "color"])?;
    let current = with(&things, |t| t.get(&name).cloned())
        .ok_or_else(|| ApiError::new(Code::NotFound, "not found"))?;
    let current_etag = etag::of(&current);
    etag::check(body.get("etag").and_then(Value::as_str), &current_etag)?;
    let mut next = current;
    mask.apply(&mut next, &body);
    let next = stamped(next);
    with(&things, |t| t.insert(name, next.clone()));
    Ok(axum::Json(next))
}

async fn poke(_: Things, call: Call) -> Result<axum::Json<Value>, ApiError> {
    Ok(axum::Json(json!({"poked": call.capture("name")})))
}

fn app() -> Router {
    let api = Api::new()
        .route(Method::GET, "/v1/{parent=projects/*}/things", list)
        .route(Method::POST, "/v1/{parent=projects/*}/things", create)
        .route(Method::GET, "/v1/{name=projects/*/things/*}", get)
        .route(Method::PATCH, "/v1/{name=projects/*/things/*}", patch)
        .route(Method::POST, "/v1/{name=projects/*/things/*}:poke", poke);
    assert!(api.check().is_ok());
    api.into_router(Things::default())
}

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let r = gatehouse_testkit::send(app, method, uri, &[], body)
        .await
        .unwrap();
    (r.status, r.json)
}

#[tokio::test]
async fn resources_and_custom_methods() {
    let app = app();
    let (s, v) = send(
        &app,
        Method::POST,
        "/v1/projects/p/things?thingId=a",
        r#"{"color":"red"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["name"], "projects/p/things/a");
    let (s, got) = send(&app, Method::GET, "/v1/projects/p/things/a", "").await;
    assert_eq!((s, &got), (StatusCode::OK, &v));
    let (s, v) = send(&app, Method::POST, "/v1/projects/p/things/a:poke", "").await;
    assert_eq!(
        (s, v["poked"].as_str()),
        (StatusCode::OK, Some("projects/p/things/a"))
    );
    // Unknown verb, wrong method, unknown path: Google's 404.
    for (m, uri) in [
        (Method::POST, "/v1/projects/p/things/a:explode"),
        (Method::DELETE, "/v1/projects/p/things/a"),
        (Method::GET, "/v2/anything"),
    ] {
        let (s, v) = send(&app, m, uri, "").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(v["error"]["status"], "NOT_FOUND");
        assert_eq!(
            v["error"]["message"],
            format!(
                "The requested URL {} was not found on this server.",
                uri.split('?').next().unwrap_or_default()
            )
        );
    }
}

#[tokio::test]
async fn validate_only_writes_nothing() {
    let app = app();
    let (s, v) = send(
        &app,
        Method::POST,
        "/v1/projects/p/things?thingId=b&validateOnly=true",
        "{}",
    )
    .await;
    assert_eq!(
        (s, v["name"].as_str()),
        (StatusCode::OK, Some("projects/p/things/b"))
    );
    let (s, _) = send(&app, Method::GET, "/v1/projects/p/things/b", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn paging_walks_the_list_and_refuses_forged_tokens() {
    let app = app();
    for i in 0..7 {
        send(
            &app,
            Method::POST,
            &format!("/v1/projects/p/things?thingId=t{i}"),
            "{}",
        )
        .await;
    }
    send(
        &app,
        Method::POST,
        "/v1/projects/other/things?thingId=x",
        "{}",
    )
    .await;
    let (_, first) = send(&app, Method::GET, "/v1/projects/p/things?pageSize=2", "").await;
    assert_eq!(first["things"].as_array().map(Vec::len), Some(2));
    let token = first["nextPageToken"].as_str().unwrap().to_owned();
    let (_, second) = send(
        &app,
        Method::GET,
        &format!("/v1/projects/p/things?pageSize=10&pageToken={token}"),
        "",
    )
    .await;
    assert_eq!(
        second["things"].as_array().map(Vec::len),
        Some(3),
        "capped at 3 per page"
    );
    assert!(second["nextPageToken"].is_string());
    // The token of projects/p used on projects/other, or tampered with, is refused.
    let (s, v) = send(
        &app,
        Method::GET,
        &format!("/v1/projects/other/things?pageToken={token}"),
        "",
    )
    .await;
    assert_eq!(
        (s, v["error"]["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Invalid page token."))
    );
    let (s, _) = send(
        &app,
        Method::GET,
        "/v1/projects/p/things?pageToken=b2Zmc2V0OjE",
        "",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn masks_and_etags() {
    let app = app();
    let (_, v) = send(
        &app,
        Method::POST,
        "/v1/projects/p/things?thingId=m",
        r#"{"color":"red","size":1}"#,
    )
    .await;
    let tag = v["etag"].as_str().unwrap().to_owned();
    let body = json!({"color": "blue", "size": 99, "etag": tag}).to_string();
    let (s, v) = send(
        &app,
        Method::PATCH,
        "/v1/projects/p/things/m?updateMask=color",
        body.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["color"].as_str(), v["size"].as_i64()),
        (Some("blue"), Some(1))
    );
    assert_ne!(v["etag"].as_str(), Some(tag.as_str()));
    // The same (now stale) etag again: ABORTED 409.
    let (s, v) = send(
        &app,
        Method::PATCH,
        "/v1/projects/p/things/m?updateMask=color",
        body,
    )
    .await;
    assert_eq!(
        (s, v["error"]["status"].as_str()),
        (StatusCode::CONFLICT, Some("ABORTED"))
    );
    // A field outside the mask's allowed set, and malformed masks: INVALID_ARGUMENT.
    for mask in ["size", "name", "color..x", "color%20x", "a%2Fb"] {
        let (s, v) = send(
            &app,
            Method::PATCH,
            &format!("/v1/projects/p/things/m?updateMask={mask}"),
            "{}",
        )
        .await;
        assert_eq!(
            (s, v["error"]["status"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT")),
            "{mask}"
        );
    }
}

#[tokio::test]
async fn attacker_requests_get_safe_answers() {
    let app = app();
    send(&app, Method::POST, "/v1/projects/p/things?thingId=a", "{}").await;
    // Encoded separators and dot segments never reach a handler as part of a name.
    for uri in [
        "/v1/projects/p/things/a%2F..%2F..%2Fother",
        "/v1/projects/p%2Fthings%2Fa/things/a",
        "/v1/projects/p/things/..",
        "/v1/projects/p/things/%2e%2e",
        "/v1/projects/p/things/a/",
    ] {
        let (s, v) = send(&app, Method::GET, uri, "").await;
        assert_eq!(
            (s, v["error"]["status"].as_str()),
            (StatusCode::NOT_FOUND, Some("NOT_FOUND")),
            "{uri}"
        );
    }
    // Bodies over 1 MiB are refused before any handler runs.
    let huge = format!("{{\"color\":\"{}\"}}", "x".repeat(1024 * 1024));
    let (s, v) = send(&app, Method::POST, "/v1/projects/p/things?thingId=h", huge).await;
    assert_eq!(
        (s, v["error"]["status"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT"))
    );
    let (s, _) = send(&app, Method::GET, "/v1/projects/p/things/h", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Duplicate keys and broken JSON: Google's wording.
    for body in [r#"{"color":"a","color":"b"}"#, "{", "[1,", "\"x\"x"] {
        let (s, v) = send(&app, Method::POST, "/v1/projects/p/things?thingId=d", body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        let m = v["error"]["message"].as_str().unwrap_or_default();
        assert!(m.starts_with("Invalid JSON payload received. "), "{m}");
    }
}
