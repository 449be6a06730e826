//! The saga's paths: success, every business failure with its compensation, a
//! peer down, idempotent replays, and cancelling a confirmed order.

use emporium_common::{
    auth::Role,
    rpc::{Code, StatusExt as _},
};
use emporium_order::config::SagaConfig;
use emporium_proto::{payment::v1 as pay, user::v1 as usr};
use std::time::Duration;

use emporium_testkit::{
    TestDb, backend_tests, bearer, eventually,
    invariants::{Dbs, check_invariants},
    refused, saga_config, tokens,
};
use prost::Message as _;
use uuid::Uuid;

use crate::{Stack, pb, reason, status};

backend_tests!(
    an_order_is_confirmed_with_inventory_prices,
    unknown_and_inactive_users_cancel_the_order,
    stock_shortage_cancels_without_reserving_anything,
    a_declined_card_releases_the_stock,
    payment_service_down_keeps_the_order_compensating_until_payment_answers,
    a_short_client_deadline_answers_pending_and_the_order_still_confirms,
    replaying_create_order_returns_the_same_order_and_charges_once,
    concurrent_replays_create_one_order,
    a_reused_key_with_another_request_is_refused,
    a_confirmed_order_can_be_cancelled_by_its_owner,
    cancelling_while_payment_is_down_answers_unavailable,
    requests_are_validated_field_by_field,
    orders_are_private_and_paged,
);

async fn an_order_is_confirmed_with_inventory_prices(db: TestDb) {
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_250, 10).await;
    s.product("TEE-1", 1_999, 5).await;
    let o = s
        .place(&[("MUG-1", 2), ("TEE-1", 1)], "pm_card_ok", "k1")
        .await
        .unwrap();
    assert_eq!(status(&o), pb::OrderStatus::Confirmed, "{o:?}");
    assert_eq!(o.user_id, s.customer.to_string());
    let total = o.total.clone().unwrap();
    assert_eq!(
        (total.units, total.currency_code.as_str()),
        (2 * 1_250 + 1_999, "EUR")
    );
    assert_eq!(o.items[0].unit_price.as_ref().unwrap().units, 1_250);
    assert_eq!(o.items[0].line_total.as_ref().unwrap().units, 2_500);
    assert_eq!(o.items[1].name, "Product TEE-1");
    assert!(!o.payment_id.is_empty());
    assert_eq!(s.stock("MUG-1").await, (8, 0));
    assert_eq!(s.stock("TEE-1").await, (4, 0));
    let t = s.settle_and_check().await;
    assert_eq!((t.confirmed, t.cancelled), (1, 0));
}

async fn unknown_and_inactive_users_cancel_the_order(db: TestDb) {
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 10).await;
    // A valid token for a user the user service has never heard of.
    let ghost = tokens()
        .issue(Uuid::now_v7(), &[Role::Customer])
        .unwrap()
        .token;
    let req = |key: &str| pb::CreateOrderRequest {
        user_id: String::new(),
        items: vec![pb::CreateOrderItem {
            sku: "MUG-1".into(),
            quantity: 1,
        }],
        payment_method: "pm_card_ok".into(),
        idempotency_key: key.into(),
    };
    let o = s
        .orders()
        .await
        .create_order(bearer(req("ghost"), &ghost))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(
        (status(&o), reason(&o)),
        (pb::OrderStatus::Cancelled, pb::CancelReason::UserNotFound)
    );

    // An admin deactivates the customer; their next order is refused the same way.
    let mut users = usr::user_service_client::UserServiceClient::new(s.user.channel().await);
    users
        .update_user(bearer(
            usr::UpdateUserRequest {
                user_id: s.customer.to_string(),
                active: Some(false),
                ..Default::default()
            },
            &s.admin,
        ))
        .await
        .unwrap();
    let o = s
        .orders()
        .await
        .create_order(bearer(req("inactive"), &s.customer_token))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(
        (status(&o), reason(&o)),
        (pb::OrderStatus::Cancelled, pb::CancelReason::UserInactive)
    );
    assert_eq!(s.stock("MUG-1").await, (10, 0));
    s.settle_and_check().await;
}

