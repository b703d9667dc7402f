//! Overload and abuse at the gateway (issue #16 scenario 5, docs/reliability.md §5): many idle
//! connections, slow heads and bodies, oversized bodies. Attacker-style: each test sends what
//! an abusive client would and asserts the safe answer while a normal client is served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::RawBackend;
use gatehouse_gateway::{ConnectionLimits, Gateway, GatewayOptions};
use gatehouse_testkit::abusive::{push_body, read_until_closed as read_all};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A gateway in front of a recording backend (route deadline 1 s), with `limits`.
async fn gateway(limits: ConnectionLimits) -> (SocketAddr, RawBackend) {
    let (backend, seen) = RawBackend::start().await;
    let config = format!(
        "swagger: \"2.0\"\ninfo: {{title: t, version: 1.0.0}}\nhost: api.example\n\
         x-google-backend:\n  address: {backend}\n  deadline: 1.0\n\
         paths:\n  /{{x=**}}:\n    get: {{operationId: g}}\n    post: {{operationId: p}}\n"
    );
    let options = GatewayOptions {
        threads: Some(1),
        limits,
        ..Default::default()
    };
    let gw = Gateway::new(&config, None, options, None).await.unwrap();
    (common::serve(&gw).await, seen)
}

fn limits() -> ConnectionLimits {
    ConnectionLimits {
        head_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(60),
        max_request_body: 64 * 1024,
    }
}

/// One GET on a fresh connection; the status.
async fn get(addr: SocketAddr) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nhost: api.example\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    status(&read_all(&mut s).await)
}

fn status(response: &[u8]) -> u16 {
    std::str::from_utf8(response.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn body_of(response: &[u8]) -> serde_json::Value {
    let at = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    serde_json::from_slice(&response[at..]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_are_held_while_valid_requests_are_served() {
    gatehouse_gateway::raise_open_files_limit().unwrap();
    let (addr, _) = gateway(limits()).await;
    // 2,000 clients connect and send nothing; the gateway and this test each hold 2,000.
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    for _ in 0..50 {
        assert_eq!(get(addr).await, 200);
    }
    // Every idle connection is still open and served: nothing was refused or dropped.
    let mut answered = 0;
    for s in &mut idle {
        s.write_all(b"GET /ok HTTP/1.1\r\nhost: api.example\r\n\r\n")
            .await
            .unwrap();
    }
    for s in &mut idle {
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert_eq!(
            status(&buf[..n]),
            200,
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        answered += 1;
    }
    assert_eq!(answered, 2000);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let (addr, _) = gateway(ConnectionLimits {
        idle_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), read_all(&mut s))
        .await
        .expect("an idle connection must be closed by the gateway");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_heads_are_cut_at_the_deadline_while_others_are_served() {
    let (addr, seen) = gateway(limits()).await;
    let started = Instant::now();
    // 20 clients send a head one byte every 200 ms: it would take 10 s to complete.
    let slow: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let head = b"GET /slow HTTP/1.1\r\nhost: api.example\r\nx-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
                for b in head {
                    if s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    // The gateway's answer (and its close) ends the trickle.
                    let mut probe = [0u8; 512];
                    let peek = tokio::time::timeout(Duration::from_millis(1), s.peek(&mut probe));
                    if let Ok(Ok(n)) = peek.await
                        && n > 0
                    {
                        break;
                    }
                }
                let got = read_all(&mut s).await;
                (status(&got), started.elapsed())
            })
        })
        .collect();
    // Meanwhile a normal client is served, request after request.
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(2) {
        assert_eq!(get(addr).await, 200);
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served >= 10, "{served}");
    for s in slow {
        let (status, at) = s.await.unwrap();
        assert_eq!(status, 408);
        assert!(
            at >= Duration::from_millis(1900) && at < Duration::from_secs(5),
            "closed after {at:?}; the head deadline is 2 s"
        );
    }
    assert!(seen.seen().iter().all(|s| s.path != "/slow"));
}

#[tokio::test]
async fn a_slow_body_is_cut_by_the_route_deadline() {
    let (addr, _) = gateway(limits()).await;
    let started = Instant::now();
    let (mut r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
    w.write_all(b"POST /up HTTP/1.1\r\nhost: api.example\r\ncontent-length: 100\r\n\r\n")
        .await
        .unwrap();
    // One byte a second, for longer than the route's 1 s deadline.
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if w.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut got)).await;
    trickle.abort();
    assert!(read.is_ok(), "the gateway must close the connection");
    assert_eq!(status(&got), 504, "{}", String::from_utf8_lossy(&got));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_oversized_content_length_is_refused_before_the_body_is_read() {
    let (addr, seen) = gateway(limits()).await;
    let started = Instant::now();
    // One GiB announced; the limit is 64 KiB.
    let (got, written) = push_body(
        addr,
        b"POST /up HTTP/1.1\r\nhost: api.example\r\ncontent-length: 1073741824\r\n\r\n",
        vec![b'x'; 64 * 1024],
    )
    .await;
    assert_eq!(status(&got), 413, "{}", String::from_utf8_lossy(&got));
    assert_eq!(
        body_of(&got),
        serde_json::json!({"code": 413, "message": "Payload Too Large"})
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    // The gateway stopped reading: the client could not push more than the kernel's socket
    // buffers and the 1 MiB the gateway drops while it closes.
    assert!(
        written < 16 * 1024 * 1024,
        "the client wrote {written} bytes"
    );
    assert!(seen.seen().is_empty(), "the backend was reached");
    // The next client is served.
    assert_eq!(get(addr).await, 200);
}

#[tokio::test]
async fn a_chunked_body_past_the_limit_is_cut_with_413() {
    let (addr, seen) = gateway(limits()).await;
    // 4 KiB chunks without end; the limit is 64 KiB.
    let (got, written) = push_body(
        addr,
        b"POST /up HTTP/1.1\r\nhost: api.example\r\ntransfer-encoding: chunked\r\n\r\n",
        [&b"1000\r\n"[..], &[b'x'; 4096], b"\r\n"].concat(),
    )
    .await;
    assert_eq!(status(&got), 413, "{}", String::from_utf8_lossy(&got));
    assert_eq!(body_of(&got)["message"], "Payload Too Large");
    assert!(
        written < 16 * 1024 * 1024,
        "the client wrote {written} bytes"
    );
    // The backend got at most the limit's worth of data, and no complete request.
    let raw = seen.raw();
    assert!(
        raw.len() < 80 * 1024,
        "the backend received {} bytes",
        raw.len()
    );
    assert!(seen.seen().is_empty(), "the backend saw a whole request");
    assert_eq!(get(addr).await, 200);

    // A chunked body under the limit still goes through.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /small HTTP/1.1\r\nhost: api.example\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status(&read_all(&mut s).await), 200);
    assert_eq!(seen.seen().last().unwrap().body, b"hello");
}
