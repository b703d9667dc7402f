//! Runs the real-client compatibility suites (npm `firebase` + `jose` in Node; PyPI
//! `firebase-admin` + `google-auth` in Python) against the real `gatehouse identity` binary,
//! once on embedded SQLite and once on an ephemeral PostgreSQL cluster.
//!
//! Prerequisites are installed by `tests/compat/setup.sh` (the README's test command runs it).
//! Node suites run on explicit file lists through `gatehouse_testkit::NodeTests`, which fails
//! a run in which no test ran; pytest fails one that collects nothing (exit status 5).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use gatehouse_testkit::node::files_ending_with;
use gatehouse_testkit::{NodeTests, PgCluster, Spawned, temp_dir};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

fn start_server(data: &Path, database_url: Option<&str>) -> Spawned {
    let mut args: Vec<String> = [
        "identity",
        "--project",
        "demo-project",
        "--project",
        "other-project",
        "--api-key",
        "other-key=other-project",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(data.display().to_string());
    if let Some(url) = database_url {
        args.push("--database-url".into());
        args.push(url.into());
    }
    Spawned::start(Path::new(env!("CARGO_BIN_EXE_gatehouse")), &args).expect("gatehouse starts")
}

/// The Firebase JS SDK suite in `tests/compat/node` (checked against the directory's listing).
const FIREBASE_JS_SUITE: &[&str] = &[
    "anonymous-custom.test.mjs",
    "email-password.test.mjs",
    "jwks.test.mjs",
    "oob.test.mjs",
    "profile-tokens.test.mjs",
];

fn run_suites(server: &Spawned) {
    let root = repo_root();
    let node_dir = root.join("tests/compat/node");
    let python = root.join("tests/compat/python/.venv/bin/python");
    assert!(
        node_dir.join("node_modules/firebase").is_dir() && python.is_file(),
        "compat prerequisites missing: run `tests/compat/setup.sh` (npm ci + Python venv)"
    );
    let envs = [
        ("GATEHOUSE_URL", server.url()),
        ("FIREBASE_AUTH_EMULATOR_HOST", server.addr.clone()),
        ("GATEHOUSE_PROJECT", "demo-project".into()),
        ("GATEHOUSE_API_KEY", "compat-key".into()),
        ("GATEHOUSE_OTHER_PROJECT", "other-project".into()),
        ("GATEHOUSE_OTHER_API_KEY", "other-key".into()),
    ];
    // The Firebase JS SDK suite: every `*.test.mjs`, named one by one (a run that finds no
    // file or no test fails instead of passing empty).
    assert_eq!(
        files_ending_with(&node_dir, ".test.mjs").unwrap(),
        FIREBASE_JS_SUITE,
        "FIREBASE_JS_SUITE must name every tests/compat/node/*.test.mjs"
    );
    let mut node = NodeTests::new(&node_dir, FIREBASE_JS_SUITE).arg("--test-concurrency=1");
    for (k, v) in &envs {
        node = node.env(k, v.as_str());
    }
    let node = node.run();
    let py = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/compat/python",
        ])
        .current_dir(&root)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .status()
        .expect("python venv runs");
    if let Err(e) = node {
        panic!("Firebase JS SDK suite: {e:#}");
    }
    assert!(py.success(), "firebase-admin / google-auth suite failed");
}

#[test]
fn firebase_clients_against_sqlite() {
    let data = temp_dir("gatehouse-compat").unwrap();
    let server = start_server(data.path(), None);
    run_suites(&server);
}

#[test]
fn firebase_clients_against_postgres() {
    let pg = PgCluster::start().expect("ephemeral PostgreSQL");
    let url = pg.create_database("compat").unwrap();
    let data = temp_dir("gatehouse-compat-pg").unwrap();
    let server = start_server(data.path(), Some(&url));
    run_suites(&server);
}

