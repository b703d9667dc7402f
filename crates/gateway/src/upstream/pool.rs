//! The fast path's connections to plain-HTTP/1.1 backends: connecting, the idle pool keyed by
//! `host:port`, and the probes that decide whether an idle connection may be used again.
//!
//! Owns [`UpConn`] and [`RawPool`]. Reads and writes no HTTP: what travels on a connection is
//! `h1::relay`'s business.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpStream;

/// How long connecting to a backend may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Pooled backend connections idle longer than this are probed before reuse.
const PROBE_AFTER: Duration = Duration::from_secs(1);
const MAX_IDLE_PER_BACKEND: usize = 256;

/// Idle plain-HTTP/1.1 backend connections, by `host:port`.
#[derive(Default)]
pub(crate) struct RawPool {
    idle: Mutex<HashMap<String, Vec<UpConn>>>,
}

impl RawPool {
    /// An idle connection to `authority` that is provably idle (see [`UpConn::idle`]); stale
    /// ones met on the way are dropped.
    pub(crate) fn checkout(&self, authority: &str) -> Option<UpConn> {
        while let Some(c) = self.take(authority) {
            if c.idle() {
                return Some(c);
            }
        }
        None
    }

    fn take(&self, authority: &str) -> Option<UpConn> {
        self.idle.lock().ok()?.get_mut(authority)?.pop()
    }

    /// Returns a connection to the pool if it is provably idle; otherwise it is closed.
    pub(crate) fn release(&self, mut conn: UpConn) {
        if !conn.idle() {
            return;
        }
        conn.idle_since = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            let list = match idle.get_mut(conn.authority.as_str()) {
                Some(l) => l,
                None => idle.entry(conn.authority.clone()).or_default(),
            };
            if list.len() < MAX_IDLE_PER_BACKEND {
                list.push(conn);
            }
        }
    }
}

/// A connection to a plain-HTTP/1.1 backend.
pub(crate) struct UpConn {
    pub(crate) stream: TcpStream,
    /// Bytes read from the backend and not yet relayed.
    pub(crate) buf: BytesMut,
    /// The `host:port` it was opened to.
    pub(crate) authority: String,
    pub(crate) idle_since: Instant,
}

impl UpConn {
    /// Opens a connection to `authority` (`host[:port]`, port 80 when absent).
    pub(crate) async fn connect(authority: &str) -> io::Result<UpConn> {
        let stream = if authority.rsplit_once(':').is_some_and(|(h, p)| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':')
        }) {
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority)).await
        } else {
            tokio::time::timeout(
                CONNECT_TIMEOUT,
                TcpStream::connect(format!("{authority}:80")),
            )
            .await
        }
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))??;
        stream.set_nodelay(true)?;
        Ok(UpConn {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            authority: authority.to_owned(),
            idle_since: Instant::now(),
        })
    }

    /// Whether an idle connection still looks usable: no EOF and no unexpected bytes. A
    /// connection a client connection keeps between its own requests is probed only after
    /// [`PROBE_AFTER`]; see [`Self::idle`] for connections shared through the pool.
    pub(crate) fn alive(&self) -> bool {
        self.idle_since.elapsed() < PROBE_AFTER || self.idle()
    }

    /// Whether the connection is provably idle: nothing buffered, and nothing (not even EOF)
    /// waiting in the socket. Only such a connection may pass to another client: bytes still
    /// arriving would be read as that client's response.
    pub(crate) fn idle(&self) -> bool {
        let mut probe = [0u8; 1];
        self.buf.is_empty()
            && matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A backend connection and the backend's end of it.
    async fn pair(listener: &TcpListener) -> (UpConn, TcpStream) {
        let authority = listener.local_addr().unwrap().to_string();
        let (conn, accepted) = tokio::join!(UpConn::connect(&authority), listener.accept());
        (conn.unwrap(), accepted.unwrap().0)
    }

    /// Waits until the gateway's end of `conn` has something to read (bytes or EOF).
    async fn readable(conn: &UpConn) {
        tokio::time::timeout(Duration::from_secs(5), conn.stream.readable())
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn idle_connections_are_handed_out_by_authority() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let pool = RawPool::default();
        let (conn, _backend) = pair(&listener).await;
        pool.release(conn);
        assert!(pool.checkout("127.0.0.1:1").is_none(), "another backend");
        let again = pool.checkout(&authority).expect("the idle connection");
        assert_eq!(again.authority, authority);
        assert!(pool.checkout(&authority).is_none(), "handed out once");
    }

    #[tokio::test]
    async fn connections_with_stray_bytes_or_closed_by_the_backend_are_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let pool = RawPool::default();

        let (conn, mut backend) = pair(&listener).await;
        backend.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        readable(&conn).await;
        assert!(!conn.idle());
        pool.release(conn);
        assert!(
            pool.checkout(&authority).is_none(),
            "bytes would reach the next client"
        );

        let (conn, backend) = pair(&listener).await;
        pool.release(conn);
        drop(backend);
        let parked = pool.take(&authority).unwrap();
        readable(&parked).await;
        pool.idle
            .lock()
            .unwrap()
            .entry(authority.clone())
            .or_default()
            .push(parked);
        assert!(
            pool.checkout(&authority).is_none(),
            "closed by the backend while pooled"
        );
    }
}
