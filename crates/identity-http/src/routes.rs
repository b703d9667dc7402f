//! Identity Toolkit, Secure Token and emulator routes.
//!
//! Identity Toolkit paths put operations after a colon (`accounts:signUp`,
//! `projects/{p}:createSessionCookie`): they are matched by Google path templates
//! (`gatehouse-google-api`'s route table, with the any-verb `:*` extension) that say where the
//! project, the tenant and the operation are; the operation is then dispatched by name.

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use gatehouse_google_api::path::SplitPath;
use gatehouse_identity::{
    Caller, Error, Identity, IssuedTokens, Mode, OobKind, ProjectSettings, Result,
};
use serde_json::{Map, Value, json};

use crate::MAX_BODY;
use crate::account::AccountView;
use crate::error::ApiError;
use crate::idp::verify_assertion_response;
use crate::paths::{EMULATOR, TOOLKIT, Toolkit};
use crate::request::{Credentials, body_object, decode, query_param};

pub fn router() -> Router<Identity> {
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(healthz))
        .route(
            "/identitytoolkit.googleapis.com/{*rest}",
            any(identity_toolkit),
        )
        .route("/securetoken.googleapis.com/v1/token", any(secure_token))
        .route("/emulator/{*rest}", any(emulator))
        .fallback(not_found)
}

async fn root() -> Json<Value> {
    Json(
        json!({"authEmulator": {"ready": true, "docs": "https://firebase.google.com/docs/emulator-suite", "apiSpec": "/emulator/openapi.json"}}),
    )
}

async fn healthz(State(identity): State<Identity>) -> Response {
    match identity.ready().await {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

async fn not_found() -> Response {
    ApiError(Error::NotFound("Not Found".into())).into_response()
}

/// A decoded request: credentials, method, path, query and body object.
struct Incoming {
    creds: Credentials,
    method: Method,
    path: String,
    uri: axum::http::Uri,
    body: Map<String, Value>,
}

async fn incoming(req: Request<Body>) -> std::result::Result<Incoming, Response> {
    let (parts, body) = req.into_parts();
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>();
    let options = parts
        .extensions
        .get::<crate::HttpOptions>()
        .copied()
        .unwrap_or_default();
    let creds = Credentials::from_parts(&parts.uri, &parts.headers, peer, options.proxy_hops);
    // A Content-Length over the limit is refused before a byte of the body is read.
    if axum::body::HttpBody::size_hint(&body).lower() > MAX_BODY as u64 {
        return Err(ApiError::too_large(MAX_BODY));
    }
    let read = axum::body::to_bytes(body, MAX_BODY);
    let bytes = match tokio::time::timeout(options.read_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return Err(ApiError::too_large(MAX_BODY)),
        Err(_) => return Err(ApiError::body_timeout()),
    };
    let body = body_object(&parts.method, &parts.headers, &bytes)
        .map_err(|e| ApiError(e).into_response())?;
    Ok(Incoming {
        creds,
        method: parts.method,
        path: parts.uri.path().to_owned(),
        uri: parts.uri,
        body,
    })
}

fn respond(result: Result<Value>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => ApiError(e).into_response(),
    }
}

impl Incoming {
    async fn caller(&self, identity: &Identity, path_project: Option<&str>) -> Result<Caller> {
        let target = self.body.get("targetProjectId").and_then(Value::as_str);
        identity
            .authenticate(
                self.creds.api_key.as_deref(),
                self.creds.bearer.as_deref(),
                path_project,
                target,
                self.creds.ip,
            )
            .await
    }
}

async fn identity_toolkit(State(identity): State<Identity>, req: Request<Body>) -> Response {
    let mut inc = match incoming(req).await {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    let table = match &*TOOLKIT {
        Ok(t) => t,
        Err(e) => return ApiError(Error::Internal(e.to_string())).into_response(),
    };
    let Ok(found) = table.find(&inc.method, &inc.path) else {
        return not_found().await;
    };
    // Resolve (project, tenant, operation) from the path.
    let c = &found.captures;
    let verb = SplitPath::new(&inc.path)
        .verb()
        .unwrap_or_default()
        .to_owned();
    let with_verb = |resource: &str| {
        if verb.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}:{verb}")
        }
    };
    let (project, tenant, op) = match found.handler {
        Toolkit::Bare => (None, None, with_verb(c.str("op"))),
        Toolkit::ProjectVerb => (c.get("project"), None, verb.clone()),
        Toolkit::Project => (c.get("project"), None, with_verb(c.str("op"))),
        Toolkit::TenantVerb => (c.get("project"), c.get("tenant"), verb.clone()),
        Toolkit::Tenant => (c.get("project"), c.get("tenant"), with_verb(c.str("op"))),
        Toolkit::Config => (c.get("project"), None, "config".to_owned()),
    };
    if let Some(t) = tenant {
        inc.body.insert("tenantId".into(), json!(t));
    }
    let project = project.map(str::to_owned);
    respond(dispatch(&identity, &inc, project.as_deref(), &op).await)
}

