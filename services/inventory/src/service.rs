//! The inventory service's rules: who may do what, what a retry means, and in
//! which order things happen. Knows nothing of gRPC; talks to the database only
//! through [`Store`].

use emporium_common::{
    auth::Caller,
    paging::{self, PageSize},
    status::{Violations, chain},
    time::now_micros,
};

use crate::{
    domain::{
        Adjustment, Creation, Currency, FailedRow, Import, ImportSummary, Money, NewProduct,
        OrderId, Product, ProductId, ProductRef, Reservation, ReservationStatus, ReserveItem,
        RowError, Sku,
    },
    error::Error,
    store::{Adjusted, ImportPlan, Imported, Reserved, Store},
};

/// How often a reservation call re-reads after losing a race. Statuses only move
/// forward (RESERVED → COMMITTED → RELEASED) and rows are never deleted, so the
/// second attempt always settles; the bound only turns a bug into an error.
const ATTEMPTS: usize = 3;

/// One page of products in SKU order, and the SKU the next page starts after.
pub type Page = paging::Page<Product, Sku>;

/// The inventory service's operations.
#[derive(Debug, Clone)]
pub struct Inventory {
    store: Store,
    currency: Currency,
}

impl Inventory {
    /// The service over a migrated store, pricing in `currency`.
    pub fn new(store: Store, currency: Currency) -> Self {
        Self { store, currency }
    }

    /// The store, for readiness checks.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The catalogue currency.
    pub fn currency(&self) -> &Currency {
        &self.currency
    }

    /// Refuses to run over a catalogue priced in another currency: reservations
    /// would mix currencies.
    pub async fn check_catalogue_currency(&self) -> Result<(), String> {
        match self.store.foreign_currency(&self.currency).await {
            Ok(None) => Ok(()),
            Ok(Some(other)) => Err(format!(
                "the catalogue holds prices in {other} but currency is set to {}",
                self.currency
            )),
            Err(e) => Err(format!("cannot read the catalogue: {}", chain(&e))),
        }
    }

    fn price_violation(&self, field: &str, price: &Money) -> Option<Violations> {
        (price.currency() != &self.currency).then(|| {
            Violations::one(
                field,
                format!("must be the catalogue currency {}", self.currency),
            )
        })
    }

