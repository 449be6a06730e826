//! Several replicas on one PostgreSQL database, as real processes on their own
//! loopback addresses: they migrate together safely, a watch on one replica
//! sees orders placed through another, a replica stopped mid-saga hands its
//! order to the other at once, and one killed mid-saga has its order finished
//! by the other when the lease runs out. Two inventory replicas share the
//! inventory database. (SQLite has one process per file: these run on
//! PostgreSQL only, and are skipped loudly without it.)

use std::time::{Duration, Instant};

use emporium_testkit::{
    Stack, TestDb, auth_config, bearer, eventually,
    invariants::{Dbs, check_invariants},
    process::{Process, command},
    spawn_inventory,
    stall::StallProxy,
};
use tokio_stream::StreamExt as _;

use crate::{pb, status};

const BIN: &str = env!("CARGO_BIN_EXE_emporium-order");

/// An order replica over `db_url` listening on `ip`, calling the stack's user
/// and payment services and the inventory at `inventory`.
fn replica(s: &Stack, db_url: &str, ip: &str, inventory: &str, extra: &[(&str, &str)]) -> Process {
    let mut vars: Vec<(String, String)> = vec![
        ("EMPORIUM_DATABASE__URL".into(), db_url.into()),
        (
            "EMPORIUM_AUTH__JWT_SECRET".into(),
            auth_config().jwt_secret.expose().to_owned(),
        ),
        ("EMPORIUM_SERVER__GRPC_ADDR".into(), format!("{ip}:0")),
        ("EMPORIUM_SERVER__ADMIN_ADDR".into(), format!("{ip}:0")),
        ("EMPORIUM_SERVER__DRAIN_DELAY_MS".into(), "0".into()),
        ("EMPORIUM_SAGA__SWEEP_INTERVAL_MS".into(), "100".into()),
        ("EMPORIUM_SAGA__RETRY_BUDGET_MS".into(), "4000".into()),
        // Long enough that only a hand-off explains a quick takeover.
        ("EMPORIUM_SAGA__LEASE_MS".into(), "20000".into()),
        ("EMPORIUM_PEERS__USER__URL".into(), s.user.url()),
        ("EMPORIUM_PEERS__INVENTORY__URL".into(), inventory.into()),
        (
            "EMPORIUM_PEERS__PAYMENT__URL".into(),
            s.payment.as_ref().unwrap().url(),
        ),
    ];
    for (k, v) in extra {
        vars.push(((*k).into(), (*v).into()));
    }
    Process::start(command(BIN, vars))
}

fn client(p: &Process) -> pb::order_service_client::OrderServiceClient<tonic::transport::Channel> {
    let ch = tonic::transport::Channel::from_shared(p.url())
        .unwrap()
        .connect_lazy();
    pb::order_service_client::OrderServiceClient::new(ch)
}

