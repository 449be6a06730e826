//! The saga against scripted fake peers and a real SQLite store: every step ×
//! every outcome a port can give, including "unknown, then down".
//!
//! A fake answers from a script (the last entry repeats) and logs each call,
//! so a test states what the peers say and asserts what the saga did with it:
//! the order's end state, its reason and detail, and the calls it made.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use emporium_common::{
    config::{DatabaseConfig, Secret},
    db::Db,
    rpc::async_trait,
    time::now_micros,
};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{Saga, Timing};
use crate::{
    domain::{
        CancelReason, Currency, IdempotencyKey, Line, NewOrder, Order, PaymentMethod, Sku, Status,
        Step,
    },
    error::Error,
    lease::{Lease, Leases},
    ports::{
        Charge, ChargeRequest, Commit, Decline, Failure, Inventory, Payments, Peers, Reservation,
        Reserve, ReservedLine, UserStanding, Users, Void,
    },
    store::{Inserted, Store},
};

/// What one port answers, call after call; the last answer repeats.
struct Script<T>(Mutex<VecDeque<Result<T, Failure>>>);

impl<T: Clone> Script<T> {
    fn new(answers: impl IntoIterator<Item = Result<T, Failure>>) -> Self {
        Self(Mutex::new(answers.into_iter().collect()))
    }

    fn set(&self, answers: impl IntoIterator<Item = Result<T, Failure>>) {
        *self.0.lock().unwrap() = answers.into_iter().collect();
    }

    fn next(&self) -> Result<T, Failure> {
        let mut q = self.0.lock().unwrap();
        if q.len() > 1 {
            q.pop_front().unwrap()
        } else {
            q.front()
                .cloned()
                .expect("a script has at least one answer")
        }
    }
}

/// The three peers, scripted.
struct Fake {
    user: Script<UserStanding>,
    reserve: Script<Reserve>,
    commit: Script<Commit>,
    release: Script<()>,
    charge: Script<Charge>,
    void: Script<Void>,
    refund: Script<()>,
    /// Panics instead of answering the user check (a bug in a step).
    panic_on_user: Mutex<bool>,
    calls: Mutex<Vec<&'static str>>,
}

const PAYMENT: &str = "pay-1";

fn reservation() -> Reservation {
    Reservation {
        lines: vec![ReservedLine {
            sku: "SKU-1".into(),
            product_id: "prod-1".into(),
            name: "Widget".into(),
            unit_price: 250,
        }],
        currency: Currency::parse("EUR").unwrap(),
        total: 500,
    }
}

impl Default for Fake {
    /// Every peer says yes.
    fn default() -> Self {
        Self {
            user: Script::new([Ok(UserStanding::Active)]),
            reserve: Script::new([Ok(Reserve::Reserved(reservation()))]),
            commit: Script::new([Ok(Commit::Committed)]),
            release: Script::new([Ok(())]),
            charge: Script::new([Ok(Charge::Captured(PAYMENT.into()))]),
            void: Script::new([Ok(Void::Voided)]),
            refund: Script::new([Ok(())]),
            panic_on_user: Mutex::new(false),
            calls: Mutex::new(Vec::new()),
        }
    }
}

impl Fake {
    fn log(&self, call: &'static str) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().clone()
    }

    fn count(&self, call: &str) -> usize {
        self.calls().iter().filter(|c| **c == call).count()
    }
}

#[async_trait]
impl Users for Fake {
    async fn standing(&self, _: Uuid, _: Duration) -> Result<UserStanding, Failure> {
        self.log("user");
        assert!(!*self.panic_on_user.lock().unwrap(), "a bug in a step");
        self.user.next()
    }
}

#[async_trait]
impl Inventory for Fake {
    async fn reserve(
        &self,
        _: Uuid,
        _: Uuid,
        _: &[(String, i64)],
        _: Duration,
    ) -> Result<Reserve, Failure> {
        self.log("reserve");
        self.reserve.next()
    }
    async fn commit(&self, _: Uuid, _: Uuid, _: Duration) -> Result<Commit, Failure> {
        self.log("commit");
        self.commit.next()
    }
    async fn release(&self, _: Uuid, _: Uuid, _: Duration) -> Result<(), Failure> {
        self.log("release");
        self.release.next()
    }
}

