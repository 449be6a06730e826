//! Refund: partial, full, over, idempotent, and who may refund what.

use emporium_common::rpc::{Code, StatusExt as _};
use emporium_testkit::{TestDb, backend_tests};

use crate::{
    app, bytes, charge_req, common_pb, customer, new_id, pb, refund_req, refused, violated_fields,
};

backend_tests!(
    partial_then_full_refund,
    over_refunds_are_refused_and_change_nothing,
    refund_replays_return_the_first_answer,
    declined_payments_and_other_currencies_cannot_be_refunded,
    refunds_are_for_owners_and_admins,
    charge_and_refund_keys_are_separate,
);

async fn partial_then_full_refund(db: TestDb) {
    let mut app = app(db).await;
    let (user, token) = customer();
    let paid = app.paid(&user, &token, 1000).await;

    let first = app
        .refund(refund_req(&paid.id, Some(300), "r-1"), &token)
        .await
        .unwrap();
    let (payment, refund) = (first.payment.unwrap(), first.refund.unwrap());
    assert_eq!(refund.amount, crate::eur(300));
    assert_eq!(refund.reason, "order cancelled");
    assert_eq!(refund.id.len(), 36);
    assert_eq!(payment.status(), pb::PaymentStatus::PartiallyRefunded);
    assert_eq!(payment.amount_refunded, crate::eur(300));
    assert_eq!(payment.refunds, std::slice::from_ref(&refund));
    assert_eq!(payment.update_time, refund.create_time);
    assert_eq!(app.get(&paid.id, &token).await.unwrap(), payment);

    // No amount: everything that is left.
    let rest = app
        .refund(refund_req(&paid.id, None, "r-2"), &token)
        .await
        .unwrap();
    let (payment, last) = (rest.payment.unwrap(), rest.refund.unwrap());
    assert_eq!(last.amount, crate::eur(700));
    assert_eq!(payment.status(), pb::PaymentStatus::Refunded);
    assert_eq!(payment.amount_refunded, crate::eur(1000));
    assert_eq!(payment.refunds, [refund, last]);

    for req in [
        refund_req(&paid.id, None, "r-3"),
        refund_req(&paid.id, Some(1), "r-4"),
    ] {
        let s = refused(app.refund(req, &token).await, Code::FailedPrecondition);
        let pf = s.get_details_precondition_failure().expect("details");
        assert_eq!(pf.violations[0].subject, paid.id);
        assert!(s.message().contains("fully refunded"), "{s:?}");
    }
    let ledger = app.ledger().await;
    assert_eq!(
        (ledger[0].captured, ledger[0].refunded, ledger[0].net()),
        (1000, 1000, 0)
    );
}

async fn over_refunds_are_refused_and_change_nothing(db: TestDb) {
    let mut app = app(db).await;
    let (user, token) = customer();
    let paid = app.paid(&user, &token, 1000).await;
    let s = refused(
        app.refund(refund_req(&paid.id, Some(1001), "r-over"), &token)
            .await,
        Code::FailedPrecondition,
    );
    assert!(s.message().contains("only 1000 is left"), "{s:?}");
    app.refund(refund_req(&paid.id, Some(600), "r-600"), &token)
        .await
        .unwrap();
    refused(
        app.refund(refund_req(&paid.id, Some(401), "r-401"), &token)
            .await,
        Code::FailedPrecondition,
    );
    let payment = app.get(&paid.id, &token).await.unwrap();
    assert_eq!(payment.amount_refunded, crate::eur(600));
    assert_eq!(payment.refunds.len(), 1);
    // A refused refund leaves its key unused.
    let ok = app
        .refund(refund_req(&paid.id, Some(400), "r-over"), &token)
        .await
        .unwrap();
    assert_eq!(ok.payment.unwrap().status(), pb::PaymentStatus::Refunded);
}

