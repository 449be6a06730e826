//! The order service's operations: placing, reading, listing, cancelling and
//! watching orders. Knows nothing of gRPC; the saga does the remote work.

use std::time::{Duration, Instant};

use emporium_common::{
    auth::Caller,
    db::{Db, Notice},
    paging::{self, PageSize, TimeCursor},
    time::now_micros,
};
use futures::Stream;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::{
    domain::{CancelReason, NewOrder, Order, Status, Step},
    error::Error,
    lease::Lease,
    saga::Saga,
    store::{CHANGES, Inserted, ListQuery, Store},
};

/// How long before the caller's deadline CreateOrder and CancelOrder answer
/// with the order as it stands, so the answer arrives in time.
const ANSWER_MARGIN: Duration = Duration::from_millis(100);

/// One page of orders, newest first.
pub type Page = paging::Page<Order, TimeCursor>;

/// What a watch follows.
#[derive(Debug, Clone, Copy)]
pub enum WatchTarget {
    /// One order.
    Order(Uuid),
    /// Every order of one user.
    User(Uuid),
}

/// One item of a watch stream.
#[derive(Debug, Clone)]
pub struct Update {
    /// The order as it is now.
    pub order: Order,
    /// Whether this is part of the state sent first.
    pub initial: bool,
}

/// The order service's operations.
#[derive(Debug, Clone)]
pub struct Orders {
    store: Store,
    saga: Saga,
    events: broadcast::Sender<Order>,
    create_wait: Duration,
    shutdown: watch::Receiver<bool>,
}