#[async_trait]
impl Payments for Fake {
    async fn charge(&self, _: &ChargeRequest, _: Duration) -> Result<Charge, Failure> {
        self.log("charge");
        self.charge.next()
    }
    async fn void(&self, _: Uuid, _: Uuid, _: &str, _: Duration) -> Result<Void, Failure> {
        self.log("void");
        self.void.next()
    }
    async fn refund(&self, _: Uuid, _: &str, _: &str, _: &str, _: Duration) -> Result<(), Failure> {
        self.log("refund");
        self.refund.next()
    }
}

/// What the peers' failures say; it must never reach the customer.
const PEER_TEXT: &str = "peer-internal-detail";

fn down() -> Failure {
    Failure::Unavailable(PEER_TEXT.into())
}

fn unknown() -> Failure {
    Failure::Unknown(PEER_TEXT.into())
}

fn rejected() -> Failure {
    Failure::Rejected(PEER_TEXT.into())
}

/// A saga over a fresh SQLite store and the fake peers.
struct Harness {
    _dir: tempfile::TempDir,
    db: Db,
    store: Store,
    saga: Saga,
    fake: Arc<Fake>,
}

impl Harness {
    /// A harness whose forward steps give up at once when a peer does not answer.
    async fn new(fake: Fake) -> Self {
        Self::with(
            fake,
            Duration::from_millis(1),
            Duration::from_millis(5),
            Duration::ZERO,
        )
        .await
    }

    /// A harness whose paused orders are due again after `first_pause`,
    /// doubling up to `max_pause`.
    async fn with_pauses(fake: Fake, first_pause: Duration, max_pause: Duration) -> Self {
        Self::with(fake, first_pause, max_pause, Duration::ZERO).await
    }

    /// A harness whose forward steps wait `patience` for peers that do not answer.
    async fn with(
        fake: Fake,
        first_pause: Duration,
        max_pause: Duration,
        patience: Duration,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&DatabaseConfig {
            url: Secret::new(format!("sqlite://{}/order.db", dir.path().display())),
            max_connections: 4,
            acquire_timeout_ms: 5_000,
        })
        .await
        .unwrap();
        db.migrate(&crate::store::MIGRATOR).await.unwrap();
        let fake = Arc::new(fake);
        let peers = Peers {
            users: fake.clone(),
            inventory: fake.clone(),
            payments: fake.clone(),
        };
        let store = Store::new(db.clone());
        let saga = Saga::new(
            store.clone(),
            Leases::new(db.clone(), Duration::from_secs(30), first_pause, max_pause),
            peers,
            Timing {
                retry_budget: Duration::from_millis(60),
                patience,
                #[cfg(feature = "testing")]
                crash_at: None,
            },
            broadcast::channel(64).0,
        );
        Self {
            _dir: dir,
            db,
            store,
            saga,
            fake,
        }
    }

    /// Stores a new order holding its first lease.
    async fn place(&self) -> (Order, Lease) {
        let new = NewOrder {
            user_id: Uuid::now_v7(),
            lines: vec![Line {
                sku: Sku::parse("SKU-1").unwrap(),
                quantity: 2,
            }],
            payment_method: PaymentMethod::parse("pm_card_ok").unwrap(),
            idempotency_key: IdempotencyKey::parse("key").unwrap(),
        };
        let order = Order::pending(&new, now_micros());
        let leases = self.saga.leases();
        let Inserted::New(lease) = self
            .store
            .insert(&order, "key", "fp", leases.owner(), leases.until())
            .await
            .unwrap()
        else {
            panic!("fresh order is a duplicate");
        };
        (order, lease)
    }

    /// Places an order and runs its saga once, to its end or its pause.
    async fn run(&self) -> (Result<Order, Error>, Order) {
        let (order, lease) = self.place().await;
        let id = order.id;
        let guard = self.saga.begin(id).unwrap();
        let result = self.saga.spawn(order, lease, guard).await.unwrap();
        (result, self.stored(id).await)
    }

    async fn stored(&self, id: Uuid) -> Order {
        self.store.get(id).await.unwrap().unwrap()
    }

    /// Makes a paused order due now and sweeps until it is done.
    async fn resume(&self, id: Uuid) -> Order {
        for _ in 0..50 {
            sqlx::query("UPDATE orders SET lease_until = 0 WHERE id = $1 AND step <> 'done'")
                .bind(id.to_string())
                .execute(self.db.writer())
                .await
                .unwrap();
            self.saga.sweep().await.unwrap();
            while self.saga.is_running(id) {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let order = self.stored(id).await;
            if order.step == Step::Done {
                return order;
            }
        }
        panic!("order {id} never finished");
    }
}

