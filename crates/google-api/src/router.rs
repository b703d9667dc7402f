//! A route table: method + path template (+ verb) → handler, and an axum service over it.
//!
//! [`RouteTable`] only matches (handlers are whatever `T` the API wants: an enum, a function);
//! [`Api`] is the axum adapter Google-shaped APIs use: it reads the body (1 MiB), matches,
//! runs the handler and answers errors in Google's envelope. Routes are tried in the order
//! they were added; the first match wins.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};

use crate::path::{Captures, PathTemplate, SplitPath, TemplateError};
use crate::{ApiError, body};

/// Why no route answered a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// No template matches the path.
    NotFound,
    /// Templates match the path, with these methods only.
    MethodNotAllowed(Vec<Method>),
}

/// The route a request matched.
#[derive(Debug)]
pub struct Found<'t, T> {
    /// What was registered for the route.
    pub handler: &'t T,
    /// The template's variables.
    pub captures: Captures,
}

/// Routes in insertion order.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    routes: Vec<(Option<Method>, PathTemplate, T)>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self { routes: Vec::new() }
    }
}

impl<T> RouteTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `template` for `method` (`None`: any method).
    pub fn add(
        &mut self,
        method: Option<Method>,
        template: &str,
        handler: T,
    ) -> Result<&mut Self, TemplateError> {
        self.routes
            .push((method, PathTemplate::parse(template)?, handler));
        Ok(self)
    }

    /// The first route matching `method` and `path`.
    pub fn find(&self, method: &Method, path: &str) -> Result<Found<'_, T>, Miss> {
        let split = SplitPath::new(path);
        let mut allowed = Vec::new();
        for (m, template, handler) in &self.routes {
            let Some(captures) = template.match_split(&split) else {
                continue;
            };
            match m {
                Some(m) if m != method => {
                    if !allowed.contains(m) {
                        allowed.push(m.clone());
                    }
                }
                _ => return Ok(Found { handler, captures }),
            }
        }
        if allowed.is_empty() {
            Err(Miss::NotFound)
        } else {
            Err(Miss::MethodNotAllowed(allowed))
        }
    }
}

/// One request to a Google-shaped API, as a handler sees it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The request method.
    pub method: Method,
    /// The request URI (path and query).
    pub uri: Uri,
    /// The request headers.
    pub headers: HeaderMap,
    /// The template's variables.
    pub captures: Captures,
    /// The query parameters, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The body (at most [`body::MAX_BODY`]).
    pub body: Bytes,
}

impl Call {
    /// The first query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of query parameter `name`.
    pub fn params(&self, name: &str) -> Vec<String> {
        self.query
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The custom method after the path's last `:` (`addVersion`).
    pub fn verb(&self) -> Option<&str> {
        SplitPath::new(self.uri.path()).verb()
    }

    /// The capture `name` ("" without one).
    pub fn capture(&self, name: &str) -> &str {
        self.captures.str(name)
    }

    /// The body as a JSON object ([`body::json`]).
    pub fn json(&self) -> Result<serde_json::Value, ApiError> {
        body::json(&self.body)
    }

    /// `?validateOnly=true`.
    pub fn validate_only(&self) -> bool {
        self.param("validateOnly")
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, ApiError>> + Send>>;
type Handler<S> = Arc<dyn Fn(S, Call) -> BoxFuture + Send + Sync>;
type MissHandler<S> = Arc<dyn Fn(S, Call, Miss) -> BoxFuture + Send + Sync>;

/// A Google-shaped API: a route table of async handlers over state `S`.
pub struct Api<S> {
    table: RouteTable<Handler<S>>,
    invalid: Vec<TemplateError>,
    miss: Option<MissHandler<S>>,
}

impl<S> Clone for Api<S> {
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
            invalid: self.invalid.clone(),
            miss: self.miss.clone(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Default for Api<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Api<S> {
    /// An API with no routes.
    pub fn new() -> Self {
        Self {
            table: RouteTable::new(),
            invalid: Vec::new(),
            miss: None,
        }
    }

    /// Adds a route. A bad template is kept aside and reported by [`Api::check`] (and answered
    /// 500 by [`Api::handle`]), so tables can be built in expressions.
    pub fn route<F, Fut, R>(mut self, method: Method, template: &str, handler: F) -> Self
    where
        F: Fn(S, Call) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ApiError>> + Send + 'static,
        R: IntoResponse,
    {
        let h: Handler<S> = Arc::new(move |s, c| {
            let fut = handler(s, c);
            Box::pin(async move { fut.await.map(IntoResponse::into_response) })
        });
        if let Err(e) = self.table.add(Some(method), template, h) {
            self.invalid.push(e);
        }
        self
    }

    /// What to answer when no route matches (default: 404 `The requested URL … was not
    /// found on this server.` for both unknown paths and wrong methods, as Google's front end).
    pub fn on_miss<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(S, Call, Miss) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response, ApiError>> + Send + 'static,
    {
        self.miss = Some(Arc::new(move |s, c, m| Box::pin(handler(s, c, m))));
        self
    }

    /// The templates that did not parse.
    pub fn check(&self) -> Result<(), TemplateError> {
        match self.invalid.first() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Answers one request.
    pub async fn handle(&self, state: S, req: Request) -> Response {
        if let Err(e) = self.check() {
            return ApiError::internal(e).into_response();
        }
        let (parts, body) = req.into_parts();
        let body = match body::read(body).await {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        };
        let query = url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
        let path = parts.uri.path().to_owned();
        let found = self.table.find(&parts.method, &path);
        let mut call = Call {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            captures: Captures::default(),
            query,
            body,
        };
        let result = match found {
            Ok(found) => {
                call.captures = found.captures;
                (found.handler)(state, call).await
            }
            Err(miss) => match &self.miss {
                Some(h) => h(state, call, miss).await,
                None => Err(ApiError::no_such_url(&path)),
            },
        };
        result.unwrap_or_else(IntoResponse::into_response)
    }

    /// An axum router serving this API with `state`.
    pub fn into_router(self, state: S) -> Router {
        let api = Arc::new(self);
        Router::new().fallback(move |req: Request| {
            let (api, state) = (api.clone(), state.clone());
            async move { api.handle(state, req).await }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_and_method_misses() {
        let mut t = RouteTable::new();
        t.add(Some(Method::GET), "/v1/{name=things/*}", 1).unwrap();
        t.add(Some(Method::DELETE), "/v1/{name=things/*}", 2)
            .unwrap();
        t.add(Some(Method::POST), "/v1/{name=things/*}:poke", 3)
            .unwrap();
        t.add(None, "/v1/{name=things/*}/parts/**", 4).unwrap();
        let f = t.find(&Method::GET, "/v1/things/a").unwrap();
        assert_eq!((*f.handler, f.captures.str("name")), (1, "things/a"));
        assert_eq!(*t.find(&Method::DELETE, "/v1/things/a").unwrap().handler, 2);
        assert_eq!(
            t.find(&Method::PUT, "/v1/things/a").unwrap_err(),
            Miss::MethodNotAllowed(vec![Method::GET, Method::DELETE])
        );
        assert_eq!(
            *t.find(&Method::POST, "/v1/things/a:poke").unwrap().handler,
            3
        );
        assert_eq!(
            *t.find(&Method::PATCH, "/v1/things/a/parts/b/c")
                .unwrap()
                .handler,
            4
        );
        assert_eq!(
            t.find(&Method::GET, "/v1/things/a:nope").unwrap_err(),
            Miss::NotFound
        );
    }
}
