//! Orders, their items and the saga's bookkeeping: sqlx runtime queries with
//! `$n` placeholders on SQLite and PostgreSQL. No rules here.
//!
//! Every saga write is fenced by the lease epoch (see [`crate::lease`]): it
//! applies only while the writing run still holds the order, so two runs can
//! never both drive one saga.

use std::{collections::HashMap, sync::Arc};

use emporium_common::db::{Backend, Db};
use sqlx::{AssertSqlSafe, FromRow};
use uuid::Uuid;

use crate::{
    domain::{CancelReason, Currency, Item, Order, Status, Step},
    error::Error,
    lease::Lease,
};

/// The PostgreSQL channel on which every stored change of an order is
/// announced (payload: the order id), so each replica can tell its watchers.
pub const CHANGES: &str = "emporium_order_changes";

/// A save of the order's mutable fields, fenced by the lease epoch: $1 the
/// order, $2 the epoch, $3… the fields ([`bind_save`]).
const SAVE: &str = "UPDATE orders SET status = $3, step = $4, payment_id = $5, currency = $6, \
       total = $7, charge_unknown = $8, cancel_reason = $9, cancel_detail = $10, version = $11, \
       updated_at = $12, lease_until = $13 \
     WHERE id = $1 AND lease_epoch = $2";

fn bind_save<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    order: &Order,
    lease: Lease,
    lease_until: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(order.id.to_string())
        .bind(lease.epoch)
        .bind(order.status.as_str())
        .bind(order.step.as_str())
        .bind(order.payment_id.clone())
        .bind(order.currency.as_ref().map(|c| c.as_str().to_owned()))
        .bind(order.total)
        .bind(i64::from(order.charge_unknown))
        .bind(order.cancel_reason.map(|r| r.as_str().to_owned()))
        .bind(order.cancel_detail.clone())
        .bind(order.version)
        .bind(order.updated_at)
        .bind(lease_until)
}

/// The embedded migrations of this service.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Access to the orders tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    /// [`SAVE`] with its change notice on PostgreSQL (`Db::with_notice`),
    /// built from constants only.
    save_announced: Arc<str>,
}

