//! A COMMIT that fails: the service cannot know whether it took effect, so the
//! answer is UNKNOWN ("retry with the same key"), never UNAVAILABLE ("nothing
//! happened"). PostgreSQL only: a deferred constraint trigger fails the COMMIT
//! itself on demand (here with SQLSTATE 40001, an error that is UNAVAILABLE
//! anywhere else); SQLite has no deferred triggers.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use emporium_common::{
    db::Db,
    rpc::{Code, StatusExt as _},
};
use emporium_testkit::{TestDb, eventually, refused};

use crate::{Counting, app_with_lease, charge_req, customer, error_info, new_id, refund_req};

/// Makes every COMMIT that inserted into `table` fail, until [`heal`].
async fn fail_commits_of(db: &Db, table: &str) {
    sqlx::query(
        "CREATE OR REPLACE FUNCTION fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'injected commit failure' USING ERRCODE = '40001'; END $$",
    )
    .execute(db.writer())
    .await
    .unwrap();
    let trigger = match table {
        "payments" => {
            "CREATE CONSTRAINT TRIGGER fail_commit AFTER INSERT ON payments \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_commit()"
        }
        _ => {
            "CREATE CONSTRAINT TRIGGER fail_commit AFTER INSERT ON refunds \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_commit()"
        }
    };
    sqlx::query(trigger).execute(db.writer()).await.unwrap();
}

async fn heal(db: &Db, table: &str) {
    let drop = match table {
        "payments" => "DROP TRIGGER fail_commit ON payments",
        _ => "DROP TRIGGER fail_commit ON refunds",
    };
    sqlx::query(drop).execute(db.writer()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_answers_unknown_and_the_key_settles_afterwards() {
    let Some(db) = TestDb::postgres() else { return };
    let counting = Arc::new(Counting::default());
    let mut app = app_with_lease(db, counting.clone(), 1_000).await;
    let (user, token) = customer();

    // A charge whose record's COMMIT fails: UNKNOWN, not UNAVAILABLE.
    let order = new_id();
    let req = charge_req(&order, &user, 1_200, "pm_card_ok", "k-commit");
    fail_commits_of(&app.db, "payments").await;
    let s = refused(app.charge(req.clone(), &token).await, Code::Unknown);
    assert!(
        s.message().contains("retry with the same idempotency key"),
        "{s:?}"
    );
    assert!(s.get_details_error_info().is_none(), "{s:?}");
    heal(&app.db, "payments").await;
    // Here the COMMIT rolled back, and the claim is still held by a holder
    // that gave up: VoidCharge answers ABORTED until the lease runs out, then
    // voids the key, and the key never charges.
    let settled = eventually(Duration::from_secs(10), || {
        let mut app_client = app.client.clone();
        let (order, user) = (order.clone(), user.clone());
        async move {
            let token = emporium_testkit::order_service_token(
                "payment",
                uuid::Uuid::parse_str(&user).unwrap(),
            );
            let req = crate::void_req(&order, &user, "k-commit");
            match app_client
                .void_charge(emporium_testkit::bearer(req, &token))
                .await
            {
                Err(s) if s.code() == Code::Aborted => None,
                other => Some(other.map(|r| r.into_inner())),
            }
        }
    })
    .await
    .unwrap();
    assert!(settled.voided, "{settled:?}");
    let s = refused(app.charge(req, &token).await, Code::FailedPrecondition);
    assert_eq!(error_info(&s).0, "CHARGE_VOIDED");
    assert!(app.of_order(&order).await.is_empty());
    assert_eq!(counting.calls.load(Ordering::SeqCst), 1);

    // A refund whose COMMIT fails: UNKNOWN; the retry with the same key
    // refunds (once).
    let paid = app.paid(&user, &token, 1_000).await;
    fail_commits_of(&app.db, "refunds").await;
    let s = refused(
        app.refund(refund_req(&paid.id, Some(400), "r-commit"), &token)
            .await,
        Code::Unknown,
    );
    assert!(
        s.message().contains("retry with the same idempotency key"),
        "{s:?}"
    );
    heal(&app.db, "refunds").await;
    let refunded = app
        .refund(refund_req(&paid.id, Some(400), "r-commit"), &token)
        .await
        .unwrap();
    assert_eq!(
        refunded.payment.unwrap().amount_refunded.unwrap().units,
        400
    );
    let again = app
        .refund(refund_req(&paid.id, Some(400), "r-commit"), &token)
        .await
        .unwrap();
    assert_eq!(again.refund.unwrap().id, refunded.refund.unwrap().id);
    app.ledger().await;
}
