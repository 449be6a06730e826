//! Charge: every test card, replays, key reuse, one success per order, and who
//! may charge.

use std::sync::{Arc, atomic::Ordering};

use emporium_common::rpc::Code;
use emporium_testkit::{TestDb, backend_tests};

use crate::{
    Counting, FailFirst, anonymous, app, app_with, bytes, charge_req, customer, error_info, new_id,
    pb, refund_req, refused, violated_fields,
};

backend_tests!(
    ok_card_captures_and_reads_back,
    declined_cards_are_recorded_and_replayed,
    card_errors_record_nothing_and_leave_the_key_unused,
    a_transient_failure_can_be_retried_with_the_same_key,
    replays_are_byte_identical_and_record_one_payment,
    same_key_with_another_request_is_invalid,
    an_order_is_charged_successfully_once,
    customers_charge_only_for_themselves,
    only_the_order_service_may_charge_or_refund,
);

async fn ok_card_captures_and_reads_back(db: TestDb) {
    let mut app = app(db).await;
    let (user, token) = customer();
    let order = new_id();
    let payment = app
        .charge(charge_req(&order, &user, 1999, "pm_card_ok", "k-1"), &token)
        .await
        .unwrap()
        .payment
        .unwrap();
    assert_eq!(payment.id.len(), 36);
    assert_eq!(
        (payment.order_id.as_str(), payment.user_id.as_str()),
        (order.as_str(), user.as_str())
    );
    assert_eq!(payment.status(), pb::PaymentStatus::Captured);
    assert_eq!(payment.decline_reason(), pb::DeclineReason::Unspecified);
    assert_eq!(payment.amount, crate::eur(1999));
    assert_eq!(payment.amount_refunded, crate::eur(0));
    assert_eq!(payment.payment_method, "pm_card_ok");
    assert!(payment.refunds.is_empty());
    assert_eq!(payment.create_time, payment.update_time);
    assert!(payment.create_time.is_some());
    // Stored exactly as returned.
    assert_eq!(app.get(&payment.id, &token).await.unwrap(), payment);

    let ledger = app.ledger().await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        (
            ledger[0].order_id.as_str(),
            ledger[0].successful_charges,
            ledger[0].captured,
            ledger[0].net()
        ),
        (order.as_str(), 1, 1999, 1999)
    );
}

async fn declined_cards_are_recorded_and_replayed(db: TestDb) {
    let mut app = app(db).await;
    let (user, token) = customer();
    for (method, reason, pb_reason) in [
        (
            "pm_card_declined",
            "DECLINE_REASON_CARD_DECLINED",
            pb::DeclineReason::CardDeclined,
        ),
        (
            "pm_card_insufficient_funds",
            "DECLINE_REASON_INSUFFICIENT_FUNDS",
            pb::DeclineReason::InsufficientFunds,
        ),
    ] {
        let order = new_id();
        let key = new_id();
        let req = charge_req(&order, &user, 500, method, &key);
        let first = refused(
            app.charge(req.clone(), &token).await,
            Code::FailedPrecondition,
        );
        let (got_reason, domain, payment_id) = error_info(&first);
        assert_eq!(
            (got_reason.as_str(), domain.as_str()),
            (reason, "payment.emporium")
        );

        // The decline is recorded as a payment the customer can see.
        let declined = app.get(&payment_id, &token).await.unwrap();
        assert_eq!(declined.status(), pb::PaymentStatus::Declined);
        assert_eq!(declined.decline_reason(), pb_reason);
        assert_eq!(declined.amount, crate::eur(500));

        // A replay gives the same decline and records nothing more.
        let again = refused(app.charge(req, &token).await, Code::FailedPrecondition);
        assert_eq!(again.message(), first.message());
        assert_eq!(error_info(&again), error_info(&first));
        assert_eq!(app.of_order(&order).await.len(), 1);

        // A new key is a new attempt: a good card now pays for the order.
        let paid = app
            .charge(
                charge_req(&order, &user, 500, "pm_card_ok", &new_id()),
                &token,
            )
            .await
            .unwrap()
            .payment
            .unwrap();
        assert_eq!(paid.status(), pb::PaymentStatus::Captured);
        assert_eq!(app.of_order(&order).await.len(), 2);
    }
    let ledger = app.ledger().await;
    assert_eq!(ledger.len(), 2);
    for entry in ledger {
        assert_eq!(
            (
                entry.successful_charges,
                entry.declined_charges,
                entry.net()
            ),
            (1, 1, 500)
        );
    }
}

