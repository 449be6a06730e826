//! Many calls at once on a multi-thread runtime: no oversell, no double
//! application of a retried call, no deadlock between reservations that name the
//! same products in different orders.

use emporium_common::rpc::Code;
use emporium_testkit::{TestDb, backend_tests, bearer};

use crate::{app, counters, item, new_order, pb};

backend_tests!(
    a_hundred_reservations_for_thirty_units_never_oversell,
    concurrent_retries_of_one_order_reserve_once,
    concurrent_retries_of_one_adjustment_apply_once,
    concurrent_commit_and_release_settle_consistently,
    reservations_naming_products_in_any_order_do_not_deadlock,
    concurrent_retries_of_one_import_apply_once,
    imports_and_reservations_run_together_without_deadlock,
);

async fn a_hundred_reservations_for_thirty_units_never_oversell(db: TestDb) {
    let mut app = app(db).await;
    app.stocked("HOT", 100, 30).await;
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let mut client = app.client.clone();
            let token = app.order();
            tokio::spawn(async move {
                client
                    .reserve_stock(bearer(
                        pb::ReserveStockRequest {
                            order_id: new_order(),
                            items: vec![item("HOT", 1)],
                        },
                        &token,
                    ))
                    .await
            })
        })
        .collect();
    let (mut ok, mut short) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(s) if s.code() == Code::FailedPrecondition => short += 1,
            Err(s) => panic!("unexpected status: {s:?}"),
        }
    }
    assert_eq!((ok, short), (30, 70));
    assert_eq!(counters(&app.level("HOT").await), (30, 30, 30, 0));
    assert_eq!(app.product("HOT").await.stock_available, 0);
}

async fn concurrent_retries_of_one_order_reserve_once(db: TestDb) {
    let mut app = app(db).await;
    app.stocked("A", 100, 50).await;
    app.stocked("B", 100, 50).await;
    let order = new_order();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let mut client = app.client.clone();
            let token = app.order();
            let order = order.clone();
            tokio::spawn(async move {
                client
                    .reserve_stock(bearer(
                        pb::ReserveStockRequest {
                            order_id: order,
                            items: vec![item("A", 2), item("B", 3)],
                        },
                        &token,
                    ))
                    .await
                    .map(|r| r.into_inner().reservation.unwrap())
            })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap().expect("every retry succeeds"));
    }
    assert!(results.iter().all(|r| *r == results[0]));
    assert_eq!(counters(&app.level("A").await), (50, 2, 50, 0));
    assert_eq!(counters(&app.level("B").await), (50, 3, 50, 0));
}

async fn concurrent_retries_of_one_adjustment_apply_once(db: TestDb) {
    let mut app = app(db).await;
    app.create("BOX", 100).await;
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let mut client = app.client.clone();
            let token = app.admin.clone();
            tokio::spawn(async move {
                client
                    .adjust_stock(bearer(
                        pb::AdjustStockRequest {
                            product: Some(pb::adjust_stock_request::Product::Sku("BOX".into())),
                            delta: 5,
                            reason: "delivery".into(),
                            idempotency_key: "delivery-1".into(),
                        },
                        &token,
                    ))
                    .await
                    .map(|r| r.into_inner().product.unwrap())
            })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap().expect("every retry succeeds"));
    }
    assert!(results.iter().all(|p| *p == results[0]));
    assert_eq!(results[0].stock_on_hand, 5);
    assert_eq!(counters(&app.level("BOX").await), (5, 0, 5, 0));
}

async fn concurrent_commit_and_release_settle_consistently(db: TestDb) {
    let mut app = app(db).await;
    app.stocked("A", 100, 100).await;
    let mut orders = Vec::new();
    for _ in 0..10 {
        let order = new_order();
        app.reserve(&order, vec![item("A", 3)]).await.unwrap();
        orders.push(order);
    }
    let mut calls = Vec::new();
    for order in &orders {
        let (mut c1, mut c2) = (app.client.clone(), app.client.clone());
        let (t1, t2) = (app.order(), app.order());
        let (o1, o2) = (order.clone(), order.clone());
        calls.push(tokio::spawn(async move {
            c1.commit_reservation(bearer(pb::CommitReservationRequest { order_id: o1 }, &t1))
                .await
                .map(|_| ())
        }));
        calls.push(tokio::spawn(async move {
            c2.release_reservation(bearer(pb::ReleaseReservationRequest { order_id: o2 }, &t2))
                .await
                .map(|_| ())
        }));
    }
    for call in calls {
        match call.await.unwrap() {
            // A commit that lost to the release is refused; everything else succeeds.
            Ok(()) => {}
            Err(s) if s.code() == Code::FailedPrecondition => {}
            Err(s) => panic!("unexpected status: {s:?}"),
        }
    }
    // Whatever the interleaving, every order ends RELEASED with its units back.
    for order in &orders {
        let r = app.release(order).await.unwrap();
        assert_eq!(r.status, pb::ReservationStatus::Released as i32);
    }
    assert_eq!(counters(&app.level("A").await), (100, 0, 100, 0));
}

