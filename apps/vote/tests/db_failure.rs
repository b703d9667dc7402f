//! Issue 16 scenario 1, short form: the vote service on a managed PostgreSQL instance under a
//! steady stream of votes from several voters; the postmaster is killed with SIGKILL mid-run
//! and the voters carry on. Afterwards: every acknowledged vote is a row (and at most the votes
//! in flight at the kill are rows without an acknowledgement), every failure was a 503 within
//! the app's deadline, and votes succeed again within 2 s of the restarted server accepting
//! connections. The long form is `bench/reliability/db_failure.py`. And a database that stays
//! down is a 503 within the deadline, for a vote and for the page.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gatehouse_run::sql::Health;

const VOTERS: usize = 4;
/// Each voter's pause between two votes.
const PAUSE: Duration = Duration::from_millis(40);
/// The client gives up here: an answer later than this is a hang.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// Votes resume within this time of the database accepting connections again.
const RECOVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
struct Outcome {
    sent: Instant,
    done: Instant,
    /// 0: no HTTP answer (reset, timeout).
    status: u16,
}

impl Outcome {
    fn latency(&self) -> Duration {
        self.done - self.sent
    }
}

async fn voter(url: String, token: String, stop: Arc<AtomicBool>, out: Arc<Mutex<Vec<Outcome>>>) {
    let client = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .unwrap();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let team = if n.is_multiple_of(2) { "CATS" } else { "DOGS" };
        n += 1;
        let sent = Instant::now();
        let res = client
            .post(format!("{url}/"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("team={team}"))
            .send()
            .await;
        let status = match res {
            Ok(r) => {
                let s = r.status().as_u16();
                let _ = r.bytes().await;
                s
            }
            Err(_) => 0,
        };
        out.lock().unwrap().push(Outcome {
            sent,
            done: Instant::now(),
            status,
        });
        tokio::time::sleep(PAUSE).await;
    }
}

