//! VoidCharge: settling a charge key without charging, for a caller that does
//! not know a Charge's outcome. Decided keys give their payment, running ones
//! ABORTED, unused or abandoned ones are voided for good, and no call ever
//! reaches the processor or records a payment.

use std::sync::{Arc, atomic::Ordering};

use emporium_common::rpc::Code;
use emporium_testkit::{
    TestDb, admin_token, backend_tests, bearer, eventually,
    hostile::{bad_ids, bad_keys},
    invalid, order_service_token,
};
use std::time::Duration;
use uuid::Uuid;

use futures::future::join_all;

use crate::{
    Counting, Gate, app, app_with, app_with_lease, bytes, charge_req, customer, error_info, new_id,
    pb, refund_req, refused, void_req,
};

backend_tests!(
    a_never_sent_key_is_voided_and_never_charges,
    a_captured_key_gives_its_payment_with_its_refunds,
    a_declined_key_gives_the_declined_payment,
    a_running_charge_makes_void_abort_until_it_is_decided,
    an_overrunning_claim_is_voided_and_its_holder_records_nothing,
    void_requests_are_validated_and_only_the_order_service_may_void,
    racing_charges_and_voids_on_one_key_agree_on_one_outcome,
);

const VOIDED: &str = "CHARGE_VOIDED";

/// Asserts the answer of a voided key: no payment, `voided`.
#[track_caller]
fn assert_voided(r: &pb::VoidChargeResponse) {
    assert!(r.voided, "{r:?}");
    assert!(r.payment.is_none(), "{r:?}");
}

async fn a_never_sent_key_is_voided_and_never_charges(db: TestDb) {
    let counting = Arc::new(Counting::default());
    let mut app = app_with(db, counting.clone()).await;
    let (user, token) = customer();
    let order = new_id();

    let first = app.void(&order, &user, "k-lost").await.unwrap();
    assert_voided(&first);
    // A replay gives the same answer.
    let again = app.void(&order, &user, "k-lost").await.unwrap();
    assert_eq!(bytes(&again), bytes(&first));

    // A Charge with the key, however late, never reaches the processor.
    let req = charge_req(&order, &user, 900, "pm_card_ok", "k-lost");
    for _ in 0..2 {
        let s = refused(
            app.charge(req.clone(), &token).await,
            Code::FailedPrecondition,
        );
        let (reason, domain, _) = error_info(&s);
        assert_eq!(
            (reason.as_str(), domain.as_str()),
            (VOIDED, "payment.emporium")
        );
    }
    // Any request under the key: it is the key that is void.
    let other_amount = charge_req(&order, &user, 901, "pm_card_ok", "k-lost");
    let s = refused(
        app.charge(other_amount, &token).await,
        Code::FailedPrecondition,
    );
    assert_eq!(error_info(&s).0, VOIDED);
    assert_eq!(counting.calls.load(Ordering::SeqCst), 0);
    assert!(app.of_order(&order).await.is_empty());

    // The key belongs to this order: another order may not use or settle it.
    let elsewhere = new_id();
    invalid(
        app.charge(
            charge_req(&elsewhere, &user, 900, "pm_card_ok", "k-lost"),
            &token,
        )
        .await,
        &["idempotency_key"],
    );
    invalid(
        app.void(&elsewhere, &user, "k-lost").await,
        &["idempotency_key"],
    );
    assert!(app.of_order(&elsewhere).await.is_empty());

    // Voiding one key does not block the order: a new key may still charge it.
    let paid = app
        .charge(
            charge_req(&order, &user, 900, "pm_card_ok", "k-next"),
            &token,
        )
        .await
        .unwrap();
    assert_eq!(paid.payment.unwrap().status(), pb::PaymentStatus::Captured);
    assert_eq!(counting.calls.load(Ordering::SeqCst), 1);
    assert_eq!(app.of_order(&order).await.len(), 1);
    assert_voided(&app.void(&order, &user, "k-lost").await.unwrap());
}

async fn a_captured_key_gives_its_payment_with_its_refunds(db: TestDb) {
    let counting = Arc::new(Counting::default());
    let mut app = app_with(db, counting.clone()).await;
    let (user, token) = customer();
    let order = new_id();
    let req = charge_req(&order, &user, 1_500, "pm_card_ok", "k-paid");
    let charged = app.charge(req.clone(), &token).await.unwrap();
    let payment = charged.payment.clone().unwrap();

    let settled = app.void(&order, &user, "k-paid").await.unwrap();
    assert!(!settled.voided, "{settled:?}");
    assert_eq!(bytes(settled.payment.as_ref().unwrap()), bytes(&payment));

    // As it is now: the refund the caller makes next shows.
    app.refund(refund_req(&payment.id, Some(500), "r-1"), &token)
        .await
        .unwrap();
    let settled = app.void(&order, &user, "k-paid").await.unwrap();
    let now = settled.payment.unwrap();
    assert!(!settled.voided);
    assert_eq!(now.id, payment.id);
    assert_eq!(now.status(), pb::PaymentStatus::PartiallyRefunded);
    assert_eq!(now.amount_refunded.unwrap().units, 500);
    assert_eq!(now.refunds.len(), 1);

    // Nothing changed for the key: a Charge replay is the first answer.
    let replay = app.charge(req, &token).await.unwrap();
    assert_eq!(bytes(&replay), bytes(&charged));
    assert_eq!(counting.calls.load(Ordering::SeqCst), 1);
    assert_eq!(app.of_order(&order).await.len(), 1);

    // The key is this order's and this customer's.
    invalid(
        app.void(&new_id(), &user, "k-paid").await,
        &["idempotency_key"],
    );
    invalid(
        app.void(&order, &Uuid::now_v7().to_string(), "k-paid")
            .await,
        &["user_id"],
    );
}

