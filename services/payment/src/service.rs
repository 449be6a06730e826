//! The payment service's rules: who may do what, how a key makes a retry a
//! replay, and in which order things happen around the processor. Knows nothing
//! of gRPC; talks to the database only through [`Store`].
//!
//! A charge claims its idempotency key (a row whose unique index is the lock)
//! before it calls the processor, and records the decision and the key's result
//! in one transaction. Whoever comes with the same key meanwhile gets ABORTED;
//! whoever comes later gets the recorded outcome. A claim whose holder died is
//! taken over once its lease has run out.
//!
//! VoidCharge settles a charge key without charging, for a caller that does not
//! know a Charge's outcome: it returns the decided payment, or ABORTED while
//! the claim is fresh, or else writes the key's tombstone (inserting the key's
//! row, or taking a dead holder's claim over), after which no Charge with that
//! key reaches the processor.

use std::{sync::Arc, time::Duration};

use emporium_common::{
    auth::Caller,
    paging::{self, PageSize, TimeCursor},
    status::{InternalError, Violations},
    time::now_micros,
};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::{
    domain::{
        ChargeVoid, ListFilter, NewCharge, NewRefund, Payment, PaymentId, PaymentStatus, Refund,
        RefundId, Settled, UserId,
    },
    error::Error,
    processor::{ChargeAttempt, Decision, Processor},
    store::{
        KeyRecord, Operation, Recorded, RefundState, RefundUnits, RefundWrite, RefundWritten,
        Store, VOIDED,
    },
};

const KEY_RUNNING: &str = "a charge with this idempotency key is still running, retry";
const ORDER_RUNNING: &str = "another charge for this order is still running, retry";
const REFUND_RACED: &str = "another refund changed this payment meanwhile, retry";
const VOID_RACED: &str = "the charge key changed meanwhile, retry";

/// One page of payments, newest first.
pub type Page = paging::Page<Payment, TimeCursor>;

/// The payment service's operations.
#[derive(Debug, Clone)]
pub struct Payments {
    store: Store,
    processor: Arc<dyn Processor>,
    lease_micros: i64,
    /// The `payment.crash_after` failpoint (tests only).
    #[cfg(feature = "testing")]
    crash_after: Option<crate::config::CrashPoint>,
}

/// What claiming a charge key found.
enum Claimed {
    /// This call holds the key and must decide.
    Won,
    /// The key already produced this payment.
    Finished(PaymentId),
}

/// What a stored charge key says, as far as VoidCharge is concerned.
enum KeyState {
    /// Decided: this payment.
    Decided(PaymentId),
    /// Voided already.
    Voided,
    /// Claimed by a running (or dead) charge.
    Claimed(KeyRecord),
}

impl Payments {
    /// The service over a migrated store, charging through `processor`. A charge
    /// claim older than `claim_lease` is presumed dead and may be taken over.
    pub fn new(store: Store, processor: Arc<dyn Processor>, claim_lease: Duration) -> Self {
        Self {
            store,
            processor,
            lease_micros: i64::try_from(claim_lease.as_micros()).unwrap_or(i64::MAX),
            #[cfg(feature = "testing")]
            crash_after: None,
        }
    }

    /// Arms the `payment.crash_after` failpoint (tests only).
    #[cfg(feature = "testing")]
    pub fn crash_after(mut self, point: Option<crate::config::CrashPoint>) -> Self {
        self.crash_after = point;
        self
    }

    /// Aborts the process when the failpoint is armed at `point`.
    #[cfg(feature = "testing")]
    fn failpoint(&self, point: crate::config::CrashPoint) {
        if self.crash_after == Some(point) {
            tracing::error!(?point, "crash_after failpoint: aborting");
            std::process::abort();
        }
    }

    /// The store, for readiness checks.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Charges and captures at once; idempotent by key. A decline is recorded
    /// and returned as [`Error::Declined`], on the first call and every replay.
    pub async fn charge(&self, caller: &Caller, charge: NewCharge) -> Result<Payment, Error> {
        // Only the order service charges (the transport admits no one else),
        // and only for the user it acts for.
        if !caller.may_act_for(charge.user_id.0) {
            return Err(Error::PermissionDenied(
                "customers may charge only for themselves",
            ));
        }
        // The work runs to its end even if the caller goes away (deadline,
        // disconnect): dropped half-way, it would leave its claim blocking the key
        // until the lease runs out.
        let this = self.clone();
        // In the request's span: the charge stays in the caller's trace.
        let work = async move { this.run_charge(charge).await };
        tokio::spawn(work.instrument(tracing::Span::current()))
            .await
            .map_err(|e| Error::Internal(InternalError::caused_by("the charge task failed", e)))?
    }

