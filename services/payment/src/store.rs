//! The payments, refunds and idempotency-key tables: sqlx runtime queries with
//! `$n` placeholders that run on SQLite and PostgreSQL alike. No rules here,
//! only reads, writes and the transactions that keep them consistent.

use emporium_common::db::{Db, DbFailure, Tx, classify};
use sqlx::FromRow;

use crate::{
    domain::{
        Currency, DeclineReason, IdempotencyKey, ListFilter, Money, OrderId, Payment, PaymentId,
        PaymentMethod, PaymentStatus, Refund, RefundId, UserId,
    },
    error::Error,
};

/// `result_id` of a charge key settled by VoidCharge without a charge: the
/// key's tombstone. Not NULL, so it is no running claim (take-over, release,
/// recording and the one-running-charge-per-order index all leave it alone),
/// and never a payment id (those are UUIDs).
pub const VOIDED: &str = "VOIDED";

/// Commits a transaction whose effects a client may retry to learn about. A
/// failed COMMIT is ambiguous (the server may have committed before the
/// connection broke), so its error is [`Error::OutcomeUnknown`] (UNKNOWN),
/// never [`Error::Database`] (UNAVAILABLE = "nothing happened, retry").
///
/// Why here and not in the kit's `Tx::commit`: every service's store turns
/// `Tx::commit`'s `sqlx::Error` into its own error with `?`; changing its type
/// would change every service at once (the order service is being rewritten in
/// parallel), while the promise this keeps — a key's outcome is never reported
/// as "not executed" when it may be recorded — is the payment service's.
/// Every commit in this file goes through here.
async fn commit(tx: Tx) -> Result<(), Error> {
    tx.commit().await.map_err(Error::OutcomeUnknown)
}

/// The embedded migrations of this service.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Access to the payment tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

/// The columns of a [`PaymentRow`], as a literal so queries stay `&'static str`.
macro_rules! payment_columns {
    () => {
        "id, order_id, user_id, currency, amount, amount_refunded, refund_count, status, \
         decline_reason, payment_method, created_at, updated_at"
    };
}

#[derive(FromRow)]
struct PaymentRow {
    id: String,
    order_id: String,
    user_id: String,
    currency: String,
    amount: i64,
    amount_refunded: i64,
    refund_count: i64,
    status: String,
    decline_reason: Option<String>,
    payment_method: String,
    created_at: i64,
    updated_at: i64,
}

#[derive(FromRow)]
struct RefundRow {
    id: String,
    payment_id: String,
    amount: i64,
    reason: String,
    seq: i64,
    created_at: i64,
}

fn corrupt(what: &str, value: &str) -> Error {
    Error::Internal(format!("stored {what} {value:?} is invalid").into())
}

