//! Load shedding by the adaptive concurrency limit (decision 0026): calls of a
//! method beyond its limit are refused at once with RESOURCE_EXHAUSTED and a
//! retry delay instead of queueing, other methods and health checks are not,
//! and the admitted calls all finish once the hold-up clears.

use std::time::Duration;

use emporium_order::config::SagaConfig;
use emporium_testkit::{TestDb, backend_tests, bearer, eventually, saga_config};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_types::StatusExt as _;

use crate::{Stack, one_mug, pb};

backend_tests!(calls_beyond_a_methods_limit_are_refused_with_a_retry_delay_not_queued);

/// Where every method's limit starts (`stack::load_shed::INITIAL_LIMIT`).
const INITIAL_LIMIT: usize = 32;

async fn calls_beyond_a_methods_limit_are_refused_with_a_retry_delay_not_queued(db: TestDb) {
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 100).await;
    // An order service of its own (so its limits start fresh) whose inventory
    // calls the test stalls: its sagas hang mid-step, admitted and unanswered,
    // as under a real hold-up.
    let saga = SagaConfig {
        retry_budget_ms: 30_000,
        lease_ms: 40_000,
        ..saga_config()
    };
    let (proxy, order, _) = crate::order_with_stallable_inventory(&s, saga).await;
    let orders = pb::order_service_client::OrderServiceClient::new(order.channel().await);

    proxy.stall();
    let mut held = Vec::new();
    for i in 0..INITIAL_LIMIT {
        let (mut orders, token) = (orders.clone(), s.customer_token.clone());
        held.push(tokio::spawn(async move {
            orders
                .create_order(bearer(one_mug(&format!("held-{i}")), &token))
                .await
        }));
    }
    // Every saga stores its order before it calls inventory: once all are
    // listed, all the calls are admitted and holding their places.
    eventually(Duration::from_secs(20), || {
        let (mut orders, token) = (orders.clone(), s.customer_token.clone());
        async move {
            let listed = orders
                .list_orders(bearer(
                    pb::ListOrdersRequest {
                        page_size: 100,
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .ok()?
                .into_inner()
                .orders
                .len();
            (listed == INITIAL_LIMIT).then_some(())
        }
    })
    .await;

    // Refused at once: were it queued, it would hang behind the stall.
    let mut over = bearer(one_mug("one-too-many"), &s.customer_token);
    over.set_timeout(Duration::from_secs(5));
    let refused = orders
        .clone()
        .create_order(over)
        .await
        .expect_err("one call over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("server busy"), "{refused:?}");
    let retry = refused
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a refusal says when to retry");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "{retry:?}"
    );
    // Another method, and the health check, are not held up by CreateOrder's limit.
    orders
        .clone()
        .list_orders(bearer(pb::ListOrdersRequest::default(), &s.customer_token))
        .await
        .expect("ListOrders has its own limit");
    let health = HealthClient::new(order.channel().await)
        .check(HealthCheckRequest::default())
        .await
        .expect("health is never shed")
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");

    // The hold-up clears: every admitted call is answered, none was dropped,
    // and the refused one goes through when retried with its key.
    proxy.resume();
    for call in held {
        let answered = call.await.unwrap().expect("an admitted call is answered");
        assert!(answered.into_inner().order.is_some());
    }
    let retried = orders
        .clone()
        .create_order(bearer(one_mug("one-too-many"), &s.customer_token))
        .await
        .expect("admitted once there is room")
        .into_inner()
        .order
        .unwrap();
    assert_eq!(crate::status(&retried), pb::OrderStatus::Confirmed);
}
