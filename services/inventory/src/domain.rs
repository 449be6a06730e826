//! The inventory domain: newtypes that can only hold valid values (parse, don't
//! validate), products, reservations and stock imports. Knows nothing of gRPC or
//! SQL.

use std::fmt;

use emporium_common::status::Violations;
pub use emporium_common::types::{Currency, IdempotencyKey};
use serde::{Deserialize, Serialize};

emporium_common::uuid_id!(
    /// A product's id: a UUID, v7 when generated here.
    ProductId
);
emporium_common::uuid_id!(
    /// The order a reservation belongs to (the order service's id).
    OrderId
);

/// A stock-keeping unit: 1 to 64 characters of `A-Z`, `0-9`, `-` and `_`.
/// Ordered by bytes, which is the order ListProducts promises.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sku(String);

impl Sku {
    /// Longest SKU accepted.
    pub const MAX_LEN: usize = 64;

    /// Parses a SKU exactly as given: lower case is refused, not folded, so a
    /// SKU has one spelling everywhere.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() {
            return Err("is required");
        }
        if s.len() > Self::MAX_LEN {
            return Err("must be at most 64 characters");
        }
        let allowed =
            |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
        if !s.bytes().all(allowed) {
            return Err("must contain only A-Z, 0-9, - and _");
        }
        Ok(Self(s.to_owned()))
    }

    /// The SKU.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A product's display name: 1 to 200 characters after trimming, no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    /// Parses and trims a name.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let t = s.trim();
        if t.is_empty() {
            return Err("is required");
        }
        if t.chars().count() > 200 {
            return Err("must be at most 200 characters");
        }
        if t.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Self(t.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product description: at most 4000 characters, possibly empty; line breaks
/// and tabs are allowed, other control characters are not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description(String);

impl Description {
    /// Parses a description, kept as typed.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.chars().count() > 4000 {
            return Err("must be at most 4000 characters");
        }
        if s.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err("must not contain control characters other than line breaks and tabs");
        }
        Ok(Self(s.to_owned()))
    }

    /// The description.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An amount in minor units of one currency. Never a float.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    /// Minor units (cents for EUR).
    pub units: i64,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// Highest unit price accepted, in minor units. With at most 10,000 units per
    /// line and 100 lines, a reservation total stays below 10^18, so totals fit
    /// an `i64` without overflow checks anywhere downstream.
    pub const MAX_PRICE: i64 = 1_000_000_000_000;

    /// A unit price: greater than zero and at most [`Self::MAX_PRICE`].
    pub fn price(units: i64, currency: Currency) -> Result<Self, &'static str> {
        Self::check_price_units(units)?;
        Ok(Self { units, currency })
    }

    /// Checks the units of a unit price on their own, so a client hears about a
    /// bad amount and a bad currency at once.
    pub fn check_price_units(units: i64) -> Result<i64, &'static str> {
        if units <= 0 {
            return Err("must be greater than 0");
        }
        if units > Self::MAX_PRICE {
            return Err("must be at most 1000000000000");
        }
        Ok(units)
    }

    /// Nothing, in `currency`.
    pub fn zero(currency: Currency) -> Self {
        Self { units: 0, currency }
    }
}

/// Units of one reservation line: 1 to 10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quantity(i64);

impl Quantity {
    /// Most units one line may hold.
    pub const MAX: i64 = 10_000;

    /// Parses a line quantity.
    pub fn parse(n: i64) -> Result<Self, &'static str> {
        if (1..=Self::MAX).contains(&n) {
            Ok(Self(n))
        } else {
            Err("must be between 1 and 10000")
        }
    }

    /// The number of units.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// The largest stock change one adjustment or import row may make.
pub const MAX_STOCK_CHANGE: i64 = 1_000_000_000;

/// A signed change to stock on hand: not zero, at most 10^9 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockDelta(i64);