async fn refund_replays_return_the_first_answer(db: TestDb) {
    let mut app = app(db).await;
    let (user, token) = customer();
    let paid = app.paid(&user, &token, 1000).await;
    let req = refund_req(&paid.id, Some(300), "r-once");
    let first = app.refund(req.clone(), &token).await.unwrap();
    app.refund(refund_req(&paid.id, Some(200), "r-later"), &token)
        .await
        .unwrap();
    // The payment as it was right after the first refund, byte for byte.
    for _ in 0..2 {
        let again = app.refund(req.clone(), &token).await.unwrap();
        assert_eq!(bytes(&again), bytes(&first));
    }
    // Same key, other request: refused, and nothing more is refunded.
    for other in [
        refund_req(&paid.id, Some(301), "r-once"),
        refund_req(&paid.id, None, "r-once"),
        pb::RefundRequest {
            reason: "another reason".into(),
            ..req.clone()
        },
    ] {
        let s = refused(app.refund(other, &token).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&s), ["idempotency_key"]);
    }
    let payment = app.get(&paid.id, &token).await.unwrap();
    assert_eq!(payment.amount_refunded, crate::eur(500));
    assert_eq!(payment.refunds.len(), 2);
    assert_eq!(app.ledger().await[0].refunded, 500);
}

async fn declined_payments_and_other_currencies_cannot_be_refunded(db: TestDb) {
    let mut app = app(db).await;
    let (user, token) = customer();
    let s = refused(
        app.charge(
            charge_req(&new_id(), &user, 900, "pm_card_declined", &new_id()),
            &token,
        )
        .await,
        Code::FailedPrecondition,
    );
    let declined = crate::error_info(&s).2;
    for req in [
        refund_req(&declined, None, "r-d1"),
        refund_req(&declined, Some(100), "r-d2"),
    ] {
        let s = refused(app.refund(req, &token).await, Code::FailedPrecondition);
        assert!(s.message().contains("declined"), "{s:?}");
    }

    let paid = app.paid(&user, &token, 900).await;
    let s = refused(
        app.refund(
            pb::RefundRequest {
                amount: Some(common_pb::Money {
                    currency_code: "USD".into(),
                    units: 100,
                }),
                ..refund_req(&paid.id, None, "r-usd")
            },
            &token,
        )
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["amount.currency_code"]);
    assert!(s.message().contains("EUR"), "{s:?}");

    // The order service acts for a customer, never as an admin (a service
    // token's rights are the user's it names), so an unknown payment answers
    // as any payment that is not that user's does: without saying it exists.
    let unknown = new_id();
    let admin = app.admin.clone();
    refused(
        app.refund(refund_req(&unknown, None, "r-u"), &admin).await,
        Code::PermissionDenied,
    );
    refused(
        app.refund(refund_req(&unknown, None, "r-u"), &token).await,
        Code::PermissionDenied,
    );
    assert_eq!(app.get(&paid.id, &token).await.unwrap().refunds.len(), 0);
}

async fn refunds_are_for_owners_and_admins(db: TestDb) {
    let mut app = app(db).await;
    let (user, token) = customer();
    let (_, stranger) = customer();
    let paid = app.paid(&user, &token, 1000).await;
    refused(
        app.refund(refund_req(&paid.id, Some(100), "r-s"), &stranger)
            .await,
        Code::PermissionDenied,
    );
    let admin = app.admin.clone();
    app.refund(refund_req(&paid.id, Some(100), "r-a"), &admin)
        .await
        .unwrap();
    app.refund(refund_req(&paid.id, Some(100), "r-o"), &token)
        .await
        .unwrap();
    let payment = app.get(&paid.id, &token).await.unwrap();
    assert_eq!(payment.amount_refunded, crate::eur(200));
}

async fn charge_and_refund_keys_are_separate(db: TestDb) {
    let mut app = app(db).await;
    let (user, token) = customer();
    let paid = app
        .charge(
            charge_req(&new_id(), &user, 50, "pm_card_ok", "shared-key"),
            &token,
        )
        .await
        .unwrap()
        .payment
        .unwrap();
    let refunded = app
        .refund(refund_req(&paid.id, None, "shared-key"), &token)
        .await
        .unwrap();
    assert_eq!(refunded.refund.unwrap().amount, crate::eur(50));
}
