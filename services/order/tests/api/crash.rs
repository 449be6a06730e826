//! Crash recovery with real processes: the order service binary is aborted
//! right after each saga step in turn (the `saga.crash_after` failpoint), then
//! started again without it; every order must converge and every invariant hold.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use emporium_common::rpc::Channel;
use emporium_testkit::{TestDb, auth_config, backend_tests, bearer};

use crate::{check_invariants, invariants::Dbs, pb, stack, status};

const BIN: &str = env!("CARGO_BIN_EXE_emporium-order");

backend_tests!(an_order_service_killed_after_any_step_converges_on_restart);

struct OrderProcess {
    child: Child,
    addr: SocketAddr,
}

impl Drop for OrderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(db_url: &str, peers: &[(&str, String)], crash_after: Option<&str>) -> OrderProcess {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // The test keys include the development service key pair.
        .env("EMPORIUM_DEV_MODE", "true")
        .env("EMPORIUM_DATABASE__URL", db_url)
        .env("EMPORIUM_SERVER__GRPC_ADDR", "127.0.0.1:0")
        .env("EMPORIUM_SERVER__ADMIN_ADDR", "127.0.0.1:0")
        .env("EMPORIUM_TELEMETRY__LOG_FORMAT", "json")
        .env(
            "EMPORIUM_AUTH__JWT_SECRET",
            auth_config().jwt_secret.expose(),
        )
        .env("EMPORIUM_SAGA__RETRY_BUDGET_MS", "1500")
        .env("EMPORIUM_SAGA__LEASE_MS", "2000")
        .env("EMPORIUM_SAGA__SWEEP_INTERVAL_MS", "100")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, url) in peers {
        cmd.env(format!("EMPORIUM_PEERS__{}__URL", name.to_uppercase()), url);
    }
    if let Some(step) = crash_after {
        cmd.env("EMPORIUM_SAGA__CRASH_AFTER", step);
    }
    let mut child = cmd.spawn().expect("spawn emporium-order");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("process exited before listening")
            .unwrap();
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["message"] == "emporium-order listening" {
            break v["grpc"].as_str().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    OrderProcess { child, addr }
}

async fn client(addr: SocketAddr) -> pb::order_service_client::OrderServiceClient<Channel> {
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    pb::order_service_client::OrderServiceClient::new(ch)
}

async fn an_order_service_killed_after_any_step_converges_on_restart(db: TestDb) {
    let s = stack(db).await;
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
        let mut orders = client(crashing.addr).await;
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
        let died = crashing.child.wait().unwrap();
        assert!(!died.success(), "{step}: {died:?}");

        // A new process recovers the order by itself.
        let restarted = start(order_db.url(), &peers, None);
        let mut orders = client(restarted.addr).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let order = loop {
            // Newest first: this round's order is the first one.
            let newest = orders
                .list_orders(bearer(pb::ListOrdersRequest::default(), &s.customer_token))
                .await
                .unwrap()
                .into_inner()
                .orders
                .into_iter()
                .next()
                .expect("the order was stored before the crash");
            assert_eq!(newest.payment_method, card);
            if status(&newest) != pb::OrderStatus::Pending {
                break newest;
            }
            assert!(Instant::now() < deadline, "{step}: order did not converge");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
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
