//! ReserveStock, CommitReservation, ReleaseReservation: all or nothing,
//! authoritative prices, idempotent by order id, stock moving between counters.

use emporium_common::rpc::{Code, StatusExt as _};
use emporium_testkit::{TestDb, backend_tests};

use crate::{app, assert_code, counters, eur, item, new_order, pb, preconditions, violated_fields};

backend_tests!(
    reserve_prices_and_holds_stock,
    reserve_is_all_or_nothing_and_names_every_short_sku,
    unknown_products_are_not_found_and_each_is_named,
    reserve_names_every_invalid_item,
    one_product_named_twice_is_refused,
    reserve_is_idempotent_by_order_id,
    commit_sells_the_units_once,
    commit_errors,
    release_of_a_reserved_order_frees_its_units,
    release_after_commit_returns_the_goods,
    release_before_reserve_leaves_a_tombstone,
    only_the_order_service_may_reserve_commit_or_release,
);

fn by_id(id: &str, quantity: i64) -> pb::ReserveStockItem {
    pb::ReserveStockItem {
        product: Some(pb::reserve_stock_item::Product::ProductId(id.into())),
        quantity,
    }
}

fn status(r: &pb::Reservation) -> pb::ReservationStatus {
    pb::ReservationStatus::try_from(r.status).unwrap()
}