impl Orders {
    /// The operations over the orders `store` and a saga engine; `events` is
    /// the channel the saga publishes on; `shutdown` turns true when the server
    /// starts draining.
    pub fn new(
        store: Store,
        saga: Saga,
        events: broadcast::Sender<Order>,
        create_wait: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            saga,
            events,
            create_wait,
            shutdown,
        }
    }

    /// Places an order (or returns the one placed with the same key) and waits
    /// for the saga until shortly before `deadline` (at most the configured
    /// wait), returning the order as it then stands. The saga's own budget
    /// applies to the saga: a short deadline gives a PENDING answer, never a
    /// cancelled order.
    pub async fn create(
        &self,
        caller: &Caller,
        new: NewOrder,
        deadline: Instant,
    ) -> Result<Order, Error> {
        if !caller.may_act_for(new.user_id) {
            return Err(Error::PermissionDenied(
                "customers may order only for themselves",
            ));
        }
        let fingerprint = new.fingerprint();
        let order = Order::pending(&new, now_micros());
        // Stored PENDING before any remote call, holding the lease.
        let leases = self.saga.leases();
        let lease = match self
            .store
            .insert(
                &order,
                new.idempotency_key.as_str(),
                &fingerprint,
                leases.owner(),
                leases.until(),
            )
            .await?
        {
            Inserted::New(lease) => lease,
            // The key was used before, or a concurrent call with it won the
            // insert (inserting first spares a new order a read).
            Inserted::Duplicate => {
                return self.replay(&new, &fingerprint).await?.ok_or(Error::Aborted(
                    "a concurrent request with this key is in progress; retry",
                ));
            }
        };
        self.saga.publish(&order);
        tracing::debug!(order_id = %order.id, "order placed");
        self.drive(order, lease, deadline).await
    }

    async fn replay(&self, new: &NewOrder, fingerprint: &str) -> Result<Option<Order>, Error> {
        match self
            .store
            .find_by_key(new.user_id, new.idempotency_key.as_str())
            .await?
        {
            Some((order, stored)) if stored == fingerprint => Ok(Some(order)),
            Some(_) => Err(Error::InvalidArgument(
                emporium_common::status::Violations::one(
                    "idempotency_key",
                    "was already used for a different order",
                ),
            )),
            None => Ok(None),
        }
    }

    /// Runs the saga of an order this call holds the lease of, in its own task
    /// with the saga's own budget, and waits for it until shortly before
    /// `deadline` (at most the configured wait); then answers with the order as
    /// it stands.
    async fn drive(&self, order: Order, lease: Lease, deadline: Instant) -> Result<Order, Error> {
        let id = order.id;
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(ANSWER_MARGIN)
            .min(self.create_wait);
        // A fresh lease on an order nobody here drives: the set cannot hold it,
        // but if it did, that run holds an older epoch and is fenced out anyway.
        if let Some(guard) = self.saga.begin(id) {
            let run = self.saga.spawn(order, lease, guard);
            if let Ok(Ok(Ok(order))) = tokio::time::timeout(wait, run).await {
                return Ok(order);
            }
        }
        // Paused or still running: the order's stored state is the answer.
        self.store.get(id).await?.ok_or(Error::NotFound)
    }

    /// One order: its owner's or, for an admin, anyone's. A customer gets the
    /// same PERMISSION_DENIED for another's order and for an id that does not
    /// exist, so the answer never reveals which ids exist (decision 0005).
    pub async fn get(&self, caller: &Caller, id: Uuid) -> Result<Order, Error> {
        const NOT_YOURS: Error = Error::PermissionDenied("customers may see only their own orders");
        match self.store.get(id).await? {
            Some(order) if caller.may_act_for(order.user_id) => Ok(order),
            Some(_) => Err(NOT_YOURS),
            None if caller.is_admin() => Err(Error::NotFound),
            None => Err(NOT_YOURS),
        }
    }

    /// A page of orders, newest first. Customers see only their own.
    pub async fn list(
        &self,
        caller: &Caller,
        user_id: Option<Uuid>,
        status: Option<Status>,
        before: Option<TimeCursor>,
        size: PageSize,
    ) -> Result<Page, Error> {
        let user_id = match user_id {
            Some(u) if !caller.may_act_for(u) => {
                return Err(Error::PermissionDenied(
                    "customers may list only their own orders",
                ));
            }
            Some(u) => Some(u),
            None if caller.is_admin() => None,
            None => Some(caller.user_id),
        };
        let orders = self
            .store
            .list(&ListQuery {
                user_id,
                status,
                before: before.map(TimeCursor::to_row),
                limit: size.fetch(),
            })
            .await?;
        Ok(Page::from_fetched(orders, size, |o| TimeCursor {
            created_at: o.created_at,
            id: o.id,
        }))
    }

    /// Cancels a confirmed order: refund, return the stock, CANCELLED. A
    /// cancelled order is returned as it is; a pending one cannot be cancelled yet.
    pub async fn cancel(
        &self,
        caller: &Caller,
        id: Uuid,
        detail: &str,
        deadline: Instant,
    ) -> Result<Order, Error> {
        let order = self.get(caller, id).await?;
        match (order.status, order.step) {
            (Status::Cancelled, _) => return Ok(order),
            (Status::Pending, _) => {
                return Err(Error::FailedPrecondition(
                    "the order is still being placed; cancel it once it is confirmed".into(),
                ));
            }
            (Status::Confirmed, Step::CancelConfirmed) => {
                return Err(Error::Aborted(
                    "the order is already being cancelled; retry",
                ));
            }
            _ => {}
        }
        let reason = if caller.user_id == order.user_id {
            CancelReason::CustomerRequested
        } else {
            CancelReason::AdminRequested
        };
        let detail = if detail.is_empty() {
            "cancelled on request"
        } else {
            detail
        };
        let leases = self.saga.leases();
        let Some(lease) = self
            .store
            .request_cancel(
                id,
                leases.owner(),
                reason,
                detail,
                now_micros(),
                leases.until(),
            )
            .await?
        else {
            return Err(Error::Aborted("the order changed meanwhile; retry"));
        };
        let order = self.store.get(id).await?.ok_or(Error::NotFound)?;
        self.saga.publish(&order);
        let order = self.drive(order, lease, deadline).await?;
        // Refund and restock did not finish in time: the contract says
        // UNAVAILABLE (the cancellation goes on), never OK with a CONFIRMED order.
        if order.status != Status::Cancelled {
            return Err(Error::Unavailable(
                "the payment or inventory service did not answer in time; the cancellation \
                 goes on in the background: retry to see it finished"
                    .into(),
            ));
        }
        Ok(order)
    }

    /// The current state of the target, then every change as it happens, until
    /// the client goes away or the server shuts down.
    pub async fn watch(
        &self,
        caller: &Caller,
        target: WatchTarget,
    ) -> Result<impl Stream<Item = Result<Update, Error>> + Send + 'static, Error> {
        // Subscribe before reading, so no change between the two is missed.
        let mut events = self.events.subscribe();
        let initial: Vec<Order> = match target {
            WatchTarget::Order(id) => vec![self.get(caller, id).await?],
            WatchTarget::User(user_id) => {
                if !caller.may_act_for(user_id) {
                    return Err(Error::PermissionDenied(
                        "customers may watch only their own orders",
                    ));
                }
                self.list(
                    caller,
                    Some(user_id),
                    Some(Status::Pending),
                    None,
                    PageSize::max(),
                )
                .await?
                .items
            }
        };
        let mut shutdown = self.shutdown.clone();
        let store = self.store.clone();
        Ok(async_stream(move |tx| async move {
            let stopping = async move {
                let _ = shutdown.wait_for(|s| *s).await.map(|_| ());
            };
            tokio::pin!(stopping);
            let mut seen: std::collections::HashMap<Uuid, i64> = std::collections::HashMap::new();
            // A cancelled order changes no more: watching one ends after its state.
            let settled = matches!(target, WatchTarget::Order(_))
                && initial.iter().all(|o| o.status == Status::Cancelled);
            for order in initial {
                seen.insert(order.id, order.version);
                if tx
                    .send(Ok(Update {
                        order,
                        initial: true,
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if settled {
                return;
            }
            let matches = |o: &Order| match target {
                WatchTarget::Order(id) => o.id == id,
                WatchTarget::User(u) => o.user_id == u,
            };
            loop {
                let event = tokio::select! {
                    e = events.recv() => e,
                    () = &mut stopping => {
                        let _ = tx.send(Err(Error::Unavailable("server shutting down; watch again".into()))).await;
                        return;
                    }
                    () = tx.closed() => return,
                };
                let order = match event {
                    Ok(o) => o,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Fell behind: re-read what is watched rather than skip changes.
                        if let WatchTarget::Order(id) = target
                            && let Ok(Some(o)) = store.get(id).await
                        {
                            o
                        } else {
                            let _ = tx
                                .send(Err(Error::Aborted("watch fell behind; watch again")))
                                .await;
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if !matches(&order) || seen.get(&order.id).is_some_and(|v| *v >= order.version) {
                    continue;
                }
                seen.insert(order.id, order.version);
                let finished =
                    matches!(target, WatchTarget::Order(_)) && order.status == Status::Cancelled;
                if tx
                    .send(Ok(Update {
                        order,
                        initial: false,
                    }))
                    .await
                    .is_err()
                    || finished
                {
                    return;
                }
            }
        }))
    }
}

/// Tells this replica's watchers of the changes other replicas store (on
/// PostgreSQL; on SQLite one process owns the database and this ends at once).
/// After any gap in the notices it reads back what changed meanwhile.
pub async fn follow_changes(db: Db, store: Store, events: broadcast::Sender<Order>) {
    // Replicas' clocks differ a little: read back a margin before the gap.
    const SLACK_MICROS: i64 = 5_000_000;
    let mut heard = now_micros();
    loop {
        let mut listener = match db.listen(CHANGES).await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for order changes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut gap = true;
        loop {
            // Nobody watching: nothing to read back. A watch subscribes before
            // it reads its first state, so one that starts after this check
            // reads this change itself. (Under the bench's create-order on
            // PostgreSQL these reads were 3 of an order's 59 statements.)
            if events.receiver_count() == 0 {
                gap = false;
            }
            if gap {
                match store.changed_since(heard - SLACK_MICROS, 10_000).await {
                    Ok(orders) => {
                        for order in orders {
                            let _ = events.send(order);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read back order changes"),
                }
                gap = false;
            }
            match listener.next().await {
                Ok(Notice::Changed(id)) => {
                    heard = now_micros();
                    if events.receiver_count() == 0 {
                        continue;
                    }
                    let Ok(id) = Uuid::try_parse(&id) else {
                        continue;
                    };
                    match store.get(id).await {
                        Ok(Some(order)) => {
                            let _ = events.send(order);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(order_id = %id, error = %e, "cannot read a changed order");
                            gap = true;
                        }
                    }
                }
                Ok(Notice::Gap) => gap = true,
                Err(e) => {
                    tracing::warn!(error = %e, "lost the order change notices; reconnecting");
                    break;
                }
            }
        }
    }
}

/// A stream fed by a task; the task sees `closed()` when the client goes away.
fn async_stream<T, F, Fut>(f: F) -> impl Stream<Item = T> + Send + 'static
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    // In the request's span, so the stream's log lines keep its ids.
    tokio::spawn(tracing::Instrument::in_current_span(f(tx)));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
