//! The platform's invariants, checked against each service's own database:
//!
//! - no order is left PENDING (every saga finished or compensated);
//! - no oversell: per product 0 ≤ reserved ≤ on hand, and nothing stays reserved
//!   once every order is settled;
//! - stock received = on hand + sold, and sold = the units of CONFIRMED orders;
//! - at most one successful charge per order;
//! - charges − refunds = the total of each CONFIRMED order, and 0 for every other.

use std::{collections::HashMap, time::Duration};

use emporium_common::{
    config::{DatabaseConfig, Secret},
    db::Db,
};

/// Where each service keeps its data.
#[derive(Debug, Clone)]
pub(crate) struct Dbs {
    pub(crate) order: String,
    pub(crate) inventory: String,
    pub(crate) payment: String,
}

/// What the check saw, for the test's own assertions.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) confirmed: usize,
    pub(crate) cancelled: usize,
}

async fn open(url: &str) -> Db {
    Db::connect(&DatabaseConfig {
        url: Secret::new(url),
        max_connections: 2,
        acquire_timeout_ms: 5_000,
    })
    .await
    .expect("open a service database")
}

pub(crate) async fn check_invariants(dbs: &Dbs, settle: Duration) -> Totals {
    let orders_db = open(&dbs.order).await;
    let inventory_db = open(&dbs.inventory).await;
    let payment_db = open(&dbs.payment).await;

    // Sagas finish in the background (compensation may outlive the call): wait,
    // bounded, for every order to settle.
    let deadline = std::time::Instant::now() + settle;
    loop {
        let (unsettled,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM orders WHERE status = 'PENDING' OR step <> 'done'",
        )
        .fetch_one(orders_db.reader())
        .await
        .unwrap();
        if unsettled == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{unsettled} orders still unsettled after {settle:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let orders: Vec<(String, String, Option<i64>)> =
        sqlx::query_as("SELECT id, status, total FROM orders")
            .fetch_all(orders_db.reader())
            .await
            .unwrap();
    let items: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT i.order_id, i.sku, i.quantity FROM order_items i JOIN orders o ON o.id = i.order_id \
         WHERE o.status = 'CONFIRMED'",
    )
    .fetch_all(orders_db.reader())
    .await
    .unwrap();
    let mut totals = Totals::default();
    let mut expected_net: HashMap<String, i64> = HashMap::new();
    for (id, status, total) in &orders {
        match status.as_str() {
            "CONFIRMED" => {
                totals.confirmed += 1;
                expected_net.insert(id.clone(), total.expect("a confirmed order has a total"));
            }
            "CANCELLED" => {
                totals.cancelled += 1;
                expected_net.insert(id.clone(), 0);
            }
            other => panic!("order {id} is {other} after settling"),
        }
    }

    // Stock.
    let mut sold_by_orders: HashMap<String, i64> = HashMap::new();
    for (_, sku, q) in &items {
        *sold_by_orders.entry(sku.clone()).or_default() += q;
    }
    let products: Vec<(String, i64, i64, i64, i64)> =
        sqlx::query_as("SELECT sku, on_hand, reserved, received, sold FROM products")
            .fetch_all(inventory_db.reader())
            .await
            .unwrap();
    for (sku, on_hand, reserved, received, sold) in &products {
        assert!(
            *reserved >= 0 && reserved <= on_hand,
            "{sku}: reserved {reserved} on hand {on_hand}"
        );
        assert_eq!(
            *reserved, 0,
            "{sku}: stock still reserved after every order settled"
        );
        assert_eq!(
            *received,
            on_hand + sold,
            "{sku}: received ≠ on hand + sold"
        );
        assert_eq!(
            *sold,
            sold_by_orders.get(sku).copied().unwrap_or(0),
            "{sku}: sold ≠ units of confirmed orders"
        );
    }

    // Money.
    let payments: Vec<(String, String, i64, i64)> =
        sqlx::query_as("SELECT order_id, status, amount, amount_refunded FROM payments")
            .fetch_all(payment_db.reader())
            .await
            .unwrap();
    let mut successful: HashMap<String, usize> = HashMap::new();
    let mut net: HashMap<String, i64> = HashMap::new();
    for (order_id, status, amount, refunded) in &payments {
        if status == "DECLINED" {
            continue;
        }
        *successful.entry(order_id.clone()).or_default() += 1;
        *net.entry(order_id.clone()).or_default() += amount - refunded;
        assert!(
            expected_net.contains_key(order_id),
            "payment for an order the order service does not know: {order_id}"
        );
    }
    for (order_id, n) in &successful {
        assert_eq!(*n, 1, "order {order_id} has {n} successful charges");
    }
    for (order_id, expected) in &expected_net {
        assert_eq!(
            net.get(order_id).copied().unwrap_or(0),
            *expected,
            "order {order_id}: charges − refunds ≠ its confirmed total"
        );
    }
    totals
}