async fn card_errors_record_nothing_and_leave_the_key_unused(db: TestDb) {
    let processor = Arc::new(Counting::default());
    let mut app = app_with(db, processor.clone()).await;
    let (user, token) = customer();
    let order = new_id();
    let req = charge_req(&order, &user, 700, "pm_card_error", "k-error");
    for attempt in 1..=2 {
        let s = refused(app.charge(req.clone(), &token).await, Code::Unavailable);
        assert!(s.message().contains("retry"), "{s:?}");
        // Every retry reaches the processor again: nothing was replayed.
        assert_eq!(processor.calls.load(Ordering::SeqCst), attempt);
    }
    assert!(app.of_order(&order).await.is_empty());
    assert!(app.ledger().await.is_empty());

    // The key is unused, so it is free even for another request.
    let paid = app
        .charge(
            charge_req(&order, &user, 700, "pm_card_ok", "k-error"),
            &token,
        )
        .await
        .unwrap();
    assert_eq!(paid.payment.unwrap().status(), pb::PaymentStatus::Captured);
    assert_eq!(processor.calls.load(Ordering::SeqCst), 3);
}

async fn a_transient_failure_can_be_retried_with_the_same_key(db: TestDb) {
    let processor = Arc::new(FailFirst {
        failures: 1,
        calls: Default::default(),
    });
    let mut app = app_with(db, processor.clone()).await;
    let (user, token) = customer();
    let order = new_id();
    let req = charge_req(&order, &user, 250, "pm_card_ok", "k-flaky");
    refused(app.charge(req.clone(), &token).await, Code::Unavailable);
    assert!(app.of_order(&order).await.is_empty());
    let paid = app.charge(req.clone(), &token).await.unwrap();
    assert_eq!(
        paid.payment.as_ref().unwrap().status(),
        pb::PaymentStatus::Captured
    );
    // The third call is a replay: the processor is not asked again.
    let replay = app.charge(req, &token).await.unwrap();
    assert_eq!(bytes(&replay), bytes(&paid));
    assert_eq!(processor.calls.load(Ordering::SeqCst), 2);
    assert_eq!(app.of_order(&order).await.len(), 1);
}

async fn replays_are_byte_identical_and_record_one_payment(db: TestDb) {
    let mut app = app(db).await;
    let (user, token) = customer();
    let order = new_id();
    let req = charge_req(&order, &user, 1000, "pm_card_ok", "k-replay");
    let first = app.charge(req.clone(), &token).await.unwrap();
    for _ in 0..3 {
        let again = app.charge(req.clone(), &token).await.unwrap();
        assert_eq!(bytes(&again), bytes(&first));
    }
    // Even after a refund the replay is the answer as first given.
    let id = first.payment.as_ref().unwrap().id.clone();
    app.refund(refund_req(&id, Some(100), "r-1"), &token)
        .await
        .unwrap();
    let again = app.charge(req.clone(), &token).await.unwrap();
    assert_eq!(bytes(&again), bytes(&first));
    // The saga replaying it (a resumed order) gets the same answer too.
    let admin = app.admin.clone();
    assert_eq!(
        bytes(&app.charge(req, &admin).await.unwrap()),
        bytes(&first)
    );

    let payments = app.of_order(&order).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].amount_refunded, crate::eur(100));
}

