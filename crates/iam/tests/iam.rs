//! IAM end to end on the real store (SQLite and an ephemeral PostgreSQL): accounts, keys, the
//! JWT-bearer grant, bearer authentication, ID tokens, IAM Credentials, policies and checks,
//! revocation by disabling accounts and deleting keys, and the audit log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use gatehouse_iam::{
    Error, Grant, GrantErrorKind, Iam, IamConfig, Policy, Principal, account_resource, policy,
};
use gatehouse_keyring::ManualClock;
use gatehouse_store::Store;
use gatehouse_testkit::{PgCluster, temp_dir};
use gatehouse_tokens::{Claims, PublicKey, SigningKey, encode_rs256, verify_with_key};
use serde_json::{Value, json};

const T0: i64 = 1_900_000_000_000;
/// The API the self-signed JWTs below are for.
const AUD: &[&str] = &["https://secretmanager.googleapis.com/"];

async fn iam_on(store: Store) -> (Iam, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let config = IamConfig {
        public_url: "http://iam.test".into(),
        key_rotation_secs: 3600,
        // No caching: every change is seen at once.
        cache_ttl: Duration::ZERO,
    };
    let master = Arc::new(gatehouse_iam::MasterKey::generate().unwrap());
    (
        Iam::new(store, clock.clone(), master, config)
            .await
            .unwrap(),
        clock,
    )
}

fn claims(v: Value) -> Claims {
    let Value::Object(m) = v else { unreachable!() };
    m
}

/// The signing key inside a key file.
fn key_of(file: &Value) -> SigningKey {
    use base64::Engine as _;
    let pem = file["private_key"].as_str().unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    SigningKey::from_pkcs8(file["private_key_id"].as_str().unwrap().into(), &der).unwrap()
}

fn assertion(file: &Value, extra: Value, now: i64) -> String {
    let mut c = claims(json!({
        "iss": file["client_email"],
        "aud": "https://oauth2.googleapis.com/token",
        "iat": now,
        "exp": now + 3600,
    }));
    if let Value::Object(m) = extra {
        c.extend(m);
    }
    encode_rs256(&key_of(file), &c).unwrap()
}

fn form(assertion: &str) -> Vec<(String, String)> {
    vec![
        (
            "grant_type".into(),
            "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
        ),
        ("assertion".into(), assertion.into()),
    ]
}

fn sa(email: &str) -> Principal {
    Principal::ServiceAccount {
        email: email.into(),
        unique_id: String::new(),
    }
}

