//! WatchOrderUpdates: the current state first, then every change, whichever
//! request caused it.

use std::time::Duration;

use emporium_common::rpc::{Code, Request};
use emporium_testkit::{TestDb, backend_tests, bearer, refused};
use futures::StreamExt as _;

use crate::{Stack, pb, status};

backend_tests!(
    watching_one_order_sees_it_through_cancellation,
    watching_my_orders_sees_new_ones,
    watching_an_order_already_cancelled_ends_after_its_state,
);

/// A watch of the one order `id`, as the owner of `token`.
fn watch_one(id: &str, token: &str) -> Request<pb::WatchOrderUpdatesRequest> {
    bearer(
        pb::WatchOrderUpdatesRequest {
            target: Some(pb::watch_order_updates_request::Target::OrderId(
                id.to_owned(),
            )),
        },
        token,
    )
}

async fn next(
    stream: &mut emporium_common::rpc::Streaming<pb::WatchOrderUpdatesResponse>,
) -> pb::WatchOrderUpdatesResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an update within 10 s")
        .expect("stream open")
        .expect("update, not an error")
}

async fn watching_one_order_sees_it_through_cancellation(db: TestDb) {
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 5).await;
    let o = s.place(&[("MUG-1", 1)], "pm_card_ok", "w1").await.unwrap();
    let mut stream = s
        .orders()
        .await
        .watch_order_updates(watch_one(&o.id, &s.customer_token))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await;
    assert!(first.initial_state);
    assert_eq!(
        status(first.order.as_ref().unwrap()),
        pb::OrderStatus::Confirmed
    );

    // The change comes from another request (the cancel), not from the watcher.
    s.orders()
        .await
        .cancel_order(bearer(
            pb::CancelOrderRequest {
                order_id: o.id.clone(),
                reason: String::new(),
            },
            &s.customer_token,
        ))
        .await
        .unwrap();
    let mut last = first;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(u)) => {
                let u = u.unwrap();
                assert!(!u.initial_state);
                last = u;
            }
            Ok(None) => break,
            Err(_) => panic!("the watch did not end after the order was cancelled"),
        }
    }
    // The stream ended by itself once the order was cancelled.
    assert_eq!(
        status(last.order.as_ref().unwrap()),
        pb::OrderStatus::Cancelled
    );

    // Nobody else may watch it.
    let other = emporium_testkit::tokens()
        .issue(
            uuid::Uuid::now_v7(),
            &[emporium_common::auth::Role::Customer],
        )
        .unwrap()
        .token;
    refused(
        s.orders()
            .await
            .watch_order_updates(watch_one(&o.id, &other))
            .await,
        Code::PermissionDenied,
    );
    s.settle_and_check().await;
}

async fn watching_my_orders_sees_new_ones(db: TestDb) {
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 5).await;
    let mut stream = s
        .orders()
        .await
        .watch_order_updates(bearer(
            pb::WatchOrderUpdatesRequest {
                target: Some(pb::watch_order_updates_request::Target::UserOrders(
                    pb::UserOrders {
                        user_id: String::new(),
                    },
                )),
            },
            &s.customer_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let o = s.place(&[("MUG-1", 1)], "pm_card_ok", "w2").await.unwrap();
    let declined = s
        .place(&[("MUG-1", 1)], "pm_card_declined", "w3")
        .await
        .unwrap();
    // Every change of both orders arrives, in order per order, ending in their
    // final states.
    let mut last = std::collections::HashMap::new();
    let mut versions: std::collections::HashMap<String, Vec<i32>> =
        std::collections::HashMap::new();
    while last.len() < 2
        || last.get(&o.id) != Some(&pb::OrderStatus::Confirmed)
        || last.get(&declined.id) != Some(&pb::OrderStatus::Cancelled)
    {
        let u = next(&mut stream).await;
        let order = u.order.unwrap();
        versions
            .entry(order.id.clone())
            .or_default()
            .push(order.status);
        last.insert(order.id.clone(), status(&order));
    }
    for (id, seen) in &versions {
        assert_eq!(
            seen[0],
            pb::OrderStatus::Pending as i32,
            "{id} starts PENDING: {seen:?}"
        );
    }
    s.settle_and_check().await;
}

/// A CANCELLED order changes no more: its watch sends the state and ends with
/// OK, as the proto says, and the event time is when the order changed.
async fn watching_an_order_already_cancelled_ends_after_its_state(db: TestDb) {
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 5).await;
    let o = s
        .place(&[("MUG-1", 1)], "pm_card_declined", "w-cancelled")
        .await
        .unwrap();
    assert_eq!(status(&o), pb::OrderStatus::Cancelled);
    let mut stream = s
        .orders()
        .await
        .watch_order_updates(watch_one(&o.id, &s.customer_token))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await;
    assert!(first.initial_state);
    let order = first.order.unwrap();
    assert_eq!(status(&order), pb::OrderStatus::Cancelled);
    assert_eq!(first.event_time, order.update_time, "the change's time");
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the watch of a cancelled order ends by itself");
    assert!(end.is_none(), "ended with OK: {end:?}");
}
