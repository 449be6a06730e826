//! Products in the catalogue, how a request names one, and stock adjustments.

use super::*;

/// How a request names a product.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProductRef {
    /// By id.
    Id(ProductId),
    /// By SKU.
    Sku(Sku),
}

impl ProductRef {
    /// Whether `product` is the one named.
    pub fn names(&self, product_id: ProductId, sku: &Sku) -> bool {
        match self {
            ProductRef::Id(id) => *id == product_id,
            ProductRef::Sku(s) => s == sku,
        }
    }
}

impl fmt::Display for ProductRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProductRef::Id(id) => id.fmt(f),
            ProductRef::Sku(sku) => sku.fmt(f),
        }
    }
}

/// A product in the catalogue with its stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// Id.
    pub id: ProductId,
    /// SKU, never changed after creation.
    pub sku: Sku,
    /// Display name.
    pub name: String,
    /// Description, possibly empty.
    pub description: String,
    /// Price of one unit, in the catalogue currency.
    pub unit_price: Money,
    /// Units in stock, reserved ones included.
    pub on_hand: i64,
    /// Units held by RESERVED reservations.
    pub reserved: i64,
    /// Creation time, µs since the epoch.
    pub created_at: i64,
    /// Last change of the product or its stock, µs since the epoch.
    pub updated_at: i64,
}

impl Product {
    /// Units that can still be reserved.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// What a new product is made of, apart from its SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductDetails {
    /// Display name.
    pub name: ProductName,
    /// Description.
    pub description: Description,
    /// Price of one unit.
    pub unit_price: Money,
}

/// A product to add to the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    /// Its SKU.
    pub sku: Sku,
    /// Name, description and price.
    pub details: ProductDetails,
}

/// A stock adjustment as requested.
#[derive(Debug, Clone)]
pub struct Adjustment {
    /// Which product.
    pub product: ProductRef,
    /// The change to stock on hand.
    pub delta: StockDelta,
    /// Why.
    pub reason: Reason,
    /// The client's key for retries.
    pub key: IdempotencyKey,
}

/// An adjustment as recorded under its key, with the stock right after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustmentRecord {
    /// The product adjusted.
    pub product_id: ProductId,
    /// The change applied.
    pub delta: i64,
    /// The reason given.
    pub reason: String,
    /// Stock on hand right after the adjustment.
    pub on_hand_after: i64,
    /// Reserved stock right after the adjustment.
    pub reserved_after: i64,
    /// When it was applied, µs since the epoch.
    pub created_at: i64,
}

impl AdjustmentRecord {
    /// Whether a retry asks for exactly this adjustment.
    pub fn is_same_request(&self, product_id: ProductId, adjustment: &Adjustment) -> bool {
        self.product_id == product_id
            && self.delta == adjustment.delta.get()
            && self.reason == adjustment.reason.as_str()
    }

    /// `current` as it was right after this adjustment (only stock changes, so
    /// every other field is current).
    pub fn snapshot_of(&self, current: Product) -> Product {
        Product {
            on_hand: self.on_hand_after,
            reserved: self.reserved_after,
            updated_at: self.created_at,
            ..current
        }
    }
}
