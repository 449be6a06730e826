//! The repository and the claim protocol on their own, on both backends: the
//! constraints hold in the database, not only in the code above it.

use std::{sync::Arc, time::Duration};

use emporium_common::{
    auth::{Caller, Role},
    db::{Db, DbFailure, classify},
    time::now_micros,
};
use emporium_payment::{
    domain::{
        Currency, DeclineReason, IdempotencyKey, Money, NewCharge, OrderId, Payment, PaymentId,
        PaymentMethod, PaymentStatus, RefundId, UserId,
    },
    error::Error,
    ledger,
    processor::Simulated,
    service::Payments,
    store::{MIGRATOR, Recorded, RefundState, RefundUnits, RefundWrite, RefundWritten, Store},
};
use emporium_testkit::{TestDb, backend_tests};

backend_tests!(
    one_success_per_order_is_held_by_the_database,
    refunds_are_conditional_updates,
    abandoned_claims_are_taken_over_after_their_lease,
    ledger_sums_per_order_and_currency,
    migrations_are_idempotent,
);

async fn store(db: &TestDb) -> Store {
    let db = Db::connect(&db.config()).await.unwrap();
    db.migrate(&MIGRATOR).await.unwrap();
    Store::new(db)
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s).unwrap()
}

fn money(currency: &str, units: i64) -> Money {
    Money::new(Currency::parse(currency).unwrap(), units)
}

fn payment(order_id: OrderId, units: i64, status: PaymentStatus) -> Payment {
    let now = now_micros();
    Payment {
        id: PaymentId::generate(),
        order_id,
        user_id: UserId::generate(),
        amount: money("EUR", units),
        amount_refunded: 0,
        status,
        decline_reason: (status == PaymentStatus::Declined).then_some(DeclineReason::CardDeclined),
        payment_method: PaymentMethod::CardOk,
        refunds: Vec::new(),
        created_at: now,
        updated_at: now,
    }
}

/// Claims `k` and records `p` under it.
async fn record(s: &Store, p: &Payment, k: &str) -> Recorded {
    assert!(
        s.claim_charge(&key(k), "fp", p.order_id, k, now_micros())
            .await
            .unwrap()
    );
    let r = s.record_charge(p, &key(k), k).await.unwrap();
    if r != Recorded::Done {
        s.release(&key(k), k).await.unwrap();
    }
    r
}

async fn one_success_per_order_is_held_by_the_database(db: TestDb) {
    let s = store(&db).await;
    let order = OrderId::generate();
    // Declines do not count, however many.
    for i in 0..3 {
        let declined = payment(order, 100, PaymentStatus::Declined);
        assert_eq!(
            record(&s, &declined, &format!("d{i}")).await,
            Recorded::Done
        );
    }
    let first = payment(order, 100, PaymentStatus::Captured);
    assert_eq!(record(&s, &first, "c1").await, Recorded::Done);
    let second = payment(order, 100, PaymentStatus::Captured);
    assert_eq!(record(&s, &second, "c2").await, Recorded::OrderAlreadyPaid);
    assert_eq!(s.successful_payment(order).await.unwrap(), Some(first.id));
    // Even SQL that bypasses the store cannot add a second success.
    let raw = sqlx::query(
        "INSERT INTO payments (id, order_id, user_id, currency, amount, amount_refunded, \
           refund_count, status, decline_reason, payment_method, created_at, updated_at) \
         VALUES ($1, $2, $3, 'EUR', 5, 0, 0, 'REFUNDED', NULL, 'pm_card_ok', 1, 1)",
    )
    .bind(PaymentId::generate().to_string())
    .bind(order.to_string())
    .bind(UserId::generate().to_string())
    .execute(s.db().writer())
    .await
    .unwrap_err();
    assert_eq!(classify(&raw), DbFailure::UniqueViolation, "{raw:?}");
    // A refunded total above the amount is refused by the table itself.
    let over = sqlx::query("UPDATE payments SET amount_refunded = amount + 1 WHERE id = $1")
        .bind(first.id.to_string())
        .execute(s.db().writer())
        .await;
    assert!(over.is_err());
    assert_eq!(s.payment(first.id).await.unwrap().unwrap(), first);
}

fn write(payment_id: PaymentId, units: RefundUnits, k: &IdempotencyKey) -> RefundWrite<'_> {
    RefundWrite {
        payment_id,
        refund_id: RefundId::generate(),
        units,
        reason: "why",
        key: k,
        fingerprint: k.as_str(),
        now: now_micros(),
    }
}

