//! The hyper side of the gateway: clients speaking HTTP/2 (prior knowledge) are served by
//! hyper's HTTP/2 server, and requests for TLS or HTTP/2 backends go through hyper's pooled
//! clients ([`crate::upstream::Upstream::call`]), the request body streamed from the client
//! connection while the backend answers.
//!
//! Owns the glue between the HTTP/1.1 server's buffers and hyper's body and service types. The
//! plain-HTTP/1.1 fast path does not come through here.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::codec::{PAYLOAD_TOO_LARGE, ReqBody, too_large, write_response};
use crate::plan::{self, Plan};
use crate::upstream::{FailureKind, UpstreamError};
use crate::{Body, BoxError, Gateway, GatewayError};

/// The hyper request path (HTTP/2 from clients, TLS or HTTP/2 to backends).
async fn handle(gw: Arc<Gateway>, req: Request<Incoming>, peer: HeaderValue) -> Response<Body> {
    let started = Instant::now();
    let loaded = gw.active();
    let (mut parts, body) = req.into_parts();
    let plan = match plan::plan(&gw, &loaded, &mut parts, &peer, started).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let body = body.map_err(|e| Box::new(e) as BoxError).boxed();
    forward(&gw, plan, body, started).await
}

/// Calls the backend through the pooled hyper clients.
pub(crate) async fn forward(
    gw: &Gateway,
    plan: Plan<'_>,
    body: Body,
    started: Instant,
) -> Response<Body> {
    let op = plan.op;
    let Ok(uri) = format!("{}{}", plan.origin, plan.target.as_str()).parse::<Uri>() else {
        let e = UpstreamError::client(FailureKind::BadTarget);
        let e = GatewayError::new(e.status(), e.message());
        return plan::local(plan.metrics, started, e);
    };
    let mut up = Request::new(body);
    *up.method_mut() = plan.method;
    *up.uri_mut() = uri;
    *up.headers_mut() = plan.headers;
    let upstream_started = Instant::now();
    let result = gw.upstream.call(plan.protocol, up, plan.deadline).await;
    plan.metrics.upstream(upstream_started.elapsed());
    let res = match result {
        Ok(res) => res,
        Err(e) => {
            let (status, msg) = (e.status(), e.message());
            if let Some(suppressed) = gw.upstream.failure_log.admit() {
                tracing::warn!(
                    operation = op,
                    status,
                    side = ?e.side,
                    suppressed,
                    error = &e as &(dyn std::error::Error + 'static),
                    "backend failed: {msg}"
                );
            }
            return plan::local(plan.metrics, started, GatewayError::new(status, msg));
        }
    };
    let (mut rparts, rbody) = res.into_parts();
    plan::strip_hop_by_hop(&mut rparts.headers);
    let status = rparts.status.as_u16();
    let res = Response::from_parts(rparts, rbody.map_err(|e| Box::new(e) as BoxError).boxed());
    plan.metrics.record(status, started);
    res
}

/// A request body fed to hyper from the client connection.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}

/// A request for a TLS or HTTP/2 backend: hyper's client, with the body streamed from the
/// client connection while the backend answers.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn forward_hyper(
    gw: &Gateway,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    plan: Plan<'_>,
    body: Option<ReqBody>,
    is_head: bool,
    started: Instant,
) -> io::Result<bool> {
    let Some(mut body) = body else {
        let empty = http_body_util::Empty::new().map_err(|n| match n {}).boxed();
        let res = forward(gw, plan, empty, started).await;
        return write_response(stream, out, res, is_head, true).await;
    };
    let metrics = plan.metrics;
    let (tx, rx) = mpsc::channel::<Result<Bytes, BoxError>>(4);
    let res = {
        let pump = async {
            // Owned here: the body ends when the pump does.
            let tx = tx;
            loop {
                let data = match body.take_data(buf) {
                    Ok(data) => data,
                    Err(e) => {
                        // The backend's body fails too: it must not see a truncated body end
                        // as if it were complete.
                        let _ = tx.send(Err(e.to_string().into())).await;
                        return Err(e);
                    }
                };
                if !data.is_empty() && tx.send(Ok(data)).await.is_err() {
                    return Ok::<_, io::Error>(());
                }
                if body.done() {
                    return Ok(());
                }
                buf.reserve(8 * 1024);
                if stream.read_buf(buf).await? == 0 {
                    let _ = tx
                        .send(Err("client closed before the end of the body".into()))
                        .await;
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        };
        let call = forward(gw, plan, ChannelBody { rx }.boxed(), started);
        tokio::pin!(pump, call);
        let mut pumping = true;
        loop {
            tokio::select! {
                res = &mut call => break res,
                r = &mut pump, if pumping => {
                    pumping = false;
                    match r {
                        // The body passed the limit: the gateway answers, the call is dropped.
                        Err(e) if too_large(&e) => {
                            let e = GatewayError::new(413, PAYLOAD_TOO_LARGE);
                            break plan::local(metrics, started, e);
                        }
                        // The client is gone or its body is malformed; the call fails on the
                        // broken body.
                        _ => continue,
                    }
                }
            }
        }
    };
    let keep = body.done();
    Ok(write_response(stream, out, res, is_head, keep).await? && keep)
}

/// A stream with bytes already read in front of it.
struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// An HTTP/2 (prior knowledge) client: hyper's server, the shared request path.
pub(crate) async fn serve_h2(
    gw: Arc<Gateway>,
    stream: TcpStream,
    prefix: Bytes,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = plan::peer_header(peer.ip());
    let service = hyper::service::service_fn(move |req| {
        let gw = gw.clone();
        let peer = peer.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(gw, req, peer).await) }
    });
    let io = hyper_util::rt::TokioIo::new(Rewind {
        prefix,
        inner: stream,
    });
    let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Resolves when the gateway starts shutting down.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
