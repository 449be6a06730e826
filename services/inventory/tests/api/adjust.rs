//! AdjustStock: signed changes, never below zero or below what is reserved,
//! idempotent by key.

use emporium_common::rpc::Code;
use emporium_testkit::{TestDb, backend_tests, bearer};

use crate::{app, counters, item, new_order, pb, preconditions, refused, violated_fields};

backend_tests!(
    adjustments_receive_and_remove_stock,
    a_replay_returns_the_first_result_and_changes_nothing,
    a_key_reused_for_another_request_is_refused,
    stock_never_goes_below_zero_or_below_reserved,
    adjust_names_every_invalid_field,
    adjusting_an_unknown_product_is_not_found,
);

fn request(
    product: pb::adjust_stock_request::Product,
    delta: i64,
    reason: &str,
    key: &str,
) -> pb::AdjustStockRequest {
    pb::AdjustStockRequest {
        product: Some(product),
        delta,
        reason: reason.into(),
        idempotency_key: key.into(),
    }
}

async fn adjustments_receive_and_remove_stock(db: TestDb) {
    let mut app = app(db).await;
    let created = app.create("BOLT", 10).await;
    let p = app.adjust("BOLT", 10, "k1").await.unwrap();
    assert_eq!(
        (p.stock_on_hand, p.stock_reserved, p.stock_available),
        (10, 0, 10)
    );
    assert!(crate::micros(&p.update_time) > crate::micros(&created.update_time));
    let admin = app.admin.clone();
    let p = app
        .client
        .adjust_stock(bearer(
            request(
                pb::adjust_stock_request::Product::ProductId(created.id.clone()),
                -3,
                "damaged in store",
                "k2",
            ),
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(p.stock_on_hand, 7);
    assert_eq!(app.product("BOLT").await, p);
    // Removed units were never sold: received is the net of all adjustments.
    assert_eq!(counters(&app.level("BOLT").await), (7, 0, 7, 0));
}

async fn a_replay_returns_the_first_result_and_changes_nothing(db: TestDb) {
    let mut app = app(db).await;
    let created = app.create("NUT", 10).await;
    let first = app.adjust("NUT", 5, "delivery-1").await.unwrap();
    app.adjust("NUT", 2, "delivery-2").await.unwrap();

    // The same request again, even naming the product by id this time.
    let admin = app.admin.clone();
    let again = app
        .client
        .adjust_stock(bearer(
            request(
                pb::adjust_stock_request::Product::ProductId(created.id),
                5,
                "test",
                "delivery-1",
            ),
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(again, first, "the product as it was after the first call");
    assert_eq!(app.adjust("NUT", 5, "delivery-1").await.unwrap(), first);
    assert_eq!(app.product("NUT").await.stock_on_hand, 7);
    assert_eq!(counters(&app.level("NUT").await), (7, 0, 7, 0));
}

async fn a_key_reused_for_another_request_is_refused(db: TestDb) {
    let mut app = app(db).await;
    app.create("A", 10).await;
    app.create("B", 10).await;
    app.adjust("A", 5, "used").await.unwrap();
    let admin = app.admin.clone();
    use pb::adjust_stock_request::Product as P;
    for req in [
        request(P::Sku("A".into()), 6, "test", "used"),
        request(P::Sku("A".into()), 5, "another reason", "used"),
        request(P::Sku("B".into()), 5, "test", "used"),
    ] {
        let s = refused(
            app.client.adjust_stock(bearer(req, &admin)).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&s), ["idempotency_key"]);
    }
    assert_eq!(counters(&app.level("A").await), (5, 0, 5, 0));
    assert_eq!(counters(&app.level("B").await), (0, 0, 0, 0));
}

async fn stock_never_goes_below_zero_or_below_reserved(db: TestDb) {
    let mut app = app(db).await;
    app.stocked("CUP", 100, 5).await;
    app.reserve(&new_order(), vec![item("CUP", 3)])
        .await
        .unwrap();

    let s = refused(
        app.adjust("CUP", -3, "stock-take").await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        preconditions(&s),
        [(
            "STOCK".into(),
            "CUP".into(),
            "delta -3 on 5 on hand would leave 2, with 3 reserved".into()
        )]
    );
    refused(
        app.adjust("CUP", -6, "other").await,
        Code::FailedPrecondition,
    );
    assert_eq!(counters(&app.level("CUP").await), (5, 3, 5, 0));

    // A refused call does not use up its key; down to exactly what is reserved
    // is allowed.
    let p = app.adjust("CUP", -2, "stock-take").await.unwrap();
    assert_eq!(
        (p.stock_on_hand, p.stock_reserved, p.stock_available),
        (3, 3, 0)
    );
    assert_eq!(counters(&app.level("CUP").await), (3, 3, 3, 0));
}

async fn adjust_names_every_invalid_field(db: TestDb) {
    let mut app = app(db).await;
    let admin = app.admin.clone();
    let s = refused(
        app.client
            .adjust_stock(bearer(
                pb::AdjustStockRequest {
                    product: None,
                    delta: 0,
                    reason: "  ".into(),
                    idempotency_key: String::new(),
                },
                &admin,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violated_fields(&s),
        ["product", "delta", "reason", "idempotency_key"]
    );
    let s = refused(
        app.client
            .adjust_stock(bearer(
                request(
                    pb::adjust_stock_request::Product::Sku("bad sku".into()),
                    1_000_000_001,
                    &"r".repeat(501),
                    &"k".repeat(129),
                ),
                &admin,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violated_fields(&s),
        ["sku", "delta", "reason", "idempotency_key"]
    );
}

async fn adjusting_an_unknown_product_is_not_found(db: TestDb) {
    let mut app = app(db).await;
    let s = refused(app.adjust("GHOST", 5, "k").await, Code::NotFound);
    assert_eq!(s.message(), "product not found");
    // The key was not used: it works once the product exists.
    app.create("GHOST", 10).await;
    assert_eq!(app.adjust("GHOST", 5, "k").await.unwrap().stock_on_hand, 5);
}
