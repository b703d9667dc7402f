//! The same storage story against SQLite and a real PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_store::{Error, IdentityLink, OobCodeRecord, RefreshTokenRecord, Store, UserRecord};
use gatehouse_testkit::{PgCluster, temp_dir};

fn user(id: &str, email: Option<&str>) -> UserRecord {
    UserRecord {
        project_id: "p".into(),
        local_id: id.into(),
        email: email.map(str::to_owned),
        email_unique: email.map(str::to_owned),
        created_at: 1,
        valid_since_secs: 0,
        providers: "[]".into(),
        mfa: "[]".into(),
        ..UserRecord::default()
    }
}

async fn story(store: &Store) {
    store
        .insert_user(&user("u1", Some("a@x.io")), &[])
        .await
        .unwrap();
    assert!(matches!(
        store.insert_user(&user("u2", Some("a@x.io")), &[]).await,
        Err(Error::Conflict("email"))
    ));
    assert!(matches!(
        store.insert_user(&user("u1", None), &[]).await,
        Err(Error::Conflict("primary"))
    ));
    // A failed insert leaves nothing behind, links included.
    let link = IdentityLink {
        provider_id: "google.com".into(),
        raw_id: "g1".into(),
    };
    store
        .insert_user(&user("u3", None), std::slice::from_ref(&link))
        .await
        .unwrap();
    assert!(matches!(
        store
            .insert_user(&user("u4", None), std::slice::from_ref(&link))
            .await,
        Err(Error::Conflict("identity"))
    ));
    assert!(store.user("p", "", "u4").await.unwrap().is_none());
    assert_eq!(
        store
            .user_id_by_identity("p", "", "google.com", "g1")
            .await
            .unwrap()
            .as_deref(),
        Some("u3")
    );

    // Optimistic concurrency: a stale version loses.
    let mut a = store.user("p", "", "u1").await.unwrap().unwrap();
    let stale = a.clone();
    a.display_name = Some("Ann".into());
    assert!(store.update_user(&a, None).await.unwrap());
    assert!(!store.update_user(&stale, None).await.unwrap());
    assert_eq!(
        store
            .user("p", "", "u1")
            .await
            .unwrap()
            .unwrap()
            .display_name
            .as_deref(),
        Some("Ann")
    );

    // Refresh tokens go with their user.
    let rt = RefreshTokenRecord {
        token_hash: "h1".into(),
        project_id: "p".into(),
        tenant_id: String::new(),
        local_id: "u1".into(),
        provider: "password".into(),
        extra_claims: None,
        created_at: 5,
    };
    store.insert_refresh_token(&rt).await.unwrap();
    assert_eq!(
        store.refresh_token("h1").await.unwrap().unwrap().local_id,
        "u1"
    );
    assert!(store.delete_user("p", "", "u1").await.unwrap());
    assert!(store.refresh_token("h1").await.unwrap().is_none());

    // OOB codes work once.
    let code = OobCodeRecord {
        code_hash: "c1".into(),
        project_id: "p".into(),
        tenant_id: String::new(),
        request_type: "VERIFY_EMAIL".into(),
        email: "a@x.io".into(),
        new_email: None,
        local_id: None,
        created_at: 1,
        expires_at: 100,
        dev_code: Some("code".into()),
        dev_link: Some("link".into()),
    };
    store.insert_oob_code(&code).await.unwrap();
    assert_eq!(
        store.list_dev_oob_codes("p", "", 50).await.unwrap().len(),
        1
    );
    assert!(
        store
            .list_dev_oob_codes("p", "", 100)
            .await
            .unwrap()
            .is_empty()
    );
    let (first, second) = tokio::join!(store.take_oob_code("c1"), store.take_oob_code("c1"));
    assert_eq!(
        u8::from(first.unwrap().is_some()) + u8::from(second.unwrap().is_some()),
        1
    );

    // Listing is ordered by id and paged by the last id.
    for id in ["m3", "m1", "m2"] {
        store.insert_user(&user(id, None), &[]).await.unwrap();
    }
    let page: Vec<String> = store
        .list_users("p", "", "m1", 2)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.local_id)
        .collect();
    assert_eq!(page, ["m2", "m3"]);
    assert_eq!(store.count_users("p", "").await.unwrap(), 4);
    store.put_project_settings("p", "{\"a\":1}").await.unwrap();
    store.put_project_settings("p", "{\"a\":2}").await.unwrap();
    assert_eq!(
        store.project_settings("p").await.unwrap().as_deref(),
        Some("{\"a\":2}")
    );
}

