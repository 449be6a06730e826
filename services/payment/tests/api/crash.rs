//! Crashes with real processes: the payment binary is aborted inside a charge
//! (the `payment.crash_after` failpoint, only in test builds), then started
//! again without it over the same database. The caller, who never got an
//! answer, settles the key with VoidCharge: the money is found, never taken
//! a second time, and an abandoned claim is voided instead of charged.

use std::time::Duration;

use emporium_common::rpc::{Channel, Code};
use emporium_testkit::{
    TestDb, admin_token, auth_config, backend_tests, bearer, eventually, order_service_token,
    process::Process, refused,
};
use pb::payment_service_client::PaymentServiceClient;
use uuid::Uuid;

use crate::{bytes, charge_req, error_info, new_id, pb, void_req};

const BIN: &str = env!("CARGO_BIN_EXE_emporium-payment");

backend_tests!(
    killed_after_committing_a_capture_void_finds_the_payment,
    killed_after_claiming_the_stale_claim_is_voided,
);

/// The payment binary over `db_url`, aborting at `crash_after`.
fn start(db_url: &str, crash_after: Option<&str>) -> Process {
    let mut vars = vec![
        ("EMPORIUM_DATABASE__URL".to_owned(), db_url.to_owned()),
        (
            "EMPORIUM_AUTH__JWT_SECRET".to_owned(),
            auth_config().jwt_secret.expose().to_owned(),
        ),
        // The shortest lease the service accepts, so a dead claim runs out soon.
        (
            "EMPORIUM_PAYMENT__CLAIM_LEASE_MS".to_owned(),
            "1000".to_owned(),
        ),
    ];
    if let Some(point) = crash_after {
        vars.push(("EMPORIUM_PAYMENT__CRASH_AFTER".to_owned(), point.to_owned()));
    }
    Process::spawn(BIN, vars)
}

async fn client(p: &Process) -> PaymentServiceClient<Channel> {
    PaymentServiceClient::new(p.channel().await)
}

/// The order service's token for one call, acting for `user`.
fn service(user: &str) -> String {
    order_service_token("payment", Uuid::parse_str(user).unwrap())
}

async fn payments_of(c: &mut PaymentServiceClient<Channel>, order: &str) -> Vec<pb::Payment> {
    c.list_payments(bearer(
        pb::ListPaymentsRequest {
            order_id: order.into(),
            ..Default::default()
        },
        &admin_token(),
    ))
    .await
    .unwrap()
    .into_inner()
    .payments
}

/// Aborts a process mid-charge: the caller gets no answer.
async fn charge_and_die(p: &mut Process, req: pb::ChargeRequest) {
    let answer = client(p)
        .await
        .charge(bearer(req.clone(), &service(&req.user_id)))
        .await;
    assert!(
        answer.is_err(),
        "the process must die mid-charge: {answer:?}"
    );
    let died = p.exit(Duration::from_secs(20)).await;
    assert!(!died.success(), "{died:?}");
}

async fn killed_after_committing_a_capture_void_finds_the_payment(db: TestDb) {
    let (order, user) = (new_id(), Uuid::now_v7().to_string());
    let req = charge_req(&order, &user, 2_500, "pm_card_ok", "k-crash");
    let mut crashing = start(db.url(), Some("charge_committed"));
    charge_and_die(&mut crashing, req.clone()).await;

    let restarted = start(db.url(), None);
    let mut c = client(&restarted).await;
    // The caller does not know: it settles the key without charging.
    let settled = c
        .void_charge(bearer(void_req(&order, &user, "k-crash"), &service(&user)))
        .await
        .unwrap()
        .into_inner();
    assert!(!settled.voided, "{settled:?}");
    let payment = settled.payment.clone().unwrap();
    assert_eq!(payment.status(), pb::PaymentStatus::Captured);
    assert_eq!(payment.amount.as_ref().unwrap().units, 2_500);
    // Replays agree and charge nothing more.
    let again = c
        .void_charge(bearer(void_req(&order, &user, "k-crash"), &service(&user)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bytes(&again), bytes(&settled));
    let replay = c
        .charge(bearer(req, &service(&user)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bytes(replay.payment.as_ref().unwrap()), bytes(&payment));
    let recorded = payments_of(&mut c, &order).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].id, payment.id);
}

async fn killed_after_claiming_the_stale_claim_is_voided(db: TestDb) {
    let (order, user) = (new_id(), Uuid::now_v7().to_string());
    let req = charge_req(&order, &user, 2_500, "pm_card_ok", "k-claimed");
    let mut crashing = start(db.url(), Some("charge_claimed"));
    charge_and_die(&mut crashing, req.clone()).await;

    let restarted = start(db.url(), None);
    let mut c = client(&restarted).await;
    // The dead holder's claim blocks the key until its lease runs out; then
    // VoidCharge takes it over and voids it.
    let settled = eventually(Duration::from_secs(15), || {
        let mut c = c.clone();
        let (order, user) = (order.clone(), user.clone());
        async move {
            match c
                .void_charge(bearer(
                    void_req(&order, &user, "k-claimed"),
                    &service(&user),
                ))
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
    assert!(settled.payment.is_none(), "{settled:?}");

    // A late Charge with the key cannot capture.
    let s = refused(
        c.charge(bearer(req, &service(&user))).await,
        Code::FailedPrecondition,
    );
    assert_eq!(error_info(&s).0, "CHARGE_VOIDED");
    assert!(payments_of(&mut c, &order).await.is_empty());
}

/// The crash tests need the failpoint in the binary: `cargo test` builds it
/// with the `testing` feature, which emporium-testkit (a dev-dependency) turns
/// on. A release build has no such setting.
#[test]
fn the_test_build_of_the_binary_has_the_crash_failpoint() {
    let out = emporium_testkit::process::command(
        BIN,
        [("EMPORIUM_PAYMENT__CRASH_AFTER", "charge_committed")],
    )
    .arg("--print-config")
    .output()
    .expect("run emporium-payment --print-config");
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON config");
    assert_eq!(v["payment"]["crash_after"], "charge_committed", "{v}");
}
