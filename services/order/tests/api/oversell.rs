//! 200 customers race for 50 units: exactly 50 orders win, nothing oversells.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use tonic_types::StatusExt as _;

use emporium_order::config::SagaConfig;
use emporium_testkit::{TestDb, backend_tests, bearer, saga_config};

use crate::{Stack, pb, reason, status};

backend_tests!(two_hundred_orders_for_fifty_units);

async fn two_hundred_orders_for_fifty_units(db: TestDb) {
    // 200 reservations of one row queue behind each other in the inventory: on
    // a loaded machine the last ones need more than the tests' short step
    // budget, as they would get in production (8 s by default).
    let s = Stack::start_with(
        db,
        SagaConfig {
            retry_budget_ms: 8_000,
            lease_ms: 10_000,
            ..saga_config()
        },
    )
    .await;
    s.product("HOT-1", 500, 50).await;
    let started = Instant::now();
    let shed = Arc::new(AtomicU32::new(0));
    let mut calls = Vec::new();
    for i in 0..200 {
        let mut client = s.orders().await;
        let token = s.customer_token.clone();
        let shed = shed.clone();
        calls.push(tokio::spawn(async move {
            loop {
                let answer = client
                    .create_order(bearer(
                        pb::CreateOrderRequest {
                            user_id: String::new(),
                            items: vec![pb::CreateOrderItem {
                                sku: "HOT-1".into(),
                                quantity: 1,
                            }],
                            payment_method: "pm_card_ok".into(),
                            idempotency_key: format!("rush-{i}"),
                        },
                        &token,
                    ))
                    .await;
                // A rush beyond what the service does quickly is partly refused
                // (adaptive concurrency, decision 0026), with a delay to retry
                // after: a well-behaved client retries with the same key.
                match answer {
                    Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                        let wait = e
                            .get_details_retry_info()
                            .and_then(|r| r.retry_delay)
                            .expect("a refusal says when to retry");
                        assert!(wait <= Duration::from_secs(1), "{wait:?}");
                        shed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(wait).await;
                    }
                    other => break other.map(|r| r.into_inner().order.unwrap()),
                }
            }
        }));
    }
    let (mut confirmed, mut out_of_stock) = (0, 0);
    for c in calls {
        let o = c.await.unwrap().expect("every call answers");
        match status(&o) {
            pb::OrderStatus::Confirmed => confirmed += 1,
            pb::OrderStatus::Cancelled => {
                assert_eq!(reason(&o), pb::CancelReason::OutOfStock, "{o:?}");
                out_of_stock += 1;
            }
            other => panic!("order still {other:?}: {o:?}"),
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "oversell: 200 concurrent orders settled in {elapsed:?} on {} ({} refusals retried)",
        s.db.backend(),
        shed.load(Ordering::Relaxed)
    );
    assert_eq!((confirmed, out_of_stock), (50, 150));
    assert_eq!(s.stock("HOT-1").await, (0, 0));
    let t = s.settle_and_check().await;
    assert_eq!((t.confirmed, t.cancelled), (50, 150));
}