impl PaymentRow {
    /// The payment with those of `refunds` that this row already counts: a
    /// refund committed after the row was read has a higher seq and is left out,
    /// so the two always agree.
    fn into_payment(self, refunds: Vec<RefundRow>) -> Result<Payment, Error> {
        let id = PaymentId::parse(&self.id).map_err(|_| corrupt("payment id", &self.id))?;
        let currency =
            Currency::parse(&self.currency).map_err(|_| corrupt("currency", &self.currency))?;
        let money = |units: i64| {
            Money::positive_units(units)
                .map(|units| Money::new(currency.clone(), units))
                .map_err(|_| corrupt("amount", &units.to_string()))
        };
        let refunds = refunds
            .into_iter()
            .filter(|r| r.seq <= self.refund_count)
            .map(|r| {
                Ok(Refund {
                    id: RefundId::parse(&r.id).map_err(|_| corrupt("refund id", &r.id))?,
                    payment_id: id,
                    seq: r.seq,
                    amount: money(r.amount)?,
                    reason: r.reason,
                    created_at: r.created_at,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Payment {
            id,
            order_id: OrderId::parse(&self.order_id)
                .map_err(|_| corrupt("order id", &self.order_id))?,
            user_id: UserId::parse(&self.user_id).map_err(|_| corrupt("user id", &self.user_id))?,
            amount: money(self.amount)?,
            amount_refunded: self.amount_refunded,
            status: PaymentStatus::from_db(&self.status)
                .ok_or_else(|| corrupt("status", &self.status))?,
            decline_reason: match &self.decline_reason {
                None => None,
                Some(r) => {
                    Some(DeclineReason::from_db(r).ok_or_else(|| corrupt("decline reason", r))?)
                }
            },
            payment_method: PaymentMethod::parse(&self.payment_method)
                .map_err(|_| corrupt("payment method", &self.payment_method))?,
            refunds,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Which RPC a key belongs to: the same key may be used once for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Charge.
    Charge,
    /// Refund.
    Refund,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Charge => "charge",
            Operation::Refund => "refund",
        }
    }
}

/// A stored idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct KeyRecord {
    /// The canonical request the key was first used with (for a key voided
    /// before any Charge used it: [`void_fingerprint`]).
    pub fingerprint: String,
    /// Charge keys: the order.
    pub order_id: Option<String>,
    /// The payment or refund it produced; `None` while a charge is running;
    /// [`VOIDED`] for a voided charge key.
    pub result_id: Option<String>,
    /// The running claim's holder.
    pub claim_token: String,
    /// When the running claim was taken, µs since the epoch.
    pub claimed_at: i64,
}

/// How recording a charge's decision went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The payment is stored and the key points at it.
    Done,
    /// The order already has a successful payment; nothing was stored.
    OrderAlreadyPaid,
    /// The claim was taken over (its lease ran out); nothing was stored.
    ClaimLost,
}

/// How much a refund gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundUnits {
    /// Exactly this many minor units.
    Exact(i64),
    /// Everything not yet refunded.
    Rest,
}

/// A refund to write, with its key.
#[derive(Debug, Clone)]
pub struct RefundWrite<'a> {
    /// The payment.
    pub payment_id: PaymentId,
    /// The new refund's id.
    pub refund_id: RefundId,
    /// How much.
    pub units: RefundUnits,
    /// Why.
    pub reason: &'a str,
    /// The caller's key.
    pub key: &'a IdempotencyKey,
    /// The canonical request.
    pub fingerprint: &'a str,
    /// Now, µs since the epoch.
    pub now: i64,
}

/// A payment's refund state, as read when a refund was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundState {
    /// Status.
    pub status: PaymentStatus,
    /// Amount charged.
    pub amount: i64,
    /// Amount refunded so far.
    pub amount_refunded: i64,
}

/// How writing a refund went. Anything but `Done` left nothing behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundWritten {
    /// Refund number `seq` of the payment is stored, with its key.
    Done {
        /// The refund's place among the payment's refunds.
        seq: i64,
    },
    /// The key is already stored.
    KeyTaken,
    /// There is no such payment.
    NoPayment,
    /// The conditional update matched nothing: the payment as read afterwards.
    Refused(RefundState),
}

/// The fingerprint of a key voided before any Charge used it: no Charge
/// request has this shape, so it never matches one.
pub fn void_fingerprint(order_id: OrderId) -> String {
    format!("void/v1 order_id={order_id}")
}

