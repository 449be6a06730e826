//! Stock imports (the ImportStock stream): rows, their rules, and the summary
//! that a replay returns.

use super::*;

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
pub(super) struct Fingerprint(u128);

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

    pub(super) fn add(&mut self, row: &RawRow) {
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

    pub(super) fn hex(&self) -> String {
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
