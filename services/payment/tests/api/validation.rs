//! Invalid input: every bad field is named, nothing is recorded, the processor is
//! never asked.

use std::sync::{Arc, atomic::Ordering};

use emporium_common::rpc::Code;
use emporium_testkit::{TestDb, backend_tests};

use crate::{
    Counting, app_with, charge_req, common_pb, customer, new_id, pb, refund_req, refused,
    violated_fields,
};

backend_tests!(
    charge_names_every_invalid_field,
    refund_names_every_invalid_field
);

async fn charge_names_every_invalid_field(db: TestDb) {
    let processor = Arc::new(Counting::default());
    let mut app = app_with(db, processor.clone()).await;
    let admin = app.admin.clone();
    let (user, _) = customer();
    let order = new_id();
    let money = |currency_code: &str, units| {
        Some(common_pb::Money {
            currency_code: currency_code.into(),
            units,
        })
    };
    let cases = [
        (
            pb::ChargeRequest {
                order_id: "order-1".into(),
                user_id: String::new(),
                amount: None,
                payment_method: "pm_card_visa".into(),
                idempotency_key: String::new(),
            },
            vec![
                "order_id",
                "user_id",
                "amount",
                "payment_method",
                "idempotency_key",
            ],
        ),
        (
            pb::ChargeRequest {
                amount: money("eur", 0),
                ..charge_req(&order, &user, 1, "pm_card_ok", "k")
            },
            vec!["amount.currency_code", "amount.units"],
        ),
        (
            pb::ChargeRequest {
                amount: money("", -5),
                ..charge_req(&order, &user, 1, "pm_card_ok", "k")
            },
            vec!["amount.currency_code", "amount.units"],
        ),
        (
            charge_req(&order, &user, 1, "PM_CARD_OK", "k"),
            vec!["payment_method"],
        ),
        (
            charge_req(&order, &user, 1, "pm_card_ok", &"k".repeat(129)),
            vec!["idempotency_key"],
        ),
        (
            charge_req(&order, &user, 1, "pm_card_ok", "tab\tkey"),
            vec!["idempotency_key"],
        ),
        (
            charge_req(&order, &user, 1, "pm_card_ok", "clé"),
            vec!["idempotency_key"],
        ),
    ];
    for (req, fields) in cases {
        let s = refused(app.charge(req.clone(), &admin).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&s), fields, "{req:?}");
    }
    let s = refused(
        app.charge(charge_req(&order, &user, 1, "pm_card_visa", "k"), &admin)
            .await,
        Code::InvalidArgument,
    );
    assert!(
        s.message()
            .contains("payment_method: unknown payment method"),
        "{s:?}"
    );
    // The longest key is fine.
    app.charge(
        charge_req(&order, &user, 1, "pm_card_ok", &"k".repeat(128)),
        &admin,
    )
    .await
    .unwrap();
    assert_eq!(processor.calls.load(Ordering::SeqCst), 1);
    assert_eq!(app.of_order(&order).await.len(), 1);
}

async fn refund_names_every_invalid_field(db: TestDb) {
    let processor = Arc::new(Counting::default());
    let mut app = app_with(db, processor).await;
    let admin = app.admin.clone();
    let (user, token) = customer();
    let paid = app.paid(&user, &token, 100).await;
    for (req, fields) in [
        (
            pb::RefundRequest {
                payment_id: "nope".into(),
                amount: Some(common_pb::Money {
                    currency_code: "EUR".into(),
                    units: -1,
                }),
                reason: "  ".into(),
                idempotency_key: String::new(),
            },
            vec!["payment_id", "amount.units", "reason", "idempotency_key"],
        ),
        (
            pb::RefundRequest {
                amount: Some(common_pb::Money {
                    currency_code: "E".into(),
                    units: 0,
                }),
                ..refund_req(&paid.id, None, "r")
            },
            vec!["amount.currency_code", "amount.units"],
        ),
        (
            pb::RefundRequest {
                reason: "r".repeat(501),
                ..refund_req(&paid.id, None, "r")
            },
            vec!["reason"],
        ),
    ] {
        let s = refused(app.refund(req.clone(), &admin).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&s), fields, "{req:?}");
    }
    let payment = app.get(&paid.id, &admin).await.unwrap();
    assert!(payment.refunds.is_empty());
}
