//! Crash recovery with real processes: the order service binary is aborted
//! right after each saga step in turn (the `saga.crash_after` failpoint), then
//! started again without it; every order must converge and every invariant hold.

use std::time::Duration;

use emporium_testkit::{
    Stack, TestDb, auth_config, backend_tests, bearer, eventually,
    invariants::{Dbs, check_invariants},
    process::Process,
};

use crate::{pb, status};

const BIN: &str = env!("CARGO_BIN_EXE_emporium-order");

backend_tests!(an_order_service_killed_after_any_step_converges_on_restart);

/// The order binary over `db_url`, calling `peers`, aborting after `crash_after`.
fn start(db_url: &str, peers: &[(&str, String)], crash_after: Option<&str>) -> Process {
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
    if let Some(step) = crash_after {
        vars.push(("EMPORIUM_SAGA__CRASH_AFTER".to_owned(), step.to_owned()));
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
    // (failpoint, card, the state the order must end in)
    let cases = [
        ("reserve", "pm_card_ok", pb::OrderStatus::Confirmed),
        ("charge", "pm_card_ok", pb::OrderStatus::Confirmed),
        ("commit", "pm_card_ok", pb::OrderStatus::Confirmed),
        ("done", "pm_card_ok", pb::OrderStatus::Confirmed),
        ("compensate", "pm_card_declined", pb::OrderStatus::Cancelled),
    ];
    for (step, card, expected) in cases {
        let mut crashing = start(order_db.url(), &peers, Some(step));
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
                    idempotency_key: format!("crash-{step}"),
                },
                &s.customer_token,
            ))
            .await;
        assert!(placed.is_err(), "the process must die mid-saga at {step}");
        let died = crashing.exit(Duration::from_secs(20)).await;
        assert!(!died.success(), "{step}: {died:?}");

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
                (status(&newest) != pb::OrderStatus::Pending).then_some(newest)
            }
        })
        .await;
        assert_eq!(status(&order), expected, "{step}: {order:?}");
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
/// `emporium_order::config::SagaConfig::crash_after`).
#[test]
fn the_test_build_of_the_binary_has_the_crash_failpoint() {
    let out = emporium_testkit::process::command(BIN, [("EMPORIUM_SAGA__CRASH_AFTER", "charge")])
        .arg("--print-config")
        .output()
        .expect("run emporium-order --print-config");
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON config");
    assert_eq!(v["saga"]["crash_after"], "charge", "{v}");
}