/// Rows in the votes table and the tally's sum, read over the instance's socket.
async fn stored(socket_dir: &std::path::Path) -> (i64, i64) {
    use sqlx::Connection as _;
    let opts = sqlx::postgres::PgConnectOptions::new_without_pgpass()
        .socket(socket_dir)
        .username(DB_USER)
        .password(DB_PASSWORD)
        .database("votes");
    let mut c = sqlx::PgConnection::connect_with(&opts).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM pet_votes")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let tally: i64 = sqlx::query_scalar("SELECT sum(votes)::int8 FROM pet_votes_tally")
        .fetch_one(&mut c)
        .await
        .unwrap();
    (rows, tally)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_votes_survive_a_killed_postmaster() {
    let idp = identity().await;
    let (world, service) = on_managed_postgres(&idp).await;
    let db = world.runner.sql_instance(SQL_INSTANCE).unwrap();
    let mut tokens = Vec::new();
    for i in 0..VOTERS {
        tokens.push(id_token(&idp, &format!("voter{i}@example.com")).await);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let voters: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            tokio::spawn(voter(
                service.url.clone(),
                t,
                stop.clone(),
                outcomes.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut watch = db.watch().unwrap();
    let pid = db.status().pid.expect("a running postmaster");
    let killed_at = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let back = tokio::time::timeout(
        Duration::from_secs(60),
        watch.wait_for(|s| s.health == Health::Ready && s.restarts == 1),
    )
    .await
    .expect("the runner restarts the instance within 60 s")
    .unwrap()
    .to_owned();
    let ready_at = back.since;
    // Votes go on until they have succeeded again for a while (or clearly do not).
    let until = ready_at + Duration::from_secs(10);
    loop {
        let recovered = outcomes
            .lock()
            .unwrap()
            .iter()
            .any(|o| o.status == 200 && o.done > ready_at + Duration::from_secs(2));
        if recovered || Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for v in voters {
        v.await.unwrap();
    }
    let outcomes = outcomes.lock().unwrap().clone();

    let acked = outcomes.iter().filter(|o| o.status == 200).count() as i64;
    let before = outcomes
        .iter()
        .filter(|o| o.status == 200 && o.done < killed_at)
        .count();
    let in_flight_at_kill = outcomes
        .iter()
        .filter(|o| o.sent <= killed_at && o.done >= killed_at)
        .count() as i64;
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.status != 200).collect();
    let max_failure = failed.iter().map(|o| o.latency()).max().unwrap_or_default();
    let recovered_at = outcomes
        .iter()
        .filter(|o| o.status == 200 && o.done > ready_at)
        .map(|o| o.done)
        .min()
        .expect("votes succeed again after the restart");
    let recovery = recovered_at - ready_at;
    let (rows, tally) = stored(&db.socket_dir).await;
    // The server's view of the restart, for a failing run.
    let log = world
        .runner
        .config()
        .data_root
        .join("sql")
        .join(SQL_INSTANCE)
        .join("server.log");
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    eprintln!(
        "votes: {} sent, {acked} acknowledged, {} failed (max {max_failure:?}), {in_flight_at_kill} \
         in flight at the kill; {rows} rows; restart took {:?}; first vote {recovery:?} after it",
        outcomes.len(),
        failed.len(),
        ready_at - killed_at
    );

    assert!(before >= 20, "a steady stream before the kill: {before}");
    // A short outage is waited out inside the pool's acquire timeout (the votes then succeed);
    // a longer one fails fast (see `a_database_that_is_down_is_a_fast_503`).
    for o in &failed {
        assert_eq!(
            o.status,
            503,
            "a failure during the outage is a 503 ({:?} after the kill)",
            o.sent.saturating_duration_since(killed_at)
        );
        assert!(
            o.done >= killed_at,
            "nothing failed before the kill ({:?} before)",
            killed_at - o.done
        );
        assert!(
            o.sent < recovered_at,
            "nothing failed after recovery ({:?} after)",
            o.sent - recovered_at
        );
    }
    assert!(
        max_failure < gatehouse_vote::DB_DEADLINE + Duration::from_secs(1),
        "failures answer within the app's deadline of {:?}: the slowest took {max_failure:?}",
        gatehouse_vote::DB_DEADLINE
    );
    assert!(
        recovery <= RECOVERY,
        "votes succeed within {RECOVERY:?} of the database's return: {recovery:?}"
    );
    assert!(
        rows >= acked,
        "every acknowledged vote is stored: {rows} rows, {acked} acknowledged"
    );
    assert!(
        rows - acked <= in_flight_at_kill,
        "only votes in flight at the kill may be stored unacknowledged: {rows} rows, {acked} \
         acknowledged, {in_flight_at_kill} in flight"
    );
    assert_eq!(tally, rows, "the tally counts every stored vote once");
    world.runner.shutdown().await;
}

/// The database is not there (no socket) or refuses connections (a socket nobody accepts on):
/// votes and the page are 503 with `Retry-After`, within the app's deadline, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_is_down_is_a_fast_503() {
    let idp = identity().await;
    let token = id_token(&idp, "down@example.com").await;
    let dir = gatehouse_testkit::temp_dir("vote-db-down").unwrap();
    let refusing = dir.path().join("p:r:refusing");
    std::fs::create_dir_all(dir.path().join("p:r:absent")).unwrap();
    std::fs::create_dir_all(&refusing).unwrap();
    // A socket file whose listener is gone: connecting is refused (ECONNREFUSED), which the
    // pool retries until its acquire timeout.
    drop(std::os::unix::net::UnixListener::bind(refusing.join(".s.PGSQL.5432")).unwrap());
    for instance in ["p:r:absent", "p:r:refusing"] {
        let vote = spawn_vote(&[
            ("GOOGLE_CLOUD_PROJECT", PROJECT.to_owned()),
            ("GATEHOUSE_IDENTITY_URL", idp.url.clone()),
            ("DB_SOCKET_PATH", dir.path().display().to_string()),
            ("CLOUD_SQL_CONNECTION_NAME", instance.to_owned()),
            ("DB_USER", DB_USER.to_owned()),
            ("DB_PASSWORD", DB_PASSWORD.to_owned()),
            ("DB_NAME", "votes".to_owned()),
        ])
        .await;
        let client = reqwest::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .build()
            .unwrap();
        for _ in 0..2 {
            let sent = Instant::now();
            let res = client
                .post(format!("{}/", vote.url))
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("team=CATS")
                .send()
                .await
                .unwrap();
            let took = sent.elapsed();
            assert_eq!(res.status(), 503, "{instance}");
            assert_eq!(res.headers()["retry-after"], "1");
            assert_eq!(
                res.text().await.unwrap(),
                "Unable to cast vote; see logs for more details."
            );
            assert!(
                took < gatehouse_vote::DB_DEADLINE + Duration::from_secs(1),
                "{instance}: {took:?}"
            );
            let sent = Instant::now();
            let res = client.get(format!("{}/", vote.url)).send().await.unwrap();
            assert_eq!(res.status(), 503, "{instance}");
            assert!(sent.elapsed() < gatehouse_vote::DB_DEADLINE + Duration::from_secs(1));
        }
        vote.wait_for(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Error while attempting to submit vote: "))
        })
        .await;
    }
}