/// The order ended CANCELLED with `reason`, its detail our own words.
#[track_caller]
fn cancelled(order: &Order, reason: CancelReason) {
    assert_eq!(order.status, Status::Cancelled, "{order:?}");
    assert_eq!(order.step, Step::Done);
    assert_eq!(order.cancel_reason, Some(reason), "{order:?}");
    let detail = order.cancel_detail.as_deref().unwrap_or_default();
    assert!(
        !detail.is_empty() && !detail.contains(PEER_TEXT),
        "{detail}"
    );
    assert!(!order.charge_unknown, "cancelled with an unsettled charge");
}

/// The run paused with the order still PENDING at `step`.
#[track_caller]
fn paused(result: &Result<Order, Error>, order: &Order, step: Step) {
    assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
    assert_eq!(order.status, Status::Pending, "{order:?}");
    assert_eq!(order.step, step, "{order:?}");
}

#[tokio::test]
async fn every_peer_saying_yes_confirms_the_order() {
    let h = Harness::new(Fake::default()).await;
    let (result, order) = h.run().await;
    assert_eq!(result.unwrap().status, Status::Confirmed);
    assert_eq!(order.status, Status::Confirmed);
    assert_eq!(order.payment_id.as_deref(), Some(PAYMENT));
    assert_eq!(order.total, Some(500));
    assert_eq!(order.items[0].unit_price, Some(250));
    assert_eq!(h.fake.calls(), ["user", "reserve", "charge", "commit"]);
}

#[tokio::test]
async fn check_user_outcomes() {
    for (answer, reason) in [
        (Ok(UserStanding::Inactive), CancelReason::UserInactive),
        (Ok(UserStanding::Missing), CancelReason::UserNotFound),
        (Err(down()), CancelReason::InternalError),
        (Err(unknown()), CancelReason::InternalError),
        (Err(rejected()), CancelReason::InternalError),
    ] {
        let fake = Fake::default();
        fake.user.set([answer.clone()]);
        let h = Harness::new(fake).await;
        let (_, order) = h.run().await;
        cancelled(&order, reason);
        assert_eq!(h.fake.count("reserve"), 0, "{answer:?}");
        assert_eq!(h.fake.count("charge"), 0, "{answer:?}");
        // Compensation releases even what was never reserved: idempotent,
        // and it fences off a late reservation.
        assert_eq!(h.fake.count("release"), 1, "{answer:?}");
        // One call per step: retrying is the peer channel's job.
        assert_eq!(h.fake.count("user"), 1, "{answer:?}");
    }
}

#[tokio::test]
async fn reserve_outcomes() {
    for (answer, reason, detail) in [
        (
            Ok(Reserve::OutOfStock(vec!["SKU-1".into(), "SKU-2".into()])),
            CancelReason::OutOfStock,
            "not enough stock: SKU-1, SKU-2",
        ),
        (
            Ok(Reserve::UnknownProducts(vec!["SKU-9".into()])),
            CancelReason::ProductNotFound,
            "no such product: SKU-9",
        ),
        (
            Ok(Reserve::Released),
            CancelReason::InternalError,
            "the stock was released before the reservation completed",
        ),
        (
            Err(down()),
            CancelReason::InternalError,
            "the inventory service could not reserve the stock",
        ),
        (
            Err(unknown()),
            CancelReason::InternalError,
            "the inventory service could not reserve the stock",
        ),
        (
            Err(rejected()),
            CancelReason::InternalError,
            "the inventory service could not reserve the stock",
        ),
    ] {
        let fake = Fake::default();
        fake.reserve.set([answer.clone()]);
        let h = Harness::new(fake).await;
        let (_, order) = h.run().await;
        cancelled(&order, reason);
        assert_eq!(order.cancel_detail.as_deref(), Some(detail));
        assert_eq!(h.fake.count("charge"), 0, "{answer:?}");
        assert_eq!(h.fake.count("void"), 0, "{answer:?}");
        // An unknown reservation may hold stock: the release settles it.
        assert_eq!(h.fake.count("release"), 1, "{answer:?}");
    }
}

