//! Long-running operations against SQLite and a real PostgreSQL: created, updated, finished
//! once, listed by parent, deleted, and still there after the store is reopened.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_store::{Error, OperationRecord, Store};
use gatehouse_testkit::{PgCluster, temp_dir};

fn op(name: &str, parent: &str, at: i64) -> OperationRecord {
    OperationRecord {
        name: format!("{parent}/operations/{name}"),
        parent: parent.into(),
        metadata: "{\"step\":0}".into(),
        done: false,
        result: None,
        created_at: at,
        updated_at: at,
    }
}

async fn story(store: &Store) {
    let parent = "projects/p/locations/l";
    let a = op("a", parent, 1);
    store.insert_operation(&a).await.unwrap();
    store.insert_operation(&op("b", parent, 2)).await.unwrap();
    store
        .insert_operation(&op("c", "projects/q/locations/l", 3))
        .await
        .unwrap();
    assert!(matches!(
        store.insert_operation(&a).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(store.operation(&a.name).await.unwrap(), Some(a.clone()));
    assert_eq!(
        store
            .operation("projects/p/locations/l/operations/zz")
            .await
            .unwrap(),
        None
    );

    assert!(
        store
            .set_operation_metadata(&a.name, "{\"step\":1}", 5)
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_operation(&a.name, "{\"response\":{\"ok\":true}}", None, 6)
            .await
            .unwrap()
    );
    // The first result wins; a finished operation's metadata is frozen.
    assert!(
        !store
            .finish_operation(&a.name, "{\"error\":{}}", Some("{}"), 7)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_operation_metadata(&a.name, "{}", 8)
            .await
            .unwrap()
    );
    let got = store.operation(&a.name).await.unwrap().unwrap();
    assert!(got.done);
    assert_eq!(got.metadata, "{\"step\":1}");
    assert_eq!(got.result.as_deref(), Some("{\"response\":{\"ok\":true}}"));
    assert_eq!(got.updated_at, 6);

    let b = format!("{parent}/operations/b");
    assert!(
        store
            .finish_operation(&b, "{\"error\":{\"code\":1}}", Some("{\"final\":1}"), 9)
            .await
            .unwrap()
    );
    assert_eq!(
        store.operation(&b).await.unwrap().unwrap().metadata,
        "{\"final\":1}"
    );

    let listed: Vec<String> = store
        .operations(parent)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(listed, vec![a.name.clone(), b.clone()]);
    assert!(store.delete_operation(&b).await.unwrap());
    assert!(!store.delete_operation(&b).await.unwrap());
    assert_eq!(store.operations(parent).await.unwrap().len(), 1);
}

#[tokio::test]
async fn sqlite_operations_survive_a_restart() {
    let dir = temp_dir("store-ops").unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    let store = Store::connect(&url).await.unwrap();
    story(&store).await;
    store.close().await;
    let again = Store::connect(&url).await.unwrap();
    let kept = again
        .operation("projects/p/locations/l/operations/a")
        .await
        .unwrap()
        .unwrap();
    assert!(kept.done);
}

#[tokio::test]
async fn postgres_operations() {
    let pg = PgCluster::start().expect("ephemeral PostgreSQL");
    let store = Store::connect(&pg.create_database("ops").unwrap())
        .await
        .unwrap();
    story(&store).await;
}
