//! End-to-end tests of the order saga: all four services in-process on real
//! sockets, each with its own database, on SQLite and on PostgreSQL (the
//! testkit's [`Stack`]). After every scenario the platform's invariants are
//! checked against each service's own database.

mod crash;
mod hostile;
mod matrix;
mod oversell;
mod replicas;
mod saga;
mod shedding;
mod store;
mod watch;
mod watch_limits;

pub(crate) use emporium_proto::order::v1 as pb;
pub(crate) use emporium_testkit::{
    Stack,
    stack::{reason, status},
};

/// One MUG-1 with the good card, under idempotency key `key`.
pub(crate) fn one_mug(key: &str) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        user_id: String::new(),
        items: vec![pb::CreateOrderItem {
            sku: "MUG-1".into(),
            quantity: 1,
        }],
        payment_method: "pm_card_ok".into(),
        idempotency_key: key.into(),
    }
}

/// A second order service beside `s`, over a database of its own (its URL is
/// returned), whose inventory calls go through a proxy the test can stall, as
/// a stopped (SIGSTOP) inventory process would.
pub(crate) async fn order_with_stallable_inventory(
    s: &Stack,
    saga: emporium_order::config::SagaConfig,
) -> (
    emporium_testkit::stall::StallProxy,
    emporium_testkit::Spawned,
    String,
) {
    let proxy = emporium_testkit::stall::StallProxy::start(s.inventory.grpc_addr).await;
    let mut peers =
        emporium_testkit::peers(&s.user, &s.inventory, s.payment.as_ref().unwrap().url());
    peers.inventory.url = proxy.url();
    let order_db = s.db.another();
    let url = order_db.url().to_owned();
    (
        proxy,
        emporium_testkit::spawn_order(order_db, peers, saga).await,
        url,
    )
}
