//! Scenarios 2 and 4 of issue 16 at the runner, short form: an instance killed with SIGKILL
//! under load (every request gets an HTTP answer, never a hang or a reset without one; the
//! surviving instance takes the new requests; the restarted instance serves again), and
//! revisions switched back to back under load (no failed request). The long form is
//! `bench/reliability/runner_faults.py`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{spec, world};
use gatehouse_run::Service;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;

/// One request's outcome: when it was sent, how long it took, the status (0: no HTTP answer)
/// and the answering process (its `pid`, or the `GREETING` of its revision).
#[derive(Debug, Clone)]
struct Outcome {
    sent: Instant,
    took: Duration,
    status: u16,
    body: Value,
}

/// Client loops calling `url` until stopped; every outcome recorded.
struct Load {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, outcomes, url) = (stop.clone(), outcomes.clone(), url.clone());
                tokio::spawn(async move {
                    // A request that hangs is a failure: the client gives up after 10 s.
                    let http = reqwest::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let (status, body) = match http.get(&url).send().await {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                match r.bytes().await {
                                    Ok(b) => {
                                        (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
                                    }
                                    Err(_) => (0, Value::Null),
                                }
                            }
                            Err(_) => (0, Value::Null),
                        };
                        outcomes.lock().unwrap().push(Outcome {
                            sent,
                            took: sent.elapsed(),
                            status,
                            body,
                        });
                    }
                })
            })
            .collect();
        Self {
            stop,
            outcomes,
            tasks,
        }
    }

    fn ok(&self) -> usize {
        self.outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o.status == 200)
            .count()
    }

    /// Waits until `n` more requests got their 200 (60 s at most).
    async fn served(&self, n: usize) {
        let want = self.ok() + n;
        let until = Instant::now() + Duration::from_secs(60);
        while self.ok() < want {
            assert!(
                Instant::now() < until,
                "the clients got {} of {want} 200s in 60 s",
                self.ok()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.outcomes.lock().unwrap().clone()
    }
}

/// Deploys `name` with `instances` instances under 8 clients, lets it serve for over a second
/// (so it is restarted without backoff), then sends SIGKILL to the first instance's process
/// group: the service, the load, when, and the pid the instance had.
async fn kill_under_load(
    w: &common::World,
    name: &str,
    instances: u32,
) -> (Arc<Service>, Load, Instant, u32) {
    let service = w
        .runner
        .deploy(spec(
            w,
            &format!(
                "name: {name}\nallow_unauthenticated: true\nmin_instances: {instances}\n\
                 max_instances: {instances}\nconcurrency: 8\n"
            ),
        ))
        .await
        .unwrap();
    let load = Load::start(format!("{}/slow?ms=20", service.url), 8);
    load.served(50).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let killed_at = Instant::now();
    let pid = service.revision.load().instances()[0].pid();
    assert_ne!(pid, 0);
    killpg(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL).unwrap();
    (service, load, killed_at, pid)
}

/// The service's log says the killed instance was restarted without a backoff.
fn assert_restarted_at_once(w: &common::World, service: &str) {
    let lines = gatehouse_run::logs::tail(&w.runner.config().data_root, service, 10_000).unwrap();
    let exits: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("instance exited"))
        .collect();
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert!(exits[0].contains("restarting in 0 ms"), "{exits:?}");
}

/// 50 more 200s, then the load stops: every request was answered, and only what the killed
/// instance had in flight may have failed (8 clients: at most 8 requests).
async fn finish_after_kill(load: Load) -> Vec<Outcome> {
    load.served(50).await;
    let outcomes = load.finish().await;
    assert_all_answered(&outcomes);
    let failed = outcomes.iter().filter(|o| o.status != 200).count();
    eprintln!("{} requests, {failed} failed", outcomes.len());
    assert!(failed <= 8, "{failed} failed requests: {outcomes:?}");
    outcomes
}

/// Every request got an HTTP answer within a bound: 200, or 502/503 for those the kill cut.
fn assert_all_answered(outcomes: &[Outcome]) {
    let bad: Vec<_> = outcomes
        .iter()
        .filter(|o| !matches!(o.status, 200 | 502 | 503) || o.took > Duration::from_secs(5))
        .collect();
    assert!(
        bad.is_empty(),
        "requests without an answer (status 0), with another status, or slower than 5 s: {bad:?}"
    );
}