#[tokio::test]
async fn definitive_charge_answers_settle_the_charge() {
    for (answer, reason, detail) in [
        (
            Charge::Declined(Decline::InsufficientFunds),
            CancelReason::PaymentDeclined,
            "the card was declined for insufficient funds",
        ),
        (
            Charge::Declined(Decline::CardDeclined),
            CancelReason::PaymentDeclined,
            "the card was declined",
        ),
        (
            Charge::MethodInvalid,
            CancelReason::PaymentMethodInvalid,
            "the payment method is not one the processor accepts",
        ),
        (
            Charge::Voided,
            CancelReason::PaymentFailed,
            "the charge was voided before it ran",
        ),
    ] {
        let fake = Fake::default();
        fake.charge.set([Ok(answer.clone())]);
        let h = Harness::new(fake).await;
        let (_, order) = h.run().await;
        cancelled(&order, reason);
        assert_eq!(order.cancel_detail.as_deref(), Some(detail));
        assert_eq!(order.payment_id, None);
        // Nothing can be held: no void, no refund, the stock goes back.
        assert_eq!(
            h.fake.calls(),
            ["user", "reserve", "charge", "release"],
            "{answer:?}"
        );
    }
}

#[tokio::test]
async fn a_charge_without_an_answer_is_settled_by_void_never_by_a_new_charge() {
    for (failure, settled, refunds) in [
        (down(), Void::Voided, 0),
        (unknown(), Void::Voided, 0),
        (rejected(), Void::Voided, 0),
        // The lost reply had captured: the void finds it and it is refunded.
        (unknown(), Void::Captured("pay-lost".into()), 1),
        (unknown(), Void::Declined, 0),
    ] {
        let fake = Fake::default();
        fake.charge.set([Err(failure.clone())]);
        fake.void.set([Ok(settled.clone())]);
        let h = Harness::new(fake).await;
        let (_, order) = h.run().await;
        cancelled(&order, CancelReason::PaymentFailed);
        let case = format!("{failure:?} then {settled:?}");
        assert_eq!(h.fake.count("void"), 1, "{case}");
        assert_eq!(h.fake.count("refund"), refunds, "{case}");
        assert_eq!(h.fake.count("release"), 1, "{case}");
        // Compensation never charges: every charge call is the forward step's.
        let calls = h.fake.calls();
        let first_void = calls.iter().position(|c| *c == "void").unwrap();
        assert!(
            !calls[first_void..].contains(&"charge"),
            "{case}: {calls:?}"
        );
        if let Void::Captured(id) = settled {
            assert_eq!(order.payment_id.as_deref(), Some(id.as_str()));
        }
    }
}

#[tokio::test]
async fn an_unknown_charge_with_payment_then_down_stays_pending_until_payment_answers() {
    let fake = Fake::default();
    fake.charge.set([Err(unknown()), Err(down())]);
    fake.void.set([Err(down())]);
    let h = Harness::new(fake).await;
    let (result, order) = h.run().await;
    let charges = h.fake.count("charge");
    // Money may be held and nobody can say: not cancelled, not released.
    paused(&result, &order, Step::Compensate);
    assert!(order.charge_unknown);
    assert_eq!(order.cancel_reason, Some(CancelReason::PaymentFailed));
    assert_eq!(h.fake.count("release"), 0);
    // Still down at the next run: still pending.
    let id = order.id;
    h.db_make_due(id).await;
    assert_eq!(h.saga.sweep().await.unwrap(), 1);
    while h.saga.is_running(id) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let order = h.stored(id).await;
    assert_eq!(order.status, Status::Pending);
    assert!(order.charge_unknown);
    // Payment is back and says the lost charge captured: refund, release.
    h.fake.void.set([Ok(Void::Captured("pay-lost".into()))]);
    let order = h.resume(id).await;
    cancelled(&order, CancelReason::PaymentFailed);
    assert_eq!(order.payment_id.as_deref(), Some("pay-lost"));
    assert_eq!(h.fake.count("refund"), 1);
    assert_eq!(h.fake.count("release"), 1);
    assert_eq!(
        h.fake.count("charge"),
        charges,
        "compensation sent a charge"
    );
}