    /// Adds a product with no stock. Admin-only.
    pub async fn create(&self, caller: &Caller, new: NewProduct) -> Result<Product, Error> {
        ensure_admin(caller, "only admins may create products")?;
        if let Some(v) = self.price_violation("unit_price.currency_code", &new.details.unit_price) {
            return Err(Error::InvalidArgument(v));
        }
        let now = now_micros();
        let product = Product {
            id: ProductId::generate(),
            sku: new.sku,
            name: new.details.name.as_str().to_owned(),
            description: new.details.description.as_str().to_owned(),
            unit_price: new.details.unit_price,
            on_hand: 0,
            reserved: 0,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_product(&product).await?;
        tracing::info!(product_id = %product.id, sku = %product.sku, "product created");
        Ok(product)
    }

    /// One product. Any signed-in caller.
    pub async fn get(&self, which: &ProductRef) -> Result<Product, Error> {
        self.store
            .product(which)
            .await?
            .ok_or(Error::NotFound("product not found"))
    }

    /// One page of products in SKU order. Any signed-in caller.
    pub async fn list(&self, after: Option<Sku>, size: PageSize) -> Result<Page, Error> {
        let products = self.store.list(after.as_ref(), size.fetch()).await?;
        Ok(Page::from_fetched(products, size, |p| p.sku.clone()))
    }

    /// Changes a product's stock on hand. Admin-only; idempotent by key, a replay
    /// returning the product as it was right after the first call.
    pub async fn adjust(&self, caller: &Caller, a: Adjustment) -> Result<Product, Error> {
        ensure_admin(caller, "only admins may adjust stock")?;
        let product = self.get(&a.product).await?;
        let outcome = self
            .store
            .adjust(
                product.id,
                a.delta.get(),
                a.reason.as_str(),
                &a.key,
                now_micros(),
            )
            .await?;
        match outcome {
            Adjusted::Applied(p) => {
                tracing::info!(
                    product_id = %p.id, delta = a.delta.get(), on_hand = p.on_hand,
                    "stock adjusted"
                );
                Ok(p)
            }
            Adjusted::Replayed(record) if record.is_same_request(product.id, &a) => {
                Ok(record.snapshot_of(product))
            }
            Adjusted::Replayed(_) => Err(key_reused()),
            Adjusted::Refused { on_hand, reserved } => Err(Error::StockBelowReserved {
                sku: product.sku,
                delta: a.delta.get(),
                on_hand,
                reserved,
            }),
        }
    }

    /// Fails unless `caller` may import stock; checked before the stream is read.
    pub fn ensure_may_import(&self, caller: &Caller) -> Result<(), Error> {
        ensure_admin(caller, "only admins may import stock")
    }

    /// Fails unless `caller` may change the catalogue or stock. Transport calls it
    /// before validating, so a caller without the right learns nothing from
    /// field violations.
    pub fn ensure_may_manage(&self, caller: &Caller) -> Result<(), Error> {
        ensure_admin(caller, "only admins may change the catalogue or stock")
    }

    /// Applies an import's good rows in one transaction and reports the bad ones.
    /// Admin-only; idempotent by key, a replay returning the first summary.
    pub async fn import(&self, caller: &Caller, import: Import) -> Result<ImportSummary, Error> {
        self.ensure_may_import(caller)?;
        let rows_received = import.rows.len() as i64;
        let mut rows = Vec::with_capacity(import.rows.len());
        let mut failed = Vec::new();
        for row in import.rows {
            match row.checked {
                Ok(mut stock) => {
                    if let Creation::Ready(d) = &stock.creation
                        && let Some(v) =
                            self.price_violation("unit_price.currency_code", &d.unit_price)
                    {
                        stock.creation = Creation::Invalid(v);
                    }
                    rows.push((row.number, stock));
                }
                Err(v) => failed.push(FailedRow {
                    row_number: row.number,
                    sku: row.sku,
                    error: RowError::invalid(&v),
                }),
            }
        }
        let plan = ImportPlan {
            key: &import.key,
            fingerprint: &import.fingerprint,
            rows_received,
            rows,
            failed,
        };
        match self.store.import(plan, now_micros()).await? {
            Imported::Applied(summary) => {
                tracing::info!(
                    rows = summary.rows_received,
                    applied = summary.rows_applied,
                    created = summary.products_created,
                    units = summary.units_added,
                    "stock imported"
                );
                Ok(summary)
            }
            Imported::Replayed {
                fingerprint,
                summary,
            } if fingerprint == import.fingerprint => Ok(summary),
            Imported::Replayed { .. } => Err(key_reused()),
        }
    }

    /// Reserves and prices stock for an order, all or nothing; idempotent by
    /// order id. Reserve, commit and release are the saga's: the transport
    /// admits only the order service to them (`Caller::ensure_order_service`).
    pub async fn reserve(
        &self,
        order_id: OrderId,
        items: Vec<ReserveItem>,
    ) -> Result<Reservation, Error> {
        if let Some(existing) = self.store.reservation(order_id).await? {
            return replayed(existing, &items);
        }
        // Names and prices never change after creation, so reading them outside
        // the transaction that holds the stock prices the order correctly.
        let mut products = Vec::with_capacity(items.len());
        let mut missing = Vec::new();
        for item in &items {
            match self.store.product(&item.product).await? {
                Some(p) => products.push(p),
                None => missing.push(item.product.clone()),
            }
        }
        if !missing.is_empty() {
            reservation_failed("PRODUCT_NOT_FOUND");
            return Err(Error::UnknownProducts(missing));
        }
        let reservation =
            Reservation::price(order_id, &items, &products, &self.currency, now_micros())
                .map_err(Error::InvalidArgument)?;
        match self.store.reserve(&reservation).await? {
            Reserved::Held => {
                tracing::debug!(
                    order_id = %order_id, lines = reservation.lines.len(),
                    total = reservation.total.units(), "stock reserved"
                );
                Ok(reservation)
            }
            Reserved::Existing(existing) => replayed(existing, &items),
            Reserved::Short(shortages) => {
                reservation_failed("OUT_OF_STOCK");
                Err(Error::InsufficientStock(shortages))
            }
        }
    }

    /// Commits an order's reservation: its units are sold. Idempotent.
    pub async fn commit(&self, order_id: OrderId) -> Result<Reservation, Error> {
        for _ in 0..ATTEMPTS {
            if let Some(r) = self.store.commit(order_id, now_micros()).await? {
                tracing::debug!(order_id = %order_id, "reservation committed");
                return Ok(r);
            }
            match self.store.reservation(order_id).await? {
                None => return Err(Error::NotFound("reservation not found")),
                Some(r) => match r.status {
                    ReservationStatus::Committed => return Ok(r),
                    ReservationStatus::Released => {
                        return Err(Error::ReservationReleased(order_id));
                    }
                    // Stored by a reserve that committed after our update looked.
                    ReservationStatus::Reserved => {}
                },
            }
        }
        Err(Error::Internal(
            format!("reservation of {order_id} kept changing during commit").into(),
        ))
    }

    /// Releases an order's reservation (recording an empty one if there is
    /// none yet). Idempotent.
    pub async fn release(&self, order_id: OrderId) -> Result<Reservation, Error> {
        for _ in 0..ATTEMPTS {
            if let Some(r) = self
                .store
                .release(order_id, &self.currency, now_micros())
                .await?
            {
                tracing::debug!(
                    order_id = %order_id, lines = r.lines.len(), "reservation released"
                );
                return Ok(r);
            }
            if let Some(r) = self.store.reservation(order_id).await?
                && r.status == ReservationStatus::Released
            {
                return Ok(r);
            }
        }
        Err(Error::Internal(
            format!("reservation of {order_id} kept changing during release").into(),
        ))
    }
}

/// A retry of ReserveStock gets the order's reservation as it is now, unless it
/// asks for other items than the ones reserved. A tombstone answers any items:
/// the order was cancelled before its stock was ever held.
fn replayed(existing: Reservation, items: &[ReserveItem]) -> Result<Reservation, Error> {
    if existing.is_tombstone() || existing.was_made_from(items) {
        Ok(existing)
    } else {
        Err(Error::InvalidArgument(Violations::one(
            "order_id",
            "already has a reservation with different items",
        )))
    }
}

fn key_reused() -> Error {
    Error::InvalidArgument(Violations::one(
        "idempotency_key",
        "was already used with a different request",
    ))
}

fn ensure_admin(caller: &Caller, message: &'static str) -> Result<(), Error> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(Error::PermissionDenied(message))
    }
}

/// Counts a reservation refused for `reason` (dashboards put it beside the
/// saga's OUT_OF_STOCK cancellations).
fn reservation_failed(reason: &'static str) {
    metrics::counter!("inventory_reservation_failures_total", "reason" => reason).increment(1);
}
