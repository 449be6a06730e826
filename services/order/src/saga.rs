//! The order saga: the steps of DESIGN.md, persisted one by one, with
//! compensation in reverse.
//!
//! [`Saga::spawn`] drives one order, under a [`Lease`], from its stored [`Step`]
//! until it is done, a peer stays away longer than a step's budget while money
//! or stock must be settled (the run pauses and the sweeper resumes it later),
//! or the lease is lost. Every peer call is idempotent (reservation by order id,
//! charge, void and refund by keys derived from the order id), so running a
//! step twice — after a crash, a timeout, or a takeover — never does its work
//! twice.
//!
//! The rule for money: once a Charge has been sent, `charge_unknown` stays set
//! until payment gives a definitive answer — captured, declined, or the key
//! voided. Compensation settles it with VoidCharge, which never charges, and
//! an order is never CANCELLED while its charge is unsettled.

use std::{
    collections::HashSet,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use emporium_common::{telemetry::trace, time::now_micros};
use tokio::sync::broadcast;
use tracing::{Instrument as _, field::Empty};
use uuid::Uuid;

use crate::{
    domain::{CancelReason, Order, Status, Step},
    error::Error,
    lease::{Lease, Leases},
    ports::{Charge, ChargeRequest, Commit, Failure, Peers, Reserve, UserStanding, Void},
    store::Store,
};

/// The saga's timing, from configuration.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The deadline of each peer call of a step; the peer channel retries
    /// what is safe to retry within it. The saga's own: a caller's deadline
    /// never shortens it.
    pub retry_budget: Duration,
    /// How long after it was placed an order's forward steps keep waiting
    /// for a peer that does not answer (they pause and are resumed) before
    /// the order is cancelled.
    pub patience: Duration,
    /// Testing aid: abort the process at this point (only with the `testing`
    /// feature; see `config::SagaConfig::crash_at`).
    #[cfg(feature = "testing")]
    pub crash_at: Option<String>,
}

/// The points a test may crash the process at: `saved:<step>` right after the
/// order is stored at that step, `called:<call>` right after that peer call
/// returns (whatever it answered) and before anything is stored.
pub const CRASH_POINTS: &[&str] = &[
    "saved:reserve",
    "saved:charge",
    "saved:commit",
    "saved:compensate",
    "saved:done",
    "called:check_user",
    "called:reserve",
    "called:charge",
    "called:commit",
    "called:void",
    "called:refund",
    "called:release",
];

/// Most saga runs the sweeper keeps going at once in one process.
const SWEEP_RUNS: usize = 32;

/// The orders this process is driving, so the sweeper never starts a second
/// run of one of them.
#[derive(Debug, Clone, Default)]
struct Running(Arc<Mutex<HashSet<Uuid>>>);

/// One run's place in [`Running`], given back when the run ends however it
/// ends: returned, failed on a `?`, or panicked.
#[derive(Debug)]
pub struct RunGuard {
    running: Running,
    id: Uuid,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.running
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Running {
    fn begin(&self, id: Uuid) -> Option<RunGuard> {
        let fresh = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id);
        fresh.then(|| RunGuard {
            running: self.clone(),
            id,
        })
    }

    fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    fn is_empty(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    fn contains(&self, id: Uuid) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&id)
    }
}