async fn story(store: Store) {
    let (iam, _clock) = iam_on(store).await;
    let now = T0 / 1000;

    // Accounts.
    let app = iam
        .create_account("demo-proj", "vote-app", "Vote", "")
        .await
        .unwrap();
    assert_eq!(app.email, "vote-app@demo-proj.iam.gserviceaccount.com");
    assert_eq!(app.unique_id.len(), 21);
    assert!(matches!(
        iam.create_account("demo-proj", "vote-app", "", "").await,
        Err(Error::AlreadyExists(_))
    ));
    for bad in ["ab", "Vote-app", "1vote", "vote-", "vote_app"] {
        assert!(matches!(
            iam.create_account("demo-proj", bad, "", "").await,
            Err(Error::InvalidArgument(_))
        ));
    }
    let gw = iam
        .create_account("demo-proj", "gateway", "", "")
        .await
        .unwrap();
    assert_eq!(iam.accounts("demo-proj").await.unwrap().len(), 2);
    let p1 = iam.project("demo-proj").await.unwrap();
    assert_eq!(p1.project_number.len(), 12);
    assert_eq!(iam.project("demo-proj").await.unwrap(), p1);

    // A key file and the grant: access token, then an ID token.
    let (record, file) = iam.create_key(&app.email).await.unwrap();
    assert_eq!(file["type"], "service_account");
    assert_eq!(file["private_key_id"], record.key_id.as_str());
    assert_eq!(file["token_uri"], "http://iam.test/token");
    assert_eq!(file["client_id"], app.unique_id.as_str());
    let granted = iam
        .grant(
            &form(&assertion(
                &file,
                json!({"scope": "https://www.googleapis.com/auth/cloud-platform"}),
                now,
            )),
            &[],
        )
        .await
        .unwrap();
    let Grant::AccessToken {
        token: access,
        expires_in,
    } = granted
    else {
        panic!("an access token was asked for: {granted:?}");
    };
    assert!(access.starts_with("ya29."));
    assert_eq!(expires_in, 3599);
    assert_eq!(
        iam.authenticate(&access, AUD).await.unwrap(),
        Principal::ServiceAccount {
            email: app.email.clone(),
            unique_id: app.unique_id.clone()
        }
    );
    let Grant::IdToken(id) = iam
        .grant(
            &form(&assertion(
                &file,
                json!({"target_audience": "https://hello.example"}),
                now,
            )),
            &[],
        )
        .await
        .unwrap()
    else {
        panic!("an ID token was asked for");
    };
    let c = iam
        .verify_id_token(&id, &["https://hello.example".into()])
        .await
        .unwrap();
    assert_eq!(c["iss"], "https://accounts.google.com");
    assert_eq!(c["email"], app.email.as_str());
    assert_eq!(c["email_verified"], true);
    assert_eq!(c["sub"], app.unique_id.as_str());
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );
    assert!(
        iam.verify_id_token(&id, &["https://other.example".into()])
            .await
            .is_err()
    );
    // The published certificates verify it.
    let (jwks, _) = iam.id_token_jwks().unwrap();
    let jwks: Value = serde_json::from_str(&jwks).unwrap();
    let kid = gatehouse_tokens::decode_unverified(&id)
        .unwrap()
        .0
        .kid
        .unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap();
    verify_with_key(&id, &PublicKey::from_jwk(jwk).unwrap()).unwrap();
    let (x509, _) = iam.id_token_certs().unwrap();
    assert!(
        serde_json::from_str::<Value>(&x509).unwrap()[kid.as_str()]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );

    // Grant errors, in Google's words.
    let err = |r: Result<_, gatehouse_iam::GrantError>| r.err().unwrap();
    let other = SigningKey::generate().unwrap();
    let mut forged = claims(
        json!({"iss": app.email, "aud": "https://oauth2.googleapis.com/token", "iat": now, "exp": now + 3600, "scope": "s"}),
    );
    let forged_token = {
        let k = SigningKey::from_pkcs8(record.key_id.clone(), other.pkcs8_der()).unwrap();
        encode_rs256(&k, &forged).unwrap()
    };
    let e = err(iam.grant(&form(&forged_token), &[]).await);
    assert_eq!(e.kind, GrantErrorKind::InvalidGrant);
    assert_eq!(e.description, "Invalid JWT Signature.");
    forged.insert("aud".into(), json!("https://evil.example/token"));
    let e = err(iam
        .grant(&form(&encode_rs256(&key_of(&file), &forged).unwrap()), &[])
        .await);
    assert!(e.description.contains("audience"), "{}", e.description);
    let e = err(iam
        .grant(
            &form(&assertion(
                &file,
                json!({"scope": "s", "exp": now + 7200}),
                now,
            )),
            &[],
        )
        .await);
    assert!(e.description.contains("short-lived"));
    let e = err(iam
        .grant(&[("grant_type".into(), "password".into())], &[])
        .await);
    assert_eq!(e.kind, GrantErrorKind::UnsupportedGrantType);
    // Own token URL accepted as audience.
    assert!(
        iam.grant(
            &form(&assertion(
                &file,
                json!({"scope": "s", "aud": "http://iam.test/token"}),
                now
            )),
            &["http://iam.test/token".into()],
        )
        .await
        .is_ok()
    );

    // Self-signed JWTs (what client libraries send to Google APIs) authenticate.
    let self_signed = encode_rs256(
        &key_of(&file),
        &claims(json!({"iss": app.email, "sub": app.email, "aud": "https://secretmanager.googleapis.com/", "iat": now, "exp": now + 3600})),
    )
    .unwrap();
    assert!(matches!(
        iam.authenticate(&self_signed, AUD).await.unwrap(),
        Principal::ServiceAccount { .. }
    ));
    let elsewhere = encode_rs256(
        &key_of(&file),
        &claims(json!({"iss": app.email, "sub": app.email, "aud": "https://iam.googleapis.com/", "iat": now, "exp": now + 3600})),
    )
    .unwrap();
    assert!(
        iam.authenticate(&elsewhere, AUD).await.is_err(),
        "a self-signed JWT for another API is refused"
    );
    let too_long = encode_rs256(
        &key_of(&file),
        &claims(json!({"iss": app.email, "sub": app.email, "aud": "x", "iat": now, "exp": now + 86_400})),
    )
    .unwrap();
    assert!(iam.authenticate(&too_long, AUD).await.is_err());
    // ID tokens are not API credentials; garbage neither.
    assert!(iam.authenticate(&id, AUD).await.is_err());
    assert!(iam.authenticate("ya29.garbage", AUD).await.is_err());

    // Deny by default; a grant on the account, then on the project; revoke.
    let sm = "projects/demo-proj/secrets/db-pass";
    assert!(
        !iam.check(&sa(&app.email), "secretmanager.versions.access", sm)
            .await
            .unwrap()
    );
    assert!(
        iam.edit_binding(
            sm,
            "roles/secretmanager.secretAccessor",
            &format!("serviceAccount:{}", app.email),
            true
        )
        .await
        .unwrap()
    );
    assert!(
        iam.check(&sa(&app.email), "secretmanager.versions.access", sm)
            .await
            .unwrap()
    );
    assert!(
        !iam.check(&sa(&gw.email), "secretmanager.versions.access", sm)
            .await
            .unwrap()
    );
    // Project-level grants reach every resource of the project.
    iam.edit_binding(
        "projects/demo-proj",
        "roles/viewer",
        &format!("serviceAccount:{}", gw.email),
        true,
    )
    .await
    .unwrap();
    assert!(
        iam.check(&sa(&gw.email), "secretmanager.secrets.get", sm)
            .await
            .unwrap()
    );
    assert!(
        !iam.check(&sa(&gw.email), "secretmanager.versions.access", sm)
            .await
            .unwrap()
    );
    assert!(
        iam.edit_binding(
            sm,
            "roles/secretmanager.secretAccessor",
            &format!("serviceAccount:{}", app.email),
            false
        )
        .await
        .unwrap()
    );
    assert!(
        !iam.check(&sa(&app.email), "secretmanager.versions.access", sm)
            .await
            .unwrap()
    );

    // allUsers / allAuthenticatedUsers.
    let svc = "projects/demo-proj/locations/us-central1/services/hello";
    assert!(
        !iam.check(&Principal::Anonymous, "run.routes.invoke", svc)
            .await
            .unwrap()
    );
    iam.edit_binding(svc, "roles/run.invoker", "allAuthenticatedUsers", true)
        .await
        .unwrap();
    assert!(
        !iam.check(&Principal::Anonymous, "run.routes.invoke", svc)
            .await
            .unwrap()
    );
    assert!(
        iam.check(&sa(&gw.email), "run.routes.invoke", svc)
            .await
            .unwrap()
    );
    iam.edit_binding(svc, "roles/run.invoker", "allUsers", true)
        .await
        .unwrap();
    assert!(
        iam.check(&Principal::Anonymous, "run.routes.invoke", svc)
            .await
            .unwrap()
    );

    // Etags: a stale one is refused, the current one works, none overwrites blindly.
    let (p, writes) = (*iam.policy(svc).await.unwrap()).clone();
    let stale = policy::etag(writes - 1);
    assert!(matches!(
        iam.set_policy(svc, &p, Some(&stale)).await,
        Err(Error::Aborted(_))
    ));
    let next = iam
        .set_policy(svc, &Policy::default(), Some(&policy::etag(writes)))
        .await
        .unwrap();
    assert_eq!(next, writes + 1);
    assert!(matches!(
        iam.set_policy(svc, &p, Some(&policy::etag(writes))).await,
        Err(Error::Aborted(_))
    ));
    assert_eq!(iam.set_policy(svc, &p, None).await.unwrap(), writes + 2);
    // Projects refuse public members.
    assert!(matches!(
        iam.edit_binding("projects/demo-proj", "roles/viewer", "allUsers", true)
            .await,
        Err(Error::InvalidArgument(_))
    ));
    // Members that are accounts of ours must exist.
    let ghost = Policy::from_json(&json!({"bindings": [{"role": "roles/run.invoker", "members": ["serviceAccount:ghost@demo-proj.iam.gserviceaccount.com"]}]})).unwrap();
    assert!(matches!(
        iam.set_policy(svc, &ghost, None).await,
        Err(Error::InvalidArgument(_))
    ));

    // IAM Credentials: only with serviceAccountTokenCreator on the target.
    let target = format!("projects/-/serviceAccounts/{}", app.email);
    assert!(matches!(
        iam.generate_id_token(&sa(&gw.email), &target, &[], "https://aud", true, false)
            .await,
        Err(Error::PermissionDenied(_))
    ));
    iam.edit_binding(
        &account_resource("demo-proj", &app.email),
        "roles/iam.serviceAccountTokenCreator",
        &format!("serviceAccount:{}", gw.email),
        true,
    )
    .await
    .unwrap();
    let minted = iam
        .generate_id_token(&sa(&gw.email), &target, &[], "https://aud", false, false)
        .await
        .unwrap();
    let c = iam
        .verify_id_token(&minted, &["https://aud".into()])
        .await
        .unwrap();
    assert_eq!(c["sub"], app.unique_id.as_str());
    assert!(c.get("email").is_none());
    let (at, expire) = iam
        .generate_access_token(&sa(&gw.email), &target, &[], &["s".into()], 600)
        .await
        .unwrap();
    assert!(expire.ends_with('Z') && !expire.contains('.'), "{expire}");
    assert_eq!(
        iam.authenticate(&at, AUD).await.unwrap(),
        Principal::ServiceAccount {
            email: app.email.clone(),
            unique_id: app.unique_id.clone()
        }
    );
    let signed = iam
        .sign_jwt(
            &sa(&gw.email),
            &target,
            &[],
            &json!({"sub": "x", "exp": now + 60}).to_string(),
        )
        .await
        .unwrap();
    let (blob_kid, sig) = iam
        .sign_blob(&sa(&gw.email), &target, &[], b"blob")
        .await
        .unwrap();
    assert_eq!(blob_kid, signed.key_id);
    // Both verify against the account's published keys.
    let published = iam.published_keys(&app.email).await.unwrap();
    let key = published
        .iter()
        .find(|k| k.jwk["kid"] == signed.key_id.as_str())
        .map(|k| PublicKey::from_jwk(&k.jwk).unwrap())
        .unwrap();
    verify_with_key(&signed.signed_jwt, &key).unwrap();
    assert!(key.verify_rs256(b"blob", &sig));
    assert!(
        published
            .iter()
            .find(|k| k.key_id == record.key_id)
            .unwrap()
            .certificate
            .contains("BEGIN CERTIFICATE")
    );
    assert!(matches!(
        iam.sign_jwt(
            &sa(&gw.email),
            &target,
            &[],
            &json!({"exp": now + 86_400}).to_string()
        )
        .await,
        Err(Error::InvalidArgument(_))
    ));
    // Unknown targets look like missing permission.
    assert!(matches!(
        iam.generate_id_token(
            &sa(&gw.email),
            "projects/-/serviceAccounts/nobody@demo-proj.iam.gserviceaccount.com",
            &[],
            "a",
            true,
            false
        )
        .await,
        Err(Error::PermissionDenied(_))
    ));

    // A disabled account's tokens are refused, and it gets no new ones; enabling restores.
    iam.set_account_disabled(&app.email, true).await.unwrap();
    assert!(iam.authenticate(&access, AUD).await.is_err());
    assert!(iam.authenticate(&self_signed, AUD).await.is_err());
    assert!(
        iam.verify_id_token(&id, &["https://hello.example".into()])
            .await
            .is_err()
    );
    let e = err(iam
        .grant(&form(&assertion(&file, json!({"scope": "s"}), now)), &[])
        .await);
    assert_eq!(e.kind, GrantErrorKind::InvalidGrant);
    iam.set_account_disabled(&app.email, false).await.unwrap();
    assert!(iam.authenticate(&access, AUD).await.is_ok());

    // A deleted key: its self-signed JWTs and the access tokens granted for it stop working.
    iam.delete_key(&app.email, &record.key_id).await.unwrap();
    assert!(iam.authenticate(&access, AUD).await.is_err());
    assert!(iam.authenticate(&self_signed, AUD).await.is_err());
    let e = err(iam
        .grant(&form(&assertion(&file, json!({"scope": "s"}), now)), &[])
        .await);
    assert_eq!(e.description, "Invalid JWT Signature.");
    assert!(
        iam.published_keys(&app.email)
            .await
            .unwrap()
            .iter()
            .all(|k| k.key_id != record.key_id)
    );

    // The audit log has every decision, allowed or not, and no token material.
    let log = iam.audit_log(500).await.unwrap();
    assert!(log.iter().any(|r| r.allowed
        && r.permission == "secretmanager.versions.access"
        && r.principal == format!("serviceAccount:{}", app.email)));
    assert!(log.iter().any(|r| !r.allowed && r.principal == "allUsers"));
    assert!(
        log.iter()
            .all(|r| !r.principal.contains("ya29") && !r.resource.contains("ya29"))
    );

    // Deleting an account removes its keys and policy.
    iam.delete_account(&gw.email).await.unwrap();
    assert!(iam.account(&gw.email).await.unwrap().is_none());
    assert!(matches!(iam.keys(&gw.email).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn sqlite() {
    let dir = temp_dir("iam-sqlite").unwrap();
    let store = Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("iam.db").display()
    ))
    .await
    .unwrap();
    story(store).await;
}

#[tokio::test]
async fn postgres() {
    let pg = PgCluster::start().expect("ephemeral PostgreSQL");
    let store = Store::connect(&pg.create_database("iam").unwrap())
        .await
        .unwrap();
    story(store).await;
}