#[tokio::test]
async fn a_young_order_waits_for_a_peer_that_does_not_answer_and_an_old_one_gives_up() {
    for failure in [down(), unknown()] {
        let fake = Fake::default();
        fake.user.set([Err(failure.clone())]);
        let h = Harness::with(
            fake,
            Duration::from_millis(1),
            Duration::from_millis(5),
            Duration::from_secs(60),
        )
        .await;
        let (result, order) = h.run().await;
        // Young: it pauses, nothing is cancelled or released.
        paused(&result, &order, Step::CheckUser);
        assert_eq!(h.fake.count("release"), 0, "{failure:?}");
        // The peer is back: the order goes on.
        h.fake.user.set([Ok(UserStanding::Active)]);
        assert_eq!(
            h.resume(order.id).await.status,
            Status::Confirmed,
            "{failure:?}"
        );
    }
    // A refusal cancels at once, however young the order.
    let fake = Fake::default();
    fake.reserve.set([Err(rejected())]);
    let h = Harness::with(
        fake,
        Duration::from_millis(1),
        Duration::from_millis(5),
        Duration::from_secs(60),
    )
    .await;
    cancelled(&h.run().await.1, CancelReason::InternalError);
}

#[tokio::test]
async fn commit_outcomes() {
    // Nothing held to commit: the money goes back.
    for answer in [Ok(Commit::NotHeld), Err(rejected())] {
        let fake = Fake::default();
        fake.commit.set([answer.clone()]);
        let h = Harness::new(fake).await;
        let (_, order) = h.run().await;
        cancelled(&order, CancelReason::InternalError);
        assert_eq!(h.fake.count("refund"), 1, "{answer:?}");
        assert_eq!(h.fake.count("release"), 1, "{answer:?}");
    }
    // Paid and reserved, inventory away: the order waits for it, then confirms.
    for failure in [down(), unknown()] {
        let fake = Fake::default();
        fake.commit.set([Err(failure.clone())]);
        let h = Harness::new(fake).await;
        let (result, order) = h.run().await;
        paused(&result, &order, Step::Commit);
        assert_eq!(h.fake.count("refund"), 0, "{failure:?}");
        h.fake.commit.set([Ok(Commit::Committed)]);
        let order = h.resume(order.id).await;
        assert_eq!(order.status, Status::Confirmed, "{failure:?}");
        assert_eq!(h.fake.count("refund"), 0, "{failure:?}");
    }
}

#[tokio::test]
async fn compensation_waits_for_refund_and_release() {
    // A commit that finds nothing held: the payment is refunded, the stock released.
    for (refund, release) in [
        (Err(down()), Ok(())),
        (Err(unknown()), Ok(())),
        (Err(rejected()), Ok(())),
        (Ok(()), Err(down())),
        (Ok(()), Err(unknown())),
    ] {
        let case = format!("refund {refund:?}, release {release:?}");
        let fake = Fake::default();
        fake.commit.set([Ok(Commit::NotHeld)]);
        fake.refund.set([refund]);
        fake.release.set([release]);
        let h = Harness::new(fake).await;
        let (result, order) = h.run().await;
        paused(&result, &order, Step::Compensate);
        h.fake.refund.set([Ok(())]);
        h.fake.release.set([Ok(())]);
        let order = h.resume(order.id).await;
        cancelled(&order, CancelReason::InternalError);
        assert!(h.fake.count("refund") >= 1, "{case}");
        assert_eq!(h.fake.count("charge"), 1, "{case}");
    }
}

#[tokio::test]
async fn a_confirmed_order_is_cancelled_with_a_refund_and_its_stock_back() {
    let h = Harness::new(Fake::default()).await;
    let (_, order) = h.run().await;
    assert_eq!(order.status, Status::Confirmed);
    let leases = h.saga.leases();
    let lease = h
        .store
        .request_cancel(
            order.id,
            leases.owner(),
            CancelReason::CustomerRequested,
            "changed my mind",
            now_micros(),
            leases.until(),
        )
        .await
        .unwrap()
        .unwrap();
    let order = h.stored(order.id).await;
    let guard = h.saga.begin(order.id).unwrap();
    let done = h.saga.spawn(order, lease, guard).await.unwrap().unwrap();
    cancelled(&done, CancelReason::CustomerRequested);
    assert_eq!(done.cancel_detail.as_deref(), Some("changed my mind"));
    assert_eq!(
        &h.fake.calls()[4..],
        ["refund", "release"],
        "{:?}",
        h.fake.calls()
    );
}

