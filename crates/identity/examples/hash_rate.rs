//! Password-hash throughput on this machine, measured the way the server hashes: argon2id at our
//! parameters, one thread per core, each reusing its working memory.
//!
//! `cargo run --release -p gatehouse-identity --example hash_rate [seconds]`

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use gatehouse_identity::password::{self, Check, Scratch};

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let stored = password::hash("benchmark-password").expect("hash");
    for (name, verify) in [("argon2id hash", false), ("argon2id verify", true)] {
        let start = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let stored = stored.clone();
                std::thread::spawn(move || {
                    let mut scratch = Scratch::default();
                    let mut n = 0u64;
                    while start.elapsed() < Duration::from_secs(secs) {
                        if verify {
                            assert_eq!(
                                password::verify_with(&mut scratch, "benchmark-password", &stored),
                                Check::Match
                            );
                        } else {
                            password::hash_with(&mut scratch, "benchmark-password").expect("hash");
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let rate = total as f64 / start.elapsed().as_secs_f64();
        println!(
            "{name}: {rate:.1}/s on {threads} threads ({:.1} ms each)",
            1000.0 * threads as f64 / rate
        );
    }
}
