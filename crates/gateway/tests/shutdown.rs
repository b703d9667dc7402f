//! Scenario 8 of issue 16, graceful shutdown: the gateway is stopped (the future `serve` was
//! given resolves, as SIGTERM does in `gatehouse gateway`) while keep-alive clients send
//! requests to a backend that takes 200 ms to answer. Every request sent before the signal
//! gets its answer, new connections are refused once the listener is closed, and `serve`
//! returns within the drain bound.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A keep-alive backend that answers every request `delay` after its head arrived.
async fn backend(delay: Duration) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..i + 4);
                        tokio::time::sleep(delay).await;
                        let res = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nslept";
                        if s.write_all(res).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// Requests in flight at the signal (a backend taking 200 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_gateway_with_requests_in_flight_answers_them_all() {
    stop_under_load(Duration::from_millis(200)).await;
}

/// Requests arriving on keep-alive connections as the signal lands (a backend answering at
/// once): a request already in the gateway's socket when it looks for the next one is served,
/// not dropped with the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_gateway_serves_requests_already_sent_on_idle_connections() {
    stop_under_load(Duration::ZERO).await;
}

async fn stop_under_load(delay: Duration) {
    let backend = backend(delay).await;
    let config = format!(
        "swagger: \"2.0\"\ninfo: {{title: t, version: 1.0.0}}\nhost: api.example\nx-google-backend:\n  address: {backend}\npaths:\n  /{{x=**}}:\n    get: {{operationId: g}}\n"
    );
    let gw = gatehouse_gateway::Gateway::new(
        &config,
        None,
        gatehouse_gateway::GatewayOptions {
            threads: Some(2),
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(gatehouse_gateway::serve(gw, listener, async {
        let _ = stopped.await;
    }));

    let request = b"GET /slow HTTP/1.1\r\nhost: api.example\r\n\r\n";
    let signalled = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let at = signalled.clone();
    let report = tokio::task::spawn_blocking(move || {
        gatehouse_testkit::drain(addr, request, 32, Duration::from_millis(700), move || {
            *at.lock().unwrap() = Some(Instant::now());
            let _ = stop.send(());
        })
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(35), served)
        .await
        .expect("serve returns within its drain bound")
        .unwrap()
        .unwrap();
    let stopped_in = signalled.lock().unwrap().unwrap().elapsed();

    assert!(report.sent_before >= 32, "{report:?}");
    assert!(
        report.failed_before.is_empty(),
        "requests sent before the signal failed: {report:?}"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "a new connection was accepted after the stop"
    );
    assert!(stopped_in < Duration::from_secs(5), "{stopped_in:?}");
}
