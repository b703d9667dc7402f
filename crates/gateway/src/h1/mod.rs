//! The gateway's HTTP/1.1 server and its fast path to plain-HTTP/1.1 backends.
//!
//! Each client connection is one task ([`server`]). Request heads are parsed in place
//! (httparse; [`codec`]) and turned into `http` parts without copying header values; routing
//! and authentication are the shared [`crate::plan::plan`]. A request for a plain `http://`
//! HTTP/1.1 backend is then relayed ([`relay`]) on a pooled backend connection that stays with
//! the client connection while it is busy: the head is re-serialised, bodies are relayed byte
//! for byte (Content-Length or chunked, in both directions), and no task, channel or lock is
//! involved per request. Backends over TLS or HTTP/2 go through hyper's pooled clients, and a
//! client speaking HTTP/2 (prior knowledge) is handed to hyper's HTTP/2 server ([`bridge`]).
//!
//! Module order, no cycles: `server` uses `relay`, `bridge` and `codec`; `relay` and `bridge`
//! use `codec`; `codec` uses neither.

mod bridge;
pub(crate) mod codec;
mod relay;
mod server;
mod timer;

pub(crate) use server::serve_connection;
