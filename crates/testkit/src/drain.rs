//! Load across a graceful stop: keep-alive HTTP/1.1 clients on plain sockets send one request
//! after another while the server is told to stop, and every request is classified by whether
//! it was sent (its bytes in the server's socket) before the stop signal.
//!
//! Plain sockets, not an HTTP client library: the moment a request is "sent" is the moment
//! `write_all` returned, so "started before the signal" is exact and not a guess about a
//! client's internal queue.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What happened to the requests of a [`drain`] run.
#[derive(Debug, Clone, Default)]
pub struct DrainReport {
    /// Requests sent before the signal.
    pub sent_before: usize,
    /// Of those, the ones without a complete 2xx answer: each with what went wrong.
    pub failed_before: Vec<String>,
    /// Requests sent after the signal that were still answered (2xx).
    pub answered_after: usize,
    /// Connection attempts after the signal that were refused.
    pub refused_after: usize,
    /// The slowest answer to a request sent before the signal.
    pub slowest_before: Duration,
}

/// Runs `clients` keep-alive connections to `addr`, each sending `request` (a complete
/// HTTP/1.1 request) in a loop; after `warm_up` calls `signal` (which stops the server), then
/// keeps going until every client met a closed or refused connection (or 60 s passed).
pub fn drain(
    addr: SocketAddr,
    request: &[u8],
    clients: usize,
    warm_up: Duration,
    signal: impl FnOnce(),
) -> DrainReport {
    let signal_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let give_up = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<Outcome>>> = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let request = request.to_vec();
            let (signal_at, give_up, results) =
                (signal_at.clone(), give_up.clone(), results.clone());
            std::thread::spawn(move || client(addr, &request, &signal_at, &give_up, &results))
        })
        .collect();
    std::thread::sleep(warm_up);
    if let Ok(mut s) = signal_at.lock() {
        *s = Some(Instant::now());
    }
    signal();
    let deadline = Instant::now() + Duration::from_secs(60);
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    give_up.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let at = signal_at.lock().ok().and_then(|s| *s);
    let mut report = DrainReport::default();
    for o in results.lock().map(|r| r.clone()).unwrap_or_default() {
        match o {
            Outcome::Answered { sent, status, took } => {
                let before = at.is_none_or(|a| sent < a);
                if before {
                    report.sent_before += 1;
                    report.slowest_before = report.slowest_before.max(took);
                    if !(200..300).contains(&status) {
                        report.failed_before.push(format!("status {status}"));
                    }
                } else if (200..300).contains(&status) {
                    report.answered_after += 1;
                }
            }
            Outcome::Failed { sent, error } => {
                if at.is_none_or(|a| sent < a) {
                    report.sent_before += 1;
                    report.failed_before.push(error);
                }
            }
            Outcome::Refused => report.refused_after += 1,
        }
    }
    report
}

#[derive(Debug, Clone)]
enum Outcome {
    Answered {
        sent: Instant,
        status: u16,
        took: Duration,
    },
    Failed {
        sent: Instant,
        error: String,
    },
    /// A connection refused (or reset before a request was written) after the signal.
    Refused,
}

fn client(
    addr: SocketAddr,
    request: &[u8],
    signal_at: &Mutex<Option<Instant>>,
    give_up: &AtomicBool,
    results: &Mutex<Vec<Outcome>>,
) {
    let signalled = || signal_at.lock().map(|s| s.is_some()).unwrap_or(true);
    let record = |o: Outcome| {
        if let Ok(mut r) = results.lock() {
            r.push(o);
        }
    };
    let mut conn: Option<TcpStream> = None;
    while !give_up.load(Ordering::Relaxed) {
        let mut stream = match conn.take() {
            Some(s) => s,
            None => match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                    let _ = s.set_nodelay(true);
                    s
                }
                Err(_) if signalled() => {
                    record(Outcome::Refused);
                    return;
                }
                Err(e) => {
                    record(Outcome::Failed {
                        sent: Instant::now(),
                        error: format!("connect: {e}"),
                    });
                    return;
                }
            },
        };
        if let Err(e) = stream.write_all(request) {
            if signalled() {
                // The server closed this idle connection: no request was sent on it.
                continue;
            }
            record(Outcome::Failed {
                sent: Instant::now(),
                error: format!("write: {e}"),
            });
            continue;
        }
        let sent = Instant::now();
        match read_response(&mut stream) {
            Ok((status, close)) => {
                record(Outcome::Answered {
                    sent,
                    status,
                    took: sent.elapsed(),
                });
                if !close {
                    conn = Some(stream);
                }
            }
            Err(e) => record(Outcome::Failed {
                sent,
                error: format!("read: {e}"),
            }),
        }
    }
}

/// Reads one response (head and a `content-length` body): its status and whether the server
/// will close the connection.
fn read_response(s: &mut TcpStream) -> std::io::Result<(u16, bool)> {
    let mut buf = Vec::with_capacity(4096);
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {} bytes of the answer", buf.len()),
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = res.parse(&buf) else {
            continue;
        };
        let status = res.code.unwrap_or(0);
        let header = |name: &str| {
            res.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
        };
        let close = header("connection").is_some_and(|v| v.contains("close"));
        let len: usize = header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head + len {
            let n = s.read(&mut tmp)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed inside the body",
                ));
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        return Ok((status, close));
    }
}