fn unique_is_none<T>(r: Result<T, sqlx::Error>) -> Result<Option<T>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if classify(&e) == DbFailure::UniqueViolation => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Store {
    /// A store over the service's database.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The database, for readiness checks and the ledger.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Claims a charge key for the caller holding `token`. `false` when the key
    /// is taken, or another charge for the order is running.
    pub async fn claim_charge(
        &self,
        key: &IdempotencyKey,
        fingerprint: &str,
        order_id: OrderId,
        token: &str,
        now: i64,
    ) -> Result<bool, Error> {
        let r = sqlx::query(
            "INSERT INTO idempotency_keys \
               (operation, idempotency_key, fingerprint, order_id, result_id, claim_token, claimed_at) \
             VALUES ('charge', $1, $2, $3, NULL, $4, $5)",
        )
        .bind(key.as_str())
        .bind(fingerprint)
        .bind(order_id.to_string())
        .bind(token)
        .bind(now)
        .execute(self.db.writer())
        .await;
        Ok(unique_is_none(r)?.is_some())
    }

    /// A stored key.
    pub async fn key(
        &self,
        operation: Operation,
        key: &IdempotencyKey,
    ) -> Result<Option<KeyRecord>, Error> {
        Ok(sqlx::query_as(
            "SELECT fingerprint, order_id, result_id, claim_token, claimed_at FROM idempotency_keys \
             WHERE operation = $1 AND idempotency_key = $2",
        )
        .bind(operation.as_str())
        .bind(key.as_str())
        .fetch_optional(self.db.reader())
        .await?)
    }

    /// Takes over a running charge claim still held by `old_token`; `false` when
    /// it changed meanwhile (finished, released or taken by someone else).
    pub async fn take_over(
        &self,
        key: &IdempotencyKey,
        old_token: &str,
        new_token: &str,
        now: i64,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE idempotency_keys SET claim_token = $3, claimed_at = $4 \
             WHERE operation = 'charge' AND idempotency_key = $1 AND claim_token = $2 \
               AND result_id IS NULL",
        )
        .bind(key.as_str())
        .bind(old_token)
        .bind(new_token)
        .bind(now)
        .execute(self.db.writer())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Voids a charge key nobody used: writes its tombstone, unless the key is
    /// already stored (then `false`). The key's row is the lock a Charge claims
    /// too, so whichever insert wins decides.
    pub async fn void_unused(
        &self,
        key: &IdempotencyKey,
        order_id: OrderId,
        token: &str,
        now: i64,
    ) -> Result<bool, Error> {
        let mut tx = self.db.begin("void_charge").await?;
        let r = sqlx::query(
            "INSERT INTO idempotency_keys \
               (operation, idempotency_key, fingerprint, order_id, result_id, claim_token, claimed_at) \
             VALUES ('charge', $1, $2, $3, $4, $5, $6)",
        )
        .bind(key.as_str())
        .bind(void_fingerprint(order_id))
        .bind(order_id.to_string())
        .bind(VOIDED)
        .bind(token)
        .bind(now)
        .execute(&mut *tx)
        .await;
        if unique_is_none(r)?.is_none() {
            tx.rollback().await?;
            return Ok(false);
        }
        commit(tx).await?;
        Ok(true)
    }

    /// Voids a charge claim still held by `old_token` (its holder presumed
    /// dead), with the same fencing as [`Self::take_over`]: `false` when it
    /// changed meanwhile. The holder, should it still be alive, can record
    /// nothing afterwards (its token no longer holds the claim).
    pub async fn void_claim(
        &self,
        key: &IdempotencyKey,
        old_token: &str,
        new_token: &str,
        now: i64,
    ) -> Result<bool, Error> {
        let mut tx = self.db.begin("void_charge").await?;
        let done = sqlx::query(
            "UPDATE idempotency_keys SET result_id = $3, claim_token = $4, claimed_at = $5 \
             WHERE operation = 'charge' AND idempotency_key = $1 AND claim_token = $2 \
               AND result_id IS NULL",
        )
        .bind(key.as_str())
        .bind(old_token)
        .bind(VOIDED)
        .bind(new_token)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        commit(tx).await?;
        Ok(true)
    }

    /// Gives a running charge claim up, so the key is unused again.
    pub async fn release(&self, key: &IdempotencyKey, token: &str) -> Result<(), Error> {
        sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE operation = 'charge' AND idempotency_key = $1 AND claim_token = $2 \
               AND result_id IS NULL",
        )
        .bind(key.as_str())
        .bind(token)
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    /// Drops charge claims for `order_id` taken before `cutoff` and never
    /// finished (their holder died); returns how many.
    pub async fn release_stale_claims(&self, order_id: OrderId, cutoff: i64) -> Result<u64, Error> {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE operation = 'charge' AND order_id = $1 AND result_id IS NULL \
               AND claimed_at < $2",
        )
        .bind(order_id.to_string())
        .bind(cutoff)
        .execute(self.db.writer())
        .await?;
        Ok(done.rows_affected())
    }

    /// The order's successful (captured, maybe refunded since) payment.
    pub async fn successful_payment(&self, order_id: OrderId) -> Result<Option<PaymentId>, Error> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM payments WHERE order_id = $1 AND status <> 'DECLINED'",
        )
        .bind(order_id.to_string())
        .fetch_optional(self.db.reader())
        .await?;
        id.map(|id| PaymentId::parse(&id).map_err(|_| corrupt("payment id", &id)))
            .transpose()
    }

    /// Stores a charge's decision and points its key at it, in one transaction,
    /// provided `token` still holds the claim.
    pub async fn record_charge(
        &self,
        payment: &Payment,
        key: &IdempotencyKey,
        token: &str,
    ) -> Result<Recorded, Error> {
        let mut tx = self.db.begin("record_charge").await?;
        // The claim first: a holder whose lease was taken over writes nothing.
        let claimed = sqlx::query(
            "UPDATE idempotency_keys SET result_id = $3 \
             WHERE operation = 'charge' AND idempotency_key = $1 AND claim_token = $2 \
               AND result_id IS NULL",
        )
        .bind(key.as_str())
        .bind(token)
        .bind(payment.id.to_string())
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(Recorded::ClaimLost);
        }
        let inserted = sqlx::query(
            "INSERT INTO payments \
               (id, order_id, user_id, currency, amount, amount_refunded, refund_count, status, \
                decline_reason, payment_method, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 0, 0, $6, $7, $8, $9, $9)",
        )
        .bind(payment.id.to_string())
        .bind(payment.order_id.to_string())
        .bind(payment.user_id.to_string())
        .bind(payment.amount.currency().as_str())
        .bind(payment.amount.units())
        .bind(payment.status.as_str())
        .bind(payment.decline_reason.map(DeclineReason::as_str))
        .bind(payment.payment_method.as_str())
        .bind(payment.created_at)
        .execute(&mut *tx)
        .await;
        // Ids are generated here, so the only unique index a new payment can hit
        // is the one-success-per-order index.
        if unique_is_none(inserted)?.is_none() {
            tx.rollback().await?;
            return Ok(Recorded::OrderAlreadyPaid);
        }
        commit(tx).await?;
        Ok(Recorded::Done)
    }

    /// Stores a refund, its key and the payment's new totals in one transaction.
    /// The payment changes only through a conditional UPDATE, so concurrent
    /// refunds can never add up to more than the charge.
    pub async fn refund(&self, w: &RefundWrite<'_>) -> Result<RefundWritten, Error> {
        let mut tx = self.db.begin("refund").await?;
        let r = sqlx::query(
            "INSERT INTO idempotency_keys \
               (operation, idempotency_key, fingerprint, order_id, result_id, claim_token, claimed_at) \
             VALUES ('refund', $1, $2, NULL, $3, $3, $4)",
        )
        .bind(w.key.as_str())
        .bind(w.fingerprint)
        .bind(w.refund_id.to_string())
        .bind(w.now)
        .execute(&mut *tx)
        .await;
        if unique_is_none(r)?.is_none() {
            tx.rollback().await?;
            return Ok(RefundWritten::KeyTaken);
        }
        let Some(state) = refund_state(&mut tx, w.payment_id).await? else {
            tx.rollback().await?;
            return Ok(RefundWritten::NoPayment);
        };
        // "The rest" is a compare-and-set on the amount just read: a refund that
        // lands in between makes it match nothing instead of refunding too much.
        let (units, expected) = match w.units {
            RefundUnits::Exact(units) => (units, None),
            RefundUnits::Rest => (
                state.amount - state.amount_refunded,
                Some(state.amount_refunded),
            ),
        };
        // What is left is compared as `amount - amount_refunded`, which cannot
        // overflow: `amount_refunded + $2` does for a huge request, and
        // PostgreSQL then fails the statement instead of matching nothing.
        let updated: Option<(i64, i64)> = if units <= 0 {
            None
        } else {
            sqlx::query_as(
                "UPDATE payments SET \
                   amount_refunded = amount_refunded + $2, \
                   refund_count = refund_count + 1, \
                   status = CASE WHEN amount_refunded + $2 = amount \
                            THEN 'REFUNDED' ELSE 'PARTIALLY_REFUNDED' END, \
                   updated_at = CASE WHEN updated_at < $3 THEN $3 ELSE updated_at END \
                 WHERE id = $1 \
                   AND status IN ('CAPTURED', 'PARTIALLY_REFUNDED') \
                   AND $2 <= amount - amount_refunded \
                   AND amount_refunded = COALESCE($4, amount_refunded) \
                 RETURNING refund_count, updated_at",
            )
            .bind(w.payment_id.to_string())
            .bind(units)
            .bind(w.now)
            .bind(expected)
            .fetch_optional(&mut *tx)
            .await?
        };
        let Some((seq, at)) = updated else {
            let after = refund_state(&mut tx, w.payment_id).await?.unwrap_or(state);
            tx.rollback().await?;
            return Ok(RefundWritten::Refused(after));
        };
        // The refund's time is the payment's new updated_at, which never goes
        // back, so refunds are in time order as well as in seq order.
        sqlx::query(
            "INSERT INTO refunds (id, payment_id, amount, reason, seq, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(w.refund_id.to_string())
        .bind(w.payment_id.to_string())
        .bind(units)
        .bind(w.reason)
        .bind(seq)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        commit(tx).await?;
        Ok(RefundWritten::Done { seq })
    }

    /// One payment with its refunds.
    pub async fn payment(&self, id: PaymentId) -> Result<Option<Payment>, Error> {
        let row: Option<PaymentRow> = sqlx::query_as(concat!(
            "SELECT ",
            payment_columns!(),
            " FROM payments WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(self.db.reader())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let refunds: Vec<RefundRow> = sqlx::query_as(
            "SELECT id, payment_id, amount, reason, seq, created_at FROM refunds \
             WHERE payment_id = $1 ORDER BY seq",
        )
        .bind(id.to_string())
        .fetch_all(self.db.reader())
        .await?;
        row.into_payment(refunds).map(Some)
    }

    /// The payment and place of a refund.
    pub async fn refund_seq(&self, id: RefundId) -> Result<Option<(PaymentId, i64)>, Error> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT payment_id, seq FROM refunds WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(self.db.reader())
                .await?;
        row.map(|(p, seq)| {
            Ok((
                PaymentId::parse(&p).map_err(|_| corrupt("payment id", &p))?,
                seq,
            ))
        })
        .transpose()
    }

    /// Up to `limit` payments before the `(created_at, id)` cursor, newest first.
    pub async fn list(
        &self,
        filter: ListFilter,
        before: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<Payment>, Error> {
        // No cursor: start above every real key.
        let (before_at, before_id) = before.unwrap_or((i64::MAX, String::new()));
        let user = filter.user_id.map(|u| u.to_string());
        let order = filter.order_id.map(|o| o.to_string());
        let rows: Vec<PaymentRow> = sqlx::query_as(concat!(
            "SELECT ",
            payment_columns!(),
            " FROM payments \
             WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR order_id = $2) \
               AND (created_at < $3 OR (created_at = $3 AND id < $4)) \
             ORDER BY created_at DESC, id DESC LIMIT $5"
        ))
        .bind(&user)
        .bind(&order)
        .bind(before_at)
        .bind(&before_id)
        .bind(i64::from(limit))
        .fetch_all(self.db.reader())
        .await?;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(Vec::new());
        };
        // The refunds of exactly this page's key range, in one query.
        let refunds: Vec<RefundRow> = sqlx::query_as(
            "SELECT r.id, r.payment_id, r.amount, r.reason, r.seq, r.created_at \
             FROM refunds r JOIN payments p ON p.id = r.payment_id \
             WHERE ($1 IS NULL OR p.user_id = $1) AND ($2 IS NULL OR p.order_id = $2) \
               AND (p.created_at < $3 OR (p.created_at = $3 AND p.id <= $4)) \
               AND (p.created_at > $5 OR (p.created_at = $5 AND p.id >= $6)) \
             ORDER BY r.payment_id, r.seq",
        )
        .bind(&user)
        .bind(&order)
        .bind(first.created_at)
        .bind(&first.id)
        .bind(last.created_at)
        .bind(&last.id)
        .fetch_all(self.db.reader())
        .await?;
        let mut by_payment: std::collections::HashMap<String, Vec<RefundRow>> =
            std::collections::HashMap::new();
        for r in refunds {
            by_payment.entry(r.payment_id.clone()).or_default().push(r);
        }
        rows.into_iter()
            .map(|row| {
                let refunds = by_payment.remove(&row.id).unwrap_or_default();
                row.into_payment(refunds)
            })
            .collect()
    }
}

