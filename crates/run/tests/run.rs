//! The runner end to end, with a small real HTTP service (Python) as the workload: the invoker
//! check (401 / 403 / 200), public services, secrets as environment variables (and a refused
//! deploy without the role), restart after a crash, a redeploy under a steady request loop
//! with zero failed requests, and google-auth inside the service getting an ID token for the
//! service's own account from its metadata endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{assert_instance_id_token, db_pass, get, python, spec, world, write_app};
use gatehouse_run::{DeployError, ServiceSpec};
use serde_json::Value;

/// Waits until the request loops have counted `n` good requests (or any failure); 60 s at most.
async fn served_at_least(ok: &AtomicU64, failed: &AtomicU64, n: u64) {
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        while ok.load(Ordering::Relaxed) < n && failed.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "the request loops served {} of {n} requests in 60 s",
        ok.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_public_services_secrets_restarts_and_redeploys() {
    let w = world().await;
    let caller = w
        .iam
        .create_account("run-proj", "gateway", "", "")
        .await
        .unwrap();
    let stranger = w
        .iam
        .create_account("run-proj", "stranger", "", "")
        .await
        .unwrap();
    let runtime = w
        .iam
        .create_account("run-proj", "hello-sa", "", "")
        .await
        .unwrap();
    db_pass(&w, b"s3cret-value").await;

    // Without the accessor role the deploy is refused, naming secret, account and role.
    let yaml = format!(
        "name: hello\nservice_account: {}\nsecrets: {{DB_PASS: 'db-pass:latest'}}\nenv: {{GREETING: one}}\n",
        runtime.email
    );
    let refused = w.runner.deploy(spec(&w, &yaml)).await.unwrap_err();
    let text = refused.to_string();
    assert!(matches!(refused, DeployError::Refused(_)), "{text}");
    assert!(
        text.contains("db-pass")
            && text.contains(&runtime.email)
            && text.contains("secretAccessor"),
        "{text}"
    );
    w.iam
        .edit_binding(
            "projects/run-proj/secrets/db-pass",
            "roles/secretmanager.secretAccessor",
            &format!("serviceAccount:{}", runtime.email),
            true,
        )
        .await
        .unwrap();
    let service = w.runner.deploy(spec(&w, &yaml)).await.unwrap();
    let url = service.url.clone();

    // Private: 401 without or with a bad token, 403 for a non-invoker, 200 for an invoker.
    assert_eq!(get(&url, &[]).await.0, 401);
    assert_eq!(
        get(&url, &[("authorization", "Bearer garbage".into())])
            .await
            .0,
        401
    );
    let token_for = |a: &gatehouse_store::ServiceAccountRecord, aud: &str| {
        w.iam.mint_id_token(a, aud, true, false).unwrap()
    };
    let stranger_token = token_for(&stranger, &url);
    assert_eq!(
        get(
            &url,
            &[("authorization", format!("Bearer {stranger_token}"))]
        )
        .await
        .0,
        403
    );
    w.iam
        .edit_binding(
            &w.runner.resource("hello"),
            "roles/run.invoker",
            &format!("serviceAccount:{}", caller.email),
            true,
        )
        .await
        .unwrap();
    let good = token_for(&caller, &format!("{url}/"));
    let (status, body) = get(&url, &[("authorization", format!("Bearer {good}"))]).await;
    assert_eq!(status, 200, "{body}");
    // The contract: env, secrets, and the checked token without its signature.
    assert_eq!(body["env"]["K_SERVICE"], "hello");
    assert_eq!(body["env"]["K_CONFIGURATION"], "hello");
    assert!(
        body["env"]["K_REVISION"]
            .as_str()
            .unwrap()
            .starts_with("hello-00001-")
    );
    assert_eq!(body["env"]["DB_PASS"], "s3cret-value");
    assert_eq!(body["env"]["GREETING"], "one");
    assert!(
        body["env"]["GCE_METADATA_HOST"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(
        body["headers"]["authorization"]
            .as_str()
            .unwrap()
            .ends_with(".SIGNATURE_REMOVED_BY_GOOGLE")
    );
    // Authenticated calls are audited as their caller only (no anonymous probe per request);
    // the anonymous call above is audited as a denial.
    let log = w.iam.audit_log(10_000).await.unwrap();
    let invoke: Vec<_> = log
        .iter()
        .filter(|r| r.permission == "run.routes.invoke")
        .collect();
    assert!(
        invoke
            .iter()
            .any(|r| r.principal == "allUsers" && !r.allowed)
    );
    assert!(
        invoke
            .iter()
            .any(|r| r.principal == format!("serviceAccount:{}", caller.email) && r.allowed)
    );
    let anonymous: i64 = invoke
        .iter()
        .filter(|r| r.principal == "allUsers")
        .map(|r| r.count)
        .sum();
    assert_eq!(
        anonymous, 1,
        "only the one token-less request is an anonymous decision"
    );
    // A token for another audience is not accepted.
    let elsewhere = token_for(&caller, "https://other.example");
    assert_eq!(
        get(&url, &[("authorization", format!("Bearer {elsewhere}"))])
            .await
            .0,
        401
    );
    // X-Serverless-Authorization is the one checked; Authorization passes through untouched.
    let (status, body) = get(
        &url,
        &[
            ("x-serverless-authorization", format!("Bearer {good}")),
            ("authorization", "Bearer app-level-token".into()),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["headers"]["authorization"], "Bearer app-level-token");

    // google-auth inside the service gets an ID token for the service's own account.
    assert_instance_id_token(
        &w,
        &url,
        &[("authorization", format!("Bearer {good}"))],
        &runtime.email,
    )
    .await;

    // A crashed instance is restarted and serves again.
    let pid = get(&url, &[("authorization", format!("Bearer {good}"))])
        .await
        .1["pid"]
        .clone();
    let _ = reqwest::Client::new()
        .get(format!("{url}/crash"))
        .header("authorization", format!("Bearer {good}"))
        .send()
        .await;
    let mut back = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (s, b) = get(&url, &[("authorization", format!("Bearer {good}"))]).await;
        if s == 200 && b["pid"] != pid {
            back = true;
            break;
        }
    }
    assert!(back, "the crashed instance came back");
    assert!(service.revision.load().instances()[0].restarts() >= 1);

    // A redeploy under a steady request loop fails no request.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url, good) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            url.clone(),
            good.clone(),
        );
        loops.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let res = http
                    .get(&url)
                    .header("authorization", format!("Bearer {good}"))
                    .send()
                    .await;
                let good = match res {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if good {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // The loops run before, during and after the redeploy: counted requests, not timed waits.
    served_at_least(&ok, &failed, 10).await;
    let v2 = yaml.replace("GREETING: one", "GREETING: two");
    let again = w.runner.deploy(spec(&w, &v2)).await.unwrap();
    assert!(again.revision.load().name.starts_with("hello-00002-"));
    served_at_least(&ok, &failed, ok.load(Ordering::Relaxed) + 20).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests during the redeploy"
    );
    assert!(ok.load(Ordering::Relaxed) > 20);
    let (_, body) = get(&url, &[("authorization", format!("Bearer {good}"))]).await;
    assert_eq!(body["env"]["GREETING"], "two");

    // A public service answers everyone.
    let public = w
        .runner
        .deploy(spec(&w, "name: open\nallow_unauthenticated: true\n"))
        .await
        .unwrap();
    let (status, body) = get(&public.url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body["env"]["K_SERVICE"], "open");
    assert!(body["env"]["GCE_METADATA_HOST"].is_null());

    w.runner.shutdown().await;
    assert!(reqwest::get(&url).await.is_err(), "ingress is gone");
}

/// A workload that answers `GET /db` with what `psql` gets over the Cloud SQL socket.
const DB_APP: &str = r#"
import http.server, json, os, subprocess, sys
class H(JsonHandler):
    def do_GET(self):
        sock = os.path.join(os.environ["DB_SOCKET_PATH"], os.environ["INSTANCE"])
        r = subprocess.run([os.environ["PSQL"], "-h", sock, "-U", "vote-user", "-d", "votes", "-qtAc",
                            "CREATE TABLE IF NOT EXISTS t (n int); INSERT INTO t VALUES (42); SELECT sum(n) FROM t"],
                           env={"PGPASSWORD": os.environ["DB_PASS"]}, capture_output=True, text=True)
        self.reply({"out": r.stdout.strip(), "err": r.stderr.strip(), "socket": os.environ["DB_SOCKET_PATH"]})
serve(H)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_postgres_over_the_cloudsql_socket() {
    let w = world().await;
    let app_sa = w
        .iam
        .create_account("run-proj", "vote-app", "", "")
        .await
        .unwrap();
    let other = w
        .iam
        .create_account("run-proj", "no-sql-app", "", "")
        .await
        .unwrap();
    db_pass(&w, b"pg-Secret-1").await;
    for sa in [&app_sa, &other] {
        w.iam
            .edit_binding(
                "projects/run-proj/secrets/db-pass",
                "roles/secretmanager.secretAccessor",
                &format!("serviceAccount:{}", sa.email),
                true,
            )
            .await
            .unwrap();
    }
    let instance = w
        .runner
        .start_sql(gatehouse_run::SqlInstanceSpec {
            name: "votes-db".into(),
            databases: vec!["votes".into()],
            users: vec![gatehouse_run::SqlUser {
                name: "vote-user".into(),
                password_secret: "db-pass:latest".into(),
            }],
            tcp_port: None,
        })
        .await
        .expect("PostgreSQL 15 starts (apt-get install -y postgresql-15)");
    assert_eq!(instance.connection_name, "run-proj:us-central1:votes-db");
    assert!(instance.socket_dir.join(".s.PGSQL.5432").exists());

    let app = w.app.with_file_name("db_app.py");
    write_app(&app, DB_APP);
    let spec_for = |sa: &str| {
        ServiceSpec::parse(&format!(
            "name: vote\ncommand: [{:?}, {:?}]\nservice_account: {sa}\nallow_unauthenticated: true\n\
             cloudsql_instances: ['run-proj:us-central1:votes-db']\nsecrets: {{DB_PASS: 'db-pass'}}\n\
             env: {{INSTANCE: 'run-proj:us-central1:votes-db', PSQL: '/usr/lib/postgresql/15/bin/psql'}}\n",
            python().display().to_string(),
            app.display().to_string()
        ))
        .unwrap()
    };
    // Without roles/cloudsql.client: refused at deploy.
    let refused = w.runner.deploy(spec_for(&other.email)).await.unwrap_err();
    assert!(refused.to_string().contains("cloudsql.client"), "{refused}");
    w.iam
        .edit_binding(
            "projects/run-proj/instances/votes-db",
            "roles/cloudsql.client",
            &format!("serviceAccount:{}", app_sa.email),
            true,
        )
        .await
        .unwrap();
    let service = w.runner.deploy(spec_for(&app_sa.email)).await.unwrap();
    let (status, body) = get(&format!("{}/db", service.url), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body["out"], "42", "{body}");
    w.runner.shutdown().await;
    assert!(
        !instance.socket_dir.join(".s.PGSQL.5432").exists(),
        "stopped cleanly"
    );
}

/// Autoscaling: a service with `min_instances: 0` scales to zero when idle and cold-starts on
/// the next request; with `concurrency: 1`, concurrent requests start more instances up to
/// `max_instances`, and a request beyond that waits for room rather than failing. The control
/// socket describes the live service, a second runner on the same data directory is refused,
/// and the service log holds both the app's lines and the runner's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaling_control_socket_and_logs() {
    let w = world().await;
    let data_root = w.runner.config().data_root.clone();
    let control = gatehouse_run::admin::serve(w.runner.clone()).await.unwrap();
    let again = gatehouse_run::admin::serve(w.runner.clone()).await;
    assert_eq!(
        again.unwrap_err().kind(),
        std::io::ErrorKind::AddrInUse,
        "a second runner on the same data directory must be refused"
    );
    let service = w
        .runner
        .deploy(spec(
            &w,
            "name: scaler\nallow_unauthenticated: true\nmin_instances: 0\nmax_instances: 3\nconcurrency: 1\nidle_timeout_secs: 1\n",
        ))
        .await
        .unwrap();
    let idle = |want: usize| {
        let service = service.clone();
        async move {
            for _ in 0..200 {
                if service.revision.load().instances().len() == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!(
                "expected {want} instances, have {}",
                service.revision.load().instances().len()
            );
        }
    };
    // The deploy's health-check instance stops once idle: scale to zero.
    idle(0).await;
    let (status, cold) = get(&format!("{}/", service.url), &[]).await;
    assert_eq!(status, 200, "cold start on the first request");
    assert!(cold["pid"].as_u64().is_some());

    // Four requests of 700 ms at once: three instances (the maximum) take one each, the
    // fourth waits for the first free one.
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{}/slow?ms=700", service.url);
            tokio::spawn(async move { get(&url, &[]).await })
        })
        .collect();
    let mut pids = std::collections::BTreeSet::new();
    for c in calls {
        let (status, body) = c.await.unwrap();
        assert_eq!(status, 200);
        pids.insert(body["pid"].as_u64().unwrap());
    }
    assert_eq!(pids.len(), 3, "three instances served: {pids:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "the fourth request waited for a free instance"
    );
    assert_eq!(service.revision.load().instances().len(), 3);

    let (status, list) = gatehouse_run::admin::query(&data_root, "/v1/services")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let s = &list["services"][0];
    assert_eq!(
        s["name"],
        "projects/run-proj/locations/us-central1/services/scaler"
    );
    assert_eq!(s["uri"], service.url.as_str());
    assert_eq!(s["template"]["scaling"]["maxInstanceCount"], 3);
    assert_eq!(s["template"]["maxInstanceRequestConcurrency"], 1);
    assert_eq!(s["instances"].as_array().unwrap().len(), 3);
    let (status, missing) = gatehouse_run::admin::query(&data_root, "/v1/services/nope")
        .await
        .unwrap();
    assert_eq!(
        (status, missing["error"]["status"].as_str()),
        (404, Some("NOT_FOUND"))
    );

    // Idle instances above min_instances (0) stop again.
    idle(0).await;

    let lines = gatehouse_run::logs::tail(&data_root, "scaler", 10_000).unwrap();
    let entries: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |pred: &dyn Fn(&Value) -> bool| entries.iter().any(pred);
    assert!(has(&|e| e["message"].as_str().is_some_and(
        |m| m.starts_with("Starting new instance. Reason: AUTOSCALING")
    )));
    assert!(has(&|e| e["message"].as_str().is_some_and(
        |m| m.starts_with("Starting new instance. Reason: REQUEST")
    )));
    assert!(has(&|e| e["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("Shutting down idle instance"))));
    assert!(has(&|e| e["stream"] == "stderr"
        && e["message"] == "request /slow?ms=700"
        && e["instance"]
            .as_str()
            .is_some_and(|i| i.starts_with("scaler-00001-"))));
    w.runner.shutdown().await;
    control.abort();
}

/// Issue 14 #7: a service deployed public and then redeployed private must stop answering
/// unauthenticated callers (the `allUsers` invoker binding is taken away again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploying_a_public_service_as_private_closes_it() {
    let w = world().await;
    let open = w
        .runner
        .deploy(spec(&w, "name: flip\nallow_unauthenticated: true\n"))
        .await
        .unwrap();
    let (status, body) = get(&open.url, &[]).await;
    assert_eq!(status, 200, "public at first: {body}");

    // The attacker keeps calling without credentials after the owner made it private.
    let closed = w.runner.deploy(spec(&w, "name: flip\n")).await.unwrap();
    assert_eq!(closed.url, open.url);
    assert!(closed.revision.load().name.starts_with("flip-00002-"));
    let (status, _) = get(&open.url, &[]).await;
    assert_eq!(status, 401, "a private redeploy must close the service");
    assert!(
        !w.iam
            .is_public("run.routes.invoke", &w.runner.resource("flip"))
            .await
            .unwrap(),
        "allUsers still holds roles/run.invoker"
    );

    // And public again when asked.
    w.runner
        .deploy(spec(&w, "name: flip\nallow_unauthenticated: true\n"))
        .await
        .unwrap();
    assert_eq!(get(&open.url, &[]).await.0, 200);
    w.runner.shutdown().await;
}
