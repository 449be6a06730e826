//! Concurrent duplicates: the same key at once, many keys for one order at once,
//! refunds racing each other. Multi-thread runtime, real sockets, no sleeps.

use std::collections::HashSet;

use emporium_common::rpc::{Code, Status};
use emporium_testkit::{TestDb, backend_tests, bearer};
use futures::future::join_all;

use crate::{Gate, app, app_with, bytes, charge_req, customer, new_id, pb, refund_req, refused};

backend_tests!(
    a_running_charge_makes_duplicates_abort,
    twenty_calls_with_one_key_charge_once,
    twenty_keys_for_one_order_capture_once,
    racing_refunds_never_exceed_the_charge,
    racing_full_refunds_refund_once,
);

/// Runs `n` requests at once, each from its own task.
async fn at_once<Resp, F, Fut>(n: usize, make: F) -> Vec<Result<Resp, Status>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    Resp: Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(make(i))).collect();
    join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect()
}

async fn a_running_charge_makes_duplicates_abort(db: TestDb) {
    let (gate, mut arrivals) = Gate::new();
    let mut app = app_with(db, gate.clone()).await;
    let (user, token) = customer();
    let order = new_id();
    let req = charge_req(&order, &user, 800, "pm_card_ok", "k-held");
    let first = tokio::spawn({
        let mut client = app.client.clone();
        let (req, token) = (req.clone(), token.clone());
        async move { client.charge(bearer(req, &crate::via_order(&token))).await }
    });
    // The first call is inside the processor, holding its key and the order.
    arrivals.recv().await.unwrap();
    let s = refused(app.charge(req.clone(), &token).await, Code::Aborted);
    assert!(s.message().contains("retry"), "{s:?}");
    refused(
        app.charge(
            charge_req(&order, &user, 800, "pm_card_ok", "k-other"),
            &token,
        )
        .await,
        Code::Aborted,
    );
    // A different request under the held key is still a different request.
    refused(
        app.charge(
            charge_req(&order, &user, 801, "pm_card_ok", "k-held"),
            &token,
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(app.of_order(&order).await.is_empty());

    gate.open(1);
    let first = first.await.unwrap().unwrap().into_inner();
    assert_eq!(
        first.payment.as_ref().unwrap().status(),
        pb::PaymentStatus::Captured
    );
    let replay = app.charge(req, &token).await.unwrap();
    assert_eq!(bytes(&replay), bytes(&first));
    refused(
        app.charge(
            charge_req(&order, &user, 800, "pm_card_ok", "k-other"),
            &token,
        )
        .await,
        Code::AlreadyExists,
    );
    assert!(arrivals.try_recv().is_err(), "the processor was asked once");
}

async fn twenty_calls_with_one_key_charge_once(db: TestDb) {
    let mut app = app(db).await;
    let (user, token) = customer();
    let order = new_id();
    let req = charge_req(&order, &user, 4200, "pm_card_ok", "k-storm");
    let results = at_once(20, |_| {
        let mut client = app.client.clone();
        let (req, token) = (req.clone(), token.clone());
        async move {
            client
                .charge(bearer(req, &crate::via_order(&token)))
                .await
                .map(|r| r.into_inner())
        }
    })
    .await;
    let mut answers = HashSet::new();
    for r in results {
        match r {
            Ok(resp) => {
                answers.insert(bytes(&resp));
            }
            Err(s) => assert_eq!(s.code(), Code::Aborted, "{s:?}"),
        }
    }
    assert_eq!(answers.len(), 1, "every success is the same answer");
    let payments = app.of_order(&order).await;
    assert_eq!(payments.len(), 1);
    // A retry after the storm replays that answer.
    let replay = app.charge(req, &token).await.unwrap();
    assert!(answers.contains(&bytes(&replay)));
    assert_eq!(app.ledger().await[0].successful_charges, 1);
}

async fn twenty_keys_for_one_order_capture_once(db: TestDb) {
    let mut app = app(db).await;
    let (user, token) = customer();
    let order = new_id();
    let results = at_once(20, |i| {
        let mut client = app.client.clone();
        let req = charge_req(&order, &user, 999, "pm_card_ok", &format!("k-{i}"));
        let token = token.clone();
        async move {
            client
                .charge(bearer(req, &crate::via_order(&token)))
                .await
                .map(|r| r.into_inner())
        }
    })
    .await;
    let mut captured = Vec::new();
    for r in results {
        match r {
            Ok(resp) => captured.push(resp.payment.unwrap().id),
            Err(s) => assert!(
                matches!(s.code(), Code::Aborted | Code::AlreadyExists),
                "{s:?}"
            ),
        }
    }
    assert_eq!(captured.len(), 1, "exactly one charge succeeded");
    let payments = app.of_order(&order).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].id, captured[0]);
    assert_eq!(payments[0].status(), pb::PaymentStatus::Captured);
    let ledger = app.ledger().await;
    assert_eq!((ledger[0].successful_charges, ledger[0].captured), (1, 999));
}

async fn racing_refunds_never_exceed_the_charge(db: TestDb) {
    let mut app = app(db).await;
    let (user, token) = customer();
    let paid = app.paid(&user, &token, 1000).await;
    let results = at_once(20, |i| {
        let mut client = app.client.clone();
        let req = refund_req(&paid.id, Some(100), &format!("r-{i}"));
        let token = token.clone();
        async move { client.refund(bearer(req, &crate::via_order(&token))).await }
    })
    .await;
    let mut ok = 0;
    for r in results {
        match r {
            Ok(_) => ok += 1,
            Err(s) => assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}"),
        }
    }
    assert_eq!(ok, 10);
    let payment = app.get(&paid.id, &token).await.unwrap();
    assert_eq!(payment.amount_refunded, crate::eur(1000));
    assert_eq!(payment.status(), pb::PaymentStatus::Refunded);
    assert_eq!(payment.refunds.len(), 10);
    // Applied in order: times never go back.
    assert!(
        payment
            .refunds
            .windows(2)
            .all(|w| w[0].create_time.as_ref().map(|t| (t.seconds, t.nanos))
                <= w[1].create_time.as_ref().map(|t| (t.seconds, t.nanos)))
    );
    assert_eq!(app.ledger().await[0].net(), 0);
}

async fn racing_full_refunds_refund_once(db: TestDb) {
    let mut app = app(db).await;
    let (user, token) = customer();
    let paid = app.paid(&user, &token, 1000).await;
    app.refund(refund_req(&paid.id, Some(1), "r-first"), &token)
        .await
        .unwrap();
    let results = at_once(10, |i| {
        let mut client = app.client.clone();
        let req = refund_req(&paid.id, None, &format!("r-rest-{i}"));
        let token = token.clone();
        async move { client.refund(bearer(req, &crate::via_order(&token))).await }
    })
    .await;
    let mut ok = 0;
    for r in results {
        match r {
            Ok(resp) => {
                ok += 1;
                assert_eq!(resp.into_inner().refund.unwrap().amount, crate::eur(999));
            }
            Err(s) => assert!(
                matches!(s.code(), Code::FailedPrecondition | Code::Aborted),
                "{s:?}"
            ),
        }
    }
    assert_eq!(ok, 1);
    let payment = app.get(&paid.id, &token).await.unwrap();
    assert_eq!(payment.amount_refunded, crate::eur(1000));
    assert_eq!(payment.refunds.len(), 2);
}
