//! The repository on its own, on both backends: a saga's saves are fenced by
//! the lease in the database, and each is announced to other replicas.

use std::time::Duration;

use emporium_common::{
    db::{Backend, Db, Notice},
    time::now_micros,
};
use emporium_order::{
    domain::{IdempotencyKey, Line, NewOrder, Order, PaymentMethod, Sku, Step},
    lease::Lease,
    store::{CHANGES, Inserted, MIGRATOR, Store},
};
use emporium_testkit::{TestDb, backend_tests};
use uuid::Uuid;

backend_tests!(a_save_writes_only_under_the_current_lease_and_is_announced);

async fn a_save_writes_only_under_the_current_lease_and_is_announced(db: TestDb) {
    let db = Db::connect(&db.config()).await.unwrap();
    db.migrate(&MIGRATOR).await.unwrap();
    let store = Store::new(db.clone());
    let new = NewOrder {
        user_id: Uuid::now_v7(),
        lines: vec![Line {
            sku: Sku::parse("SKU-1").unwrap(),
            quantity: 2,
        }],
        payment_method: PaymentMethod::parse("pm_card_ok").unwrap(),
        idempotency_key: IdempotencyKey::parse("key").unwrap(),
    };
    let mut order = Order::pending(&new, now_micros());
    let until = now_micros() + 60_000_000;
    let Inserted::New(lease) = store
        .insert(&order, "key", "fp", "me", until)
        .await
        .unwrap()
    else {
        panic!("a fresh order is a duplicate");
    };
    let mut listener = db.listen(CHANGES).await.unwrap();
    assert_eq!(listener.is_some(), db.backend() == Backend::Postgres);

    // A save without items (one statement) and one with them (a transaction).
    for (step, items_changed) in [(Step::Reserve, false), (Step::Charge, true)] {
        order.step = step;
        order.version += 1;
        order.items[0].unit_price = Some(250);
        assert!(
            store
                .save(&order, lease, until, items_changed)
                .await
                .unwrap()
        );
        let stored = store.get(order.id).await.unwrap().unwrap();
        assert_eq!((stored.step, stored.version), (step, order.version));
        let priced = stored.items[0].unit_price;
        assert_eq!(
            priced,
            items_changed.then_some(250),
            "items written only when told"
        );
        if let Some(l) = listener.as_mut() {
            let notice = tokio::time::timeout(Duration::from_secs(10), l.next())
                .await
                .expect("the save was announced")
                .unwrap();
            assert_eq!(notice, Notice::Changed(order.id.to_string()));
        }
    }

    // A run whose lease was taken over writes nothing, either way.
    let stale = Lease {
        epoch: lease.epoch - 1,
        ..lease
    };
    for items_changed in [false, true] {
        let mut late = order.clone();
        late.step = Step::Compensate;
        late.version += 1;
        assert!(
            !store
                .save(&late, stale, until, items_changed)
                .await
                .unwrap()
        );
        let stored = store.get(order.id).await.unwrap().unwrap();
        assert_eq!((stored.step, stored.version), (Step::Charge, order.version));
    }
}
