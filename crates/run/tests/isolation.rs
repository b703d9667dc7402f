//! Isolation, tried as an attacker on the same host would (issue 14 #4 and #5): a private
//! service's instance cannot be reached around its ingress, nobody but the instance gets
//! tokens from its metadata endpoint, and one service cannot read another's secrets from
//! `/proc`. These tests run as root (as CI does): namespaces and separate users are expected.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::time::Duration;

use common::{World, assert_instance_id_token, get, python, world, world_with, write_app};
use gatehouse_run::{IsolationMode, ServiceSpec};
use serde_json::json;

/// The workload: tells its environment, and tries what a compromised service would.
const PROBE_APP: &str = r#"
import http.server, json, os, sys, urllib.parse, urllib.request
class H(JsonHandler):
    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        if u.path == "/environ":
            try:
                with open("/proc/%s/environ" % q["pid"], "rb") as f:
                    out = {"read": f.read().decode("latin-1")}
            except Exception as e:
                out = {"error": repr(e)}
        elif u.path == "/fetch":
            try:
                req = urllib.request.Request(q["url"], headers={"Metadata-Flavor": "Google"})
                with urllib.request.urlopen(req, timeout=3) as r:
                    out = {"status": r.status, "body": r.read().decode()}
            except urllib.error.HTTPError as e:
                out = {"status": e.code}
            except Exception as e:
                out = {"error": repr(e)}
        elif u.path == "/idtoken":
            import google.auth.transport.requests, google.oauth2.id_token
            out = {"token": google.oauth2.id_token.fetch_id_token(google.auth.transport.requests.Request(), q["aud"])}
        else:
            out = {"env": dict(os.environ), "pid": os.getpid(), "uid": os.getuid()}
        self.reply(out)
serve(H)
"#;

/// A service `name` running the probe app as account `name-sa`, public or not, with a secret
/// in its environment.
async fn deploy(
    w: &World,
    name: &str,
    public: bool,
) -> (std::sync::Arc<gatehouse_run::Service>, String) {
    let app = w.dir.path().join("probe.py");
    if !app.exists() {
        write_app(&app, PROBE_APP);
    }
    let account = w
        .iam
        .create_account("run-proj", &format!("{name}-sa"), "", "")
        .await
        .unwrap();
    let yaml = format!(
        "name: {name}\ncommand: [{:?}, {:?}]\nservice_account: {}\nallow_unauthenticated: {public}\n\
         env: {{API_KEY: 'secret-of-{name}'}}\n",
        python().display().to_string(),
        app.display().to_string(),
        account.email
    );
    let s = w
        .runner
        .deploy(ServiceSpec::parse(&yaml).unwrap())
        .await
        .unwrap();
    (s, account.email)
}

/// What an attacker on the host gets from `addr` (`host:port`) asking for a token.
async fn token_from_host(addr: &str) -> Result<u16, String> {
    let url = format!("http://{addr}/computeMetadata/v1/instance/service-accounts/default/token");
    match reqwest::Client::new()
        .get(url)
        .header("Metadata-Flavor", "Google")
        .timeout(Duration::from_secs(3))
        .send()
        .await
    {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(e.to_string()),
    }
}