async fn stock_shortage_cancels_without_reserving_anything(db: TestDb) {
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 10).await;
    s.product("TEE-1", 2_000, 1).await;
    // All or nothing: MUG-1 is available, TEE-1 is not.
    let o = s
        .place(&[("MUG-1", 3), ("TEE-1", 2)], "pm_card_ok", "short")
        .await
        .unwrap();
    assert_eq!(
        (status(&o), reason(&o)),
        (pb::OrderStatus::Cancelled, pb::CancelReason::OutOfStock)
    );
    assert!(o.cancel_detail.contains("TEE-1"), "{}", o.cancel_detail);
    assert_eq!(s.stock("MUG-1").await, (10, 0));
    assert_eq!(s.stock("TEE-1").await, (1, 0));
    let o = s
        .place(&[("NOPE-1", 1)], "pm_card_ok", "unknown")
        .await
        .unwrap();
    assert_eq!(reason(&o), pb::CancelReason::ProductNotFound);
    let t = s.settle_and_check().await;
    assert_eq!((t.confirmed, t.cancelled), (0, 2));
}

async fn a_declined_card_releases_the_stock(db: TestDb) {
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 10).await;
    for (method, expected) in [
        ("pm_card_declined", pb::CancelReason::PaymentDeclined),
        (
            "pm_card_insufficient_funds",
            pb::CancelReason::PaymentDeclined,
        ),
        ("pm_card_bogus", pb::CancelReason::PaymentMethodInvalid),
    ] {
        let o = s.place(&[("MUG-1", 4)], method, method).await.unwrap();
        assert_eq!(
            (status(&o), reason(&o)),
            (pb::OrderStatus::Cancelled, expected),
            "{method}"
        );
        assert!(o.payment_id.is_empty());
        assert_eq!(s.stock("MUG-1").await, (10, 0), "{method}");
    }
    let t = s.settle_and_check().await;
    assert_eq!(t.cancelled, 3);
}

