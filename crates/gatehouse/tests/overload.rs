//! Out of descriptors (issue #16 scenario 5, docs/reliability.md §5): the real `gatehouse`
//! binary, its gateway and identity server run with a hard limit of 64 open files, flooded with
//! more connections than that. Each must keep running, pause instead of spinning on `accept`
//! (one log line, not one per failed accept), and serve again once connections close.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use gatehouse_testkit::Spawned;

/// `gatehouse <args>` with soft and hard RLIMIT_NOFILE at 64 (it cannot raise them).
fn start_limited(args: &str) -> Spawned {
    let bin = env!("CARGO_BIN_EXE_gatehouse");
    let script = format!("ulimit -n 64 && exec {bin} {args}");
    Spawned::start(Path::new("/bin/sh"), &["-c".to_owned(), script]).unwrap()
}

/// One request on a fresh connection; the status line (empty if none came).
fn status_line(addr: &str, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET {path} HTTP/1.1\r\nhost: api.example\r\nconnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return String::new();
    }
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

fn out_of_descriptors_then_served_again(server: &Spawned, path: &str) {
    assert!(status_line(&server.addr, path).starts_with("HTTP/1.1 "));
    // 150 connections (or as many as the listen queue takes): more than the server can accept.
    let to: std::net::SocketAddr = server.addr.parse().unwrap();
    let flood: Vec<TcpStream> = (0..150)
        .map_while(|_| TcpStream::connect_timeout(&to, Duration::from_secs(1)).ok())
        .collect();
    assert!(flood.len() > 64);
    std::thread::sleep(Duration::from_secs(2));
    let failures = server
        .log()
        .iter()
        .filter(|l| l.contains("accept failed"))
        .count();
    // A pause that doubles to 1 s and one line per run of failures; a 10 ms retry that logged
    // each failure wrote ~200 lines in these 2 s.
    assert!(
        (1..=3).contains(&failures),
        "{failures} accept-failure lines"
    );
    drop(flood);
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let line = status_line(&server.addr, path);
        if line.starts_with("HTTP/1.1 ") {
            break;
        }
        assert!(
            Instant::now() < until,
            "not served again after the flood: {line:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn out_of_descriptors_the_gateway_pauses_and_serves_again() {
    let dir = gatehouse_testkit::temp_dir("overload-gw").unwrap();
    let config = dir.path().join("openapi.yaml");
    std::fs::write(
        &config,
        "swagger: \"2.0\"\ninfo: {title: t, version: 1.0.0}\nhost: api.example\npaths:\n  /x:\n    get: {operationId: g}\n",
    )
    .unwrap();
    let mut gw = start_limited(&format!(
        "gateway --config {} --listen 127.0.0.1:0 --watch-secs 0 --threads 1",
        config.display()
    ));
    out_of_descriptors_then_served_again(&gw, "/not-in-the-config");
    assert!(
        gw.wait_exit(Duration::ZERO).unwrap().is_none(),
        "the gateway died"
    );
}

#[test]
fn out_of_descriptors_the_identity_server_pauses_and_serves_again() {
    let dir = gatehouse_testkit::temp_dir("overload-id").unwrap();
    let mut id = start_limited(&format!(
        "identity --project demo-project --listen 127.0.0.1:0 --rate-limits off --data-dir {}",
        dir.path().display()
    ));
    out_of_descriptors_then_served_again(
        &id,
        "/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com",
    );
    assert!(
        id.wait_exit(Duration::ZERO).unwrap().is_none(),
        "identity died"
    );
}

#[test]
fn an_oversized_body_is_answered_413_and_not_logged_as_a_backend_failure() {
    // A backend that accepts and never answers: the gateway's answer can only be its own.
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = gatehouse_testkit::temp_dir("overload-413").unwrap();
    let config = dir.path().join("openapi.yaml");
    std::fs::write(
        &config,
        format!(
            "swagger: \"2.0\"\ninfo: {{title: t, version: 1.0.0}}\nhost: api.example\nx-google-backend:\n  address: http://{}\npaths:\n  /up:\n    post: {{operationId: up}}\n",
            backend.local_addr().unwrap()
        ),
    )
    .unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_gatehouse"));
    let args = format!(
        "gateway --config {} --listen 127.0.0.1:0 --watch-secs 0 --threads 1 --max-request-body 1024",
        config.display()
    );
    let gw = Spawned::start(bin, &args.split(' ').map(str::to_owned).collect::<Vec<_>>()).unwrap();
    let mut s = TcpStream::connect(&gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let chunk = [&b"1000\r\n"[..], &[b'x'; 4096], b"\r\n0\r\n\r\n"].concat();
    s.write_all(b"POST /up HTTP/1.1\r\nhost: api.example\r\ntransfer-encoding: chunked\r\n\r\n")
        .unwrap();
    s.write_all(&chunk).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    std::thread::sleep(Duration::from_millis(200));
    let log = gw.log();
    assert!(
        log.iter().all(|l| !l.contains("backend failed")),
        "a client's body logged as a backend failure: {log:?}"
    );
    drop(backend);
}