#[derive(FromRow)]
struct OrderRow {
    id: String,
    user_id: String,
    status: String,
    step: String,
    payment_method: String,
    payment_id: Option<String>,
    currency: Option<String>,
    total: Option<i64>,
    charge_unknown: i64,
    cancel_reason: Option<String>,
    cancel_detail: Option<String>,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

#[derive(FromRow)]
struct ItemRow {
    order_id: String,
    sku: String,
    quantity: i64,
    product_id: Option<String>,
    name: Option<String>,
    unit_price: Option<i64>,
}

fn corrupt(what: &str, value: &str) -> Error {
    Error::Internal(format!("stored {what} {value:?} is invalid").into())
}

impl OrderRow {
    fn into_order(self, items: Vec<Item>) -> Result<Order, Error> {
        Ok(Order {
            id: Uuid::try_parse(&self.id).map_err(|_| corrupt("order id", &self.id))?,
            user_id: Uuid::try_parse(&self.user_id)
                .map_err(|_| corrupt("user id", &self.user_id))?,
            items,
            status: Status::parse(&self.status).ok_or_else(|| corrupt("status", &self.status))?,
            step: Step::parse(&self.step).ok_or_else(|| corrupt("step", &self.step))?,
            payment_method: self.payment_method,
            payment_id: self.payment_id,
            currency: match self.currency {
                None => None,
                Some(c) => Some(Currency::parse(&c).map_err(|_| corrupt("currency", &c))?),
            },
            total: self.total,
            charge_unknown: self.charge_unknown != 0,
            cancel_reason: match self.cancel_reason {
                None => None,
                Some(r) => {
                    Some(CancelReason::parse(&r).ok_or_else(|| corrupt("cancel reason", &r))?)
                }
            },
            cancel_detail: self.cancel_detail,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

impl From<ItemRow> for Item {
    fn from(r: ItemRow) -> Self {
        Item {
            sku: r.sku,
            quantity: r.quantity,
            product_id: r.product_id,
            name: r.name,
            unit_price: r.unit_price,
        }
    }
}

/// Result of inserting a new order.
#[derive(Debug)]
pub enum Inserted {
    /// Stored; the caller holds its first lease.
    New(Lease),
    /// The user already has an order with this key.
    Duplicate,
}

/// Filters and cursor of a listing (newest first).
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    /// Only this user's orders.
    pub user_id: Option<Uuid>,
    /// Only orders in this status.
    pub status: Option<Status>,
    /// Only orders older than this `(created_at, id)`.
    pub before: Option<(i64, String)>,
    /// Most orders to return.
    pub limit: u32,
}

impl Store {
    /// A store over the service's database.
    pub fn new(db: Db) -> Self {
        let save_announced = db.with_notice(SAVE, 14).into();
        Self { db, save_announced }
    }

    /// The database, for readiness checks.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Stores a new PENDING order with its items and its first lease, for `owner`.
    pub async fn insert(
        &self,
        order: &Order,
        idempotency_key: &str,
        fingerprint: &str,
        owner: &str,
        lease_until: i64,
    ) -> Result<Inserted, Error> {
        let mut tx = self.db.begin("insert").await?;
        let inserted = sqlx::query(
            "INSERT INTO orders (id, user_id, idempotency_key, fingerprint, status, step, payment_method, \
               charge_unknown, version, lease_owner, lease_until, lease_epoch, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, 1, $11, $12) \
             ON CONFLICT DO NOTHING",
        )
        .bind(order.id.to_string())
        .bind(order.user_id.to_string())
        .bind(idempotency_key)
        .bind(fingerprint)
        .bind(order.status.as_str())
        .bind(order.step.as_str())
        .bind(&order.payment_method)
        .bind(order.version)
        .bind(owner)
        .bind(lease_until)
        .bind(order.created_at)
        .bind(order.updated_at)
        .execute(&mut *tx)
        .await?;
        // The (user, key) index: ids are new v7 UUIDs. Not an error, so that
        // PostgreSQL does not log every repeated request.
        if inserted.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Inserted::Duplicate);
        }
        for (i, item) in order.items.iter().enumerate() {
            sqlx::query(
                "INSERT INTO order_items (order_id, line_no, sku, quantity) VALUES ($1, $2, $3, $4)",
            )
            .bind(order.id.to_string())
            .bind(i as i64)
            .bind(&item.sku)
            .bind(item.quantity)
            .execute(&mut *tx)
            .await?;
        }
        self.db
            .notify(&mut tx, CHANGES, &order.id.to_string())
            .await?;
        tx.commit().await?;
        Ok(Inserted::New(Lease {
            order_id: order.id,
            epoch: 1,
        }))
    }

    /// The user's order with this key, and the fingerprint it was stored with.
    pub async fn find_by_key(
        &self,
        user_id: Uuid,
        key: &str,
    ) -> Result<Option<(Order, String)>, Error> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT id, fingerprint FROM orders WHERE user_id = $1 AND idempotency_key = $2",
        )
        .bind(user_id.to_string())
        .bind(key)
        .fetch_optional(self.db.writer())
        .await?;
        let Some((id, fingerprint)) = row else {
            return Ok(None);
        };
        let id = Uuid::try_parse(&id).map_err(|_| corrupt("order id", &id))?;
        Ok(self.get(id).await?.map(|o| (o, fingerprint)))
    }

    /// One order with its items. Reads through the writer so a saga step always
    /// sees the previous one.
    pub async fn get(&self, id: Uuid) -> Result<Option<Order>, Error> {
        let row: Option<OrderRow> = sqlx::query_as(
            "SELECT id, user_id, status, step, payment_method, payment_id, currency, total, charge_unknown, \
               cancel_reason, cancel_detail, version, created_at, updated_at \
             FROM orders WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(self.db.writer())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let items: Vec<ItemRow> = sqlx::query_as(
            "SELECT order_id, sku, quantity, product_id, name, unit_price FROM order_items \
             WHERE order_id = $1 ORDER BY line_no",
        )
        .bind(id.to_string())
        .fetch_all(self.db.writer())
        .await?;
        Ok(Some(
            row.into_order(items.into_iter().map(Item::from).collect())?,
        ))
    }