/// The order as the service reports it now.
async fn fetch(s: &Stack, id: &str) -> pb::Order {
    s.orders()
        .await
        .get_order(bearer(
            pb::GetOrderRequest {
                order_id: id.to_owned(),
            },
            &s.customer_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
}

/// Payment is away while an order is charged: nobody can say whether money was
/// taken, so the order is not cancelled and its stock not released until
/// payment answers; then the charge is settled by a void (never by charging)
/// and the order is compensated.
async fn payment_service_down_keeps_the_order_compensating_until_payment_answers(db: TestDb) {
    let mut s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 10).await;
    s.payment.as_mut().unwrap().stop().await.unwrap();
    let o = s
        .place(&[("MUG-1", 2)], "pm_card_ok", "down")
        .await
        .unwrap();
    assert_eq!(status(&o), pb::OrderStatus::Pending, "{o:?}");
    assert_eq!(s.stock("MUG-1").await, (10, 2), "released while unsettled");
    // Still unsettled a few sweeps later.
    let again = fetch(&s, &o.id).await;
    assert_eq!(status(&again), pb::OrderStatus::Pending, "{again:?}");
    s.restart_payment().await;
    let done = eventually(Duration::from_secs(20), || async {
        let now = fetch(&s, &o.id).await;
        (status(&now) != pb::OrderStatus::Pending).then_some(now)
    })
    .await;
    assert_eq!(
        (status(&done), reason(&done)),
        (pb::OrderStatus::Cancelled, pb::CancelReason::PaymentFailed),
        "{done:?}"
    );
    assert!(done.payment_id.is_empty(), "{done:?}");
    assert_eq!(s.stock("MUG-1").await, (10, 0));
    let t = s.settle_and_check().await;
    assert_eq!(t.cancelled, 1);
}

/// The caller's deadline bounds how long CreateOrder waits, not the saga: a
/// 1 s `grpc-timeout` while inventory stalls for 2 s gets the PENDING order in
/// time, and the order confirms once inventory moves again.
async fn a_short_client_deadline_answers_pending_and_the_order_still_confirms(db: TestDb) {
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 10).await;
    // A step budget (4 s) longer than the stall (2 s), which is longer than
    // the caller's deadline (1 s).
    let saga = SagaConfig {
        retry_budget_ms: 4_000,
        lease_ms: 5_000,
        ..saga_config()
    };
    let (proxy, order, order_db_url) = crate::order_with_stallable_inventory(&s, saga).await;
    let mut orders = pb::order_service_client::OrderServiceClient::new(order.channel().await);

    proxy.stall();
    let mut req = bearer(
        pb::CreateOrderRequest {
            user_id: String::new(),
            items: vec![pb::CreateOrderItem {
                sku: "MUG-1".into(),
                quantity: 3,
            }],
            payment_method: "pm_card_ok".into(),
            idempotency_key: "short-deadline".into(),
        },
        &s.customer_token,
    );
    req.set_timeout(Duration::from_secs(1));
    let answered = orders
        .create_order(req)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(status(&answered), pb::OrderStatus::Pending, "{answered:?}");
    // Inventory is still stalled well past the caller's deadline.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    proxy.resume();
    let done = eventually(Duration::from_secs(20), || {
        let mut orders = orders.clone();
        let (id, token) = (answered.id.clone(), s.customer_token.clone());
        async move {
            let o = orders
                .get_order(bearer(pb::GetOrderRequest { order_id: id }, &token))
                .await
                .unwrap()
                .into_inner()
                .order
                .unwrap();
            (status(&o) != pb::OrderStatus::Pending).then_some(o)
        }
    })
    .await;
    assert_eq!(status(&done), pb::OrderStatus::Confirmed, "{done:?}");
    assert_eq!(s.stock("MUG-1").await, (7, 0));
    check_invariants(
        &Dbs {
            order: order_db_url,
            inventory: s.inventory.db_url.clone(),
            payment: s.payment.as_ref().unwrap().db_url.clone(),
        },
        Duration::from_secs(20),
    )
    .await;
}

async fn replaying_create_order_returns_the_same_order_and_charges_once(db: TestDb) {
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 10).await;
    let first = s
        .place(&[("MUG-1", 1)], "pm_card_ok", "same")
        .await
        .unwrap();
    let again = s
        .place(&[("MUG-1", 1)], "pm_card_ok", "same")
        .await
        .unwrap();
    assert_eq!(
        first.encode_to_vec(),
        again.encode_to_vec(),
        "identical responses"
    );
    assert_eq!(status(&first), pb::OrderStatus::Confirmed);
    assert_eq!(s.stock("MUG-1").await, (9, 0));
    // Exactly one payment exists for the order.
    let mut payments = pay::payment_service_client::PaymentServiceClient::new(
        s.payment.as_ref().unwrap().channel().await,
    );
    let list = payments
        .list_payments(bearer(
            pay::ListPaymentsRequest {
                order_id: first.id.clone(),
                ..Default::default()
            },
            &s.admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.payments.len(), 1);
    let t = s.settle_and_check().await;
    assert_eq!(t.confirmed, 1);
}