/// The documented opt-in exception: a development project issuing unsigned ID tokens, which the
/// Node Admin SDK in emulator mode requires.
#[test]
fn node_admin_sdk_with_unsigned_tokens() {
    let data = temp_dir("gatehouse-compat-unsigned").unwrap();
    let args: Vec<String> = [
        "identity",
        "--project",
        "demo-project",
        "--unsigned-id-tokens",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([data.path().display().to_string()])
    .collect();
    let server = Spawned::start(Path::new(env!("CARGO_BIN_EXE_gatehouse")), &args)
        .expect("gatehouse starts");
    let node_dir = repo_root().join("tests/compat/node");
    assert!(
        node_dir.join("node_modules/firebase-admin").is_dir(),
        "compat prerequisites missing: run `tests/compat/setup.sh`"
    );
    NodeTests::new(&node_dir, &["node-admin.unsigned.mjs"])
        .env("GATEHOUSE_URL", server.url())
        .env("FIREBASE_AUTH_EMULATOR_HOST", server.addr.as_str())
        .env("GATEHOUSE_PROJECT", "demo-project")
        .env("GATEHOUSE_API_KEY", "compat-key")
        .run()
        .expect("firebase-admin (Node) suite");
}

/// Runs the pytest suite in `tests/compat/<suite>` (its own venv) against the real binary.
fn black_box_pytest(suite: &str) {
    let root = repo_root();
    let python = root.join(format!("tests/compat/{suite}/.venv/bin/python"));
    assert!(
        python.is_file(),
        "compat prerequisites missing: run `tests/compat/setup.sh`"
    );
    let status = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!("tests/compat/{suite}"))
        .current_dir(&root)
        .env("GATEHOUSE_BIN", env!("CARGO_BIN_EXE_gatehouse"))
        .status()
        .expect("python venv runs");
    assert!(status.success(), "the {suite} suite failed");
}

/// The gateway conformance suite (pytest, real echo/h2/JWKS/token servers on 127.0.0.1) against
/// the real `gatehouse gateway` binary.
#[test]
fn gateway_conformance_suite() {
    black_box_pytest("gateway");
}

/// The IAM suite (pytest with the real google-auth: metadata server, key files, token endpoint,
/// policies, revocation, IAM Credentials) against the real `gatehouse iam` binary.
#[test]
fn iam_google_auth_suite() {
    black_box_pytest("iam");
}

/// The Secret Manager suite (pytest with the real google-cloud-secret-manager REST client and
/// key-file credentials, the CLI, master-key rotation) against the real binary.
#[test]
fn secret_manager_client_suite() {
    black_box_pytest("secrets");
}

/// The npm google-auth-library (ADC on the metadata server, key files, verifyIdToken with PEM
/// and JWK certs) against the real `gatehouse iam` binary; the suite starts its own server.
#[test]
fn node_google_auth_iam_suite() {
    let node_dir = repo_root().join("tests/compat/node");
    assert!(
        node_dir.join("node_modules/google-auth-library").is_dir(),
        "compat prerequisites missing: run `tests/compat/setup.sh`"
    );
    NodeTests::new(&node_dir, &["google-auth.iam.mjs"])
        .env("GATEHOUSE_BIN", env!("CARGO_BIN_EXE_gatehouse"))
        .run()
        .expect("google-auth-library (Node) IAM suite");
}

/// Federated sign-in against a real, certified OpenID provider (npm oidc-provider, started by
/// the suite on 127.0.0.1): `accounts:signInWithIdp` from REST and the Firebase JS SDK's
/// `signInWithCredential`, the hosted page's code flow with PKCE, linking rules and the
/// negative cases; the suite starts the real `gatehouse identity` binary itself.
#[test]
fn federated_sign_in_suite() {
    let dir = repo_root().join("tests/federated");
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "federated prerequisites missing: run `tests/federated/setup.sh`"
    );
    let status = Command::new("node")
        .arg("run.mjs")
        .current_dir(&dir)
        .env("GATEHOUSE_BIN", env!("CARGO_BIN_EXE_gatehouse"))
        .status()
        .expect("node is installed");
    assert!(status.success(), "federated sign-in suite failed");
}

/// The federated suite's own harness (`selftest.mjs`): the upstream OpenID Provider it runs is
/// strict (signatures, nonce, PKCE, redirect URIs, client authentication), so a federated test
/// that passes is not passing against a lax provider.
#[test]
fn federated_harness_selftest() {
    let dir = repo_root().join("tests/federated");
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "federated prerequisites missing: run `tests/federated/setup.sh`"
    );
    NodeTests::new(&dir, &["selftest.mjs"])
        .run()
        .expect("federated harness self-test");
}
