//! The order saga: the steps of DESIGN.md, persisted one by one, with
//! compensation in reverse.
//!
//! [`Saga::run`] drives one order from its stored [`Step`] until it is done, the
//! retry budget runs out during compensation (the sweeper picks it up later), or
//! the lease is lost to another process. Every step is idempotent on the peer's
//! side (reservation by order id, charge and refund by keys derived from the
//! order id), so running a step twice — after a crash, a timeout, or a takeover —
//! never does its work twice.

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
    ports::{ChargeRequest, PeerError, Peers},
    store::Store,
};

/// The saga's timing, from configuration.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How long transient failures are retried before giving up a step.
    pub retry_budget: Duration,
    /// First pause between retries (doubles up to 1 s).
    pub backoff: Duration,
    /// Lease length.
    pub lease: Duration,
    /// Testing aid: abort the process right after this step is stored.
    pub crash_after: Option<Step>,
}

/// Runs sagas. Cheap to clone; one per process.
#[derive(Debug, Clone)]
pub struct Saga {
    store: Store,
    peers: Peers,
    timing: Timing,
    /// This process's lease owner id.
    owner: Arc<str>,
    /// Orders this process is driving right now, so the sweeper never starts a
    /// second run of one of them.
    running: Arc<Mutex<HashSet<Uuid>>>,
    events: broadcast::Sender<Order>,
}

/// Why a step failed, in the saga's terms.
enum Outcome<T> {
    Ok(T),
    /// A definitive refusal.
    Refused(emporium_common::rpc::Status),
    /// Retries ran out; `unknown` if any attempt may have taken effect.
    GaveUp {
        unknown: bool,
        last: emporium_common::rpc::Status,
    },
}

impl Saga {
    /// A saga engine over `store` and `peers`, publishing every change on `events`.
    pub fn new(
        store: Store,
        peers: Peers,
        timing: Timing,
        events: broadcast::Sender<Order>,
    ) -> Self {
        Self {
            store,
            peers,
            timing,
            owner: Uuid::now_v7().to_string().into(),
            running: Arc::new(Mutex::new(HashSet::new())),
            events,
        }
    }

