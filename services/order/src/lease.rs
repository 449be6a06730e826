//! The lease protocol: which run of which process drives an order's saga.
//!
//! - An order is driven only under a lease: a row's `lease_until` in the future
//!   and a `lease_epoch` the run holds. Placing an order takes the first lease;
//!   the sweeper claims orders whose lease has run out; cancelling a confirmed
//!   order takes a fresh one.
//! - Every claim bumps the epoch, and every saga write is fenced by it
//!   ([`crate::store::Store::save`] matches `lease_epoch`): a run that lost its
//!   lease — to another replica, or to a later run in this very process after a
//!   stall longer than the lease — can no longer write, whatever it still
//!   believes. Peer calls are idempotent, so a fenced-out run's last call does
//!   no harm.
//! - Each save renews the lease. A step may retry for at most the retry budget
//!   between two saves, so the configuration refuses a budget that is not
//!   shorter than the lease (`config.rs`).
//! - A run that cannot finish (a peer down) pauses: its lease ends at a due time
//!   that backs off (jittered) with the order's count of pauses, so orders that
//!   keep failing do not starve the others, and the sweeper takes due orders
//!   soonest-due first, at most 32 runs at a time.
//! - Handing off gives the lease up at once, so another replica need not wait
//!   for it to run out.

use std::time::Duration;

use emporium_common::{db::Db, time::now_micros};
use uuid::Uuid;

use crate::error::Error;

/// A claim on one order's saga: the epoch that fences this run's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The order.
    pub order_id: Uuid,
    /// Bumped by every claim.
    pub epoch: i64,
}

/// Takes, pauses and gives up leases.
#[derive(Debug, Clone)]
pub struct Leases {
    db: Db,
    /// Who we are, for operators reading `lease_owner` (fencing is by epoch).
    owner: String,
    length: Duration,
    first_pause: Duration,
    max_pause: Duration,
}

/// `first` doubled `earlier` times, at most `max`.
fn backoff(first: Duration, max: Duration, earlier: i64) -> Duration {
    let doublings = u32::try_from(earlier.clamp(0, 20)).unwrap_or(20);
    first.saturating_mul(1 << doublings).min(max)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Leases {
    /// Leases of `length` for this process; a paused order is due again after
    /// `first_pause`, doubled per earlier pause, at most `max_pause`.
    pub fn new(db: Db, length: Duration, first_pause: Duration, max_pause: Duration) -> Self {
        Self {
            db,
            owner: Uuid::now_v7().to_string(),
            length,
            first_pause,
            max_pause,
        }
    }

    /// This process's name in `lease_owner`.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// When a lease taken or renewed now runs out (µs).
    pub fn until(&self) -> i64 {
        now_micros().saturating_add(micros(self.length))
    }

    /// How long a paused order waits after `earlier` pauses.
    pub fn pause_after(&self, earlier: i64) -> Duration {
        backoff(self.first_pause, self.max_pause, earlier)
    }

    /// Unfinished orders whose lease has run out, soonest due first.
    pub async fn due(&self, limit: u32) -> Result<Vec<Uuid>, Error> {
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM orders WHERE step <> 'done' AND lease_until < $1 \
             ORDER BY lease_until LIMIT $2",
        )
        .bind(now_micros())
        .bind(i64::from(limit))
        .fetch_all(self.db.writer())
        .await?;
        ids.into_iter()
            .map(|(id,)| {
                Uuid::try_parse(&id)
                    .map_err(|_| Error::Internal(format!("stored order id {id:?}").into()))
            })
            .collect()
    }

    /// Claims an unfinished order whose lease has run out. `None` when it is
    /// finished or someone holds it.
    pub async fn claim(&self, order_id: Uuid) -> Result<Option<Lease>, Error> {
        let epoch: Option<(i64,)> = sqlx::query_as(
            "UPDATE orders SET lease_owner = $2, lease_until = $3, lease_epoch = lease_epoch + 1 \
             WHERE id = $1 AND step <> 'done' AND lease_until < $4 \
             RETURNING lease_epoch",
        )
        .bind(order_id.to_string())
        .bind(&self.owner)
        .bind(self.until())
        .bind(now_micros())
        .fetch_optional(self.db.writer())
        .await?;
        Ok(epoch.map(|(epoch,)| Lease { order_id, epoch }))
    }

    /// Ends a run that could not finish: the order is due again after a backoff
    /// that grows with its pauses. Does nothing if the lease was lost meanwhile.
    pub async fn pause(&self, lease: Lease) -> Result<Duration, Error> {
        let attempts: Option<(i64,)> = sqlx::query_as(
            "UPDATE orders SET attempts = attempts + 1 \
             WHERE id = $1 AND lease_epoch = $2 RETURNING attempts",
        )
        .bind(lease.order_id.to_string())
        .bind(lease.epoch)
        .fetch_optional(self.db.writer())
        .await?;
        let Some((attempts,)) = attempts else {
            return Ok(Duration::ZERO);
        };
        // Jittered, so orders paused by one outage are not all due together.
        let wait = self
            .pause_after(attempts - 1)
            .mul_f64(0.5 + fastrand::f64() / 2.0);
        sqlx::query("UPDATE orders SET lease_until = $3 WHERE id = $1 AND lease_epoch = $2")
            .bind(lease.order_id.to_string())
            .bind(lease.epoch)
            .bind(now_micros().saturating_add(micros(wait)))
            .execute(self.db.writer())
            .await?;
        Ok(wait)
    }

    /// Gives the lease up now, so any process may claim the order at once.
    pub async fn hand_off(&self, lease: Lease) -> Result<(), Error> {
        sqlx::query("UPDATE orders SET lease_until = 0 WHERE id = $1 AND lease_epoch = $2")
            .bind(lease.order_id.to_string())
            .bind(lease.epoch)
            .execute(self.db.writer())
            .await?;
        Ok(())
    }

    /// Renews the lease between two writes of one step; `false` if it was lost.
    pub async fn renew(&self, lease: Lease) -> Result<bool, Error> {
        let done =
            sqlx::query("UPDATE orders SET lease_until = $3 WHERE id = $1 AND lease_epoch = $2")
                .bind(lease.order_id.to_string())
                .bind(lease.epoch)
                .bind(self.until())
                .execute(self.db.writer())
                .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap() {
        let (first, max) = (Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<_> = (0..6).map(|a| backoff(first, max, a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(first, max, i64::MAX), max);
        assert_eq!(backoff(first, max, -1), first);
    }
}