impl StockDelta {
    /// Parses a delta.
    pub fn parse(n: i64) -> Result<Self, &'static str> {
        if n == 0 {
            return Err("must not be zero");
        }
        if !(-MAX_STOCK_CHANGE..=MAX_STOCK_CHANGE).contains(&n) {
            return Err("must be between -1000000000 and 1000000000");
        }
        Ok(Self(n))
    }

    /// The change.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// Units an import row adds: 0 to 10^9 (0 only creates the product).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedUnits(i64);

impl ReceivedUnits {
    /// Parses a row quantity.
    pub fn parse(n: i64) -> Result<Self, &'static str> {
        if (0..=MAX_STOCK_CHANGE).contains(&n) {
            Ok(Self(n))
        } else {
            Err("must be between 0 and 1000000000")
        }
    }

    /// The number of units.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// Why stock was adjusted: 1 to 500 characters after trimming, no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    /// Parses and trims a reason.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let t = s.trim();
        if t.is_empty() {
            return Err("is required");
        }
        if t.chars().count() > 500 {
            return Err("must be at most 500 characters");
        }
        if t.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Self(t.to_owned()))
    }

    /// The reason.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

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
    /// `unit_price × quantity`; cannot overflow (see [`Money::MAX_PRICE`]).
    pub fn total(&self) -> Money {
        Money {
            units: self.unit_price.units * self.quantity.get(),
            currency: self.unit_price.currency.clone(),
        }
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
        let total = lines.iter().map(|l| l.total().units).sum();
        Ok(Self {
            order_id,
            status: ReservationStatus::Reserved,
            lines,
            total: Money {
                units: total,
                currency: currency.clone(),
            },
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

/// Most rows one ImportStock stream may carry.
pub const MAX_IMPORT_ROWS: usize = 100_000;

/// An import row as sent, kept to recognise a replayed import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRow {
    /// SKU as sent.
    pub sku: String,
    /// Quantity as sent.
    pub quantity: i64,
    /// Name, if sent.
    pub name: Option<String>,
    /// Description, if sent.
    pub description: Option<String>,
    /// Unit price `(currency code, units)`, if sent.
    pub unit_price: Option<(String, i64)>,
}

/// What an import row could create if its SKU is new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creation {
    /// Name and price are present and valid.
    Ready(ProductDetails),
    /// Name or price is missing: the row can only stock an existing product.
    Incomplete,
    /// A creation field is present but invalid; it matters only if the SKU is new.
    Invalid(Violations),
}

/// An import row whose SKU and quantity are valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockRow {
    /// The product's SKU.
    pub sku: Sku,
    /// Units to add.
    pub quantity: ReceivedUnits,
    /// What creating the product would take.
    pub creation: Creation,
}

impl StockRow {
    /// Why this row fails when no product has its SKU.
    pub fn cannot_create(&self) -> RowError {
        match &self.creation {
            Creation::Invalid(v) => RowError::invalid(v),
            Creation::Ready(_) | Creation::Incomplete => RowError::NoSuchProduct,
        }
    }
}

/// One row of an import, numbered from 1 in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    /// Position in the stream, from 1.
    pub number: i64,
    /// The SKU as sent (reported back when the row fails).
    pub sku: String,
    /// The row, or why it is invalid.
    pub checked: Result<StockRow, Violations>,
}

/// A whole import: its key, its rows and their fingerprint.
#[derive(Debug, Clone)]
pub struct Import {
    /// The idempotency key of the first message.
    pub key: IdempotencyKey,
    /// The rows in arrival order.
    pub rows: Vec<ImportRow>,
    /// Identifies the rows as sent, to tell a replay from a different import.
    pub fingerprint: String,
}

/// Collects an import's messages as they arrive, enforcing the rules of the
/// stream (one key, at most [`MAX_IMPORT_ROWS`] rows).
#[derive(Debug, Default)]
pub struct ImportBuilder {
    key: Option<IdempotencyKey>,
    rows: Vec<ImportRow>,
    fingerprint: Fingerprint,
}