async fn a_declined_key_gives_the_declined_payment(db: TestDb) {
    let mut app = app(db).await;
    let (user, token) = customer();
    let order = new_id();
    let declined = refused(
        app.charge(
            charge_req(&order, &user, 700, "pm_card_insufficient_funds", "k-no"),
            &token,
        )
        .await,
        Code::FailedPrecondition,
    );
    let (_, _, payment_id) = error_info(&declined);

    let settled = app.void(&order, &user, "k-no").await.unwrap();
    assert!(!settled.voided, "{settled:?}");
    let p = settled.payment.unwrap();
    assert_eq!(p.id, payment_id);
    assert_eq!(p.status(), pb::PaymentStatus::Declined);
    assert_eq!(p.decline_reason(), pb::DeclineReason::InsufficientFunds);
    let again = app.void(&order, &user, "k-no").await.unwrap();
    assert_eq!(bytes(again.payment.as_ref().unwrap()), bytes(&p));
    assert_eq!(app.of_order(&order).await.len(), 1);
}

async fn a_running_charge_makes_void_abort_until_it_is_decided(db: TestDb) {
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
    // The charge is inside the processor, holding its key: the outcome is not
    // known yet, so VoidCharge neither voids nor answers.
    arrivals.recv().await.unwrap();
    for _ in 0..3 {
        let s = refused(app.void(&order, &user, "k-held").await, Code::Aborted);
        assert!(s.message().contains("retry"), "{s:?}");
    }
    assert!(app.of_order(&order).await.is_empty());

    gate.open(1);
    let first = first.await.unwrap().unwrap().into_inner();
    let settled = app.void(&order, &user, "k-held").await.unwrap();
    assert!(!settled.voided, "{settled:?}");
    assert_eq!(
        bytes(settled.payment.as_ref().unwrap()),
        bytes(first.payment.as_ref().unwrap())
    );
    assert_eq!(
        settled.payment.unwrap().status(),
        pb::PaymentStatus::Captured
    );
    assert_eq!(app.of_order(&order).await.len(), 1);
}

/// A holder alive past its lease (stuck in the processor): once the lease has
/// run out VoidCharge takes the claim over and voids it, and the holder, when
/// it finally gets its answer, records nothing.
async fn an_overrunning_claim_is_voided_and_its_holder_records_nothing(db: TestDb) {
    let (gate, mut arrivals) = Gate::new();
    let mut app = app_with_lease(db, gate.clone(), 1_000).await;
    let (user, token) = customer();
    let order = new_id();
    let req = charge_req(&order, &user, 800, "pm_card_ok", "k-stuck");
    let stuck = tokio::spawn({
        let mut client = app.client.clone();
        let (req, token) = (req.clone(), token.clone());
        async move { client.charge(bearer(req, &crate::via_order(&token))).await }
    });
    arrivals.recv().await.unwrap();
    refused(app.void(&order, &user, "k-stuck").await, Code::Aborted);

    // ABORTED while the claim is fresh, then voided once the lease ran out.
    let settled = eventually(Duration::from_secs(10), || {
        let mut app_client = app.client.clone();
        let (order, user) = (order.clone(), user.clone());
        async move {
            let token = order_service_token("payment", Uuid::parse_str(&user).unwrap());
            match app_client
                .void_charge(bearer(void_req(&order, &user, "k-stuck"), &token))
                .await
            {
                Err(s) if s.code() == Code::Aborted => None,
                other => Some(other.map(|r| r.into_inner())),
            }
        }
    })
    .await
    .unwrap();
    assert_voided(&settled);

    // The holder's processor call returns; its claim is gone, it records
    // nothing.
    gate.open(1);
    let late = stuck.await.unwrap();
    assert!(late.is_err(), "{late:?}");
    assert!(app.of_order(&order).await.is_empty());
    // And every later Charge with the key is refused before the processor.
    let s = refused(app.charge(req, &token).await, Code::FailedPrecondition);
    assert_eq!(error_info(&s).0, VOIDED);
    assert!(arrivals.try_recv().is_err(), "the processor was asked once");
    assert_voided(&app.void(&order, &user, "k-stuck").await.unwrap());
    assert!(app.of_order(&order).await.is_empty());
}