async fn same_key_with_another_request_is_invalid(db: TestDb) {
    let mut app = app(db).await;
    let (user, token) = customer();
    let (other_user, _) = customer();
    let order = new_id();
    let admin = app.admin.clone();
    app.charge(
        charge_req(&order, &user, 1000, "pm_card_declined", "k-declined"),
        &token,
    )
    .await
    .unwrap_err();
    app.charge(
        charge_req(&order, &user, 1000, "pm_card_ok", "k-same"),
        &token,
    )
    .await
    .unwrap();
    for req in [
        charge_req(&order, &user, 1001, "pm_card_ok", "k-same"),
        charge_req(&order, &user, 1000, "pm_card_declined", "k-same"),
        charge_req(&new_id(), &user, 1000, "pm_card_ok", "k-same"),
        charge_req(&order, &other_user, 1000, "pm_card_ok", "k-same"),
        charge_req(&order, &user, 1000, "pm_card_ok", "k-declined"),
        pb::ChargeRequest {
            amount: Some(crate::common_pb::Money {
                currency_code: "USD".into(),
                units: 1000,
            }),
            ..charge_req(&order, &user, 1000, "pm_card_ok", "k-same")
        },
    ] {
        let s = refused(app.charge(req.clone(), &admin).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&s), ["idempotency_key"], "{req:?}");
    }
    let payments = app.of_order(&order).await;
    assert_eq!(payments.len(), 2, "one capture, one decline, nothing else");
}

async fn an_order_is_charged_successfully_once(db: TestDb) {
    let mut app = app(db).await;
    let (user, token) = customer();
    let order = new_id();
    let first = app
        .charge(charge_req(&order, &user, 300, "pm_card_ok", "k-a"), &token)
        .await
        .unwrap();
    let first_id = first.payment.as_ref().unwrap().id.clone();
    let dup = charge_req(&order, &user, 300, "pm_card_ok", "k-b");
    let s = refused(app.charge(dup.clone(), &token).await, Code::AlreadyExists);
    let (reason, domain, paid) = error_info(&s);
    assert_eq!(
        (reason.as_str(), domain.as_str(), paid.as_str()),
        ("ORDER_ALREADY_PAID", "payment.emporium", first_id.as_str())
    );
    // Still so once the payment is fully refunded: the order was paid.
    app.refund(refund_req(&first_id, None, "r-all"), &token)
        .await
        .unwrap();
    refused(app.charge(dup, &token).await, Code::AlreadyExists);
    // A declined card for a paid order is not even tried.
    refused(
        app.charge(
            charge_req(&order, &user, 300, "pm_card_declined", "k-c"),
            &token,
        )
        .await,
        Code::AlreadyExists,
    );
    // The first key still replays its success.
    let replay = app
        .charge(charge_req(&order, &user, 300, "pm_card_ok", "k-a"), &token)
        .await
        .unwrap();
    assert_eq!(bytes(&replay), bytes(&first));
    assert_eq!(app.of_order(&order).await.len(), 1);
    let ledger = app.ledger().await;
    assert_eq!((ledger[0].successful_charges, ledger[0].net()), (1, 0));
}

async fn customers_charge_only_for_themselves(db: TestDb) {
    let mut app = app(db).await;
    let (me, token) = customer();
    let (other, _) = customer();
    let order = new_id();
    refused(
        app.charge(charge_req(&order, &other, 100, "pm_card_ok", "k-x"), &token)
            .await,
        Code::PermissionDenied,
    );
    refused(
        app.client
            .charge(anonymous(charge_req(&order, &me, 100, "pm_card_ok", "k-x")))
            .await,
        Code::Unauthenticated,
    );
    assert!(app.of_order(&order).await.is_empty());
    // The saga charges for whichever user an order is (the test harness's
    // "admin" stands for it): the service token names that user.
    let admin = app.admin.clone();
    let paid = app
        .charge(charge_req(&order, &other, 100, "pm_card_ok", "k-x"), &admin)
        .await
        .unwrap();
    assert_eq!(paid.payment.unwrap().user_id, other);
}

async fn only_the_order_service_may_charge_or_refund(db: TestDb) {
    use emporium_testkit::bearer;
    let mut app = app(db).await;
    let (user, token) = customer();
    let paid = app.paid(&user, &token, 1_000).await;
    // The paying customer and an admin are both refused: these are the saga's RPCs.
    for t in [token.clone(), crate::admin()] {
        let s = app
            .client
            .charge(bearer(
                charge_req(&new_id(), &user, 100, "pm_card_ok", &new_id()),
                &t,
            ))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        let s = app
            .client
            .refund(bearer(
                crate::refund_req(&paid.id, Some(100), &new_id()),
                &t,
            ))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    }
    // Nothing was refunded by the refused calls.
    let now = app.get(&paid.id, &token).await.unwrap();
    assert_eq!(now.amount_refunded.unwrap().units, 0);
}