    async fn run_charge(&self, c: NewCharge) -> Result<Payment, Error> {
        let fingerprint = c.fingerprint();
        let token = Uuid::now_v7().to_string();
        if let Claimed::Finished(id) = self.claim(&c, &fingerprint, &token).await? {
            return self.replay_charge(id).await;
        }
        #[cfg(feature = "testing")]
        self.failpoint(crate::config::CrashPoint::ChargeClaimed);
        if let Some(paid) = self.store.successful_payment(c.order_id).await? {
            self.store.release(&c.idempotency_key, &token).await?;
            return Err(Error::AlreadyPaid(paid));
        }
        let attempt = ChargeAttempt {
            payment_method: c.payment_method,
            amount: &c.amount,
            idempotency_key: &c.idempotency_key,
        };
        let decision = match self.processor.charge(attempt).await {
            Ok(decision) => decision,
            Err(e) => {
                // Nothing happened: give the key back so a retry reaches the
                // processor again.
                tracing::warn!(order_id = %c.order_id, error = %e, "charge not decided");
                self.store.release(&c.idempotency_key, &token).await?;
                return Err(Error::ProcessorUnavailable);
            }
        };
        let (status, decline_reason) = match decision {
            Decision::Approved => (PaymentStatus::Captured, None),
            Decision::Declined(reason) => {
                metrics::counter!("payment_declines_total", "reason" => reason.as_str())
                    .increment(1);
                (PaymentStatus::Declined, Some(reason))
            }
        };
        let now = now_micros();
        let payment = Payment {
            id: PaymentId::generate(),
            order_id: c.order_id,
            user_id: c.user_id,
            amount: c.amount.clone(),
            amount_refunded: 0,
            status,
            decline_reason,
            payment_method: c.payment_method,
            refunds: Vec::new(),
            created_at: now,
            updated_at: now,
        };
        match self
            .store
            .record_charge(&payment, &c.idempotency_key, &token)
            .await?
        {
            Recorded::Done => {}
            Recorded::OrderAlreadyPaid => {
                self.store.release(&c.idempotency_key, &token).await?;
                let paid = self
                    .store
                    .successful_payment(c.order_id)
                    .await?
                    .ok_or_else(|| {
                        Error::Internal("paid order has no successful payment".into())
                    })?;
                return Err(Error::AlreadyPaid(paid));
            }
            Recorded::ClaimLost => return Err(Error::Aborted(KEY_RUNNING)),
        }
        #[cfg(feature = "testing")]
        self.failpoint(crate::config::CrashPoint::ChargeCommitted);
        tracing::debug!(
            payment_id = %payment.id,
            order_id = %payment.order_id,
            status = payment.status.as_str(),
            "charge decided"
        );
        charge_outcome(payment)
    }

    /// Takes the key for this call, or finds what it already produced.
    async fn claim(&self, c: &NewCharge, fingerprint: &str, token: &str) -> Result<Claimed, Error> {
        let key = &c.idempotency_key;
        // A second round only when a dead holder's claim was cleared or changed hands.
        for _ in 0..2 {
            let now = now_micros();
            if self
                .store
                .claim_charge(key, fingerprint, c.order_id, token, now)
                .await?
            {
                return Ok(Claimed::Won);
            }
            let stale_before = now.saturating_sub(self.lease_micros);
            match self.store.key(Operation::Charge, key).await? {
                // Voided: this key never charges, whatever the request says.
                Some(k) if k.result_id.as_deref() == Some(VOIDED) => {
                    return if k.order_id == Some(c.order_id.to_string()) {
                        Err(Error::ChargeVoided)
                    } else {
                        Err(key_reused())
                    };
                }
                Some(k) if k.fingerprint != fingerprint => return Err(key_reused()),
                Some(KeyRecord {
                    result_id: Some(id),
                    ..
                }) => {
                    let id = PaymentId::parse(&id).map_err(|_| {
                        Error::Internal(format!("stored result {id:?} is invalid").into())
                    })?;
                    return Ok(Claimed::Finished(id));
                }
                Some(k) if k.claimed_at < stale_before => {
                    if self
                        .store
                        .take_over(key, &k.claim_token, token, now)
                        .await?
                    {
                        tracing::warn!(order_id = %c.order_id, "took over an abandoned charge claim");
                        return Ok(Claimed::Won);
                    }
                }
                Some(_) => return Err(Error::Aborted(KEY_RUNNING)),
                // Not this key: another key's charge for the order holds the lock.
                None => {
                    if self
                        .store
                        .release_stale_claims(c.order_id, stale_before)
                        .await?
                        == 0
                    {
                        return Err(Error::Aborted(ORDER_RUNNING));
                    }
                    tracing::warn!(order_id = %c.order_id, "cleared an abandoned charge claim");
                }
            }
        }
        Err(Error::Aborted(ORDER_RUNNING))
    }