async fn void_requests_are_validated_and_only_the_order_service_may_void(db: TestDb) {
    let counting = Arc::new(Counting::default());
    let mut app = app_with(db, counting.clone()).await;
    let (user, customer_token) = customer();
    let order = new_id();
    let mut c = app.client.clone();
    let service = || order_service_token("payment", Uuid::parse_str(&user).unwrap());

    for id in bad_ids(&user) {
        invalid(app.void(&id, &user, "k-v").await, &["order_id"]);
        let r = c
            .void_charge(bearer(void_req(&order, &id, "k-v"), &service()))
            .await;
        invalid(r, &["user_id"]);
    }
    for key in bad_keys() {
        invalid(app.void(&order, &user, &key).await, &["idempotency_key"]);
    }
    invalid(
        app.void("", "", "").await,
        &["order_id", "user_id", "idempotency_key"],
    );

    // Only the order service: not the customer, not an admin, even with a
    // valid request; and the service only for the user it acts for.
    for token in [customer_token.clone(), admin_token()] {
        refused(
            c.void_charge(bearer(void_req(&order, &user, "k-v"), &token))
                .await,
            Code::PermissionDenied,
        );
    }
    let someone_else = order_service_token("payment", Uuid::now_v7());
    refused(
        c.void_charge(bearer(void_req(&order, &user, "k-v"), &someone_else))
            .await,
        Code::PermissionDenied,
    );
    refused(
        c.void_charge(crate::anonymous(void_req(&order, &user, "k-v")))
            .await,
        Code::Unauthenticated,
    );

    // None of that settled the key: it can still charge.
    let paid = app
        .charge(
            charge_req(&order, &user, 300, "pm_card_ok", "k-v"),
            &customer_token,
        )
        .await
        .unwrap();
    assert_eq!(paid.payment.unwrap().status(), pb::PaymentStatus::Captured);
    assert_eq!(counting.calls.load(Ordering::SeqCst), 1);
}

/// Charges and voids of one fresh key at once, many rounds: the key's row is the
/// lock, so each round ends either charged (every void that answers gives that
/// payment) or voided (nothing reached the processor, every charge that answers
/// is CHARGE_VOIDED), never both.
async fn racing_charges_and_voids_on_one_key_agree_on_one_outcome(db: TestDb) {
    let counting = Arc::new(Counting::default());
    let mut app = app_with(db, counting.clone()).await;
    let (user, _) = customer();
    let (mut charged_rounds, mut voided_rounds) = (0, 0);
    for round in 0..12 {
        let order = new_id();
        let key = format!("k-race-{round}");
        let calls_before = counting.calls.load(Ordering::SeqCst);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let mut c = app.client.clone();
                let (order, user, key) = (order.clone(), user.clone(), key.clone());
                tokio::spawn(async move {
                    let token = order_service_token("payment", Uuid::parse_str(&user).unwrap());
                    if i % 2 == 0 {
                        let req = charge_req(&order, &user, 600, "pm_card_ok", &key);
                        Err(c.charge(bearer(req, &token)).await.map(|r| r.into_inner()))
                    } else {
                        let req = void_req(&order, &user, &key);
                        Ok(c.void_charge(bearer(req, &token))
                            .await
                            .map(|r| r.into_inner()))
                    }
                })
            })
            .collect();
        let (mut voided, mut paid) = (Vec::new(), Vec::new());
        for answer in join_all(tasks).await {
            match answer.unwrap() {
                Ok(Ok(v)) if v.voided => voided.push(v),
                Ok(Ok(v)) => paid.push(v.payment.unwrap().id),
                Err(Ok(c)) => paid.push(c.payment.unwrap().id),
                Ok(Err(s)) => assert_eq!(s.code(), Code::Aborted, "{s:?}"),
                Err(Err(s)) => {
                    if s.code() == Code::FailedPrecondition {
                        assert_eq!(error_info(&s).0, VOIDED);
                        voided.push(pb::VoidChargeResponse::default());
                    } else {
                        assert_eq!(s.code(), Code::Aborted, "{s:?}");
                    }
                }
            }
        }
        let recorded = app.of_order(&order).await;
        let calls = counting.calls.load(Ordering::SeqCst) - calls_before;
        assert!(
            voided.is_empty() || paid.is_empty(),
            "round {round}: voided {voided:?} and paid {paid:?}"
        );
        if !voided.is_empty() {
            voided_rounds += 1;
            assert!(recorded.is_empty(), "round {round}: {recorded:?}");
            assert_eq!(calls, 0, "round {round}");
        } else {
            // Every answer names the one payment.
            charged_rounds += 1;
            assert_eq!(recorded.len(), 1, "round {round}: {recorded:?}");
            assert!(paid.iter().all(|id| *id == recorded[0].id), "round {round}");
            assert_eq!(calls, 1, "round {round}");
        }
    }
    assert_eq!(charged_rounds + voided_rounds, 12);
    eprintln!("{charged_rounds} rounds charged, {voided_rounds} voided");
}