impl ImportBuilder {
    /// An empty import.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next message: its key field, the row as sent, and the row checked.
    /// An error is about the whole stream, which then fails.
    pub fn push(
        &mut self,
        key: &str,
        raw: &RawRow,
        checked: Result<StockRow, Violations>,
    ) -> Result<(), Violations> {
        match &self.key {
            None => {
                let key = IdempotencyKey::parse(key)
                    .map_err(|e| Violations::one("idempotency_key", e))?;
                self.key = Some(key);
            }
            Some(first) if key.is_empty() || key == first.as_str() => {}
            Some(_) => {
                return Err(Violations::one(
                    "idempotency_key",
                    "must be empty or the key of the first message",
                ));
            }
        }
        if self.rows.len() >= MAX_IMPORT_ROWS {
            return Err(Violations::one("rows", "must be at most 100000 per stream"));
        }
        self.fingerprint.add(raw);
        self.rows.push(ImportRow {
            number: self.rows.len() as i64 + 1,
            sku: raw.sku.clone(),
            checked,
        });
        Ok(())
    }

    /// The import, once the client has closed the stream.
    pub fn finish(self) -> Result<Import, Violations> {
        match self.key {
            Some(key) => Ok(Import {
                key,
                rows: self.rows,
                fingerprint: self.fingerprint.hex(),
            }),
            None => Err(Violations::one("rows", "must contain at least one row")),
        }
    }
}

/// FNV-1a (128-bit) over a length-prefixed encoding of the rows. It only has to
/// tell a client's retry from a different import under the same key, not resist
/// an attacker (admins choose both), and it must never change between releases,
/// which rules out std's `DefaultHasher`.
#[derive(Debug, Clone, Copy)]
struct Fingerprint(u128);

impl Default for Fingerprint {
    fn default() -> Self {
        Self(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d)
    }
}

impl Fingerprint {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u128::from(*b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn text(&mut self, s: Option<&str>) {
        match s {
            None => self.bytes(&[0]),
            Some(s) => {
                self.bytes(&[1]);
                self.bytes(&(s.len() as u64).to_le_bytes());
                self.bytes(s.as_bytes());
            }
        }
    }

    fn add(&mut self, row: &RawRow) {
        self.text(Some(&row.sku));
        self.bytes(&row.quantity.to_le_bytes());
        self.text(row.name.as_deref());
        self.text(row.description.as_deref());
        match &row.unit_price {
            None => self.bytes(&[0]),
            Some((code, units)) => {
                self.text(Some(code));
                self.bytes(&units.to_le_bytes());
            }
        }
    }

    fn hex(&self) -> String {
        format!("{:032x}", self.0)
    }
}

/// One invalid field of an import row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowViolation {
    /// Field path within the row.
    pub field: String,
    /// What is wrong.
    pub description: String,
}

/// Why an import row was not applied. Stored with the summary, so the shape
/// is part of the database format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowError {
    /// Malformed fields.
    Invalid(Vec<RowViolation>),
    /// No product has the SKU and the row lacks what creating one needs.
    NoSuchProduct,
}

impl RowError {
    /// The error for a row's violations.
    pub fn invalid(v: &Violations) -> Self {
        Self::Invalid(
            v.iter()
                .map(|f| RowViolation {
                    field: f.field.clone(),
                    description: f.description.clone(),
                })
                .collect(),
        )
    }

    /// The violations back, for the transport.
    pub fn violations(list: &[RowViolation]) -> Violations {
        let mut v = Violations::new();
        for f in list {
            v.add(f.field.clone(), f.description.clone());
        }
        v
    }
}

/// A row that was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRow {
    /// Position in the stream, from 1.
    pub row_number: i64,
    /// SKU as sent.
    pub sku: String,
    /// Why.
    pub error: RowError,
}

/// What the store found for one SKU of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The product existed before the import.
    Existing,
    /// The import created the product from the SKU's first complete row.
    Created,
    /// No product has the SKU, and no row could create it.
    Missing,
}

