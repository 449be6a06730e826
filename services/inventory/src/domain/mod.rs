//! The inventory domain: newtypes that can only hold valid values (parse, don't
//! validate) here, then [`product`]s and adjustments, [`reservation`]s of the
//! saga, and stock [`import`]s. Knows nothing of gRPC or SQL.

mod import;
mod product;
mod reservation;

pub use self::{import::*, product::*, reservation::*};

use std::fmt;

use emporium_common::status::Violations;
pub use emporium_common::types::{Currency, IdempotencyKey, Money};
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

/// Highest unit price accepted, in minor units. With at most 10,000 units per
/// line and 100 lines, a reservation total stays below 10^18, so totals fit an
/// `i64` without overflow checks anywhere downstream.
pub const MAX_PRICE: i64 = 1_000_000_000_000;

/// Checks the units of a unit price on their own, so a client hears about a
/// bad amount and a bad currency at once: greater than zero and at most
/// [`MAX_PRICE`].
pub fn price_units(units: i64) -> Result<i64, &'static str> {
    if units <= 0 {
        return Err("must be greater than 0");
    }
    if units > MAX_PRICE {
        return Err("must be at most 1000000000000");
    }
    Ok(units)
}

/// A unit price (see [`price_units`]).
pub fn price(units: i64, currency: Currency) -> Result<Money, &'static str> {
    Ok(Money::new(currency, price_units(units)?))
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

#[cfg(test)]
mod tests {
    use super::{import::Fingerprint, *};

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
        assert!(price(0, eur()).is_err());
        assert!(price(MAX_PRICE + 1, eur()).is_err());
        assert!(price(1999, eur()).is_ok());
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

    fn product(sku: &str, units: i64) -> Product {
        Product {
            id: ProductId::generate(),
            sku: Sku::parse(sku).unwrap(),
            name: sku.to_lowercase(),
            description: String::new(),
            unit_price: price(units, eur()).unwrap(),
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
        assert_eq!(r.total.units(), 1750);
        assert_eq!(r.lines[0].total().units(), 750);
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
                unit_price: price(100, eur()).unwrap(),
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
