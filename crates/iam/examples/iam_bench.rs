//! IAM throughput, in process (bench/iam/run.sh runs it and writes docs/benchmarks.md):
//! permission checks per second (cached policies, allowed and denied, each one audited),
//! audit-log write rate, ID-token and access-token mint rates, bearer authentication rate.
//!
//! `cargo run --release -p gatehouse-iam --example iam_bench -- [--database-url URL] [--seconds S]`
//! Prints one JSON object per measurement.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_iam::{Iam, IamConfig, Principal};
use gatehouse_keyring::SystemClock;
use gatehouse_store::Store;
use serde_json::json;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Runs `op` on `tasks` concurrent tasks for `secs`; returns operations per second.
async fn rate<F, Fut>(tasks: usize, secs: f64, op: F) -> (f64, u64)
where
    F: Fn(u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let op = op.clone();
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                for _ in 0..64 {
                    op(n * tasks as u64 + t as u64).await;
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    (total as f64 / started.elapsed().as_secs_f64(), total)
}

fn emit(v: serde_json::Value) {
    println!("{v}");
}

#[tokio::main]
async fn main() {
    let secs: f64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let dir = std::env::temp_dir().join(format!("iam-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = arg("--database-url")
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.join("iam.db").display()));
    let backend = if url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    let store = Store::connect(&url).await.unwrap();
    let master = Arc::new(gatehouse_iam::MasterKey::generate().unwrap());
    let iam = Iam::new(store, Arc::new(SystemClock), master, IamConfig::default())
        .await
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // A project with two accounts and a few policies.
    let app = iam
        .create_account("bench-proj", "vote-app", "", "")
        .await
        .unwrap();
    let gw = iam
        .create_account("bench-proj", "gateway", "", "")
        .await
        .unwrap();
    for i in 0..20 {
        iam.edit_binding(
            &format!("projects/bench-proj/secrets/s{i}"),
            "roles/secretmanager.secretAccessor",
            &format!("serviceAccount:{}", app.email),
            true,
        )
        .await
        .unwrap();
    }
    iam.edit_binding(
        "projects/bench-proj/locations/us-central1/services/hello",
        "roles/run.invoker",
        &format!("serviceAccount:{}", gw.email),
        true,
    )
    .await
    .unwrap();
    let app_p = Principal::ServiceAccount {
        email: app.email.clone(),
        unique_id: app.unique_id.clone(),
    };
    let gw_p = Principal::ServiceAccount {
        email: gw.email.clone(),
        unique_id: gw.unique_id.clone(),
    };

    // Permission checks: half allowed (on the resource), half denied (resource, then project).
    for tasks in [1, cores] {
        let (iam2, a, g) = (iam.clone(), app_p.clone(), gw_p.clone());
        let (per_sec, n) = rate(tasks, secs, move |i| {
            let (iam, a, g) = (iam2.clone(), a.clone(), g.clone());
            async move {
                let secret = format!("projects/bench-proj/secrets/s{}", i % 20);
                let who = if i % 2 == 0 { &a } else { &g };
                let allowed = iam
                    .check(who, "secretmanager.versions.access", &secret)
                    .await
                    .unwrap();
                assert_eq!(allowed, i % 2 == 0);
            }
        })
        .await;
        let t = Instant::now();
        iam.flush_audit().await;
        emit(
            json!({"kind": "checks", "backend": backend, "tasks": tasks, "per_sec": per_sec.round(), "checks": n,
                    "audit_drain_ms": t.elapsed().as_millis() as u64}),
        );
    }

    // Audit log, worst case: every decision distinct (no aggregation), so each is a row.
    let n = 100_000u64;
    let t = Instant::now();
    for i in 0..n {
        iam.check(
            &gw_p,
            "run.routes.invoke",
            &format!("projects/bench-proj/locations/us-central1/services/x{i}"),
        )
        .await
        .unwrap();
    }
    iam.flush_audit().await;
    emit(
        json!({"kind": "audit_distinct", "backend": backend, "records": n,
                "per_sec": (n as f64 / t.elapsed().as_secs_f64()).round()}),
    );

    // ID tokens: RSA-2048 signatures.
    for tasks in [1, cores] {
        let (iam2, acct) = (iam.clone(), app.clone());
        let (per_sec, n) = rate(tasks, secs, move |i| {
            let (iam, acct) = (iam2.clone(), acct.clone());
            async move {
                let aud = format!("https://svc-{}.example", i % 8);
                tokio::task::block_in_place(|| {
                    iam.mint_id_token(&acct, &aud, true, false).unwrap()
                });
            }
        })
        .await;
        emit(
            json!({"kind": "id_token_mint", "tasks": tasks, "per_sec": per_sec.round(), "tokens": n}),
        );
    }

    // Access tokens: mint, and authenticate (signature check + account state).
    let (iam2, acct) = (iam.clone(), app.clone());
    let (per_sec, n) = rate(1, secs, move |_| {
        let (iam, acct) = (iam2.clone(), acct.clone());
        async move {
            tokio::task::block_in_place(|| {
                iam.mint_access_token(&acct, &["s".into()], None, 3600)
                    .unwrap()
            });
        }
    })
    .await;
    emit(json!({"kind": "access_token_mint", "tasks": 1, "per_sec": per_sec.round(), "tokens": n}));
    let (token, _) = iam
        .mint_access_token(&app, &["s".into()], None, 3600)
        .unwrap();
    for tasks in [1, cores] {
        let (iam2, tok) = (iam.clone(), token.clone());
        let (per_sec, n) = rate(tasks, secs, move |_| {
            let (iam, tok) = (iam2.clone(), tok.clone());
            async move {
                iam.authenticate(&tok, &[]).await.unwrap();
            }
        })
        .await;
        emit(
            json!({"kind": "authenticate", "tasks": tasks, "per_sec": per_sec.round(), "tokens": n}),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
