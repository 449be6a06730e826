//! The repository on its own, on both backends: constraints hold in the
//! database, not only in the code above it.

use emporium_common::{auth::Role, db::Db};
use emporium_testkit::{TestDb, backend_tests};
use emporium_user::{
    domain::{Roles, User, UserId},
    error::Error,
    store::{MIGRATOR, Store, StoredChanges},
};

backend_tests!(
    insert_get_update_delete_round_trip,
    email_key_is_unique_in_the_database,
    list_pages_by_created_at_then_id,
    migrations_are_idempotent,
);

async fn store(db: &TestDb) -> Store {
    let db = Db::connect(&db.config()).await.unwrap();
    db.migrate(&MIGRATOR).await.unwrap();
    Store::new(db)
}

fn user(email: &str, created_at: i64) -> User {
    User {
        id: UserId::generate(),
        email: email.into(),
        name: "N".into(),
        roles: Roles::customer(),
        active: true,
        created_at,
        updated_at: created_at,
    }
}

async fn insert_get_update_delete_round_trip(db: TestDb) {
    let s = store(&db).await;
    let u = user("Round@Trip.com", 10);
    s.insert(&u, "round@trip.com", "hash").await.unwrap();
    assert_eq!(s.get(u.id).await.unwrap(), Some(u.clone()));
    let (found, hash) = s.credentials("round@trip.com").await.unwrap().unwrap();
    assert_eq!((found, hash.as_str()), (u.clone(), "hash"));

    let changed = s
        .update(
            u.id,
            StoredChanges {
                active: Some(false),
                roles: Some(Roles::new([Role::Admin]).unwrap().to_db()),
                ..Default::default()
            },
            20,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(!changed.active);
    assert_eq!(changed.roles.as_slice(), [Role::Admin]);
    assert_eq!(
        (changed.email.as_str(), changed.updated_at),
        ("Round@Trip.com", 20)
    );
    assert_eq!(
        s.update(UserId::generate(), StoredChanges::default(), 1)
            .await
            .unwrap(),
        None
    );

    assert!(s.delete(u.id).await.unwrap());
    assert!(!s.delete(u.id).await.unwrap());
    assert_eq!(s.get(u.id).await.unwrap(), None);
}

async fn email_key_is_unique_in_the_database(db: TestDb) {
    let s = store(&db).await;
    s.insert(&user("a@b.co", 1), "a@b.co", "h").await.unwrap();
    let err = s
        .insert(&user("A@B.CO", 2), "a@b.co", "h")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists), "{err:?}");
    let other = user("c@d.co", 3);
    s.insert(&other, "c@d.co", "h").await.unwrap();
    let err = s
        .update(
            other.id,
            StoredChanges {
                email: Some(("A@b.co".into(), "a@b.co".into())),
                ..Default::default()
            },
            4,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists), "{err:?}");
    assert_eq!(s.get(other.id).await.unwrap().unwrap().email, "c@d.co");
}

async fn list_pages_by_created_at_then_id(db: TestDb) {
    let s = store(&db).await;
    // Equal timestamps force the id tie-break.
    let mut all = Vec::new();
    for (i, t) in [5, 5, 5, 1, 9].into_iter().enumerate() {
        let u = user(&format!("u{i}@x.co"), t);
        s.insert(&u, &format!("u{i}@x.co"), "h").await.unwrap();
        all.push(u);
    }
    all.sort_by_key(|u| (u.created_at, u.id.to_string()));
    let first = s.list(None, 2).await.unwrap();
    assert_eq!(first, all[..2]);
    let last = first.last().unwrap();
    let rest = s
        .list(Some((last.created_at, last.id.to_string())), 10)
        .await
        .unwrap();
    assert_eq!(rest, all[2..]);
}

async fn migrations_are_idempotent(db: TestDb) {
    let s = store(&db).await;
    s.db().migrate(&MIGRATOR).await.unwrap();
    s.db().ping().await.unwrap();
}