    /// This process's lease owner id.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// When a lease taken now runs out (µs).
    pub fn lease_until(&self) -> i64 {
        now_micros() + self.timing.lease.as_micros() as i64
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Publishes a change to watchers.
    pub fn publish(&self, order: &Order) {
        // No receivers is normal: nobody is watching.
        let _ = self.events.send(order.clone());
    }

    /// Marks `id` as driven by this process; `false` if it already is.
    pub fn begin(&self, id: Uuid) -> bool {
        self.running
            .lock()
            .expect("running set poisoned")
            .insert(id)
    }

    fn end(&self, id: Uuid) {
        self.running
            .lock()
            .expect("running set poisoned")
            .remove(&id);
    }

    /// Drives a claimed order (this process holds the lease and has called
    /// [`Self::begin`]) as far as it can go, in a task of its own so a caller that
    /// goes away never interrupts it. Resolves to the order as the run left it.
    pub fn spawn(
        &self,
        order: Order,
        deadline: Instant,
    ) -> tokio::task::JoinHandle<Result<Order, Error>> {
        let saga = self.clone();
        let span = tracing::info_span!("saga", order_id = %order.id);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let id = order.id;
                let result = saga.run(order, deadline).await;
                if let Err(e) = &result {
                    metrics::counter!("order_saga_paused_total").increment(1);
                    tracing::warn!(order_id = %id, error = %e, "saga paused; the sweeper will resume it");
                    // Let the sweeper (here or in another replica) retry without
                    // waiting for the lease to run out.
                    if let Err(e) = saga.store.unlease(id, &saga.owner).await {
                        tracing::warn!(order_id = %id, error = %e, "could not give up the lease");
                    }
                }
                saga.end(id);
                result
            },
            span,
        ))
    }

    async fn run(&self, mut order: Order, deadline: Instant) -> Result<Order, Error> {
        loop {
            let step = order.step;
            if step == Step::Done {
                return Ok(order);
            }
            let span = tracing::info_span!(
                "saga.step",
                otel.name = %format_args!("saga.{}", step.as_str()),
                otel.status_code = Empty,
                otel.status_description = Empty,
                saga.step = step.as_str(),
                order.id = %order.id,
            );
            let started = Instant::now();
            let result = self
                .step(&mut order, deadline)
                .instrument(span.clone())
                .await;
            metrics::histogram!("order_saga_step_duration_seconds", "step" => step.as_str())
                .record(started.elapsed().as_secs_f64());
            match &result {
                Err(e) => trace::record_error(&span, &e.to_string()),
                // The step ran but failed the order: compensation comes next.
                Ok(()) if order.step == Step::Compensate && step != Step::Compensate => {
                    let reason = order
                        .cancel_reason
                        .map(CancelReason::as_str)
                        .unwrap_or_default();
                    trace::record_error(&span, reason);
                }
                Ok(()) => {}
            }
            result?;
            if order.step == Step::Done {
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
    async fn step(&self, order: &mut Order, deadline: Instant) -> Result<(), Error> {
        match order.step {
            Step::Done => {}
            Step::CheckUser => {
                let users = self.peers.users.clone();
                let user_id = order.user_id;
                match self
                    .retry(deadline, |t| {
                        let users = users.clone();
                        async move { users.get(user_id, t).await }
                    })
                    .await
                {
                    Outcome::Ok(u) if u.active => self.advance(order, Step::Reserve).await?,
                    Outcome::Ok(_) => {
                        self.fail(order, CancelReason::UserInactive, "the user is deactivated")
                            .await?
                    }
                    Outcome::Refused(s) if s.code() == emporium_common::rpc::Code::NotFound => {
                        self.fail(order, CancelReason::UserNotFound, "the user does not exist")
                            .await?
                    }
                    Outcome::Refused(s) => {
                        let detail = format!("user service refused the check: {}", s.message());
                        self.fail(order, CancelReason::InternalError, &detail)
                            .await?
                    }
                    Outcome::GaveUp { .. } => {
                        self.fail(
                            order,
                            CancelReason::InternalError,
                            "user service unavailable",
                        )
                        .await?
                    }
                }
            }
            Step::Reserve => {
                let inventory = self.peers.inventory.clone();
                let (user_id, order_id) = (order.user_id, order.id);
                let lines: Arc<[(String, i64)]> = order
                    .items
                    .iter()
                    .map(|i| (i.sku.clone(), i.quantity))
                    .collect();
                match self
                    .retry(deadline, |t| {
                        let inventory = inventory.clone();
                        let lines = lines.clone();
                        async move { inventory.reserve(user_id, order_id, &lines, t).await }
                    })
                    .await
                {
                    Outcome::Ok(r) => {
                        for item in &mut order.items {
                            if let Some(line) = r.lines.iter().find(|l| l.sku == item.sku) {
                                item.product_id = Some(line.product_id.clone());
                                item.name = Some(line.name.clone());
                                item.unit_price = Some(line.unit_price);
                            }
                        }
                        order.currency = Some(r.currency);
                        order.total = Some(r.total);
                        self.advance(order, Step::Charge).await?;
                    }
                    Outcome::Refused(s) => {
                        let reason = match s.code() {
                            emporium_common::rpc::Code::NotFound => CancelReason::ProductNotFound,
                            emporium_common::rpc::Code::FailedPrecondition => {
                                CancelReason::OutOfStock
                            }
                            _ => CancelReason::InternalError,
                        };
                        self.fail(order, reason, s.message()).await?
                    }
                    Outcome::GaveUp { .. } => {
                        self.fail(
                            order,
                            CancelReason::InternalError,
                            "inventory service unavailable",
                        )
                        .await?
                    }
                }
            }
            Step::Charge => {
                // Recorded before the call: if we crash while it is in flight,
                // recovery knows a charge may exist.
                order.charge_unknown = true;
                self.save(order).await?;
                match self.charge(order, deadline).await {
                    Outcome::Ok(payment_id) => {
                        order.payment_id = Some(payment_id);
                        order.charge_unknown = false;
                        self.advance(order, Step::Commit).await?;
                    }
                    Outcome::Refused(s) => {
                        order.charge_unknown = false;
                        let reason = match s.code() {
                            emporium_common::rpc::Code::FailedPrecondition => {
                                CancelReason::PaymentDeclined
                            }
                            emporium_common::rpc::Code::InvalidArgument => {
                                CancelReason::PaymentMethodInvalid
                            }
                            _ => CancelReason::PaymentFailed,
                        };
                        self.fail(order, reason, s.message()).await?
                    }
                    Outcome::GaveUp { unknown, .. } => {
                        order.charge_unknown = unknown;
                        self.fail(
                            order,
                            CancelReason::PaymentFailed,
                            "payment service unavailable",
                        )
                        .await?
                    }
                }
            }
            Step::Commit => {
                let inventory = self.peers.inventory.clone();
                let (user_id, order_id) = (order.user_id, order.id);
                match self
                    .retry(deadline, |t| {
                        let inventory = inventory.clone();
                        async move { inventory.commit(user_id, order_id, t).await }
                    })
                    .await
                {
                    Outcome::Ok(()) => {
                        order.status = Status::Confirmed;
                        self.advance(order, Step::Done).await?;
                        tracing::debug!(order_id = %order.id, "order confirmed");
                    }
                    Outcome::Refused(s) => {
                        let detail =
                            format!("the reservation could not be committed: {}", s.message());
                        self.fail(order, CancelReason::InternalError, &detail)
                            .await?
                    }
                    Outcome::GaveUp { .. } => {
                        self.fail(
                            order,
                            CancelReason::InternalError,
                            "inventory service unavailable at commit",
                        )
                        .await?
                    }
                }
            }
            Step::Compensate | Step::CancelConfirmed => {
                // Compensation gets a fresh budget: undoing must not be cut short
                // because the forward path used up the caller's deadline.
                self.undo(order, Instant::now() + self.timing.retry_budget)
                    .await?;
                order.status = Status::Cancelled;
                self.advance(order, Step::Done).await?;
                tracing::debug!(
                    order_id = %order.id,
                    reason = order.cancel_reason.map(CancelReason::as_str).unwrap_or_default(),
                    "order cancelled"
                );
            }
        }
        Ok(())
    }

    /// Voids or refunds the charge, then releases (or returns) the stock.
    async fn undo(&self, order: &mut Order, deadline: Instant) -> Result<(), Error> {
        if order.payment_id.is_none() && order.charge_unknown {
            // A charge may exist: ask again with the same key. The payment service
            // replays the first outcome (or charges now, which we refund below);
            // either way no second charge can appear later.
            match self.charge(order, deadline).await {
                Outcome::Ok(payment_id) => order.payment_id = Some(payment_id),
                Outcome::Refused(_) | Outcome::GaveUp { unknown: false, .. } => {}
                Outcome::GaveUp {
                    unknown: true,
                    last,
                } => {
                    return Err(Error::Unavailable(format!(
                        "cannot settle the charge yet: {}",
                        last.message()
                    )));
                }
            }
            order.charge_unknown = false;
            self.save(order).await?;
        }
        if let Some(payment_id) = order.payment_id.clone() {
            let payments = self.peers.payments.clone();
            let (user_id, key) = (order.user_id, order.refund_key());
            let reason = order
                .cancel_reason
                .map(CancelReason::as_str)
                .unwrap_or("cancelled");
            match self
                .retry(deadline, |t| {
                    let payments = payments.clone();
                    let (payment_id, key) = (payment_id.clone(), key.clone());
                    async move { payments.refund(user_id, &payment_id, reason, &key, t).await }
                })
                .await
            {
                Outcome::Ok(()) => {}
                Outcome::Refused(s) => {
                    return Err(Error::Internal(
                        format!("refund refused: {}", s.message()).into(),
                    ));
                }
                Outcome::GaveUp { last, .. } => {
                    return Err(Error::Unavailable(format!(
                        "cannot refund yet: {}",
                        last.message()
                    )));
                }
            }
        }
        let inventory = self.peers.inventory.clone();
        let (user_id, order_id) = (order.user_id, order.id);
        match self
            .retry(deadline, |t| {
                let inventory = inventory.clone();
                async move { inventory.release(user_id, order_id, t).await }
            })
            .await
        {
            Outcome::Ok(()) => Ok(()),
            Outcome::Refused(s) => Err(Error::Internal(
                format!("release refused: {}", s.message()).into(),
            )),
            Outcome::GaveUp { last, .. } => Err(Error::Unavailable(format!(
                "cannot release stock yet: {}",
                last.message()
            ))),
        }
    }

    async fn charge(&self, order: &Order, deadline: Instant) -> Outcome<String> {
        let (Some(amount), Some(currency)) = (order.total, order.currency.clone()) else {
            return Outcome::Refused(emporium_common::rpc::Status::internal("order has no total"));
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
        self.retry(deadline, |t| {
            let payments = payments.clone();
            let req = req.clone();
            async move { payments.charge(&req, t).await }
        })
        .await
    }

    /// Calls `f` until it succeeds, is refused, or `deadline` passes; transient
    /// failures back off exponentially. Each attempt gets what is left of the
    /// budget as its timeout.
    async fn retry<T, F, Fut>(&self, deadline: Instant, mut f: F) -> Outcome<T>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, PeerError>>,
    {
        let mut backoff = self.timing.backoff;
        let mut unknown = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = left.max(Duration::from_millis(50));
            let last = match f(timeout).await {
                Ok(v) => return Outcome::Ok(v),
                Err(PeerError::Refused(s)) => return Outcome::Refused(s),
                Err(PeerError::Transient(s)) => s,
                Err(PeerError::Unknown(s)) => {
                    unknown = true;
                    s
                }
            };
            if Instant::now() + backoff >= deadline {
                return Outcome::GaveUp { unknown, last };
            }
            tracing::debug!(code = ?last.code(), "peer failed transiently; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    async fn fail(
        &self,
        order: &mut Order,
        reason: CancelReason,
        detail: &str,
    ) -> Result<(), Error> {
        tracing::debug!(order_id = %order.id, reason = reason.as_str(), detail, "saga failed; compensating");
        order.cancel_reason = Some(reason);
        order.cancel_detail = Some(detail.chars().take(500).collect());
        self.advance(order, Step::Compensate).await
    }

    async fn advance(&self, order: &mut Order, next: Step) -> Result<(), Error> {
        order.step = next;
        self.save(order).await?;
        if self.timing.crash_after == Some(next) {
            tracing::error!(order_id = %order.id, step = %next, "crash_after failpoint: aborting");
            std::process::abort();
        }
        Ok(())
    }

    /// Persists the order under the lease and tells watchers.
    async fn save(&self, order: &mut Order) -> Result<(), Error> {
        order.version += 1;
        order.updated_at = now_micros();
        if !self
            .store
            .save(order, &self.owner, self.lease_until())
            .await?
        {
            return Err(Error::Aborted("another process took over this order"));
        }
        self.publish(order);
        Ok(())
    }

    /// Resumes every unfinished order whose lease has run out (after a crash, or
    /// one this process paused). Returns how many runs it started.
    pub async fn sweep(&self) -> Result<usize, Error> {
        let now = now_micros();
        let mut started = 0;
        for id in self.store.due(now, 100).await? {
            if !self.begin(id) {
                continue;
            }
            if !self
                .store
                .claim(id, &self.owner, now, self.lease_until())
                .await?
            {
                self.end(id);
                continue;
            }
            let Some(order) = self.store.get(id).await? else {
                self.end(id);
                continue;
            };
            tracing::info!(order_id = %id, step = %order.step, "resuming saga");
            metrics::counter!("order_saga_resumed_total").increment(1);
            drop(self.spawn(order, Instant::now() + self.timing.retry_budget));
            started += 1;
        }
        Ok(started)
    }
}
