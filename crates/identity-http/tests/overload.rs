//! Overload and abuse at the identity server (issue #16 scenario 5, docs/reliability.md §5):
//! slow heads and bodies, oversized bodies, and a sign-in flood while other users are served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Builder, Server, message};
use gatehouse_identity::RateLimits;
use gatehouse_testkit::abusive::{push_body, read_until_closed as read_all};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEYS: &str = "/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com";

async fn server(read_timeout: Duration, limits: RateLimits) -> Server {
    Builder {
        limits,
        proxy_hops: 1,
        read_timeout: Some(read_timeout),
        ..Builder::default()
    }
    .start()
    .await
}

fn addr(s: &Server) -> String {
    s.url.trim_start_matches("http://").to_owned()
}

fn json_body(response: &[u8]) -> Value {
    let at = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    serde_json::from_slice(&response[at..]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_idle_connections_are_closed_while_others_are_served() {
    let s = server(Duration::from_secs(1), RateLimits::off()).await;
    let started = Instant::now();
    let target = addr(&s);
    let slow: Vec<_> = (0..10)
        .map(|i| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut c = TcpStream::connect(target).await.unwrap();
                // Half trickle a head a byte every 200 ms, half send nothing at all.
                if i % 2 == 0 {
                    for b in b"GET /robot/v1/metadata/x509/securetoken@system.gserviceaccount.com HTTP/1.1\r\n" {
                        if c.write_all(&[*b]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                let got = read_all(&mut c).await;
                (got, started.elapsed())
            })
        })
        .collect();
    // And one that asks once, then keeps its connection open without a second request.
    let kept = tokio::spawn({
        let target = target.clone();
        async move {
            let mut c = TcpStream::connect(target).await.unwrap();
            let get = format!("GET {KEYS} HTTP/1.1\r\nhost: x\r\n\r\n");
            c.write_all(get.as_bytes()).await.unwrap();
            let got = read_all(&mut c).await;
            (got, started.elapsed())
        }
    });
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(1) {
        assert_eq!(s.get(KEYS).await.status().as_u16(), 200);
        served += 1;
    }
    assert!(served >= 5, "{served}");
    let (got, at) = kept.await.unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        at < Duration::from_secs(5),
        "an idle keep-alive connection closed after {at:?}"
    );
    for c in slow {
        let (got, at) = c.await.unwrap();
        assert!(
            !got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        assert!(
            at >= Duration::from_millis(900) && at < Duration::from_secs(5),
            "closed after {at:?}; the read timeout is 1 s"
        );
    }
}

#[tokio::test]
async fn a_slow_body_is_answered_408_and_closed() {
    let s = server(Duration::from_secs(1), RateLimits::off()).await;
    let started = Instant::now();
    let (mut r, mut w) = TcpStream::connect(addr(&s)).await.unwrap().into_split();
    w.write_all(
        b"POST /identitytoolkit.googleapis.com/v1/accounts:signUp?key=k HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..99 {
            if w.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut got)).await;
    trickle.abort();
    assert!(read.is_ok(), "the server must close the connection");
    assert!(
        got.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(json_body(&got)["error"]["code"], 408);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413_before_it_is_read() {
    let s = server(Duration::from_secs(5), RateLimits::off()).await;
    let started = Instant::now();
    let (got, written) = push_body(
        addr(&s).parse().unwrap(),
        b"POST /identitytoolkit.googleapis.com/v1/accounts:signUp?key=k HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n",
        vec![b' '; 64 * 1024],
    )
    .await;
    assert!(
        got.starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let body = json_body(&got);
    assert_eq!(body["error"]["code"], 413);
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    assert!(started.elapsed() < Duration::from_secs(8));
    // The server did not read the announced gigabyte (the limit is 16 MiB).
    assert!(
        written < 24 * 1024 * 1024,
        "the client wrote {written} bytes"
    );
}

/// `signInWithPassword` as the client at `ip` (the server trusts one proxy hop).
async fn sign_in(s: &Server, ip: &str, email: &str, password: &str) -> (u16, String) {
    let url = format!(
        "{}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=k",
        s.url
    );
    let res = s
        .http
        .post(url)
        .header("x-forwarded-for", ip)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    (status, message(&body))
}

/// While `flood` runs, another user looks up their account again and again: every lookup
/// answers 200 within a loose bound. The flood's results.
async fn flood_while_looking_up<F>(s: &Server, flood: F) -> Vec<(u16, String)>
where
    F: std::future::Future<Output = Vec<(u16, String)>> + Send + 'static,
{
    let (st, b) = s
        .call(
            "signInWithPassword",
            "k",
            json!({"email": "other@example.com", "password": "other-password"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let id_token = b["idToken"].as_str().unwrap().to_owned();
    let flood = tokio::spawn(flood);
    let mut lookups = 0;
    while !flood.is_finished() {
        let t = Instant::now();
        let (st, b) = s.call("lookup", "k", json!({"idToken": id_token})).await;
        assert_eq!(st, 200, "{b}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "a lookup took {:?}",
            t.elapsed()
        );
        lookups += 1;
    }
    assert!(lookups > 0);
    flood.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_flood_is_limited_per_ip_and_per_account_and_others_are_served() {
    let limits = RateLimits {
        sign_in_per_ip_per_min: 20,
        failed_sign_in_per_account: 5,
        ..RateLimits::off()
    };
    let s = std::sync::Arc::new(server(Duration::from_secs(30), limits).await);
    s.sign_up("victim@example.com", "victim-password").await;
    s.sign_up("bystander@example.com", "bystander-password")
        .await;
    s.sign_up("other@example.com", "other-password").await;

    // One IP, 100 guesses at many accounts: 20 are let through, the rest refused.
    let flooder = s.clone();
    let results = flood_while_looking_up(&s, async move {
        let tries = (0..100).map(|i| {
            let s = flooder.clone();
            async move { sign_in(&s, "203.0.113.7", &format!("u{i}@example.com"), "guess").await }
        });
        futures_join_all(tries).await
    })
    .await;
    let limited = results
        .iter()
        .filter(|r| *r == &(400, "TOO_MANY_ATTEMPTS_TRY_LATER".to_owned()))
        .count();
    assert_eq!(limited, 80, "{results:?}");
    assert!(results.iter().all(|(st, _)| *st == 400), "{results:?}");

    // 100 IPs guessing one account's password: locked after 5 failures.
    let flooder = s.clone();
    let results = flood_while_looking_up(&s, async move {
        let tries = (0..100).map(|i| {
            let s = flooder.clone();
            async move {
                sign_in(
                    &s,
                    &format!("198.51.100.{i}"),
                    "victim@example.com",
                    "guess",
                )
                .await
            }
        });
        futures_join_all(tries).await
    })
    .await;
    let limited = results
        .iter()
        .filter(|(_, m)| m == "TOO_MANY_ATTEMPTS_TRY_LATER")
        .count();
    assert!(limited >= 50, "{results:?}");
    assert!(results.iter().all(|(st, _)| *st == 400), "{results:?}");
    // The locked account is refused even with its password; others sign in.
    let (_, m) = sign_in(&s, "192.0.2.1", "victim@example.com", "victim-password").await;
    assert_eq!(m, "TOO_MANY_ATTEMPTS_TRY_LATER");
    let (st, _) = sign_in(
        &s,
        "192.0.2.1",
        "bystander@example.com",
        "bystander-password",
    )
    .await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_hashing_queue_is_refused_at_once_and_others_are_served() {
    // No rate limits: the password-hashing pool itself must hold.
    let s = std::sync::Arc::new(server(Duration::from_secs(30), RateLimits::off()).await);
    s.sign_up("other@example.com", "other-password").await;
    let flooder = s.clone();
    let started = Instant::now();
    let results = flood_while_looking_up(&s, async move {
        let tries = (0..600).map(|i| {
            let s = flooder.clone();
            async move {
                let t = Instant::now();
                let r = sign_in(
                    &s,
                    &format!("10.0.{}.{}", i / 250, i % 250),
                    "nobody@example.com",
                    "guess",
                )
                .await;
                (r, t.elapsed())
            }
        });
        let timed = futures_join_all(tries).await;
        let slowest_refusal = timed
            .iter()
            .filter(|((_, m), _)| m == "TOO_MANY_ATTEMPTS_TRY_LATER")
            .map(|(_, t)| *t)
            .max();
        // A refusal is immediate, not a wait in the queue (loose bound).
        assert!(slowest_refusal.is_none_or(|t| t < Duration::from_secs(10)));
        timed.into_iter().map(|(r, _)| r).collect()
    })
    .await;
    let refused = results
        .iter()
        .filter(|(_, m)| m == "TOO_MANY_ATTEMPTS_TRY_LATER")
        .count();
    let checked = results
        .iter()
        .filter(|(_, m)| m == "EMAIL_NOT_FOUND")
        .count();
    assert_eq!(refused + checked, 600, "{results:?}");
    assert!(refused > 0, "the queue never filled: {results:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// Runs the futures concurrently; their outputs in order.
async fn futures_join_all<T: Send + 'static>(
    futures: impl IntoIterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
