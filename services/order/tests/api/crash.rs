//! Crash recovery with real processes: the order service binary is aborted at
//! each crash point in turn (the `saga.crash_at` failpoints: right after each
//! step is stored, and right after each peer call returns, before anything is
//! stored), then started again without it; every order must converge and
//! every invariant hold.

use std::time::Duration;

use emporium_testkit::{
    Stack, TestDb, auth_config, backend_tests, bearer, eventually,
    invariants::{Dbs, check_invariants},
    process::Process,
};

use crate::{pb, status};

const BIN: &str = env!("CARGO_BIN_EXE_emporium-order");

backend_tests!(an_order_service_killed_after_any_step_converges_on_restart);

/// The order binary over `db_url`, calling `peers`, aborting at `crash_at`.
fn start(db_url: &str, peers: &[(&str, String)], crash_at: Option<&str>) -> Process {
    let mut vars = vec![
        ("EMPORIUM_DATABASE__URL".to_owned(), db_url.to_owned()),
        (
            "EMPORIUM_AUTH__JWT_SECRET".to_owned(),
            auth_config().jwt_secret.expose().to_owned(),
        ),
        (
            "EMPORIUM_SAGA__RETRY_BUDGET_MS".to_owned(),
            "1500".to_owned(),
        ),
        ("EMPORIUM_SAGA__LEASE_MS".to_owned(), "2000".to_owned()),
        (
            "EMPORIUM_SAGA__SWEEP_INTERVAL_MS".to_owned(),
            "100".to_owned(),
        ),
    ];
    for (name, url) in peers {
        vars.push((
            format!("EMPORIUM_PEERS__{}__URL", name.to_uppercase()),
            url.clone(),
        ));
    }
    if let Some(point) = crash_at {
        vars.push(("EMPORIUM_SAGA__CRASH_AT".to_owned(), point.to_owned()));
    }
    Process::spawn(BIN, vars)
}

async fn client(
    process: &Process,
) -> pb::order_service_client::OrderServiceClient<emporium_common::rpc::Channel> {
    pb::order_service_client::OrderServiceClient::new(process.channel().await)
}

async fn an_order_service_killed_after_any_step_converges_on_restart(db: TestDb) {
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 100).await;
    let order_db = s.db.another();
    let peers = [
        ("user", s.user.url()),
        ("inventory", s.inventory.url()),
        ("payment", s.payment.as_ref().unwrap().url()),
    ];
    // (crash point, card, whether the order is cancelled once confirmed,
    // the state it must end in)
    use pb::OrderStatus::{Cancelled, Confirmed};
    let cases = [
        ("saved:reserve", "pm_card_ok", false, Confirmed),
        ("saved:charge", "pm_card_ok", false, Confirmed),
        ("saved:commit", "pm_card_ok", false, Confirmed),
        ("saved:done", "pm_card_ok", false, Confirmed),
        ("saved:compensate", "pm_card_declined", false, Cancelled),
        ("called:check_user", "pm_card_ok", false, Confirmed),
        ("called:reserve", "pm_card_ok", false, Confirmed),
        // Captured, and the process dies before it stores the payment: the
        // restarted one asks again with the same key and gets the same charge.
        ("called:charge", "pm_card_ok", false, Confirmed),
        ("called:commit", "pm_card_ok", false, Confirmed),
        // The processor keeps failing: the charge is settled by a void, and the
        // process dies right after it.
        ("called:void", "pm_card_error", false, Cancelled),
        ("called:release", "pm_card_declined", false, Cancelled),
        ("called:refund", "pm_card_ok", true, Cancelled),
    ];
    let covered: Vec<_> = cases.iter().map(|c| c.0).collect();
    for point in emporium_order::saga::CRASH_POINTS {
        assert!(covered.contains(point), "no crash case for {point}");
    }
    for (point, card, cancel, expected) in cases {
        eprintln!("crash at {point}");
        let mut crashing = start(order_db.url(), &peers, Some(point));
        let mut orders = client(&crashing).await;
        let placed = orders
            .create_order(bearer(
                pb::CreateOrderRequest {
                    user_id: String::new(),
                    items: vec![pb::CreateOrderItem {
                        sku: "MUG-1".into(),
                        quantity: 2,
                    }],
                    payment_method: card.into(),
                    idempotency_key: format!("crash-{point}"),
                },
                &s.customer_token,
            ))
            .await;
        if cancel {
            let placed = placed.expect("placing does not reach the crash point");
            let order = placed.into_inner().order.unwrap();
            assert_eq!(status(&order), Confirmed, "{point}");
            let cancelled = orders
                .cancel_order(bearer(
                    pb::CancelOrderRequest {
                        order_id: order.id,
                        reason: String::new(),
                    },
                    &s.customer_token,
                ))
                .await;
            assert!(
                cancelled.is_err(),
                "the process must die mid-cancel at {point}"
            );
        } else {
            assert!(placed.is_err(), "the process must die mid-saga at {point}");
        }
        let died = crashing.exit(Duration::from_secs(20)).await;
        assert!(!died.success(), "{point}: {died:?}");

        // A new process recovers the order by itself.
        let restarted = start(order_db.url(), &peers, None);
        let orders = client(&restarted).await;
        let order = eventually(Duration::from_secs(20), || {
            let mut orders = orders.clone();
            let token = s.customer_token.clone();
            async move {
                // Newest first: this round's order is the first one.
                let newest = orders
                    .list_orders(bearer(pb::ListOrdersRequest::default(), &token))
                    .await
                    .unwrap()
                    .into_inner()
                    .orders
                    .into_iter()
                    .next()
                    .expect("the order was stored before the crash");
                assert_eq!(newest.payment_method, card);
                let settled = match expected {
                    Cancelled => status(&newest) == Cancelled,
                    _ => status(&newest) != pb::OrderStatus::Pending,
                };
                settled.then_some(newest)
            }
        })
        .await;
        assert_eq!(status(&order), expected, "{point}: {order:?}");
        drop(restarted);
        check_invariants(
            &Dbs {
                order: order_db.url().to_owned(),
                inventory: s.inventory.db_url.clone(),
                payment: s.payment.as_ref().unwrap().db_url.clone(),
            },
            Duration::from_secs(20),
        )
        .await;
    }
}

/// The crash tests above need the failpoint in the binary: `cargo test` builds
/// it with the `testing` feature, which emporium-testkit (a dev-dependency)
/// turns on. A release build has no such setting (see
/// `emporium_order::config::SagaConfig::crash_at`).
#[test]
fn the_test_build_of_the_binary_has_the_crash_failpoint() {
    let out =
        emporium_testkit::process::command(BIN, [("EMPORIUM_SAGA__CRASH_AT", "saved:charge")])
            .arg("--print-config")
            .output()
            .expect("run emporium-order --print-config");
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON config");
    assert_eq!(v["saga"]["crash_at"], "saved:charge", "{v}");
}