async fn refund_state(
    conn: &mut sqlx::AnyConnection,
    id: PaymentId,
) -> Result<Option<RefundState>, Error> {
    let row: Option<(String, i64, i64)> =
        sqlx::query_as("SELECT status, amount, amount_refunded FROM payments WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(conn)
            .await?;
    row.map(|(status, amount, amount_refunded)| {
        Ok(RefundState {
            status: PaymentStatus::from_db(&status).ok_or_else(|| corrupt("status", &status))?,
            amount,
            amount_refunded,
        })
    })
    .transpose()
}

/// The money of one order in one currency, for invariant checks.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct OrderLedger {
    /// The order.
    pub order_id: String,
    /// The currency of these payments.
    pub currency: String,
    /// Payments that captured money (refunded or not); the platform promises at
    /// most one.
    pub successful_charges: i64,
    /// Declined attempts (no money moved).
    pub declined_charges: i64,
    /// Money captured.
    pub captured: i64,
    /// Money given back: the sum of the refund rows.
    pub refunded: i64,
    /// Money given back as the payments' running totals say; always equals
    /// `refunded`.
    pub refunded_recorded: i64,
}

impl OrderLedger {
    /// What the order's customer is out of pocket: captured minus refunded.
    pub fn net(&self) -> i64 {
        self.captured - self.refunded
    }