/// Every live thread of any process in network namespace `inode`.
fn processes_in(inode: u64) -> Vec<String> {
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(tasks) = std::fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if std::fs::metadata(t.path().join("ns/net")).is_ok_and(|m| m.ino() == inode) {
                found.push(t.path().display().to_string());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_instance_is_reachable_only_through_its_ingress() {
    // A host service the instance needs (as it needs the identity server): forwarded in.
    let host_service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host_addr = host_service.local_addr().unwrap();
    tokio::spawn(
        axum::serve(
            host_service,
            axum::Router::new().fallback(|| async { "from the host" }),
        )
        .into_future(),
    );
    let w = world_with(IsolationMode::Auto, vec![host_addr]).await;
    assert!(
        w.runner.isolation().namespaces,
        "network namespaces are needed (run as root): {:?}",
        w.runner.isolation().namespaces_unavailable
    );
    let (service, email) = deploy(&w, "private", false).await;
    w.iam
        .edit_binding(
            &w.runner.resource("private"),
            "roles/run.invoker",
            &format!("serviceAccount:{email}"),
            true,
        )
        .await
        .unwrap();
    let caller = w.iam.account(&email).await.unwrap().unwrap();
    let auth = [(
        "authorization",
        format!(
            "Bearer {}",
            w.iam
                .mint_id_token(&caller, &service.url, true, false)
                .unwrap()
        ),
    )];
    let (status, body) = get(&service.url, &auth).await;
    assert_eq!(status, 200, "through the ingress: {body}");
    let instance = service.revision.load().instances()[0].clone();
    let port = instance.port();
    assert_eq!(body["env"]["PORT"], port.to_string());
    assert_eq!(body["env"]["GATEHOUSE_BIND_ADDR"], "0.0.0.0");

    // The attack: straight to the instance's port with a forged gateway header.
    for addr in [format!("127.0.0.1:{port}"), format!("0.0.0.0:{port}")] {
        let forged = reqwest::Client::new()
            .get(format!("http://{addr}/"))
            .header("x-apigateway-api-userinfo", "eyJzdWIiOiJhZG1pbiJ9")
            .timeout(Duration::from_secs(3))
            .send()
            .await;
        assert!(
            forged.is_err(),
            "the instance answered on {addr} around its ingress"
        );
    }
    // And its metadata endpoint from the host: nothing there.
    let metadata = body["env"]["GCE_METADATA_HOST"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(metadata.starts_with("127.0.0.1:"), "{metadata}");
    assert!(
        !matches!(token_from_host(&metadata).await, Ok(200)),
        "a host process got a token from the instance's metadata endpoint"
    );

    // The instance itself: its tokens, and the forwarded host service at its host address.
    assert_instance_id_token(&w, &service.url, &auth, &email).await;
    let (_, body) = get(
        &format!("{}/fetch?url=http://{host_addr}/", service.url),
        &auth,
    )
    .await;
    assert_eq!(body, json!({"status": 200, "body": "from the host"}));

    // Stopped: nothing is left in its namespace.
    let inode = instance
        .netns_inode()
        .expect("the instance has a namespace");
    assert!(!processes_in(inode).is_empty());
    w.runner.shutdown().await;
    // The namespace's helper thread ends right after shutdown returns; give a loaded machine
    // a moment before calling what is left a leak.
    let mut left = processes_in(inode);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = processes_in(inode);
    }
    assert_eq!(left, Vec::<String>::new());
}

/// Instance A, compromised, goes after service B's secrets: B's environment through `/proc`
/// and B's tokens through B's metadata endpoint. Holds with namespaces and without.
async fn one_service_cannot_take_anothers_secrets(w: World) {
    let (a, _) = deploy(&w, "attacker", true).await;
    let (b, b_email) = deploy(&w, "victim", true).await;
    let (_, victim) = get(&b.url, &[]).await;
    let (_, me) = get(&a.url, &[]).await;
    assert_ne!(me["uid"], victim["uid"], "services share a user");
    assert_ne!(victim["uid"], 0, "instances run as root");

    let (_, read) = get(&format!("{}/environ?pid={}", a.url, victim["pid"]), &[]).await;
    assert!(
        read["read"].is_null() && read["error"].as_str().unwrap().contains("Permission"),
        "A read B's environment: {read}"
    );

    // A knows where B's endpoint is, not B's credential (if there is one).
    let b_metadata = victim["env"]["GCE_METADATA_HOST"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let url = format!(
        "http://{b_metadata}/computeMetadata/v1/instance/service-accounts/default/identity?audience=x"
    );
    let (_, got) = get(&format!("{}/fetch?url={}", a.url, urlencode(&url)), &[]).await;
    if got["status"] == 200 {
        // Only A's own endpoint can answer (the same port inside A's namespace).
        let claims = w
            .iam
            .verify_id_token(got["body"].as_str().unwrap(), &["x".into()])
            .await
            .unwrap();
        assert_ne!(claims["email"], b_email.as_str(), "A got B's token");
    }
    w.runner.shutdown().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_cannot_take_each_others_secrets_in_namespaces() {
    one_service_cannot_take_anothers_secrets(world().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_cannot_take_each_others_secrets_on_loopback() {
    one_service_cannot_take_anothers_secrets(world_with(IsolationMode::Loopback, Vec::new()).await)
        .await;
}

/// Without namespaces (the fallback): the runner warns, instances bind loopback only, and the
/// metadata endpoint answers only with the instance's credential — which google-auth inside
/// the instance uses unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_namespaces_the_metadata_endpoint_wants_the_instance_credential() {
    let w = world_with(IsolationMode::Loopback, Vec::new()).await;
    let warning = w.runner.isolation().warning().expect("a loud warning");
    assert!(warning.contains("NOT network-isolated"), "{warning}");
    let (service, email) = deploy(&w, "fallback", true).await;
    let (_, body) = get(&service.url, &[]).await;
    assert_eq!(body["env"]["GATEHOUSE_BIND_ADDR"], "127.0.0.1");
    let metadata = body["env"]["GCE_METADATA_HOST"].as_str().unwrap();
    let (host, credential) = metadata
        .split_once('/')
        .expect("a credential in the URL path");
    assert!(credential.len() >= 32);

    // A local process that knows the port but not the credential.
    assert_eq!(token_from_host(host).await, Ok(403));
    assert_eq!(
        token_from_host(&format!("{host}/{}", &credential[1..])).await,
        Ok(403)
    );
    assert_eq!(
        token_from_host(&format!("{host}/computeMetadata")).await,
        Ok(403)
    );
    // The instance, with it.
    assert_instance_id_token(&w, &service.url, &[], &email).await;
    w.runner.shutdown().await;
}