#[tokio::test]
async fn sqlite() {
    let dir = temp_dir("store-sqlite").unwrap();
    let store = Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("s.db").display()
    ))
    .await
    .unwrap();
    story(&store).await;
    // Reopening runs migrations idempotently and keeps data.
    store.close().await;
    let again = Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("s.db").display()
    ))
    .await
    .unwrap();
    assert_eq!(again.count_users("p", "").await.unwrap(), 4);
}

#[tokio::test]
async fn postgres() {
    let pg = PgCluster::start().expect("ephemeral PostgreSQL");
    let store = Store::connect(&pg.create_database("store").unwrap())
        .await
        .unwrap();
    story(&store).await;
}

#[tokio::test]
async fn rejects_unknown_urls() {
    assert!(matches!(
        Store::connect("mysql://x").await,
        Err(Error::UnsupportedUrl)
    ));
}

/// SQLite reads of refresh tokens and accounts run on the calling thread over their own
/// connections: they must see every write committed through any pool at once (a second store
/// on the same file stands for another process), including deletions, and keep answering
/// while writes go on.
#[tokio::test]
async fn sqlite_reads_on_the_calling_thread_see_every_committed_write() {
    let dir = temp_dir("store-inline").unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    let reader = Store::connect(&url).await.unwrap();
    let writer = Store::connect(&url).await.unwrap();
    assert!(reader.reads_inline(), "a file database is read inline");
    assert!(
        !Store::connect("sqlite::memory:")
            .await
            .unwrap()
            .reads_inline(),
        "an in-memory database cannot be opened twice"
    );

    let mut u = user("u1", Some("a@x.io"));
    writer.insert_user(&u, &[]).await.unwrap();
    let token = RefreshTokenRecord {
        token_hash: "h1".into(),
        project_id: "p".into(),
        tenant_id: String::new(),
        local_id: "u1".into(),
        provider: "password".into(),
        extra_claims: Some("{\"x\":1}".into()),
        created_at: 7,
    };
    writer.insert_refresh_token(&token).await.unwrap();
    assert_eq!(reader.refresh_token("h1").await.unwrap(), Some(token));
    assert_eq!(reader.refresh_token("h2").await.unwrap(), None);
    let fresh = reader.user_fresh("p", "", "u1").await.unwrap().unwrap();
    assert_eq!(fresh.email.as_deref(), Some("a@x.io"));
    assert_eq!(fresh.version, u.version);
    let by_email = reader.users_by_email("p", "", "a@x.io").await.unwrap();
    assert_eq!(by_email.len(), 1);
    assert_eq!(by_email[0].local_id, "u1");

    // Updates and deletions by the other store are seen at once.
    u.disabled = true;
    writer.update_user(&u, None).await.unwrap();
    assert!(
        reader
            .user_fresh("p", "", "u1")
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
    writer.delete_refresh_tokens("p", "", "u1").await.unwrap();
    assert_eq!(reader.refresh_token("h1").await.unwrap(), None);

    // Reads keep answering while another store writes.
    let writes = {
        let writer = writer.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                let id = format!("w{i}");
                writer
                    .insert_user(&user(&id, Some(&format!("{id}@x.io"))), &[])
                    .await
                    .unwrap();
            }
        })
    };
    let mut seen = 0;
    while !writes.is_finished() {
        seen = reader
            .users_by_email("p", "", "w199@x.io")
            .await
            .unwrap()
            .len();
        assert!(reader.user_fresh("p", "", "u1").await.unwrap().is_some());
        tokio::task::yield_now().await;
    }
    writes.await.unwrap();
    assert_eq!(
        reader
            .users_by_email("p", "", "w199@x.io")
            .await
            .unwrap()
            .len(),
        1,
        "the last write is visible after it returned (seen during: {seen})"
    );
}