async fn dispatch(
    identity: &Identity,
    inc: &Incoming,
    project: Option<&str>,
    op: &str,
) -> Result<Value> {
    let m = &inc.method;
    let is_post = *m == Method::POST;
    // Operations reachable without a project in the path (client calls) or with one.
    match (op, project.is_some()) {
        ("projects", false) if *m == Method::GET => {
            let caller = inc.caller(identity, None).await?;
            let domains = identity
                .project_settings(&caller)
                .await
                .authorized_domains(caller.project_id());
            return Ok(json!({"projectId": caller.project_id(), "authorizedDomains": domains}));
        }
        ("sessionCookiePublicKeys", false) if *m == Method::GET => {
            let (jwks, _) = identity
                .keyring()
                .jwks(gatehouse_identity::KeyPurpose::SessionCookie)?;
            return serde_json::from_str(&jwks).map_err(|e| Error::Internal(e.to_string()));
        }
        ("config", true) => return project_config(identity, inc, project).await,
        _ => {}
    }
    if !(is_post || (op == "accounts:batchGet" && *m == Method::GET)) {
        return Err(Error::NotFound("Not Found".into()));
    }
    let caller = inc.caller(identity, project).await?;
    let body = inc.body.clone();
    match op {
        "accounts" | "accounts:signUp" => sign_up(identity, &caller, body).await,
        "accounts:signInWithPassword" => sign_in_with_password(identity, &caller, body).await,
        "accounts:signInWithCustomToken" => {
            sign_in_with_custom_token(identity, &caller, body).await
        }
        "accounts:lookup" => lookup(identity, &caller, body).await,
        "accounts:update" => update(identity, &caller, body).await,
        "accounts:delete" => {
            identity.delete(&caller, decode(body)?).await?;
            Ok(json!({"kind": "identitytoolkit#DeleteAccountResponse"}))
        }
        "accounts:sendOobCode" => send_oob_code(identity, &caller, body).await,
        "accounts:resetPassword" => reset_password(identity, &caller, body).await,
        "accounts:createAuthUri" => create_auth_uri(identity, &caller, body).await,
        "accounts:signInWithEmailLink" => sign_in_with_email_link(identity, &caller, body).await,
        "accounts:batchGet" => batch_get(identity, &caller, inc).await,
        "accounts:batchCreate" => batch_create(identity, &caller, body).await,
        "accounts:batchDelete" => batch_delete(identity, &caller, body).await,
        "accounts:query" | "queryAccounts" => query(identity, &caller, body).await,
        "createSessionCookie" => {
            let cookie = identity
                .create_session_cookie(&caller, decode(body)?)
                .await?;
            Ok(json!({ "sessionCookie": cookie }))
        }
        "accounts:signInWithIdp" => {
            let req: gatehouse_identity::SignInWithIdpRequest = decode(body)?;
            let return_credential = req.return_idp_credential.unwrap_or(false);
            let done = identity.sign_in_with_idp(&caller, req).await?;
            Ok(verify_assertion_response(&done, return_credential))
        }
        "accounts:sendVerificationCode"
        | "accounts:signInWithPhoneNumber"
        | "accounts:signInWithGameCenter"
        | "accounts:verifyIosClient"
        | "accounts:issueSamlResponse"
        | "accounts:revokeToken" => Err(Error::NotImplemented(format!(
            "{op} is not implemented in Gatehouse yet."
        ))),
        _ => Err(Error::NotFound("Not Found".into())),
    }
}

