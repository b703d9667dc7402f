//! The gateway's HTTP/1.1 wire behaviour, byte for byte: raw clients and raw backends on
//! 127.0.0.1 around a real gateway (chunked bodies both ways, pipelining, HTTP/1.0 clients,
//! 100-continue, HEAD, backends that close, deadlines over the body, HTTP/2 clients, bad heads,
//! and config files that change).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::routing::any;
use bytes::Bytes;
use gatehouse_gateway::{Gateway, GatewayOptions};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn spawn(app: Router) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(l, app).await.unwrap();
    });
    format!("http://{addr}")
}

/// Answers with the request body, streamed (so chunked), and says how the request was framed.
async fn echo(req: Request) -> axum::response::Response {
    let te = req
        .headers()
        .get("transfer-encoding")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let path = req.uri().path().to_owned();
    let data = req.into_body().collect().await.unwrap().to_bytes();
    if path == "/fixed" {
        return axum::response::Response::builder()
            .header("x-request-te", te)
            .body(Body::from(data))
            .unwrap();
    }
    let stream = futures::stream::iter(
        data.chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    axum::response::Response::builder()
        .header("x-request-te", te)
        .header("x-request-len", data.len().to_string())
        .body(Body::from_stream(stream))
        .unwrap()
}

/// A gateway in front of `backend` with every operation open; `deadline` in seconds.
async fn gateway(backend: &str, deadline: f64) -> (String, Arc<Gateway>) {
    let config = format!(
        "swagger: \"2.0\"\ninfo: {{title: t, version: 1.0.0}}\nhost: api.example\nx-google-backend:\n  address: {backend}\n  deadline: {deadline}\npaths:\n  /{{x=**}}:\n    get: {{operationId: g}}\n    post: {{operationId: p}}\n    head: {{operationId: h}}\n"
    );
    start(&config, None).await
}

async fn start(config: &str, path: Option<std::path::PathBuf>) -> (String, Arc<Gateway>) {
    let gw = Gateway::new(config, path, GatewayOptions::default(), None)
        .await
        .unwrap();
    let addr = common::serve(&gw).await;
    (addr.to_string(), gw)
}

/// One response read off a raw connection.
#[derive(Debug)]
struct Res {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Res {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (Content-Length, chunked or until close) from `s`, keeping any bytes
/// after it in `buf`.
async fn read_res(s: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Res {
    let (status, headers, len) = loop {
        let mut raw = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut raw);
        if let httparse::Status::Complete(n) = r.parse(buf).unwrap() {
            let h: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            break (r.code.unwrap(), h, n);
        }
        read_more(s, buf).await;
    };
    buf.drain(..len);
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
    } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                read_more(s, buf).await;
            };
            let size = usize::from_str_radix(
                std::str::from_utf8(&buf[..line_end])
                    .unwrap()
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap();
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                read_more(s, buf).await;
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(n) = get("content-length") {
        let n: usize = n.parse().unwrap();
        while buf.len() < n {
            read_more(s, buf).await;
        }
        body = buf.drain(..n).collect();
    } else {
        s.read_to_end(buf).await.unwrap();
        body = std::mem::take(buf);
    }
    Res {
        status,
        headers,
        body,
    }
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
        .await
        .expect("response in time")
        .unwrap();
    assert!(
        n > 0,
        "connection closed; have {:?}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

/// A new connection to `gw` with `raw` written on it.
async fn send(gw: &str, raw: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(raw).await.unwrap();
    s
}

/// Whether the peer closes the connection (EOF) within a second.
async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn chunked_both_ways_pipelining_and_head() {
    let backend = spawn(Router::new().fallback(any(echo))).await;
    let (gw, _) = gateway(&backend, 15.0).await;
    let mut s = TcpStream::connect(&gw).await.unwrap();
    // Three pipelined requests in one write: a chunked upload, a HEAD, a Content-Length upload.
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n\
          HEAD /fixed HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /fixed HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let r = read_res(&mut s, &mut buf, false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello world");
    assert_eq!(r.header("x-request-te"), Some("chunked"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let r = read_res(&mut s, &mut buf, true).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("0"));
    let r = read_res(&mut s, &mut buf, false).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
    assert_eq!(r.header("x-request-te"), Some(""));
    assert!(buf.is_empty());
    // Still open for more.
    s.write_all(b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_res(&mut s, &mut buf, false).await.status, 200);
}

#[tokio::test]
async fn http10_client_gets_the_data_and_a_close() {
    let backend = spawn(Router::new().fallback(any(echo))).await;
    let (gw, _) = gateway(&backend, 15.0).await;
    let mut s = TcpStream::connect(&gw).await.unwrap();
    s.write_all(b"POST /stream HTTP/1.0\r\nContent-Length: 2500\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[b'x'; 2500]).await.unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.unwrap();
    let text = String::from_utf8_lossy(&all);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(body, "x".repeat(2500));
}

#[tokio::test]
async fn expect_continue_and_large_bodies_stream_both_ways() {
    let backend = spawn(Router::new().fallback(any(echo))).await;
    let (gw, _) = gateway(&backend, 30.0).await;
    let mut s = TcpStream::connect(&gw).await.unwrap();
    let size = 8 * 1024 * 1024;
    s.write_all(
        format!("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\nExpect: 100-continue\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    // The backend's 100 Continue comes through before any body is sent.
    let mut buf = Vec::new();
    let r = read_res(&mut s, &mut buf, false).await;
    assert_eq!(r.status, 100);
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let (rd, mut wr) = s.into_split();
    let send = body.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&send).await.unwrap();
        wr
    });
    let mut s2 = {
        let wr = writer.await.unwrap();
        rd.reunite(wr).unwrap()
    };
    let r = read_res(&mut s2, &mut buf, false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-len"), Some(size.to_string().as_str()));
    assert!(r.body == body, "body relayed intact");
}

/// A backend speaking raw bytes: for each connection, reads one request head and runs `answer`.
async fn raw_backend<F, Fut>(answer: F) -> String
where
    F: Fn(TcpStream, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            n += 1;
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut b = [0u8; 1];
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                answer(s, n).await;
            });
        }
    });
    format!("http://{addr}")
}

/// A hostile or broken backend's response head, as the fast path reads it once: framing the
/// gateway cannot relay safely is a 503 (never relayed, so no client sees a body framed two
/// ways), interim 1xx heads pass through before the final one, and the fields the backend's
/// `Connection` names, and hop-by-hop fields, never reach the client, while `Connection` can
/// never make the gateway drop the response's own framing.
#[tokio::test]
async fn a_backends_response_head_is_checked_before_anything_is_relayed() {
    let backend = raw_backend(|mut s, n| async move {
        let head: &[u8] = match n {
            1 => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
            2 => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
            3 => b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nabc",
            4 => b"HTTP/1.1 2OO OK\r\n\r\n",
            5 => b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x-secret, content-length\r\nX-Secret: internal\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\nX-Kept: yes\r\n\r\nok",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        };
        let _ = s.write_all(head).await;
    })
    .await;
    let (gw, _) = gateway(&backend, 15.0).await;
    for (i, why) in [
        "two Content-Lengths",
        "a coding other than chunked",
        "a Content-Length that is not a number",
        "a status that is not a number",
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = send(&gw, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let mut buf = Vec::new();
        let r = read_res(&mut s, &mut buf, false).await;
        assert_eq!(r.status, 503, "{why} (connection {})", i + 1);
        assert!(!String::from_utf8_lossy(&r.body).contains("abc"), "{why}");
    }
    let mut s = send(&gw, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let mut buf = Vec::new();
    let interim = read_res(&mut s, &mut buf, false).await;
    assert_eq!(interim.status, 103);
    let r = read_res(&mut s, &mut buf, false).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    assert_eq!(r.header("content-length"), Some("2"), "framing kept");
    assert_eq!(r.header("x-kept"), Some("yes"));
    for dropped in ["x-secret", "keep-alive", "upgrade"] {
        assert_eq!(r.header(dropped), None, "{dropped} reached the client");
    }
}

#[tokio::test]
async fn backend_closing_idle_connections_and_until_close_bodies() {
    // Answers with keep-alive, then closes the connection: the gateway's next request must not
    // fail on the dead connection it kept.
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    let backend = raw_backend(move |mut s, n| {
        let closed_tx = closed_tx.clone();
        async move {
            let body = format!("conn {n}");
            s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            drop(s);
            closed_tx.send(n).unwrap();
        }
    })
    .await;
    let (gw, _) = gateway(&backend, 15.0).await;
    let mut s = TcpStream::connect(&gw).await.unwrap();
    let mut buf = Vec::new();
    for i in 1..=3 {
        s.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let r = read_res(&mut s, &mut buf, false).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(
            r.body,
            format!("conn {i}").as_bytes(),
            "a new connection each time"
        );
        assert_eq!(closed.recv().await, Some(i), "the backend closed it");
    }

    // No length, no chunking: the body ends when the backend closes; so does the client's
    // connection.
    let backend = raw_backend(|mut s, _| async move {
        s.write_all(b"HTTP/1.1 200 OK\r\nX-Kind: eof\r\n\r\nuntil the end")
            .await
            .unwrap();
    })
    .await;
    let (gw, _) = gateway(&backend, 15.0).await;
    let mut s = send(&gw, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\nuntil the end"), "{text}");
}

#[tokio::test]
async fn deadline_covers_the_whole_response() {
    let backend = raw_backend(|mut s, _| async move {
        // Headers at once, then the body stalls past the deadline.
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let (gw, _) = gateway(&backend, 0.5).await;
    let mut s = send(&gw, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let started = std::time::Instant::now();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut all))
        .await
        .expect("the gateway closes the connection at the deadline");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(String::from_utf8_lossy(&all).ends_with("\r\n\r\nabc"));

    // Nothing before the deadline: Envoy's 504.
    let backend = raw_backend(|s, _| async move {
        let _open = s;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let (gw, _) = gateway(&backend, 0.5).await;
    let mut s = send(&gw, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let mut buf = Vec::new();
    let r = read_res(&mut s, &mut buf, false).await;
    assert_eq!(r.status, 504);
    assert_eq!(
        r.body,
        br#"{"code":504,"message":"upstream request timeout"}"#
    );
}

#[tokio::test]
async fn bad_heads_are_refused_and_closed() {
    let backend = spawn(Router::new().fallback(any(echo))).await;
    let (gw, _) = gateway(&backend, 15.0).await;
    for (raw, status) in [
        (&b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"[..], 400),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
    ] {
        let mut s = TcpStream::connect(&gw).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut buf = Vec::new();
        let r = read_res(&mut s, &mut buf, false).await;
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(raw));
        assert!(closed(&mut s).await);
    }
    // A head that never ends: 431 once it passes 64 KiB.
    let mut s = TcpStream::connect(&gw).await.unwrap();
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..2000 {
        head.extend_from_slice(format!("x-h{i}: {}\r\n", "v".repeat(30)).as_bytes());
    }
    let _ = s.write_all(&head).await;
    let mut buf = Vec::new();
    assert_eq!(read_res(&mut s, &mut buf, false).await.status, 431);

    // Malformed chunked upload: 400, and the backend's connection is not reused for garbage.
    let mut s = TcpStream::connect(&gw).await.unwrap();
    s.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let r = read_res(&mut s, &mut buf, false).await;
    assert!(r.status == 400 || r.status == 503, "{}", r.status);
}

#[tokio::test]
async fn http2_clients_with_prior_knowledge() {
    let backend = spawn(Router::new().fallback(any(echo))).await;
    let (gw, _) = gateway(&backend, 15.0).await;
    let s = TcpStream::connect(&gw).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let req = http::Request::post(format!("http://{gw}/h2/{i}"))
            .body(http_body_util::Full::new(Bytes::from(format!("body {i}"))))
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("body {i}"));
    }
}

/// Waits (20 s at most) until the gateway's reload task reports `done`.
async fn reloaded(
    reloads: &mut tokio::sync::watch::Receiver<gatehouse_gateway::ReloadStatus>,
    done: impl FnMut(&gatehouse_gateway::ReloadStatus) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(20), reloads.wait_for(done))
        .await
        .expect("the reload task reported in time")
        .expect("the gateway is running");
}

#[tokio::test]
async fn a_changed_config_file_is_applied_and_a_bad_one_is_not() {
    let backend = spawn(Router::new().fallback(any(echo))).await;
    let dir = gatehouse_testkit::temp_dir("gw-watch").unwrap();
    let file = dir.path().join("api.yaml");
    let config = |path: &str| {
        format!(
            "swagger: \"2.0\"\ninfo: {{title: t, version: 1.0.0}}\nhost: api.example\nx-google-backend:\n  address: {backend}\npaths:\n  {path}:\n    get: {{operationId: op}}\n"
        )
    };
    std::fs::write(&file, config("/one")).unwrap();
    let (gw, gateway) = start(&config("/one"), Some(file.clone())).await;
    let mut reloads = gateway.reload_status();
    tokio::spawn(gateway.clone().watch_config(Duration::from_millis(50)));
    let http = reqwest::Client::new();
    let status = |p: &'static str| {
        let http = http.clone();
        let gw = gw.clone();
        async move {
            http.get(format!("http://{gw}{p}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("/one").await, 200);
    // An editor's atomic rename.
    let tmp = dir.path().join("api.yaml.tmp");
    std::fs::write(&tmp, config("/two")).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    reloaded(&mut reloads, |s| s.attempts >= 1).await;
    assert_eq!(gateway.active().version, 2, "{:?}", *reloads.borrow());
    assert_eq!(status("/two").await, 200);
    assert_eq!(status("/one").await, 404);
    // A broken file: refused, and the running version stays.
    std::fs::write(&file, "swagger: \"2.0\"\npaths: [").unwrap();
    reloaded(&mut reloads, |s| s.last_error.is_some()).await;
    assert_eq!(gateway.active().version, 2);
    assert_eq!(status("/two").await, 200);
    // Fixed again: applied.
    std::fs::write(&file, config("/three")).unwrap();
    reloaded(&mut reloads, |s| s.last_error.is_none()).await;
    assert_eq!(gateway.active().version, 3);
    assert_eq!(status("/three").await, 200);
}

#[tokio::test]
async fn a_swapped_symlink_is_followed_and_sighup_style_reloads_share_the_version_sequence() {
    let backend = spawn(Router::new().fallback(any(echo))).await;
    let dir = gatehouse_testkit::temp_dir("gw-link").unwrap();
    let config = |path: &str| {
        format!(
            "swagger: \"2.0\"\ninfo: {{title: t, version: 1.0.0}}\nhost: api.example\nx-google-backend:\n  address: {backend}\npaths:\n  {path}:\n    get: {{operationId: op}}\n"
        )
    };
    // A Kubernetes-style mount: the config is a link into a versioned directory.
    for v in ["v1", "v2"] {
        std::fs::create_dir(dir.path().join(v)).unwrap();
        std::fs::write(
            dir.path().join(v).join("api.yaml"),
            config(&format!("/{v}")),
        )
        .unwrap();
    }
    let link = dir.path().join("api.yaml");
    std::os::unix::fs::symlink("v1/api.yaml", &link).unwrap();
    let (gw, gateway) = start(&config("/v1"), Some(link.clone())).await;
    let mut reloads = gateway.reload_status();
    tokio::spawn(gateway.clone().watch_config(Duration::from_millis(50)));
    // The link swapped atomically to the other directory.
    let tmp = dir.path().join("api.yaml.new");
    std::os::unix::fs::symlink("v2/api.yaml", &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    reloaded(&mut reloads, |s| s.attempts >= 1).await;
    assert_eq!(gateway.active().version, 2, "{:?}", *reloads.borrow());
    let res = reqwest::get(format!("http://{gw}/v2")).await.unwrap();
    assert_eq!(res.status(), 200);
    // The watcher is in place now (the first change may have been seen by its start-up check):
    // swapped back, the change is seen through a file-system event.
    let tmp = dir.path().join("api.yaml.new");
    std::os::unix::fs::symlink("v1/api.yaml", &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    reloaded(&mut reloads, |s| s.attempts >= 2).await;
    assert_eq!(gateway.active().version, 3, "{:?}", *reloads.borrow());
    let res = reqwest::get(format!("http://{gw}/v1")).await.unwrap();
    assert_eq!(res.status(), 200);
    // An explicit reload (SIGHUP, the admin API) of the same file makes the next version; the
    // watcher does not apply that content a second time.
    assert_eq!(gateway.reload().await.unwrap(), 4);
    assert_eq!(gateway.versions(), (vec![1, 2, 3, 4], 4));
}
