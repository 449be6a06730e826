//! Reservations: the stock held for one order of the saga, priced when made.

use super::*;

/// Where a reservation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    /// Units held.
    Reserved,
    /// Units sold.
    Committed,
    /// Units given back (final).
    Released,
}

impl ReservationStatus {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "RESERVED",
            Self::Committed => "COMMITTED",
            Self::Released => "RELEASED",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "RESERVED" => Some(Self::Reserved),
            "COMMITTED" => Some(Self::Committed),
            "RELEASED" => Some(Self::Released),
            _ => None,
        }
    }
}

/// Most items (lines) one reservation may have.
pub const MAX_RESERVATION_LINES: usize = 100;

/// One product and quantity to reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveItem {
    /// Which product.
    pub product: ProductRef,
    /// How many units.
    pub quantity: Quantity,
}

/// One product's share of a reservation, priced at reservation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationLine {
    /// The product.
    pub product_id: ProductId,
    /// Its SKU.
    pub sku: Sku,
    /// Its name at reservation time.
    pub name: String,
    /// Units held.
    pub quantity: Quantity,
    /// Price of one unit at reservation time.
    pub unit_price: Money,
}

impl ReservationLine {
    /// `unit_price × quantity`; cannot overflow (see [`MAX_PRICE`]).
    pub fn total(&self) -> Money {
        Money::new(
            self.unit_price.currency().clone(),
            self.unit_price.units() * self.quantity.get(),
        )
    }
}

/// The stock held for one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The order.
    pub order_id: OrderId,
    /// Where it is in its life.
    pub status: ReservationStatus,
    /// Lines in the order of the request's items; empty for a tombstone.
    pub lines: Vec<ReservationLine>,
    /// Sum of the line totals.
    pub total: Money,
    /// Creation time, µs since the epoch.
    pub created_at: i64,
    /// Last status change, µs since the epoch.
    pub updated_at: i64,
}

impl Reservation {
    /// A RESERVED reservation of `items`, priced from `products` (one per item, in
    /// the same order). Two items naming the same product are refused: they would
    /// hold stock twice under one line's price.
    pub fn price(
        order_id: OrderId,
        items: &[ReserveItem],
        products: &[Product],
        currency: &Currency,
        now: i64,
    ) -> Result<Self, Violations> {
        let mut v = Violations::new();
        let mut lines: Vec<ReservationLine> = Vec::with_capacity(items.len());
        for (i, (item, product)) in items.iter().zip(products).enumerate() {
            if let Some(first) = lines.iter().position(|l| l.product_id == product.id) {
                v.add(
                    format!("items[{i}]"),
                    format!("names the same product as items[{first}]"),
                );
            }
            lines.push(ReservationLine {
                product_id: product.id,
                sku: product.sku.clone(),
                name: product.name.clone(),
                quantity: item.quantity,
                unit_price: product.unit_price.clone(),
            });
        }
        v.finish()?;
        let total = lines.iter().map(|l| l.total().units()).sum();
        Ok(Self {
            order_id,
            status: ReservationStatus::Reserved,
            lines,
            total: Money::new(currency.clone(), total),
            created_at: now,
            updated_at: now,
        })
    }

    /// The empty RELEASED reservation recorded when a release comes first, so a
    /// late reserve for the order holds nothing.
    pub fn tombstone(order_id: OrderId, currency: &Currency, now: i64) -> Self {
        Self {
            order_id,
            status: ReservationStatus::Released,
            lines: Vec::new(),
            total: Money::zero(currency.clone()),
            created_at: now,
            updated_at: now,
        }
    }

    /// Whether this is a tombstone rather than a reservation that held stock.
    pub fn is_tombstone(&self) -> bool {
        self.lines.is_empty()
    }

    /// Whether `items` asks for exactly these lines (in any order), so a retry
    /// can be told from a different request reusing the order id.
    pub fn was_made_from(&self, items: &[ReserveItem]) -> bool {
        items.len() == self.lines.len()
            && items.iter().all(|item| {
                self.lines.iter().any(|l| {
                    item.product.names(l.product_id, &l.sku) && item.quantity == l.quantity
                })
            })
    }
}

/// A product short of stock for a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    /// Its SKU.
    pub sku: Sku,
    /// Units asked for.
    pub requested: i64,
    /// Units that could still be reserved.
    pub available: i64,
}