/// Runs sagas. Cheap to clone; one per process.
#[derive(Debug, Clone)]
pub struct Saga {
    store: Store,
    leases: Leases,
    peers: Peers,
    timing: Timing,
    running: Running,
    events: broadcast::Sender<Order>,
    /// Turns true when the process stops: runs hand their orders off at the
    /// next saved step, and the sweeper claims nothing more.
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

/// One order being driven, with the lease that fences its writes.
struct Run {
    order: Order,
    lease: Lease,
    /// The items' prices changed since the last save (only the reservation
    /// sets them): the next save writes the items too.
    items_changed: bool,
}

impl Saga {
    /// A saga engine over `store`, taking leases from `leases`, publishing every
    /// change on `events`.
    pub fn new(
        store: Store,
        leases: Leases,
        peers: Peers,
        timing: Timing,
        events: broadcast::Sender<Order>,
    ) -> Self {
        Self {
            store,
            leases,
            peers,
            timing,
            running: Running::default(),
            events,
            stopping: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Stops driving sagas: no new claims, and every run gives its order's
    /// lease up at its next saved step, so another replica resumes it at once.
    pub fn halt(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves when no run is left, or after `grace` (the rest then end with
    /// the process, and their leases run out as after a crash).
    pub async fn wait_idle(&self, grace: Duration) {
        let idle = async {
            while !self.running.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(grace, idle).await.is_err() {
            tracing::warn!("saga runs still going at the end of the grace period");
        }
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// The lease protocol this engine follows.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// Publishes a change to watchers.
    pub fn publish(&self, order: &Order) {
        // No receivers is normal: nobody is watching.
        let _ = self.events.send(order.clone());
    }

    /// Marks `id` as driven by this process until the guard drops; `None` if it
    /// already is.
    pub fn begin(&self, id: Uuid) -> Option<RunGuard> {
        self.running.begin(id)
    }

    /// Whether this process is driving `id` right now.
    pub fn is_running(&self, id: Uuid) -> bool {
        self.running.contains(id)
    }

    /// Drives an order under `lease` as far as it can go, in a task of its own
    /// so a caller that goes away never interrupts it. Resolves to the order as
    /// the run left it, or to why it paused.
    pub fn spawn(
        &self,
        order: Order,
        lease: Lease,
        guard: RunGuard,
    ) -> tokio::task::JoinHandle<Result<Order, Error>> {
        let saga = self.clone();
        let span = tracing::info_span!("saga", order_id = %order.id);
        tokio::spawn(
            async move {
                let id = order.id;
                let result = saga
                    .run(Run {
                        order,
                        lease,
                        items_changed: false,
                    })
                    .await;
                match &result {
                    Ok(_) => {}
                    Err(Error::Aborted(why)) => {
                        tracing::warn!(order_id = %id, why, "saga run stopped: its lease is gone");
                    }
                    Err(e) => {
                        metrics::counter!("order_saga_paused_total").increment(1);
                        match saga.leases.pause(lease).await {
                            Ok(wait) => tracing::warn!(
                                order_id = %id, error = %e, due_in_ms = wait.as_millis() as u64,
                                "saga paused; the sweeper resumes it when it is due"
                            ),
                            Err(p) => tracing::warn!(
                                order_id = %id, error = %e, pause_error = %p,
                                "saga paused; the sweeper resumes it when its lease runs out"
                            ),
                        }
                    }
                }
                drop(guard);
                result
            }
            .instrument(span),
        )
    }

    async fn run(&self, mut run: Run) -> Result<Order, Error> {
        loop {
            let step = run.order.step;
            if step == Step::Done {
                return Ok(run.order);
            }
            if self.is_stopping() {
                // At a saved step: another replica can take over from here now.
                self.leases.hand_off(run.lease).await?;
                tracing::info!(order_id = %run.order.id, step = %step, "saga handed off: this process is stopping");
                metrics::counter!("order_saga_handed_off_total").increment(1);
                return Ok(run.order);
            }
            let span = tracing::info_span!(
                "saga.step",
                otel.name = %format_args!("saga.{}", step.as_str()),
                otel.status_code = Empty,
                otel.status_description = Empty,
                saga.step = step.as_str(),
                order.id = %run.order.id,
            );
            let started = Instant::now();
            let result = self.step(&mut run).instrument(span.clone()).await;
            metrics::histogram!("order_saga_step_duration_seconds", "step" => step.as_str())
                .record(started.elapsed().as_secs_f64());
            match &result {
                Err(e) => trace::record_error(&span, &e.to_string()),
                // The step ran but failed the order: compensation comes next.
                Ok(()) if run.order.step == Step::Compensate && step != Step::Compensate => {
                    let reason = run
                        .order
                        .cancel_reason
                        .map(CancelReason::as_str)
                        .unwrap_or_default();
                    trace::record_error(&span, reason);
                }
                Ok(()) => {}
            }
            result?;
            if run.order.step == Step::Done {
                let order = &run.order;
                let (result, reason) = match order.status {
                    Status::Confirmed => ("confirmed", "none"),
                    _ => (
                        "cancelled",
                        order
                            .cancel_reason
                            .map(CancelReason::as_str)
                            .unwrap_or("none"),
                    ),
                };
                metrics::counter!("order_saga_outcomes_total", "result" => result, "reason" => reason)
                    .increment(1);
            }
        }
    }

    /// Runs the order's current step once, storing where it leads.
    async fn step(&self, run: &mut Run) -> Result<(), Error> {
        let (user_id, order_id) = (run.order.user_id, run.order.id);
        match run.order.step {
            Step::Done => Ok(()),
            Step::CheckUser => {
                let users = self.peers.users.clone();
                let standing = self
                    .call("check_user", |t| {
                        let users = users.clone();
                        async move { users.standing(user_id, t).await }
                    })
                    .await;
                match standing {
                    Ok(UserStanding::Active) => self.advance(run, Step::Reserve).await,
                    Ok(UserStanding::Inactive) => {
                        let why = "the customer's account is deactivated";
                        self.fail(run, CancelReason::UserInactive, why).await
                    }
                    Ok(UserStanding::Missing) => {
                        let why = "the customer's account does not exist";
                        self.fail(run, CancelReason::UserNotFound, why).await
                    }
                    Err(f) => {
                        self.give_up(run, &f, "the user service could not check the customer")
                            .await
                    }
                }
            }
            Step::Reserve => {
                let inventory = self.peers.inventory.clone();
                let lines: Arc<[(String, i64)]> = run
                    .order
                    .items
                    .iter()
                    .map(|i| (i.sku.clone(), i.quantity))
                    .collect();
                let reserved = self
                    .call("reserve", |t| {
                        let (inventory, lines) = (inventory.clone(), lines.clone());
                        async move { inventory.reserve(user_id, order_id, &lines, t).await }
                    })
                    .await;
                match reserved {
                    Ok(Reserve::Reserved(r)) => {
                        let order = &mut run.order;
                        for item in &mut order.items {
                            if let Some(line) = r.lines.iter().find(|l| l.sku == item.sku) {
                                item.product_id = Some(line.product_id.clone());
                                item.name = Some(line.name.clone());
                                item.unit_price = Some(line.unit_price);
                            }
                        }
                        order.currency = Some(r.currency);
                        order.total = Some(r.total);
                        run.items_changed = true;
                        // Stored with the step, in one transaction: the charge
                        // call comes next, and from then on a charge may exist.
                        order.charge_unknown = true;
                        self.advance(run, Step::Charge).await
                    }
                    Ok(Reserve::OutOfStock(skus)) => {
                        let why = naming("not enough stock", &skus);
                        self.fail(run, CancelReason::OutOfStock, &why).await
                    }
                    Ok(Reserve::UnknownProducts(skus)) => {
                        let why = naming("no such product", &skus);
                        self.fail(run, CancelReason::ProductNotFound, &why).await
                    }
                    Ok(Reserve::Released) => {
                        let why = "the stock was released before the reservation completed";
                        self.fail(run, CancelReason::InternalError, why).await
                    }
                    Err(f) => {
                        self.give_up(run, &f, "the inventory service could not reserve the stock")
                            .await
                    }
                }
            }
            Step::Charge => {
                // Recorded before the call: from here until payment answers
                // definitively, a charge may exist (a crash, a timeout or a lost
                // reply leaves it so). The reservation stores it with this step;
                // an order stored here by an earlier version may lack it.
                if !run.order.charge_unknown {
                    run.order.charge_unknown = true;
                    self.save(run).await?;
                }
                let charged = self.charge(&run.order).await;
                match charged {
                    Ok(Charge::Captured(payment_id)) => {
                        run.order.payment_id = Some(payment_id);
                        run.order.charge_unknown = false;
                        self.advance(run, Step::Commit).await
                    }
                    Ok(Charge::Declined(d)) => {
                        run.order.charge_unknown = false;
                        self.fail(run, CancelReason::PaymentDeclined, d.describe())
                            .await
                    }
                    Ok(Charge::MethodInvalid) => {
                        run.order.charge_unknown = false;
                        let why = "the payment method is not one the processor accepts";
                        self.fail(run, CancelReason::PaymentMethodInvalid, why)
                            .await
                    }
                    Ok(Charge::Voided) => {
                        run.order.charge_unknown = false;
                        let why = "the charge was voided before it ran";
                        self.fail(run, CancelReason::PaymentFailed, why).await
                    }
                    // No definitive answer: the charge may exist, so it stays
                    // unknown and compensation settles it.
                    Err(f) => {
                        tracing::debug!(order_id = %order_id, failure = f.describe(), "charge not settled");
                        let why = "the payment could not be completed";
                        self.fail(run, CancelReason::PaymentFailed, why).await
                    }
                }
            }
            Step::Commit => {
                let inventory = self.peers.inventory.clone();
                let committed = self
                    .call("commit", |t| {
                        let inventory = inventory.clone();
                        async move { inventory.commit(user_id, order_id, t).await }
                    })
                    .await;
                match committed {
                    Ok(Commit::Committed) => {
                        run.order.status = Status::Confirmed;
                        self.advance(run, Step::Done).await?;
                        tracing::debug!(order_id = %order_id, "order confirmed");
                        Ok(())
                    }
                    Ok(Commit::NotHeld) => {
                        let why = "the stock was released before it could be sold";
                        self.fail(run, CancelReason::InternalError, why).await
                    }
                    Err(f @ Failure::Rejected(_)) => {
                        self.give_up(run, &f, "the inventory service refused to sell the stock")
                            .await
                    }
                    // Paid and reserved: finishing is the only right outcome, so
                    // the run pauses and tries again later.
                    Err(f) => Err(Error::Unavailable(format!(
                        "cannot commit the reservation yet: {}",
                        f.describe()
                    ))),
                }
            }
            Step::Compensate | Step::CancelConfirmed => {
                self.undo(run).await?;
                run.order.status = Status::Cancelled;
                self.advance(run, Step::Done).await?;
                tracing::debug!(
                    order_id = %order_id,
                    reason = run.order.cancel_reason.map(CancelReason::as_str).unwrap_or_default(),
                    "order cancelled"
                );
                Ok(())
            }
        }
    }

    /// Settles the charge (void by key, or refund), then releases (or returns)
    /// the stock. Each call gets a budget of its own; a peer that stays away
    /// pauses the run, which the sweeper resumes later.
    async fn undo(&self, run: &mut Run) -> Result<(), Error> {
        let (user_id, order_id) = (run.order.user_id, run.order.id);
        let payments = self.peers.payments.clone();
        if run.order.payment_id.is_none() && run.order.charge_unknown {
            let key = run.order.charge_key();
            let settled = self
                .call("void", |t| {
                    let (payments, key) = (payments.clone(), key.clone());
                    async move { payments.void(order_id, user_id, &key, t).await }
                })
                .await
                .map_err(|f| {
                    Error::Unavailable(format!("cannot settle the charge yet: {}", f.describe()))
                })?;
            if let Void::Captured(payment_id) = settled {
                run.order.payment_id = Some(payment_id);
            }
            run.order.charge_unknown = false;
            self.save(run).await?;
        }
        if let Some(payment_id) = run.order.payment_id.clone() {
            let key = run.order.refund_key();
            let reason = run
                .order
                .cancel_reason
                .map(CancelReason::as_str)
                .unwrap_or("cancelled");
            self.call("refund", |t| {
                let (payments, payment_id, key) =
                    (payments.clone(), payment_id.clone(), key.clone());
                async move { payments.refund(user_id, &payment_id, reason, &key, t).await }
            })
            .await
            .map_err(|f| Error::Unavailable(format!("cannot refund yet: {}", f.describe())))?;
            self.renew(run).await?;
        }
        let inventory = self.peers.inventory.clone();
        self.call("release", |t| {
            let inventory = inventory.clone();
            async move { inventory.release(user_id, order_id, t).await }
        })
        .await
        .map_err(|f| Error::Unavailable(format!("cannot release the stock yet: {}", f.describe())))
    }

    async fn charge(&self, order: &Order) -> Result<Charge, Failure> {
        let (Some(amount), Some(currency)) = (order.total, order.currency.clone()) else {
            return Err(Failure::Rejected("the order has no total".into()));
        };
        let req = Arc::new(ChargeRequest {
            order_id: order.id,
            user_id: order.user_id,
            amount,
            currency,
            payment_method: order.payment_method.clone(),
            idempotency_key: order.charge_key(),
        });
        let payments = self.peers.payments.clone();
        self.call("charge", |t| {
            let (payments, req) = (payments.clone(), req.clone());
            async move { payments.charge(&req, t).await }
        })
        .await
    }

    /// Calls a peer once, with the step's budget as the deadline. Retrying is
    /// the peer channel's job (only what is safe to send again, jittered, within
    /// the deadline and the peer's retry budget, skipping replicas whose breaker
    /// is open); what comes back without a domain answer is the step's to handle,
    /// and for money compensation's to settle.
    async fn call<T, F, Fut>(&self, name: &'static str, f: F) -> Result<T, Failure>
    where
        F: FnOnce(Duration) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let answer = f(self.timing.retry_budget).await;
        self.crash_point("called", name);
        if let Err(failure) = &answer {
            tracing::debug!(
                call = name,
                failure = failure.describe(),
                "peer call failed"
            );
        }
        answer
    }

    /// A forward step could not get an answer. While the order is young the run
    /// pauses and is resumed later: a peer that is restarting must not cancel
    /// orders. Past the patience, or when the peer refused outright, nothing the
    /// step may have done is beyond compensation, so the order is compensated.
    async fn give_up(&self, run: &mut Run, failure: &Failure, why: &str) -> Result<(), Error> {
        let age = Duration::from_micros(
            u64::try_from(now_micros().saturating_sub(run.order.created_at)).unwrap_or(0),
        );
        if failure.is_retryable() && age < self.timing.patience {
            return Err(Error::Unavailable(format!("{why}: {}", failure.describe())));
        }
        tracing::warn!(order_id = %run.order.id, failure = failure.describe(), "{why}");
        self.fail(run, CancelReason::InternalError, why).await
    }

    async fn fail(&self, run: &mut Run, reason: CancelReason, detail: &str) -> Result<(), Error> {
        tracing::debug!(order_id = %run.order.id, reason = reason.as_str(), detail, "saga failed; compensating");
        run.order.cancel_reason = Some(reason);
        run.order.cancel_detail = Some(detail.chars().take(500).collect());
        self.advance(run, Step::Compensate).await
    }

    async fn advance(&self, run: &mut Run, next: Step) -> Result<(), Error> {
        run.order.step = next;
        self.save(run).await?;
        self.crash_point("saved", next.as_str());
        Ok(())
    }

    /// Persists the order under the lease and tells watchers.
    async fn save(&self, run: &mut Run) -> Result<(), Error> {
        let order = &mut run.order;
        order.version += 1;
        order.updated_at = now_micros();
        if !self
            .store
            .save(order, run.lease, self.leases.until(), run.items_changed)
            .await?
        {
            return Err(Error::Aborted("another run took over this order"));
        }
        run.items_changed = false;
        self.publish(order);
        Ok(())
    }

    /// Renews the lease between two calls of one step.
    async fn renew(&self, run: &Run) -> Result<(), Error> {
        if self.leases.renew(run.lease).await? {
            Ok(())
        } else {
            Err(Error::Aborted("another run took over this order"))
        }
    }

    #[cfg(feature = "testing")]
    fn crash_point(&self, kind: &str, name: &str) {
        if let Some(at) = &self.timing.crash_at
            && at.strip_prefix(kind).and_then(|r| r.strip_prefix(':')) == Some(name)
        {
            tracing::error!(point = %at, "crash point reached: aborting");
            std::process::abort();
        }
    }

    #[cfg(not(feature = "testing"))]
    fn crash_point(&self, _kind: &str, _name: &str) {}

    /// Resumes every unfinished order that is due (its lease ran out after a
    /// crash, or its pause is over). Returns how many runs it started.
    pub async fn sweep(&self) -> Result<usize, Error> {
        let mut started = 0;
        if self.is_stopping() {
            return Ok(0);
        }
        // After an outage every paused order is due at once: resuming them all
        // together would hit the peer that just came back with a herd (and its
        // breaker would open again). The rest wait for the next sweep.
        let room = SWEEP_RUNS.saturating_sub(self.running.len());
        if room == 0 {
            return Ok(0);
        }
        for id in self
            .leases
            .due(u32::try_from(room).unwrap_or(u32::MAX))
            .await?
        {
            // Each early exit below, `?` included, drops the guard.
            let Some(guard) = self.begin(id) else {
                continue;
            };
            let Some(lease) = self.leases.claim(id).await? else {
                continue;
            };
            let Some(order) = self.store.get(id).await? else {
                continue;
            };
            tracing::info!(order_id = %id, step = %order.step, "resuming saga");
            metrics::counter!("order_saga_resumed_total").increment(1);
            drop(self.spawn(order, lease, guard));
            started += 1;
        }
        Ok(started)
    }
}

/// `what`, naming the SKUs when there are any: "not enough stock: A, B".
fn naming(what: &str, skus: &[String]) -> String {
    match skus {
        [] => what.to_owned(),
        _ => format!("{what}: {}", skus.join(", ")),
    }
}

#[cfg(test)]
mod tests;
