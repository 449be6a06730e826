//! The inventory tables: sqlx runtime queries with `$n` placeholders that run on
//! SQLite and PostgreSQL alike, and the transactions that keep stock consistent.
//!
//! Stock is never read and written back. Every change is one conditional
//! `UPDATE … WHERE <the change is allowed>` whose row count says whether it
//! happened, so concurrent calls cannot oversell on either backend. Transactions
//! that touch several products lock them in SKU order, so two of them never wait
//! on each other in a cycle (PostgreSQL would abort one as a deadlock).

use std::collections::{BTreeMap, HashSet};

use emporium_common::{
    db::{Backend, Db, DbFailure, classify},
    status::InternalError,
};
use sqlx::{AnyConnection, AssertSqlSafe, FromRow};

use crate::{
    domain::{
        self, AdjustmentRecord, Currency, FailedRow, Found, IdempotencyKey, ImportSummary, Money,
        OrderId, Product, ProductDetails, ProductId, ProductRef, Quantity, Reservation,
        ReservationLine, ReservationStatus, Shortage, Sku, StockRow, creation_of,
    },
    error::Error,
};

/// The embedded migrations of this service.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

// A macro rather than a const so that `concat!` keeps every query a `&'static str`.
macro_rules! product_columns {
    () => {
        "id, sku, name, description, unit_price, currency, on_hand, reserved, created_at, updated_at"
    };
}

/// Access to the inventory tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

