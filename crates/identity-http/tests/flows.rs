//! Account flows that must hold on both backends, and bad input that must never be a 500.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Builder, Server, message};
use gatehouse_testkit::{FetchJson as _, PgCluster};
use serde_json::{Value, json};

/// Concurrent sign-ups with one e-mail: exactly one wins; batch paging, query and delete work.
async fn shared_story(s: &Server) {
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let http = s.http.clone();
            let url = format!(
                "{}/identitytoolkit.googleapis.com/v1/accounts:signUp?key=k",
                s.url
            );
            // Mixed case: uniqueness is case-insensitive.
            let email = if i % 2 == 0 {
                "Race@Example.com"
            } else {
                "race@example.COM"
            };
            tokio::spawn(async move {
                let res = http
                    .post(url)
                    .json(&json!({"email": email, "password": "secret1"}))
                    .send()
                    .await
                    .unwrap();
                (res.status().as_u16(), res.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let (st, b) = t.await.unwrap();
        match st {
            200 => ok += 1,
            400 => assert_eq!(message(&b), "EMAIL_EXISTS", "{b}"),
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert_eq!(ok, 1, "exactly one concurrent sign-up wins");
    let (_, b) = s
        .admin(
            "demo-project",
            "/accounts:lookup",
            "owner",
            json!({"email": ["race@example.com"]}),
        )
        .await;
    assert_eq!(b["users"].as_array().unwrap().len(), 1);

    // Paging through batchGet sees every account once, in id order.
    for i in 0..5 {
        let (st, b) = s
            .admin(
                "demo-project",
                "/accounts",
                "owner",
                json!({"localId": format!("page-{i}"), "email": format!("p{i}@example.com")}),
            )
            .await;
        assert_eq!(st, 200, "{b}");
    }
    let (st, b) = s
        .admin(
            "demo-project",
            "/accounts",
            "owner",
            json!({"localId": "page-0"}),
        )
        .await;
    assert_eq!((st, message(&b).as_str()), (400, "DUPLICATE_LOCAL_ID"));
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut url = format!(
            "{}/identitytoolkit.googleapis.com/v1/projects/demo-project/accounts:batchGet?maxResults=2",
            s.url
        );
        if let Some(t) = &token {
            url.push_str(&format!("&nextPageToken={t}"));
        }
        let b: Value = s
            .http
            .get(url)
            .bearer_auth("owner")
            .fetch_json()
            .await
            .unwrap();
        for u in b["users"].as_array().unwrap() {
            seen.push(u["localId"].as_str().unwrap().to_owned());
        }
        match b["nextPageToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted);
    assert_eq!(seen.len(), 6);

    let (_, b) = s
        .admin(
            "demo-project",
            "/accounts:query",
            "owner",
            json!({"returnUserInfo": false}),
        )
        .await;
    assert_eq!(b["recordsCount"], "6");

    let (st, b) = s
        .admin(
            "demo-project",
            "/accounts:batchDelete",
            "owner",
            json!({"localIds": ["page-0", "page-1", "nope"]}),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(b["errors"].as_array().unwrap().len(), 2, "{b}");
    assert!(
        b["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("NOT_DISABLED")
    );
    let (_, b) = s
        .admin(
            "demo-project",
            "/accounts:batchDelete",
            "owner",
            json!({"localIds": ["page-0", "page-1"], "force": true}),
        )
        .await;
    assert_eq!(b, json!({}));
    let (_, b) = s
        .admin("demo-project", "/accounts:query", "owner", json!({}))
        .await;
    assert_eq!(b["recordsCount"], "4");
}

#[tokio::test]
async fn story_on_sqlite() {
    shared_story(&Server::dev().await).await;
}

#[tokio::test]
async fn story_on_postgres() {
    let pg = PgCluster::start().expect("ephemeral PostgreSQL");
    let url = pg.create_database("flows").unwrap();
    let s = Builder {
        database_url: Some(url),
        ..Builder::default()
    }
    .start()
    .await;
    shared_story(&s).await;
}

#[tokio::test]
async fn bad_input_gets_firebase_errors_not_500s() {
    let s = Server::dev().await;
    let url = |op: &str| {
        format!(
            "{}/identitytoolkit.googleapis.com/v1/accounts:{op}?key=k",
            s.url
        )
    };
    let raw = |op: &'static str, body: &'static [u8]| {
        let req = s
            .http
            .post(url(op))
            .header("content-type", "application/json")
            .body(body);
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let (st, b) = raw("signUp", b"{not json").await;
    assert_eq!(st, 400);
    assert_eq!(b["error"]["status"], "INVALID_ARGUMENT");
    assert!(message(&b).starts_with("Invalid JSON payload received."));
    let (st, b) = raw("signUp", b"[1,2]").await;
    assert_eq!(
        (st, b["error"]["status"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );
    let (st, b) = raw("signInWithPassword", br#"{"email":{"a":1},"password":"x"}"#).await;
    assert_eq!(
        (st, b["error"]["status"].as_str()),
        (400, Some("INVALID_ARGUMENT")),
        "{b}"
    );
    let (st, b) = raw("update", br#"{"idToken":"x","deleteAttribute":7}"#).await;
    assert_eq!(st, 400, "{b}");

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "signUp",
            json!({"email": "x@example.com"}),
            "MISSING_PASSWORD",
        ),
        (
            "signUp",
            json!({"email": "not-an-email", "password": "secret1"}),
            "INVALID_EMAIL",
        ),
        (
            "signUp",
            json!({"email": "w@example.com", "password": "12345"}),
            "WEAK_PASSWORD : Password should be at least 6 characters",
        ),
        (
            "signInWithPassword",
            json!({"email": "nobody@example.com", "password": "secret1"}),
            "EMAIL_NOT_FOUND",
        ),
        (
            "signInWithPassword",
            json!({"email": "nobody@example.com"}),
            "MISSING_PASSWORD",
        ),
        ("lookup", json!({"idToken": "garbage"}), "INVALID_ID_TOKEN"),
        ("lookup", json!({"idToken": "a.b.c"}), "INVALID_ID_TOKEN"),
        ("lookup", json!({}), "MISSING_ID_TOKEN"),
        ("signInWithCustomToken", json!({}), "MISSING_CUSTOM_TOKEN"),
        (
            "signInWithCustomToken",
            json!({"token": "%%%"}),
            "INVALID_CUSTOM_TOKEN : The custom token format is incorrect.",
        ),
        (
            "sendOobCode",
            json!({"requestType": "PASSWORD_RESET"}),
            "MISSING_EMAIL",
        ),
        (
            "sendOobCode",
            json!({"email": "a@example.com"}),
            "MISSING_REQ_TYPE",
        ),
        (
            "resetPassword",
            json!({"oobCode": "nope"}),
            "INVALID_OOB_CODE",
        ),
        ("update", json!({"oobCode": "nope"}), "INVALID_OOB_CODE"),
        (
            "update",
            json!({"displayName": "x"}),
            "INVALID_REQ_TYPE : Unsupported request parameters.",
        ),
        (
            "createAuthUri",
            json!({"identifier": "a@example.com"}),
            "MISSING_CONTINUE_URI",
        ),
        (
            "signInWithEmailLink",
            json!({"email": "a@example.com", "oobCode": "x"}),
            "INVALID_OOB_CODE",
        ),
    ];
    for (op, body, want) in cases {
        let (st, b) = s.call(op, "k", body.clone()).await;
        assert_eq!(st, 400, "{op} {body}: {b}");
        assert_eq!(message(&b), want, "{op} {body}");
        assert_eq!(b["error"]["errors"][0]["reason"], "invalid");
    }
    let (st, b) = s.refresh("k", "garbage").await;
    assert_eq!((st, message(&b).as_str()), (400, "INVALID_REFRESH_TOKEN"));

    // A body over the limit is refused without a 500.
    let huge = vec![b' '; gatehouse_identity_http::MAX_BODY + 10];
    let res = s
        .http
        .post(url("signUp"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());

    let res = s.get("/identitytoolkit.googleapis.com/v9/nothing").await;
    assert_eq!(res.status().as_u16(), 404);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["error"]["status"], "NOT_FOUND");

    // No key, no bearer.
    let res = s
        .http
        .post(format!(
            "{}/identitytoolkit.googleapis.com/v1/accounts:signUp",
            s.url
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    // targetProjectId needs OAuth.
    let (st, b) = s
        .call("signUp", "k", json!({"targetProjectId": "other"}))
        .await;
    assert_eq!(
        (st, message(&b).as_str()),
        (
            400,
            "INSUFFICIENT_PERMISSION : Only authenticated requests can specify target_project_id."
        )
    );
}

#[tokio::test]
async fn imported_hashes_sign_in_and_are_rehashed() {
    let s = Server::dev().await;
    let body = json!({
        "hashAlgorithm": "SCRYPT",
        "signerKey": "jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA==",
        "saltSeparator": "Bw==", "rounds": 8, "memoryCost": 14,
        "users": [
            {"localId": "imp-1", "email": "imp@example.com", "salt": "42xEC+ixf3L2lw==",
             "passwordHash": "lSrfV15cpx95/sZS2W9c9Kp6i/LVgQNDNC/qzrCnh1SAyZvqmZqAjTdn3aoItz+VHjoZilo78198JAdRuid5lQ=="},
            {"localId": "imp-2", "email": "fake@example.com", "salt": "beach", "passwordHash": "fakeHash:salt=beach:password=hawaii1"},
            {"email": "noid@example.com"}
        ]
    });
    let (st, b) = s
        .admin("demo-project", "/accounts:batchCreate", "owner", body)
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["error"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["error"][0]["index"], 2);
    for _ in 0..2 {
        let (st, b) = s
            .call(
                "signInWithPassword",
                "k",
                json!({"email": "imp@example.com", "password": "user1password"}),
            )
            .await;
        assert_eq!(st, 200, "{b}");
    }
    let (st, _) = s
        .call(
            "signInWithPassword",
            "k",
            json!({"email": "imp@example.com", "password": "user2password"}),
        )
        .await;
    assert_eq!(st, 400);
    let (st, b) = s
        .call(
            "signInWithPassword",
            "k",
            json!({"email": "fake@example.com", "password": "hawaii1"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s
        .admin(
            "demo-project",
            "/accounts:batchCreate",
            "owner",
            json!({"users": []}),
        )
        .await;
    assert_eq!((st, message(&b).as_str()), (400, "MISSING_USER_ACCOUNT"));
}