    async fn replay_charge(&self, id: PaymentId) -> Result<Payment, Error> {
        let payment = self
            .store
            .payment(id)
            .await?
            .ok_or_else(|| Error::Internal(format!("key result {id} has no payment").into()))?;
        charge_outcome(payment.as_charged())
    }

    /// Settles a charge key without charging: the payment a Charge with it
    /// decided, or else the key is voided for good. ABORTED while a Charge
    /// with the key runs (its claim is fresh). Idempotent.
    pub async fn void_charge(&self, caller: &Caller, v: ChargeVoid) -> Result<Settled, Error> {
        if !caller.may_act_for(v.user_id.0) {
            return Err(Error::PermissionDenied(
                "customers may settle charges only for themselves",
            ));
        }
        // Like a charge, it runs to its end even if the caller goes away.
        let this = self.clone();
        let work = async move { this.run_void(v).await };
        tokio::spawn(work.instrument(tracing::Span::current()))
            .await
            .map_err(|e| Error::Internal(InternalError::caused_by("the void task failed", e)))?
    }

    async fn run_void(&self, v: ChargeVoid) -> Result<Settled, Error> {
        let key = &v.idempotency_key;
        let token = Uuid::now_v7().to_string();
        // A second round only when the key changed between reading and writing.
        for _ in 0..3 {
            let now = now_micros();
            let state = match self.store.key(Operation::Charge, key).await? {
                None => {
                    // The key's row is the lock a Charge claims: whichever
                    // insert wins decides, and the loser reads the winner's.
                    if self.store.void_unused(key, v.order_id, &token, now).await? {
                        tracing::info!(order_id = %v.order_id, "voided an unused charge key");
                        return Ok(Settled::Voided);
                    }
                    continue;
                }
                Some(k) if k.order_id != Some(v.order_id.to_string()) => {
                    return Err(key_of_another_order());
                }
                Some(k) => key_state(k)?,
            };
            match state {
                KeyState::Decided(id) => {
                    let payment = self.store.payment(id).await?.ok_or_else(|| {
                        Error::Internal(format!("key result {id} has no payment").into())
                    })?;
                    if payment.user_id != v.user_id {
                        return Err(Error::InvalidArgument(Violations::one(
                            "user_id",
                            "is not the customer of the charge with this key",
                        )));
                    }
                    return Ok(Settled::Charged(payment));
                }
                KeyState::Voided => return Ok(Settled::Voided),
                KeyState::Claimed(k) if k.claimed_at < now.saturating_sub(self.lease_micros) => {
                    // The holder died (or overran its lease): the same fencing
                    // as a charge's take-over, then the tombstone, in one write.
                    if self
                        .store
                        .void_claim(key, &k.claim_token, &token, now)
                        .await?
                    {
                        tracing::warn!(order_id = %v.order_id, "voided an abandoned charge claim");
                        return Ok(Settled::Voided);
                    }
                }
                KeyState::Claimed(_) => return Err(Error::Aborted(KEY_RUNNING)),
            }
        }
        Err(Error::Aborted(VOID_RACED))
    }

    /// Gives back part or all of a captured payment; idempotent by key. Returns
    /// the payment right after the refund, and the refund.
    pub async fn refund(&self, caller: &Caller, r: NewRefund) -> Result<(Payment, Refund), Error> {
        let payment = self.visible(caller, r.payment_id).await?;
        let units = match &r.amount {
            Some(m) if m.currency() != payment.amount.currency() => {
                return Err(Error::InvalidArgument(Violations::one(
                    "amount.currency_code",
                    format!(
                        "must be the payment's currency {}",
                        payment.amount.currency()
                    ),
                )));
            }
            Some(m) => RefundUnits::Exact(m.units()),
            None => RefundUnits::Rest,
        };
        let fingerprint = r.fingerprint();
        let written = self
            .store
            .refund(&RefundWrite {
                payment_id: r.payment_id,
                refund_id: RefundId::generate(),
                units,
                reason: r.reason.as_str(),
                key: &r.idempotency_key,
                fingerprint: &fingerprint,
                now: now_micros(),
            })
            .await?;
        let seq = match written {
            RefundWritten::Done { seq } => {
                tracing::debug!(payment_id = %r.payment_id, seq, "refund made");
                seq
            }
            RefundWritten::KeyTaken => self.refund_of_key(&r, &fingerprint).await?,
            RefundWritten::NoPayment => return Err(Error::NotFound),
            RefundWritten::Refused(state) => return Err(refusal(r.payment_id, units, state)),
        };
        let payment = self.store.payment(r.payment_id).await?.ok_or_else(|| {
            Error::Internal(format!("refunded payment {} is gone", r.payment_id).into())
        })?;
        let snapshot = payment.as_of_refund(seq).ok_or_else(|| {
            Error::Internal(format!("refund {seq} of {} is gone", payment.id).into())
        })?;
        let refund = snapshot
            .refunds
            .last()
            .cloned()
            .ok_or_else(|| Error::Internal("snapshot without its refund".into()))?;
        Ok((snapshot, refund))
    }

