//! Abusive HTTP/1.1 clients for overload tests: one that reads until the server closes, and
//! one that announces a body and pushes it as fast as the server takes it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes (or resets) the connection; what came.
pub async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// Sends `head`, then `chunk` again and again as fast as the server takes it (for at most 5 s,
/// and until a write stalls for 500 ms or fails), while reading the answer (for at most 10 s).
/// The answer, and how many body bytes the client got to write.
pub async fn push_body(addr: SocketAddr, head: &[u8], chunk: Vec<u8>) -> (Vec<u8>, u64) {
    let Ok(s) = TcpStream::connect(addr).await else {
        return (Vec::new(), 0);
    };
    let (mut r, mut w) = s.into_split();
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let head = head.to_vec();
    let writer = tokio::spawn(async move {
        if w.write_all(&head).await.is_err() {
            return;
        }
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            match tokio::time::timeout(Duration::from_millis(500), w.write_all(&chunk)).await {
                Ok(Ok(())) => {
                    counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                // Refused, or nobody reads any more.
                _ => return,
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), r.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let _ = writer.await;
    (got, written.load(Ordering::Relaxed))
}