    /// The per-order invariants: at most one successful charge, refunds within
    /// the charge, and running totals that match the refund rows.
    pub fn holds(&self) -> bool {
        self.successful_charges <= 1
            && (0..=self.captured).contains(&self.refunded)
            && self.refunded == self.refunded_recorded
    }
}

/// Per order and currency, what was charged and given back, ordered by order id,
/// so order-saga tests can check "charges − refunds = totals of CONFIRMED orders"
/// and "at most one successful charge per order" against this service's database.
/// The query (portable, read-only):
///
/// ```sql
/// SELECT p.order_id, p.currency,
///        SUM(CASE WHEN p.status <> 'DECLINED' THEN 1 ELSE 0 END)        AS successful_charges,
///        SUM(CASE WHEN p.status = 'DECLINED' THEN 1 ELSE 0 END)         AS declined_charges,
///        SUM(CASE WHEN p.status <> 'DECLINED' THEN p.amount ELSE 0 END) AS captured,
///        SUM(COALESCE(r.total, 0))                                      AS refunded,
///        SUM(p.amount_refunded)                                         AS refunded_recorded
/// FROM payments p
/// LEFT JOIN (SELECT payment_id, SUM(amount) AS total FROM refunds GROUP BY payment_id) r
///        ON r.payment_id = p.id
/// GROUP BY p.order_id, p.currency ORDER BY p.order_id, p.currency
/// ```
pub async fn ledger(db: &Db) -> Result<Vec<OrderLedger>, Error> {
    // The casts keep PostgreSQL's SUM (NUMERIC) decodable through the Any driver.
    Ok(sqlx::query_as(
        "SELECT p.order_id, p.currency, \
           CAST(SUM(CASE WHEN p.status <> 'DECLINED' THEN 1 ELSE 0 END) AS BIGINT) AS successful_charges, \
           CAST(SUM(CASE WHEN p.status = 'DECLINED' THEN 1 ELSE 0 END) AS BIGINT) AS declined_charges, \
           CAST(SUM(CASE WHEN p.status <> 'DECLINED' THEN p.amount ELSE 0 END) AS BIGINT) AS captured, \
           CAST(SUM(COALESCE(r.total, 0)) AS BIGINT) AS refunded, \
           CAST(SUM(p.amount_refunded) AS BIGINT) AS refunded_recorded \
         FROM payments p \
         LEFT JOIN (SELECT payment_id, SUM(amount) AS total FROM refunds GROUP BY payment_id) r \
           ON r.payment_id = p.id \
         GROUP BY p.order_id, p.currency \
         ORDER BY p.order_id, p.currency",
    )
    .fetch_all(db.reader())
    .await?)
}
