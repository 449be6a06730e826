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

use crate::eventually;

/// Where each service keeps its data.
#[derive(Debug, Clone)]
pub struct Dbs {
    pub order: String,
    pub inventory: String,
    pub payment: String,
}

/// What the check saw, for the test's own assertions.
#[derive(Debug, Default)]
pub struct Totals {
    pub confirmed: usize,
    pub cancelled: usize,
}

fn config(url: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: Secret::new(url),
        max_connections: 2,
        acquire_timeout_ms: 5_000,
    }
}

async fn open(url: &str) -> Db {
    Db::connect(&config(url))
        .await
        .expect("open a service database")
}

/// Waits (at most `settle`) until every order is settled, then checks every
/// invariant above; panics on the first one broken.
pub async fn check_invariants(dbs: &Dbs, settle: Duration) -> Totals {
    let orders_db = open(&dbs.order).await;
    let payment_db = open(&dbs.payment).await;

    // Sagas finish in the background (compensation may outlive the call): wait,
    // bounded, for every order to settle.
    eventually(settle, || async {
        let (unsettled,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM orders WHERE status = 'PENDING' OR step <> 'done'",
        )
        .fetch_one(orders_db.reader())
        .await
        .unwrap();
        (unsettled == 0).then_some(())
    })
    .await;

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
    // Each service's own invariant helper reads its own database.
    let levels = emporium_inventory::stock_levels(&config(&dbs.inventory))
        .await
        .expect("read stock levels");
    for level in &levels {
        let sku = &level.sku;
        assert!(level.is_balanced(), "{sku}: unbalanced stock {level:?}");
        assert_eq!(
            level.reserved, 0,
            "{sku}: stock still reserved after every order settled"
        );
        assert_eq!(
            level.sold,
            sold_by_orders.get(sku).copied().unwrap_or(0),
            "{sku}: sold ≠ units of confirmed orders"
        );
    }

    // Money.
    let ledger = emporium_payment::ledger(&payment_db)
        .await
        .expect("read the payment ledger");
    let mut net: HashMap<String, i64> = HashMap::new();
    for l in &ledger {
        assert!(
            l.holds(),
            "payment ledger broken for order {}: {l:?}",
            l.order_id
        );
        assert!(
            l.successful_charges <= 1,
            "order {} charged {} times",
            l.order_id,
            l.successful_charges
        );
        assert!(
            expected_net.contains_key(&l.order_id),
            "payment for an order the order service does not know: {}",
            l.order_id
        );
        *net.entry(l.order_id.clone()).or_default() += l.net();
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
