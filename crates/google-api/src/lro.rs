//! Long-running operations (google.longrunning): `operations/{id}` resources with `name`,
//! `metadata`, `done` and `response` | `error`, persisted in the store so a restart does not
//! lose them, and the get / list / wait / cancel / delete methods, mountable under any API's
//! `/{version}/projects/*/locations/*/operations` collection.
//!
//! Services start an operation ([`Operations::start`]), report progress
//! ([`Operations::set_metadata`]) and finish it once ([`Operations::finish`]); a cancel
//! finishes it with `CANCELLED`, and the service's later result is then ignored.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::Method;
use gatehouse_store::{OperationRecord, Store};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::{Api, ApiError, Call, Code, PageRequest};

/// Longest a `:wait` holds a request.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// How often a waiter re-reads the store (another process may finish the operation).
const POLL: Duration = Duration::from_millis(500);

/// How an operation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `response`: the resource or result message.
    Response(Value),
    /// `error`: a google.rpc.Status (`code` is the numeric canonical code).
    Error(Value),
}

/// An operation as clients see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// `projects/{p}/locations/{l}/operations/{id}`.
    pub name: String,
    /// Service-defined progress.
    pub metadata: Value,
    /// The result, once done.
    pub outcome: Option<Outcome>,
}

impl Operation {
    /// Whether the operation finished.
    pub fn done(&self) -> bool {
        self.outcome.is_some()
    }

    /// The google.longrunning.Operation JSON (`done` omitted while false, as proto3 JSON).
    pub fn to_json(&self) -> Value {
        let mut v = json!({"name": self.name, "metadata": self.metadata});
        match &self.outcome {
            None => {}
            Some(Outcome::Response(r)) => {
                v["done"] = json!(true);
                v["response"] = r.clone();
            }
            Some(Outcome::Error(e)) => {
                v["done"] = json!(true);
                v["error"] = e.clone();
            }
        }
        v
    }

    fn from_record(r: OperationRecord) -> Result<Self, ApiError> {
        let metadata = serde_json::from_str(&r.metadata).map_err(ApiError::internal)?;
        let outcome = match (r.done, r.result) {
            (false, _) => None,
            (true, None) => Some(Outcome::Response(json!({}))),
            (true, Some(text)) => {
                let mut v: Value = serde_json::from_str(&text).map_err(ApiError::internal)?;
                match v.get_mut("error").map(Value::take) {
                    Some(e) => Some(Outcome::Error(e)),
                    None => Some(Outcome::Response(
                        v.get_mut("response").map(Value::take).unwrap_or(json!({})),
                    )),
                }
            }
        };
        Ok(Self {
            name: r.name,
            metadata,
            outcome,
        })
    }
}

/// The google.rpc.Status of an operation's error.
pub fn status(e: &ApiError) -> Value {
    let mut v = json!({"code": e.code().rpc_number(), "message": e.message()});
    if let Some(details) = e.body().pointer("/error/details") {
        v["details"] = details.clone();
    }
    v
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

fn store_error(e: gatehouse_store::Error) -> ApiError {
    ApiError::internal(e)
}

/// The operations of one process, over the store.
#[derive(Debug, Clone)]
pub struct Operations {
    store: Store,
    changed: Arc<Notify>,
}

impl Operations {
    /// Operations kept in `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            changed: Arc::new(Notify::new()),
        }
    }

    /// Starts an operation under `parent` (`projects/{p}/locations/{l}`).
    pub async fn start(&self, parent: &str, metadata: Value) -> Result<Operation, ApiError> {
        let id = format!("operation-{}-{:016x}", now_ms(), rand::random::<u64>());
        let now = now_ms();
        let record = OperationRecord {
            name: format!("{parent}/operations/{id}"),
            parent: parent.to_owned(),
            metadata: metadata.to_string(),
            done: false,
            result: None,
            created_at: now,
            updated_at: now,
        };
        self.store
            .insert_operation(&record)
            .await
            .map_err(store_error)?;
        Operation::from_record(record)
    }

    /// Replaces a running operation's metadata; false once it is done.
    pub async fn set_metadata(&self, name: &str, metadata: &Value) -> Result<bool, ApiError> {
        self.store
            .set_operation_metadata(name, &metadata.to_string(), now_ms())
            .await
            .map_err(store_error)
    }

    /// Finishes an operation with a response or an error; false if it was already done
    /// (cancelled, say): the first outcome wins.
    pub async fn finish(
        &self,
        name: &str,
        outcome: Result<Value, ApiError>,
    ) -> Result<bool, ApiError> {
        let result = match outcome {
            Ok(response) => json!({ "response": response }),
            Err(e) => json!({ "error": status(&e) }),
        };
        let finished = self
            .store
            .finish_operation(name, &result.to_string(), None, now_ms())
            .await
            .map_err(store_error)?;
        self.changed.notify_waiters();
        Ok(finished)
    }

    /// The operation `name`, or NOT_FOUND.
    pub async fn get(&self, name: &str) -> Result<Operation, ApiError> {
        let record = self.store.operation(name).await.map_err(store_error)?;
        match record {
            Some(r) => Operation::from_record(r),
            None => Err(ApiError::new(
                Code::NotFound,
                format!("Operation {name} not found."),
            )),
        }
    }

    /// The operations under `parent`, oldest first.
    pub async fn list(&self, parent: &str) -> Result<Vec<Operation>, ApiError> {
        let records = self.store.operations(parent).await.map_err(store_error)?;
        records.into_iter().map(Operation::from_record).collect()
    }

    /// Cancels a running operation (it ends with `CANCELLED`); a done one stays as it is.
    pub async fn cancel(&self, name: &str) -> Result<Operation, ApiError> {
        self.get(name).await?;
        self.finish(
            name,
            Err(ApiError::new(Code::Cancelled, "Operation was cancelled.")),
        )
        .await?;
        self.get(name).await
    }

    /// Forgets an operation (it keeps running if it was; its result is then dropped).
    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        if self
            .store
            .delete_operation(name)
            .await
            .map_err(store_error)?
        {
            Ok(())
        } else {
            Err(ApiError::new(
                Code::NotFound,
                format!("Operation {name} not found."),
            ))
        }
    }

    /// The operation once done, or as it is after `timeout` (at most [`MAX_WAIT`]).
    pub async fn wait(&self, name: &str, timeout: Duration) -> Result<Operation, ApiError> {
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_WAIT);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let op = self.get(name).await?;
            let now = tokio::time::Instant::now();
            if op.done() || now >= deadline {
                return Ok(op);
            }
            let nap = (deadline - now).min(POLL);
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }
}