/// What the rows of one SKU (in arrival order) would create if the SKU is new:
/// the details of the first complete row, and the units of that row and the
/// rows after it.
pub fn creation_of(rows: &[(i64, StockRow)]) -> Option<(&ProductDetails, i64)> {
    let first = rows
        .iter()
        .position(|(_, r)| matches!(r.creation, Creation::Ready(_)))?;
    let Creation::Ready(details) = &rows[first].1.creation else {
        return None;
    };
    let units = rows[first..].iter().map(|(_, r)| r.quantity.get()).sum();
    Some((details, units))
}

/// Most failed rows a summary lists (the first ones, in row order). All of them
/// are counted; listing 100,000 would not fit in a response.
pub const MAX_LISTED_FAILED_ROWS: usize = 1_000;

/// What an import did. Stored under its key and returned again on a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSummary {
    /// Rows received.
    pub rows_received: i64,
    /// Rows applied.
    pub rows_applied: i64,
    /// Products the import created.
    pub products_created: i64,
    /// Units added by the applied rows.
    pub units_added: i64,
    /// Rows not applied, in row order; at most [`MAX_LISTED_FAILED_ROWS`]
    /// (`rows_received - rows_applied` counts them all).
    pub failed_rows: Vec<FailedRow>,
}

impl ImportSummary {
    /// A summary of `rows_received` rows, none counted yet.
    pub fn new(rows_received: i64) -> Self {
        Self {
            rows_received,
            ..Self::default()
        }
    }

    /// Counts an applied row.
    pub fn applied(&mut self, created: bool, units: i64) {
        self.rows_applied += 1;
        self.products_created += i64::from(created);
        self.units_added += units;
    }

    /// Counts a failed row.
    pub fn failed(&mut self, row: FailedRow) {
        self.failed_rows.push(row);
    }

    /// Settles the rows of one SKU (in arrival order) once the store knows
    /// whether its product exists; returns the units to add to its stock. When
    /// the import creates the product, rows before the creating one fail, as the
    /// product did not exist yet when they arrived.
    pub fn settle(&mut self, rows: &[(i64, StockRow)], found: Found) -> i64 {
        let creating = rows
            .iter()
            .position(|(_, r)| matches!(r.creation, Creation::Ready(_)));
        let mut units = 0;
        for (i, (number, row)) in rows.iter().enumerate() {
            let exists = match found {
                Found::Existing => true,
                Found::Created => creating.is_some_and(|c| i >= c),
                Found::Missing => false,
            };
            if exists {
                self.applied(
                    found == Found::Created && Some(i) == creating,
                    row.quantity.get(),
                );
                units += row.quantity.get();
            } else {
                self.failed(FailedRow {
                    row_number: *number,
                    sku: row.sku.to_string(),
                    error: row.cannot_create(),
                });
            }
        }
        units
    }

    /// Puts the failed rows in row order (they are found in SKU order) and keeps
    /// the first [`MAX_LISTED_FAILED_ROWS`].
    pub fn finish(mut self) -> Self {
        self.failed_rows.sort_by_key(|r| r.row_number);
        self.failed_rows.truncate(MAX_LISTED_FAILED_ROWS);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    #[test]
    fn skus() {
        for ok in ["A", "SKU-1", "X_Y-Z09", &"A".repeat(64)] {
            assert_eq!(Sku::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "sku-1", "A B", "Ä", "A.B", &"A".repeat(65)] {
            assert!(Sku::parse(bad).is_err(), "{bad:?}");
        }
        // Byte order: '-' < digits < letters < '_'.
        let mut v: Vec<Sku> = ["A_", "AB", "A-", "A1"]
            .iter()
            .map(|s| Sku::parse(s).unwrap())
            .collect();
        v.sort();
        let sorted: Vec<&str> = v.iter().map(Sku::as_str).collect();
        assert_eq!(sorted, ["A-", "A1", "AB", "A_"]);
    }

    #[test]
    fn names_descriptions_reasons_keys() {
        assert_eq!(ProductName::parse("  Mug ").unwrap().as_str(), "Mug");
        assert!(ProductName::parse(" ").is_err());
        assert!(ProductName::parse(&"n".repeat(201)).is_err());
        assert!(Description::parse("").is_ok());
        assert!(Description::parse("two\nlines\tand tab").is_ok());
        assert!(Description::parse("bell\u{7}").is_err());
        assert!(Description::parse(&"d".repeat(4001)).is_err());
        assert_eq!(Reason::parse(" received ").unwrap().as_str(), "received");
        assert!(Reason::parse("").is_err());
        assert!(Reason::parse(&"r".repeat(501)).is_err());
        // One rule for every key (emporium_common::types): no spaces.
        assert!(IdempotencyKey::parse("key-1/2").is_ok());
        assert!(IdempotencyKey::parse("key 1/2").is_err());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("ü").is_err());
        assert!(IdempotencyKey::parse("tab\t").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(129)).is_err());
    }