    /// The seq of the refund a taken key produced, if the request is the same.
    async fn refund_of_key(&self, r: &NewRefund, fingerprint: &str) -> Result<i64, Error> {
        let k = self
            .store
            .key(Operation::Refund, &r.idempotency_key)
            .await?
            .ok_or_else(|| Error::Internal("taken refund key is missing".into()))?;
        if k.fingerprint != fingerprint {
            return Err(key_reused());
        }
        let id = k
            .result_id
            .as_deref()
            .and_then(|id| RefundId::parse(id).ok())
            .ok_or_else(|| {
                Error::Internal(format!("refund key result {:?} is invalid", k.result_id).into())
            })?;
        let (payment_id, seq) = self
            .store
            .refund_seq(id)
            .await?
            .ok_or_else(|| Error::Internal(format!("key result {id} has no refund").into()))?;
        if payment_id != r.payment_id {
            return Err(Error::Internal(
                format!("refund {id} is not of {}", r.payment_id).into(),
            ));
        }
        Ok(seq)
    }

    /// One payment: the owner's, or anyone's for an admin.
    pub async fn get(&self, caller: &Caller, id: PaymentId) -> Result<Payment, Error> {
        self.visible(caller, id).await
    }

    /// A payment the caller may see. A customer gets PERMISSION_DENIED for an id
    /// that is not theirs whether or not it exists, so the answer reveals nothing.
    async fn visible(&self, caller: &Caller, id: PaymentId) -> Result<Payment, Error> {
        match self.store.payment(id).await? {
            Some(p) if caller.may_act_for(p.user_id.0) => Ok(p),
            None if caller.is_admin() => Err(Error::NotFound),
            _ => Err(Error::PermissionDenied(
                "customers may see only their own payments",
            )),
        }
    }

    /// One page of payments, newest first. Customers see only their own.
    pub async fn list(
        &self,
        caller: &Caller,
        filter: ListFilter,
        before: Option<TimeCursor>,
        size: PageSize,
    ) -> Result<Page, Error> {
        let filter = if caller.is_admin() {
            filter
        } else {
            match filter.user_id {
                Some(u) if u.0 != caller.user_id => {
                    return Err(Error::PermissionDenied(
                        "customers may list only their own payments",
                    ));
                }
                _ => ListFilter {
                    user_id: Some(UserId(caller.user_id)),
                    ..filter
                },
            }
        };
        let payments = self
            .store
            .list(filter, before.map(TimeCursor::to_row), size.fetch())
            .await?;
        Ok(Page::from_fetched(payments, size, |p| TimeCursor {
            created_at: p.created_at,
            id: p.id.0,
        }))
    }
}

fn key_reused() -> Error {
    Error::InvalidArgument(Violations::one(
        "idempotency_key",
        "was already used with a different request",
    ))
}

fn key_of_another_order() -> Error {
    Error::InvalidArgument(Violations::one(
        "idempotency_key",
        "belongs to a charge for another order",
    ))
}

/// A stored charge key of the right order, read for VoidCharge.
fn key_state(k: KeyRecord) -> Result<KeyState, Error> {
    Ok(match k.result_id.as_deref() {
        None => KeyState::Claimed(k),
        Some(VOIDED) => KeyState::Voided,
        Some(id) => KeyState::Decided(
            PaymentId::parse(id)
                .map_err(|_| Error::Internal(format!("stored result {id:?} is invalid").into()))?,
        ),
    })
}

fn charge_outcome(payment: Payment) -> Result<Payment, Error> {
    match payment.decline_reason {
        Some(reason) => Err(Error::Declined {
            payment_id: payment.id,
            reason,
        }),
        None => Ok(payment),
    }
}

/// Why a refund matched nothing, from the payment as read right after.
fn refusal(payment_id: PaymentId, units: RefundUnits, state: RefundState) -> Error {
    let left = state.amount - state.amount_refunded;
    let not_refundable = |kind, description: String| Error::NotRefundable {
        payment_id,
        kind,
        description,
    };
    match (state.status, units) {
        (PaymentStatus::Declined, _) => not_refundable(
            "STATUS",
            "the payment was declined, nothing was charged".into(),
        ),
        (PaymentStatus::Refunded, _) => {
            not_refundable("STATUS", "the payment is already fully refunded".into())
        }
        (_, RefundUnits::Exact(units)) if units > left => not_refundable(
            "AMOUNT",
            format!("requested {units}, only {left} is left to refund"),
        ),
        // The state allows it now: a concurrent refund moved it in between.
        _ => Error::Aborted(REFUND_RACED),
    }
}
