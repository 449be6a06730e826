//! Issue 10's first scenario, end to end with real processes: an order is
//! charged, the payment process commits the capture and is killed before it
//! replies, and stays down longer than the saga's step budget. The order must
//! not be cancelled with the money held, nor its stock released, while nobody
//! can say whether money was taken; once payment is back, the saga settles the
//! key with VoidCharge (which finds the capture), refunds it, releases the
//! stock and cancels the order. Every invariant holds in each service's own
//! database.

use std::time::Duration;

use emporium_proto::order::v1 as ord;
use emporium_testkit::{
    Stack, TestDb, auth_config, backend_tests, bearer, eventually,
    invariants::{Dbs, check_invariants},
    peers,
    process::{Process, command},
    saga_config, spawn_order,
    stack::{reason, status},
};

use crate::pb;

const BIN: &str = env!("CARGO_BIN_EXE_emporium-payment");

backend_tests!(a_capture_whose_reply_was_lost_is_refunded_never_forgotten);

/// The payment binary over `db_url` on `grpc` (`127.0.0.1:0` for any port),
/// aborting right after it commits a charge when `crash` is set.
fn payment(db_url: &str, grpc: &str, crash: bool) -> Process {
    let mut vars = vec![
        ("EMPORIUM_DATABASE__URL".to_owned(), db_url.to_owned()),
        (
            "EMPORIUM_AUTH__JWT_SECRET".to_owned(),
            auth_config().jwt_secret.expose().to_owned(),
        ),
        ("EMPORIUM_SERVER__GRPC_ADDR".to_owned(), grpc.to_owned()),
        (
            "EMPORIUM_SERVER__ADMIN_ADDR".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
    ];
    if crash {
        vars.push((
            "EMPORIUM_PAYMENT__CRASH_AFTER".to_owned(),
            "charge_committed".to_owned(),
        ));
    }
    Process::start(command(BIN, vars))
}

async fn a_capture_whose_reply_was_lost_is_refunded_never_forgotten(db: TestDb) {
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 10).await;
    let payment_db = s.db.another();
    let mut dying = payment(payment_db.url(), "127.0.0.1:0", true);
    let payment_addr = dying.grpc;
    // An order service of its own, charging through the payment process.
    let order_db = s.db.another();
    let order_db_url = order_db.url().to_owned();
    let order = spawn_order(
        order_db,
        peers(&s.user, &s.inventory, dying.url()),
        saga_config(),
    )
    .await;
    let mut orders = ord::order_service_client::OrderServiceClient::new(order.channel().await);
    let reader = orders.clone();
    let get = |id: String| {
        let mut orders = reader.clone();
        let token = s.customer_token.clone();
        async move {
            orders
                .get_order(bearer(ord::GetOrderRequest { order_id: id }, &token))
                .await
                .unwrap()
                .into_inner()
                .order
                .unwrap()
        }
    };

    let placed = orders
        .create_order(bearer(
            ord::CreateOrderRequest {
                user_id: String::new(),
                items: vec![ord::CreateOrderItem {
                    sku: "MUG-1".into(),
                    quantity: 2,
                }],
                payment_method: "pm_card_ok".into(),
                idempotency_key: "lost-reply".into(),
            },
            &s.customer_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let died = dying.exit(Duration::from_secs(20)).await;
    assert!(
        !died.success(),
        "payment must die after committing: {died:?}"
    );
    assert_eq!(status(&placed), ord::OrderStatus::Pending, "{placed:?}");

    // Payment stays down for twice the step budget (1.5 s in tests): the
    // order is still unsettled, its stock still held.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = get(placed.id.clone()).await;
    assert_eq!(status(&waiting), ord::OrderStatus::Pending, "{waiting:?}");
    assert_eq!(
        s.stock("MUG-1").await,
        (10, 2),
        "stock released while unsettled"
    );

    // Payment comes back on its address.
    let back = payment(payment_db.url(), &payment_addr.to_string(), false);
    let done = eventually(Duration::from_secs(30), || {
        let get = &get;
        let id = placed.id.clone();
        async move {
            let o = get(id).await;
            (status(&o) != ord::OrderStatus::Pending).then_some(o)
        }
    })
    .await;
    assert_eq!(
        (status(&done), reason(&done)),
        (
            ord::OrderStatus::Cancelled,
            ord::CancelReason::PaymentFailed
        ),
        "{done:?}"
    );
    assert_eq!(s.stock("MUG-1").await, (10, 0));
    // The capture was found (not charged again) and given back.
    let mut payments = pb::payment_service_client::PaymentServiceClient::new(back.channel().await);
    let found = payments
        .list_payments(bearer(
            pb::ListPaymentsRequest {
                order_id: placed.id.clone(),
                ..Default::default()
            },
            &s.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .payments;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].status(), pb::PaymentStatus::Refunded, "{found:?}");
    assert_eq!(done.payment_id, found[0].id);

    check_invariants(
        &Dbs {
            order: order_db_url,
            inventory: s.inventory.db_url.clone(),
            payment: payment_db.url().to_owned(),
        },
        Duration::from_secs(20),
    )
    .await;
}
