//! The repository on its own, on both backends: constraints hold in the
//! database, not only in the code above it.

use emporium_common::db::{Backend, Db};
use emporium_inventory::{
    domain::{Currency, Product, ProductId, ProductRef, Sku},
    error::Error,
    store::{MIGRATOR, Store},
};
use emporium_testkit::{TestDb, backend_tests};

backend_tests!(
    insert_and_find_round_trip,
    skus_are_unique_in_the_database,
    the_database_refuses_oversell_and_an_unbalanced_ledger,
    listing_is_in_byte_order_whatever_the_collation,
    migrations_are_idempotent,
);

async fn store(db: &TestDb) -> Store {
    let db = Db::connect(&db.config()).await.unwrap();
    db.migrate(&MIGRATOR).await.unwrap();
    Store::new(db)
}

fn product(sku: &str) -> Product {
    Product {
        id: ProductId::generate(),
        sku: Sku::parse(sku).unwrap(),
        name: format!("Product {sku}"),
        description: "d".into(),
        unit_price: emporium_inventory::domain::price(499, Currency::parse("EUR").unwrap())
            .unwrap(),
        on_hand: 0,
        reserved: 0,
        created_at: 10,
        updated_at: 10,
    }
}

async fn insert_and_find_round_trip(db: TestDb) {
    let s = store(&db).await;
    let p = product("ROUND-TRIP");
    s.insert_product(&p).await.unwrap();
    assert_eq!(
        s.product(&ProductRef::Id(p.id)).await.unwrap(),
        Some(p.clone())
    );
    assert_eq!(
        s.product(&ProductRef::Sku(p.sku.clone())).await.unwrap(),
        Some(p.clone())
    );
    assert_eq!(
        s.product(&ProductRef::Id(ProductId::generate()))
            .await
            .unwrap(),
        None
    );
    let eur = Currency::parse("EUR").unwrap();
    assert_eq!(s.foreign_currency(&eur).await.unwrap(), None);
    let usd = Currency::parse("USD").unwrap();
    assert_eq!(s.foreign_currency(&usd).await.unwrap(), Some("EUR".into()));
}

async fn skus_are_unique_in_the_database(db: TestDb) {
    let s = store(&db).await;
    s.insert_product(&product("SAME")).await.unwrap();
    let err = s.insert_product(&product("SAME")).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists), "{err:?}");
}

async fn the_database_refuses_oversell_and_an_unbalanced_ledger(db: TestDb) {
    let s = store(&db).await;
    s.insert_product(&product("GUARD")).await.unwrap();
    let w = s.db().writer();
    sqlx::query("UPDATE products SET on_hand = 5, received = 5 WHERE sku = 'GUARD'")
        .execute(w)
        .await
        .unwrap();
    for bad in [
        "UPDATE products SET reserved = 6 WHERE sku = 'GUARD'",
        "UPDATE products SET reserved = -1 WHERE sku = 'GUARD'",
        "UPDATE products SET on_hand = -1, received = -1 WHERE sku = 'GUARD'",
        "UPDATE products SET on_hand = 6 WHERE sku = 'GUARD'",
        "UPDATE products SET sold = 1 WHERE sku = 'GUARD'",
        "UPDATE products SET unit_price = 0 WHERE sku = 'GUARD'",
    ] {
        assert!(sqlx::query(bad).execute(w).await.is_err(), "{bad}");
    }
    let levels = s.stock_levels().await.unwrap();
    assert_eq!(
        (
            levels[0].on_hand,
            levels[0].reserved,
            levels[0].received,
            levels[0].sold
        ),
        (5, 0, 5, 0)
    );
    assert!(levels[0].is_balanced());
}

async fn listing_is_in_byte_order_whatever_the_collation(db: TestDb) {
    let s = store(&db).await;
    if s.db().backend() == Backend::Postgres {
        // The test cluster runs with the C locale; give the column a linguistic
        // collation (ICU's root order puts '_' before '-' before digits) so the
        // listing has to ask for byte order itself. Skipped if ICU is missing.
        let icu =
            sqlx::query("ALTER TABLE products ALTER COLUMN sku TYPE TEXT COLLATE \"und-x-icu\"")
                .execute(s.db().writer())
                .await;
        if icu.is_err() {
            eprintln!("no ICU collation in this PostgreSQL: collation part skipped");
        }
    }
    for sku in ["A_1", "AB", "A-1", "A1", "B"] {
        s.insert_product(&product(sku)).await.unwrap();
    }
    let skus =
        |ps: Vec<Product>| -> Vec<String> { ps.into_iter().map(|p| p.sku.to_string()).collect() };
    let first = s.list(None, 2).await.unwrap();
    assert_eq!(skus(first.clone()), ["A-1", "A1"]);
    let rest = s.list(Some(&first[1].sku), 10).await.unwrap();
    assert_eq!(skus(rest), ["AB", "A_1", "B"]);
}

async fn migrations_are_idempotent(db: TestDb) {
    let s = store(&db).await;
    s.db().migrate(&MIGRATOR).await.unwrap();
    s.db().ping().await.unwrap();
}