    /// Orders changed at or after `since` (µs), oldest change first, at most
    /// `limit`: what a replica reads back after it may have missed notices.
    pub async fn changed_since(&self, since: i64, limit: u32) -> Result<Vec<Order>, Error> {
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM orders WHERE updated_at >= $1 ORDER BY updated_at LIMIT $2",
        )
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(self.db.reader())
        .await?;
        let mut orders = Vec::with_capacity(ids.len());
        for (id,) in ids {
            let id = Uuid::try_parse(&id).map_err(|_| corrupt("order id", &id))?;
            if let Some(order) = self.get(id).await? {
                orders.push(order);
            }
        }
        Ok(orders)
    }

    /// A page of orders, newest first.
    pub async fn list(&self, q: &ListQuery) -> Result<Vec<Order>, Error> {
        let user = q.user_id.map(|u| u.to_string());
        let status = q.status.map(|s| s.as_str().to_owned());
        let (before_t, before_id) = q.before.clone().unzip();
        // One filter for both queries: NULL parameters switch a condition off.
        let rows: Vec<OrderRow> = sqlx::query_as(
            "SELECT id, user_id, status, step, payment_method, payment_id, currency, total, charge_unknown, \
               cancel_reason, cancel_detail, version, created_at, updated_at \
             FROM orders \
             WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR status = $2) \
               AND ($3 IS NULL OR created_at < $3 OR (created_at = $3 AND id < $4)) \
             ORDER BY created_at DESC, id DESC LIMIT $5",
        )
        .bind(user.clone())
        .bind(status.clone())
        .bind(before_t)
        .bind(before_id.clone())
        .bind(i64::from(q.limit))
        .fetch_all(self.db.reader())
        .await?;
        let items: Vec<ItemRow> = sqlx::query_as(
            "SELECT order_id, sku, quantity, product_id, name, unit_price FROM order_items \
             WHERE order_id IN ( \
               SELECT id FROM orders \
               WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR status = $2) \
                 AND ($3 IS NULL OR created_at < $3 OR (created_at = $3 AND id < $4)) \
               ORDER BY created_at DESC, id DESC LIMIT $5) \
             ORDER BY order_id, line_no",
        )
        .bind(user)
        .bind(status)
        .bind(before_t)
        .bind(before_id)
        .bind(i64::from(q.limit))
        .fetch_all(self.db.reader())
        .await?;
        let mut by_order: HashMap<String, Vec<Item>> = HashMap::new();
        for it in items {
            by_order
                .entry(it.order_id.clone())
                .or_default()
                .push(it.into());
        }
        rows.into_iter()
            .map(|r| {
                let items = by_order.remove(&r.id).unwrap_or_default();
                r.into_order(items)
            })
            .collect()
    }

    /// Writes the order's mutable fields (and, with `items_changed`, its items'
    /// prices) if `lease` is still the order's, renewing it until `lease_until`.
    /// `false`: lease lost.
    pub async fn save(
        &self,
        order: &Order,
        lease: Lease,
        lease_until: i64,
        items_changed: bool,
    ) -> Result<bool, Error> {
        if !items_changed {
            // One statement (with its notice on PostgreSQL): no transaction to open.
            let sql = AssertSqlSafe(self.save_announced.clone());
            let mut query = bind_save(sqlx::query(sql), order, lease, lease_until);
            if self.db.backend() == Backend::Postgres {
                query = query.bind(CHANGES);
            }
            return Ok(self.db.write_one("save", query).await?.rows_affected() > 0);
        }
        let mut tx = self.db.begin("save").await?;
        let done = bind_save(sqlx::query(SAVE), order, lease, lease_until)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        for (i, item) in order.items.iter().enumerate() {
            sqlx::query(
                "UPDATE order_items SET product_id = $3, name = $4, unit_price = $5 \
                 WHERE order_id = $1 AND line_no = $2",
            )
            .bind(order.id.to_string())
            .bind(i as i64)
            .bind(item.product_id.clone())
            .bind(item.name.clone())
            .bind(item.unit_price)
            .execute(&mut *tx)
            .await?;
        }
        self.db
            .notify(&mut tx, CHANGES, &order.id.to_string())
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Marks a confirmed order for cancellation, if it is still confirmed and
    /// settled, taking a fresh lease for `owner`. `None` when it was not.
    pub async fn request_cancel(
        &self,
        id: Uuid,
        owner: &str,
        reason: CancelReason,
        detail: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<Lease>, Error> {
        let mut tx = self.db.begin("request_cancel").await?;
        let epoch: Option<(i64,)> = sqlx::query_as(
            "UPDATE orders SET step = 'cancel_confirmed', cancel_reason = $2, cancel_detail = $3, \
               version = version + 1, updated_at = $4, lease_owner = $5, lease_until = $6, \
               lease_epoch = lease_epoch + 1 \
             WHERE id = $1 AND status = 'CONFIRMED' AND step = 'done' \
             RETURNING lease_epoch",
        )
        .bind(id.to_string())
        .bind(reason.as_str())
        .bind(detail)
        .bind(now)
        .bind(owner)
        .bind(lease_until)
        .fetch_optional(&mut *tx)
        .await?;
        if epoch.is_some() {
            self.db.notify(&mut tx, CHANGES, &id.to_string()).await?;
        }
        tx.commit().await?;
        Ok(epoch.map(|(epoch,)| Lease {
            order_id: id,
            epoch,
        }))
    }
}