fn put_tokens(out: &mut Map<String, Value>, tokens: &IssuedTokens) {
    out.insert("idToken".into(), json!(tokens.id_token));
    out.insert("refreshToken".into(), json!(tokens.refresh_token));
    out.insert("expiresIn".into(), json!(tokens.expires_in.to_string()));
}

fn put_opt(out: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        out.insert(key.into(), json!(v));
    }
}

async fn sign_up(identity: &Identity, caller: &Caller, body: Map<String, Value>) -> Result<Value> {
    let done = identity.sign_up(caller, decode(body)?).await?;
    let mut out = Map::new();
    out.insert(
        "kind".into(),
        json!("identitytoolkit#SignupNewUserResponse"),
    );
    out.insert("localId".into(), json!(done.user.local_id));
    put_opt(&mut out, "email", &done.user.email);
    put_opt(&mut out, "displayName", &done.user.display_name);
    if let Some(t) = &done.tokens {
        put_tokens(&mut out, t);
    }
    Ok(Value::Object(out))
}

async fn sign_in_with_password(
    identity: &Identity,
    caller: &Caller,
    body: Map<String, Value>,
) -> Result<Value> {
    let done = identity
        .sign_in_with_password(caller, decode(body)?)
        .await?;
    let mut out = Map::new();
    out.insert(
        "kind".into(),
        json!("identitytoolkit#VerifyPasswordResponse"),
    );
    out.insert("registered".into(), json!(true));
    out.insert("localId".into(), json!(done.user.local_id));
    put_opt(&mut out, "email", &done.user.email);
    out.insert(
        "displayName".into(),
        json!(done.user.display_name.clone().unwrap_or_default()),
    );
    put_opt(&mut out, "profilePicture", &done.user.photo_url);
    if let Some(t) = &done.tokens {
        put_tokens(&mut out, t);
    }
    Ok(Value::Object(out))
}

async fn sign_in_with_custom_token(
    identity: &Identity,
    caller: &Caller,
    body: Map<String, Value>,
) -> Result<Value> {
    let done = identity
        .sign_in_with_custom_token(caller, decode(body)?)
        .await?;
    let mut out = Map::new();
    out.insert(
        "kind".into(),
        json!("identitytoolkit#VerifyCustomTokenResponse"),
    );
    out.insert("isNewUser".into(), json!(done.is_new_user));
    if let Some(t) = &done.tokens {
        put_tokens(&mut out, t);
    }
    Ok(Value::Object(out))
}

async fn lookup(identity: &Identity, caller: &Caller, body: Map<String, Value>) -> Result<Value> {
    let users = identity.lookup(caller, decode(body)?).await?;
    let mut out = json!({"kind": "identitytoolkit#GetAccountInfoResponse"});
    if !users.is_empty() {
        out["users"] = json!(users.iter().map(AccountView::of).collect::<Vec<_>>());
    }
    Ok(out)
}

async fn update(identity: &Identity, caller: &Caller, body: Map<String, Value>) -> Result<Value> {
    let done = identity.update(caller, decode(body)?).await?;
    let view = AccountView::of(&done.user);
    let mut out = Map::new();
    out.insert(
        "kind".into(),
        json!("identitytoolkit#SetAccountInfoResponse"),
    );
    out.insert("localId".into(), json!(view.local_id));
    put_opt(&mut out, "email", &view.email);
    put_opt(&mut out, "displayName", &view.display_name);
    put_opt(&mut out, "photoUrl", &view.photo_url);
    out.insert("emailVerified".into(), json!(view.email_verified));
    out.insert("providerUserInfo".into(), json!(view.provider_user_info));
    put_opt(&mut out, "passwordHash", &view.password_hash);
    put_opt(&mut out, "newEmail", &done.new_email);
    if let Some(t) = &done.tokens {
        put_tokens(&mut out, t);
    }
    Ok(Value::Object(out))
}

