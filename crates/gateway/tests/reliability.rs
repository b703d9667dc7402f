//! The gateway under the faults of issue 16, short forms (the long forms are
//! `bench/reliability/gateway_faults.py`): config versions switched many times a second under
//! load fail no request, and a backend killed under load gives clients fast 503s (never a hang
//! or a connection closed without an answer) until it is back, when traffic flows again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_gateway::{Gateway, GatewayOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A keep-alive HTTP/1.1 backend answering every request with `name`; [`Backend::kill`]
/// closes the listener and every connection at once, as a crashed process would.
struct Backend {
    addr: std::net::SocketAddr,
    tasks: JoinSet<()>,
}

impl Backend {
    async fn start(name: &'static str, addr: &str) -> Backend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                conns.spawn(serve(s, name));
            }
        });
        Backend { addr, tasks }
    }

    /// Aborting the accept task drops the listener and, with its JoinSet, every connection.
    async fn kill(mut self) -> std::net::SocketAddr {
        self.tasks.shutdown().await;
        self.addr
    }
}

async fn serve(mut s: TcpStream, name: &'static str) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            let res = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                name.len()
            );
            if s.write_all(res.as_bytes()).await.is_err() {
                return;
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn config(backend: std::net::SocketAddr, extra_path: &str) -> String {
    format!(
        "swagger: \"2.0\"\ninfo: {{title: t, version: 1.0.0}}\nhost: api.example\nx-google-backend:\n  address: http://{backend}\n  deadline: 5.0\npaths:\n  /x:\n    get: {{operationId: x}}\n  {extra_path}:\n    get: {{operationId: extra}}\n"
    )
}

async fn start(config: &str) -> (String, Arc<Gateway>) {
    let gw = Gateway::new(config, None, GatewayOptions::default(), None)
        .await
        .unwrap();
    let addr = common::serve(&gw).await;
    (addr.to_string(), gw)
}

/// What the request loops saw.
#[derive(Default)]
struct Tally {
    ok_a: AtomicU64,
    ok_b: AtomicU64,
    unavailable: AtomicU64,
    /// Anything else: another status, a transport error, a request slower than the bound.
    failed: AtomicU64,
    slowest_ms: AtomicU64,
}

/// `n` keep-alive clients asking for `/x` until `stop`.
fn load(gw: &str, n: usize, stop: Arc<AtomicBool>, tally: Arc<Tally>) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (url, stop, tally) = (format!("http://{gw}/x"), stop.clone(), tally.clone());
        set.spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let res = http.get(&url).send().await;
                let ms = t0.elapsed().as_millis() as u64;
                tally.slowest_ms.fetch_max(ms, Ordering::Relaxed);
                let counter = match res {
                    Ok(r) if r.status() == 200 => match r.text().await.as_deref() {
                        Ok("a") => &tally.ok_a,
                        Ok("b") => &tally.ok_b,
                        _ => &tally.failed,
                    },
                    Ok(r) if r.status() == 503 => &tally.unavailable,
                    _ => &tally.failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    set
}

/// Issue 16 scenario 4: the config switched between two backends (and two route sets) every
/// 50 ms for 3 s under 8 keep-alive clients: every request answered 200 by one backend or
/// the other, both backends served, and the last version is the one in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_switches_under_load_fail_no_request() {
    let a = Backend::start("a", "127.0.0.1:0").await;
    let b = Backend::start("b", "127.0.0.1:0").await;
    let (gw_addr, gw) = start(&config(a.addr, "/only-a")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut loops = load(&gw_addr, 8, stop.clone(), tally.clone());
    let until = Instant::now() + Duration::from_secs(3);
    let mut switches = 0u64;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let next = if switches.is_multiple_of(2) {
            config(b.addr, "/only-b")
        } else {
            config(a.addr, "/only-a")
        };
        gw.apply(&next).await.unwrap();
        switches += 1;
    }
    stop.store(true, Ordering::Relaxed);
    while loops.join_next().await.is_some() {}
    let (ok_a, ok_b) = (
        tally.ok_a.load(Ordering::Relaxed),
        tally.ok_b.load(Ordering::Relaxed),
    );
    let failed = tally.failed.load(Ordering::Relaxed) + tally.unavailable.load(Ordering::Relaxed);
    assert_eq!(failed, 0, "failed requests across {switches} switches");
    assert!(switches >= 40, "only {switches} switches in 3 s");
    assert!(ok_a > 100 && ok_b > 100, "a served {ok_a}, b served {ok_b}");
    assert_eq!(gw.active().version, switches + 1);
}

/// Issue 16 scenario 2: the backend killed under load (listener and every connection gone at
/// once). Requests get 503 promptly, not a hang and not a closed connection without an
/// answer; once a backend listens on the address again, traffic is 200 within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_gives_fast_503s_and_traffic_resumes_when_it_is_back() {
    let a = Backend::start("a", "127.0.0.1:0").await;
    let (gw_addr, _gw) = start(&config(a.addr, "/only-a")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut loops = load(&gw_addr, 8, stop.clone(), tally.clone());
    while tally.ok_a.load(Ordering::Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let addr = a.kill().await;
    let killed = Instant::now();
    while tally.unavailable.load(Ordering::Relaxed) < 50 {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "no 503 after the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Back on the same address: traffic flows again.
    let ok_before = tally.ok_a.load(Ordering::Relaxed);
    let _back = Backend::start("a", &addr.to_string()).await;
    let restarted = Instant::now();
    while tally.ok_a.load(Ordering::Relaxed) < ok_before + 100 {
        assert!(
            restarted.elapsed() < Duration::from_secs(1),
            "traffic did not resume within 1 s of the backend"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while loops.join_next().await.is_some() {}
    assert_eq!(
        tally.failed.load(Ordering::Relaxed),
        0,
        "answers other than 200 or 503, or no answer"
    );
    let slowest = tally.slowest_ms.load(Ordering::Relaxed);
    assert!(slowest < 1000, "slowest request {slowest} ms");
}
