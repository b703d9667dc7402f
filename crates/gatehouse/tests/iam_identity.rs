//! The identity server in production mode takes its admins and custom-token signers from IAM:
//! the real binary, a real IAM state made with the `gatehouse iam` CLI on the same database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use gatehouse_testkit::{Spawned, temp_dir};
use gatehouse_tokens::{Claims, SigningKey, encode_rs256};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
const PROJECT: &str = "prod-proj";
const CUSTOM_AUD: &str =
    "https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit";

/// Runs `gatehouse iam --data-dir DIR ARGS` and returns its last stdout line as JSON.
fn iam(dir: &Path, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("iam")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("GATEHOUSE_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gatehouse iam {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null)
}

fn key_of(file: &Path) -> (String, SigningKey) {
    use base64::Engine as _;
    let v: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let b64: String = v["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let key = SigningKey::from_pkcs8(v["private_key_id"].as_str().unwrap().into(), &der).unwrap();
    (v["client_email"].as_str().unwrap().to_owned(), key)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sign(key: &SigningKey, v: Value) -> String {
    let Value::Object(m) = v else { unreachable!() };
    let claims: Claims = m;
    encode_rs256(key, &claims).unwrap()
}

/// A self-signed service-account JWT, as Google's client libraries send to Google APIs.
fn self_signed(email: &str, key: &SigningKey) -> String {
    sign(
        key,
        json!({"iss": email, "sub": email, "aud": "https://identitytoolkit.googleapis.com/", "iat": now(), "exp": now() + 3600}),
    )
}

/// A custom token as the Admin SDK makes it with a key file.
fn custom_token(email: &str, key: &SigningKey, uid: &str) -> String {
    sign(
        key,
        json!({"iss": email, "sub": email, "aud": CUSTOM_AUD, "uid": uid, "iat": now(), "exp": now() + 3600}),
    )
}

#[tokio::test]
async fn production_admins_and_custom_token_signers_come_from_iam() {
    let dir = temp_dir("iam-identity").unwrap();
    let d = dir.path();
    let admin = iam(
        d,
        &[
            "service-accounts",
            "create",
            "fb-admin",
            "--project",
            PROJECT,
        ],
    )["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let nobody = iam(
        d,
        &[
            "service-accounts",
            "create",
            "nobody-here",
            "--project",
            PROJECT,
        ],
    )["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let stranger = iam(
        d,
        &[
            "service-accounts",
            "create",
            "stranger",
            "--project",
            "other-proj",
        ],
    )["email"]
        .as_str()
        .unwrap()
        .to_owned();
    for (email, file) in [
        (&admin, "admin.json"),
        (&nobody, "nobody.json"),
        (&stranger, "stranger.json"),
    ] {
        let path = d.join(file);
        iam(
            d,
            &[
                "service-accounts",
                "keys",
                "create",
                path.to_str().unwrap(),
                "--iam-account",
                email,
            ],
        );
    }
    iam(
        d,
        &[
            "add-binding",
            "--project",
            PROJECT,
            "--member",
            &format!("serviceAccount:{admin}"),
            "--role",
            "roles/firebaseauth.admin",
        ],
    );
    let server = Spawned::start(
        Path::new(BIN),
        &[
            "identity".into(),
            "--project".into(),
            format!("{PROJECT}:production"),
            "--api-key".into(),
            format!("k1={PROJECT}"),
            "--data-dir".into(),
            d.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ],
    )
    .unwrap();
    let base = format!("{}/identitytoolkit.googleapis.com/v1", server.url());
    let http = reqwest::Client::new();
    let create = |bearer: String, email: &str| {
        http.post(format!("{base}/projects/{PROJECT}/accounts"))
            .bearer_auth(bearer)
            .json(&json!({"email": email, "password": "s3cret-pass"}))
            .send()
    };

    // An account holding roles/firebaseauth.admin administers the project.
    let (admin_email, admin_key) = key_of(&d.join("admin.json"));
    let res = create(self_signed(&admin_email, &admin_key), "a@example.com")
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    // One without it does not; neither does garbage.
    let (nobody_email, nobody_key) = key_of(&d.join("nobody.json"));
    let res = create(self_signed(&nobody_email, &nobody_key), "b@example.com")
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        create("ya29.not-a-token".into(), "c@example.com")
            .await
            .unwrap()
            .status(),
        401
    );

    // Custom tokens signed with a key of one of the project's accounts are trusted.
    let sign_in = |token: String| {
        http.post(format!("{base}/accounts:signInWithCustomToken?key=k1"))
            .json(&json!({"token": token, "returnSecureToken": true}))
            .send()
    };
    let res = sign_in(custom_token(&admin_email, &admin_key, "user-1"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(body["idToken"].as_str().is_some_and(|t| t.len() > 100));
    let res = sign_in(custom_token(&nobody_email, &nobody_key, "user-2"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "any account of the project may sign");
    // Not with another project's account.
    let (stranger_email, stranger_key) = key_of(&d.join("stranger.json"));
    let res = sign_in(custom_token(&stranger_email, &stranger_key, "user-3"))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("INVALID_CUSTOM_TOKEN"),
        "{body}"
    );

    // A disabled account is neither an admin nor a signer any more.
    // The server caches IAM state for 1 s: wait for the change to show (each probe with a
    // fresh e-mail, as a probe that still gets through creates its account).
    iam(d, &["service-accounts", "disable", &admin]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for probe in 0.. {
        let res = create(
            self_signed(&admin_email, &admin_key),
            &format!("probe-{probe}@example.com"),
        )
        .await
        .unwrap();
        if res.status() == 401 {
            break;
        }
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        assert!(
            std::time::Instant::now() < deadline,
            "a disabled admin still administers the project after 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let res = create(self_signed(&admin_email, &admin_key), "d@example.com")
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = sign_in(custom_token(&admin_email, &admin_key, "user-4"))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}