#[tokio::test]
async fn a_run_whose_lease_was_claimed_again_cannot_write() {
    let h = Harness::new(Fake::default()).await;
    let (order, first) = h.place().await;
    // The first run stalls past its lease; the same process (the same owner)
    // claims the order again: the stalled run must be fenced out.
    h.db_make_due(order.id).await;
    let second = h.saga.leases().claim(order.id).await.unwrap().unwrap();
    assert!(second.epoch > first.epoch);
    let mut stale = order.clone();
    stale.step = Step::Compensate;
    stale.version += 1;
    assert!(
        !h.store
            .save(&stale, first, h.saga.leases().until(), false)
            .await
            .unwrap(),
        "a fenced-out run wrote"
    );
    assert_eq!(h.stored(order.id).await.step, Step::CheckUser);
    stale.version += 1;
    assert!(
        h.store
            .save(&stale, second, h.saga.leases().until(), false)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_sweep_that_fails_mid_claim_leaves_the_order_to_the_next_sweep() {
    let h = Harness::new(Fake::default()).await;
    let (order, _) = h.place().await;
    h.db_make_due(order.id).await;
    // The claim fails in the database (a trigger stands in for a lost
    // connection): the sweep reports it …
    sqlx::query(
        "CREATE TRIGGER fail_claims BEFORE UPDATE OF lease_epoch ON orders \
         BEGIN SELECT RAISE(FAIL, 'injected'); END",
    )
    .execute(h.db.writer())
    .await
    .unwrap();
    assert!(h.saga.sweep().await.is_err());
    assert!(!h.saga.is_running(order.id));
    // … and the next one, with the database back, resumes the order.
    sqlx::query("DROP TRIGGER fail_claims")
        .execute(h.db.writer())
        .await
        .unwrap();
    assert_eq!(h.resume(order.id).await.status, Status::Confirmed);
}

#[tokio::test]
async fn a_run_that_panics_leaves_the_order_to_the_next_sweep() {
    let fake = Fake::default();
    *fake.panic_on_user.lock().unwrap() = true;
    let h = Harness::new(fake).await;
    let (order, lease) = h.place().await;
    let guard = h.saga.begin(order.id).unwrap();
    let id = order.id;
    assert!(h.saga.spawn(order, lease, guard).await.is_err(), "no panic");
    assert!(!h.saga.is_running(id));
    *h.fake.panic_on_user.lock().unwrap() = false;
    assert_eq!(h.resume(id).await.status, Status::Confirmed);
}

#[tokio::test]
async fn orders_that_keep_failing_do_not_hide_the_others() {
    // Inventory cannot commit for a while: every run of these orders pauses.
    let fake = Fake::default();
    fake.commit.set([Err(down())]);
    let h = Harness::with_pauses(fake, Duration::from_secs(10), Duration::from_secs(60)).await;
    let mut poison = Vec::new();
    for _ in 0..3 {
        let (result, order) = h.run().await;
        paused(&result, &order, Step::Commit);
        poison.push(order.id);
    }
    // An order placed after them whose run died (its lease simply ran out).
    let (fresh, _) = h.place().await;
    h.db_make_due(fresh.id).await;
    // The paused ones changed first, but each pause pushed its due time back:
    // the sweeper's first pick is the order that is actually due.
    assert_eq!(h.saga.leases().due(1).await.unwrap(), [fresh.id]);
    assert_eq!(h.saga.leases().due(10).await.unwrap(), [fresh.id]);
    // A second pause of the same order waits twice as long (both jittered
    // between half and all of their backoff).
    let due_in = |id: Uuid| {
        let db = h.db.clone();
        async move {
            let (t,): (i64,) = sqlx::query_as("SELECT lease_until FROM orders WHERE id = $1")
                .bind(id.to_string())
                .fetch_one(db.writer())
                .await
                .unwrap();
            t - now_micros()
        }
    };
    assert!(due_in(poison[0]).await > 4_900_000);
    h.db_make_due(poison[0]).await;
    assert_eq!(h.saga.sweep().await.unwrap(), 2);
    while h.saga.is_running(poison[0]) || h.saga.is_running(fresh.id) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(due_in(poison[0]).await > 9_900_000);
}

impl Harness {
    async fn db_make_due(&self, id: Uuid) {
        sqlx::query("UPDATE orders SET lease_until = 0 WHERE id = $1")
            .bind(id.to_string())
            .execute(self.db.writer())
            .await
            .unwrap();
    }
}