async fn order_of(p: &Process, token: &str, id: &str) -> pb::Order {
    client(p)
        .get_order(bearer(
            pb::GetOrderRequest {
                order_id: id.into(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
}

/// The stack on PostgreSQL plus a second inventory replica on the same
/// database; `None` without PostgreSQL.
async fn setup() -> Option<(Stack, emporium_testkit::Spawned, TestDb)> {
    let db = TestDb::postgres()?;
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 50).await;
    let second = spawn_inventory(s.inventory.same_db()).await;
    let order_db = s.db.another();
    Some((s, second, order_db))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once_and_both_serve() {
    let Some((s, inventory2, order_db)) = setup().await else {
        return;
    };
    let (url, inv1, inv2) = (
        order_db.url().to_owned(),
        s.inventory.url(),
        inventory2.url(),
    );
    // Both start at the same moment on a fresh database.
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| replica(&s, &url, "127.0.0.2", &inv1, &[]));
        let b = scope.spawn(|| replica(&s, &url, "127.0.0.3", &inv2, &[]));
        (a.join().unwrap(), b.join().unwrap())
    });
    for (p, key) in [(&a, "together-a"), (&b, "together-b")] {
        let o = client(p)
            .create_order(bearer(crate::one_mug(key), &s.customer_token))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        assert_eq!(status(&o), pb::OrderStatus::Confirmed, "{o:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_one_replica_sees_an_order_placed_on_the_other() {
    let Some((s, inventory2, order_db)) = setup().await else {
        return;
    };
    let a = replica(&s, order_db.url(), "127.0.0.2", &s.inventory.url(), &[]);
    let b = replica(&s, order_db.url(), "127.0.0.3", &inventory2.url(), &[]);
    // Watch every order of the customer on B …
    let mut watch = client(&b)
        .watch_order_updates(bearer(
            pb::WatchOrderUpdatesRequest {
                target: Some(pb::watch_order_updates_request::Target::UserOrders(
                    pb::UserOrders {
                        user_id: s.customer.to_string(),
                    },
                )),
            },
            &s.customer_token,
        ))
        .await
        .unwrap()
        .into_inner();
    // … and place one on A.
    let placed = client(&a)
        .create_order(bearer(crate::one_mug("cross"), &s.customer_token))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let confirmed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(update) = watch.next().await {
            let order = update.unwrap().order.unwrap();
            if order.id == placed.id && status(&order) == pb::OrderStatus::Confirmed {
                return order;
            }
        }
        panic!("the watch ended");
    })
    .await
    .expect("B's watch saw the order A placed");
    assert_eq!(confirmed.total, placed.total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_mid_saga_hands_its_order_to_the_other_at_once() {
    let Some((s, inventory2, order_db)) = setup().await else {
        return;
    };
    // A's inventory calls go through a proxy the test stalls: its saga is
    // mid-step when it is told to stop.
    let proxy = StallProxy::start(s.inventory.grpc_addr).await;
    let mut a = replica(&s, order_db.url(), "127.0.0.2", &proxy.url(), &[]);
    let b = replica(&s, order_db.url(), "127.0.0.3", &inventory2.url(), &[]);
    proxy.stall();
    let mut placing = client(&a);
    let token = s.customer_token.clone();
    let answer = tokio::spawn(async move {
        placing
            .create_order(bearer(crate::one_mug("handed-off"), &token))
            .await
            .map(|r| r.into_inner().order.unwrap())
    });
    // The order is stored (PENDING) before A calls inventory.
    let id = eventually(Duration::from_secs(10), || async {
        let list = client(&b)
            .list_orders(bearer(pb::ListOrdersRequest::default(), &s.customer_token))
            .await
            .ok()?
            .into_inner()
            .orders;
        list.into_iter().next().map(|o| o.id)
    })
    .await;
    a.sigterm();
    // The reservation goes through; A stores it and gives the order up.
    proxy.resume();
    let exited = a.exit(Duration::from_secs(30)).await;
    assert!(exited.success(), "A stops cleanly: {exited:?}");
    let answered = answer.await.unwrap().expect("A answered before it stopped");
    assert_eq!(status(&answered), pb::OrderStatus::Pending);
    let handed = Instant::now();
    let done = eventually(Duration::from_secs(15), || async {
        let o = order_of(&b, &s.customer_token, &id).await;
        (status(&o) != pb::OrderStatus::Pending).then_some(o)
    })
    .await;
    assert_eq!(status(&done), pb::OrderStatus::Confirmed, "{done:?}");
    // The lease is 20 s: B resumed it because A handed it off.
    assert!(
        handed.elapsed() < Duration::from_secs(10),
        "took {:?}",
        handed.elapsed()
    );
    assert!(
        a.logs().iter().any(|l| l.contains("saga handed off")),
        "A logs the hand-off"
    );
    check_invariants(
        &Dbs {
            order: order_db.url().to_owned(),
            inventory: s.inventory.db_url.clone(),
            payment: s.payment.as_ref().unwrap().db_url.clone(),
        },
        Duration::from_secs(20),
    )
    .await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_saga_has_its_order_finished_by_the_other() {
    let Some((s, inventory2, order_db)) = setup().await else {
        return;
    };
    let lease: &[(&str, &str)] = &[
        ("EMPORIUM_SAGA__LEASE_MS", "5000"),
        ("EMPORIUM_SAGA__RETRY_BUDGET_MS", "2000"),
    ];
    let mut crashing = vec![("EMPORIUM_SAGA__CRASH_AT", "called:charge")];
    crashing.extend_from_slice(lease);
    let mut a = replica(
        &s,
        order_db.url(),
        "127.0.0.2",
        &s.inventory.url(),
        &crashing,
    );
    let b = replica(&s, order_db.url(), "127.0.0.3", &inventory2.url(), lease);
    let placed = client(&a)
        .create_order(bearer(crate::one_mug("killed"), &s.customer_token))
        .await;
    assert!(placed.is_err(), "A dies right after payment answers");
    assert!(!a.exit(Duration::from_secs(20)).await.success());
    let id = client(&b)
        .list_orders(bearer(pb::ListOrdersRequest::default(), &s.customer_token))
        .await
        .unwrap()
        .into_inner()
        .orders
        .into_iter()
        .next()
        .expect("the order was stored before the crash")
        .id;
    let done = eventually(Duration::from_secs(30), || async {
        let o = order_of(&b, &s.customer_token, &id).await;
        (status(&o) != pb::OrderStatus::Pending).then_some(o)
    })
    .await;
    assert_eq!(status(&done), pb::OrderStatus::Confirmed, "{done:?}");
    check_invariants(
        &Dbs {
            order: order_db.url().to_owned(),
            inventory: s.inventory.db_url.clone(),
            payment: s.payment.as_ref().unwrap().db_url.clone(),
        },
        Duration::from_secs(20),
    )
    .await;
    drop(b);
}