/// An API state that serves operations: where they are kept and who may see them.
pub trait OperationsHost: Clone + Send + Sync + 'static {
    /// The operations store.
    fn operations(&self) -> &Operations;

    /// Succeeds when the caller of `call` holds `permission` (`{family}.get`, `.list`,
    /// `.cancel`, `.delete`) on `project` (`projects/{p}`).
    fn authorize(
        &self,
        call: &Call,
        permission: &str,
        project: &str,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// The permission family (`run.operations`).
    fn permission_family(&self) -> &str;
}

/// Adds get / delete / `:wait` / `:cancel` on `/{version}/{name=projects/*/locations/*/operations/*}`
/// and list on `/{version}/{name=projects/*/locations/*}/operations`.
pub fn mount<S: OperationsHost>(api: Api<S>, version: &str) -> Api<S> {
    let one = format!("/{version}/{{name=projects/*/locations/*/operations/*}}");
    let all = format!("/{version}/{{name=projects/*/locations/*}}/operations");
    api.route(Method::GET, &one, get_operation::<S>)
        .route(Method::DELETE, &one, delete_operation::<S>)
        .route(Method::POST, &format!("{one}:wait"), wait_operation::<S>)
        .route(
            Method::POST,
            &format!("{one}:cancel"),
            cancel_operation::<S>,
        )
        .route(Method::GET, &all, list_operations::<S>)
}

/// `projects/{p}` of a resource name.
fn project_of(name: &str) -> String {
    name.split('/').take(2).collect::<Vec<_>>().join("/")
}

async fn authorize<S: OperationsHost>(s: &S, call: &Call, verb: &str) -> Result<String, ApiError> {
    let name = call.capture("name").to_owned();
    let permission = format!("{}.{verb}", s.permission_family());
    s.authorize(call, &permission, &project_of(&name)).await?;
    Ok(name)
}

async fn get_operation<S: OperationsHost>(s: S, call: Call) -> Result<Json<Value>, ApiError> {
    let name = authorize(&s, &call, "get").await?;
    Ok(Json(s.operations().get(&name).await?.to_json()))
}

async fn delete_operation<S: OperationsHost>(s: S, call: Call) -> Result<Json<Value>, ApiError> {
    let name = authorize(&s, &call, "delete").await?;
    s.operations().delete(&name).await?;
    Ok(Json(json!({})))
}

async fn cancel_operation<S: OperationsHost>(s: S, call: Call) -> Result<Json<Value>, ApiError> {
    let name = authorize(&s, &call, "cancel").await?;
    s.operations().cancel(&name).await?;
    Ok(Json(json!({})))
}

async fn wait_operation<S: OperationsHost>(s: S, call: Call) -> Result<Json<Value>, ApiError> {
    let name = authorize(&s, &call, "get").await?;
    let body = call.json()?;
    let timeout = match body.get("timeout") {
        None | Some(Value::Null) => MAX_WAIT,
        Some(v) => duration(v)?,
    };
    Ok(Json(s.operations().wait(&name, timeout).await?.to_json()))
}

async fn list_operations<S: OperationsHost>(s: S, call: Call) -> Result<Json<Value>, ApiError> {
    let parent = authorize(&s, &call, "list").await?;
    let request = PageRequest::parse(
        call.param("pageSize"),
        call.param("pageToken"),
        &format!("{parent}/operations"),
        1000,
    )?;
    let all = s.operations().list(&parent).await?;
    let page = request.page(all);
    let mut out = json!({});
    if !page.items.is_empty() {
        out["operations"] = json!(
            page.items
                .iter()
                .map(Operation::to_json)
                .collect::<Vec<_>>()
        );
    }
    if let Some(t) = page.next_page_token {
        out["nextPageToken"] = json!(t);
    }
    Ok(Json(out))
}

/// A google.protobuf.Duration in JSON (`"1.5s"`).
pub fn duration(v: &Value) -> Result<Duration, ApiError> {
    let bad = || ApiError::invalid_argument(format!("Invalid duration: {v}"));
    let text = v.as_str().ok_or_else(bad)?;
    let secs: f64 = text
        .strip_suffix('s')
        .ok_or_else(bad)?
        .parse()
        .map_err(|_| bad())?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs.min(MAX_WAIT.as_secs_f64())))
}