async fn send_oob_code(
    identity: &Identity,
    caller: &Caller,
    body: Map<String, Value>,
) -> Result<Value> {
    let sent = identity.send_oob_code(caller, decode(body)?).await?;
    let mut out =
        json!({"kind": "identitytoolkit#GetOobConfirmationCodeResponse", "email": sent.email});
    if let (Some(code), Some(link)) = (sent.oob_code, sent.oob_link) {
        out["oobCode"] = json!(code);
        out["oobLink"] = json!(link);
    }
    Ok(out)
}

async fn reset_password(
    identity: &Identity,
    caller: &Caller,
    body: Map<String, Value>,
) -> Result<Value> {
    let info = identity.reset_password(caller, decode(body)?).await?;
    let mut out = json!({"kind": "identitytoolkit#ResetPasswordResponse", "requestType": info.request_type.as_str()});
    if info.request_type != OobKind::EmailSignin {
        out["email"] = json!(info.email);
    }
    if let Some(n) = info.new_email {
        out["newEmail"] = json!(n);
    }
    Ok(out)
}

async fn create_auth_uri(
    identity: &Identity,
    caller: &Caller,
    body: Map<String, Value>,
) -> Result<Value> {
    let uri = identity.create_auth_uri(caller, decode(body)?).await?;
    if uri.private {
        return Ok(
            json!({"kind": "identitytoolkit#CreateAuthUriResponse", "sessionId": uri.session_id}),
        );
    }
    let mut out = json!({"kind": "identitytoolkit#CreateAuthUriResponse", "registered": uri.registered, "sessionId": uri.session_id});
    if !uri.all_providers.is_empty() {
        out["allProviders"] = json!(uri.all_providers);
    }
    if !uri.signin_methods.is_empty() {
        out["signinMethods"] = json!(uri.signin_methods);
    }
    Ok(out)
}

async fn sign_in_with_email_link(
    identity: &Identity,
    caller: &Caller,
    body: Map<String, Value>,
) -> Result<Value> {
    let done = identity
        .sign_in_with_email_link(caller, decode(body)?)
        .await?;
    let mut out = Map::new();
    out.insert(
        "kind".into(),
        json!("identitytoolkit#EmailLinkSigninResponse"),
    );
    put_opt(&mut out, "email", &done.user.email);
    out.insert("localId".into(), json!(done.user.local_id));
    out.insert("isNewUser".into(), json!(done.is_new_user));
    put_tokens(&mut out, &done.tokens);
    Ok(Value::Object(out))
}

async fn batch_get(identity: &Identity, caller: &Caller, inc: &Incoming) -> Result<Value> {
    let max = match query_param(&inc.uri, "maxResults") {
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| Error::InvalidArgument("maxResults must be an integer".into()))?,
        ),
        None => None,
    };
    let token = query_param(&inc.uri, "nextPageToken");
    let tenant = inc
        .body
        .get("tenantId")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| query_param(&inc.uri, "tenantId"));
    let page = identity
        .batch_get(caller, max, token.as_deref(), tenant.as_deref())
        .await?;
    let mut out = json!({"kind": "identitytoolkit#DownloadAccountResponse",
        "users": page.users.iter().map(AccountView::of).collect::<Vec<_>>()});
    if let Some(t) = page.next_page_token {
        out["nextPageToken"] = json!(t);
    }
    Ok(out)
}

async fn batch_create(
    identity: &Identity,
    caller: &Caller,
    body: Map<String, Value>,
) -> Result<Value> {
    let errors = identity.batch_create(caller, decode(body)?).await?;
    let mut out = json!({"kind": "identitytoolkit#UploadAccountResponse"});
    if !errors.is_empty() {
        out["error"] = json!(
            errors
                .iter()
                .map(|e| json!({"index": e.index, "message": e.message}))
                .collect::<Vec<_>>()
        );
    }
    Ok(out)
}

async fn batch_delete(
    identity: &Identity,
    caller: &Caller,
    body: Map<String, Value>,
) -> Result<Value> {
    let errors = identity.batch_delete(caller, decode(body)?).await?;
    if errors.is_empty() {
        return Ok(json!({}));
    }
    Ok(
        json!({"errors": errors.iter().map(|e| json!({"index": e.index, "localId": e.local_id, "message": e.message})).collect::<Vec<_>>()}),
    )
}