#[derive(FromRow)]
struct ProductRow {
    id: String,
    sku: String,
    name: String,
    description: String,
    unit_price: i64,
    currency: String,
    on_hand: i64,
    reserved: i64,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<ProductRow> for Product {
    type Error = Error;
    fn try_from(r: ProductRow) -> Result<Self, Error> {
        let broken =
            |what: &str| Error::Internal(format!("stored product {:?} has {what}", r.id).into());
        let id = ProductId::parse(&r.id).map_err(|_| broken("an id that is not a uuid"))?;
        let sku = Sku::parse(&r.sku).map_err(|_| broken("an invalid sku"))?;
        let currency = Currency::parse(&r.currency).map_err(|_| broken("an invalid currency"))?;
        let unit_price =
            domain::price(r.unit_price, currency).map_err(|_| broken("an invalid price"))?;
        Ok(Product {
            id,
            sku,
            name: r.name,
            description: r.description,
            unit_price,
            on_hand: r.on_hand,
            reserved: r.reserved,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(FromRow)]
struct ReservationRow {
    status: String,
    total: i64,
    currency: String,
    created_at: i64,
    updated_at: i64,
}

#[derive(FromRow)]
struct LineRow {
    product_id: String,
    sku: String,
    name: String,
    quantity: i64,
    unit_price: i64,
}

#[derive(FromRow)]
struct AdjustmentRow {
    product_id: String,
    delta: i64,
    reason: String,
    on_hand_after: i64,
    reserved_after: i64,
    created_at: i64,
}

/// One product's stock counters, for invariant checks: every unit received is on
/// hand or sold, and reserved units are a part of those on hand.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct StockLevel {
    /// The product's SKU.
    pub sku: String,
    /// Units in stock, reserved ones included.
    pub on_hand: i64,
    /// Units held by RESERVED reservations.
    pub reserved: i64,
    /// Net units ever received by adjustments and imports.
    pub received: i64,
    /// Units committed and not returned.
    pub sold: i64,
}

impl StockLevel {
    /// Whether `received == on_hand + sold` and `0 <= reserved <= on_hand`.
    pub fn is_balanced(&self) -> bool {
        self.received == self.on_hand + self.sold
            && (0..=self.on_hand).contains(&self.reserved)
            && self.sold >= 0
    }
}

/// What [`Store::adjust`] did.
#[derive(Debug)]
pub enum Adjusted {
    /// Applied; the product right after.
    Applied(Product),
    /// The key was used before; nothing changed.
    Replayed(AdjustmentRecord),
    /// The change would take stock below zero or below what is reserved; nothing
    /// changed. The stock as it was.
    Refused {
        /// Stock on hand.
        on_hand: i64,
        /// Reserved stock.
        reserved: i64,
    },
}

/// What [`Store::import`] did.
#[derive(Debug)]
pub enum Imported {
    /// Applied in one transaction.
    Applied(ImportSummary),
    /// The key was used before; nothing changed. What was recorded under it.
    Replayed {
        /// Fingerprint of the first import's rows.
        fingerprint: String,
        /// Its summary.
        summary: ImportSummary,
    },
}

/// What [`Store::reserve`] did.
#[derive(Debug)]
pub enum Reserved {
    /// The stock is held and the reservation stored.
    Held,
    /// The order already has a reservation (possibly stored by a concurrent call
    /// a moment ago); nothing changed.
    Existing(Reservation),
    /// Some products are short; nothing changed. In the order of the lines.
    Short(Vec<Shortage>),
}

/// An import's rows ready to apply.
#[derive(Debug)]
pub struct ImportPlan<'a> {
    /// The import's key.
    pub key: &'a IdempotencyKey,
    /// Fingerprint of the rows as sent.
    pub fingerprint: &'a str,
    /// Rows received, valid or not.
    pub rows_received: i64,
    /// `(row number, row)` of the rows whose SKU and quantity are valid.
    pub rows: Vec<(i64, StockRow)>,
    /// The rows already known to fail.
    pub failed: Vec<FailedRow>,
}

fn unique_is_sku(e: sqlx::Error) -> Error {
    // The SKU is the only unique column a client value can collide with (ids are
    // generated here).
    match classify(&e) {
        DbFailure::UniqueViolation => Error::AlreadyExists,
        _ => Error::Database(e),
    }
}

fn by_sku(lines: &[ReservationLine]) -> Vec<&ReservationLine> {
    let mut sorted: Vec<&ReservationLine> = lines.iter().collect();
    sorted.sort_by(|a, b| a.sku.cmp(&b.sku));
    sorted
}

fn exactly_one(rows: u64, what: &str, line: &ReservationLine) -> Result<(), Error> {
    if rows == 1 {
        Ok(())
    } else {
        Err(Error::Internal(
            format!(
                "{what}: product {} does not hold the units of its reservation",
                line.sku
            )
            .into(),
        ))
    }
}

impl Store {
    /// A store over the service's database.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The database, for readiness checks.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Inserts a new product with no stock; a taken SKU is [`Error::AlreadyExists`].
    pub async fn insert_product(&self, p: &Product) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO products (id, sku, name, description, unit_price, currency, \
               on_hand, reserved, received, sold, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, 0, 0, 0, $7, $8)",
        )
        .bind(p.id.to_string())
        .bind(p.sku.as_str())
        .bind(&p.name)
        .bind(&p.description)
        .bind(p.unit_price.units())
        .bind(p.unit_price.currency().as_str())
        .bind(p.created_at)
        .bind(p.updated_at)
        .execute(self.db.writer())
        .await
        .map_err(unique_is_sku)?;
        Ok(())
    }

    /// One product by id or SKU.
    pub async fn product(&self, which: &ProductRef) -> Result<Option<Product>, Error> {
        let mut conn = self.db.reader().acquire().await?;
        find_product(&mut conn, which).await
    }

    /// Up to `limit` products with a SKU after `after`, in SKU byte order.
    pub async fn list(&self, after: Option<&Sku>, limit: u32) -> Result<Vec<Product>, Error> {
        // PostgreSQL compares text by the database's collation, which may ignore
        // '-' and '_'; "C" is byte order, SQLite's default.
        let postgres = self.db.backend() == Backend::Postgres;
        let rows: Vec<ProductRow> = match after {
            None => {
                let sql = if postgres {
                    concat!(
                        "SELECT ",
                        product_columns!(),
                        " FROM products ORDER BY sku COLLATE \"C\" LIMIT $1"
                    )
                } else {
                    concat!(
                        "SELECT ",
                        product_columns!(),
                        " FROM products ORDER BY sku LIMIT $1"
                    )
                };
                sqlx::query_as(sql)
                    .bind(i64::from(limit))
                    .fetch_all(self.db.reader())
                    .await?
            }
            Some(sku) => {
                let sql = if postgres {
                    concat!(
                        "SELECT ",
                        product_columns!(),
                        " FROM products WHERE sku COLLATE \"C\" > $1 \
                         ORDER BY sku COLLATE \"C\" LIMIT $2"
                    )
                } else {
                    concat!(
                        "SELECT ",
                        product_columns!(),
                        " FROM products WHERE sku > $1 ORDER BY sku LIMIT $2"
                    )
                };
                sqlx::query_as(sql)
                    .bind(sku.as_str())
                    .bind(i64::from(limit))
                    .fetch_all(self.db.reader())
                    .await?
            }
        };
        rows.into_iter().map(Product::try_from).collect()
    }