async fn concurrent_replays_create_one_order(db: TestDb) {
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 10).await;
    let mut calls = Vec::new();
    for _ in 0..10 {
        let mut client = s.orders().await;
        let token = s.customer_token.clone();
        calls.push(tokio::spawn(async move {
            client
                .create_order(bearer(crate::one_mug("racy"), &token))
                .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for c in calls {
        match c.await.unwrap() {
            Ok(r) => {
                ids.insert(r.into_inner().order.unwrap().id);
            }
            // The only acceptable failure: "in progress, retry".
            Err(e) => assert_eq!(e.code(), Code::Aborted, "{e:?}"),
        }
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let t = s.settle_and_check().await;
    assert_eq!(t.confirmed, 1);
    assert_eq!(s.stock("MUG-1").await, (9, 0));
}

async fn a_reused_key_with_another_request_is_refused(db: TestDb) {
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 10).await;
    s.place(&[("MUG-1", 1)], "pm_card_ok", "reuse")
        .await
        .unwrap();
    let e = refused(
        s.place(&[("MUG-1", 2)], "pm_card_ok", "reuse").await,
        Code::InvalidArgument,
    );
    let fields: Vec<_> = e
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["idempotency_key"]);
    assert_eq!(s.stock("MUG-1").await, (9, 0));
    s.settle_and_check().await;
}

async fn a_confirmed_order_can_be_cancelled_by_its_owner(db: TestDb) {
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 10).await;
    let o = s.place(&[("MUG-1", 3)], "pm_card_ok", "c1").await.unwrap();
    assert_eq!(s.stock("MUG-1").await, (7, 0));

    // Another customer may not.
    let other = tokens()
        .issue(Uuid::now_v7(), &[Role::Customer])
        .unwrap()
        .token;
    let cancel = |token: &str| {
        bearer(
            pb::CancelOrderRequest {
                order_id: o.id.clone(),
                reason: "changed my mind".into(),
            },
            token,
        )
    };
    refused(
        s.orders().await.cancel_order(cancel(&other)).await,
        Code::PermissionDenied,
    );

    let c = s
        .orders()
        .await
        .cancel_order(cancel(&s.customer_token))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(
        (status(&c), reason(&c)),
        (
            pb::OrderStatus::Cancelled,
            pb::CancelReason::CustomerRequested
        )
    );
    assert_eq!(c.cancel_detail, "changed my mind");
    assert_eq!(s.stock("MUG-1").await, (10, 0), "the goods are back");
    // Cancelling again changes nothing.
    let again = s
        .orders()
        .await
        .cancel_order(cancel(&s.customer_token))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(again.update_time, c.update_time);
    let t = s.settle_and_check().await;
    assert_eq!((t.confirmed, t.cancelled), (0, 1));
}

async fn requests_are_validated_field_by_field(db: TestDb) {
    let s = Stack::start(db).await;
    let fields = |e: emporium_common::rpc::Status| -> Vec<String> {
        e.get_details_bad_request()
            .unwrap()
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect()
    };
    let e = refused(s.place(&[], "", "").await, Code::InvalidArgument);
    assert_eq!(fields(e), ["items", "payment_method", "idempotency_key"]);
    let e = refused(
        s.place(
            &[("MUG-1", 0), ("bad sku", 1), ("MUG-1", 10_001)],
            "pm_card_ok",
            "k",
        )
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        fields(e),
        [
            "items[0].quantity",
            "items[1].sku",
            "items[2].quantity",
            "items[2].sku"
        ]
    );
    // An order with 10,000 lines is refused cleanly, naming the list.
    let many: Vec<(String, i64)> = (0..10_000).map(|i| (format!("SKU-{i}"), 1)).collect();
    let many: Vec<(&str, i64)> = many.iter().map(|(s, q)| (s.as_str(), *q)).collect();
    let e = refused(
        s.place(&many, "pm_card_ok", "many").await,
        Code::InvalidArgument,
    );
    assert_eq!(fields(e), ["items"]);
    // A customer cannot order for someone else.
    let e = s
        .orders()
        .await
        .create_order(bearer(
            pb::CreateOrderRequest {
                user_id: Uuid::now_v7().to_string(),
                ..crate::one_mug("other")
            },
            &s.customer_token,
        ))
        .await;
    refused(e, Code::PermissionDenied);
    for bad in ["", "not-a-uuid"] {
        refused(
            s.orders()
                .await
                .get_order(bearer(
                    pb::GetOrderRequest {
                        order_id: bad.into(),
                    },
                    &s.customer_token,
                ))
                .await,
            Code::InvalidArgument,
        );
    }
    // An unknown id: a customer cannot tell it from someone else's order; an
    // admin is told it does not exist.
    let unknown = || pb::GetOrderRequest {
        order_id: Uuid::now_v7().to_string(),
    };
    refused(
        s.orders()
            .await
            .get_order(bearer(unknown(), &s.customer_token))
            .await,
        Code::PermissionDenied,
    );
    refused(
        s.orders()
            .await
            .get_order(bearer(unknown(), &s.admin))
            .await,
        Code::NotFound,
    );
    // Refused requests stored nothing.
    let t = s.settle_and_check().await;
    assert_eq!((t.confirmed, t.cancelled), (0, 0));
}

async fn orders_are_private_and_paged(db: TestDb) {
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 100).await;
    let mut placed = Vec::new();
    for i in 0..5 {
        placed.push(
            s.place(&[("MUG-1", 1)], "pm_card_ok", &format!("p{i}"))
                .await
                .unwrap()
                .id,
        );
    }
    let mut client = s.orders().await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_orders(bearer(
                pb::ListOrdersRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                },
                &s.customer_token,
            ))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.orders.into_iter().map(|o| o.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    placed.reverse();
    assert_eq!(seen, placed, "newest first, each once");

    // Another customer sees none of them and cannot read one.
    let other = tokens()
        .issue(Uuid::now_v7(), &[Role::Customer])
        .unwrap()
        .token;
    let page = client
        .list_orders(bearer(pb::ListOrdersRequest::default(), &other))
        .await
        .unwrap()
        .into_inner();
    assert!(page.orders.is_empty());
    refused(
        client
            .get_order(bearer(
                pb::GetOrderRequest {
                    order_id: placed[0].clone(),
                },
                &other,
            ))
            .await,
        Code::PermissionDenied,
    );
    refused(
        client
            .list_orders(bearer(
                pb::ListOrdersRequest {
                    user_id: s.customer.to_string(),
                    ..Default::default()
                },
                &other,
            ))
            .await,
        Code::PermissionDenied,
    );
    // Admins filter by status.
    let confirmed = client
        .list_orders(bearer(
            pb::ListOrdersRequest {
                status: pb::OrderStatus::Confirmed as i32,
                ..Default::default()
            },
            &s.admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(confirmed.orders.len(), 5);
    s.settle_and_check().await;
}

/// CancelOrder promises UNAVAILABLE when a peer stays unreachable until the
/// deadline (the cancellation goes on in the background), never OK with the
/// order still CONFIRMED.
async fn cancelling_while_payment_is_down_answers_unavailable(db: TestDb) {
    let mut s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 10).await;
    let o = s
        .place(&[("MUG-1", 1)], "pm_card_ok", "c-down")
        .await
        .unwrap();
    assert_eq!(status(&o), pb::OrderStatus::Confirmed);
    s.payment.as_mut().unwrap().stop().await.unwrap();
    let mut req = bearer(
        pb::CancelOrderRequest {
            order_id: o.id.clone(),
            reason: String::new(),
        },
        &s.customer_token,
    );
    req.set_timeout(std::time::Duration::from_secs(3));
    let st = refused(s.orders().await.cancel_order(req).await, Code::Unavailable);
    assert!(st.message().contains("background"), "{st:?}");
    // Nothing was refunded, so the order is still CONFIRMED and its stock sold.
    let now = s
        .orders()
        .await
        .get_order(bearer(
            pb::GetOrderRequest {
                order_id: o.id.clone(),
            },
            &s.customer_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(status(&now), pb::OrderStatus::Confirmed);
    assert_eq!(s.stock("MUG-1").await, (9, 0));
    // Payment is back: the cancellation finishes on its own.
    s.restart_payment().await;
    let done = eventually(Duration::from_secs(20), || async {
        let now = fetch(&s, &o.id).await;
        (status(&now) == pb::OrderStatus::Cancelled).then_some(now)
    })
    .await;
    assert_eq!(reason(&done), pb::CancelReason::CustomerRequested);
    assert_eq!(s.stock("MUG-1").await, (10, 0));
    let t = s.settle_and_check().await;
    assert_eq!(t.cancelled, 1);
}