async fn reservations_naming_products_in_any_order_do_not_deadlock(db: TestDb) {
    let mut app = app(db).await;
    for sku in ["P1", "P2", "P3"] {
        app.stocked(sku, 100, 100).await;
    }
    let calls: Vec<_> = (0..30)
        .map(|i| {
            let mut client = app.client.clone();
            let (token, token_2) = (app.order(), app.order());
            let items = match i % 3 {
                0 => vec![item("P1", 1), item("P2", 1), item("P3", 1)],
                1 => vec![item("P3", 1), item("P2", 1), item("P1", 1)],
                _ => vec![item("P2", 1), item("P3", 1), item("P1", 1)],
            };
            tokio::spawn(async move {
                let order = new_order();
                let reserve = pb::ReserveStockRequest {
                    order_id: order.clone(),
                    items,
                };
                client.reserve_stock(bearer(reserve, &token)).await?;
                let commit = pb::CommitReservationRequest { order_id: order };
                client.commit_reservation(bearer(commit, &token_2)).await?;
                Ok::<_, emporium_common::rpc::Status>(())
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("no deadlock, no shortage");
    }
    for sku in ["P1", "P2", "P3"] {
        assert_eq!(counters(&app.level(sku).await), (70, 0, 100, 30), "{sku}");
    }
}

fn import_rows(key: &str, skus: &[&str]) -> Vec<pb::ImportStockRequest> {
    skus.iter()
        .enumerate()
        .map(|(i, sku)| pb::ImportStockRequest {
            idempotency_key: if i == 0 { key.into() } else { String::new() },
            sku: (*sku).into(),
            quantity: 1,
            ..Default::default()
        })
        .collect()
}

async fn concurrent_retries_of_one_import_apply_once(db: TestDb) {
    let mut app = app(db).await;
    for sku in ["I1", "I2"] {
        app.create(sku, 100).await;
    }
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let mut client = app.client.clone();
            let token = app.admin.clone();
            let rows = import_rows("bulk-1", &["I2", "I1", "NOPE"]);
            tokio::spawn(async move {
                client
                    .import_stock(bearer(futures::stream::iter(rows), &token))
                    .await
                    .map(|r| r.into_inner())
            })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap().expect("every retry succeeds"));
    }
    assert!(results.iter().all(|r| *r == results[0]));
    assert_eq!((results[0].rows_applied, results[0].units_added), (2, 2));
    for sku in ["I1", "I2"] {
        assert_eq!(counters(&app.level(sku).await), (1, 0, 1, 0), "{sku}");
    }
}

async fn imports_and_reservations_run_together_without_deadlock(db: TestDb) {
    let mut app = app(db).await;
    let skus = ["Q1", "Q2", "Q3", "Q4", "Q5"];
    // Created in reverse, so a table scan meets them against the lock order.
    for sku in skus.iter().rev() {
        app.stocked(sku, 100, 100).await;
    }
    let mut imports = Vec::new();
    for i in 0..20 {
        let mut client = app.client.clone();
        let token = app.admin.clone();
        // Rows in descending SKU order: the import must lock in byte order anyway.
        let mut order = skus.to_vec();
        order.reverse();
        let rows = import_rows(&format!("restock-{i}"), &order);
        imports.push(tokio::spawn(async move {
            client
                .import_stock(bearer(futures::stream::iter(rows), &token))
                .await
                .map(|_| ())
        }));
    }
    let mut orders = Vec::new();
    for i in 0..40 {
        let mut client = app.client.clone();
        let (token, token_2) = (app.order(), app.order());
        let mut items: Vec<_> = skus.iter().map(|s| item(s, 1)).collect();
        items.rotate_left(i % 5);
        orders.push(tokio::spawn(async move {
            let order = new_order();
            let reserve = pb::ReserveStockRequest {
                order_id: order.clone(),
                items,
            };
            client.reserve_stock(bearer(reserve, &token)).await?;
            let commit = pb::CommitReservationRequest { order_id: order };
            client.commit_reservation(bearer(commit, &token_2)).await?;
            Ok::<_, emporium_common::rpc::Status>(())
        }));
    }
    for call in imports.into_iter().chain(orders) {
        call.await.unwrap().expect("no deadlock");
    }
    for sku in skus {
        assert_eq!(counters(&app.level(sku).await), (80, 0, 120, 40), "{sku}");
    }
}