    /// A currency other than `currency` that some product is priced in, if any.
    pub async fn foreign_currency(&self, currency: &Currency) -> Result<Option<String>, Error> {
        Ok(
            sqlx::query_scalar("SELECT currency FROM products WHERE currency <> $1 LIMIT 1")
                .bind(currency.as_str())
                .fetch_optional(self.db.reader())
                .await?,
        )
    }

    /// Applies `delta` to a product's stock under `key`, unless the key was used
    /// before or the change would take stock below zero or below what is reserved.
    pub async fn adjust(
        &self,
        product_id: ProductId,
        delta: i64,
        reason: &str,
        key: &IdempotencyKey,
        now: i64,
    ) -> Result<Adjusted, Error> {
        let mut tx = self.db.begin("adjust").await?;
        if let Some(record) = adjustment(&mut tx, key).await? {
            tx.rollback().await?;
            return Ok(Adjusted::Replayed(record));
        }
        let row: Option<ProductRow> = sqlx::query_as(concat!(
            "UPDATE products SET on_hand = on_hand + $1, received = received + $1, \
               updated_at = $2 \
             WHERE id = $3 AND on_hand + $1 >= reserved \
             RETURNING ",
            product_columns!()
        ))
        .bind(delta)
        .bind(now)
        .bind(product_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let stock: Option<(i64, i64)> =
                sqlx::query_as("SELECT on_hand, reserved FROM products WHERE id = $1")
                    .bind(product_id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            tx.rollback().await?;
            let (on_hand, reserved) = stock.ok_or(Error::NotFound("product not found"))?;
            return Ok(Adjusted::Refused { on_hand, reserved });
        };
        let product = Product::try_from(row)?;
        let claimed = sqlx::query(
            "INSERT INTO stock_adjustments (idempotency_key, product_id, delta, reason, \
               on_hand_after, reserved_after, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(key.as_str())
        .bind(product_id.to_string())
        .bind(delta)
        .bind(reason)
        .bind(product.on_hand)
        .bind(product.reserved)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            // A concurrent call with the same key committed first (PostgreSQL made
            // this insert wait for it): ours must not count.
            let record = adjustment(&mut tx, key).await?;
            tx.rollback().await?;
            return record
                .map(Adjusted::Replayed)
                .ok_or_else(|| Error::Internal("adjustment key conflict without a record".into()));
        }
        tx.commit().await?;
        Ok(Adjusted::Applied(product))
    }

    /// Applies an import's rows in one transaction under its key, unless the key
    /// was used before.
    pub async fn import(&self, plan: ImportPlan<'_>, now: i64) -> Result<Imported, Error> {
        let mut tx = self.db.begin("import").await?;
        if let Some(replayed) = import_record(&mut tx, plan.key).await? {
            tx.rollback().await?;
            return Ok(replayed);
        }
        // Claim the key before touching stock, so a concurrent import with the
        // same key waits here (PostgreSQL) instead of applying its rows as well.
        let claimed = sqlx::query(
            "INSERT INTO stock_imports (idempotency_key, fingerprint, summary, created_at) \
             VALUES ($1, $2, '', $3) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(plan.key.as_str())
        .bind(plan.fingerprint)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            let replayed = import_record(&mut tx, plan.key).await?;
            tx.rollback().await?;
            return replayed
                .ok_or_else(|| Error::Internal("import key conflict without a record".into()));
        }

        let mut summary = ImportSummary::new(plan.rows_received);
        for f in plan.failed {
            summary.failed(f);
        }
        // Grouped by SKU in byte order (the lock order); each group keeps its
        // arrival order, which decides the row that creates a new product.
        let mut groups: BTreeMap<Sku, Vec<(i64, StockRow)>> = BTreeMap::new();
        for (number, row) in plan.rows {
            groups
                .entry(row.sku.clone())
                .or_default()
                .push((number, row));
        }
        // Batched statements: one round trip per row would make a full import
        // outlast any sensible deadline. A new product is inserted with the
        // units of its creating row and the rows after it already counted.
        let to_create: Vec<(&Sku, &ProductDetails, i64)> = groups
            .iter()
            .filter_map(|(sku, rows)| creation_of(rows).map(|(d, units)| (sku, d, units)))
            .collect();
        let mut created = HashSet::new();
        for chunk in to_create.chunks(INSERT_BATCH) {
            created.extend(insert_new_products(&mut tx, chunk, now).await?);
        }
        let others: Vec<&Sku> = groups
            .keys()
            .filter(|sku| !created.contains(sku.as_str()))
            .collect();
        let postgres = self.db.backend() == Backend::Postgres;
        let mut existing = HashSet::new();
        for chunk in others.chunks(LOOKUP_BATCH) {
            existing.extend(lock_existing(&mut tx, chunk, postgres).await?);
        }

        let mut additions: Vec<(&Sku, i64)> = Vec::new();
        for (sku, rows) in &groups {
            let found = if created.contains(sku.as_str()) {
                Found::Created
            } else if existing.contains(sku.as_str()) {
                Found::Existing
            } else {
                Found::Missing
            };
            let units = summary.settle(rows, found);
            if found == Found::Existing && units > 0 {
                additions.push((sku, units));
            }
        }
        for chunk in additions.chunks(UPDATE_BATCH) {
            add_stock(&mut tx, chunk, now).await?;
        }
        let summary = summary.finish();
        let json = serde_json::to_string(&summary).map_err(|e| {
            Error::Internal(InternalError::caused_by(
                "the import summary does not serialize",
                e,
            ))
        })?;
        sqlx::query("UPDATE stock_imports SET summary = $1 WHERE idempotency_key = $2")
            .bind(json)
            .bind(plan.key.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Imported::Applied(summary))
    }

    /// The reservation of `order`, if any.
    pub async fn reservation(&self, order: OrderId) -> Result<Option<Reservation>, Error> {
        let mut conn = self.db.reader().acquire().await?;
        load_reservation(&mut conn, order).await
    }

    /// Stores a RESERVED reservation and holds its units, all or nothing.
    pub async fn reserve(&self, r: &Reservation) -> Result<Reserved, Error> {
        let mut tx = self.db.begin("reserve").await?;
        // The order id is the idempotency key: a concurrent call for the same
        // order waits on this insert (PostgreSQL) and then finds the winner's row,
        // as does a repeated call (the service looks first, outside the
        // transaction, so that a repeat needs no product lookups).
        let inserted = sqlx::query(
            "INSERT INTO reservations (order_id, status, total, currency, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(r.order_id.to_string())
        .bind(r.status.as_str())
        .bind(r.total.units())
        .bind(r.total.currency().as_str())
        .bind(r.created_at)
        .bind(r.updated_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            let existing = load_reservation(&mut tx, r.order_id).await?;
            tx.rollback().await?;
            return existing
                .map(Reserved::Existing)
                .ok_or_else(|| Error::Internal("reservation conflict without a row".into()));
        }

        let mut short = Vec::new();
        for line in by_sku(&r.lines) {
            let held = sqlx::query(
                "UPDATE products SET reserved = reserved + $1, updated_at = $2 \
                 WHERE id = $3 AND on_hand - reserved >= $1",
            )
            .bind(line.quantity.get())
            .bind(r.created_at)
            .bind(line.product_id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if held == 0 {
                let available: i64 =
                    sqlx::query_scalar("SELECT on_hand - reserved FROM products WHERE id = $1")
                        .bind(line.product_id.to_string())
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or_else(|| {
                            Error::Internal(format!("product {} vanished", line.product_id).into())
                        })?;
                short.push(Shortage {
                    sku: line.sku.clone(),
                    requested: line.quantity.get(),
                    available,
                });
            }
        }
        if !short.is_empty() {
            tx.rollback().await?;
            short.sort_by_key(|s| r.lines.iter().position(|l| l.sku == s.sku));
            return Ok(Reserved::Short(short));
        }

        for (i, line) in r.lines.iter().enumerate() {
            sqlx::query(
                "INSERT INTO reservation_lines \
                   (order_id, line_no, product_id, sku, name, quantity, unit_price) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(r.order_id.to_string())
            .bind(i as i64 + 1)
            .bind(line.product_id.to_string())
            .bind(line.sku.as_str())
            .bind(&line.name)
            .bind(line.quantity.get())
            .bind(line.unit_price.units())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Reserved::Held)
    }

    /// Moves a RESERVED reservation to COMMITTED and its units from on hand and
    /// reserved to sold. `None` when the order has no RESERVED reservation.
    pub async fn commit(&self, order: OrderId, now: i64) -> Result<Option<Reservation>, Error> {
        let mut tx = self.db.begin("commit").await?;
        if !transition(
            &mut tx,
            order,
            ReservationStatus::Reserved,
            ReservationStatus::Committed,
            now,
        )
        .await?
        {
            tx.rollback().await?;
            return Ok(None);
        }
        let r = load_reservation(&mut tx, order)
            .await?
            .ok_or_else(|| Error::Internal("committed reservation vanished".into()))?;
        for line in by_sku(&r.lines) {
            let rows = sqlx::query(
                "UPDATE products SET on_hand = on_hand - $1, reserved = reserved - $1, \
                   sold = sold + $1, updated_at = $2 \
                 WHERE id = $3 AND reserved >= $1",
            )
            .bind(line.quantity.get())
            .bind(now)
            .bind(line.product_id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            exactly_one(rows, "commit", line)?;
        }
        tx.commit().await?;
        Ok(Some(r))
    }

    /// Releases the reservation of `order`: RESERVED units stop being held,
    /// COMMITTED units return to stock on hand; with no reservation at all, an
    /// empty RELEASED one is recorded. `None` when the reservation was already
    /// RELEASED (or changed under this call).
    pub async fn release(
        &self,
        order: OrderId,
        currency: &Currency,
        now: i64,
    ) -> Result<Option<Reservation>, Error> {
        use ReservationStatus::{Committed, Released, Reserved};
        let mut tx = self.db.begin("release").await?;
        let from = if transition(&mut tx, order, Reserved, Released, now).await? {
            Some(Reserved)
        } else if transition(&mut tx, order, Committed, Released, now).await? {
            Some(Committed)
        } else {
            None
        };
        let Some(from) = from else {
            let tombstone = Reservation::tombstone(order, currency, now);
            let inserted = sqlx::query(
                "INSERT INTO reservations \
                   (order_id, status, total, currency, created_at, updated_at) \
                 VALUES ($1, $2, 0, $3, $4, $4) ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(order.to_string())
            .bind(Released.as_str())
            .bind(currency.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            tx.commit().await?;
            return Ok(Some(tombstone));
        };
        let r = load_reservation(&mut tx, order)
            .await?
            .ok_or_else(|| Error::Internal("released reservation vanished".into()))?;
        for line in by_sku(&r.lines) {
            let sql = if from == Reserved {
                "UPDATE products SET reserved = reserved - $1, updated_at = $2 \
                 WHERE id = $3 AND reserved >= $1"
            } else {
                // Sold goods come back: they are on hand again and no longer sold.
                "UPDATE products SET on_hand = on_hand + $1, sold = sold - $1, updated_at = $2 \
                 WHERE id = $3 AND sold >= $1"
            };
            let rows = sqlx::query(sql)
                .bind(line.quantity.get())
                .bind(now)
                .bind(line.product_id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            exactly_one(rows, "release", line)?;
        }
        tx.commit().await?;
        Ok(Some(r))
    }

    /// Every product's stock counters, in SKU order.
    pub async fn stock_levels(&self) -> Result<Vec<StockLevel>, Error> {
        Ok(sqlx::query_as(
            "SELECT sku, on_hand, reserved, received, sold FROM products ORDER BY sku",
        )
        .fetch_all(self.db.reader())
        .await?)
    }
}

async fn find_product(
    conn: &mut AnyConnection,
    which: &ProductRef,
) -> Result<Option<Product>, Error> {
    let row: Option<ProductRow> = match which {
        ProductRef::Id(id) => {
            sqlx::query_as(concat!(
                "SELECT ",
                product_columns!(),
                " FROM products WHERE id = $1"
            ))
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?
        }
        ProductRef::Sku(sku) => {
            sqlx::query_as(concat!(
                "SELECT ",
                product_columns!(),
                " FROM products WHERE sku = $1"
            ))
            .bind(sku.as_str())
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    row.map(Product::try_from).transpose()
}

/// Rows per multi-row statement. Small enough that SQLite, which finds each
/// parameter's name by a linear scan, binds a statement in linear-ish time; large
/// enough that a 100,000-row import takes about a thousand statements.
const INSERT_BATCH: usize = 100;
/// See [`INSERT_BATCH`].
const LOOKUP_BATCH: usize = 250;
/// See [`INSERT_BATCH`].
const UPDATE_BATCH: usize = 250;

/// `rows` groups of `per_row` placeholders numbered from `$first`, each group
/// followed by `extra` before its closing parenthesis.
fn placeholders(rows: usize, per_row: usize, first: usize, extra: &str) -> String {
    let mut out = String::new();
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..per_row {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(first + r * per_row + c).to_string());
        }
        out.push_str(extra);
        out.push(')');
    }
    out
}

/// Creates the products whose SKUs do not exist yet, with their first units;
/// the SKUs it created.
async fn insert_new_products(
    conn: &mut AnyConnection,
    rows: &[(&Sku, &ProductDetails, i64)],
    now: i64,
) -> Result<Vec<String>, Error> {
    // Only numbered placeholders are spliced in; every value is bound.
    let sql = format!(
        "INSERT INTO products (id, sku, name, description, unit_price, currency, \
           on_hand, received, created_at, updated_at, reserved, sold) \
         VALUES {} ON CONFLICT (sku) DO NOTHING RETURNING sku",
        placeholders(rows.len(), 8, 2, ", $1, $1, 0, 0")
    );
    let mut q = sqlx::query_scalar(AssertSqlSafe(sql)).bind(now);
    for (sku, d, units) in rows {
        q = q
            .bind(ProductId::generate().to_string())
            .bind(sku.as_str())
            .bind(d.name.as_str())
            .bind(d.description.as_str())
            .bind(d.unit_price.units())
            .bind(d.unit_price.currency().as_str())
            .bind(*units)
            .bind(*units);
    }
    Ok(q.fetch_all(&mut *conn).await?)
}

/// The SKUs among `skus` that have a product. On PostgreSQL their rows are
/// locked in byte order, the order every other transaction locks products in.
async fn lock_existing(
    conn: &mut AnyConnection,
    skus: &[&Sku],
    postgres: bool,
) -> Result<Vec<String>, Error> {
    let list = placeholders(1, skus.len(), 1, "");
    let sql = if postgres {
        format!(
            "SELECT sku FROM products WHERE sku IN {list} ORDER BY sku COLLATE \"C\" FOR UPDATE"
        )
    } else {
        // SQLite has one writer at a time: there is nothing to lock.
        format!("SELECT sku FROM products WHERE sku IN {list}")
    };
    let mut q = sqlx::query_scalar(AssertSqlSafe(sql));
    for sku in skus {
        q = q.bind(sku.as_str());
    }
    Ok(q.fetch_all(&mut *conn).await?)
}

/// Adds units to the stock of existing, locked products in one statement.
async fn add_stock(conn: &mut AnyConnection, rows: &[(&Sku, i64)], now: i64) -> Result<(), Error> {
    // VALUES columns are named column1, column2 on both backends.
    let sql = format!(
        "UPDATE products SET on_hand = products.on_hand + v.column2, \
           received = products.received + v.column2, updated_at = $1 \
         FROM (VALUES {}) AS v WHERE products.sku = v.column1",
        placeholders(rows.len(), 2, 2, "")
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now);
    for (sku, units) in rows {
        q = q.bind(sku.as_str()).bind(*units);
    }
    let updated = q.execute(&mut *conn).await?.rows_affected();
    if updated != rows.len() as u64 {
        return Err(Error::Internal(
            format!("import added stock to {updated} of {} products", rows.len()).into(),
        ));
    }
    Ok(())
}

async fn adjustment(
    conn: &mut AnyConnection,
    key: &IdempotencyKey,
) -> Result<Option<AdjustmentRecord>, Error> {
    let row: Option<AdjustmentRow> = sqlx::query_as(
        "SELECT product_id, delta, reason, on_hand_after, reserved_after, created_at \
         FROM stock_adjustments WHERE idempotency_key = $1",
    )
    .bind(key.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        Ok(AdjustmentRecord {
            product_id: ProductId::parse(&r.product_id).map_err(|_| {
                Error::Internal(
                    format!("stored adjustment {:?} names a bad product", key.as_str()).into(),
                )
            })?,
            delta: r.delta,
            reason: r.reason,
            on_hand_after: r.on_hand_after,
            reserved_after: r.reserved_after,
            created_at: r.created_at,
        })
    })
    .transpose()
}

async fn import_record(
    conn: &mut AnyConnection,
    key: &IdempotencyKey,
) -> Result<Option<Imported>, Error> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT fingerprint, summary FROM stock_imports WHERE idempotency_key = $1")
            .bind(key.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|(fingerprint, json)| {
        let summary = serde_json::from_str(&json).map_err(|e| {
            Error::Internal(
                format!("stored import summary {:?} is broken: {e}", key.as_str()).into(),
            )
        })?;
        Ok(Imported::Replayed {
            fingerprint,
            summary,
        })
    })
    .transpose()
}

/// Moves `order` from `from` to `to` if it is in `from`; whether it moved. The
/// status in the WHERE clause makes concurrent transitions exclusive.
async fn transition(
    conn: &mut AnyConnection,
    order: OrderId,
    from: ReservationStatus,
    to: ReservationStatus,
    now: i64,
) -> Result<bool, Error> {
    let rows = sqlx::query(
        "UPDATE reservations SET status = $1, updated_at = $2 \
         WHERE order_id = $3 AND status = $4",
    )
    .bind(to.as_str())
    .bind(now)
    .bind(order.to_string())
    .bind(from.as_str())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(rows == 1)
}

async fn load_reservation(
    conn: &mut AnyConnection,
    order: OrderId,
) -> Result<Option<Reservation>, Error> {
    let row: Option<ReservationRow> = sqlx::query_as(
        "SELECT status, total, currency, created_at, updated_at \
         FROM reservations WHERE order_id = $1",
    )
    .bind(order.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let broken =
        |what: &str| Error::Internal(format!("stored reservation {order} has {what}").into());
    let status = ReservationStatus::parse(&row.status).ok_or_else(|| broken("a bad status"))?;
    let currency = Currency::parse(&row.currency).map_err(|_| broken("a bad currency"))?;
    let lines: Vec<LineRow> = sqlx::query_as(
        "SELECT product_id, sku, name, quantity, unit_price \
         FROM reservation_lines WHERE order_id = $1 ORDER BY line_no",
    )
    .bind(order.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let lines = lines
        .into_iter()
        .map(|l| {
            Ok(ReservationLine {
                product_id: ProductId::parse(&l.product_id)
                    .map_err(|_| broken("a line with a bad product id"))?,
                sku: Sku::parse(&l.sku).map_err(|_| broken("a line with a bad sku"))?,
                name: l.name,
                quantity: Quantity::parse(l.quantity)
                    .map_err(|_| broken("a line with a bad quantity"))?,
                unit_price: domain::price(l.unit_price, currency.clone())
                    .map_err(|_| broken("a line with a bad price"))?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Some(Reservation {
        order_id: order,
        status,
        lines,
        total: Money::new(currency, row.total),
        created_at: row.created_at,
        updated_at: row.updated_at,
    }))
}