    #[test]
    fn numbers() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(10_001).is_err());
        assert_eq!(Quantity::parse(10_000).unwrap().get(), 10_000);
        assert!(StockDelta::parse(0).is_err());
        assert!(StockDelta::parse(-1_000_000_001).is_err());
        assert_eq!(StockDelta::parse(-5).unwrap().get(), -5);
        assert!(ReceivedUnits::parse(-1).is_err());
        assert!(ReceivedUnits::parse(0).is_ok());
        assert!(Money::price(0, eur()).is_err());
        assert!(Money::price(Money::MAX_PRICE + 1, eur()).is_err());
        assert!(Money::price(1999, eur()).is_ok());
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("EURO").is_err());
    }

    #[test]
    fn ids() {
        let id = ProductId::generate();
        assert_eq!(ProductId::parse(&id.to_string()), Ok(id));
        assert!(ProductId::parse("").is_err());
        assert!(OrderId::parse(&id.0.simple().to_string()).is_err());
    }

    fn product(sku: &str, price: i64) -> Product {
        Product {
            id: ProductId::generate(),
            sku: Sku::parse(sku).unwrap(),
            name: sku.to_lowercase(),
            description: String::new(),
            unit_price: Money::price(price, eur()).unwrap(),
            on_hand: 10,
            reserved: 0,
            created_at: 1,
            updated_at: 1,
        }
    }

    #[test]
    fn reservations_are_priced_and_recognised() {
        let a = product("A", 250);
        let b = product("B", 1000);
        let order = OrderId::generate();
        let items = [
            ReserveItem {
                product: ProductRef::Sku(a.sku.clone()),
                quantity: Quantity::parse(3).unwrap(),
            },
            ReserveItem {
                product: ProductRef::Id(b.id),
                quantity: Quantity::parse(1).unwrap(),
            },
        ];
        let r = Reservation::price(order, &items, &[a.clone(), b.clone()], &eur(), 7).unwrap();
        assert_eq!(r.total.units, 1750);
        assert_eq!(r.lines[0].total().units, 750);
        assert!(r.was_made_from(&items));
        let mut swapped = items.clone();
        swapped.reverse();
        assert!(r.was_made_from(&swapped));
        let mut more = items.clone();
        more[1].quantity = Quantity::parse(2).unwrap();
        assert!(!r.was_made_from(&more));
        assert!(!r.was_made_from(&items[..1]));

        let same_twice = [items[0].clone(), items[0].clone()];
        let v = Reservation::price(order, &same_twice, &[a.clone(), a], &eur(), 7).unwrap_err();
        assert_eq!(
            v.to_string(),
            "items[1]: names the same product as items[0]"
        );
    }

    #[test]
    fn import_builder_enforces_one_key_and_numbers_rows() {
        let raw = RawRow {
            sku: "A".into(),
            quantity: 1,
            ..RawRow::default()
        };
        let mut b = ImportBuilder::new();
        assert!(b.push("", &raw, Err(Violations::one("sku", "x"))).is_err());
        let mut b = ImportBuilder::new();
        b.push("k", &raw, Err(Violations::one("sku", "x"))).unwrap();
        b.push("", &raw, Err(Violations::one("sku", "x"))).unwrap();
        b.push("k", &raw, Err(Violations::one("sku", "x"))).unwrap();
        assert!(
            b.push("other", &raw, Err(Violations::one("sku", "x")))
                .is_err()
        );
        let import = b.finish().unwrap();
        let numbers: Vec<i64> = import.rows.iter().map(|r| r.number).collect();
        assert_eq!(numbers, [1, 2, 3]);
        assert!(ImportBuilder::new().finish().is_err());
    }

    fn stock_row(number: i64, quantity: i64, ready: bool) -> (i64, StockRow) {
        let creation = if ready {
            Creation::Ready(ProductDetails {
                name: ProductName::parse("N").unwrap(),
                description: Description::default(),
                unit_price: Money::price(100, eur()).unwrap(),
            })
        } else {
            Creation::Incomplete
        };
        (
            number,
            StockRow {
                sku: Sku::parse("S").unwrap(),
                quantity: ReceivedUnits::parse(quantity).unwrap(),
                creation,
            },
        )
    }

    #[test]
    fn import_rows_settle_in_arrival_order() {
        let rows = [
            stock_row(1, 1, false),
            stock_row(4, 2, true),
            stock_row(7, 4, false),
            stock_row(9, 8, true),
        ];
        let (_, units) = creation_of(&rows).unwrap();
        assert_eq!(units, 14, "the creating row and every row after it");

        let mut s = ImportSummary::new(4);
        assert_eq!(s.settle(&rows, Found::Created), 14);
        assert_eq!(
            (s.rows_applied, s.products_created, s.units_added),
            (3, 1, 14)
        );
        assert_eq!(s.failed_rows.len(), 1);
        assert_eq!(s.failed_rows[0].row_number, 1);
        assert_eq!(s.failed_rows[0].error, RowError::NoSuchProduct);

        let mut s = ImportSummary::new(4);
        assert_eq!(s.settle(&rows, Found::Existing), 15);
        assert_eq!((s.rows_applied, s.products_created), (4, 0));

        let mut s = ImportSummary::new(4);
        assert_eq!(s.settle(&rows, Found::Missing), 0);
        assert_eq!(s.failed_rows.len(), 4);
        assert!(creation_of(&rows[..1]).is_none());
    }

    #[test]
    fn summaries_list_the_first_failures_in_row_order() {
        let mut s = ImportSummary::new(5_000);
        for n in (1..=5_000).rev() {
            s.failed(FailedRow {
                row_number: n,
                sku: String::new(),
                error: RowError::NoSuchProduct,
            });
        }
        let s = s.finish();
        assert_eq!(s.failed_rows.len(), MAX_LISTED_FAILED_ROWS);
        assert_eq!(s.failed_rows[0].row_number, 1);
        assert_eq!(s.failed_rows[999].row_number, 1_000);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<ImportSummary>(&json).unwrap(), s);
    }

    #[test]
    fn fingerprints_tell_rows_apart() {
        let fp = |rows: &[&RawRow]| {
            let mut f = Fingerprint::default();
            rows.iter().for_each(|r| f.add(r));
            f.hex()
        };
        let a = RawRow {
            sku: "A".into(),
            quantity: 1,
            name: Some("x".into()),
            ..RawRow::default()
        };
        let b = RawRow {
            name: None,
            description: Some("x".into()),
            ..a.clone()
        };
        assert_eq!(fp(&[&a]), fp(&[&a.clone()]));
        assert_ne!(fp(&[&a]), fp(&[&b]));
        assert_ne!(fp(&[&a, &b]), fp(&[&b, &a]));
        // A fixed value: the stored fingerprints must never change meaning.
        assert_eq!(fp(&[]), "6c62272e07bb014262b821756295c58d");
    }
}