async fn reserve_prices_and_holds_stock(db: TestDb) {
    let mut app = app(db).await;
    app.stocked("A", 250, 10).await;
    let b = app.stocked("B", 1000, 5).await;
    let order = new_order();
    let r = app
        .reserve(&order, vec![item("A", 3), by_id(&b.id, 1)])
        .await
        .unwrap();
    assert_eq!(r.order_id, order);
    assert_eq!(status(&r), pb::ReservationStatus::Reserved);
    let lines: Vec<_> = r
        .lines
        .iter()
        .map(|l| {
            (
                l.sku.as_str(),
                l.name.as_str(),
                l.quantity,
                l.unit_price.clone(),
                l.line_total.clone(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("A", "Product A", 3, eur(250), eur(750)),
            ("B", "Product B", 1, eur(1000), eur(1000)),
        ]
    );
    assert_eq!(r.lines[1].product_id, b.id);
    assert_eq!(r.total, eur(1750));
    assert!(r.create_time.is_some() && r.create_time == r.update_time);

    let a = app.product("A").await;
    assert_eq!(
        (a.stock_on_hand, a.stock_reserved, a.stock_available),
        (10, 3, 7)
    );
    assert_eq!(counters(&app.level("A").await), (10, 3, 10, 0));
    assert_eq!(counters(&app.level("B").await), (5, 1, 5, 0));
}

async fn reserve_is_all_or_nothing_and_names_every_short_sku(db: TestDb) {
    let mut app = app(db).await;
    app.stocked("A", 100, 2).await;
    app.stocked("B", 100, 1).await;
    app.stocked("C", 100, 10).await;
    let order = new_order();
    let s = assert_code(
        app.reserve(&order, vec![item("C", 1), item("B", 2), item("A", 5)])
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(s.message(), "not enough stock for B, A");
    assert_eq!(
        preconditions(&s),
        [
            (
                "STOCK".into(),
                "B".into(),
                "requested 2, available 1".into()
            ),
            (
                "STOCK".into(),
                "A".into(),
                "requested 5, available 2".into()
            ),
        ]
    );
    // Nothing was held, not even C, and nothing was stored for the order.
    for sku in ["A", "B", "C"] {
        assert_eq!(app.level(sku).await.reserved, 0, "{sku}");
    }
    let r = app
        .reserve(&order, vec![item("C", 1), item("A", 2)])
        .await
        .unwrap();
    assert_eq!(status(&r), pb::ReservationStatus::Reserved);
    assert_eq!(counters(&app.level("A").await), (2, 2, 2, 0));
    assert_eq!(counters(&app.level("C").await), (10, 1, 10, 0));
}

async fn unknown_products_are_not_found_and_each_is_named(db: TestDb) {
    let mut app = app(db).await;
    app.stocked("A", 100, 5).await;
    let ghost_id = uuid::Uuid::now_v7().to_string();
    let s = assert_code(
        app.reserve(
            &new_order(),
            vec![item("A", 1), item("NOPE", 1), by_id(&ghost_id, 1)],
        )
        .await,
        Code::NotFound,
    );
    assert_eq!(s.message(), format!("unknown products: NOPE, {ghost_id}"));
    let rpc = emporium_common::status::to_rpc_status(&s);
    let infos = rpc
        .details
        .iter()
        .filter(|d| d.type_url.ends_with("google.rpc.ResourceInfo"))
        .count();
    assert_eq!(infos, 2, "{rpc:?}");
    let first = s.get_details_resource_info().unwrap();
    assert_eq!(first.resource_name, "NOPE");
    assert_eq!(app.level("A").await.reserved, 0);
}

async fn reserve_names_every_invalid_item(db: TestDb) {
    let mut app = app(db).await;
    let a = app.stocked("A", 100, 5).await;
    let many: Vec<_> = (0..101).map(|i| item(&format!("S{i}"), 1)).collect();
    for (order, items, fields) in [
        (
            "not-a-uuid".to_owned(),
            vec![item("A", 1)],
            vec!["order_id"],
        ),
        (new_order(), vec![], vec!["items"]),
        (new_order(), many, vec!["items"]),
        (
            new_order(),
            vec![
                pb::ReserveStockItem {
                    product: None,
                    quantity: 1,
                },
                item("A", 0),
                item("lower", 10_001),
                by_id("nope", 1),
            ],
            vec![
                "items[0].product",
                "items[1].quantity",
                "items[2].sku",
                "items[2].quantity",
                "items[3].product_id",
            ],
        ),
        (
            new_order(),
            vec![item("A", 1), item("B", 1), item("A", 2)],
            vec!["items[2].sku"],
        ),
        (
            new_order(),
            vec![by_id(&a.id, 1), by_id(&a.id, 1)],
            vec!["items[1].product_id"],
        ),
    ] {
        let s = assert_code(app.reserve(&order, items).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&s), fields);
    }
    assert_eq!(counters(&app.level("A").await), (5, 0, 5, 0));
}

async fn one_product_named_twice_is_refused(db: TestDb) {
    let mut app = app(db).await;
    let a = app.stocked("A", 100, 5).await;
    let s = assert_code(
        app.reserve(&new_order(), vec![item("A", 1), by_id(&a.id, 1)])
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["items[1]"]);
    assert_eq!(app.level("A").await.reserved, 0);
}

async fn reserve_is_idempotent_by_order_id(db: TestDb) {
    let mut app = app(db).await;
    let a = app.stocked("A", 100, 10).await;
    app.stocked("B", 300, 10).await;
    let order = new_order();
    let first = app
        .reserve(&order, vec![item("A", 2), item("B", 1)])
        .await
        .unwrap();
    // A retry, even naming a product by id or in another order, holds nothing more.
    for items in [
        vec![item("A", 2), item("B", 1)],
        vec![item("B", 1), by_id(&a.id, 2)],
    ] {
        assert_eq!(app.reserve(&order, items).await.unwrap(), first);
    }
    assert_eq!(counters(&app.level("A").await), (10, 2, 10, 0));

    for items in [
        vec![item("A", 3), item("B", 1)],
        vec![item("A", 2)],
        vec![item("A", 2), item("B", 1), item("C", 1)],
    ] {
        let s = assert_code(app.reserve(&order, items).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&s), ["order_id"]);
    }

    // A retry after commit reports the reservation as it is now.
    app.commit(&order).await.unwrap();
    let later = app
        .reserve(&order, vec![item("A", 2), item("B", 1)])
        .await
        .unwrap();
    assert_eq!(status(&later), pb::ReservationStatus::Committed);
    assert_eq!(later.lines, first.lines);
    assert_eq!(counters(&app.level("A").await), (8, 0, 10, 2));
}

async fn commit_sells_the_units_once(db: TestDb) {
    let mut app = app(db).await;
    app.stocked("A", 100, 10).await;
    let order = new_order();
    let reserved = app.reserve(&order, vec![item("A", 3)]).await.unwrap();
    let committed = app.commit(&order).await.unwrap();
    assert_eq!(status(&committed), pb::ReservationStatus::Committed);
    assert_eq!(committed.lines, reserved.lines);
    assert_eq!(committed.total, reserved.total);
    assert!(crate::micros(&committed.update_time) > crate::micros(&reserved.update_time));
    let a = app.product("A").await;
    assert_eq!(
        (a.stock_on_hand, a.stock_reserved, a.stock_available),
        (7, 0, 7)
    );
    assert_eq!(counters(&app.level("A").await), (7, 0, 10, 3));

    assert_eq!(app.commit(&order).await.unwrap(), committed);
    assert_eq!(counters(&app.level("A").await), (7, 0, 10, 3));
}

async fn commit_errors(db: TestDb) {
    let mut app = app(db).await;
    app.stocked("A", 100, 10).await;
    let s = assert_code(app.commit(&new_order()).await, Code::NotFound);
    assert_eq!(s.message(), "reservation not found");
    let s = assert_code(app.commit("nope").await, Code::InvalidArgument);
    assert_eq!(violated_fields(&s), ["order_id"]);

    let order = new_order();
    app.reserve(&order, vec![item("A", 4)]).await.unwrap();
    app.release(&order).await.unwrap();
    let s = assert_code(app.commit(&order).await, Code::FailedPrecondition);
    assert_eq!(
        preconditions(&s),
        [(
            "STATE".into(),
            order.clone(),
            "reservation is released".into()
        )]
    );
    assert_eq!(counters(&app.level("A").await), (10, 0, 10, 0));
}

async fn release_of_a_reserved_order_frees_its_units(db: TestDb) {
    let mut app = app(db).await;
    app.stocked("A", 100, 10).await;
    let order = new_order();
    app.reserve(&order, vec![item("A", 4)]).await.unwrap();
    assert_eq!(counters(&app.level("A").await), (10, 4, 10, 0));
    let released = app.release(&order).await.unwrap();
    assert_eq!(status(&released), pb::ReservationStatus::Released);
    assert_eq!(released.lines.len(), 1);
    assert_eq!(counters(&app.level("A").await), (10, 0, 10, 0));

    assert_eq!(app.release(&order).await.unwrap(), released);
    assert_eq!(counters(&app.level("A").await), (10, 0, 10, 0));
    let s = assert_code(app.release("nope").await, Code::InvalidArgument);
    assert_eq!(violated_fields(&s), ["order_id"]);
}

async fn release_after_commit_returns_the_goods(db: TestDb) {
    let mut app = app(db).await;
    app.stocked("A", 100, 10).await;
    app.stocked("B", 100, 10).await;
    let order = new_order();
    app.reserve(&order, vec![item("B", 1), item("A", 4)])
        .await
        .unwrap();
    app.commit(&order).await.unwrap();
    assert_eq!(counters(&app.level("A").await), (6, 0, 10, 4));

    let released = app.release(&order).await.unwrap();
    assert_eq!(status(&released), pb::ReservationStatus::Released);
    assert_eq!(counters(&app.level("A").await), (10, 0, 10, 0));
    assert_eq!(counters(&app.level("B").await), (10, 0, 10, 0));
    assert_eq!(app.product("A").await.stock_available, 10);

    assert_eq!(app.release(&order).await.unwrap(), released);
    assert_code(app.commit(&order).await, Code::FailedPrecondition);
    assert_eq!(counters(&app.level("A").await), (10, 0, 10, 0));
}

async fn release_before_reserve_leaves_a_tombstone(db: TestDb) {
    let mut app = app(db).await;
    app.stocked("A", 100, 10).await;
    let order = new_order();
    let tombstone = app.release(&order).await.unwrap();
    assert_eq!(status(&tombstone), pb::ReservationStatus::Released);
    assert!(tombstone.lines.is_empty());
    assert_eq!(tombstone.total, eur(0));
    assert_eq!(tombstone.order_id, order);

    // The late reserve (a timed-out call arriving after the saga gave up) holds
    // nothing and says so.
    let late = app.reserve(&order, vec![item("A", 3)]).await.unwrap();
    assert_eq!(late, tombstone);
    assert_eq!(app.release(&order).await.unwrap(), tombstone);
    assert_code(app.commit(&order).await, Code::FailedPrecondition);
    assert_eq!(counters(&app.level("A").await), (10, 0, 10, 0));
}

async fn only_the_order_service_may_reserve_commit_or_release(db: TestDb) {
    use emporium_common::rpc::Code;
    use emporium_testkit::bearer;
    let mut app = app(db).await;
    app.stocked("MUG", 100, 10).await;
    let order = crate::new_order();
    // Customers and admins alike: the saga's RPCs are not theirs to call.
    for token in [app.customer.clone(), app.admin.clone()] {
        let s = app
            .client
            .reserve_stock(bearer(
                pb::ReserveStockRequest {
                    order_id: order.clone(),
                    items: vec![crate::item("MUG", 1)],
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        let s = app
            .client
            .commit_reservation(bearer(
                pb::CommitReservationRequest {
                    order_id: order.clone(),
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        let s = app
            .client
            .release_reservation(bearer(
                pb::ReleaseReservationRequest {
                    order_id: order.clone(),
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    }
    // Nothing moved, and the order service still can.
    app.reserve(&order, vec![crate::item("MUG", 1)])
        .await
        .unwrap();
    app.commit(&order).await.unwrap();
}