async fn refunds_are_conditional_updates(db: TestDb) {
    let s = store(&db).await;
    let paid = payment(OrderId::generate(), 1000, PaymentStatus::Captured);
    record(&s, &paid, "c").await;
    let [r0, r1, r2, r3, r4] = ["r0", "r1", "r2", "r3", "r4"].map(key);
    let id = paid.id;
    assert_eq!(
        s.refund(&write(id, RefundUnits::Exact(1001), &r0))
            .await
            .unwrap(),
        RefundWritten::Refused(RefundState {
            status: PaymentStatus::Captured,
            amount: 1000,
            amount_refunded: 0,
        })
    );
    assert_eq!(
        s.refund(&write(id, RefundUnits::Exact(400), &r1))
            .await
            .unwrap(),
        RefundWritten::Done { seq: 1 }
    );
    assert_eq!(
        s.refund(&write(id, RefundUnits::Exact(400), &r1))
            .await
            .unwrap(),
        RefundWritten::KeyTaken
    );
    assert_eq!(
        s.refund(&write(id, RefundUnits::Rest, &r2)).await.unwrap(),
        RefundWritten::Done { seq: 2 }
    );
    let after = s.payment(id).await.unwrap().unwrap();
    assert_eq!(
        (after.status, after.amount_refunded, after.refunds.len()),
        (PaymentStatus::Refunded, 1000, 2)
    );
    assert_eq!(after.refunds[1].amount, money("EUR", 600));
    assert!(matches!(
        s.refund(&write(id, RefundUnits::Rest, &r3)).await.unwrap(),
        RefundWritten::Refused(RefundState {
            status: PaymentStatus::Refunded,
            ..
        })
    ));
    assert_eq!(
        s.refund(&write(PaymentId::generate(), RefundUnits::Rest, &r4))
            .await
            .unwrap(),
        RefundWritten::NoPayment
    );
    // Refused writes left their keys unused.
    assert_eq!(
        s.refund(&write(id, RefundUnits::Exact(1), &r0))
            .await
            .unwrap(),
        RefundWritten::Refused(RefundState {
            status: PaymentStatus::Refunded,
            amount: 1000,
            amount_refunded: 1000,
        })
    );
}

async fn abandoned_claims_are_taken_over_after_their_lease(db: TestDb) {
    let s = store(&db).await;
    let payments = Payments::new(s.clone(), Arc::new(Simulated), Duration::from_secs(5));
    // The order service, acting for an admin (who may pay for anyone).
    let admin = Caller {
        user_id: uuid::Uuid::now_v7(),
        roles: vec![Role::Admin],
        service: Some("order".into()),
        certificate: None,
        valid_until: u64::MAX,
    };
    let charge = |order_id, k: &str| NewCharge {
        order_id,
        user_id: UserId::generate(),
        amount: money("EUR", 100),
        payment_method: PaymentMethod::CardOk,
        idempotency_key: key(k),
    };
    let long_ago = now_micros() - 60_000_000;

    // A live claim on the key: the retry is told to come back.
    let live = charge(OrderId::generate(), "live");
    assert!(
        s.claim_charge(
            &live.idempotency_key,
            &live.fingerprint(),
            live.order_id,
            "holder",
            now_micros()
        )
        .await
        .unwrap()
    );
    let err = payments.charge(&admin, live.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Aborted(_)), "{err:?}");

    // A dead claim on the same key: the retry takes it over and decides.
    let dead = charge(OrderId::generate(), "dead");
    assert!(
        s.claim_charge(
            &dead.idempotency_key,
            &dead.fingerprint(),
            dead.order_id,
            "ghost",
            long_ago
        )
        .await
        .unwrap()
    );
    let paid = payments.charge(&admin, dead.clone()).await.unwrap();
    assert_eq!(paid.status, PaymentStatus::Captured);
    // The ghost, were it still running, can record nothing.
    let ghost = payment(dead.order_id, 100, PaymentStatus::Captured);
    assert_eq!(
        s.record_charge(&ghost, &dead.idempotency_key, "ghost")
            .await
            .unwrap(),
        Recorded::ClaimLost
    );
    assert_eq!(s.payment(ghost.id).await.unwrap(), None);

    // A dead claim of another key for the order no longer blocks it.
    let order = OrderId::generate();
    let stuck = charge(order, "stuck");
    assert!(
        s.claim_charge(
            &stuck.idempotency_key,
            &stuck.fingerprint(),
            order,
            "ghost",
            long_ago
        )
        .await
        .unwrap()
    );
    let fresh = charge(order, "fresh");
    assert_eq!(
        payments.charge(&admin, fresh).await.unwrap().status,
        PaymentStatus::Captured
    );
    // …while a live one does.
    let busy = OrderId::generate();
    let holder = charge(busy, "holder");
    assert!(
        s.claim_charge(
            &holder.idempotency_key,
            &holder.fingerprint(),
            busy,
            "h",
            now_micros()
        )
        .await
        .unwrap()
    );
    let err = payments
        .charge(&admin, charge(busy, "other"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Aborted(_)), "{err:?}");
    assert_eq!(s.successful_payment(busy).await.unwrap(), None);
}

async fn ledger_sums_per_order_and_currency(db: TestDb) {
    let s = store(&db).await;
    let a = OrderId::generate();
    let b = OrderId::generate();
    record(&s, &payment(a, 700, PaymentStatus::Declined), "a1").await;
    let paid_a = payment(a, 700, PaymentStatus::Captured);
    record(&s, &paid_a, "a2").await;
    let paid_b = Payment {
        amount: money("USD", 50),
        ..payment(b, 50, PaymentStatus::Captured)
    };
    record(&s, &paid_b, "b1").await;
    let ra = key("ra");
    s.refund(&write(paid_a.id, RefundUnits::Exact(200), &ra))
        .await
        .unwrap();

    let mut ledger = ledger(s.db()).await.unwrap();
    ledger.sort_by_key(|l| l.order_id != a.to_string());
    assert_eq!(ledger.len(), 2);
    let (la, lb) = (&ledger[0], &ledger[1]);
    assert_eq!(
        (
            la.successful_charges,
            la.declined_charges,
            la.captured,
            la.refunded,
            la.net()
        ),
        (1, 1, 700, 200, 500)
    );
    assert_eq!((lb.currency.as_str(), lb.net()), ("USD", 50));
    assert!(la.holds() && lb.holds());
}

async fn migrations_are_idempotent(db: TestDb) {
    let s = store(&db).await;
    s.db().migrate(&MIGRATOR).await.unwrap();
    s.db().ping().await.unwrap();
}