/// Two instances; one is killed with SIGKILL under load. The requests it had get a 502/503
/// (no hang, no reset without an answer), new requests go to the survivor, and the killed
/// instance is restarted and takes traffic again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_answers_what_it_had_and_its_replacement_takes_traffic() {
    let w = world().await;
    let (service, load, killed_at, old_pid) = kill_under_load(&w, "victim", 2).await;
    // The restarted process (a new pid for the same instance) answers requests again.
    let until = Instant::now() + Duration::from_secs(20);
    let back = loop {
        let seen = load.outcomes.lock().unwrap().iter().find_map(|o| {
            let pid = o.body["pid"].as_u64()?;
            let fresh = o.sent > killed_at
                && o.status == 200
                && pid != u64::from(old_pid)
                && pid == u64::from(service.revision.load().instances()[0].pid());
            fresh.then_some(o.sent + o.took)
        });
        if let Some(t) = seen {
            break t;
        }
        assert!(
            Instant::now() < until,
            "the killed instance never served again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("killed instance serving again after {:?}", back - killed_at);
    let outcomes = finish_after_kill(load).await;
    // The survivor took the new requests meanwhile: 200s between the kill and the return.
    assert!(
        outcomes
            .iter()
            .any(|o| o.status == 200 && o.sent > killed_at && o.sent + o.took < back),
        "no request was served by the surviving instance while the other restarted"
    );
    let instances = service.revision.load().instances();
    assert_eq!(instances[0].restarts(), 1);
    assert_eq!(instances[1].restarts(), 0);
    assert_restarted_at_once(&w, "victim");
    w.runner.shutdown().await;
}

/// One instance, killed under load: requests it had get a 502/503, new ones wait (bounded)
/// for the restarted process and get their 200 from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_for_the_restart_of_a_killed_single_instance() {
    let w = world().await;
    let (service, load, killed_at, old_pid) = kill_under_load(&w, "single", 1).await;
    let outcomes = finish_after_kill(load).await;
    let first_back = outcomes
        .iter()
        .filter(|o| o.status == 200 && o.sent > killed_at)
        .map(|o| o.sent + o.took)
        .min()
        .unwrap();
    eprintln!(
        "single instance serving again after {:?}",
        first_back - killed_at
    );
    assert!(
        outcomes
            .iter()
            .filter(|o| o.sent > killed_at && o.status == 200)
            .all(|o| o.body["pid"].as_u64() != Some(u64::from(old_pid))),
        "a request sent after the kill was answered by the killed process"
    );
    assert_eq!(service.revision.load().instances()[0].restarts(), 1);
    assert_restarted_at_once(&w, "single");
    w.runner.shutdown().await;
}

/// Revisions switched back to back under load: every request gets its 200, from the old
/// revision or the new one, and the last revision serves at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_switched_back_to_back_under_load_fail_no_request() {
    let w = world().await;
    let yaml = |n: u32| {
        format!(
            "name: switch\nallow_unauthenticated: true\nmin_instances: 1\nconcurrency: 8\nenv: {{GREETING: g{n}}}\n"
        )
    };
    let service = w.runner.deploy(spec(&w, &yaml(0))).await.unwrap();
    let load = Load::start(format!("{}/slow?ms=5", service.url), 8);
    load.served(20).await;
    for n in 1..=8 {
        w.runner.deploy(spec(&w, &yaml(n))).await.unwrap();
        load.served(10).await;
    }
    let outcomes = load.finish().await;
    let failed: Vec<_> = outcomes.iter().filter(|o| o.status != 200).collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let last = outcomes.last().unwrap();
    assert_eq!(last.body["env"]["GREETING"], "g8");
    assert!(service.revision.load().name.starts_with("switch-00009-"));
    w.runner.shutdown().await;
}

/// An instance stopped while it is still starting (nothing listens on its port yet) stops at
/// once: SIGTERM, SIGKILL after the grace period. Regression: a stop seen during the readiness
/// checks was not seen again, so `stop` waited for the process to exit by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_an_instance_that_is_still_starting_does_not_hang() {
    use gatehouse_run::instance::{Instance, Launch};
    use gatehouse_run::logs::LogSink;

    let w = world().await;
    let dir = gatehouse_testkit::temp_dir("run-stop-starting").unwrap();
    let launch = Launch {
        service: "late".into(),
        revision: "late-00001-abc".into(),
        instance: "late-00001-abc-0".into(),
        argv: vec!["sleep".into(), "60".into()],
        env: std::collections::BTreeMap::new(),
        health_path: None,
        grace: Duration::from_secs(1),
        log: Arc::new(LogSink::open(dir.path(), "late").unwrap()),
        isolation: Arc::new(w.runner.isolation().clone()),
        metadata: None,
        forward: Vec::new(),
        user: None,
    };
    let instance = Instance::start(launch);
    let until = Instant::now() + Duration::from_secs(10);
    while instance.pid() == 0 {
        assert!(
            Instant::now() < until,
            "the instance's process never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = Pid::from_raw(i32::try_from(instance.pid()).unwrap());
    tokio::time::timeout(Duration::from_secs(10), instance.stop())
        .await
        .expect("stopping a starting instance hung");
    assert!(
        nix::sys::signal::kill(pid, None).is_err(),
        "the process is still there"
    );
}