async fn query(identity: &Identity, caller: &Caller, body: Map<String, Value>) -> Result<Value> {
    let (count, users) = identity.query(caller, decode(body)?).await?;
    let mut out = json!({"recordsCount": count.to_string()});
    if let Some(users) = users {
        out["userInfo"] = json!(users.iter().map(AccountView::of).collect::<Vec<_>>());
    }
    Ok(out)
}

async fn project_config(
    identity: &Identity,
    inc: &Incoming,
    project: Option<&str>,
) -> Result<Value> {
    let caller = inc.caller(identity, project).await?;
    let settings: ProjectSettings = match inc.method {
        Method::GET => identity.project_settings(&caller).await,
        Method::PATCH => {
            identity
                .update_project_settings(&caller, Value::Object(inc.body.clone()))
                .await?
        }
        _ => return Err(Error::NotFound("Not Found".into())),
    };
    let mut out = serde_json::to_value(settings).map_err(|e| Error::Internal(e.to_string()))?;
    out["name"] = json!(format!("projects/{}/config", caller.project_id()));
    Ok(out)
}

async fn secure_token(State(identity): State<Identity>, req: Request<Body>) -> Response {
    let inc = match incoming(req).await {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    if inc.method != Method::POST {
        return not_found().await;
    }
    let result = async {
        // The Secure Token API takes API keys only.
        let caller = identity.authenticate(inc.creds.api_key.as_deref(), None, None, None, inc.creds.ip).await?;
        let req: gatehouse_identity::TokenRequest = decode(inc.body.clone())?;
        let t = identity.refresh(&caller, req.grant_type.as_deref(), req.refresh_token.as_deref()).await?;
        Ok(json!({
            "id_token": t.id_token, "access_token": t.id_token, "expires_in": t.expires_in.to_string(),
            "refresh_token": t.refresh_token, "token_type": "Bearer", "user_id": t.user_id, "project_id": t.project_number,
        }))
    }
    .await;
    respond(result)
}

/// `/emulator/v1/projects/{p}/...`: development helpers, off for production projects.
async fn emulator(State(identity): State<Identity>, req: Request<Body>) -> Response {
    let inc = match incoming(req).await {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    let table = match &*EMULATOR {
        Ok(t) => t,
        Err(e) => return ApiError(Error::Internal(e.to_string())).into_response(),
    };
    let Ok(found) = table.find(&inc.method, &inc.path) else {
        return not_found().await;
    };
    let c = &found.captures;
    let (project, tenant, what) = (c.str("project"), c.str("tenant"), c.str("what"));
    let Some(config) = identity.project(project) else {
        return not_found().await;
    };
    if config.mode != Mode::Development {
        return not_found().await;
    }
    // The emulator's helper routes need no credentials.
    let caller = Caller {
        project: config,
        privileged: true,
        ip: inc.creds.ip,
    };
    let result = async {
        match (what, &inc.method) {
            ("accounts", &Method::DELETE) => {
                identity.delete_all_accounts(&caller, tenant).await?;
                Ok(json!({}))
            }
            ("oobCodes", &Method::GET) => {
                let codes = identity.dev_oob_codes(&caller, tenant).await?;
                Ok(json!({"oobCodes": codes.iter().map(|c| {
                    let mut v = json!({"email": c.email, "oobCode": c.oob_code, "oobLink": c.oob_link, "requestType": c.request_type});
                    if let Some(n) = &c.new_email { v["newEmail"] = json!(n); }
                    v
                }).collect::<Vec<_>>()}))
            }
            ("verificationCodes", &Method::GET) => Ok(json!({"verificationCodes": []})),
            ("config", &Method::GET) => {
                serde_json::to_value(identity.project_settings(&caller).await).map_err(|e| Error::Internal(e.to_string()))
            }
            ("config", &Method::PATCH) => serde_json::to_value(
                identity.update_project_settings(&caller, Value::Object(inc.body.clone())).await?,
            )
            .map_err(|e| Error::Internal(e.to_string())),
            _ => Err(Error::NotFound("Not Found".into())),
        }
    }
    .await;
    respond(result)
}
